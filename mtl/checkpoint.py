"""Checkpoints: everything needed to continue a run exactly where it stopped (the full state), or only the best
epoch's weights that a finished run keeps (`kind: best_weights`, about a third of the full state with Adam)."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "state.pt"
BEST_WEIGHTS = "best_weights"  # `kind` of a finished run's checkpoint: no optimizer, scheduler or RNG state


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: str | Path, state: dict[str, Any]) -> Path:
    """Write state.pt atomically into `directory` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, directory / STATE_FILE)
    return directory


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be read back (truncated or damaged)."""


def load_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        return None
    try:
        # our own files: they hold numpy RNG state, which the weights-only unpickler refuses
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises RuntimeError, EOFError, pickle errors... for a damaged file
        raise CorruptCheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from e
    needs = {"model", "epoch"} if isinstance(state, dict) and state.get("kind") == BEST_WEIGHTS \
        else {"model", "optimizer", "epoch"}
    if not isinstance(state, dict) or not needs <= set(state):
        raise CorruptCheckpointError(f"{path}: not an mtl-tune checkpoint")
    return state


def best_weights(state: dict[str, Any]) -> dict[str, Any]:
    """The best epoch's model weights in any checkpoint: a finished run's `best_weights`, or a full state's
    `best_model` (None there when the best epoch is the checkpoint's own epoch, whose weights are `model`)."""
    if state.get("kind") == BEST_WEIGHTS:
        return state["model"]
    return state.get("best_model") or state["model"]


STAGING_PREFIX = "mtl-tune-ckpt-"  # + the pid of the process that stages there


def staging_dir() -> tempfile.TemporaryDirectory:
    """A temporary folder for a checkpoint on its way to storage, named after this process: a process killed while
    it held one (a lost node, a stopped actor) leaves it behind, and `sweep_staging` removes it later."""
    return tempfile.TemporaryDirectory(prefix=f"{STAGING_PREFIX}{os.getpid()}-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_staging(root: str | None = None) -> int:
    """Delete the staging folders of processes that no longer run (checkpoints of hundreds of MB each); returns
    how many."""
    removed = 0
    for folder in Path(root or tempfile.gettempdir()).glob(f"{STAGING_PREFIX}*"):
        pid = folder.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed
