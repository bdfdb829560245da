"""Optimizers and per-epoch learning-rate schedules (poly as in the course, cosine, constant; linear warm-up)."""

from __future__ import annotations

import math

import torch
from torch import nn

from mtl.config import TrialConfig


def build_optimizer(cfg: TrialConfig, model: nn.Module, extra: nn.Module | None = None) -> torch.optim.Optimizer:
    """`extra` holds learned task-weighting parameters: optimised too, but never weight-decayed."""
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": cfg.weight_decay}]
    extra_params = [p for p in extra.parameters()] if extra is not None else []
    if extra_params:
        groups.append({"params": extra_params, "weight_decay": 0.0})
    # fused kernels on a GPU (one launch for all parameters); torch picks foreach on the CPU
    fused = {"fused": True} if all(p.is_cuda for g in groups for p in g["params"]) else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, **fused)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, **fused)
    return torch.optim.AdamW(groups, lr=cfg.lr, **fused)


def lr_factor(cfg: TrialConfig, epoch: int) -> float:
    """Multiplier of the base lr during `epoch` (0-based)."""
    if epoch < cfg.warmup_epochs:
        return (epoch + 1) / (cfg.warmup_epochs + 1)
    progress = (epoch - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs, 1)
    if cfg.lr_schedule == "poly":
        return (1.0 - progress) ** cfg.lr_power
    if cfg.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def build_scheduler(cfg: TrialConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per epoch, after training it."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(cfg, epoch))
