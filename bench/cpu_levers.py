"""What each lever of the `cpu` profile buys on this machine: one table, every figure measured here.

    python -m bench.cpu_levers [--steps 12] [--out bench_cpu_levers.md]

Model: the main job's (part-1 architecture from scratch: ResNet + dilation (F, F, T) + ASPP + skip, decoder 128)
at the profile's 64x64 training crop, batch 4, Adam. Rows: encoder depth; bf16 autocast, channels_last and
torch.compile on CPU; threads per trial against trials in parallel; decoding PNGs against in-memory data;
checkpoint size and save time. Each throughput runs in a fresh process (threads and compile caches are per process).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import torch
from tabulate import tabulate

from bench.gpu import training_step
from bench.train_throughput import _timed
from mtl.config import TrialConfig
from mtl.profiles import PROFILES

BASE = {**PROFILES["cpu"], "architecture": "joint", "dilation": [False, False, True], "aspp": True, "skip": True,
        "optimizer": "adam", "lr": 1e-3, "pretrained": False}
VARIANTS = {  # name -> TrialConfig overrides
    "ResNet-18 fp32 (the profile)": {},
    "ResNet-34 fp32": {"encoder": "resnet34"},
    "ResNet-18 bf16 autocast": {"amp": "bf16"},
    "ResNet-18 channels_last": {"channels_last": True},
    "ResNet-18 torch.compile": {"compile": "default"},
}


def step_rate(name: str, threads: int, steps: int) -> dict:
    """Training img/s of one variant in this process (warm-up excluded; compile time reported apart)."""
    torch.set_num_threads(threads)
    cfg = TrialConfig.from_dict({**BASE, **VARIANTS[name]})
    _, step = training_step(cfg, torch.device("cpu"))
    start = time.perf_counter()
    step()  # compiles, when compiling
    first = time.perf_counter() - start
    seconds = _timed(step, steps, torch.device("cpu"))
    return {"img_s": cfg.batch_size / seconds, "first_step_s": first}


def _child(name: str, threads: int, steps: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.cpu_levers", "--one", name, str(threads), str(steps)],
                            stdout=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    return json.loads(out.strip().splitlines()[-1])


def data_rates(images: int = 128) -> dict:
    """Training samples/s (augmentation included) from PNG files through the DataLoader, and from arrays decoded
    once through the batched augmentation (the `in_memory` path), on this CPU."""
    from mtl.data.loading import build_data, make_loaders

    cfg = TrialConfig.from_dict({**BASE, "train_images": images, "val_images": 8, "test_images": 8, "in_memory": False})
    rates = {}
    for label, memory in (("PNG files", False), ("in memory", True)):
        start = time.perf_counter()
        data = build_data(cfg.replace(in_memory=memory))
        decode = time.perf_counter() - start
        train, _ = make_loaders(cfg.replace(in_memory=memory), data, torch.device("cpu"))
        start = time.perf_counter()
        seen = sum(len(batch["index"]) for batch in train)
        rates[label] = seen / (time.perf_counter() - start)
        if memory:
            rates.update(decode_once_s=decode, mib=sum(s.nbytes for s in data.decoded.values()) / 2**20)
    return {**rates, "images": images}


def checkpoint_cost() -> dict:
    """Size and save time of one checkpoint of the profile's model (model + Adam state)."""
    from mtl.checkpoint import save_checkpoint
    from mtl.models import build_model
    from mtl.optim import build_optimizer

    cfg = TrialConfig.from_dict(BASE)
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    model(torch.randn(2, 3, 64, 64))["semseg"].sum().backward()
    opt.step()  # Adam's moment buffers exist only after a step
    with tempfile.TemporaryDirectory() as d:
        start = time.perf_counter()
        path = save_checkpoint(d, {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 1})
        seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in path.iterdir())
    return {"mib": size / 2**20, "save_s": seconds}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.cpu_levers",
                                description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--out", help="also write the Markdown table here")
    p.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one:
        print(json.dumps(step_rate(a.one[0], int(a.one[1]), int(a.one[2]))))
        return
    rows, base = [], None
    for name in VARIANTS:
        r = _result(_child(name, 1, a.steps))
        base = base or r["img_s"]
        rows.append([name + ", 1 thread", f"{r['img_s']:.1f}", f"{r['img_s'] / base:.2f}",
                     f"{r['first_step_s']:.1f} s"])
    two = _result(_child(next(iter(VARIANTS)), 2, a.steps))
    rows.append(["1 trial x 2 threads", f"{two['img_s']:.1f}", f"{two['img_s'] / base:.2f}", ""])
    pair = [_child(next(iter(VARIANTS)), 1, a.steps) for _ in range(2)]
    together = sum(_result(c)["img_s"] for c in pair)
    rows.append(["2 trials x 1 thread, in parallel (sum)", f"{together:.1f}", f"{together / base:.2f}", ""])
    table = tabulate(rows, headers=["training step (batch 4, 64x64 crop)", "img/s", "vs profile", "first step"],
                     tablefmt="github")
    d, c = data_rates(), checkpoint_cost()
    extra = (f"\n\nData ({d['images']} training images, transform included): {d['PNG files']:.0f} samples/s from PNG "
             f"files, {d['in memory']:.0f} from memory after a {d['decode_once_s']:.2f} s decode ({d['mib']:.1f} MiB)."
             f"\nCheckpoint (model + Adam state): {c['mib']:.0f} MiB, saved in {c['save_s']:.2f} s.")
    print(table + extra)
    if a.out:
        with open(a.out, "w") as f:
            f.write(table + extra + "\n")


if __name__ == "__main__":
    main()
