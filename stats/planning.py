"""Power and cost of the adaptive-seeds design, by simulation (not the fixed-n formula).

For a comparison with standardised effect d (mean / sd of its per-seed differences), simulate the design that the
adaptive searcher runs: looks at first .. last seeds, a rejection as soon as the repeated p-value falls below the
level (the running maximum of W_n reaches the null table's critical value). Power is the share of runs that
reject; the expected seeds count a rejected run's seeds up to its stopping look and every other run's `last`
(futility stops are non-binding and left out, so this is an upper bound on the cost). Powers at an *observed*
effect are optimistic: the observed effect of a small pilot is biased upwards for the rows that look promising.
"""

from __future__ import annotations

import math

import numpy as np

from stats.inference import POWER
from stats.sequential import null_maxima, standardised

PLAN_DRAWS = 4000
PLAN_SEED = 20261130
MAX_PLANNED = 40  # "more than this many seeds"
TABLE_DRAWS = 50_000  # a plan's null tables: ~180 draws beyond a 0.05 / 14 critical value, plenty for a plan


def design_power(effect: float, first: int, last: int, level: float, draws: int = PLAN_DRAWS) -> tuple[float, float]:
    """(power, expected seeds) of the design (first, last) at standardised effect `effect` and two-sided level."""
    table = null_maxima(first, last, TABLE_DRAWS)
    critical = table[min(math.ceil((1 - level) * len(table)), len(table) - 1)]
    rng = np.random.default_rng(PLAN_SEED)
    w = standardised(rng.standard_normal((draws, last)) + abs(effect), first, last)  # (draws, looks)
    crossed = np.maximum.accumulate(np.nan_to_num(w, nan=-np.inf), axis=1) >= critical
    rejects = crossed.any(axis=1)
    stop = np.where(rejects, first + crossed.argmax(axis=1), last)
    return float(rejects.mean()), float(stop.mean())


def seeds_for_power(effect: float, first: int, level: float, target: float = POWER) -> int | None:
    """The smallest `max` for which the design (first, max) reaches `target` power; None beyond MAX_PLANNED."""
    if not np.isfinite(effect) or effect == 0:
        return None
    if design_power(effect, first, MAX_PLANNED, level)[0] < target:
        return None
    lo, hi = first, MAX_PLANNED  # power grows with max: bisect
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if design_power(effect, first, mid, level)[0] >= target else (mid + 1, hi)
    return lo
