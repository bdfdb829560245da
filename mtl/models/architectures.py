"""The three multi-task architectures of the DeepLabV3+ family.

Every model maps rgb (B, 3, H, W) to one output per task of the config at input resolution (mtl/tasks.py):
"semseg": (B, C, H, W) logits for the dataset's C classes (19 for the course), "depth": (B, 1, H, W),
"normals": (B, 3, H, W); `distilled` (semseg and depth only) adds the supervised initial predictions
"semseg_aux" / "depth_aux" while training. `forward` is `heads(shared_features(x), size)`: the split
gradient-aggregation methods need (the Jacobian of the task losses is taken at the shared features;
`shared_parameters()` are the rows' columns).
A single-task config (`tasks: [semseg]` or `[depth]`) builds the same network with only
that task's head (joint) or branch (branched): the other tasks' parameters do not exist.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtl.config import TrialConfig
from mtl.data.labels import NUM_CLASSES
from mtl.models.encoder import ResNetEncoder
from mtl.models.parts import ASPP, AttentionGate, Bottleneck1x1, Decoder, upsample


def task_channels(task: str, num_classes: int = NUM_CLASSES) -> int:
    """A task's output channels: the dataset's classes (logits), 1 depth value, or a 3-vector normal."""
    return {"semseg": num_classes, "depth": 1, "normals": 3}[task]


class _MultiTaskBase(nn.Module):
    def __init__(self, cfg: TrialConfig, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.encoder = ResNetEncoder(cfg.encoder, cfg.pretrained, cfg.dilation, se="encoder" in cfg.se)
        self.width = cfg.decoder_channels
        self._cfg = cfg
        self.tasks = {t: task_channels(t, num_classes) for t in cfg.tasks}  # task -> output channels

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

    def shared_features(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The last representation every task uses (default: the encoder's two outputs, deep and stride 4).
        The stride-4 map is also an ancestor of the deep one: its alias (a view: no copy) is a separate graph node,
        so a task's gradient at it counts the skip path only, never the encoder path that leads to `deep`."""
        deep, skip4 = self._features(x)
        return deep, skip4.view_as(skip4)

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads(self.shared_features(x), x.shape[-2:])


class JointNet(_MultiTaskBase):
    """Everything shared; the last 1x1 conv gives every task's channels (19 + 1 for the course)."""

    def __init__(self, cfg: TrialConfig, num_classes: int = NUM_CLASSES) -> None:
        super().__init__(cfg, num_classes)
        self.context, self.decoder = self._context(), self._decoder()
        self.head = nn.Conv2d(self.width, sum(self.tasks.values()), 1)

    def shared_features(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        deep, skip4 = self._features(x)
        return (self.decoder(self.context(deep), skip4),)  # (B, width, H/4, W/4): all but the last 1x1 conv

    def shared_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.context.parameters(), *self.decoder.parameters()]

    def heads(self, features: tuple[torch.Tensor, ...], size, per_task: bool = False) -> dict[str, torch.Tensor]:
        """`per_task`: each task's rows of the 1x1 conv as a call of their own (same parameters, same values), so
        each task's graph can be walked back alone, as the Jacobian methods do."""
        if per_task:
            rows = dict(zip(self.tasks, torch.arange(sum(self.tasks.values())).split(list(self.tasks.values())),
                            strict=True))
            return {t: upsample(F.conv2d(features[0], self.head.weight[r], self.head.bias[r]), size)
                    for t, r in rows.items()}
        out = upsample(self.head(features[0]), size)  # (B, C + 1 [+ 3], H, W); each task's rows are its own head
        return dict(zip(self.tasks, out.split(list(self.tasks.values()), dim=1), strict=True))


class BranchedNet(_MultiTaskBase):
    """Shared encoder; each task has its own ASPP, decoder and head."""

    def __init__(self, cfg: TrialConfig, num_classes: int = NUM_CLASSES) -> None:
        super().__init__(cfg, num_classes)
        self.context = nn.ModuleDict({t: self._context() for t in self.tasks})
        self.decoder = nn.ModuleDict({t: self._decoder() for t in self.tasks})
        self.head = nn.ModuleDict({t: nn.Conv2d(self.width, c, 1) for t, c in self.tasks.items()})

    def task_features(self, features: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        deep, skip4 = features
        return {t: self.decoder[t](self.context[t](deep), skip4) for t in self.tasks}  # (B, width, H/4, W/4)

    def heads(self, features: tuple[torch.Tensor, ...], size, per_task: bool = False) -> dict[str, torch.Tensor]:
        f = self.task_features(features)
        return {t: upsample(self.head[t](f[t]), size) for t in self.tasks}


class DistilledNet(BranchedNet):
    """PAD-Net-style distillation on top of `branched`: each task's features plus the other task's
    attention-gated features go through a final 1x1 decoder; initial and final predictions are
    both supervised. Both tasks' final predictions read both branches, so for the Jacobian methods the branches
    are part of the shared network: its features are the two branches' outputs; the gates and the 1x1 convs
    above them are the heads."""

    def __init__(self, cfg: TrialConfig, num_classes: int = NUM_CLASSES) -> None:
        super().__init__(cfg, num_classes)  # the config allows the course's two tasks only
        self.gate = nn.ModuleDict({t: AttentionGate(self.width) for t in self.tasks})
        self.final = nn.ModuleDict({t: nn.Conv2d(self.width, c, 1) for t, c in self.tasks.items()})

    def shared_features(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f = self.task_features(super().shared_features(x))
        return tuple(f[t] for t in self.tasks)  # (B, width, H/4, W/4) per branch: semseg, depth

    def shared_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.context.parameters(), *self.decoder.parameters()]

    def heads(self, features: tuple[torch.Tensor, ...], size, per_task: bool = False) -> dict[str, torch.Tensor]:
        f = dict(zip(self.tasks, features, strict=True))
        other = {"semseg": "depth", "depth": "semseg"}
        out = {t: upsample(self.final[t](f[t] + self.gate[other[t]](f[other[t]])), size) for t in self.tasks}
        if self.training:
            out.update({f"{t}_aux": upsample(self.head[t](f[t]), size) for t in self.tasks})
        return out


ARCHITECTURES = {"joint": JointNet, "branched": BranchedNet, "distilled": DistilledNet}


def build_model(cfg: TrialConfig, num_classes: int | None = None) -> nn.Module:
    """The model a config names: the user's own (`model: pkg.mod:fn`, mtl/models/user.py) or a built-in one, with
    a semseg head for `num_classes` (default: the class count of the config's dataset, mtl.data.describe)."""
    if cfg.model:
        from mtl.models.user import build_user_model

        return build_user_model(cfg)
    if num_classes is None:
        from mtl.data.describe import dataset_info

        num_classes = dataset_info(cfg.data).num_classes
    return ARCHITECTURES[cfg.architecture](cfg, num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
