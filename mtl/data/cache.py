"""The synthetic-data cache: one generated dataset per (generator version, seed, size, counts).

Default location `~/.cache/mtl-tune/`, or `$MTL_TUNE_CACHE`. Generation is guarded by a file
lock, so concurrent trials on one node wait for a single generator instead of racing it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from filelock import FileLock

from mtl.data.synthetic import GENERATOR_VERSION, generate


def cache_root() -> Path:
    return Path(os.environ.get("MTL_TUNE_CACHE", "~/.cache/mtl-tune")).expanduser()


def synthetic_dir(counts: dict[str, int], size: tuple[int, int], seed: int = 0) -> Path:
    c = [int(counts.get(s, 0)) for s in ("train", "val", "test")]
    name = f"v{GENERATOR_VERSION}-seed{seed}-{size[0]}x{size[1]}-{c[0]}-{c[1]}-{c[2]}"
    return cache_root() / "synthetic" / name


def _complete(root: Path) -> bool:
    try:
        return json.loads((root / "meta.json").read_text()).get("generator_version") == GENERATOR_VERSION
    except (OSError, ValueError):
        return False


def ensure_synthetic(counts: dict[str, int], size: tuple[int, int], seed: int = 0,
                     workers: int | None = None, progress: bool = False) -> Path:
    """Path of a complete synthetic dataset with these parameters, generating it on first use."""
    root = synthetic_dir(counts, size, seed)
    if _complete(root):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if not _complete(root):
            generate(root, counts, size, seed, workers or min(os.cpu_count() or 1, 4), progress)
    return root
