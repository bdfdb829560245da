"""One epoch of training, one pass of evaluation, and prediction with optional test-time augmentation."""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchjd.autojac import jac_to_grad, mtl_backward

from mtl.aggregation import GradNorm
from mtl.data.depth_units import DepthUnit
from mtl.losses import TASKS, TaskWeighting, task_losses
from mtl.metrics import ConfusionMatrix, DepthMetrics, multitask_score, multitask_unclipped

TTA_SCALES = (0.75, 1.0, 1.25)


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class Runtime:
    """How tensors are placed and computed: device, mixed precision, memory format, depth unit."""

    device: torch.device
    unit: DepthUnit
    depth_loss: str = "l2"
    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    channels_last: bool = False

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rgb = batch["rgb"].to(self.device, non_blocking=True)
        if self.channels_last:
            rgb = rgb.contiguous(memory_format=torch.channels_last)
        semseg = batch["semseg"].to(self.device, non_blocking=True)
        return rgb, semseg, batch["depth"].to(self.device, non_blocking=True)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, weighting: TaskWeighting,
                    rt: Runtime) -> dict[str, float]:
    model.train()
    task_sums = torch.zeros(len(TASKS), dtype=torch.float64, device=rt.device)  # semseg, depth: read once per epoch
    zero = torch.zeros((), device=rt.device)
    total_sum = 0.0
    steps = images = 0
    start = time.perf_counter()
    waited = 0.0  # seconds spent waiting for the loader: the data share of the step time
    batches = iter(loader)
    while True:
        tick = time.perf_counter()
        batch = next(batches, None)
        waited += time.perf_counter() - tick
        if batch is None:
            break
        rgb, semseg, depth_m = rt.inputs(batch)
        value, losses = train_step(model, rgb, semseg, rt.unit.encode(depth_m), optimizer, weighting, rt)
        if not math.isfinite(value):
            raise Diverged(f"loss became {value} at step {steps + 1}")
        total_sum += value
        task_sums += torch.stack([losses[t].detach() if t in losses else zero for t in TASKS]).double()
        steps += 1
        images += rgb.shape[0]
    rt.sync()
    seconds = time.perf_counter() - start
    mean = [m if t in weighting.tasks else float("nan") for t, m in zip(TASKS, (task_sums / max(steps, 1)).tolist(),
                                                                         strict=True)]  # NaN: a task not trained
    return {"train_loss": total_sum / max(steps, 1), "train_semseg_loss": mean[0], "train_depth_loss": mean[1],
            "train_img_per_s": images / max(seconds, 1e-9), "train_seconds": seconds, "train_data_seconds": waited,
            "train_step_ms": 1000 * (seconds - waited) / max(steps, 1)}  # forward, backward(s), optimiser


def train_step(model: nn.Module, rgb: torch.Tensor, semseg: torch.Tensor, target: torch.Tensor,
               optimizer: torch.optim.Optimizer, weighting: TaskWeighting, rt: Runtime
               ) -> tuple[float, dict[str, torch.Tensor]]:
    """One optimiser step; returns the total loss (the step is skipped when it is not finite) and the task losses.
    rgb (B, 3, H, W), semseg (B, H, W), target (B, 1, H, W) in the depth unit with NaN where invalid."""
    if weighting.aggregator is not None:
        return _aggregated_step(model, rgb, semseg, target, optimizer, weighting, rt)
    with rt.autocast():
        out = model(rgb)
    losses = task_losses(out, semseg, target, rt.depth_loss, rt.unit)
    total = weighting(losses)
    if "semseg_aux" in out:  # distillation: the initial predictions are supervised too
        total = total + weighting(task_losses(out, semseg, target, rt.depth_loss, rt.unit, suffix="_aux"))
    value = total.item()  # the one host sync per step: a NaN must stop the run before it spreads
    if not math.isfinite(value):
        return value, losses
    optimizer.zero_grad(set_to_none=True)
    if rt.scaler is not None:
        rt.scaler.scale(total).backward()
        rt.scaler.step(optimizer)
        rt.scaler.update()
    else:
        total.backward()
        optimizer.step()
    return value, losses


def _aggregated_step(model: nn.Module, rgb: torch.Tensor, semseg: torch.Tensor, target: torch.Tensor,
                     optimizer: torch.optim.Optimizer, weighting: TaskWeighting, rt: Runtime
                     ) -> tuple[float, dict[str, torch.Tensor]]:
    """The Jacobian of the task losses at the shared features, backpropagated to the shared parameters (one row
    per task), reduced by the method's aggregator; each head gets its own task's gradient (mtl_backward)."""
    with rt.autocast():
        features = model.shared_features(rgb)
        out = model.heads(features, rgb.shape[-2:], per_task=True)
    losses = task_losses(out, semseg, target, rt.depth_loss, rt.unit)
    per_task = dict(losses)
    if "semseg_aux" in out:  # distillation: a task's initial prediction is part of its loss
        aux = task_losses(out, semseg, target, rt.depth_loss, rt.unit, suffix="_aux")
        per_task = {t: per_task[t] + aux[t] for t in per_task}
    rows = [per_task[t] for t in weighting.tasks]
    value = weighting(per_task).item()
    if not math.isfinite(value):
        return value, losses
    if isinstance(weighting.aggregator, GradNorm):
        weighting.aggregator.observe(torch.stack(rows))
    shared = model.shared_parameters()
    optimizer.zero_grad(set_to_none=True)
    mtl_backward(rows, features=list(features), shared_params=shared)
    weights = jac_to_grad(shared, weighting.aggregator)  # the rows' weights, for a method that weights them
    weighting.record(weighting.aggregator.weights if isinstance(weighting.aggregator, GradNorm) else weights)
    optimizer.step()
    return value, losses


