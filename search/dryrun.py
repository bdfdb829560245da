"""`--dry-run`: the trial table, a compute budget from a short throughput probe, and early warnings."""

from __future__ import annotations

import functools
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tabulate import tabulate

from mtl.config import TrialConfig
from mtl.data.depth_units import DepthUnit
from mtl.engine import Runtime, random_targets, train_step
from mtl.losses import TaskWeighting
from mtl.models import build_model
from mtl.optim import build_optimizer
from search.trials import Experiment, format_value


def trial_table(exp: Experiment) -> str:
    rows = []
    frontier = exp.spec.report.frontier if exp.adaptive is not None else None
    seeds = exp.seeds[:1] if exp.algorithm == "optuna" else tuple(frontier.tuning_seeds) if frontier else exp.seeds
    for row in exp.rows:
        overrides = ", ".join(f"{k}={format_value(v)}" for k, v in row.overrides.items()) or "(spec defaults)"
        for seed in seeds:
            rows.append([len(rows) + 1, row.name + (" *" if row is exp.baseline else ""), overrides, seed])
    text = tabulate(rows, headers=["#", "variant (* baseline)", "overrides", "seed"])
    if frontier:
        compare = [s for s in exp.seeds if s not in frontier.tuning_seeds]
        text += (f"\nthen each variant's row tuned on seed(s) {list(seeds)} runs comparison seeds "
                 f"{compare[:exp.adaptive.first]}, and each method still unresolved one more seed per round, up to "
                 f"{compare}: at most {exp.trial_count()} trials (search/frontier_seeds.py)")
    if exp.space:
        sampled = ", ".join(f"{k} ~ {kind}{format_value(args)}" for k, v in exp.space.items()
                            for kind, args in v.items())
        text += f"\nsampled by {exp.algorithm} ({exp.spec.search.num_samples} samples): {sampled}"
    if exp.objectives:
        how = [f"{k} ({v})" for k, v in exp.objectives.items()]
        uses = ["the report's front and dominance test"]
        if exp.algorithm == "optuna":
            uses.insert(0, "Optuna's multi-objective study")
        if exp.scheduler == "asha":
            uses.insert(0, "Pareto ASHA")
        text += f"\nobjectives: {', '.join(how)}: {', '.join(uses)}"
    return text


_SHAPE = ("task_weighting", "model", "architecture", "encoder", "dilation", "aspp", "skip", "se", "decoder_channels",
          "batch_size", "crop_size", "tasks", "optimizer", "image_size", "val_batch_size")


@dataclass(frozen=True)
class Probe:
    """What one trial's work costs here, measured on its model at its sizes and thread count."""

    step_s: float  # one training step (forward, backward, optimizer) at batch_size x crop
    eval_batch_s: float  # one evaluation batch at val_batch_size x the evaluated image size
    checkpoint_s: float  # saving the full state, and Tune's copy of it into the storage
    build_s: float  # building the model and its optimizer


def probe(cfg: TrialConfig, steps: int = 2, threads: int | None = None) -> Probe:
    """Measure `cfg`'s model at `threads` CPU threads (a trial's own count); once per shape and process."""
    shape = tuple((k, _hashable(getattr(cfg, k))) for k in _SHAPE)
    return _probe(shape, steps, threads)


def _hashable(v):
    return tuple(v) if isinstance(v, (list, tuple)) else v


def _timed(fn, steps: int, sync) -> float:
    fn()  # warm-up: first-call allocations and kernel choices
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - start) / steps


