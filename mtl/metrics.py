"""The field's metrics, exactly as the course defines them.

- mIoU: one confusion matrix accumulated over the whole split, ignore 255, IoU = TP/(TP+FP+FN),
  mean over all 19 classes with a never-present class counting as 0, x100.
- SI-logRMSE: per image over valid ground truth, both clamped >= 0.01 m, d = log y - log y_hat,
  100 * sqrt(mean(d^2) - mean(d)^2), averaged over images; predictions clamped to [4, 300] m first.
- multitask = max(mIoU - 50, 0) + max(50 - SI-logRMSE, 0).
- surface normals: the angle between the unit-length prediction and the ground truth over valid pixels, in
  degrees: mean, median, and the % of pixels within 11.25, 22.5 and 30 degrees (Eigen & Fergus 2015).
Another dataset brings its own class names and depth range (mtl.data.describe); the definitions stay.
"""

from __future__ import annotations

import math

import torch

from mtl.data.depth_io import DEPTH_MAX, DEPTH_MIN
from mtl.data.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from mtl.tasks import NORMALS_THRESHOLDS

# The worst value each reported metric sensibly takes: a trade-off's hypervolume is measured up to these unless a
# spec declares its own reference point (report.reference_point). mIoU and δ<1.25 cannot go below 0; SI-log ×100
# past 100 and abs rel past 1 mean a model that has learned nothing of depth.
WORST_VALUES = {"semseg_miou": 0.0, "depth_silog": 100.0, "multitask": 0.0, "multitask_raw": -100.0,
                "depth_abs_rel": 1.0, "depth_delta1": 0.0, "normals_mean": 90.0, "normals_median": 90.0,
                "normals_11": 0.0, "normals_22": 0.0, "normals_30": 0.0}


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int = NUM_CLASSES,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(C, C) int64 counts; rows = ground truth, columns = prediction."""
    keep = target != ignore_index
    idx = target[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(conf: torch.Tensor) -> torch.Tensor:
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.zeros_like(tp))  # absent class -> 0


def miou(conf: torch.Tensor) -> float:
    return float(iou_per_class(conf.cpu()).mean() * 100.0)


class ConfusionMatrix:
    """Accumulates one confusion matrix over a split."""

    def __init__(self, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX,
                 names: tuple[str, ...] = CLASS_NAMES) -> None:
        self.num_classes, self.ignore_index, self.names = num_classes, ignore_index, names
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Accumulates on the inputs' device (no host sync per batch)."""
        self.matrix = self.matrix.to(pred.device) + confusion_matrix(pred, target, self.num_classes,
                                                                     self.ignore_index)

    def miou(self) -> float:
        return miou(self.matrix)

    def per_class(self) -> dict[str, float]:
        iou = iou_per_class(self.matrix.cpu())
        return {name: float(v) * 100.0 for name, v in zip(self.names, iou, strict=True)}


def si_log_rmse_per_image(pred_m: torch.Tensor, target_m: torch.Tensor,
                          depth_range: tuple[float, float] = (DEPTH_MIN, DEPTH_MAX)) -> torch.Tensor:
    """pred, target (B, 1, H, W) or (B, H, W) in metres, NaN target = invalid -> (B',) per image, x100,
    for the images that have valid pixels; predictions clamped to the dataset's depth range first."""
    pred = pred_m.double().clamp(*depth_range).clamp_min(0.01).flatten(1)
    target = target_m.double().flatten(1)
    valid = torch.isfinite(target) & (target > 0)
    d = torch.where(valid, target.clamp_min(0.01).log() - pred.log(), torch.zeros_like(pred))
    n = valid.sum(1)
    has = n > 0
    mean = d.sum(1)[has] / n[has]
    mean_sq = (d * d).sum(1)[has] / n[has]
    return 100.0 * torch.sqrt((mean_sq - mean * mean).clamp_min(0.0))


def si_log_rmse(pred_m: torch.Tensor, target_m: torch.Tensor) -> float:
    return float(si_log_rmse_per_image(pred_m, target_m).mean())


