"""The checkpoint policy: what a finished trial keeps in storage, enforced as a Ray Tune `Callback`.

A running trial keeps its two latest full states (the newest is what `--resume` needs; the one before it covers an
experiment snapshot that has not caught up yet). Tune's own `CheckpointConfig(num_to_keep)` would do it, but it
then saves the whole experiment state, O(trials), after every checkpoint of every trial: quadratic in a search of
many short trials (bench.search_overhead). When it finishes, `mtl.train` makes its last checkpoint the best
epoch's weights only (`checkpoints.state: weights`), and this callback deletes what no feature needs
(`checkpoints.keep`, see `search.spec.CheckpointsBlock`): trials stopped early, diverged or out of memory keep
nothing; of the completed ones, the best of each row (`rows`), the best `top` (`top`), all or none. Errored trials
keep their state: `--resume` retries them from it. What is kept, and how much was freed, is written to
`checkpoints.json` next to the results, which the report reads.

Every deletion waits until Tune's experiment snapshot in the storage is newer than the decision to delete: a
driver lost in between (a killed head) leaves a snapshot that restores trials from the checkpoints it knew.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from typing import Any

import pyarrow.fs as pafs
from ray import tune

from core.layout import CHECKPOINT_MANIFEST
from core.storage import Storage, checkpoint_folders, tree_bytes
from search.trials import Experiment

MANIFEST_FILE = CHECKPOINT_MANIFEST
RUNNING_KEEP = 2  # full states a running trial keeps
SNAPSHOT_CHECK_S = 1.0  # how often pending deletions look at the snapshot's time in storage
CLOCK_MARGIN_S = 2.0  # between this machine's clock and the storage's (file times on S3 are the server's)
STORAGE_FULL = "storage_full"  # the `status` a trial reports when its checkpoint would not fit


def storage_full_reason(results) -> str | None:
    """Why the storage ran out, from the trial that found it (Tune's ResultGrid: each trial's last result), or None.
    Read from Tune's results, not from this callback: after `--resume`, Tune runs the callback it unpickled from the
    experiment, not the driver's instance."""
    for result in results or ():
        metrics = result.metrics or {}
        if metrics.get("status") == STORAGE_FULL:
            return str(metrics.get("storage_full_reason") or "storage full")
    return None


def keep_rule(exp: Experiment) -> tuple[str, int | None]:
    """The resolved `checkpoints.keep` and how many trials a group keeps (None: no limit)."""
    block = exp.spec.checkpoints
    keep = block.keep
    if keep == "auto":
        keep = "all" if exp.spec.report.posthoc_tta else "top" if exp.space else "rows"
    return keep, {"rows": 1, "top": block.top, "all": None, "none": 0}[keep]


def _score(result: dict[str, Any], metric: str, mode: str) -> tuple:
    """Sort key, larger is better: a score beats none (single-task rows have no multitask); ties go to the
    lower seed, as the report's `best_trial_id` picks them."""
    value = result.get(metric)
    ok = isinstance(value, (int, float)) and not math.isnan(value)
    return (ok, (value if mode == "max" else -value) if ok else 0.0, -int(result.get("seed") or 0))