@functools.cache
def _probe(shape: tuple, steps: int, threads: int | None) -> Probe:
    cfg = TrialConfig(**dict(shape))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    before = torch.get_num_threads()
    if threads and device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        tick = time.perf_counter()
        model = build_model(cfg).to(device)
        # the row's own method: a gradient-aggregation method's step costs one backward pass per task
        weighting = TaskWeighting(cfg.task_weighting, cfg.loss_weights, tasks=cfg.tasks).to(device)
        opt = build_optimizer(cfg, model, weighting)
        build_s = time.perf_counter() - tick
        rt = Runtime(device, DepthUnit("standardized", 50.0, 50.0))
        b, (h, w) = cfg.batch_size, cfg.crop
        x, targets = torch.randn(b, 3, h, w, device=device), random_targets(cfg.tasks, b, h, w, device)

        def step() -> None:
            model.train()
            train_step(model, x, targets, opt, weighting, rt)

        step_s = _timed(step, steps, rt.sync)
        eh, ew = (max(32, v // 32 * 32) for v in cfg.image_size)  # evaluation: centre crop to a multiple of 32
        xv = torch.randn(cfg.val_batch_size, 3, eh, ew, device=device)
        model.eval()
        with torch.no_grad():
            eval_s = _timed(lambda: model(xv), max(steps // 2, 1), rt.sync)
        with tempfile.TemporaryDirectory() as tmp:
            tick = time.perf_counter()
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, f"{tmp}/state.pt")
            checkpoint_s = 2 * (time.perf_counter() - tick)  # the trial writes it, Tune copies it
    finally:
        torch.set_num_threads(before)
    return Probe(step_s, eval_s, checkpoint_s, build_s)


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


# Start-up outside the trials, measured on 2 cores (bench.search_overhead): the driver's imports and Ray's start,
# and a worker process per concurrent trial (reused by later trials: Tune's reuse_actors)
RAY_START_S = 12.0
WORKER_START_S = 5.0
TRIAL_START_S = 0.5  # data set-up of a trial (decoded data shared by the driver) and Tune's bookkeeping


@dataclass
class Estimate:
    """A search's wall time from what its trials cost here: each row's trial from its measured steps, the
    trials laid on the concurrent slots longest first, plus the start-up outside them."""

    trials: int
    epochs: int
    images: int
    trial_s: list[float]
    concurrency: int
    speed: float
    how: str
    shapes: int
    threads: int
    step_s: dict[str, float] | None = None  # one training step by task_weighting (the first row of each)

    @property
    def seconds(self) -> float:
        factor = self.concurrency / max(self.speed, 1e-9)  # fractional GPUs: packed trials slow each other
        slots = [0.0] * max(self.concurrency, 1)
        for t in sorted(self.trial_s, reverse=True):
            slots[slots.index(min(slots))] += t * factor
        return RAY_START_S + WORKER_START_S + max(slots)

    def text(self, device: str) -> str:
        return (f"budget: {self.trials} trials, {self.epochs} epochs, {self.images:,} images through the model; "
                f"~{_hours(self.seconds / 3600)} with {self.concurrency} concurrent trial(s)"
                f"{', ' + self.how if self.how else ''} (each trial's steps, evaluation and checkpoints measured "
                f"on this {device} at {self.threads} thread(s) a trial, {self.shapes} model shape(s); "
                f"start-up {RAY_START_S + WORKER_START_S:.0f} s; without early stopping){self._steps()}")

    def _steps(self) -> str:
        """What each task_weighting method's step costs, against the first one's: a Jacobian method does one
        backward pass per task."""
        if not self.step_s or set(self.step_s) == {"fixed"}:
            return ""
        base = next(iter(self.step_s.values()))
        parts = [f"{m} {s * 1000:.0f} ms ({s / base:.1f}x)" for m, s in self.step_s.items()]
        return "\ntraining step by task_weighting: " + ", ".join(parts)


def trial_seconds(cfg: TrialConfig, p: Probe) -> float:
    counts = cfg.counts()
    n_train, n_val = counts["train"] or 0, counts["val"] or 0
    checkpoints = cfg.epochs // cfg.checkpoint_every + (cfg.epochs % cfg.checkpoint_every > 0)
    per_epoch = n_train // cfg.batch_size * p.step_s + math.ceil(n_val / cfg.val_batch_size) * p.eval_batch_s
    return TRIAL_START_S + p.build_s + cfg.epochs * per_epoch + checkpoints * p.checkpoint_s


def estimate(exp: Experiment, concurrency: int, probe_steps: int = 2, gpus_per_trial: float = 0.0,
             bench_file: str | None = None, cpus_per_trial: float = 1.0) -> Estimate:
    trials = exp.trial_count()
    share = _trials_per_row(exp)
    durations, epochs, images, shapes, step_s = [], 0, 0, set(), {}
    threads = max(int(cpus_per_trial), 1)
    for row in exp.rows:
        cfg = TrialConfig.from_dict({**exp.defaults, **row.overrides})
        p = probe(cfg, probe_steps, cfg.cpu_threads or threads)
        shapes.add(p)
        step_s.setdefault(cfg.task_weighting, p.step_s)
        counts = cfg.counts()
        per_row = share(row.name)
        epochs += cfg.epochs * per_row
        images += cfg.epochs * ((counts["train"] or 0) + (counts["val"] or 0)) * per_row
        durations += [trial_seconds(cfg, p)] * per_row
    speed, how = parallel_speed(concurrency, gpus_per_trial, bench_file)
    return Estimate(trials, epochs, images, durations, concurrency, speed, how, len(shapes), threads, step_s)


def _trials_per_row(exp: Experiment):
    """Row name -> the trials it runs at most: a frontier study's rows run the tuning seeds, and the comparison seeds
    go to one row per variant (the tuning decides which; its rows cost alike, so the first stands for it)."""
    frontier = exp.spec.report.frontier if exp.adaptive is not None else None
    if frontier is None:
        per_row = max(exp.trial_count() // max(len(exp.rows), 1), 1)
        return lambda name: per_row
    names = [v["name"] for v in exp.spec.variants]
    first = {next(r.name for r in exp.rows if r.name == n or r.name.startswith(f"{n} | ")) for n in names}
    compare = len(exp.seeds) - len(frontier.tuning_seeds)
    return lambda name: len(frontier.tuning_seeds) + (compare if name in first else 0)


def budget(exp: Experiment, concurrency: int, probe_steps: int = 2, gpus_per_trial: float = 0.0,
           bench_file: str | None = None, cpus_per_trial: float = 1.0) -> str:
    est = estimate(exp, concurrency, probe_steps, gpus_per_trial, bench_file, cpus_per_trial)
    return est.text("CUDA GPU" if torch.cuda.is_available() else "CPU")


def _hours(h: float) -> str:
    return f"{h * 60:.1f} min" if h < 1 else f"{h:.1f} h" if h < 48 else f"{math.ceil(h / 24)} days"
