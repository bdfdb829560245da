"""Datasets in the Miniscapes, Cityscapes and NYUv2 file layouts.

All yield the same sample: rgb (H, W, 3) uint8, semseg (H, W) uint8 class ids with 255 =
ignore, depth (H, W) float32 metres with NaN where invalid, and, where the dataset has them, surface normals
(H, W, 3) float32 unit vectors in the camera frame with NaN where invalid - then the joint transform turns
that into tensors. Every bad-input error names the offending path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from mtl.data.depth_io import disparity8_to_depth
from mtl.data.labels import IGNORE_INDEX, LABEL_ID_TO_TRAIN_ID, NUM_CLASSES


class RawSample(NamedTuple):
    rgb: np.ndarray  # (H, W, 3) uint8
    semseg: np.ndarray  # (H, W) uint8 class ids, 255 = ignore
    depth: np.ndarray  # (H, W) float32 metres, NaN = invalid
    normals: np.ndarray | None = None  # (H, W, 3) float32 unit vectors (x right, y down, z forward), NaN = invalid


class DatasetError(ValueError):
    """Malformed dataset on disk; the message names the path."""


class LabelError(DatasetError):
    """A label beyond the dataset's classes (its descriptor's `classes` may be what is wrong)."""


def _read_png(path: Path, modes: tuple[str, ...]) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode not in modes:
                raise DatasetError(f"{path}: PNG mode {im.mode!r}, expected one of {modes}")
            return np.array(im)  # a writable copy: torch.from_numpy refuses read-only arrays
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"{path}: unreadable image ({e})") from e


def _check_labels(label: np.ndarray, path: Path, num_classes: int = NUM_CLASSES) -> np.ndarray:
    bad = (label >= num_classes) & (label != IGNORE_INDEX)
    if bad.any():
        values = sorted(set(np.unique(label[bad]).tolist()))[:5]
        raise LabelError(f"{path}: label values {values} outside 0..{num_classes - 1} and {IGNORE_INDEX}")
    return label


def decode_normals(code: np.ndarray) -> np.ndarray:
    """An 8-bit normals PNG (H, W, 3): code 1..255 maps [-1, 1] per axis, (0, 0, 0) is invalid -> float32 unit
    vectors with NaN where invalid."""
    n = (code.astype(np.float32) - 1.0) / 127.0 - 1.0
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)
    n[(code == 0).all(-1)] = np.nan
    return n


def encode_normals(normals: np.ndarray) -> np.ndarray:
    """Inverse of `decode_normals` (0.45 degrees at worst): NaN -> (0, 0, 0)."""
    code = np.clip(np.round((np.nan_to_num(normals) + 1.0) * 127.0 + 1.0), 1, 255).astype(np.uint8)
    code[~np.isfinite(normals).all(-1)] = 0
    return code


class SampleDataset(Dataset):
    """A dataset of `RawSample`s; subclasses implement `read_raw`."""

    def __init__(self, transform: Callable | None) -> None:
        self.transform = transform
        self.items: list[tuple[Path, ...]] = []

    def __len__(self) -> int:
        return len(self.items)

    def read_raw(self, index: int) -> RawSample:
        raise NotImplementedError

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """`key` is an index, or (index, augmentation seed) from `EpochSampler`."""
        index, aug_seed = key if isinstance(key, tuple) else (key, index_seed(key))
        raw = self.read_raw(index)
        if self.transform is None:
            sample = {k: v for k, v in raw._asdict().items() if v is not None}
            return {**sample, "index": index}
        sample = self.transform(raw, aug_seed)
        sample["index"] = index
        return sample


def index_seed(index: int) -> int:
    return int(index) * 2654435761 % (2**31)


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{path}: {what} directory not found")
    return path


def _missing_twins(names: list[str], folder: Path) -> None:
    if names:
        shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
        raise DatasetError(f"{folder}: no file for {len(names)} rgb image(s): {shown}")


class MiniscapesDataset(SampleDataset):
    """`{root}/{split}/rgb/{idx}.{png,jpg}` + `semseg/{idx}.png` (P or L) + `depth/{idx}.png` (8-bit disparity),
    and `normals/{idx}.png` (8-bit, `decode_normals`) where the split has that folder (the synthetic data does)."""

    def __init__(self, root: str | Path, split: str, transform: Callable | None = None,
                 limit: int | None = None, num_classes: int = NUM_CLASSES, normals: bool = False) -> None:
        self.num_classes = num_classes
        super().__init__(transform)
        base = _require_dir(Path(root), "dataset root")
        split_dir = _require_dir(base / split, f"split {split!r}")
        rgb_dir = _require_dir(split_dir / "rgb", "rgb")
        rgbs = sorted(p for p in rgb_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if limit is not None:
            if len(rgbs) < limit:
                raise DatasetError(f"{rgb_dir}: {len(rgbs)} images, but {limit} were requested")
            rgbs = rgbs[:limit]
        for kind in ("semseg", "depth"):
            folder = _require_dir(split_dir / kind, kind)
            _missing_twins([p.name for p in rgbs if not (folder / (p.stem + ".png")).is_file()], folder)
        self.normals_dir = _require_dir(split_dir / "normals", "normals") if normals else None  # read when asked
        if self.normals_dir is not None:
            _missing_twins([p.name for p in rgbs if not (self.normals_dir / (p.stem + ".png")).is_file()],
                           self.normals_dir)
        self.items = [(p, split_dir / "semseg" / (p.stem + ".png"), split_dir / "depth" / (p.stem + ".png"))
                      for p in rgbs]
        if not self.items:
            raise DatasetError(f"{rgb_dir}: no images")

    def read_raw(self, index: int) -> RawSample:
        rgb_path, sem_path, depth_path = self.items[index]
        rgb = _read_png(rgb_path, ("RGB",))
        semseg = _check_labels(_read_png(sem_path, ("P", "L")), sem_path, self.num_classes)
        code = _read_png(depth_path, ("L",))
        if code.shape != semseg.shape or rgb.shape[:2] != semseg.shape:
            raise DatasetError(f"{rgb_path}: rgb/semseg/depth sizes differ")
        normals = None
        if self.normals_dir is not None:
            path = self.normals_dir / (rgb_path.stem + ".png")
            normals = decode_normals(_read_png(path, ("RGB",)))
            if normals.shape[:2] != semseg.shape:
                raise DatasetError(f"{path}: size {normals.shape[:2]} differs from the labels' {semseg.shape}")
        return RawSample(rgb, semseg, disparity8_to_depth(code), normals)


class CityscapesDataset(SampleDataset):
    """`leftImg8bit/{split}/{city}/*_leftImg8bit.png` + gtFine labelIds + disparity + camera json."""

    def __init__(self, root: str | Path, split: str, transform: Callable | None = None,
                 limit: int | None = None, num_classes: int = NUM_CLASSES, normals: bool = False) -> None:
        super().__init__(transform)
        if normals:
            raise DatasetError(f"{root}: the Cityscapes layout has no surface normals")
        base = _require_dir(Path(root), "dataset root")
        img_dir = _require_dir(base / "leftImg8bit" / split, f"leftImg8bit split {split!r}")
        rgbs = sorted(img_dir.glob("*/*_leftImg8bit.png"))
        if limit is not None:
            rgbs = rgbs[:limit]
        twins = {"gtFine": "_gtFine_labelIds.png", "disparity": "_disparity.png", "camera": "_camera.json"}
        for folder, suffix in twins.items():
            paths = [self._twin(base, split, p, folder, suffix) for p in rgbs]
            missing = [p.name for p, t in zip(rgbs, paths, strict=True) if not t.is_file()]
            _missing_twins(missing, base / folder / split)
        self.items = [(p, *(self._twin(base, split, p, f, s) for f, s in twins.items())) for p in rgbs]
        if not self.items:
            raise DatasetError(f"{img_dir}: no *_leftImg8bit.png images")

    @staticmethod
    def _twin(base: Path, split: str, rgb: Path, folder: str, suffix: str) -> Path:
        stem = rgb.name[: -len("_leftImg8bit.png")]
        return base / folder / split / rgb.parent.name / (stem + suffix)

    def read_raw(self, index: int) -> RawSample:
        rgb_path, label_path, disp_path, cam_path = self.items[index]
        rgb = _read_png(rgb_path, ("RGB",))
        label = LABEL_ID_TO_TRAIN_ID[_read_png(label_path, ("L", "P", "I;8"))]
        disp = _read_png(disp_path, ("I;16", "I", "I;16B")).astype(np.float64)
        try:
            cam = json.loads(cam_path.read_text())
            baseline, fx = cam["extrinsic"]["baseline"], cam["intrinsic"]["fx"]
        except (OSError, ValueError, KeyError) as e:
            raise DatasetError(f"{cam_path}: camera file needs extrinsic.baseline and intrinsic.fx ({e})") from e
        with np.errstate(divide="ignore"):
            depth = np.where(disp > 1, baseline * fx / ((disp - 1.0) / 256.0), np.nan)
        return RawSample(rgb, label, depth.astype(np.float32))


def detect_layout(root: str | Path) -> str:
    """'miniscapes', 'cityscapes' or 'nyuv2' from the folders present under `root`."""
    base = Path(root)
    if not base.is_dir():
        raise DatasetError(f"{base}: dataset root not found")
    if (base / "leftImg8bit").is_dir():
        return "cityscapes"
    if any((base / s / "rgb").is_dir() for s in ("train", "val", "test")):
        return "miniscapes"
    if any((base / s / "image").is_dir() for s in ("train", "val", "test")):
        return "nyuv2"
    raise DatasetError(f"{base}: neither a Miniscapes layout ({{split}}/rgb, semseg, depth), a Cityscapes layout "
                       "(leftImg8bit/, gtFine/, disparity/, camera/) nor an NYUv2 layout ({split}/image, label, "
                       "depth, normal of .npy arrays)")


def open_dataset(root: str | Path, split: str, transform: Callable | None = None,
                 limit: int | None = None, normals: bool = False) -> SampleDataset:
    """The dataset under `root` in its layout, read as its descriptor (mtl_dataset.yaml, mtl.data.describe) says;
    `normals`: read the surface normals too (a normals task)."""
    from mtl.data.describe import dataset_info  # the descriptor reads layouts from here
    from mtl.data.nyuv2 import NYUv2Dataset

    info = dataset_info(str(root))
    cls = {"cityscapes": CityscapesDataset, "miniscapes": MiniscapesDataset, "nyuv2": NYUv2Dataset}[info.layout]
    if cls is NYUv2Dataset:
        return cls(root, split, transform=transform, limit=limit, info=info, normals=normals)
    return cls(root, split, transform=transform, limit=limit, num_classes=info.num_classes, normals=normals)
