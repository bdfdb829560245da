"""Shared fixtures: a private cache directory and tiny generated datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep every test's synthetic cache and Ray temp files away from the user's home.
_SESSION_CACHE = Path(os.environ.get("PYTEST_MTL_CACHE", "/tmp/mtl-tune-test-cache"))
os.environ["MTL_TUNE_CACHE"] = str(_SESSION_CACHE)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ["MTL_TUNE_OFFLINE"] = "1"  # tests never download (pretrained weights fail fast instead)
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


@pytest.fixture(scope="session")
def _shared_ray():
    """One local Ray for the whole test run (a start-up costs ~10 s); shut down at the end of the session."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_local(_shared_ray):
    """A real local Ray cluster (2 CPUs), shared by every module that asks for it; yields its GCS address. A module
    that needs a Ray of its own (another environment for its workers, a multi-node cluster) shuts this one down
    first; the next module that asks starts it again."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    return ray.get_runtime_context().gcs_address


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


# --- helpers for tests that interrupt a running search ------------------------------------------

SHORT_AND_LONG = """
fixed: {optimizer: adam, lr: 1.0e-3}
variants:
  - {name: short, epochs: 2, baseline: true}
  - {name: long, epochs: 8}
"""


def result_epochs(trial_dir: Path) -> list[int]:
    """Epochs in a trial's result.json (as far as the driver has synced it)."""
    import json

    path = trial_dir / "result.json"
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines()] if path.is_file() else []


def checkpointed(trial_dir: Path) -> int:
    """Epochs with a persisted checkpoint (checkpoint_000000 is epoch 1); written within each report."""
    indices = [int(p.name.split("_")[1]) for p in trial_dir.glob("checkpoint_*")]
    return max(indices) + 1 if indices else 0


def trial_dir(exp_dir: Path, variant: str) -> Path | None:
    return next((d for d in exp_dir.glob(f"*_{variant}_s0") if d.is_dir()), None) if exp_dir.is_dir() else None


def start_driver(spec: Path, storage: Path, address: str, *extra: str):
    """`run_search.py` in its own process, joined to the test's Ray cluster."""
    import subprocess
    import sys

    cmd = [sys.executable, str(REPO / "run_search.py"), str(spec), "--profile", "smoke", "--storage", str(storage),
           "--no-dashboard", "--no-report", "--address", address,
           "--storage-shared", *extra]  # ray.cluster_utils.Cluster's nodes share this machine's disk
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)


def wait_short_done_long_running(exp_dir: Path, proc, timeout: float = 240) -> None:
    """Until `short` has finished and `long` is mid-run; then a moment for the driver to take it in."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        short, long = trial_dir(exp_dir, "short"), trial_dir(exp_dir, "long")
        if short and long and checkpointed(short) == 2 and 3 <= checkpointed(long) < 8:
            break
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "timed out waiting for the search to get going"
        time.sleep(0.3)
    time.sleep(1.5)
