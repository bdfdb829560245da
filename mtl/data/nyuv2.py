"""NYUv2 in the preprocessed layout of the multi-task literature (MTAN, Liu et al. 2019; used by LibMTL, CAGrad,
Nash-MTL, FAMO): one .npy array per sample and kind.

    {root}/{split}/image/{i}.npy    (H, W, 3) float in [0, 1]
    {root}/{split}/label/{i}.npy    (H, W) float class ids 0..12, -1 = no label (`ignore_index`)
    {root}/{split}/depth/{i}.npy    (H, W, 1) or (H, W) float, in the descriptor's unit (metres), 0 = invalid
    {root}/{split}/normal/{i}.npy   (H, W, 3) float in [-1, 1], all zero = invalid

Splits are `train` and `val`; that layout has no `test`, so `test` reads `val` when the folder is missing (as
those works evaluate on it). Samples come out as every other layout's (`RawSample`).

    python -m mtl.data.nyuv2 --root DIR [--train 64 --val 16 --size 64x128]

writes a small dataset in this layout from the synthetic generator's scenes, in NYUv2's terms (13 classes, depth
0.5-10 m, normals): a worked example for docs/own-data.md, and what the tests read (no download).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mtl.data.datasets import DatasetError, LabelError, RawSample, SampleDataset, _missing_twins, _require_dir
from mtl.data.labels import IGNORE_INDEX

KINDS = ("image", "label", "depth", "normal")


def _load(path: Path, ndim: tuple[int, ...]) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: unreadable array ({e})") from None
    if a.ndim not in ndim:
        raise DatasetError(f"{path}: an array of shape {a.shape}; expected {' or '.join(f'{n}-d' for n in ndim)}")
    return a


class NYUv2Dataset(SampleDataset):
    def __init__(self, root: str | Path, split: str, transform: Callable | None = None, limit: int | None = None,
                 info=None, normals: bool = False) -> None:
        super().__init__(transform)
        from mtl.data.describe import DEFAULTS

        self.info = info or DEFAULTS["nyuv2"]
        base = _require_dir(Path(root), "dataset root")
        if split == "test" and not (base / "test").is_dir():
            split = "val"
        split_dir = _require_dir(base / split, f"split {split!r}")
        images = _require_dir(split_dir / "image", "image")
        names = sorted((p for p in images.glob("*.npy")), key=lambda p: (len(p.stem), p.stem))  # 0, 1, ..., 10
        if limit is not None:
            if len(names) < limit:
                raise DatasetError(f"{images}: {len(names)} images, but {limit} were requested")
            names = names[:limit]
        kinds = KINDS if normals else KINDS[:3]  # normals are read for a normals task only
        for kind in kinds[1:]:
            folder = _require_dir(split_dir / kind, kind)
            _missing_twins([p.name for p in names if not (folder / p.name).is_file()], folder)
        self.items = [tuple(split_dir / kind / p.name for kind in kinds) for p in names]
        if not self.items:
            raise DatasetError(f"{images}: no .npy images")

    def read_raw(self, index: int) -> RawSample:
        paths = self.items[index]
        image = _load(paths[0], (3,))
        rgb = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8) if image.dtype.kind == "f" else \
            image.astype(np.uint8)
        label = _load(paths[1], (2,))
        ignore = label == self.info.ignore_index
        bad = ~ignore & ((label < 0) | (label >= self.info.num_classes))
        if bad.any():
            raise LabelError(f"{paths[1]}: label values {sorted({int(v) for v in np.unique(label[bad])})[:5]} outside "
                               f"0..{self.info.num_classes - 1} and ignore_index {self.info.ignore_index}")
        semseg = np.where(ignore, IGNORE_INDEX, label).astype(np.uint8)
        depth = _load(paths[2], (2, 3)).astype(np.float32).reshape(label.shape) * np.float32(self.info.depth_scale)
        depth[~(depth > 0)] = np.nan  # 0 (and NaN) = no measurement
        normals = None
        if len(paths) > 3:
            normals = _load(paths[3], (3,)).astype(np.float32)
            norm = np.linalg.norm(normals, axis=-1, keepdims=True)
            normals = np.where(norm > 1e-3, normals / np.maximum(norm, 1e-6), np.nan).astype(np.float32)
        if rgb.shape[:2] != label.shape or (normals is not None and normals.shape[:2] != label.shape):
            raise DatasetError(f"{paths[0]}: image/label/depth/normal sizes differ")
        return RawSample(rgb, semseg, depth, normals)


def write_sample(root: Path, split: str, index: int, raw: RawSample, ignore_index: int = -1) -> None:
    """One sample in this layout (what a test's small NYUv2 copy, or a converter, writes)."""
    label = np.where(raw.semseg == IGNORE_INDEX, ignore_index, raw.semseg.astype(np.int64)).astype(np.float32)
    arrays = {"image": raw.rgb.astype(np.float32) / 255.0, "label": label,
              "depth": np.nan_to_num(raw.depth, nan=0.0)[..., None].astype(np.float32),
              "normal": np.nan_to_num(raw.normals, nan=0.0).astype(np.float32)}
    for kind, array in arrays.items():
        (root / split / kind).mkdir(parents=True, exist_ok=True)
        np.save(root / split / kind / f"{index}.npy", array)


def synthetic_as_nyuv2(seed: int, split: str, index: int, height: int, width: int) -> RawSample:
    """A synthetic scene in NYUv2's terms: its 19 classes folded onto 13 (the sky unlabelled), depth scaled from
    4-300 m into 0.6-9.5 m, its normals as they are."""
    from mtl.data.synthetic import render_sample

    rgb, label, depth, normals = render_sample(seed, split, index, height, width)
    semseg = np.where(label == 10, IGNORE_INDEX, label % 13).astype(np.uint8)  # 10: sky
    metres = np.clip(depth / 30.0, 0.6, 9.5).astype(np.float32)  # NaN (the sky) stays NaN: 0 in the arrays
    return RawSample(rgb, semseg, metres, normals)


def main(argv: list[str] | None = None) -> None:
    from mtl.data.synthetic import parse_size

    p = argparse.ArgumentParser(prog="python -m mtl.data.nyuv2",
                                description="Write a small NYUv2-layout dataset from the synthetic scenes.")
    p.add_argument("--root", required=True, type=Path, help="The output folder (train/ and val/ go under it).")
    p.add_argument("--train", type=int, default=64, help="The number of training samples.")
    p.add_argument("--val", type=int, default=16, help="The number of validation samples.")
    p.add_argument("--size", type=parse_size, default=(64, 128), help="HxW, e.g. 64x128.")
    p.add_argument("--seed", type=int, default=3, help="The synthetic scenes' seed.")
    a = p.parse_args(argv)
    for split, n in (("train", a.train), ("val", a.val)):
        for i in range(n):
            write_sample(a.root, split, i, synthetic_as_nyuv2(a.seed, split, i, *a.size))
    print(f"{a.root}: {a.train} train and {a.val} val samples in the NYUv2 layout at {a.size[0]}x{a.size[1]}")


if __name__ == "__main__":
    main()
