"""A group-sequential paired t-test for adding seeds round by round, with its error rate controlled by design.

Looking at a comparison after every new seed and testing again ("peeking") inflates false positives: with 4 rows,
looks at 3..8 seeds and a plain paired t + Holm at every look, about 15 % of null tables show a false positive at
the 5 % level. The design here fixes, before the first trial, the looks (n = first .. max seeds) and an
O'Brien-Fleming-shaped boundary, and turns what was seen into a *repeated p-value* that stays valid whatever rule
decided to stop or continue (a row settled, a budget spent, what other rows did):

- at look n the paired t statistic of the per-seed differences, T_n, is mapped to the normal scale,
  z_n = Φ⁻¹(F_t(|T_n|; n − 1)), and standardised by the O'Brien-Fleming shape: W_n = z_n · sqrt(n / max);
- M = the largest W_n over every planned look. Under the null the differences are i.i.d. N(0, σ²) and T_n does
  not depend on σ, so M's null distribution is the same for every row and noise level: a Monte-Carlo table of it
  (fixed RNG seed, 200 000 draws: its own error on a 5 % tail is ±0.1 %) is exact up to that error, and is
  computed once per (first, max) and cached;
- the repeated p-value of the looks taken so far is P₀(M ≥ max of the W_n seen). Had the row gone on to `max`,
  its M could only be larger, so P(p ≤ α) ≤ α under the null for any stopping rule;
- Holm across a table's rows on the repeated p-values.

A row that cannot reach significance may stop early for futility (non-binding: stopping never adds a rejection).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
from scipy import special

from stats.inference import ALPHA, compare, holm
from stats.paired import paired_differences

NULL_DRAWS = 200_000
NULL_SEED = 20261130


def prefix_t(diffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, T_n): the one-sample t statistic of the first n differences along the last axis (…, seeds), for every
    n = 1 .. seeds; NaN where they have no variance."""
    d = np.asarray(diffs, float)
    n = np.arange(1, d.shape[-1] + 1)
    mean = np.cumsum(d, axis=-1) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (np.cumsum(d * d, axis=-1) - n * mean * mean) / np.maximum(n - 1, 1)
        return n, mean / np.sqrt(np.maximum(var, 0) / n)


def standardised(diffs: np.ndarray, first: int, last: int, sided: int = 2) -> np.ndarray:
    """W_n for n = first .. min(len, last) along the last axis of `diffs` (…, seeds): z of the paired t statistic
    of the first n differences (two-sided: of |T|; one-sided: of T, for "mean > 0"), times sqrt(n / last). NaN
    where the differences have no variance."""
    n, t = prefix_t(diffs)
    t = np.abs(t) if sided == 2 else t
    looks = slice(first - 1, min(len(n), last))
    df = (n - 1)[looks]
    # the t statistic's tail probability, then the z with the same tail (two-sided: the two-sided p's z); scipy's
    # special functions give the same values as stats.t.sf / stats.norm.isf at ~1/25 of the call cost, which the
    # Searcher's looks and the whole-page simulations pay thousands of times
    z = -special.ndtri(special.stdtr(df, -t[..., looks]))
    return z * np.sqrt(n[looks] / last)


@functools.cache
def null_maxima(first: int, last: int, draws: int = NULL_DRAWS, sided: int = 2) -> np.ndarray:
    """Sorted null draws of M = max over the planned looks of W_n (normal differences; the t path does not depend
    on the noise level)."""
    if not 2 <= first <= last:
        raise ValueError(f"need 2 <= first <= max seeds, got first={first}, max={last}")
    rng = np.random.default_rng(NULL_SEED)
    out = np.empty(draws)
    for start in range(0, draws, 50_000):  # in blocks: bounded memory
        block = rng.standard_normal((min(50_000, draws - start), last))
        out[start:start + len(block)] = np.nanmax(standardised(block, first, last, sided), axis=-1)
    return np.sort(out)