def multitask_unclipped(miou_value: float, silog_value: float) -> float:
    """mIoU - SI-logRMSE: the multitask score without its floors (equal to it up to a constant once mIoU > 50 and
    SI-log < 50). Early in training, and at CPU scale throughout, both floors hold and multitask is 0 for every
    model; this stays informative, so early stopping ranks on it (`multitask_raw`)."""
    return miou_value - silog_value


def multitask_score(miou_value: float, silog_value: float) -> float:
    """NaN when a task is missing (a single-task model): the score is defined for both tasks only."""
    if math.isnan(miou_value) or math.isnan(silog_value):
        return float("nan")
    return max(miou_value - 50.0, 0.0) + max(50.0 - silog_value, 0.0)


class DepthMetrics:
    """SI-logRMSE averaged over images, plus abs rel, RMSE and delta < 1.25 over all valid pixels."""

    def __init__(self, depth_range: tuple[float, float] = (DEPTH_MIN, DEPTH_MAX)) -> None:
        self.range = depth_range
        self.silog: list[torch.Tensor] = []
        self.sums: torch.Tensor | None = None  # pixels, abs rel, squared error, delta < 1.25

    def update(self, pred_m: torch.Tensor, target_m: torch.Tensor) -> None:
        """Accumulates on the inputs' device; nothing is copied to the host until `compute`."""
        pred_m, target_m = pred_m.detach(), target_m.detach()
        self.silog.append(si_log_rmse_per_image(pred_m, target_m, self.range))
        pred = pred_m.double().clamp(*self.range)
        valid = torch.isfinite(target_m) & (target_m > 0)
        p, t = pred[valid], target_m.double()[valid]
        batch = torch.stack([valid.sum().double(), ((p - t).abs() / t).sum(), ((p - t) ** 2).sum(),
                             (torch.maximum(p / t, t / p) < 1.25).sum().double()])
        self.sums = batch if self.sums is None else self.sums + batch

    def compute(self) -> dict[str, float]:
        per_image = torch.cat(self.silog).cpu() if self.silog else torch.zeros(0)
        pixels, abs_rel, sq_err, delta1 = (self.sums.tolist() if self.sums is not None else [0.0] * 4)
        n = max(pixels, 1.0)
        return {
            "depth_silog": float(per_image.mean()) if per_image.numel() else float("nan"),
            "depth_abs_rel": abs_rel / n,
            "depth_rmse": (sq_err / n) ** 0.5,
            "depth_delta1": 100.0 * delta1 / n,
        }


class NormalsMetrics:
    """Angular error of surface normals over all valid pixels of a split: the mean exactly, the median from a
    histogram of 0.01-degree bins (at most 0.005 degrees off), the shares within `NORMALS_THRESHOLDS`."""

    BINS = 18000  # 0..180 degrees

    def __init__(self) -> None:
        self.hist: torch.Tensor | None = None
        self.sum = 0.0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred (B, 3, H, W) unnormalised, target (B, 3, H, W) unit vectors, NaN = invalid."""
        valid = torch.isfinite(target).all(1)  # (B, H, W)
        p = torch.nn.functional.normalize(pred.detach().double(), dim=1).permute(0, 2, 3, 1)[valid]  # (N, 3)
        t = target.detach().double().permute(0, 2, 3, 1)[valid]
        angle = torch.rad2deg(torch.acos((p * t).sum(1).clamp(-1.0, 1.0)))  # (N,)
        idx = (angle * (self.BINS / 180.0)).long().clamp_(0, self.BINS - 1)
        hist = torch.bincount(idx, minlength=self.BINS)
        self.hist = hist if self.hist is None else self.hist + hist
        self.sum = self.sum + angle.sum()

    def compute(self) -> dict[str, float]:
        names = ("normals_mean", "normals_median", "normals_11", "normals_22", "normals_30")
        if self.hist is None or int(self.hist.sum()) == 0:
            return dict.fromkeys(names, float("nan"))
        hist = self.hist.cpu().double()
        n = float(hist.sum())
        cum = hist.cumsum(0)
        width = 180.0 / self.BINS
        median = (int(torch.searchsorted(cum, torch.tensor(n / 2, dtype=torch.float64))) + 0.5) * width
        within = [100.0 * float(cum[min(round(a / width), self.BINS) - 1]) / n for a in NORMALS_THRESHOLDS]
        return dict(zip(names, (float(self.sum) / n, median, *within), strict=True))
