"""Contact sheets of samples (rgb | semseg colourised | depth), for docs and reports.

    python -m mtl.data.preview ROOT [--split train] [--n 6] --out sheet.png
"""

from __future__ import annotations

import argparse

import numpy as np
from matplotlib import colormaps
from PIL import Image

from mtl.data.depth_io import DEPTH_MAX, DEPTH_MIN
from mtl.data.labels import colorize


def colorize_depth(depth_m: np.ndarray) -> np.ndarray:
    """(H, W) metres -> (H, W, 3) uint8, near = bright; inverse depth spreads the near range. Invalid (NaN)
    pixels get a grey/white checkerboard, so they never pass for far (dark) depth."""
    inv = (1.0 / np.clip(depth_m, DEPTH_MIN, DEPTH_MAX) - 1 / DEPTH_MAX) / (1 / DEPTH_MIN - 1 / DEPTH_MAX)
    rgb = (colormaps["magma"](np.sqrt(np.nan_to_num(inv, nan=0.0)))[..., :3] * 255).astype(np.uint8)
    rows, cols = np.indices(depth_m.shape)
    checker = np.where(((rows // 4) + (cols // 4)) % 2 == 0, 150, 210).astype(np.uint8)
    invalid = ~np.isfinite(depth_m)
    rgb[invalid] = checker[invalid][:, None]
    return rgb


def sample_row(rgb: np.ndarray, semseg: np.ndarray, depth_m: np.ndarray, gap: int = 4) -> np.ndarray:
    white = np.full((rgb.shape[0], gap, 3), 255, np.uint8)
    return np.concatenate([rgb, white, colorize(semseg), white, colorize_depth(depth_m)], axis=1)


def contact_sheet(root: str, split: str = "train", n: int = 6, gap: int = 4) -> np.ndarray:
    from mtl.data.datasets import open_dataset

    ds = open_dataset(root, split)
    rows = [sample_row(*ds.read_raw(i)[:3], gap=gap) for i in range(min(n, len(ds)))]
    white = np.full((gap, rows[0].shape[1], 3), 255, np.uint8)
    return np.concatenate([r for row in rows for r in (row, white)][:-1], axis=0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m mtl.data.preview",
                                description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("root")
    p.add_argument("--split", default="train")
    p.add_argument("--n", type=int, default=6)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    Image.fromarray(contact_sheet(a.root, a.split, a.n)).save(a.out)
    print(a.out)


if __name__ == "__main__":
    main()