def repeated_p(diffs, first: int, last: int, sided: int = 2) -> float:
    """The repeated p-value of the looks taken (first .. len(diffs) seeds) under the design (first, last);
    `sided=1` tests "mean > 0" against "mean <= 0"."""
    d = np.asarray(diffs, float)
    if len(d) < first:
        return math.nan
    w = standardised(d, first, last, sided)
    if not np.isfinite(w).any():
        return math.nan  # no variance at any look: no test
    table = null_maxima(first, last, sided=sided)
    exceed = len(table) - np.searchsorted(table, np.nanmax(w), side="left")
    return float((exceed + 1) / (len(table) + 1))


def equivalence_p(diffs, margin: float, first: int, last: int) -> float:
    """Two one-sided sequential tests (TOST) of "|mean| < margin": the larger of the repeated p-values of
    "mean > -margin" and "mean < +margin". Under either boundary the shifted differences are a null t path, so
    the same tables apply and the error rate holds whatever decided to stop."""
    d = np.asarray(diffs, float)
    if not margin > 0:
        return math.nan
    return max(repeated_p(d + margin, first, last, sided=1), repeated_p(margin - d, first, last, sided=1))


def sequential_table(diffs: dict[str, list[float]], first: int, last: int, margin: float | None = None
                     ) -> dict[str, dict[str, float]]:
    """Per row: seeds used, repeated p and Holm-adjusted repeated p across the rows; with an equivalence margin
    also the TOST repeated p, Holm-adjusted across the rows (its own family: the other question)."""
    rows = list(diffs)
    raw = [repeated_p(diffs[r], first, last) for r in rows]
    adjusted = holm(raw)
    tost = [equivalence_p(diffs[r], margin, first, last) if margin else math.nan for r in rows]
    tost_adj = holm(tost)
    return {r: {"seeds": len(diffs[r]), "p_repeated": p, "p_holm": a, "p_equivalence": e, "p_equivalence_holm": ea}
            for r, p, a, e, ea in zip(rows, raw, adjusted, tost, tost_adj, strict=True)}


FUTILITY_P = 0.5  # a row past its first look whose fixed-n two-sided p exceeds this stops (non-binding)


def fixed_p(diffs) -> float:
    """The two-sided one-sample (paired) t-test p of the differences, as scipy.stats.ttest_1samp gives it."""
    d = np.asarray(diffs, float)
    n = len(d)
    sd = d.std(ddof=1) if n >= 2 else math.nan
    if not sd > 0:
        return math.nan
    return float(2 * special.stdtr(n - 1, -abs(d.mean()) / (sd / math.sqrt(n))))


def futile(diffs, first: int, last: int, threshold: float = FUTILITY_P) -> bool:
    """Non-binding futility: past the first look, a row whose two-sided fixed-n p exceeds `threshold` stops."""
    d = np.asarray(diffs, float)
    if len(d) <= first:
        return False
    p = fixed_p(d)
    return bool(np.isfinite(p) and p > threshold)


def settled(diffs: dict[str, list[float]], first: int, last: int, alpha: float = ALPHA,
            margin: float | None = None, family: int | None = None) -> dict[str, str]:
    """Per row: 'resolved' (Holm-adjusted repeated p < alpha), 'equivalent' (with a margin: Holm-adjusted TOST
    p < alpha), 'futile' (only without a margin: with one, a small difference is what equivalence needs), 'max'
    (reached the last look) or '' (give it one more seed). With `family` (tests of a larger page), a row is settled
    at raw p < alpha / family instead."""
    table = sequential_table(diffs, first, last, margin)
    keys = ("p_holm", "p_equivalence_holm") if family is None else ("p_repeated", "p_equivalence")
    level = alpha if family is None else alpha / family
    out = {}
    for row, r in table.items():
        if np.isfinite(r[keys[0]]) and r[keys[0]] < level:
            out[row] = "resolved"
        elif np.isfinite(r[keys[1]]) and r[keys[1]] < level:
            out[row] = "equivalent"
        elif len(diffs[row]) >= last:
            out[row] = "max"
        elif not margin and futile(diffs[row], first, last):
            out[row] = "futile"
        else:
            out[row] = ""
    return out


