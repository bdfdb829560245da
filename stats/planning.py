"""Power and cost of the adaptive-seeds design, by simulation (not the fixed-n formula).

For a comparison with standardised effect d (mean / sd of its per-seed differences), simulate the design that the
adaptive searcher runs: looks at first .. last seeds, a rejection as soon as the repeated p-value falls below the
level (the running maximum of W_n reaches the null table's critical value), and a stop for futility past the
first look (fixed-n p > 0.5, as the Searcher does: such a run never rejects later). Power is the share of runs
that reject; the expected seeds count each run's seeds up to its stopping look. Powers at an *observed* effect are
optimistic: the observed effect of a small pilot is biased upwards for the rows that look promising.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from stats.inference import POWER
from stats.sequential import FUTILITY_P, null_maxima, prefix_t, standardised

PLAN_DRAWS = 4000
PLAN_SEED = 20261130
MAX_PLANNED = 40  # "more than this many seeds"
TABLE_DRAWS = 50_000  # a plan's null tables: ~180 draws beyond a 0.05 / 14 critical value, plenty for a plan


def _simulate(effect: float, first: int, last: int, level: float, draws: int) -> tuple[np.ndarray, np.ndarray]:
    """Per simulated run of the design (first, last) at standardised effect `effect` and two-sided level: whether it
    rejects, and the look index (0: `first` seeds) at which it stops."""
    table = null_maxima(first, last, TABLE_DRAWS)
    critical = table[min(math.ceil((1 - level) * len(table)), len(table) - 1)]
    rng = np.random.default_rng(PLAN_SEED)
    d = rng.standard_normal((draws, last)) + abs(effect)
    w = standardised(d, first, last)  # (draws, looks)
    crossed = np.nan_to_num(w, nan=-np.inf) >= critical  # the running maximum crosses where W_n first does
    futile = _fixed_p(d, first, last) > FUTILITY_P
    futile[:, 0] = False  # futility only past the first look
    big = last - first + 1
    cross_at = np.where(crossed.any(axis=1), crossed.argmax(axis=1), big)
    futile_at = np.where(futile.any(axis=1), futile.argmax(axis=1), big)
    rejects = cross_at < futile_at  # a look that crosses is judged before its futility check
    return rejects, np.minimum(np.minimum(cross_at, futile_at), big - 1)


def design_power(effect: float, first: int, last: int, level: float, draws: int = PLAN_DRAWS) -> tuple[float, float]:
    """(power, expected seeds) of the design (first, last) at standardised effect `effect` and two-sided level."""
    rejects, stop = _simulate(effect, first, last, level, draws)
    return float(rejects.mean()), float(first + stop.mean())


def seeds_within(effect: float, first: int, last: int, level: float, target: float = POWER) -> int | None:
    """For a row already in the design (first, last): the fewest seeds by whose look it rejects with probability
    `target`; None when even `last` seeds do not reach it (then only a new study can). Simplified: the runs start
    from the first look at the observed effect (not conditional on the seeds already seen), futility is on even
    where the Searcher turns it off (a comparison with a margin) and equivalence stops are left out."""
    if not np.isfinite(effect) or effect == 0:
        return None
    rejects, stop = _simulate(effect, first, last, level, PLAN_DRAWS)
    by_look = np.array([(rejects & (stop <= k)).mean() for k in range(last - first + 1)])
    enough = np.flatnonzero(by_look >= target)
    return int(first + enough[0]) if enough.size else None


def _fixed_p(d: np.ndarray, first: int, last: int) -> np.ndarray:
    """The two-sided fixed-n paired t p of the first n differences, for n = first .. last: (draws, looks)."""
    n, t = prefix_t(d)
    looks = slice(first - 1, last)
    return 2 * special.stdtr((n - 1)[looks], -np.abs(t[..., looks]))


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
