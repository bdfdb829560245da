"""Task losses and task weighting.

Depth losses are computed in the network's depth unit (except SI-log, which needs metres) and
masked to valid ground truth (finite target); the normals loss is 1 - cosine over valid pixels. Task weighting
turns per-task losses into the total.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtl.aggregation import METHODS, build_aggregator
from mtl.data.depth_units import DepthUnit
from mtl.data.labels import IGNORE_INDEX
from mtl.tasks import COURSE_TASKS, TASKS


def semseg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """logits (B, C, H, W), target (B, H, W) with 255 ignored."""
    return F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX)


def depth_loss(pred: torch.Tensor, target: torch.Tensor, kind: str, unit: DepthUnit | None = None,
               silog_lambda: float = 0.85) -> torch.Tensor:
    """pred, target (B, 1, H, W) in the depth unit; NaN target = invalid pixel."""
    pred = pred.float()
    valid = torch.isfinite(target)
    if not valid.any():
        return pred.sum() * 0.0  # keeps the graph (and DDP-style hooks) intact on an empty batch
    if kind == "silog":
        return _silog(pred, target, valid, unit, silog_lambda)
    err = pred[valid] - target[valid]
    if kind == "l2":
        return (err * err).mean()
    if kind == "l1":
        return err.abs().mean()
    if kind == "berhu":
        a = err.abs()
        c = (0.2 * a.max()).detach().clamp_min(1e-6)  # threshold from the batch's largest error
        return torch.where(a <= c, a, (a * a + c * c) / (2 * c)).mean()
    raise ValueError(f"depth_loss must be one of l2, l1, berhu, silog; got {kind!r}")


def normals_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - cosine between the unit-length prediction and the target: pred (B, 3, H, W) unnormalised, target
    (B, 3, H, W) unit vectors with NaN where invalid."""
    pred = F.normalize(pred.float(), dim=1)
    valid = torch.isfinite(target).all(1)  # (B, H, W)
    if not valid.any():
        return pred.sum() * 0.0
    cos = (pred * torch.nan_to_num(target)).sum(1)[valid]
    return (1.0 - cos).mean()


def _silog(pred, target, valid, unit: DepthUnit | None, lam: float) -> torch.Tensor:
    """Scale-invariant log loss (Eigen et al.): per image sqrt(mean(d^2) - lam * mean(d)^2), d in log metres."""
    if unit is None:
        raise ValueError("the silog depth loss needs the depth unit to convert to metres")
    p = unit.decode(pred).clamp_min(0.01).log()
    t = unit.decode(torch.where(valid, target, torch.ones_like(target))).clamp_min(0.01).log()
    d = torch.where(valid, t - p, torch.zeros_like(p)).flatten(1)  # (B, H*W)
    n = valid.flatten(1).sum(1)
    has = n > 0
    mean = d.sum(1)[has] / n[has]
    mean_sq = (d * d).sum(1)[has] / n[has]
    return torch.sqrt((mean_sq - lam * mean * mean).clamp_min(1e-8)).mean()


class TaskWeighting(nn.Module):
    """Combine task losses into one. `fixed`: the configured weights. `uncertainty` (Kendall et al.
    2018): learned log-variances s_t, total = sum 0.5 exp(-s_t) L_t + 0.5 s_t (starts at 0.5 / 0.5).
    `dwa` (Liu et al. 2019): weights from the ratio of the last two epochs' mean losses,
    softmax(r / T) scaled to the sum of the fixed weights; fixed weights for the first two epochs.
    A gradient-aggregation method (`mtl.aggregation.METHODS`) holds its `aggregator`: the total is then the plain
    sum (what the trainer logs) and the engine combines the tasks' gradients instead; `current_weights` gives the
    mean of the weights the aggregator chose this epoch (NaN for one that does not weight the rows)."""

    def __init__(self, mode: str, weights: tuple[float, ...], temperature: float = 2.0,
                 tasks: tuple[str, ...] = COURSE_TASKS, options: dict[str, float | None] | None = None) -> None:
        super().__init__()
        if mode not in ("fixed", "uncertainty", "dwa", *METHODS):
            raise ValueError(f"task_weighting must be fixed, uncertainty, dwa or one of {', '.join(METHODS)}; "
                             f"got {mode!r}")
        self.mode, self.temperature, self.tasks = mode, temperature, tuple(tasks)
        self.aggregator = build_aggregator(mode, len(self.tasks), options or {}) if mode in METHODS else None
        self.register_buffer("chosen", torch.zeros(len(self.tasks) + 1))  # this epoch: sum of chosen weights, count
        # one weight per task, in the order of `tasks`; a single-task model trains on its own loss alone (weight 1),
        # as single-task baselines do
        chosen = list(weights) if len(self.tasks) > 1 else [1.0]
        if len(chosen) != len(self.tasks):
            raise ValueError(f"loss weights: one per task of {list(self.tasks)}, got {list(weights)}")
        self.register_buffer("weights", torch.tensor(chosen, dtype=torch.float32))
        self.register_buffer("history", torch.zeros(0, len(self.tasks)))  # mean losses per finished epoch
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks))) if mode == "uncertainty" else None

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack([losses[t] for t in self.tasks])
        if self.mode == "uncertainty":
            return (0.5 * torch.exp(-self.log_vars) * stacked + 0.5 * self.log_vars).sum()
        if self.aggregator is not None:
            return stacked.sum()
        return (self.current_weights() * stacked).sum()

    def record(self, weights: torch.Tensor | None) -> None:
        """The weights an aggregator chose at one step (None: it does not weight the rows)."""
        if weights is not None:
            self.chosen += torch.cat([weights.detach().float().to(self.chosen.device), self.chosen.new_ones(1)])

    def current_weights(self) -> torch.Tensor:
        if self.aggregator is not None:
            return self.chosen[:-1] / self.chosen[-1] if self.chosen[-1] > 0 else torch.full_like(self.chosen[:-1],
                                                                                                  float("nan"))
        if self.mode == "uncertainty":
            return (0.5 * torch.exp(-self.log_vars)).detach()
        if self.mode == "dwa" and len(self.history) >= 2:
            ratio = self.history[-1] / self.history[-2].clamp_min(1e-12)
            return self.weights.sum() * torch.softmax(ratio / self.temperature, dim=0)
        return self.weights

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        row = torch.tensor([[mean_losses[t] for t in self.tasks]], dtype=torch.float32, device=self.history.device)
        self.history = torch.cat([self.history, row])[-2:]
        self.chosen.zero_()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # `history` grows from empty, so resize it to the stored shape before the copy
        key = prefix + "history"
        if key in state_dict:
            self.history = torch.zeros_like(state_dict[key])
        state_dict.setdefault(prefix + "chosen", self.chosen.clone())  # checkpoints from before it existed
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def task_losses(out: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], depth_kind: str, unit: DepthUnit,
                suffix: str = "") -> dict[str, torch.Tensor]:
    """The loss of every task the model predicts (a single-task model has one). `targets`: semseg (B, H, W),
    depth (B, 1, H, W) in the depth unit, normals (B, 3, H, W)."""
    losses = {}
    for task in TASKS:
        pred = out.get(task + suffix)
        if pred is None:
            continue
        if task == "semseg":
            losses[task] = semseg_loss(pred, targets["semseg"])
        elif task == "depth":
            losses[task] = depth_loss(pred, targets["depth"], depth_kind, unit)
        else:
            losses[task] = normals_loss(pred, targets["normals"])
    return losses
