"""Adaptive seeds for a frontier study (`report.frontier` with `seeds: {first, max}`) as a Ray Tune `Searcher`.

1. Tuning: every row (variant x tuned value) runs the tuning seeds.
2. Each variant's value is chosen on those results alone (`stats.frontier.best_row`: the largest hypervolume of
   its mean point), the choice the page makes again from the saved results.
3. The chosen rows run the first `first` comparison seeds; then, look by look, every method is judged against the
   front (`stats.frontier.frontier_verdicts` with the group-sequential tests, Holm across the whole page) and each
   method still unresolved gets its next comparison seed, with the front's rows on that seed where they lack it,
   until every method has a verdict, reaches `max` comparison seeds, or the run's budget is spent.

The repeated p-values stay valid whatever decided to add or stop seeds, and the tuning seeds never compare, so the
page's family-wise error holds (tests/test_frontier.py simulates this whole procedure). The looks are written to
`seed_looks.json` beside Tune's snapshots, as `search.adaptive` does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from mtl.metrics import WORST_VALUES
from search.rounds import Cell, RoundSearcher
from search.trials import Experiment
from stats.frontier import best_row, frontier_verdicts
from stats.pareto import reference_point


class FrontierSeeds(RoundSearcher):
    def __init__(self, rows: Mapping[str, list[str]], front: list[str], tuning_seeds: list[int], seeds: list[int],
                 first: int, objectives: Mapping[str, str], margins: Mapping[str, float], reference: list[float],
                 alpha: float = 0.05, budget: dict[str, float] | None = None, max_concurrent: int | None = None
                 ) -> None:
        """`rows`: declared variant -> its rows (one per tuned value); `seeds`: the comparison seeds, in order."""
        super().__init__(next(iter(objectives)), next(iter(objectives.values())), max_concurrent)
        self.rows, self.front = {k: list(v) for k, v in rows.items()}, list(front)
        self.tuning_seeds, self.seeds, self.first = list(tuning_seeds), list(seeds), first
        self.objectives, self.margins = dict(objectives), dict(margins)
        self.reference, self.alpha, self.budget = list(reference), alpha, dict(budget or {})
        self.values: dict[str, dict[int, dict[str, float]]] = {}  # row -> seed -> objective -> final value
        self.chosen: dict[str, str] = {}  # variant -> its tuned row
        self.looks: list[dict[str, Any]] = []
        self.spent = {"trials": 0, "hours": 0.0}

    @property
    def methods(self) -> list[str]:
        return [v for v in self.rows if v not in self.front]

    # --- Tune's Searcher interface (suggest, on_trial_complete, save, restore: RoundSearcher) ---
    def _completed(self, cell: Cell, result: dict | None, error: bool) -> None:
        ok = not error and result is not None and result.get("status") == "completed"
        self.values.setdefault(cell[0], {})[cell[1]] = {
            m: float(result.get(m, math.nan)) if ok else math.nan for m in self.objectives}
        self.spent["trials"] += 1
        self.spent["hours"] += float((result or {}).get("time_total_s", 0.0) or 0.0) / 3600

    def _uncounted(self, cell: Cell, result: dict) -> None:
        self.values.get(cell[0], {}).pop(cell[1], None)
        self.spent["trials"] -= 1
        self.spent["hours"] -= float(result.get("time_total_s") or 0.0) / 3600

    # --- the design ---
    def _look(self) -> None:
        if not self.looks:
            # a cell already run is not queued again (one a resume adopted from Tune's newer trial list)
            self.queue = [(r, s) for s in self.tuning_seeds for rows in self.rows.values() for r in rows
                          if s not in self.values.get(r, {})]
            self._record(f"tuning: every row on seed(s) {self.tuning_seeds}", None)
        elif not self.chosen:
            self.chosen = {v: self._tuned(rows) for v, rows in self.rows.items()}
            self.queue = [(self.chosen[v], s) for s in self.seeds[:self.first] for v in self.rows
                          if s not in self.values.get(self.chosen[v], {})]
            self._record(f"tuned on seed(s) {self.tuning_seeds}; every chosen row on the first {self.first} "
                         "comparison seeds", None)
        else:
            verdicts = self.verdicts()
            self.queue = self._round(verdicts)
            reason = self.stopped or "next comparison seed for each unresolved method"
            self._record(reason, verdicts)

    def _tuned(self, rows: list[str]) -> str:
        points = {r: [_mean(self.values.get(r, {}), m, self.tuning_seeds) for m in self.objectives]
                  for r in rows}
        return best_row(points, list(self.objectives.values()), self.reference)

    def verdicts(self) -> pd.DataFrame:
        """Each method's verdict on the comparison seeds so far (group-sequential tests, Holm over the page)."""
        values = {v: {m: pd.Series({s: x[m] for s, x in self.values.get(row, {}).items() if s in self.seeds},
                                   dtype=float)
                      for m in self.objectives}
                  for v, row in self.chosen.items()}
        return frontier_verdicts(values, self.methods, self.front, self.objectives, self.margins, self.alpha,
                                 design=(self.first, len(self.seeds)), estimate=False).verdicts

    def _round(self, verdicts: pd.DataFrame) -> list[Cell]:
        hours = self.budget.get("hours")
        if hours is not None and self.spent["hours"] >= hours:
            self.stopped = f"trial-hour budget spent ({self.spent['hours']:.2f} of {hours:g} h)"
            return []
        cells: list[Cell] = []
        for method in self.methods:
            if verdicts.loc[method, "verdict"] != "unresolved":
                continue
            seed = next((s for s in self.seeds if s not in self.values.get(self.chosen[method], {})), None)
            if seed is None:
                continue  # at max
            new = [(self.chosen[v], seed) for v in [method, *self.front]
                   if seed not in self.values.get(self.chosen[v], {}) and (self.chosen[v], seed) not in cells]
            trials = self.budget.get("trials")
            if trials is not None and self.spent["trials"] + len(cells) + len(new) > trials:
                self.stopped = f"trial budget spent ({self.spent['trials']} of {trials:g})"
                break
            cells += new
        if not cells:
            self.stopped = self.stopped or "every method has a verdict or ran the most comparison seeds"
        return cells

    def _record(self, reason: str, verdicts: pd.DataFrame | None) -> None:
        self.looks.append({
            "look": len(self.looks) + 1, "reason": reason, "trials_spent": self.spent["trials"],
            "trial_hours_spent": round(self.spent["hours"], 4), "chosen": dict(self.chosen),
            "verdicts": {} if verdicts is None else {
                m: {"verdict": v["verdict"], "against": v["against"], "pairs": int(v["pairs"]),
                    "p_adj": None if not math.isfinite(v["p_adj"]) else float(v["p_adj"])}
                for m, v in verdicts.iterrows()},
            "added": [list(c) for c in self.queue]})

    def looks_document(self) -> dict[str, Any]:
        return {"design": {"kind": "frontier", "first": self.first, "max": len(self.seeds), "seeds": self.seeds,
                           "tuning_seeds": self.tuning_seeds, "front": self.front, "methods": self.methods,
                           "test": "group-sequential paired t per objective (O'Brien-Fleming shape), "
                                   "intersection-union, Holm across the page", "budget": self.budget,
                           "alpha": self.alpha},
                "stopped": self.stopped, "looks": self.looks}


def _mean(cells: dict[int, dict[str, float]], metric: str, seeds: list[int]) -> float:
    """The mean over the tuning seeds that completed (as the page computes it from the saved results)."""
    values = [cells[s][metric] for s in seeds if s in cells and math.isfinite(cells[s][metric])]
    return sum(values) / len(values) if values else math.nan


def frontier_searcher(exp: Experiment, budget: dict[str, float] | None = None, max_concurrent: int | None = None
                      ) -> FrontierSeeds:
    """The searcher of an experiment with `report.frontier` and adaptive seeds (checked by search.trials)."""
    design, objectives = exp.spec.report.frontier, exp.objectives or {}
    rows = {v["name"]: [r.name for r in exp.rows if r.name == v["name"] or r.name.startswith(f"{v['name']} | ")]
            for v in exp.spec.variants}
    compare = [s for s in exp.seeds if s not in design.tuning_seeds]
    reference = reference_point(objectives, exp.spec.report.reference_point, WORST_VALUES)
    return FrontierSeeds(rows, list(design.front), list(design.tuning_seeds), compare, exp.adaptive.first,
                         objectives, design.margin, reference, design.alpha, budget, max_concurrent)