@torch.no_grad()
def predict(model: nn.Module, rgb: torch.Tensor, rt: Runtime, tta: str = "off"
            ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Class probabilities (B, 19, H, W) and depth in metres (B, 1, H, W) - None for a task a single-task
    model lacks; TTA averages both over horizontal flips (`flip`) and also scales 0.75 / 1 / 1.25 (`multiscale`)."""
    size = rgb.shape[-2:]
    scales = TTA_SCALES if tta == "multiscale" else (1.0,)
    flips = (False, True) if tta in ("flip", "multiscale") else (False,)
    probs = depth = 0.0
    for s in scales:
        x = rgb if s == 1.0 else F.interpolate(rgb, scale_factor=s, mode="bilinear", align_corners=False)
        for flip in flips:
            with rt.autocast():
                out = model(x.flip(-1) if flip else x)
            p = out["semseg"].float().softmax(1) if "semseg" in out else None
            d = rt.unit.decode(out["depth"].float()) if "depth" in out else None
            probs, depth = probs + _restore(p, flip, s, size), depth + _restore(d, flip, s, size)
    n = len(scales) * len(flips)
    return (probs / n if "semseg" in out else None), (depth / n if "depth" in out else None)


def _restore(t: torch.Tensor | None, flip: bool, scale: float, size) -> torch.Tensor | float:
    """A TTA view's prediction back to the input's orientation and size (0 for a task the model lacks)."""
    if t is None:
        return 0.0
    t = t.flip(-1) if flip else t
    return t if scale == 1.0 else F.interpolate(t, size=size, mode="bilinear", align_corners=False)


def model_tasks(model: nn.Module) -> tuple[str, ...]:
    """The tasks a model predicts (through torch.compile's wrapper too)."""
    return tuple(getattr(getattr(model, "_orig_mod", model), "tasks", TASKS))


@torch.no_grad()
def evaluate(model: nn.Module, loader, rt: Runtime, tta: str = "off") -> dict[str, float]:
    """mIoU from one confusion matrix over the split, depth metrics, multitask score, per-class IoU."""
    model.eval()
    conf, depth_metrics = ConfusionMatrix(), DepthMetrics()
    images = 0
    start = time.perf_counter()
    for batch in loader:
        rgb, semseg, depth_m = rt.inputs(batch)
        probs, depth = predict(model, rgb, rt, tta)
        if probs is not None:
            conf.update(probs.argmax(1), semseg)
        if depth is not None:
            depth_metrics.update(depth, depth_m)
        images += rgb.shape[0]
    rt.sync()
    seconds = time.perf_counter() - start
    tasks = model_tasks(model)
    metrics = {"semseg_miou": conf.miou() if "semseg" in tasks else float("nan"), **depth_metrics.compute()}
    if "depth" not in tasks:  # a semseg-only model: no depth metric exists (not 0)
        metrics.update({k: float("nan") for k in metrics if k.startswith("depth_")})
    metrics["multitask"] = multitask_score(metrics["semseg_miou"], metrics["depth_silog"])
    metrics["multitask_raw"] = multitask_unclipped(metrics["semseg_miou"], metrics["depth_silog"])
    if "semseg" in tasks:
        metrics.update({"iou_" + name.replace(" ", "_"): v for name, v in conf.per_class().items()})
    metrics["eval_img_per_s"] = images / max(seconds, 1e-9)
    metrics["eval_seconds"] = seconds
    return metrics


@dataclass
class Timings:
    """Where a run's wall time goes, in seconds (cumulative): reported as `time_*` metrics every epoch."""

    startup: float = 0.0  # from train() to the first step: data (generation or decoding), model, resume
    data_setup: float = 0.0  # the part of start-up spent opening / decoding the datasets
    data: float = 0.0  # waiting for the loader during training
    train: float = 0.0  # training steps (forward, backward, optimizer)
    eval: float = 0.0
    checkpoint: float = 0.0  # saving, plus Tune's copy into the experiment storage

    def add(self, train: float, data: float, evaluation: float) -> None:
        self.train, self.data, self.eval = self.train + train, self.data + data, self.eval + evaluation

    def as_metrics(self, wall: float, pending_checkpoint: float = 0.0) -> dict[str, float]:
        parts = {"startup": self.startup, "data": self.data, "train": self.train, "eval": self.eval,
                 "checkpoint": self.checkpoint + pending_checkpoint}
        out = {f"time_{k}_s": round(v, 3) for k, v in parts.items()}
        out.update(time_data_setup_s=round(self.data_setup, 3), time_wall_s=round(wall, 3),
                   time_other_s=round(max(wall - sum(parts.values()), 0.0), 3),
                   time_in_steps=round((self.train + self.eval) / max(wall, 1e-9), 4))
        return out
