"""One training run: a `TrialConfig` in, a trained multi-task model and its metrics out.

    python -m mtl.train [--config FILE.yaml] [--profile smoke|cpu|full] [--out DIR] [key=value ...]

prints one line per epoch and a final JSON line. Inside Ray Tune, `search.trainable` calls
`train(cfg, report, checkpoint_dir)` with a `report` that forwards to `tune.report`.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import resource
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from mtl import checkpoint as ckpt_io
from mtl.aggregation import METHODS
from mtl.checkpoint import BEST_WEIGHTS, CorruptCheckpointError, load_checkpoint, save_checkpoint
from mtl.config import ConfigError, TrialConfig, parse_overrides
from mtl.data.datasets import open_dataset
from mtl.data.describe import dataset_info
from mtl.data.loading import build_data, make_loaders
from mtl.data.transforms import JointTransform
from mtl.engine import Diverged, Runtime, Timings, evaluate, train_one_epoch
from mtl.export import export_predictions
from mtl.losses import TaskWeighting
from mtl.models import build_model, count_parameters
from mtl.optim import build_optimizer, build_scheduler
from mtl.profiles import PROFILE_NAMES, PROFILES, resolve_profile
from mtl.tasks import COURSE_TASKS

Report = Callable[[dict[str, Any], str | None], None]
log = logging.getLogger("mtl.train")


def resolve_device(cfg: TrialConfig) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was requested but no CUDA GPU is available")
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if use_cuda else "cpu")


def make_runtime(cfg: TrialConfig, device: torch.device, unit) -> Runtime:
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ConfigError("amp: fp16 autocast needs a CUDA GPU; use bf16 on the CPU")
    amp = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp]
    if amp == torch.bfloat16 and device.type == "cuda" and torch.cuda.is_available() \
            and not torch.cuda.is_bf16_supported():
        # e.g. a T4: fp16 with a grad scaler is the fallback; a gradient-aggregation method has no scaler path
        # (TorchJD's Jacobian), so it trains in full precision there instead
        amp = None if cfg.task_weighting in METHODS else torch.float16
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    return Runtime(device, unit, cfg.depth_loss, amp, scaler, cfg.channels_last, dataset_info(cfg.data))


def _seed(cfg: TrialConfig, device: torch.device) -> None:
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)  # CPU runs repeat exactly
    else:
        torch.backends.cudnn.benchmark = True


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (KiB on Linux)


class _Run:
    """The objects of one run, built from the config; `state()` / `load()` make checkpoints."""

    def __init__(self, cfg: TrialConfig, progress: bool, decoded: dict | None = None) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg)
        _seed(cfg, self.device)
        tick = time.perf_counter()
        self.data = build_data(cfg, progress=progress, decoded=decoded)
        self.times = Timings(data_setup=time.perf_counter() - tick)
        self.model = build_model(cfg).to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # the compiled module runs the steps; checkpoints keep the plain model's state (no "_orig_mod." keys)
        self.net = self.model if cfg.compile == "off" else torch.compile(self.model, mode=cfg.compile)
        self.weighting = TaskWeighting(cfg.task_weighting, tuple(cfg.loss_weights), cfg.dwa_temperature,
                                       cfg.tasks, cfg.weighting_options()).to(self.device)
        self.optimizer = build_optimizer(cfg, self.model, self.weighting)
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self.rt = make_runtime(cfg, self.device, self.data.unit)
        self.train_loader, self.val_loader = make_loaders(cfg, self.data, self.device)
        self.parameters = count_parameters(self.model)
        self.epoch = 0
        self.best: dict[str, float] = {"best_multitask": float("-inf"), "best_epoch": 0, "best_score": float("-inf")}
        self.best_weights: dict[str, torch.Tensor] | None = None  # a CPU copy of the best epoch's weights

    def checkpoint_due(self) -> bool:
        return self.epoch % self.cfg.checkpoint_every == 0 or self.epoch == self.cfg.epochs

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "weighting": self.weighting.state_dict(),
                "scaler": self.rt.scaler.state_dict() if self.rt.scaler else None, "epoch": self.epoch,
                "best": self.best, "rng": ckpt_io.rng_state(), "config": self.cfg.to_flat(),
                # the best epoch's weights ride along while they differ from the current ones, so a resumed run
                # still ends with them (finished trials keep only these: see final_state)
                "best_model": self.best_weights if self.best["best_epoch"] != self.epoch else None}

    def final_state(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """What a finished run keeps by default: the best epoch's weights, no optimizer or RNG state."""
        weights = self.best_weights or _cpu_copy(self.model.state_dict())
        return {"kind": BEST_WEIGHTS, "model": weights, "epoch": self.epoch, "best": self.best,
                "config": self.cfg.to_flat(), "final_metrics": metrics}

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.weighting.load_state_dict(state["weighting"])
        if self.rt.scaler is not None and state.get("scaler"):
            self.rt.scaler.load_state_dict(state["scaler"])
        self.epoch, self.best = state["epoch"], state["best"]
        ckpt_io.set_rng_state(state["rng"])
        current = _cpu_copy(state["model"]) if self.best["best_epoch"] == self.epoch else None
        self.best_weights = state.get("best_model") or current

    def run_epoch(self) -> dict[str, Any]:
        cfg, epoch = self.cfg, self.epoch
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        self.train_loader.sampler.set_epoch(epoch)
        train = train_one_epoch(self.net, self.train_loader, self.optimizer, self.weighting, self.rt)
        # the weights this epoch trained with (0 for a task a single-task model does not have)
        weights = dict(zip(self.weighting.tasks, self.weighting.current_weights().tolist(), strict=True))
        self.weighting.end_epoch({t: train[f"train_{t}_loss"] for t in self.weighting.tasks})
        self.scheduler.step()
        val = evaluate(self.net, self.val_loader, self.rt, cfg.tta)
        self.times.add(train["train_seconds"] - train["train_data_seconds"], train["train_data_seconds"],
                       val["eval_seconds"])
        self.epoch = epoch + 1
        if selection_score(val, cfg.tasks) > self.best.get("best_score", self.best["best_multitask"]):
            self.best = {"best_multitask": val["multitask"], "best_epoch": self.epoch,
                         "best_score": selection_score(val, cfg.tasks)}
            self.best_weights = _cpu_copy(self.model.state_dict())
        # the course's two weights always have a column (0: no such task); another task's where it is trained
        shown = {t: weights.get(t, 0.0) for t in ("semseg", "depth", *(t for t in weights if t not in COURSE_TASKS))}
        return {"epoch": self.epoch, **train, **val, "lr": lr, **{f"w_{t}": w for t, w in shown.items()},
                "epoch_seconds": time.perf_counter() - start, "peak_memory_mb": _peak_memory_mb(self.device),
                "parameters": self.parameters, **self.best,
                "status": "completed" if self.epoch == cfg.epochs else "running"}


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def selection_score(val: dict[str, float], tasks: tuple[str, ...]) -> float:
    """What picks the best epoch: multitask for the course's two tasks; mIoU, -SI-log or -mean angle for a
    single-task model; otherwise the mean over the tasks of each task's headline metric scaled from its worst value
    (0) to its best (1): mIoU / 100, 1 - SI-log / 100, 1 - mean angle / 90."""
    if tasks == COURSE_TASKS:
        return val["multitask"]
    if len(tasks) == 1:
        return {"semseg": val["semseg_miou"], "depth": -val["depth_silog"],
                "normals": -val.get("normals_mean", float("nan"))}[tasks[0]]
    scaled = {"semseg": val["semseg_miou"] / 100.0, "depth": 1.0 - val["depth_silog"] / 100.0,
              "normals": 1.0 - val.get("normals_mean", float("nan")) / 90.0}
    return float(np.mean([scaled[t] for t in tasks]))


