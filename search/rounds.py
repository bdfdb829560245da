"""Searchers that run (row, seed) cells from a queue, and keep in step with Tune's trials across `--resume`.

Tune saves its experiment in separate files - the trial list, then the searcher's state - and uploads them one
after the other. A driver that dies between the two uploads (a lost head node, a killed laptop) leaves a searcher
that is one step ahead of the trial list, or behind it: after `--resume` the searcher waits for a trial Tune never
heard of (the search hangs, or a row is silently never run), or suggests a cell whose trial Tune already has (the
row runs twice). Each `RoundSearcher` therefore reconciles itself on restore with the trials Tune restored, read
through Tune's public `ExperimentAnalysis` from the snapshot Tune restored: a cell whose trial Tune lost is queued
again (what it had counted taken back), a trial it did not know is taken as its own (and, when finished,
counted). The concurrency cap lives here too, not in Tune's `ConcurrencyLimiter`, whose own saved set of running
trials could disagree the same way. Not covered: Tune's own `SearchGenerator` keeps a "finished" flag in a third
file; a driver killed while saving the very last snapshot could leave it set over a lost cell.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from dataclasses import dataclass
from typing import Any

from ray.tune import ExperimentAnalysis
from ray.tune.search import Searcher

from core.layout import LOOKS_FILE

Cell = tuple[str, int]  # (row, seed)
PENDING_TRIALS_ENV = "TUNE_MAX_PENDING_TRIALS_PG"  # Tune's documented knob: trials it asks a searcher for at once


@dataclass(frozen=True)
class RestoredTrial:
    """A trial of Tune's restored experiment, as a cell searcher sees it."""
    trial_id: str
    cell: Cell
    finished: bool  # TERMINATED: Tune will not run it again (errored trials are resumed, so they are unfinished)
    last_result: dict[str, Any]


def restored_trials(checkpoint_dir: str) -> list[RestoredTrial]:
    """The trials of the snapshot `Tuner.restore` has just restored: Tune copies the experiment's snapshots into
    `checkpoint_dir` (its driver folder) before it restores the searcher from there, and restores the newest, as
    `ExperimentAnalysis` reads it. No trial's results are needed (the folder holds none: Tune's warning about
    that is muted)."""
    log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        analysis = ExperimentAnalysis(checkpoint_dir)
    finally:
        log.setLevel(level)
    return [RestoredTrial(t.trial_id, (str(t.config["variant"]), int(t.config["seed"])), t.status == "TERMINATED",
                          dict(t.last_result or {})) for t in analysis.trials]


