"""`--dry-run --plan-from PILOT` for a frontier study: the trials and trial-hours its adaptive seeds will need.

From a pilot (an earlier run of the same variants, any seeds: its per-trial results only) each variant's row is
tuned as the search will tune it (`stats.frontier.best_row` on the tuning seeds), and each method's most promising
route to a verdict against each weighted sum is read off the pilot's paired differences: dominating it or being
dominated (the weakest objective's standardised effect) or being equivalent (the objective closest to its margin).
The power and expected seeds of the design (first .. max comparison seeds) at that effect, at the level Holm's
first step gives the page's family, come from `stats.planning` (a simulation of the group-sequential test; one-sided
at alpha as two-sided at 2 alpha). Powers at an observed effect are optimistic.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from core.saved import read_saved
from mtl.metrics import WORST_VALUES
from search.spec import SpecError
from search.trials import Experiment
from stats.frontier import best_row
from stats.paired import paired_differences
from stats.pareto import reference_point
from stats.planning import design_power


def _tuned(done: pd.DataFrame, exp: Experiment, variant: str, tuning: list[int]) -> pd.DataFrame:
    mine = done[(done["variant"] == variant) | done["variant"].str.startswith(f"{variant} | ")]
    if mine.empty:
        return mine
    pool = mine[mine["seed"].isin(tuning)] if mine["seed"].isin(tuning).any() else mine
    points = {r: p[list(exp.objectives)].astype(float).mean().tolist() for r, p in pool.groupby("variant")}
    ref = reference_point(exp.objectives, exp.spec.report.reference_point, WORST_VALUES)
    row = best_row(points, list(exp.objectives.values()), ref)
    return mine[(mine["variant"] == row) & ~mine["seed"].isin(tuning)]


def _route(m: pd.DataFrame, w: pd.DataFrame, objectives: dict[str, str], margins: dict[str, float]
           ) -> tuple[str, float]:
    """The test most likely to settle m against w, with its standardised effect."""
    effects: dict[str, list[float]] = {"beats": [], "behind": [], "on the front": []}
    for name, direction in objectives.items():
        d = paired_differences(m.set_index("seed")[name], w.set_index("seed")[name]).diffs
        d = d if direction == "max" else -d
        sd = float(np.std(d, ddof=1)) if len(d) >= 2 else math.nan
        if not sd > 0:
            return "", math.nan
        effects["beats"].append(d.mean() / sd)
        effects["behind"].append(-d.mean() / sd)
        effects["on the front"].append((margins[name] - abs(d.mean())) / sd)
    weakest = {k: min(v) for k, v in effects.items()}
    best = max(weakest, key=weakest.get)
    return best, weakest[best]


def frontier_plan(exp: Experiment, uri: str) -> str:
    if exp.adaptive is None:
        raise SpecError("--plan-from: plans a frontier study's adaptive seeds; give the spec `seeds: {first, max}` "
                        "or --seeds first=3,max=8")
    try:
        pilot = read_saved(uri)
    except (OSError, ValueError) as e:
        raise SpecError(f"--plan-from {uri}: {e}") from None
    fb, design = exp.spec.report.frontier, exp.adaptive
    done = pilot.frame[pilot.frame["status"] == "completed"]
    chosen = {v["name"]: _tuned(done, exp, v["name"], fb.tuning_seeds) for v in exp.spec.variants}
    methods = [v for v in chosen if v not in fb.front]
    family = 3 * len(methods) * len(fb.front)
    lines, expected = [], {}
    for m in methods:
        routes = [(w, *_route(chosen[m], chosen[w], exp.objectives, fb.margin)) for w in fb.front]
        routes = [r for r in routes if np.isfinite(r[2])]
        if not routes:
            expected[m] = float(design.max)
            lines.append({"method": m, "route": "— (no paired pilot seeds)", "effect": "—", "power": "—",
                          "expected seeds": f"{design.max}"})
            continue
        w, route, effect = max(routes, key=lambda r: r[2])
        power, seeds = design_power(max(effect, 0.0), design.first, design.max, 2 * fb.alpha / family)
        expected[m] = seeds
        lines.append({"method": m, "route": f"{route} vs {w}", "effect": f"{effect:+.2f}", "power": f"{power:.2f}",
                      "expected seeds": f"{seeds:.1f}"})
    return _text(exp, pilot.frame, pd.DataFrame(lines), expected, family)


def _text(exp: Experiment, frame: pd.DataFrame, table: pd.DataFrame, expected: dict[str, float], family: int
          ) -> str:
    fb, design = exp.spec.report.frontier, exp.adaptive
    front_seeds = max(expected.values(), default=float(design.max))  # the front runs every seed a method needs
    tuning = len(exp.rows) * len(fb.tuning_seeds)
    trials = tuning + sum(expected.values()) + len(fb.front) * front_seeds
    seconds = float(pd.to_numeric(frame.get("train_time_s"), errors="coerce").mean())
    hours = trials * seconds / 3600 if np.isfinite(seconds) else math.nan
    return "\n".join([
        f"frontier plan from {len(frame)} pilot trial(s): {len(fb.front)} weighted sums, "
        f"{len(exp.spec.variants) - len(fb.front)} methods, comparison seeds first {design.first}, max {design.max}; "
        f"each test at the repeated p < {fb.alpha:g} / {family} (Holm's first step over the page)",
        table.to_markdown(index=False, disable_numparse=True),
        f"expected: ~{trials:.0f} trials ({tuning} tuning; at most {exp.trial_count()}), ~{hours:.2f} trial-hours at "
        "the pilot's mean trial time; power at an observed effect is optimistic (a pilot's promising effects are "
        "biased upwards)"])
