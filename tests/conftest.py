"""Shared fixtures: a private cache directory and tiny generated datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep every test's synthetic cache and Ray temp files away from the user's home.
_SESSION_CACHE = Path(os.environ.get("PYTEST_MTL_CACHE", "/tmp/mtl-tune-test-cache"))
os.environ["MTL_TUNE_CACHE"] = str(_SESSION_CACHE)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

TINY_SIZE = (32, 64)
TINY_COUNTS = {"train": 8, "val": 4, "test": 4}


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """A generated Miniscapes-layout dataset: 8/4/4 images at 32x64."""
    from mtl.data.synthetic import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, TINY_COUNTS, TINY_SIZE, seed=0, workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def ray_local():
    """A real local Ray cluster (2 CPUs) for this test module; yields its GCS address."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ctx.address_info["gcs_address"]
    ray.shutdown()


REPO = Path(__file__).resolve().parents[1]


def write_spec(tmp_path: Path, body: str, name: str = "exp") -> Path:
    """A spec file on top of the shipped template baseline."""
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(f"name: {name}\nbase: [{REPO / 'search' / 'spaces' / 'base.yaml'}]\n{body}")
    return spec
