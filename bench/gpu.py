"""Course-scale training on one GPU: throughput, MFU and memory, optimisation by optimisation, data path,
packing several trials on the GPU, a course-scale trial projected from a measured slice, and a real Tune trial
against that bare loop (goal: ratio >= 0.95).

    python -m bench.gpu --out DIR            # on a GPU machine: at most ~8 minutes; writes gpu.json and gpu.md
    python -m bench.gpu --out DIR --smoke    # the same code paths on the CPU at tiny sizes (the tests run this)

MFU = measured training FLOPs (torch.utils.flop_counter, forward + backward of one step) x steps/s divided by
the dense bf16 tensor-core peak of the GPU found (PEAK_BF16_TFLOPS). Packing runs N trial processes at once,
each with 1/N of the GPU as Tune's fractional `gpus` would give them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

from mtl.config import TrialConfig

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from NVIDIA's product datasheets (H200, H100 SXM/PCIe,
# A100, L40S, L4, A10) - the first matching name wins. T4 and V100 have no bf16 tensor cores: no MFU there.
PEAK_BF16_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0), ("L40S", 362.1),
                    ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0))
COURSE_IMAGES = 20000 * 16  # a course-scale trial: 20 000 train images x 16 epochs
PART1 = {"dilation": [False, False, True], "aspp": True, "skip": True, "optimizer": "adam", "lr": 1e-4,
         "pretrained": False, "encoder": "resnet34"}
LADDER = {  # name -> TrialConfig switches, each row adding one optimisation
    "fp32 eager": {"amp": "off", "channels_last": False, "compile": "off"},
    "+ bf16 autocast": {"amp": "bf16", "channels_last": False, "compile": "off"},
    "+ channels_last": {"amp": "bf16", "channels_last": True, "compile": "off"},
    "+ torch.compile": {"amp": "bf16", "channels_last": True, "compile": "default"},
    "+ CUDA graphs": {"amp": "bf16", "channels_last": True, "compile": "reduce-overhead"},
}


def peak_tflops(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((tf for key, tf in PEAK_BF16_TFLOPS if key in name), None)


def training_step(cfg: TrialConfig, device: torch.device):
    """Model (maybe compiled), optimizer, runtime and one step function on random inputs of the crop size."""
    from mtl.data.depth_units import DepthUnit
    from mtl.losses import TaskWeighting, task_losses
    from mtl.models import build_model
    from mtl.optim import build_optimizer
    from mtl.train import make_runtime

    model = build_model(cfg).to(device)
    model = model.to(memory_format=torch.channels_last) if cfg.channels_last else model
    net = model if cfg.compile == "off" else torch.compile(model, mode=cfg.compile)
    opt, weighting = build_optimizer(cfg, model), TaskWeighting("fixed", (0.5, 0.5)).to(device)
    rt = make_runtime(cfg, device, DepthUnit("standardized", 18.0, 22.0))
    b, (h, w) = cfg.batch_size, cfg.crop
    x = torch.randn(b, 3, h, w, device=device)
    x = x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x
    semseg, depth = torch.randint(0, 19, (b, h, w), device=device), torch.randn(b, 1, h, w, device=device)

    def step():
        with rt.autocast():
            out = net(x)
            loss = weighting(task_losses(out, {"semseg": semseg, "depth": depth}, "l2", rt.unit))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model, step


def train_flops(cfg: TrialConfig) -> float:
    """FLOPs of one training step (forward + backward) per image, counted on the CPU in fp32 eager."""
    from torch.utils.flop_counter import FlopCounterMode

    # batch 2: BatchNorm after the ASPP's image pooling needs more than one value per channel
    eager = cfg.replace(amp="off", channels_last=False, compile="off", batch_size=2)
    _, step = training_step(eager, torch.device("cpu"))
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops()) / 2


def _barrier(directory: str | None, world: int) -> None:
    """Packed trials start measuring together: each marks itself ready, then waits for the others."""
    if not directory:
        return
    Path(directory, f"ready-{os.getpid()}").touch()
    while len(list(Path(directory).glob("ready-*"))) < world:
        time.sleep(0.05)


def measure(cfg: TrialConfig, device: torch.device, seconds: float, barrier: str | None = None,
            world: int = 1) -> dict:
    """Steady-state training img/s over `seconds` (after warm-up and compilation) and peak memory."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    _, step = training_step(cfg, device)
    start = time.perf_counter()
    for _ in range(3):  # compile, autotune, CUDA graph capture
        step()
    sync()
    warmup = time.perf_counter() - start
    _barrier(barrier, world)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or steps < 3:
        step()
        steps += 1
        if steps % 10 == 0:
            sync()
    sync()
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return {"img_s": steps * cfg.batch_size / elapsed, "peak_mib": peak, "warmup_s": warmup}


