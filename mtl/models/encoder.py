"""ResNet encoders (torchvision) returning a feature pyramid {output stride: tensor}.

torchvision's `replace_stride_with_dilation` refuses BasicBlock (ResNet-18/34), so dilation is
applied here after construction by editing stride/dilation/padding of the existing convolutions:
parameter shapes are unchanged and pretrained weights still load.
"""

from __future__ import annotations

import os
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.ops import SqueezeExcitation

_BUILDERS = {
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (models.resnet101, models.ResNet101_Weights.IMAGENET1K_V1),
}


OFFLINE_ENV = "MTL_TUNE_OFFLINE"  # "1": never try a download, fail at once when weights are missing
CONNECT_TIMEOUT_S = 5.0


class PretrainedWeightsError(FileNotFoundError):
    """ImageNet weights are needed but are neither in the torch cache nor downloadable."""


def _cached_weights_path(weights: models.WeightsEnum) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def cached_weights(encoder: str) -> Path:
    """Where torchvision keeps (or would keep) this encoder's ImageNet weights."""
    return _cached_weights_path(_BUILDERS[encoder][1])


def _reachable(url: str, timeout: float) -> bool:
    """Whether a TCP connection to the URL's host opens within `timeout` s, DNS included (a thread, since
    name resolution has no timeout of its own): offline machines fail in seconds, not minutes."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)

    def connect() -> bool:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True

    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(connect).result(timeout=timeout)
    except (OSError, FutureTimeout):
        return False
    finally:
        pool.shutdown(wait=False)


def fetch_weights(encoder: str, timeout: float = CONNECT_TIMEOUT_S) -> Path:
    """The cached ImageNet weights of `encoder`: from the torch cache, else torchvision's own download into it.
    Offline (no connection within `timeout`, or MTL_TUNE_OFFLINE=1) it fails at once with what to do."""
    weights = _BUILDERS[encoder][1]
    cached = _cached_weights_path(weights)
    if cached.is_file():
        return cached
    name = os.path.basename(weights.url)
    advice = (f"copy {name} into {cached.parent}, set `pretrained: /path/to/state_dict.pth`, or train from "
              "scratch with `pretrained: false`")
    if os.environ.get(OFFLINE_ENV) == "1":
        raise PretrainedWeightsError(f"{encoder} ImageNet weights are not in the torch cache ({cached}) and "
                                     f"{OFFLINE_ENV}=1 forbids downloads: {advice}")
    if not _reachable(weights.url, timeout):
        raise PretrainedWeightsError(f"{encoder} ImageNet weights are not in the torch cache ({cached}) and "
                                     f"{urlparse(weights.url).hostname} cannot be reached (offline?): {advice}")
    weights.get_state_dict(progress=True)  # torchvision's download, into the torch cache
    return cached


def load_pretrained(encoder: str, pretrained: bool | str) -> dict[str, torch.Tensor]:
    """ImageNet state dict from the torch cache (downloaded there first when missing) or from a file."""
    if isinstance(pretrained, str):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise PretrainedWeightsError(f"pretrained: weights file {path} not found")
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state.get("state_dict", state) if isinstance(state, dict) else state
    return torch.load(fetch_weights(encoder), map_location="cpu", weights_only=True)


def _dilate(layer: nn.Sequential, dilation: int, previous: int) -> None:
    """Stride 1 instead of 2; the first block's 3x3 convs keep the previous dilation (as torchvision
    does for Bottleneck), the following blocks use the new one."""
    for i, block in enumerate(layer):
        d = previous if i == 0 else dilation
        for conv in block.modules():
            if isinstance(conv, nn.Conv2d):
                conv.stride = (1, 1)
                if conv.kernel_size == (3, 3):
                    conv.dilation, conv.padding = (d, d), (d, d)


def _add_se(net: ResNet) -> None:
    """SE-ResNet: squeeze-and-excitation on each residual branch, before the addition."""
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        for block in layer:
            name = "bn3" if isinstance(block, Bottleneck) else "bn2"
            bn = getattr(block, name)
            c = bn.num_features
            setattr(block, name, nn.Sequential(bn, SqueezeExcitation(c, max(c // 16, 1))))


class ResNetEncoder(nn.Module):
    """forward(x (B, 3, H, W)) -> {stride: (B, C, H/stride, W/stride)}; a dilated layer keeps the
    previous stride and replaces that entry, so the deepest feature is always the last key."""

    def __init__(self, name: str = "resnet34", pretrained: bool | str = False,
                 dilation: tuple[bool, bool, bool] = (False, False, False), se: bool = False) -> None:
        super().__init__()
        if name not in _BUILDERS:
            raise ValueError(f"encoder must be one of {sorted(_BUILDERS)}, got {name!r}")
        net: ResNet = _BUILDERS[name][0](weights=None, zero_init_residual=not pretrained)
        if pretrained:
            state = {k: v for k, v in load_pretrained(name, pretrained).items() if not k.startswith("fc.")}
            missing, unexpected = net.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing or unexpected:
                raise PretrainedWeightsError(
                    f"pretrained: weights do not fit {name}: missing {missing[:3]}, unexpected {unexpected[:3]}")
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.pool = net.maxpool
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        wide = isinstance(net.layer1[0], Bottleneck)
        layer_channels = (256, 512, 1024, 2048) if wide else (64, 128, 256, 512)
        self.strides = [2, 4]
        self.channels = {2: 64, 4: layer_channels[0]}
        current = 1
        for i, flag in enumerate(dilation):
            stride = self.strides[-1]
            if flag:
                _dilate(self.layers[i + 1], current * 2, current)
                current *= 2
            else:
                stride *= 2
            self.strides.append(stride)
            self.channels[stride] = layer_channels[i + 1]
        if se:
            _add_se(net)

    @property
    def bottleneck_stride(self) -> int:
        return self.strides[-1]

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        x = self.stem(x)
        features = {2: x}
        x = self.pool(x)
        for layer, stride in zip(self.layers, self.strides[1:], strict=True):
            x = layer(x)
            features[stride] = x
        return features