class CheckpointRetention(tune.Callback):
    """Deletes what finished trials need not keep, as they finish; stops the search when storage runs out."""

    def __init__(self, exp: Experiment, storage: Storage) -> None:
        self.keep, self.limit = keep_rule(exp)
        self.state = exp.spec.checkpoints.state
        self.metric, self.mode = exp.metric, exp.mode
        self.storage, self.exp_path = storage, storage.experiment(exp.name)
        self.manifest_path = f"{self.exp_path}/{MANIFEST_FILE}"
        self.kept: dict[str, dict[str, Any]] | None = None  # trial_id -> its entry in the manifest
        self.freed = 0
        self.stopping = False  # the storage ran out and the search is stopping (once)
        self.pending: dict[str, tuple[float, bool]] = {}  # checkpoint folder -> (decided at, count it as freed)
        self._checked = 0.0
        self._snapshot_file: str | None = None  # Tune's snapshot of this driver's session, once seen
        self._since = time.time()  # when this driver took the callback over (a --resume unpickles it)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_snapshot_file": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A resumed driver writes a snapshot of its own, under a new name: look for it afresh."""
        self.__dict__.update(state)
        self._snapshot_file, self._since = None, time.time()

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        if result.get("status") == STORAGE_FULL and not self.stopping:
            self.stopping = True
            # stop as Ctrl-C does: Tune saves the experiment and every unfinished trial resumes from its last
            # checkpoint (a stopped trial would count as finished)
            os.kill(os.getpid(), signal.SIGINT)

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint, **info) -> None:
        """A running trial saved a checkpoint: delete its full states older than the newest RUNNING_KEEP."""
        folders = sorted(self._checkpoint_folders(trial), key=lambda p: p.rsplit("_", 1)[-1])
        for path in folders[:-RUNNING_KEEP]:
            self._delete(path, count=False)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._load()
        last = trial.last_result or {}
        entry = None
        if last.get("status") == "completed" and self.limit != 0 and trial.checkpoint is not None:
            entry = {"variant": last.get("variant"), "seed": last.get("seed"), "score": _score(last, self.metric,
                     self.mode), "path": trial.checkpoint.path}
        self._prune(trial, keep=entry["path"] if entry else None)
        if entry is not None:
            self._admit(trial.trial_id, entry)
        self._write()

    def _admit(self, trial_id: str, entry: dict[str, Any]) -> None:
        """Add a completed trial; evict whatever its group (a row, or the experiment) now holds beyond the limit."""
        entry["bytes"] = tree_bytes(self.storage.fs, entry["path"])
        self.kept[trial_id] = entry
        if self.limit is None:
            return
        group = [t for t, e in self.kept.items() if self.keep != "rows" or e["variant"] == entry["variant"]]
        ranked = sorted(group, key=lambda t: tuple(self.kept[t]["score"]), reverse=True)
        for loser in ranked[self.limit:]:
            self._delete(self.kept.pop(loser)["path"])

    def _checkpoint_folders(self, trial) -> list[str]:
        return [i.path for i in checkpoint_folders(self.storage.fs, trial.path)]

    def _prune(self, trial, keep: str | None) -> None:
        """Delete the trial's checkpoint folders but `keep` (also half-written ones of a failed save)."""
        for path in self._checkpoint_folders(trial):
            if path.rstrip("/") != (keep or "").rstrip("/"):
                self._delete(path)

    def _delete(self, path: str, count: bool = True) -> None:
        """Delete a checkpoint folder once the experiment snapshot in storage no longer needs it (see on_step_begin)."""
        self.pending.setdefault(path.rstrip("/"), (time.time(), count))

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        """Deletions wait for Tune's experiment snapshot in storage to be newer than the decision: a driver lost
        before that (a killed head) leaves a snapshot whose `--resume` restores trials from the checkpoints it
        knew, and Tune fails a trial whose checkpoint is gone. The namespace cluster's head-loss test found it."""
        now = time.monotonic()
        if not self.pending or now - self._checked < SNAPSHOT_CHECK_S:
            return
        self._checked = now
        synced = self._snapshot_time()
        for path, (decided, count) in list(self.pending.items()):
            if synced is not None and decided + CLOCK_MARGIN_S < synced:
                self._remove(path, count)

    def on_experiment_end(self, trials: list, **info) -> None:
        """The run ends with a final snapshot that knows every trial's last state: nothing waits any longer."""
        for path, (_, count) in list(self.pending.items()):
            self._remove(path, count)
        if self.kept is not None:
            self._write()

    def _snapshot_time(self) -> float | None:
        """When Tune last wrote its experiment snapshot to the storage. The experiment folder is listed until this
        session's snapshot file shows up; from then on that one file is looked at (listing 10 000 trial folders
        takes 24 ms on a local disk, and many requests on S3: every second, that grew with the search)."""
        if self._snapshot_file is not None:
            try:
                info = self.storage.fs.get_file_info(self._snapshot_file)
            except OSError:  # a storage hiccup: check again at a later step
                return None
            if info.mtime is not None:
                return info.mtime.timestamp()
            self._snapshot_file = None  # gone: list again
        try:
            infos = self.storage.fs.get_file_info(pafs.FileSelector(self.exp_path))
        except OSError:
            return None
        newest = max(((i.mtime.timestamp(), i.path) for i in infos
                      if i.base_name.startswith("experiment_state") and i.mtime), default=None)
        if newest is None:
            return None
        if newest[0] >= self._since - CLOCK_MARGIN_S:  # written by this session (an older one stays the newest
            self._snapshot_file = newest[1]  # until a resumed driver's first snapshot)
        return newest[0]

    def _remove(self, path: str, count: bool) -> None:
        self.pending.pop(path, None)
        size = tree_bytes(self.storage.fs, path) if count else 0
        try:
            self.storage.fs.delete_dir(path)
            self.freed += size
        except OSError:  # gone already, or the storage hiccuped: the next run's report shows what is left
            pass

    def _load(self) -> None:
        """The manifest of an earlier run of this experiment (`--resume`), once."""
        if self.kept is not None:
            return
        self.kept = {}
        try:
            old = json.loads(self.storage.read_text(self.manifest_path))
            self.kept, self.freed = old.get("kept", {}), int(old.get("freed_bytes", 0))
        except (OSError, ValueError):
            pass

    def _write(self) -> None:
        manifest = {"keep": self.keep, "limit": self.limit, "state": self.state, "metric": self.metric,
                    "kept": self.kept, "kept_bytes": sum(e["bytes"] for e in self.kept.values()),
                    "freed_bytes": self.freed}
        try:
            self.storage.write_text(self.manifest_path, json.dumps(manifest, indent=1))
        except OSError:
            pass
