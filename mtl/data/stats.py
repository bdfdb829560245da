"""Train-split statistics (RGB mean/std, depth mean/std/min/max).

    python -m mtl.data.stats ROOT [--split train]

prints them as JSON for a Miniscapes- or Cityscapes-layout dataset.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

_CHANNEL_OFFSET = np.array([0, 256, 512], dtype=np.int32)
_LEVELS = np.arange(256) / 255.0


class StatsAccumulator:
    """Streaming sums, mergeable across worker processes. RGB is measured on the [0, 1] scale."""

    def __init__(self) -> None:
        self.images = 0
        self.pixels = 0
        self.rgb_sum = np.zeros(3)
        self.rgb_sq = np.zeros(3)
        self.depth_n = 0
        self.depth_sum = 0.0
        self.depth_sq = 0.0
        self.depth_min = np.inf
        self.depth_max = -np.inf

    def add(self, rgb: np.ndarray, depth_m: np.ndarray) -> None:
        """rgb (H, W, 3) uint8; depth (H, W) metres with NaN where invalid."""
        # A per-channel histogram of the 8-bit values gives exact sums at a fraction of the cost.
        hist = np.bincount((rgb.reshape(-1, 3) + _CHANNEL_OFFSET).ravel(), minlength=768).reshape(3, 256)
        self.images += 1
        self.pixels += rgb.size // 3
        self.rgb_sum += hist @ _LEVELS
        self.rgb_sq += hist @ (_LEVELS * _LEVELS)
        d = depth_m[np.isfinite(depth_m)].astype(np.float64)
        if d.size:
            self.depth_n += d.size
            self.depth_sum += d.sum()
            self.depth_sq += (d * d).sum()
            self.depth_min = min(self.depth_min, float(d.min()))
            self.depth_max = max(self.depth_max, float(d.max()))

    def merge(self, other: StatsAccumulator) -> None:
        for name in ("images", "pixels", "rgb_sum", "rgb_sq", "depth_n", "depth_sum", "depth_sq"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.depth_min = min(self.depth_min, other.depth_min)
        self.depth_max = max(self.depth_max, other.depth_max)

    def result(self) -> dict:
        if not self.images or not self.depth_n:
            raise ValueError("no images with valid depth were seen; cannot compute statistics")
        mean = self.rgb_sum / self.pixels
        d_mean = self.depth_sum / self.depth_n
        return {
            "images": self.images,
            "rgb_mean": [round(float(v), 6) for v in mean],
            "rgb_std": [round(float(v), 6) for v in np.sqrt(np.maximum(self.rgb_sq / self.pixels - mean**2, 0))],
            "depth_mean": round(float(d_mean), 4),
            "depth_std": round(float(np.sqrt(max(self.depth_sq / self.depth_n - d_mean**2, 0.0))), 4),
            "depth_min": round(float(self.depth_min), 4),
            "depth_max": round(float(self.depth_max), 4),
            "depth_valid_fraction": round(self.depth_n / self.pixels, 4),
        }


def compute_stats(root: str, split: str = "train", limit: int | None = None) -> dict:
    from mtl.data.datasets import open_dataset

    ds = open_dataset(root, split, limit=limit)
    acc = StatsAccumulator()
    for i in range(len(ds)):
        raw = ds.read_raw(i)
        rgb, depth = raw.rgb, raw.depth
        acc.add(rgb, depth)
    return acc.result()


MINISCAPES_DEPTH = {"depth_mean": 27.07, "depth_std": 29.13}  # train split, from the course's data notes


def against_miniscapes(stats: dict) -> dict:
    """The depth mean and std next to Miniscapes' train figures, as relative differences."""
    return {k: {"this": stats[k], "miniscapes": ref, "difference": f"{(stats[k] - ref) / ref:+.1%}"}
            for k, ref in MINISCAPES_DEPTH.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m mtl.data.stats", description="Print train-split statistics.")
    p.add_argument("root")
    p.add_argument("--split", default="train")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    a = p.parse_args(argv)
    stats = compute_stats(a.root, a.split, a.limit)
    print(json.dumps({**stats, "vs_miniscapes": against_miniscapes(stats)}, indent=2))


if __name__ == "__main__":
    main()
