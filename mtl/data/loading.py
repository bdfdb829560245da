"""Datasets and loaders for one training run, from a `TrialConfig`.

Data order and augmentation come from (seed, epoch) alone - not from a global RNG or the
worker count - so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mtl.config import ConfigError, TrialConfig
from mtl.data.cache import cache_root, ensure_synthetic
from mtl.data.datasets import open_dataset
from mtl.data.decoded import BatchAugment, DecodedSplit, DeviceLoader, decode_split, estimated_bytes
from mtl.data.depth_units import DepthUnit
from mtl.data.stats import compute_stats
from mtl.data.transforms import JointTransform


class EpochSampler(Sampler):
    """Yields (index, augmentation seed) pairs; a permutation per epoch if `shuffle`."""

    def __init__(self, size: int, seed: int, shuffle: bool) -> None:
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=g) if self.shuffle else torch.arange(self.size)
        seeds = torch.randint(0, 2**31 - 1, (self.size,), generator=g)
        return iter(zip(order.tolist(), seeds.tolist(), strict=True))

    def __len__(self) -> int:
        return self.size


@dataclass
class RunData:
    root: Path
    stats: dict
    unit: DepthUnit
    train: Dataset
    val: Dataset
    test: Dataset | None
    decoded: dict[str, DecodedSplit] | None = None  # in_memory: train / val decoded once (maybe shared)


def _real_stats(root: Path, limit: int | None) -> dict:
    """Train statistics of a real dataset, computed once and cached (datasets may be read-only)."""
    key = hashlib.sha1(f"{root.resolve()}|{limit}".encode()).hexdigest()[:16]
    path = cache_root() / "stats" / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    stats = compute_stats(str(root), "train", limit)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stats))
    return stats


def dataset_root(cfg: TrialConfig, progress: bool = False) -> tuple[Path, dict]:
    """(root, train statistics): the synthetic cache (generated on first use) or the given path."""
    counts = cfg.counts()
    if cfg.synthetic:
        root = ensure_synthetic(counts, tuple(cfg.image_size), cfg.data_seed, progress=progress)
        return root, json.loads((root / "meta.json").read_text())["train_statistics"]
    root = Path(cfg.data).expanduser()
    return root, _real_stats(root, counts["train"])


def decoded_key(cfg: TrialConfig) -> tuple:
    """What identifies a run's decoded splits: trials with the same key can share them."""
    key = (cfg.data, tuple(cfg.image_size), cfg.data_seed, tuple(cfg.counts().items()))
    return (*key, "normals") if "normals" in cfg.tasks else key  # the course's key as it was


def use_decoded(cfg: TrialConfig, budget_bytes: float | None = None) -> bool:
    """Whether a run reads decoded arrays: `in_memory: true`, or "auto" when train + val fit in the budget
    (default: a quarter of this machine's memory; the search driver passes half of Ray's object store)."""
    if cfg.in_memory != "auto":
        return bool(cfg.in_memory)
    if budget_bytes is None:
        budget_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 4
    counts = cfg.counts()
    if counts["train"] is None or counts["val"] is None:
        return False  # a real dataset of unknown size: the PNG path
    return estimated_bytes(counts["train"] + counts["val"], tuple(cfg.image_size), "normals" in cfg.tasks) \
        <= budget_bytes


def decode_splits(cfg: TrialConfig, progress: bool = False) -> dict[str, DecodedSplit]:
    """The train and val splits of this config, decoded once (what the driver shares through Ray)."""
    root, _ = dataset_root(cfg, progress)
    counts = cfg.counts()
    normals = "normals" in cfg.tasks
    return {split: decode_split(open_dataset(root, split, limit=counts[split], normals=normals))
            for split in ("train", "val")}


def build_data(cfg: TrialConfig, with_test: bool = False, progress: bool = False,
               decoded: dict[str, DecodedSplit] | None = None) -> RunData:
    """Datasets, statistics and depth unit of a run; with `in_memory`, the decoded splits (given, e.g. shared by
    Ray's object store, or decoded here)."""
    root, stats = dataset_root(cfg, progress)
    counts = cfg.counts()
    train_tf = JointTransform(train=True, crop=cfg.crop, scale=tuple(cfg.aug_scale), flip=cfg.aug_flip)
    eval_tf = JointTransform(train=False)
    normals = "normals" in cfg.tasks
    train = open_dataset(root, "train", train_tf, limit=counts["train"], normals=normals)
    if len(train) < cfg.batch_size:
        raise ConfigError(f"batch_size {cfg.batch_size} is larger than the {len(train)} training images")
    val = open_dataset(root, "val", eval_tf, limit=counts["val"], normals=normals)
    if decoded is None and use_decoded(cfg):
        decoded = {"train": decode_split(train), "val": decode_split(val)}  # the files just listed, read once
    test = open_dataset(root, "test", eval_tf, limit=counts["test"], normals=normals) if with_test else None
    return RunData(root, stats, DepthUnit.from_stats(cfg.depth_unit, stats), train, val, test, decoded)


def make_loaders(cfg: TrialConfig, data: RunData, device: torch.device) -> tuple:
    """(train, val) loaders: decoded arrays augmented on `device` with `in_memory`, else PNG files through
    DataLoader workers. Both follow `EpochSampler`, so data order and crops are the same either way."""
    if data.decoded is None:
        return (make_loader(data.train, cfg.batch_size, cfg.seed, True, cfg.num_workers),
                make_loader(data.val, cfg.val_batch_size, cfg.seed, False, cfg.num_workers))
    train, val = data.decoded["train"], data.decoded["val"]
    augment = BatchAugment(cfg.crop, tuple(cfg.aug_scale), cfg.aug_flip)
    return (DeviceLoader(train, cfg.batch_size, EpochSampler(len(train), cfg.seed, True), device, augment, True),
            DeviceLoader(val, cfg.val_batch_size, EpochSampler(len(val), cfg.seed, False), device, None, False))


def make_loader(ds: Dataset, batch_size: int, seed: int, train: bool, workers: int) -> DataLoader:
    # drop_last in training: a batch of one breaks BatchNorm in the ASPP pooling branch
    return DataLoader(ds, batch_size=batch_size, sampler=EpochSampler(len(ds), seed, shuffle=train),
                      num_workers=workers, drop_last=train, pin_memory=torch.cuda.is_available(),
                      persistent_workers=workers > 0)
