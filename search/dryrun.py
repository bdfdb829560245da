"""`--dry-run`: the trial table, a compute budget from a short throughput probe, and early warnings."""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path

import torch
from tabulate import tabulate

from mtl.config import TrialConfig
from mtl.data.depth_units import DepthUnit
from mtl.engine import Runtime
from mtl.losses import TaskWeighting, task_losses
from mtl.models import build_model
from mtl.optim import build_optimizer
from search.trials import Experiment, format_value


def trial_table(exp: Experiment) -> str:
    rows = []
    for row in exp.rows:
        overrides = ", ".join(f"{k}={format_value(v)}" for k, v in row.overrides.items()) or "(spec defaults)"
        for seed in (exp.seeds[:1] if exp.algorithm == "optuna" else exp.seeds):
            rows.append([len(rows) + 1, row.name + (" *" if row is exp.baseline else ""), overrides, seed])
    text = tabulate(rows, headers=["#", "variant (* baseline)", "overrides", "seed"])
    if exp.space:
        sampled = ", ".join(f"{k} ~ {kind}{format_value(args)}" for k, v in exp.space.items()
                            for kind, args in v.items())
        text += f"\nsampled by {exp.algorithm} ({exp.spec.search.num_samples} samples): {sampled}"
    return text


_SHAPE = ("architecture", "encoder", "dilation", "aspp", "skip", "se", "decoder_channels", "batch_size", "crop_size",
          "tasks")


def probe_throughput(cfg: TrialConfig, steps: int = 2) -> tuple[float, float]:
    """(train img/s, eval img/s) of this config's model at its crop size and batch size, here; measured
    once per model shape and process."""
    shape = tuple((k, _hashable(getattr(cfg, k))) for k in _SHAPE)
    return _probe(shape, steps)


def _hashable(v):
    return tuple(v) if isinstance(v, (list, tuple)) else v


@functools.cache
def _probe(shape: tuple, steps: int) -> tuple[float, float]:
    cfg = TrialConfig(**dict(shape))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(cfg).to(device)
    weighting = TaskWeighting("fixed", (0.5, 0.5), tasks=cfg.tasks).to(device)
    opt = build_optimizer(cfg, model)
    rt = Runtime(device, DepthUnit("standardized", 50.0, 50.0))
    b, (h, w) = cfg.batch_size, cfg.crop
    x, s, d = torch.randn(b, 3, h, w, device=device), torch.randint(0, 19, (b, h, w), device=device), \
        torch.randn(b, 1, h, w, device=device)

    def step() -> None:
        model.train()
        loss = weighting(task_losses(model(x), s, d, "l2", rt.unit))
        opt.zero_grad()
        loss.backward()
        opt.step()

    def timed(fn) -> float:
        fn()
        rt.sync()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        rt.sync()
        return b * steps / (time.perf_counter() - start)

    train_rate = timed(step)
    model.eval()
    with torch.no_grad():
        eval_rate = timed(lambda: model(x))
    return train_rate, eval_rate


def packing_speedup(bench_file: str | None, per_gpu: int) -> float | None:
    """Aggregate throughput of `per_gpu` trials sharing one GPU relative to one trial alone, from the packing
    table `python -m bench.gpu` measured (the nearest measured count at or below `per_gpu`)."""
    if not bench_file or per_gpu <= 1:
        return None
    packing = {p["trials"]: p["img_s"] for p in json.loads(Path(bench_file).read_text())["packing"]}
    if 1 not in packing:
        return None
    n = max((k for k in packing if k <= per_gpu), default=1)
    return packing[n] / packing[1]


def parallel_speed(concurrency: int, gpus_per_trial: float, bench_file: str | None) -> tuple[float, str]:
    """How many single trials' worth of throughput run at once, and how that was decided."""
    if gpus_per_trial <= 0 or gpus_per_trial >= 1:
        return float(concurrency), ""
    per_gpu = int(1 // gpus_per_trial)
    gpus = max(concurrency // per_gpu, 1)
    speedup = packing_speedup(bench_file, per_gpu)
    if speedup is None:
        return float(concurrency), (f"{per_gpu} trials per GPU counted as {per_gpu}x one trial (packing not "
                                    "measured: pass --gpu-bench DIR/gpu.json from `python -m bench.gpu`)")
    return gpus * speedup, f"{per_gpu} trials per GPU give {speedup:.2f}x one trial (measured packing)"


def budget(exp: Experiment, concurrency: int, probe_steps: int = 2, gpus_per_trial: float = 0.0,
           bench_file: str | None = None) -> str:
    trials = exp.trial_count()
    rates: dict[tuple, tuple[float, float]] = {}
    seconds = images = epochs = 0.0
    per_row = max(trials // max(len(exp.rows), 1), 1)
    for row in exp.rows:
        cfg = TrialConfig.from_dict({**exp.defaults, **row.overrides})
        counts = cfg.counts()
        key = (cfg.architecture, cfg.encoder, cfg.aspp, cfg.skip, cfg.batch_size, cfg.crop, cfg.decoder_channels)
        if key not in rates:
            rates[key] = probe_throughput(cfg, probe_steps)
        train_rate, eval_rate = rates[key]
        n_train, n_val = counts["train"] or 0, counts["val"] or 0
        epochs += cfg.epochs * per_row
        images += cfg.epochs * (n_train + n_val) * per_row
        seconds += cfg.epochs * (n_train / train_rate + n_val / eval_rate) * per_row
    speed, how = parallel_speed(concurrency, gpus_per_trial, bench_file)
    hours = seconds / 3600 / max(speed, 1e-9)
    device = "CUDA GPU" if torch.cuda.is_available() else "CPU"
    return (f"budget: {trials} trials, {int(epochs)} epochs, {int(images):,} images through the model; "
            f"~{_hours(hours)} with {concurrency} concurrent trial(s){', ' + how if how else ''} "
            f"(probe on this {device}, {len(rates)} model shape(s))")


def _hours(h: float) -> str:
    return f"{h * 60:.1f} min" if h < 1 else f"{h:.1f} h" if h < 48 else f"{math.ceil(h / 24)} days"
