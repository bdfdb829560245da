"""Joint transforms: the same geometry applied to RGB, semantic labels, depth and surface normals.

Resizing changes the apparent focal length, not the distance to things, so depth values are
kept as they are; nor does it turn surfaces, so normals are kept too. A horizontal flip mirrors the scene: a
normal's x component changes sign. Labels, depth and normals are resampled with nearest neighbour (no blended
classes, no NaN bleeding into valid depth).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mtl.data.labels import IGNORE_INDEX

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def to_tensors(rgb: np.ndarray, semseg: np.ndarray, depth: np.ndarray) -> tuple[torch.Tensor, ...]:
    """uint8 (H, W, 3), (H, W), float (H, W) -> float (3, H, W) in [0, 1], long (H, W), float (1, H, W)."""
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)
    label = torch.from_numpy(np.asarray(semseg, dtype=np.int64))
    metres = torch.from_numpy(np.asarray(depth, dtype=np.float32)).unsqueeze(0)
    return image, label, metres


def normalize(image: torch.Tensor) -> torch.Tensor:
    return (image - IMAGENET_MEAN) / IMAGENET_STD


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Inverse of `normalize`, for plotting: (..., 3, H, W) -> [0, 1]."""
    return (image * IMAGENET_STD.to(image.device) + IMAGENET_MEAN.to(image.device)).clamp(0, 1)


def normals_to_tensor(normals: np.ndarray | None) -> torch.Tensor | None:
    """(H, W, 3) float -> (3, H, W) float; None stays None (a dataset without normals)."""
    if normals is None:
        return None
    return torch.from_numpy(np.ascontiguousarray(normals, dtype=np.float32)).permute(2, 0, 1).contiguous()


def flip_normals(normals: torch.Tensor) -> torch.Tensor:
    """Mirror (..., 3, H, W) normals left-right: the image flips and x changes sign."""
    sign = torch.tensor([-1.0, 1.0, 1.0], device=normals.device).view(3, 1, 1)
    return normals.flip(-1) * sign


def _resize(image, label, depth, size: tuple[int, int]):
    """depth: (C, H, W) with C = 1, or 1 + 3 with the normals stacked under it (both nearest)."""
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].long()
    depth = F.interpolate(depth[None], size=size, mode="nearest")[0]
    return image, label, depth


def _pad_to(image, label, depth, size: tuple[int, int]):
    ph, pw = max(size[0] - image.shape[1], 0), max(size[1] - image.shape[2], 0)
    if ph == 0 and pw == 0:
        return image, label, depth
    pad = (0, pw, 0, ph)
    return (F.pad(image, pad, value=0.0), F.pad(label, pad, value=IGNORE_INDEX),
            F.pad(depth, pad, value=float("nan")))


def _sample(image, label, geometry) -> dict:
    """The transformed sample: `geometry` is depth (1, H, W) with the normals (3, H, W) under it, if any."""
    out = {"rgb": normalize(image), "semseg": label, "depth": geometry[:1].contiguous()}
    if geometry.shape[0] > 1:
        out["normals"] = geometry[1:].contiguous()
    return out


@dataclass(frozen=True)
class JointTransform:
    """Training: random scale, random crop, horizontal flip. Evaluation: centre crop to a
    multiple of `multiple` (the encoder's largest stride), so every feature map aligns."""

    train: bool
    crop: tuple[int, int] | None = None  # (h, w); clamped to the image size
    scale: tuple[float, float] = (1.0, 1.0)
    flip: bool = False
    multiple: int = 32

    def __call__(self, raw, seed: int) -> dict:
        """`raw`: a RawSample (rgb, semseg, depth, normals or None)."""
        image, label, metres = to_tensors(raw.rgb, raw.semseg, raw.depth)
        normals = normals_to_tensor(raw.normals)
        geometry = metres if normals is None else torch.cat([metres, normals])  # (1 [+ 3], H, W): one resample
        if self.train:
            image, label, geometry = self._augment(image, label, geometry, torch.Generator().manual_seed(seed))
        else:
            image, label, geometry = self._centre_crop(image, label, geometry)
        return _sample(image, label, geometry)

    def _augment(self, image, label, depth, g: torch.Generator):
        h, w = image.shape[1:]
        crop = (min(self.crop[0], h), min(self.crop[1], w)) if self.crop else (h, w)
        lo, hi = self.scale
        if hi > lo or lo != 1.0:
            s = lo + (hi - lo) * torch.rand((), generator=g).item()
            image, label, depth = _resize(image, label, depth, (max(round(h * s), 1), max(round(w * s), 1)))
        image, label, depth = _pad_to(image, label, depth, crop)
        h, w = image.shape[1:]
        top = int(torch.randint(0, h - crop[0] + 1, (), generator=g))
        left = int(torch.randint(0, w - crop[1] + 1, (), generator=g))
        rows, cols = slice(top, top + crop[0]), slice(left, left + crop[1])
        image, label, depth = image[:, rows, cols], label[rows, cols], depth[:, rows, cols]
        if self.flip and torch.rand((), generator=g).item() < 0.5:
            image, label = image.flip(-1), label.flip(-1)
            depth = torch.cat([depth[:1].flip(-1), flip_normals(depth[1:])]) if depth.shape[0] > 1 else depth.flip(-1)
        return image.contiguous(), label.contiguous(), depth.contiguous()

    def _centre_crop(self, image, label, depth):
        h, w = image.shape[1:]
        ch, cw = (h // self.multiple * self.multiple) or h, (w // self.multiple * self.multiple) or w
        top, left = (h - ch) // 2, (w - cw) // 2
        rows, cols = slice(top, top + ch), slice(left, left + cw)
        return image[:, rows, cols], label[rows, cols], depth[:, rows, cols]
