"""DeepLabV3+ parts: ASPP, the decoder with its 4x skip, and the distillation attention gate."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import SqueezeExcitation


def conv_bn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (kernel // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def se_block(channels: int) -> nn.Module:
    """Squeeze-and-Excitation with reduction 16: mean -> FC(C/16) -> ReLU -> FC(C) -> sigmoid -> scale."""
    return SqueezeExcitation(channels, max(channels // 16, 1))


def upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ImagePooling(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = conv_bn_relu(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample(self.conv(self.pool(x)), x.shape[-2:])


class ASPP(nn.Module):
    """1x1, three atrous 3x3 and image pooling in parallel; concat -> (SE) -> 1x1 projection."""

    def __init__(self, cin: int, cout: int = 256, rates: tuple[int, int, int] = (3, 6, 9), se: bool = False):
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu(cin, cout)] + [conv_bn_relu(cin, cout, 3, r) for r in rates] + [ImagePooling(cin, cout)])
        self.se = se_block(5 * cout) if se else nn.Identity()
        self.project = conv_bn_relu(5 * cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, cin, h, w) -> (B, cout, h, w)
        return self.project(self.se(torch.cat([b(x) for b in self.branches], dim=1)))


class Bottleneck1x1(nn.Module):
    """`aspp: false`: a plain 1x1 projection of the encoder bottleneck (with optional SE)."""

    def __init__(self, cin: int, cout: int = 256, se: bool = False) -> None:
        super().__init__()
        self.project = conv_bn_relu(cin, cout)
        self.se = se_block(cout) if se else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.project(x))


class Decoder(nn.Module):
    """DeepLabV3+ decoder: upsample the bottleneck to the 4x skip, concat its 48-channel 1x1
    reduction, two 3x3 convs. With `skip=False` only the upsampled bottleneck goes through the convs.
    Returns features (B, width, H/4, W/4); heads are separate so distillation can reuse them."""

    def __init__(self, cin: int, skip_channels: int, width: int = 256, skip: bool = True, se: bool = False):
        super().__init__()
        self.reduce = conv_bn_relu(skip_channels, 48) if skip else None
        self.convs = nn.Sequential(conv_bn_relu(cin + (48 if skip else 0), width, 3), conv_bn_relu(width, width, 3))
        self.se = se_block(width) if se else nn.Identity()

    def forward(self, bottleneck: torch.Tensor, skip4: torch.Tensor) -> torch.Tensor:
        x = upsample(bottleneck, skip4.shape[-2:])
        if self.reduce is not None:
            x = torch.cat([x, self.reduce(skip4)], dim=1)
        return self.se(self.convs(x))


class AttentionGate(nn.Module):
    """Self-attention for distillation: f * sigmoid(conv(f)); the conv starts at zero, so every
    gate opens half-way and training decides what passes."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.attention = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        nn.init.zeros_(self.attention.weight)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f * torch.sigmoid(self.attention(f))
