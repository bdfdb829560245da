"""A full disk is a clear error, not a crash: the search stops cleanly, and `--resume` after freeing space
completes it. The storage is a small tmpfs made for the test (we run as root, as CI does)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO, result_epochs, trial_dir, write_spec

pytestmark = pytest.mark.slow

MB = 2**20


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=500m", "tmpfs", str(disk)], check=True)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _driver(spec, storage, address, *extra) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "run_search.py"), str(spec), "--profile", "smoke", "--storage", str(storage),
           "--no-dashboard", "--no-report", "--address", address, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=400)


def test_a_full_disk_stops_the_search_cleanly_and_resume_completes_it(ray_local, tmp_path, small_disk):
    # ResNet-18 at the smoke profile: a full state (weights + Adam's moments) is ~135 MB, the best weights ~45 MB;
    # every checkpoint must leave 64 MB free. With 200 MB taken by another file, `short` finishes (45 MB kept),
    # `long` saves epoch 1 (135 MB) and its epoch-2 checkpoint no longer fits.
    spec = write_spec(tmp_path, """
fixed: {optimizer: adam, lr: 1.0e-3, encoder: resnet18}
variants:
  - {name: short, epochs: 1, baseline: true}
  - {name: long, epochs: 3}
search: {max_concurrent: 1}
""", name="full_disk")
    filler = small_disk / "someone_elses_file"
    filler.write_bytes(b"\0" * (200 * MB))
    first = _driver(spec, small_disk, ray_local)
    out = first.stdout + first.stderr
    assert first.returncode == 75, out
    assert f"error: the storage is full: {small_disk}/full_disk (" in out and "MB free" in out
    assert "no space left for a checkpoint" in out and "--resume" in out and "Traceback" not in out
    exp_dir = small_disk / "full_disk"
    assert result_epochs(trial_dir(exp_dir, "short")) == [1]  # finished and kept
    assert result_epochs(trial_dir(exp_dir, "long"))[0] == 1

    filler.unlink()  # space freed
    second = _driver(spec, small_disk, ray_local, "--resume")
    assert second.returncode == 0, second.stdout + second.stderr
    assert result_epochs(trial_dir(exp_dir, "short")) == [1]  # not run again
    epochs = result_epochs(trial_dir(exp_dir, "long"))
    assert epochs[-2:] == [2, 3] and epochs.count(1) == 1  # continued from its epoch-1 checkpoint
    df = pd.read_parquet(exp_dir / "results.parquet")
    assert sorted(df["status"]) == ["completed", "completed"] and sorted(df["epochs_run"]) == [1, 3]