def data_path(cfg: TrialConfig, device: torch.device, batches: int) -> dict:
    """Batches/s of the training loader alone: PNG files through DataLoader workers vs arrays decoded once and
    augmented on the device."""
    from mtl.data.loading import build_data, make_loaders

    out = {}
    for label, memory in (("png_loader", False), ("gpu_path", True)):
        run_cfg = cfg.replace(in_memory=memory)
        loader, _ = make_loaders(run_cfg, build_data(run_cfg), device)
        it, start = iter(loader), time.perf_counter()
        n = 0
        for _ in range(batches):
            batch = next(it, None)
            if batch is None:
                break
            n += len(batch["index"])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out[label] = n / (time.perf_counter() - start)
    return out


def _pack(args: argparse.Namespace, cfg: TrialConfig, n: int) -> dict:
    """N trial processes on the one device at once; aggregate img/s and memory per trial."""
    with tempfile.TemporaryDirectory() as barrier:
        cmd = [sys.executable, "-m", "bench.gpu", "--one", json.dumps(cfg.to_flat()), "--seconds", str(args.seconds),
               "--barrier", barrier, "--world", str(n)]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(n)]
        results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return {"trials": n, "img_s": sum(r["img_s"] for r in results), "peak_mib_per_trial": max(r["peak_mib"]
            for r in results)}


def sizes(smoke: bool) -> dict:
    if smoke:  # the CPU path of the tests: tiny, fast, no compilation
        return {"crop_size": 32, "batch_size": 2, "image_size": [32, 64], "train_images": 16, "val_images": 8,
                "test_images": 8, "decoder_channels": 32, "encoder": "resnet18", "val_batch_size": 8}
    return {"crop_size": 256, "batch_size": 4, "image_size": [256, 512], "train_images": 2000, "val_images": 100,
            "test_images": 100, "val_batch_size": 32, "num_workers": 8}


def run(args: argparse.Namespace) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    gpu, peak = peak_tflops(device)
    base = TrialConfig.from_dict({**PART1, **sizes(args.smoke), "device": device.type})
    ladder = {k: v for k, v in LADDER.items() if device.type == "cuda" or v["compile"] == "off"}
    best = ladder[list(ladder)[-1]]

    def row(cfg: TrialConfig, flops: float) -> dict:
        m = measure(cfg, device, args.seconds)
        mfu = m["img_s"] * flops / (peak * 1e12) if peak else None
        return {**m, "gflop_per_img": flops / 1e9, "mfu": mfu}

    flops = {a: train_flops(base.replace(architecture=a)) for a in ("joint", "branched", "distilled")}
    result = {"device": gpu, "peak_bf16_tflops": peak, "config": base.to_flat(), "ladder": {}, "architectures": {}}
    for name, switches in ladder.items():
        result["ladder"][name] = row(base.replace(**switches), flops["joint"])
    for arch in flops:
        result["architectures"][arch] = row(base.replace(architecture=arch, **best), flops[arch])
    result["data"] = data_path(base.replace(**best), device, batches=args.data_batches)
    result["packing"] = [_pack(args, base.replace(**best), n) for n in args.packing]
    for p in result["packing"]:
        p["mfu"] = p["img_s"] * flops["joint"] / (peak * 1e12) if peak else None
    slice_ = measure(base.replace(**best), device, args.slice)
    result["course_trial"] = {"img_s": slice_["img_s"], "slice_s": args.slice,
                              "projected_min": COURSE_IMAGES / slice_["img_s"] / 60}
    result["tune_trial"] = tune_trial(args, base.replace(**best), slice_["img_s"])
    return result


TUNE_KEYS = ("encoder", "dilation", "aspp", "skip", "decoder_channels", "batch_size", "val_batch_size", "crop_size",
             "image_size", "train_images", "val_images", "test_images", "amp", "channels_last", "compile")


