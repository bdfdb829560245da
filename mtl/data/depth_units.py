"""Depth units the network regresses, each with an exact inverse back to metres.

`standardized` (train mean/std, the course default), `log`, `minmax` (train min/max to [0, 1])
and `inverse` (disparity scaled so the nearest valid depth maps to 1). NaN passes through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from mtl.data.depth_io import DEPTH_MIN

DepthUnitName = Literal["standardized", "log", "minmax", "inverse"]
DEPTH_UNITS: tuple[str, ...] = ("standardized", "log", "minmax", "inverse")


@dataclass(frozen=True)
class DepthUnit:
    name: DepthUnitName
    mean: float = 0.0
    std: float = 1.0
    min: float = DEPTH_MIN
    max: float = 300.0

    @classmethod
    def from_stats(cls, name: str, stats: dict) -> DepthUnit:
        if name not in DEPTH_UNITS:
            raise ValueError(f"depth_unit must be one of {DEPTH_UNITS}, got {name!r}")
        return cls(name, stats["depth_mean"], stats["depth_std"], stats["depth_min"], stats["depth_max"])  # type: ignore[arg-type]

    def encode(self, metres: torch.Tensor) -> torch.Tensor:
        if self.name == "standardized":
            return (metres - self.mean) / self.std
        if self.name == "log":
            return torch.log(metres)
        if self.name == "minmax":
            return (metres - self.min) / (self.max - self.min)
        return self.min / metres

    def decode(self, value: torch.Tensor) -> torch.Tensor:
        if self.name == "standardized":
            return value * self.std + self.mean
        if self.name == "log":
            return torch.exp(value)
        if self.name == "minmax":
            return value * (self.max - self.min) + self.min
        return self.min / value
