"""Run profiles: how big a run is on this hardware - data size, resolution, epochs, loader workers.

A profile never touches what an experiment compares: the search layer drops every profile key
that the spec ablates, and TrialConfig fields outside these stay as the spec says.
"""

from __future__ import annotations

from typing import Any

PROFILES: dict[str, dict[str, Any]] = {
    # CI and tests: seconds per trial; a narrow decoder keeps CPU steps tiny.
    "smoke": {"image_size": [32, 64], "crop_size": 32, "train_images": 16, "val_images": 8, "test_images": 8,
              "epochs": 2, "val_batch_size": 8, "num_workers": 0, "decoder_channels": 32},
    # A laptop or this 2-core machine: a 10-trial ablation in under ten minutes that still learns (see the
    # README's "CPU profile" table for what each choice buys). ResNet-18 is the one model change: ResNet-34
    # costs 1.7x the time per image. Decoded images stay in memory; checkpoints every 2 epochs and the last.
    "cpu": {"image_size": [64, 128], "crop_size": 64, "train_images": 384, "val_images": 64, "test_images": 32,
            "epochs": 4, "val_batch_size": 32, "num_workers": 0, "decoder_channels": 128, "encoder": "resnet18",
            "in_memory": True, "checkpoint_every": 2},
    # Course scale: 20 000 train images at 256x512, 16 epochs, on a GPU: bf16 (fp16 where the GPU lacks bf16),
    # channels_last, torch.compile, evaluation at batch 32, decoded data shared by the node when it fits.
    "full": {"image_size": [256, 512], "crop_size": 256, "train_images": 20000, "val_images": 2500,
             "test_images": 2500, "epochs": 16, "val_batch_size": 32, "num_workers": 4, "amp": "bf16",
             "channels_last": True, "compile": "default", "in_memory": "auto"},
}
PROFILE_NAMES = ("auto", *PROFILES)


def resolve_profile(name: str, cuda_available: bool) -> str:
    """`auto` means `full` with a GPU and `cpu` without one."""
    if name not in PROFILE_NAMES:
        raise ValueError(f"profile must be one of {PROFILE_NAMES}, got {name!r}")
    if name == "auto":
        return "full" if cuda_available else "cpu"
    return name
