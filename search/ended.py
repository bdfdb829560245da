"""What Tune holds when a search ends, kept for the results table: its trial objects (a public `Callback` hook) and
the per-epoch metrics its ResultGrid has read. The driver builds results.parquet from these instead of reading
Tune's snapshot of every trial and every trial's history back from the storage (the end of a 10 000-trial search,
after Tune's loop: 83 s before, 57 s after; bench.search_overhead, docs/performance.md)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from ray import tune


class EndedTrials(tune.Callback):
    def __init__(self) -> None:
        self.trials: list | None = None  # Tune's Trial objects, once the experiment has ended

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "trials": None}  # never pickled with trials in it

    def on_experiment_end(self, trials: list, **info) -> None:
        self.trials = list(trials)

    def histories(self, grid: tune.ResultGrid | None) -> dict[str, pd.DataFrame] | None:
        """trial_id -> per-epoch metrics, from the grid's results (`Result.path`, `Result.metrics_dataframe`);
        None when this callback did not see the end (after `--resume` Tune runs the callbacks it restored)."""
        if self.trials is None or grid is None:
            return None
        by_path = {result.path: result.metrics_dataframe for result in grid}
        return {t.trial_id: by_path[t.path] for t in self.trials if by_path.get(t.path) is not None}
