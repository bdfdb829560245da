"""A worked example of your own model (docs/own-data.md): a small convolutional trunk shared by the tasks and
one 1x1 head per task.

    python run_search.py ablations/own_model.yaml --dry-run

`build(cfg)` receives the run's resolved TrialConfig (its tasks, `decoder_channels`, ...) and returns the module.
`forward` returns {task: (B, C, H, W)} at input resolution; `shared_features`, `heads` and `shared_parameters`
let the gradient-aggregation weightings (MGDA, PCGrad, ...) take the Jacobian at the shared trunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtl.config import TrialConfig
from mtl.data.labels import NUM_CLASSES

CHANNELS = {"semseg": NUM_CLASSES, "depth": 1}


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyNet(nn.Module):
    def __init__(self, tasks: tuple[str, ...], width: int) -> None:
        super().__init__()
        self.tasks = tasks
        # stride 4 overall: (B, 3, H, W) -> (B, width, H/4, W/4)
        self.trunk = nn.Sequential(_block(3, width // 2, 2), _block(width // 2, width, 2), _block(width, width, 1))
        self.head = nn.ModuleDict({t: nn.Conv2d(width, CHANNELS[t], 1) for t in tasks})

    def shared_features(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.trunk(x),)

    def heads(self, features: tuple[torch.Tensor, ...], size, per_task: bool = False) -> dict[str, torch.Tensor]:
        return {t: F.interpolate(self.head[t](features[0]), size=size, mode="bilinear", align_corners=False)
                for t in self.tasks}

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters())

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads(self.shared_features(x), x.shape[-2:])


def build(cfg: TrialConfig) -> nn.Module:
    return TinyNet(cfg.tasks, min(cfg.decoder_channels, 64))
