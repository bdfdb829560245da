"""The three multi-task architectures of the DeepLabV3+ family.

Every model maps rgb (B, 3, H, W) to {"semseg": (B, 19, H, W) logits, "depth": (B, 1, H, W)} at
input resolution; `distilled` adds the supervised initial predictions "semseg_aux" / "depth_aux"
while training. A single-task config (`tasks: [semseg]` or `[depth]`) builds the same network with only
that task's head (joint) or branch (branched): the other task's parameters do not exist.
"""

from __future__ import annotations

import torch
from torch import nn

from mtl.config import TrialConfig
from mtl.data.labels import NUM_CLASSES
from mtl.models.encoder import ResNetEncoder
from mtl.models.parts import ASPP, AttentionGate, Bottleneck1x1, Decoder, upsample

TASK_CHANNELS = {"semseg": NUM_CLASSES, "depth": 1}


class _MultiTaskBase(nn.Module):
    def __init__(self, cfg: TrialConfig) -> None:
        super().__init__()
        self.encoder = ResNetEncoder(cfg.encoder, cfg.pretrained, cfg.dilation, se="encoder" in cfg.se)
        self.width = cfg.decoder_channels
        self._cfg = cfg
        self.tasks = {t: TASK_CHANNELS[t] for t in cfg.tasks}  # task -> output channels

    def _context(self) -> nn.Module:
        cfg, cin = self._cfg, self.encoder.channels[self.encoder.bottleneck_stride]
        if cfg.aspp:
            return ASPP(cin, self.width, cfg.aspp_rates, se="aspp" in cfg.se)
        return Bottleneck1x1(cin, self.width, se="aspp" in cfg.se)

    def _decoder(self) -> Decoder:
        cfg = self._cfg
        return Decoder(self.width, self.encoder.channels[4], self.width, skip=cfg.skip, se="decoder" in cfg.se)

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.encoder(x)
        return f[self.encoder.bottleneck_stride], f[4]


class JointNet(_MultiTaskBase):
    """Everything shared; the last 1x1 conv gives 19 + 1 channels."""

    def __init__(self, cfg: TrialConfig) -> None:
        super().__init__(cfg)
        self.context, self.decoder = self._context(), self._decoder()
        self.head = nn.Conv2d(self.width, sum(self.tasks.values()), 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        deep, skip4 = self._features(x)
        out = upsample(self.head(self.decoder(self.context(deep), skip4)), x.shape[-2:])  # (B, 19 + 1, H, W)
        return dict(zip(self.tasks, out.split(list(self.tasks.values()), dim=1), strict=True))


class BranchedNet(_MultiTaskBase):
    """Shared encoder; each task has its own ASPP, decoder and head."""

    def __init__(self, cfg: TrialConfig) -> None:
        super().__init__(cfg)
        self.context = nn.ModuleDict({t: self._context() for t in self.tasks})
        self.decoder = nn.ModuleDict({t: self._decoder() for t in self.tasks})
        self.head = nn.ModuleDict({t: nn.Conv2d(self.width, c, 1) for t, c in self.tasks.items()})

    def task_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        deep, skip4 = self._features(x)
        return {t: self.decoder[t](self.context[t](deep), skip4) for t in self.tasks}  # (B, width, H/4, W/4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.task_features(x)
        return {t: upsample(self.head[t](f[t]), x.shape[-2:]) for t in self.tasks}


class DistilledNet(BranchedNet):
    """PAD-Net-style distillation on top of `branched`: each task's features plus the other task's
    attention-gated features go through a final 1x1 decoder; initial and final predictions are
    both supervised."""

    def __init__(self, cfg: TrialConfig) -> None:
        super().__init__(cfg)
        self.gate = nn.ModuleDict({t: AttentionGate(self.width) for t in TASK_CHANNELS})
        self.final = nn.ModuleDict({t: nn.Conv2d(self.width, c, 1) for t, c in TASK_CHANNELS.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.task_features(x)
        size = x.shape[-2:]
        other = {"semseg": "depth", "depth": "semseg"}
        out = {t: upsample(self.final[t](f[t] + self.gate[other[t]](f[other[t]])), size) for t in TASK_CHANNELS}
        if self.training:
            out.update({f"{t}_aux": upsample(self.head[t](f[t]), size) for t in TASK_CHANNELS})
        return out


ARCHITECTURES = {"joint": JointNet, "branched": BranchedNet, "distilled": DistilledNet}


def build_model(cfg: TrialConfig) -> nn.Module:
    return ARCHITECTURES[cfg.architecture](cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
