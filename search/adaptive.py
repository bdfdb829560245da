"""Adaptive seeds as a Ray Tune `Searcher`: seeds go where a comparison is not settled yet.

Round 1 runs every compared row on the design's `first` seeds. At the end of each round (a *look*) every
comparison "ROW vs REFERENCE" is judged by the group-sequential paired test of `stats.sequential` on the
per-seed differences (seeds both rows have, in seed order): settled (Holm-adjusted repeated p < 0.05), futile, or
at `max`. Each open comparison then gets its next seed on both rows (so pairs stay complete), until none is open,
or the run's budget (trials or trial-hours) is spent; then `suggest` answers `Searcher.FINISHED`. The repeated
p-value is valid whatever decided to stop, so this rule, the budget, and what other rows did keep the error rate.

Tune runs, retries, checkpoints and restores the searcher like any other (`save` / `restore`); with each of
Tune's experiment snapshots (and the last, when the search ends) every look so far is also written to
`seed_looks.json` beside them, which the tables read. It goes through Tune's own snapshot folder: Tune uploads that
folder to the storage, so a file written to the storage directly would be overwritten by a stale copy after
`--resume`. Trials of an
experiment being extended (`--extend`) enter as `prior` results: they count as run and are never rerun.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np

from search.rounds import Cell, RoundSearcher
from stats.paired import paired_differences
from stats.sequential import sequential_table, settled


def paired_diffs(values: dict[str, dict[int, float]], row: str, reference: str, seeds: list[int]) -> list[float]:
    """Per-seed differences row - reference on the design's seeds (ascending, as the design adds them) where both
    have a finite result (stats.paired)."""
    def planned(side: dict[int, float]) -> dict[int, float]:
        return {s: v for s, v in side.items() if s in set(seeds)}

    pairs = paired_differences(planned(values.get(row, {})), planned(values.get(reference, {})))
    return [float(d) for d in pairs.diffs]


class AdaptiveSeeds(RoundSearcher):
    def __init__(self, comparisons: list[tuple[str, str]], seeds: list[int], first: int, metric: str, mode: str,
                 budget: dict[str, float] | None = None, prior: dict[Cell, float] | None = None,
                 margin: float | None = None, family: int | None = None, max_concurrent: int | None = None
                 ) -> None:
        super().__init__(metric, mode, max_concurrent)
        self.family = family  # settle at p < 0.05 / family when the verdicts are adjusted across a larger page
        self.margin = margin  # the spec's equivalence margin on `metric`: equivalence settles a comparison too
        self.comparisons = [tuple(c) for c in comparisons]
        self.seeds, self.first, self.last = list(seeds), first, len(seeds)
        self.budget = dict(budget or {})
        self.values: dict[str, dict[int, float]] = {}  # row -> seed -> final metric (NaN: no completed result)
        for (row, seed), value in (prior or {}).items():
            self.values.setdefault(row, {})[seed] = value
        self.prior = len(prior or {})
        self.looks: list[dict[str, Any]] = []
        self.spent = {"trials": 0, "hours": 0.0}

    # --- Tune's Searcher interface (suggest, on_trial_complete, restore_from_dir: RoundSearcher) ---
    def _completed(self, cell: Cell, result: dict | None, error: bool) -> None:
        ok = not error and result is not None and result.get("status") == "completed"
        value = float(result.get(self.metric, math.nan)) if ok else math.nan
        self.values.setdefault(cell[0], {})[cell[1]] = value
        self.spent["trials"] += 1
        self.spent["hours"] += float((result or {}).get("time_total_s", 0.0) or 0.0) / 3600

    def _uncounted(self, cell: Cell, result: dict) -> None:
        self.values.get(cell[0], {}).pop(cell[1], None)
        self.spent["trials"] -= 1
        self.spent["hours"] -= float(result.get("time_total_s") or 0.0) / 3600

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self._state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        for key, value in state.items():
            setattr(self, key, value)

    def _state(self) -> dict[str, Any]:
        keys = ("comparisons", "seeds", "first", "last", "budget", "margin", "family", "values", "prior", "pending",
                "queue", "done", "looks", "spent", "stopped")
        return {k: getattr(self, k) for k in keys}

    # --- the design ---
    def diffs(self) -> dict[str, list[float]]:
        return {f"{a} vs {b}": paired_diffs(self.values, a, b, self.seeds) for a, b in self.comparisons}

    def _next_cells(self, row: str, reference: str) -> list[Cell]:
        """The first seed either row has not run yet, for both rows (an empty list: no seed left)."""
        for seed in self.seeds:
            todo = [(r, seed) for r in (row, reference) if seed not in self.values.get(r, {})]
            if todo:
                return todo
        return []

    def _look(self) -> None:
        """Judge every comparison on what has run, then queue the next round (or stop). An extended experiment
        whose prior trials already cover the first seeds takes its first look at once."""
        if not self.looks:
            added = self._first_round()
            if added:
                self._record({}, added, f"first round: every compared row on the first {self.first} seeds")
                return
        decisions = settled(self.diffs(), self.first, self.last, margin=self.margin, family=self.family)
        added, reason = self._round(decisions)
        self._record(decisions, added, reason)

    def _first_round(self) -> list[Cell]:
        rows = list(dict.fromkeys(r for pair in self.comparisons for r in pair))
        cells = [(r, s) for s in self.seeds[:self.first] for r in rows if s not in self.values.get(r, {})]
        self.queue = cells
        return cells

    def _round(self, decisions: dict[str, str]) -> tuple[list[Cell], str]:
        hours = self.budget.get("hours")
        if hours is not None and self.spent["hours"] >= hours:
            self.stopped = "budget"
            return [], f"trial-hour budget spent ({self.spent['hours']:.2f} of {hours:g} h)"
        cells: list[Cell] = []
        for (a, b), key in zip(self.comparisons, decisions, strict=True):
            if decisions[key]:
                continue
            new = [c for c in self._next_cells(a, b) if c not in cells]
            if not new:
                decisions[key] = "max"
                continue
            trials = self.budget.get("trials")
            if trials is not None and self.spent["trials"] + len(cells) + len(new) > trials:
                self.stopped = "budget"
                break
            cells += new
        self.queue = cells
        if not cells:
            self.stopped = self.stopped or "settled"
            return [], ("trial budget spent" if self.stopped == "budget" else "every comparison settled, futile "
                        "or at max seeds")
        return cells, "next seed for each open comparison"

    def _record(self, decisions: dict[str, str], added: list[Cell], reason: str) -> None:
        diffs = self.diffs()
        table = sequential_table(diffs, self.first, self.last, self.margin) if diffs else {}
        self.looks.append({
            "look": len(self.looks) + 1, "reason": reason, "trials_spent": self.spent["trials"],
            "trial_hours_spent": round(self.spent["hours"], 4),
            "comparisons": {k: {"seeds": len(diffs[k]), "p_repeated": _num(t["p_repeated"]),
                                "p_holm": _num(t["p_holm"]), "p_equivalence": _num(t["p_equivalence"]),
                                "decision": decisions.get(k, "")}
                            for k, t in table.items()},
            "added": [list(c) for c in added]})

    def looks_document(self) -> dict[str, Any]:
        return {"design": {"first": self.first, "max": self.last, "seeds": self.seeds,
                           "comparisons": [f"{a} vs {b}" for a, b in self.comparisons], "test":
                           "group-sequential paired t (O'Brien-Fleming shape), repeated p, Holm across comparisons",
                           "budget": self.budget, "equivalence_margin": self.margin, "family": self.family},
                "prior_trials": self.prior, "stopped": self.stopped, "looks": self.looks}


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)