def repeated_ci(diffs, first: int, last: int, alpha: float = ALPHA) -> tuple[float, float]:
    """The repeated confidence interval: every shift δ whose repeated p-value of (diffs − δ) is ≥ alpha. Valid
    at whatever look the data stopped, as the repeated p is. Each look's |t| is V-shaped in δ around that look's
    running mean, so the accepted shifts are the intersection of one interval per look: an interval, which need not
    hold the overall mean. Its centre comes from that closed form (the table's critical value); its ends are then
    found by bisection on the repeated p itself. (NaN, NaN): no shift is accepted, the interval is empty."""
    d = np.asarray(diffs, float)
    if len(d) < max(first, 2) or not d.std() > 0:
        return math.nan, math.nan

    def inside(delta: float) -> bool:
        return repeated_p(d - delta, first, last) >= alpha

    centre = next((c for c in (*_closed_form_centre(d, first, last, alpha), float(d.mean())) if inside(c)), None)
    if centre is None:
        return math.nan, math.nan
    width = float(d.std(ddof=1)) * 50 + 1e-12
    bounds = []
    for sign in (-1, 1):
        lo, hi = 0.0, width
        while inside(centre + sign * hi) and hi < 1e6 * width:  # widen until outside
            hi *= 2
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if inside(centre + sign * mid) else (lo, mid)
        bounds.append(centre + sign * lo)
    return bounds[0], bounds[1]


def _closed_form_centre(d: np.ndarray, first: int, last: int, alpha: float) -> list[float]:
    """The midpoint of the intersection of the per-look intervals mean_n ± t*_n s_n / sqrt(n), with t*_n the |t| at
    which W_n reaches the null table's (1 - alpha) quantile; [] when the intersection is empty."""
    table = null_maxima(first, last)
    c = float(table[min(math.ceil((1 - alpha) * len(table)), len(table) - 1)])
    lo, hi = -math.inf, math.inf
    for n in range(first, min(len(d), last) + 1):
        x = d[:n]
        sd = float(x.std(ddof=1))
        if not sd > 0:
            continue
        tail = float(special.ndtr(-c * math.sqrt(last / n)))  # the one-sided normal tail W_n = c corresponds to
        t_star = float(-special.stdtrit(n - 1, tail))
        half = t_star * sd / math.sqrt(n)
        lo, hi = max(lo, float(x.mean()) - half), min(hi, float(x.mean()) + half)
    return [(lo + hi) / 2] if lo <= hi and math.isfinite(lo) and math.isfinite(hi) else []


def sequential_compare(variant: pd.Series, baseline: pd.Series, first: int, last: int,
                       margin: float | None = None) -> dict[str, float | str | int]:
    """What `stats.inference.compare` reports, for a pair whose seeds were added by the adaptive design: the paired
    differences in seed order on the seeds both sides have, the repeated p-value and repeated 95 % CI of the
    group-sequential test, and with a margin the TOST repeated p."""
    pairs = paired_differences(variant, baseline)
    d = pairs.diffs
    low, high = repeated_ci(d, first, last)
    sd = float(d.std(ddof=1)) if len(d) >= 2 else math.nan
    return {"test": f"group-sequential paired t (looks {first}..{last})", "n_pairs": len(d),
            "delta": float(d.mean()) if len(d) else math.nan, "delta_ci_low": low, "delta_ci_high": high,
            "p_value": repeated_p(d, first, last), "effect_size": float(d.mean()) / sd if sd else math.nan,
            "p_equivalence": equivalence_p(d, margin, first, last) if margin else math.nan,
            "design_first": first, "design_max": last,  # the design, carried with the result: no label parsing
            "dropped_seeds": pairs.dropped_text()}


def pair_test(variant: pd.Series, baseline: pd.Series, design: dict | None, margin: float | None = None
              ) -> dict[str, float | str | int]:
    """The test a pair's design calls for: the group-sequential one when its seeds were added adaptively (`design`:
    the record's {first, max}), else the fixed-n paired t of `stats.inference.compare`; with a margin also the TOST
    p (for a fixed design, its single look)."""
    if design:
        return sequential_compare(variant, baseline, design["first"], design["max"], margin)
    out = compare(variant, baseline, power=True)
    out["p_equivalence"] = math.nan
    if margin and out["test"] == "paired t":
        d = paired_differences(variant, baseline).diffs
        out["p_equivalence"] = equivalence_p(d, margin, len(d), len(d))
    return out
