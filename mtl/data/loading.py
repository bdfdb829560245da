"""Datasets and loaders for one training run, from a `TrialConfig`.

Data order and augmentation come from (seed, epoch) alone - not from a global RNG or the
worker count - so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mtl.config import ConfigError, TrialConfig
from mtl.data.cache import cache_root, ensure_synthetic
from mtl.data.datasets import RawSample, SampleDataset, open_dataset
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


class InMemoryDataset(SampleDataset):
    """A dataset decoded once into memory (rgb uint8, labels uint8, depth float32 per image): the same samples
    as its source, without reading and decoding three PNGs per sample and epoch."""

    def __init__(self, source: SampleDataset) -> None:
        super().__init__(source.transform)
        self.items = source.items
        self.samples: list[RawSample] = [source.read_raw(i) for i in range(len(source))]

    def read_raw(self, index: int) -> RawSample:
        return self.samples[index]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for sample in self.samples for a in sample)


@dataclass
class RunData:
    root: Path
    stats: dict
    unit: DepthUnit
    train: Dataset
    val: Dataset
    test: Dataset | None


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


def build_data(cfg: TrialConfig, with_test: bool = False, progress: bool = False) -> RunData:
    root, stats = dataset_root(cfg, progress)
    counts = cfg.counts()
    train_tf = JointTransform(train=True, crop=cfg.crop, scale=tuple(cfg.aug_scale), flip=cfg.aug_flip)
    eval_tf = JointTransform(train=False)
    train = open_dataset(root, "train", train_tf, limit=counts["train"])
    if len(train) < cfg.batch_size:
        raise ConfigError(f"batch_size {cfg.batch_size} is larger than the {len(train)} training images")
    val = open_dataset(root, "val", eval_tf, limit=counts["val"])
    if cfg.in_memory:
        train, val = InMemoryDataset(train), InMemoryDataset(val)
    test = open_dataset(root, "test", eval_tf, limit=counts["test"]) if with_test else None
    return RunData(root, stats, DepthUnit.from_stats(cfg.depth_unit, stats), train, val, test)


def make_loader(ds: Dataset, batch_size: int, seed: int, train: bool, workers: int) -> DataLoader:
    # drop_last in training: a batch of one breaks BatchNorm in the ASPP pooling branch
    return DataLoader(ds, batch_size=batch_size, sampler=EpochSampler(len(ds), seed, shuffle=train),
                      num_workers=workers, drop_last=train, pin_memory=torch.cuda.is_available(),
                      persistent_workers=workers > 0)
