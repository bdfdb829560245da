"""Ray-cast synthetic driving scenes written in the Miniscapes layout, plus a `normals/` folder of surface normals.

    python -m mtl.data.synthetic --root DIR --train N --val N --test N --size HxW --seed S [--workers K]

Sample (seed, split, index) always gets the same scene whatever the image size, and the same
pixels on any machine (see `shading.py`). Files are written atomically, so re-running skips
complete files and re-renders missing or damaged ones; `meta.json` is written last and marks a
complete dataset.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from mtl.data.datasets import encode_normals
from mtl.data.depth_io import depth_to_disparity8, disparity8_to_depth
from mtl.data.raycast import cast, make_rays
from mtl.data.scene_sampler import sample_scene
from mtl.data.stats import StatsAccumulator

GENERATOR_VERSION = 3  # 2: sky and far-plane depth invalid (NaN / code 0), as in Cityscapes; 3: surface normals
SPLITS = ("train", "val", "test")
KINDS = ("rgb", "semseg", "depth", "normals")  # one PNG each: normals as their 8-bit code (encode_normals)
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}


def render_sample(seed: int, split: str, index: int, height: int, width: int):
    """rgb (H, W, 3) uint8, semseg (H, W) uint8, depth (H, W) float32 metres, normals (H, W, 3) float32 unit vectors
    in the camera frame (NaN for the sky)."""
    from mtl.data.shading import shade  # local: keeps the import graph acyclic for tests

    rng = np.random.default_rng([seed, _SPLIT_CODE[split], index])  # splits never share scenes
    scene = sample_scene(rng)
    rays = make_rays(scene.camera, height, width)
    return shade(scene, rays, cast(scene, rays), rng)


def sample_paths(root: Path, split: str, index: int) -> dict[str, Path]:
    name = f"{index:06d}.png"
    return {kind: root / split / kind / name for kind in KINDS}


def _save_png(array: np.ndarray, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(array).save(tmp, format="PNG", compress_level=1)
    os.replace(tmp, path)  # atomic: a killed run never leaves a half-written PNG behind


def _read_complete(paths: dict[str, Path], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """The stored rgb and depth code if all four files are intact PNGs of this size, else None."""
    try:
        arrays = {}
        for kind, path in paths.items():
            with Image.open(path) as im:
                if im.format != "PNG" or im.size != (size[1], size[0]):
                    return None
                arrays[kind] = np.asarray(im)
        return arrays["rgb"], arrays["depth"]
    except (OSError, SyntaxError, ValueError):
        return None


def _generate_one(job: tuple[str, int, str, int, int, int]) -> tuple[bool, StatsAccumulator | None]:
    """Render one sample unless already complete. Returns (rendered, train statistics)."""
    root, seed, split, index, h, w = job
    paths = sample_paths(Path(root), split, index)
    stored = _read_complete(paths, (h, w))
    rendered = stored is None
    if rendered:
        rgb, semseg, depth, normals = render_sample(seed, split, index, h, w)
        code = depth_to_disparity8(depth)
        _save_png(rgb, paths["rgb"])
        _save_png(semseg, paths["semseg"])
        _save_png(code, paths["depth"])
        _save_png(encode_normals(normals), paths["normals"])
    else:
        rgb, code = stored
    if split != "train":
        return rendered, None
    acc = StatsAccumulator()
    acc.add(rgb, disparity8_to_depth(code))  # statistics of what the loader will read back
    return rendered, acc


def _jobs(root: Path, seed: int, counts: dict[str, int], size: tuple[int, int]) -> Iterator[tuple]:
    for split in SPLITS:
        for index in range(counts.get(split, 0)):
            yield (str(root), seed, split, index, size[0], size[1])


def generate(root: str | os.PathLike, counts: dict[str, int], size: tuple[int, int], seed: int = 0,
             workers: int = 1, progress: bool = True) -> dict:
    """Write (or complete) a synthetic dataset under `root`; returns the meta.json content."""
    root = Path(root)
    for split in SPLITS:
        for kind in KINDS:
            (root / split / kind).mkdir(parents=True, exist_ok=True)
            for stale in (root / split / kind).glob("*.tmp"):
                stale.unlink()
    jobs = list(_jobs(root, seed, counts, size))
    total = StatsAccumulator()
    rendered = 0
    bar = tqdm(total=len(jobs), desc=f"synthetic {size[0]}x{size[1]}", unit="img", disable=not progress)
    pool = get_context("fork").Pool(workers) if workers > 1 else None  # fork: cheap, inherits the imports
    try:
        results = pool.imap(_generate_one, jobs, chunksize=8) if pool else map(_generate_one, jobs)
        for was_rendered, acc in results:
            rendered += was_rendered
            if acc is not None:
                total.merge(acc)
            bar.update()
        if pool:  # let the workers exit on their own: SIGTERM (Pool.terminate) sets off signal handlers that
            pool.close()  # a parent such as a Ray driver installed, with crash dumps in the log
            pool.join()
    finally:
        if pool:
            pool.terminate()
    bar.close()
    meta = {
        "generator": "mtl-tune synthetic driving scenes",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "size": list(size),
        "counts": {split: int(counts.get(split, 0)) for split in SPLITS},
        "train_statistics": total.result() if counts.get("train") else None,
    }
    tmp = root / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, root / "meta.json")
    meta["rendered"] = rendered
    return meta


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 128x256 (HxW), got {text!r}") from None
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f"size must be at least 8x8, got {text!r}")
    return h, w


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m mtl.data.synthetic",
                                description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--root", required=True, help="output directory (Miniscapes layout)")
    for split, default in (("train", 200), ("val", 50), ("test", 50)):
        p.add_argument(f"--{split}", type=int, default=default, help=f"number of {split} images")
    p.add_argument("--size", type=parse_size, default=(128, 256), help="HxW, e.g. 128x256")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = p.parse_args(argv)
    meta = generate(a.root, {"train": a.train, "val": a.val, "test": a.test}, a.size, a.seed, a.workers)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