def _diverged(run: _Run, error: Diverged) -> dict[str, Any]:
    """The report of a run whose loss blew up: the field scores such a model 0."""
    return {"epoch": run.epoch + 1, "status": "diverged", "diverged_reason": str(error), "multitask": 0.0,
            "semseg_miou": float("nan"), "depth_silog": float("nan"), "parameters": run.parameters, **run.best}


def train(cfg: TrialConfig, report: Report | None = None, checkpoint_dir: str | Path | None = None,
          out_dir: str | Path | None = None, progress: bool = False, decoded: dict | None = None,
          final: str = "full") -> dict[str, Any]:
    """Train (or resume from `checkpoint_dir`) and call report(metrics, checkpoint_path) every epoch, with a
    checkpoint every `checkpoint_every` epochs and at the last one (None in between). The last one is the full
    state, or with `final="weights"` the best epoch's weights only (`Run.final_state`).

    Checkpoints go to out_dir/last and out_dir/best when `out_dir` is given, otherwise to a temporary
    directory that lives until `report` returns (Tune copies it to the experiment storage). `decoded`: the
    train / val splits already decoded (shared by Ray's object store) for an `in_memory` run."""
    report = report or (lambda metrics, path: None)
    started = time.perf_counter()
    run = _Run(cfg, progress, decoded)
    state = _resume_state(checkpoint_dir, run.device)
    if state is not None and state.get("kind") == BEST_WEIGHTS:  # finished already (retried after its last report)
        report(state["final_metrics"], None)
        return state["final_metrics"]
    if state is not None:
        run.load(state)
    run.times.startup = time.perf_counter() - started
    metrics: dict[str, Any] = {"epoch": run.epoch, "status": "completed", **run.best}
    while run.epoch < cfg.epochs:
        try:
            metrics = run.run_epoch()
        except Diverged as e:
            metrics = _diverged(run, e)
            report(metrics, None)
            return metrics
        metrics = _report_epoch(run, metrics, report, out_dir, started, final)
    if cfg.export_predictions and out_dir:
        export_test_predictions(run, Path(out_dir) / "predictions")
    return metrics


