"""The statistics of an ablation table: Δ tests (paired when seeds pair up, Welch otherwise), Holm–Bonferroni
across a table's variants, power (seeds needed), and trends along ordered numeric axes.

Trials of two variants with the same seed share initialisation and data order, so the per-seed difference
removes the seed's shared part of the noise: with every seed present on both sides the paired t-test is used.
Trends are OLS fits of a metric on the axis (log10 for rates); when every seed has every row, the seed enters
as a block (fixed effect), the regression analogue of pairing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.power import TTestIndPower, TTestPower

from stats.paired import paired_differences

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 1000  # "more than this" for seeds-needed estimates
LOG_AXES = {"lr", "weight_decay"}


def _nan_result(test: str, n: int) -> dict[str, float | str | int]:
    return {"test": test, "n_pairs": n, "delta": math.nan, "delta_ci_low": math.nan, "delta_ci_high": math.nan,
            "p_value": math.nan, "seeds_needed": math.nan, "effect_size": math.nan, "dropped_seeds": ""}


def power_curve(effect_size: float, paired: bool, alpha: float = ALPHA) -> np.ndarray:
    """Power of the two-sided t-test at n = 2 .. MAX_SEEDS seeds per side, monotone in n. The noncentral t of
    statsmodels / scipy returns NaN where the noncentrality is large (power ~ 1 there): those points fall back to
    the normal approximation, and a running maximum removes the numerical wiggles that remain."""
    n = np.arange(2, MAX_SEEDS + 1)
    d = abs(effect_size)
    if paired:
        power = np.asarray(TTestPower().power(effect_size=d, nobs=n, alpha=alpha), float)
        nc, df = d * np.sqrt(n), n - 1
    else:
        power = np.asarray(TTestIndPower().power(effect_size=d, nobs1=n, alpha=alpha, ratio=1.0), float)
        nc, df = d * np.sqrt(n / 2), 2 * n - 2
    normal = stats.norm.sf(stats.t.ppf(1 - alpha / 2, df) - nc)
    power = np.where(np.isfinite(power), power, normal)
    return np.maximum.accumulate(power)


def seeds_needed(effect_size: float, paired: bool, alpha: float = ALPHA) -> float:
    """Seeds per variant at which the test reaches 80 % power at this standardised effect (Cohen's d) and this
    two-sided level - the level the verdict uses (a Holm family of m needs alpha / m at its first step); inf
    beyond MAX_SEEDS."""
    if not np.isfinite(effect_size) or effect_size == 0:
        return math.inf
    enough = np.flatnonzero(power_curve(effect_size, paired, alpha) >= POWER)
    return float(enough[0] + 2) if enough.size else math.inf


def compare(variant: pd.Series, baseline: pd.Series, power: bool = True, alpha: float = ALPHA
            ) -> dict[str, float | str | int]:
    """Δ = mean(variant) − mean(baseline), its 95 % CI, two-sided p and (with `power`) the seeds needed for
    80 % power at the observed effect and level `alpha`. Both Series are indexed by seed. The paired t-test on
    the seeds both sides have (≥ 2; the others are named in `dropped_seeds`), Welch's t-test below 2 shared seeds.
    Differences without variance leave the test undefined: p is NaN, never "significant"."""
    needed = (lambda effect, paired: seeds_needed(effect, paired, alpha)) if power else \
        (lambda effect, paired: math.nan)
    a, b = variant.dropna().astype(float), baseline.dropna().astype(float)
    unique = a.index.is_unique and b.index.is_unique
    pairs = paired_differences(a, b) if unique else None
    if pairs is not None and pairs.n >= 2:
        dropped, diff = pairs.dropped_text(), pairs.diffs
        n, mean, sd = len(diff), float(diff.mean()), float(diff.std(ddof=1))
        if sd == 0:  # e.g. two seeds with the same difference: no estimate of the noise
            return {**_nan_result("paired t (zero variance: undefined)", n), "delta": mean,
                    "dropped_seeds": dropped}
        half = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * sd / math.sqrt(n)
        p = float(stats.ttest_1samp(diff, 0.0).pvalue)  # = the paired t-test of the two sides
        return {"test": "paired t", "n_pairs": n, "delta": mean, "delta_ci_low": mean - half,
                "delta_ci_high": mean + half, "p_value": p, "seeds_needed": needed(mean / sd, True),
                "effect_size": mean / sd, "dropped_seeds": dropped}
    if len(a) < 2 or len(b) < 2:
        return _nan_result("Welch t", 0)
    delta = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return {**_nan_result("Welch t (zero variance: undefined)", 0), "delta": delta}
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch–Satterthwaite
    half = float(stats.t.ppf(1 - ALPHA / 2, df)) * math.sqrt(va + vb)
    p = float(stats.ttest_ind(a.to_numpy(), b.to_numpy(), equal_var=False).pvalue)
    pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    effect = delta / pooled if pooled else math.inf
    return {"test": "Welch t", "n_pairs": 0, "delta": delta, "delta_ci_low": delta - half,
            "delta_ci_high": delta + half, "p_value": p, "seeds_needed": needed(effect, False),
            "effect_size": effect, "dropped_seeds": ""}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (NaN entries stay NaN and are not counted in the family)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        # the step-down itself: statsmodels' multipletests(method="holm") gives the same values but runs a full
        # gc.collect() on every call (~0.1 s in a process holding Ray and pandas; the adaptive searcher calls it at
        # every look, and its simulations thousands of times)
        sub = p[ok]
        order = np.argsort(sub, kind="stable")
        steps = sub[order] * np.arange(len(sub), 0, -1)
        adjusted = np.empty_like(sub)
        adjusted[order] = np.minimum(np.maximum.accumulate(steps), 1.0)
        out[ok] = adjusted
    return out.tolist()


def numeric_axis(values: Sequence) -> list[float] | None:
    """An ordered numeric axis from config values: numbers, or the first entry of equal-length number lists
    (loss_weights: the semseg weight). None when the values are not numeric."""
    out = []
    for v in values:
        if isinstance(v, str) and v.startswith("["):
            try:
                v = [float(x) for x in v.strip("[]").split(",")] if v.strip("[]") else v
            except ValueError:  # a list of names ("[semseg]"): not an ordered axis
                return None
        if isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) for x in v):
            v = v[0]
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            return None
        out.append(float(v))
    return out


def trend(x: Sequence[float], y: Sequence[float], seeds: Sequence | None = None, log: bool = False) -> dict:
    """OLS slope of y on x (log10 x when `log`) with its 95 % CI and p; seeds as blocks when given and every
    seed has every x value."""
    import statsmodels.formula.api as smf

    x = np.asarray(x, float)
    excluded = int((x <= 0).sum()) if log else 0
    with np.errstate(divide="ignore", invalid="ignore"):  # x <= 0 has no place on a log axis: left out, counted
        xs = np.where(x > 0, np.log10(np.where(x > 0, x, 1.0)), np.nan) if log else x
    df = pd.DataFrame({"x": xs, "y": np.asarray(y, float),
                       "seed": list(seeds) if seeds is not None else 0}).dropna()
    blocked = seeds is not None and df["seed"].nunique() > 1 and \
        df.groupby("seed")["x"].apply(frozenset).nunique() == 1
    if len(df) < 3 or df["x"].nunique() < 2:
        return {"slope": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan, "n": len(df),
                "model": "too few points", "log_x": log, "excluded": excluded}
    fit = smf.ols("y ~ x + C(seed)" if blocked else "y ~ x", data=df).fit()
    low, high = fit.conf_int(alpha=ALPHA).loc["x"]
    if fit.df_resid < 1:
        low = high = math.nan
    return {"slope": float(fit.params["x"]), "ci_low": float(low), "ci_high": float(high),
            "p_value": float(fit.pvalues["x"]) if fit.df_resid >= 1 else math.nan, "n": len(df),
            "model": ("OLS, seed blocks" if blocked else "OLS") + (f"; {excluded} trial(s) at x <= 0 left out of "
                                                                   "the log axis" if excluded else ""),
            "log_x": log, "intercept": float(fit.params["Intercept"]), "excluded": excluded}


def _coupled(frame: pd.DataFrame, a: str, b: str) -> bool:
    """Two config columns that move together (a `zip` axis): one value of each always meets one of the other."""
    return frame.groupby(a)[b].nunique().max() == 1 and frame.groupby(b)[a].nunique().max() == 1


def axis_trends(frame: pd.DataFrame, ablated: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Slope of every metric along every ordered numeric ablated axis, over all completed trials; within each
    combination of the other (non-coupled) ablated keys, so optimizer x lr gives one lr trend per optimizer."""
    done = frame[frame["status"] == "completed"]
    records = []
    for key in ablated:
        col = f"config/{key}"
        if col not in done or done[col].astype(str).nunique() < 2:
            continue
        x_all = numeric_axis(done[col].tolist())
        if x_all is None:
            continue
        x_all = pd.Series(x_all, index=done.index)
        text = done.astype(str)
        others = [f"config/{o}" for o in ablated if o != key and f"config/{o}" in done
                  and text[f"config/{o}"].nunique() > 1 and not _coupled(text, col, f"config/{o}")]
        groups = done.astype({o: str for o in others}).groupby(others) if others else [((), done)]
        for group_key, part in groups:
            label = ", ".join(f"{o[7:]}={v}" for o, v in zip(others, np.atleast_1d(group_key), strict=False))
            for metric in metrics:
                if metric not in part:
                    continue
                fit = trend(x_all[part.index], pd.to_numeric(part[metric], errors="coerce"), part["seed"].tolist(),
                            log=key in LOG_AXES)
                records.append({"axis": key + ("[0]" if str(part[col].iloc[0]).startswith("[") else ""),
                                "group": label, "metric": metric, **fit})
    return pd.DataFrame(records)
