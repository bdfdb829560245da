"""Data at accelerator speed: a split decoded once into compact arrays, augmented a whole batch at a time on
the trial's device.

PIL decoding of three PNGs per sample cannot feed thousands of images per second. Here each split is decoded once
(per node, when Ray's object store shares it between trials: the arrays are read zero-copy) into rgb uint8
(N, H, W, 3), labels uint8 (N, H, W) and depth float16 metres (N, H, W, NaN invalid) - 6 bytes a pixel, 15.7 GB
for the course's 20 000 training images at 256x512. A batch is gathered as uint8, copied to the device, and scaled,
cropped and flipped there by one `grid_sample` with a per-sample affine map. The random draws are the ones
`JointTransform` makes from the same per-sample seed, so without random scaling the batches equal the PNG path's
exactly; with scaling the resampling differs slightly (grid_sample instead of interpolate). Surface normals, where
a dataset has them, are kept as their 8-bit code (3 bytes a pixel, `encode_normals`) and decoded on the device.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mtl.data.datasets import SampleDataset, encode_normals
from mtl.data.labels import IGNORE_INDEX
from mtl.data.transforms import IMAGENET_MEAN, IMAGENET_STD

BYTES_PER_PIXEL = 3 + 1 + 2  # rgb, label, float16 depth (+ 3 for the normals' code, with a normals task)


@dataclass
class DecodedSplit:
    rgb: np.ndarray  # (N, H, W, 3) uint8
    semseg: np.ndarray  # (N, H, W) uint8 train ids, 255 = ignore
    depth: np.ndarray  # (N, H, W) float16 metres, NaN = invalid
    normals: np.ndarray | None = None  # (N, H, W, 3) uint8 code (mtl.data.datasets.encode_normals), 0 = invalid

    def __len__(self) -> int:
        return len(self.rgb)

    @property
    def nbytes(self) -> int:
        return self.rgb.nbytes + self.semseg.nbytes + self.depth.nbytes + (0 if self.normals is None else
                                                                           self.normals.nbytes)

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.rgb, self.semseg, self.depth) + (() if self.normals is None else (self.normals,))


def decode_split(ds: SampleDataset, threads: int | None = None) -> DecodedSplit:
    """Read and decode every sample of a dataset once (all images must share one size); PIL releases the GIL
    while decoding, so threads decode in parallel."""
    first = ds.read_raw(0)
    n, (h, w) = len(ds), first.semseg.shape
    out = DecodedSplit(np.empty((n, h, w, 3), np.uint8), np.empty((n, h, w), np.uint8), np.empty((n, h, w), np.float16),
                       None if first.normals is None else np.empty((n, h, w, 3), np.uint8))

    def put(i: int) -> None:
        raw = first if i == 0 else ds.read_raw(i)
        if raw.semseg.shape != (h, w):
            raise ValueError(f"{ds.items[i][0]}: size {raw.semseg.shape} differs from the split's {(h, w)}; decoded "
                             "arrays need one size (use in_memory: false)")
        out.rgb[i], out.semseg[i], out.depth[i] = raw.rgb, raw.semseg, raw.depth
        if out.normals is not None:
            out.normals[i] = encode_normals(raw.normals)

    with ThreadPoolExecutor(max_workers=threads or min(os.cpu_count() or 1, 16)) as pool:
        list(pool.map(put, range(n)))
    return out


def estimated_bytes(images: int, size: tuple[int, int], normals: bool = False) -> int:
    return images * size[0] * size[1] * (BYTES_PER_PIXEL + 3 * normals)


def _draws(seed: int, h: int, w: int, crop: tuple[int, int], scale: tuple[float, float], flip: bool):
    """The random scale, crop offset and flip `JointTransform._augment` draws from this seed, in its order."""
    g = torch.Generator().manual_seed(int(seed))
    lo, hi = scale
    s = 1.0
    if hi > lo or lo != 1.0:
        s = lo + (hi - lo) * torch.rand((), generator=g).item()
    sh, sw = max(round(h * s), 1), max(round(w * s), 1)
    ch, cw = min(crop[0], h), min(crop[1], w)
    top = int(torch.randint(0, max(sh, ch) - ch + 1, (), generator=g))
    left = int(torch.randint(0, max(sw, cw) - cw + 1, (), generator=g))
    flipped = flip and torch.rand((), generator=g).item() < 0.5
    return sh / h, sw / w, top, left, flipped, (ch, cw)


@dataclass(frozen=True)
class BatchAugment:
    """Random scale, crop and horizontal flip of a whole batch on its device: one affine `grid_sample` per
    tensor (bilinear for rgb, nearest for labels and depth; outside the image: rgb 0, label 255, depth NaN)."""

    crop: tuple[int, int]
    scale: tuple[float, float] = (1.0, 1.0)
    flip: bool = False

    def theta(self, seeds: list[int], h: int, w: int) -> tuple[torch.Tensor, tuple[int, int], list[bool]]:
        rows, flips = [], []
        for seed in seeds:
            sy, sx, top, left, flipped, (ch, cw) = _draws(seed, h, w, self.crop, self.scale, self.flip)
            # output pixel j of the crop sits at (left + j + 0.5) / s - 0.5 in input pixels (align_corners=False)
            ax, bx = cw / (w * sx), (2 * left + cw) / (w * sx) - 1
            ay, by = ch / (h * sy), (2 * top + ch) / (h * sy) - 1
            rows.append([[-ax if flipped else ax, 0.0, bx], [0.0, ay, by]])
            flips.append(flipped)
        return torch.tensor(rows, dtype=torch.float32), (ch, cw), flips

    def __call__(self, rgb: torch.Tensor, semseg: torch.Tensor, depth: torch.Tensor, seeds: list[int],
                 normals: torch.Tensor | None = None) -> dict:
        """rgb (B, H, W, 3) uint8, semseg (B, H, W) uint8, depth (B, H, W) float16, normals (B, H, W, 3) uint8 code
        or None -> the training batch."""
        b, h, w = semseg.shape
        theta, (ch, cw), flips = self.theta(seeds, h, w)
        grid = F.affine_grid(theta.to(rgb.device), [b, 1, ch, cw], align_corners=False)
        image = F.grid_sample(rgb.permute(0, 3, 1, 2).float().div_(255.0), grid, mode="bilinear",
                              padding_mode="zeros", align_corners=False)
        # labels + 1 and depth with NaN as 0, so that zero padding marks "outside" (depth is never 0 m)
        shifted = torch.stack([semseg.float() + 1, depth.float().nan_to_num(0.0)], 1)
        sampled = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        label = torch.where(sampled[:, 0] > 0, sampled[:, 0] - 1, float(IGNORE_INDEX)).long()
        metres = torch.where(sampled[:, 1:] > 0, sampled[:, 1:], float("nan"))
        batch = {"rgb": normalize_batch(image), "semseg": label, "depth": metres}
        if normals is not None:  # the code (0 = invalid, also what padding gives), sampled like the labels
            code = F.grid_sample(normals.permute(0, 3, 1, 2).float(), grid, mode="nearest", padding_mode="zeros",
                                 align_corners=False)
            sign = torch.tensor([[-1.0 if f else 1.0, 1.0, 1.0] for f in flips], device=code.device)[..., None, None]
            batch["normals"] = decode_normals_batch(code) * sign  # a flipped view mirrors x
        return batch


def decode_normals_batch(code: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) codes (uint8 or float) -> unit vectors, NaN where the code is (0, 0, 0)."""
    code = code.float()
    n = F.normalize((code - 1.0) / 127.0 - 1.0, dim=1)
    return torch.where((code == 0).all(1, keepdim=True), float("nan"), n)