class RoundSearcher(Searcher):
    """Runs queued (row, seed) cells: when the queue and the running cells are empty, `_look()` fills the queue
    with the next round, or sets `stopped`; Tune is then told the search is finished. With `looks_document()`,
    every look is written beside Tune's snapshots."""

    queue: list[Cell]
    pending: dict[str, Cell]  # trial_id -> its cell, suggested and not back yet
    done: dict[str, tuple[Cell, dict]]  # trial_id -> its cell and the time it spent, counted as back
    stopped: str | None
    max_concurrent: int | None = None  # at most this many cells pending at once (None: as many as Tune asks for)

    def __init__(self, metric: str | None, mode: str | None, max_concurrent: int | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        self.max_concurrent = max_concurrent
        self.queue, self.pending, self.done, self.stopped = [], {}, {}, None

    def _look(self) -> None:
        raise NotImplementedError

    def _completed(self, cell: Cell, result: dict | None, error: bool) -> None:
        """A suggested cell's trial is back (its last result; error: it failed)."""

    def _uncounted(self, cell: Cell, result: dict) -> None:
        """Take back what `_completed` counted for a trial Tune's restored list lost (its cell runs again)."""

    def looks_document(self) -> dict[str, Any] | None:
        return None

    # --- Tune's Searcher interface ---
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        return True  # the metric is fixed by the experiment; rows and seeds come from this searcher

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.max_concurrent and len(self.pending) >= self.max_concurrent:
            return None
        if not self.queue and not self.pending and self.stopped is None:
            self._look()
        if self.queue:
            cell = self.queue.pop(0)
            self.pending[trial_id] = cell
            return {"variant": cell[0], "seed": cell[1]}
        return Searcher.FINISHED if not self.pending and self.stopped is not None else None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        cell = self.pending.pop(trial_id, None)
        if cell is None:
            return
        self.done[trial_id] = (cell, {"time_total_s": (result or {}).get("time_total_s")})
        self._completed(cell, result, error)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__.copy(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        super().restore_from_dir(checkpoint_dir)
        if not isinstance(self.__dict__.get("done"), dict):  # a state saved before `done` was kept
            self.done = {}
        try:  # never raise here: Tune would log it and start the whole experiment over
            changes = self.reconcile(restored_trials(checkpoint_dir))
        except Exception as e:
            print(f"warning: resume: could not compare the search state with Tune's restored trials ({e!r}); "
                  "continuing with the search state as saved", flush=True)
            return
        if any(changes.values()):
            print(f"resume: Tune's saved trial list and search state disagreed (a driver stopped between saving "
                  f"the two): {len(changes['requeued'])} cell(s) whose trial was lost queued again, "
                  f"{len(changes['adopted'])} trial(s) taken over, {len(changes['counted'])} finished trial(s) "
                  "counted", flush=True)

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        super().save_to_dir(checkpoint_dir, session_str)
        document = self.looks_document()
        if document is not None:  # a grid has no looks
            with open(os.path.join(checkpoint_dir, LOOKS_FILE), "w") as f:
                json.dump(document, f, indent=1)

    def reconcile(self, trials: list[RestoredTrial]) -> dict[str, list[str]]:
        """Bring this (restored) searcher in step with Tune's restored trials; what changed, for the log."""
        known = {t.trial_id for t in trials}
        changes: dict[str, list[str]] = {"requeued": [], "adopted": [], "counted": []}
        for trial_id in [t for t in self.pending if t not in known]:  # suggested, but Tune's snapshot lost it
            self.queue.insert(0, self.pending.pop(trial_id))
            changes["requeued"].append(trial_id)
        for trial_id in [t for t in self.done if t not in known]:  # even counted: its results are not Tune's
            cell, result = self.done.pop(trial_id)
            self._uncounted(cell, result)
            self.queue.insert(0, cell)
            changes["requeued"].append(trial_id)
        for t in trials:
            if t.trial_id in self.done:
                continue
            if t.trial_id not in self.pending:  # Tune knows a trial this searcher's state had not suggested yet
                if t.cell in self.queue:
                    self.queue.remove(t.cell)
                self.pending[t.trial_id] = t.cell
                changes["adopted"].append(t.trial_id)
            if t.finished:  # it came back after the lost driver's last searcher state was saved
                self.on_trial_complete(t.trial_id, t.last_result)
                changes["counted"].append(t.trial_id)
        return changes


class GridCells(RoundSearcher):
    """Every (row, seed) of a grid in Tune's grid order (rows, then seeds), at most `max_concurrent` at once: the
    searcher of a grid with a concurrency cap, so that `--resume` reconciles it with Tune's restored trials (Tune's
    own grid generator, capped, cannot be: a cell it generated and the lost trial list never saw is never run)."""

    def __init__(self, rows: list[str], seeds: list[int], max_concurrent: int | None) -> None:
        super().__init__(None, None, max_concurrent)
        self.queue = [(r, s) for r in rows for s in seeds]

    def _look(self) -> None:
        self.stopped = "every cell ran"


def pending_trials_env(max_concurrent: int | None) -> dict[str, str]:
    """Tune asks a searcher of its own for one trial at a time unless told otherwise (it looks for a
    ConcurrencyLimiter): a capped cell searcher is asked for as many as its cap, as the limiter was. Nothing when
    the user set Tune's variable."""
    if not max_concurrent or PENDING_TRIALS_ENV in os.environ:
        return {}
    return {PENDING_TRIALS_ENV: str(max_concurrent)}
