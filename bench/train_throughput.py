"""Training and evaluation throughput of each architecture: img/s, peak memory, parameters.

    python -m bench.train_throughput [--size 128x256] [--batch 4] [--steps 5] [--encoder resnet34]
                                     [--devices cpu,cuda] [--aspp-skip/--no-aspp-skip]

Each measurement runs in a fresh process, so CPU peak RSS belongs to that model alone. Ratios are
relative to the joint model on the same device. Real losses and optimizer steps; random inputs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from tabulate import tabulate

from mtl.config import TrialConfig
from mtl.models import count_parameters

ARCHS = ("joint", "branched", "distilled")


def _timed(fn, steps: int, device: torch.device) -> float:
    fn()  # warm-up (cuDNN autotuning, allocator)
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def measure(arch: str, device_name: str, size: tuple[int, int], batch: int, steps: int, encoder: str,
            aspp_skip: bool) -> dict:
    from bench.gpu import training_step

    device = torch.device(device_name)
    cfg = TrialConfig(architecture=arch, encoder=encoder, aspp=aspp_skip, skip=aspp_skip, optimizer="adam", lr=1e-4,
                      amp="bf16" if device.type == "cuda" else "off", crop_size=tuple(size), batch_size=batch)
    torch.backends.cudnn.benchmark = True
    model, step = training_step(cfg, device)  # real losses and optimizer steps on random inputs
    x = torch.randn(batch, 3, *size, device=device)

    def train_step():
        model.train()
        step()

    @torch.no_grad()
    def eval_step():
        model.eval()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            model(x)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train_s = _timed(train_step, steps, device)
    eval_s = _timed(eval_step, steps, device)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    return {"arch": arch, "device": device_name, "train_img_s": batch / train_s, "eval_img_s": batch / eval_s,
            "peak_mb": peak, "params_m": count_parameters(model) / 1e6}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.train_throughput",
                                description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--size", default="128x256")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--encoder", default="resnet34")
    p.add_argument("--devices", default="cpu,cuda")
    p.add_argument("--aspp-skip", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--one", nargs=2, metavar=("ARCH", "DEVICE"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    size = tuple(int(v) for v in a.size.split("x"))
    if a.one:
        print(json.dumps(measure(a.one[0], a.one[1], size, a.batch, a.steps, a.encoder, a.aspp_skip)))
        return
    devices = [d for d in a.devices.split(",") if d != "cuda" or torch.cuda.is_available()]
    rows = []
    for device in devices:
        base = None
        for arch in ARCHS:
            cmd = [sys.executable, "-m", "bench.train_throughput", "--one", arch, device, "--size", a.size, "--batch",
                   str(a.batch), "--steps", str(a.steps), "--encoder", a.encoder,
                   "--aspp-skip" if a.aspp_skip else "--no-aspp-skip"]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            base = base or r
            rows.append([device, arch, f"{r['train_img_s']:.1f}", f"{r['eval_img_s']:.1f}", f"{r['peak_mb']:.0f}",
                         f"{r['params_m']:.2f}", f"{r['train_img_s'] / base['train_img_s']:.2f}",
                         f"{r['params_m'] / base['params_m']:.2f}"])
    print(f"{a.encoder}, {a.size}, batch {a.batch}, ASPP+skip {a.aspp_skip}")
    print(tabulate(rows, headers=["device", "architecture", "train img/s", "eval img/s", "peak MiB", "params M",
                                  "train speed vs joint", "params vs joint"]))


if __name__ == "__main__":
    main()
