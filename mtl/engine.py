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
from mtl.data.describe import COURSE, DatasetInfo
from mtl.data.transforms import flip_normals
from mtl.losses import TaskWeighting, task_losses
from mtl.metrics import ConfusionMatrix, DepthMetrics, NormalsMetrics, multitask_score, multitask_unclipped
from mtl.tasks import COURSE_TASKS, TASKS

TTA_SCALES = (0.75, 1.0, 1.25)


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class Runtime:
    """How tensors are placed and computed: device, mixed precision, memory format, depth unit, and the dataset's
    classes and depth range (what the metrics need)."""

    device: torch.device
    unit: DepthUnit
    depth_loss: str = "l2"
    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    channels_last: bool = False
    info: DatasetInfo = COURSE

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def inputs(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """rgb (B, 3, H, W) and the targets on the device: semseg (B, H, W), depth (B, 1, H, W) in metres and, where
        the batch has them, normals (B, 3, H, W)."""
        rgb = batch["rgb"].to(self.device, non_blocking=True)
        if self.channels_last:
            rgb = rgb.contiguous(memory_format=torch.channels_last)
        return rgb, {t: batch[t].to(self.device, non_blocking=True) for t in TASKS if t in batch}

    def encoded(self, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The training targets: depth in the network's unit."""
        return {**targets, "depth": self.unit.encode(targets["depth"])} if "depth" in targets else targets

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, weighting: TaskWeighting,
                    rt: Runtime) -> dict[str, float]:
    model.train()
    task_sums = torch.zeros(len(TASKS), dtype=torch.float64, device=rt.device)  # per task: read once per epoch
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
        rgb, targets = rt.inputs(batch)
        value, losses = train_step(model, rgb, rt.encoded(targets), optimizer, weighting, rt)
        if not math.isfinite(value):
            raise Diverged(f"loss became {value} at step {steps + 1}")
        total_sum += value
        task_sums += torch.stack([losses[t].detach() if t in losses else zero for t in TASKS]).double()
        steps += 1
        images += rgb.shape[0]
    rt.sync()
    seconds = time.perf_counter() - start
    mean = dict(zip(TASKS, (task_sums / max(steps, 1)).tolist(), strict=True))
    # the course's two tasks always have a column (NaN: not trained); another task where it is trained
    shown = [t for t in TASKS if t in COURSE_TASKS or t in weighting.tasks]
    return {"train_loss": total_sum / max(steps, 1),
            **{f"train_{t}_loss": mean[t] if t in weighting.tasks else float("nan") for t in shown},
            "train_img_per_s": images / max(seconds, 1e-9), "train_seconds": seconds, "train_data_seconds": waited,
            "train_step_ms": 1000 * (seconds - waited) / max(steps, 1)}  # forward, backward(s), optimiser


def train_step(model: nn.Module, rgb: torch.Tensor, targets: dict[str, torch.Tensor],
               optimizer: torch.optim.Optimizer, weighting: TaskWeighting, rt: Runtime
               ) -> tuple[float, dict[str, torch.Tensor]]:
    """One optimiser step; returns the total loss (the step is skipped when it is not finite) and the task losses.
    rgb (B, 3, H, W); targets: semseg (B, H, W), depth (B, 1, H, W) in the depth unit with NaN where invalid,
    normals (B, 3, H, W)."""
    if weighting.aggregator is not None:
        return _aggregated_step(model, rgb, targets, optimizer, weighting, rt)
    with rt.autocast():
        out = model(rgb)
    losses = task_losses(out, targets, rt.depth_loss, rt.unit)
    total = weighting(losses)
    if any(k.endswith("_aux") for k in out):  # deep supervision: the initial predictions are supervised too
        total = total + weighting(task_losses(out, targets, rt.depth_loss, rt.unit, suffix="_aux"))
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


def _aggregated_step(model: nn.Module, rgb: torch.Tensor, targets: dict[str, torch.Tensor],
                     optimizer: torch.optim.Optimizer, weighting: TaskWeighting, rt: Runtime
                     ) -> tuple[float, dict[str, torch.Tensor]]:
    """The Jacobian of the task losses at the shared features, backpropagated to the shared parameters (one row
    per task), reduced by the method's aggregator; each head gets its own task's gradient (mtl_backward)."""
    with rt.autocast():
        features = model.shared_features(rgb)
        out = model.heads(features, rgb.shape[-2:], per_task=True)
    losses = task_losses(out, targets, rt.depth_loss, rt.unit)
    per_task = dict(losses)
    if any(k.endswith("_aux") for k in out):  # deep supervision: a task's initial prediction is part of its loss
        aux = task_losses(out, targets, rt.depth_loss, rt.unit, suffix="_aux")
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
def predict_tasks(model: nn.Module, rgb: torch.Tensor, rt: Runtime, tta: str = "off") -> dict[str, torch.Tensor]:
    """Per task the model predicts: class probabilities (B, C, H, W), depth in metres (B, 1, H, W), unit normals
    (B, 3, H, W). TTA averages over horizontal flips (`flip`) and also scales 0.75 / 1 / 1.25 (`multiscale`)."""
    size = rgb.shape[-2:]
    scales = TTA_SCALES if tta == "multiscale" else (1.0,)
    flips = (False, True) if tta in ("flip", "multiscale") else (False,)
    sums: dict[str, torch.Tensor] = {}
    for s in scales:
        x = rgb if s == 1.0 else F.interpolate(rgb, scale_factor=s, mode="bilinear", align_corners=False)
        for flip in flips:
            with rt.autocast():
                out = model(x.flip(-1) if flip else x)
            views = {"semseg": lambda o: o.float().softmax(1), "depth": lambda o: rt.unit.decode(o.float()),
                     "normals": lambda o: F.normalize(o.float(), dim=1)}
            for task, view in views.items():
                if task in out:
                    restored = _restore(view(out[task]), flip, s, size, mirror=task == "normals")
                    sums[task] = sums[task] + restored if task in sums else restored
    n = len(scales) * len(flips)
    out = {t: v / n for t, v in sums.items()}
    if "normals" in out:
        out["normals"] = F.normalize(out["normals"], dim=1)
    return out


def predict(model: nn.Module, rgb: torch.Tensor, rt: Runtime, tta: str = "off"
            ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The course's two tasks of `predict_tasks`: probabilities and metres, None for a task the model lacks."""
    out = predict_tasks(model, rgb, rt, tta)
    return out.get("semseg"), out.get("depth")


def _restore(t: torch.Tensor, flip: bool, scale: float, size, mirror: bool = False) -> torch.Tensor:
    """A TTA view's prediction back to the input's orientation and size; `mirror`: a flipped normal's x turns."""
    if flip:
        t = flip_normals(t) if mirror else t.flip(-1)
    return t if scale == 1.0 else F.interpolate(t, size=size, mode="bilinear", align_corners=False)


def model_tasks(model: nn.Module) -> tuple[str, ...]:
    """The tasks a model predicts (through torch.compile's wrapper too)."""
    return tuple(getattr(getattr(model, "_orig_mod", model), "tasks", COURSE_TASKS))


@torch.no_grad()
def evaluate(model: nn.Module, loader, rt: Runtime, tta: str = "off") -> dict[str, float]:
    """mIoU from one confusion matrix over the split, depth metrics, multitask score, per-class IoU."""
    model.eval()
    conf = ConfusionMatrix(rt.info.num_classes, names=rt.info.classes)
    depth_metrics, normals_metrics = DepthMetrics(rt.info.depth_range), NormalsMetrics()
    images, seen = 0, set()
    start = time.perf_counter()
    for batch in loader:
        rgb, targets = rt.inputs(batch)
        pred = predict_tasks(model, rgb, rt, tta)
        seen |= set(pred)
        if "semseg" in pred:
            conf.update(pred["semseg"].argmax(1), targets["semseg"])
        if "depth" in pred:
            depth_metrics.update(pred["depth"], targets["depth"])
        if "normals" in pred:
            normals_metrics.update(pred["normals"], targets["normals"])
        images += rgb.shape[0]
    rt.sync()
    seconds = time.perf_counter() - start
    tasks = tuple(t for t in TASKS if t in seen) or model_tasks(model)  # what the model predicted
    metrics = {"semseg_miou": conf.miou() if "semseg" in tasks else float("nan"), **depth_metrics.compute()}
    if "normals" in tasks:
        metrics.update(normals_metrics.compute())
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


def random_targets(tasks: tuple[str, ...], b: int, h: int, w: int, device: torch.device,
                   num_classes: int = 19) -> dict[str, torch.Tensor]:
    """Targets of the right shapes for timing or checking a step without data (the dry run, benchmarks)."""
    out = {"semseg": torch.randint(0, num_classes, (b, h, w), device=device),
           "depth": torch.randn(b, 1, h, w, device=device),
           "normals": F.normalize(torch.randn(b, 3, h, w, device=device), dim=1)}
    return {t: out[t] for t in tasks}