def normalize_batch(image: torch.Tensor) -> torch.Tensor:
    return (image - IMAGENET_MEAN.to(image.device)) / IMAGENET_STD.to(image.device)


def centre_crop_batch(rgb: torch.Tensor, semseg: torch.Tensor, depth: torch.Tensor,
                      normals: torch.Tensor | None = None, multiple: int = 32) -> dict:
    """Evaluation: the centre crop to a multiple of the encoder's stride that `JointTransform` makes."""
    _, h, w = semseg.shape
    ch, cw = (h // multiple * multiple) or h, (w // multiple * multiple) or w
    rows, cols = slice((h - ch) // 2, (h - ch) // 2 + ch), slice((w - cw) // 2, (w - cw) // 2 + cw)
    image = rgb[:, rows, cols].permute(0, 3, 1, 2).float().div_(255.0)
    batch = {"rgb": normalize_batch(image), "semseg": semseg[:, rows, cols].long(),
             "depth": depth[:, None, rows, cols].float()}
    if normals is not None:
        batch["normals"] = decode_normals_batch(normals[:, rows, cols].permute(0, 3, 1, 2))
    return batch


class DeviceLoader:
    """Batches of a decoded split on `device`, in the order (and with the augmentation seeds) of an
    `EpochSampler`: a drop-in for the DataLoader the engine iterates."""

    def __init__(self, split: DecodedSplit, batch_size: int, sampler, device: torch.device,
                 augment: BatchAugment | None, drop_last: bool) -> None:
        self.split, self.batch_size, self.sampler, self.device = split, batch_size, sampler, device
        self.augment, self.drop_last = augment, drop_last

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        order = list(self.sampler)
        pin = self.device.type == "cuda"
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            chunk = order[start:start + self.batch_size]
            idx = np.array([i for i, _ in chunk])
            tensors = [torch.from_numpy(a[idx]) for a in self.split.arrays()]
            rgb, semseg, depth, *normals = (t.pin_memory().to(self.device, non_blocking=True) if pin else t
                                            for t in tensors)
            normals = normals[0] if normals else None
            if self.augment is not None:
                batch = self.augment(rgb, semseg, depth, [s for _, s in chunk], normals)
            else:
                batch = centre_crop_batch(rgb, semseg, depth, normals)
            batch["index"] = torch.from_numpy(idx)
            yield batch