def tune_trial(args: argparse.Namespace, cfg: TrialConfig, bare_img_s: float) -> dict:
    """One real Tune trial (`run_search.py` on a one-row spec, Ray started for real) with the slice's settings, on
    the decoded data path (what `in_memory: auto` picks when the data fits): its training img/s after the first
    epoch (compilation, warm-up) against the bare loop's."""
    from bench.tune_overhead import inside

    flat = cfg.to_flat()
    sets = [f"{k}={json.dumps(flat[k])}" for k in TUNE_KEYS] + ["in_memory=true", f"epochs={args.tune_epochs}"]
    threads = 2 if args.smoke else max(min(os.cpu_count() or 1, 8), 1)
    with tempfile.TemporaryDirectory() as tmp:
        per_epoch = inside("smoke" if args.smoke else "full", threads, Path(tmp), sets)
    img_s = float(np.mean(per_epoch))
    return {"img_s": img_s, "bare_img_s": bare_img_s, "ratio": img_s / bare_img_s, "epochs": args.tune_epochs}


def markdown(r: dict) -> str:
    def pct(v):
        return "n/a" if v is None else f"{v:.1%}"

    lines = [f"# bench.gpu on {r['device']} (dense bf16 peak: {r['peak_bf16_tflops'] or 'n/a'} TFLOP/s)", ""]
    rows = [[k, f"{v['img_s']:.1f}", pct(v["mfu"]), f"{v['peak_mib']:.0f}", f"{v['warmup_s']:.1f}"]
            for k, v in r["ladder"].items()]
    lines += [tabulate(rows, ["joint, one optimisation at a time", "img/s", "MFU", "peak MiB", "warm-up s"],
                       tablefmt="github"), ""]
    rows = [[k, f"{v['gflop_per_img']:.2f}", f"{v['img_s']:.1f}", pct(v["mfu"]), f"{v['peak_mib']:.0f}"]
            for k, v in r["architectures"].items()]
    lines += [tabulate(rows, ["architecture (best settings)", "GFLOP/img", "img/s", "MFU", "peak MiB"],
                       tablefmt="github"), ""]
    rows = [[p["trials"], f"{p['img_s']:.1f}", pct(p["mfu"]), f"{p['peak_mib_per_trial']:.0f}"] for p in r["packing"]]
    lines += [tabulate(rows, ["trials on the device", "aggregate img/s", "aggregate MFU", "peak MiB per trial"],
                       tablefmt="github"), ""]
    d, c = r["data"], r["course_trial"]
    lines += [f"Training loader alone: {d['png_loader']:.0f} img/s from PNG files, {d['gpu_path']:.0f} img/s on "
              f"the decoded GPU path.", f"Course-scale joint trial (20 000 x 16 epochs), projected from a "
              f"{c['slice_s']:.1f} s slice at {c['img_s']:.1f} img/s: {c['projected_min']:.1f} min.", ""]
    t = r["tune_trial"]
    lines += [f"A real Tune trial with the slice's settings ({t['epochs']} epochs, the first left out): "
              f"{t['img_s']:.1f} img/s against the bare loop's {t['bare_img_s']:.1f}: ratio {t['ratio']:.3f} "
              "(goal >= 0.95).", ""]
    return "\n".join(lines)


def _finite(value):
    """JSON has no NaN: unmeasured numbers (CPU peak memory, MFU without a peak) become null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not np.isfinite(value) else value


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--out", help="directory for gpu.json and gpu.md (required)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (what the tests run)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per configuration")
    p.add_argument("--slice", type=float, default=120.0, help="seconds of the course-trial slice")
    p.add_argument("--packing", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2, 4, 8])
    p.add_argument("--data-batches", type=int, default=200)
    p.add_argument("--tune-epochs", type=int, default=3, help="epochs of the real Tune trial (>= 2)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--barrier", help=argparse.SUPPRESS)
    p.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one:  # one packed trial process
        cfg = TrialConfig.from_dict(json.loads(a.one))
        if cfg.device == "cpu":
            torch.set_num_threads(max((os.cpu_count() or 1) // a.world, 1))  # packed CPU trials split the cores
        device = torch.device(cfg.device if cfg.device != "auto" else "cpu")
        print(json.dumps(measure(cfg, device, a.seconds, a.barrier, a.world)))
        return
    if not a.out:
        p.error("--out DIR is required")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result = run(a)
    (out / "gpu.json").write_text(json.dumps(_finite(result), indent=2))
    (out / "gpu.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