def _resume_state(checkpoint_dir: str | Path | None, device: torch.device) -> dict[str, Any] | None:
    """The checkpoint to resume from; a damaged one is logged and the run restarts cleanly from epoch 0
    (the same seed gives the same run, so nothing but time is lost)."""
    if not checkpoint_dir:
        return None
    try:
        return load_checkpoint(checkpoint_dir, device)
    except CorruptCheckpointError as e:
        log.warning("%s; restarting this run from epoch 0", e)
        return None


def _report_epoch(run: _Run, metrics: dict[str, Any], report: Report, out_dir: str | Path | None,
                  started: float, final: str = "full") -> dict[str, Any]:
    """Checkpoint when due, then report; the time split so far rides along (`time_*` keys). Tune persists
    a checkpoint inside report(): that copy counts as checkpoint time from the next epoch's figures on."""
    tick = time.perf_counter()
    if not run.checkpoint_due():
        metrics = {**metrics, **run.times.as_metrics(tick - started)}
        report(metrics, None)
        return metrics
    with (nullcontext(str(Path(out_dir) / "last")) if out_dir else ckpt_io.staging_dir()) as ckpt:
        last = final == "weights" and run.epoch == run.cfg.epochs and not out_dir
        save_checkpoint(ckpt, run.final_state(metrics) if last else run.state())
        if out_dir and run.best["best_epoch"] == run.epoch:
            save_checkpoint(Path(out_dir) / "best", run.state())
        now = time.perf_counter()
        metrics = {**metrics, **run.times.as_metrics(now - started, pending_checkpoint=now - tick)}
        report(metrics, ckpt)
    run.times.checkpoint += time.perf_counter() - tick
    return metrics


def export_test_predictions(run: _Run, out: Path) -> int:
    cfg = run.cfg
    test = open_dataset(run.data.root, "test", JointTransform(train=False, multiple=1), limit=cfg.counts()["test"])
    return export_predictions(run.model, test, run.rt, out, cfg.tta, cfg.val_batch_size)


def _epoch_line(m: dict[str, Any]) -> str:
    if m.get("status") == "diverged":
        return f"epoch {m['epoch']:3d}  DIVERGED: {m['diverged_reason']}"
    return (f"epoch {m['epoch']:3d}  loss {m['train_loss']:.4f}  multitask {m['multitask']:6.2f}  "
            f"mIoU {m['semseg_miou']:6.2f}  SI-log {m['depth_silog']:6.2f}  lr {m['lr']:.2e}  "
            f"{m['train_img_per_s']:.1f} img/s  {m['epoch_seconds']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mtl.train", description="Train one multi-task model.")
    p.add_argument("--config", help="YAML file of TrialConfig fields")
    p.add_argument("--profile", choices=PROFILE_NAMES, help="scale data size, resolution and epochs")
    p.add_argument("--out", help="run directory (default runs/<timestamp>)")
    p.add_argument("overrides", nargs="*", help="key=value TrialConfig overrides")
    a = p.parse_args(argv)
    try:
        values = parse_overrides(a.overrides)
        if a.profile:
            values = {**PROFILES[resolve_profile(a.profile, torch.cuda.is_available())], **values}
        cfg = TrialConfig.from_yaml(a.config, values) if a.config else TrialConfig.from_dict(values, "command line")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_flat(), sort_keys=False))
    with open(out / "metrics.jsonl", "a") as log:
        def report(metrics: dict[str, Any], _path: str | None) -> None:
            print(_epoch_line(metrics), flush=True)
            log.write(json.dumps(metrics) + "\n")
            log.flush()

        final = train(cfg, report, checkpoint_dir=out / "last", out_dir=out, progress=True)
    print(json.dumps({k: v for k, v in final.items() if not k.startswith("iou_")}))
    return 0 if final.get("status") != "diverged" else 1


if __name__ == "__main__":
    sys.exit(main())
