"""Multi-objective, seed-aware ASHA: the rungs of search.schedulers.SeedAwareASHAScheduler, with rows ranked by
non-dominated sorting instead of one metric (as Syne Tune's MO-ASHA does, here on a row's seed means).

At a rung, a row's mean over its seeds is a point in objective space. Among the rows decided at that rung so far
(and this one), points are ordered by their Pareto rank (moocore's non-dominated sorting: the front first), and
within a front by their hypervolume contribution (a point that adds more to the front's hypervolume goes first;
the reference point is just beyond the worst values seen at the rung). The row continues when its place is within
the top 1 / reduction_factor of that order, as ASHA keeps the top 1 / reduction_factor of one metric; the first
row at a rung always continues. A row without a score (NaN in any objective) ranks last. Sampled searches (Optuna,
random) rank trials: `group_by="trial_id"`. The rungs go to the experiment's storage after every decision, as for
seed-aware ASHA, so `--resume` reads them back.
"""

from __future__ import annotations

import math

import numpy as np
from ray.tune.experiment import Trial

from search.schedulers import SeedAwareASHAScheduler
from stats.pareto import hv_contributions, pareto_ranks


def pareto_order(points: np.ndarray) -> list[int]:
    """Indices of (n, K) points in "max" terms (larger is better on every objective; -inf: no score), best first:
    by Pareto rank, then by hypervolume contribution within a front, then by index (the earlier row first)."""
    finite = np.isfinite(points).all(axis=1)
    directions = ["max"] * points.shape[1]
    ranks = pareto_ranks(np.where(finite[:, None], points, np.nan), directions)
    contrib = np.zeros(len(points))
    if finite.any():
        worst = points[finite].min(axis=0)
        span = np.maximum(points[finite].max(axis=0) - worst, 1e-12)
        reference = worst - 0.1 * span  # just beyond the worst point: every front point contributes
        contrib[finite] = hv_contributions(points[finite], directions, reference)
    return sorted(range(len(points)), key=lambda i: (not finite[i], ranks[i], -contrib[i], i))


class ParetoASHAScheduler(SeedAwareASHAScheduler):
    def __init__(self, objectives: dict[str, str], seeds: int, max_t: int, grace_period: int = 1,
                 reduction_factor: float = 3.0, group_by: str = "variant", state_file: tuple | None = None) -> None:
        self.objectives = dict(objectives)
        first = next(iter(self.objectives))
        super().__init__(seeds=seeds, max_t=max_t, grace_period=grace_period, reduction_factor=reduction_factor,
                         metric=first, mode=self.objectives[first], group_by=group_by, state_file=state_file)

    def _row(self, trial: Trial) -> str:
        return trial.trial_id if self.group_by == "trial_id" else super()._row(trial)

    def _score(self, result: dict) -> tuple[float, ...]:
        """The result in "max" terms, one entry per objective; no score anywhere: -inf everywhere."""
        values = []
        for name, direction in self.objectives.items():
            value = float(result.get(name, math.nan))
            values.append(value if direction == "max" else -value)
        return tuple(values) if all(math.isfinite(v) for v in values) else (-math.inf,) * len(values)

    def _decide(self, rung: float, row: str, force: bool = False) -> None:
        seen = self.values[rung][row]
        if row in self.decided[rung] or (len(seen) < self.seeds and not force):
            return  # wait for every seed of the row at this rung
        mean = tuple(float(v) for v in np.mean(np.array(list(seen.values()), dtype=float), axis=0))
        others = list(self.decided[rung].values())
        self.decided[rung][row] = mean
        if others:
            order = pareto_order(np.array([*others, mean], dtype=float))
            keep = max(1, math.ceil((len(others) + 1) / self.rf))
            if order.index(len(others)) >= keep:
                self.stopped_rows[row] = rung
        self._save()

    def _state(self) -> dict:
        def plain(v) -> list:
            return [x if math.isfinite(x) else str(x) for x in v]

        return {"values": {str(r): {row: {t: plain(v) for t, v in seen.items()} for row, seen in rows.items()}
                           for r, rows in self.values.items()},
                "decided": {str(r): {row: plain(v) for row, v in rows.items()} for r, rows in self.decided.items()},
                "stopped_rows": self.stopped_rows}

    def _restore_state(self, state: dict) -> None:
        for rung, rows in state["values"].items():
            for row, seen in rows.items():
                self.values[float(rung)][row] = {t: tuple(float(x) for x in v) for t, v in seen.items()}
        for rung, rows in state["decided"].items():
            self.decided[float(rung)] = {row: tuple(float(x) for x in v) for row, v in rows.items()}
        self.stopped_rows = {row: float(r) for row, r in state["stopped_rows"].items()}

    def debug_string(self) -> str:
        return (f"Pareto ASHA on {', '.join(f'{k} ({v})' for k, v in self.objectives.items())}: rungs {self.rungs}, "
                f"{len(self.stopped_rows)} row(s) stopped")
