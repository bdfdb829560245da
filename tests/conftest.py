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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint():
    """A real moto server (S3, EC2, IAM) on 127.0.0.1, in its own process."""
    import socket
    import subprocess
    import sys
    import time

    port = _free_port()
    env = {**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"}  # Ray's bootstrap attaches AWS policies
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "moto server did not start"
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


AWS_TEST_ENV = {"AWS_ACCESS_KEY_ID": "AKIAMTLTUNETESTKEY01", "AWS_DEFAULT_REGION": "us-east-2",
                "AWS_SECRET_ACCESS_KEY": "mtl-tune-test-secret-DO-NOT-LEAK", "AWS_REGION": "us-east-2"}


@pytest.fixture
def aws_env(moto_endpoint, monkeypatch):
    """Fake credentials and the moto endpoint for this process (boto3 and pyarrow read them)."""
    for key, value in {**AWS_TEST_ENV, "AWS_ENDPOINT_URL": moto_endpoint}.items():
        monkeypatch.setenv(key, value)
    return moto_endpoint
