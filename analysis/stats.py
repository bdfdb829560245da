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
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 1000  # "more than this" for seeds-needed estimates
LOG_AXES = {"lr", "weight_decay"}


def _nan_result(test: str, n: int) -> dict[str, float | str | int]:
    return {"test": test, "n_pairs": n, "delta": math.nan, "delta_ci_low": math.nan, "delta_ci_high": math.nan,
            "p_value": math.nan, "seeds_needed": math.nan}


def seeds_needed(effect_size: float, paired: bool) -> float:
    """Seeds per variant at which the test reaches 80 % power at this standardised effect (Cohen's d); inf
    beyond MAX_SEEDS. Power from statsmodels over every n at once (its root finder fails on tiny effects)."""
    if not np.isfinite(effect_size) or effect_size == 0:
        return math.inf
    n = np.arange(2, MAX_SEEDS + 1)
    if paired:
        power = TTestPower().power(effect_size=abs(effect_size), nobs=n, alpha=ALPHA)
    else:
        power = TTestIndPower().power(effect_size=abs(effect_size), nobs1=n, alpha=ALPHA, ratio=1.0)
    enough = np.flatnonzero(np.asarray(power) >= POWER)
    return float(n[enough[0]]) if enough.size else math.inf


def compare(variant: pd.Series, baseline: pd.Series, power: bool = True) -> dict[str, float | str | int]:
    """Δ = mean(variant) − mean(baseline), its 95 % CI, two-sided p and (with `power`) the seeds needed for
    80 % power at the observed effect. Both Series are indexed by seed. Paired t-test when every seed appears
    on both sides (≥ 2 seeds), Welch's t-test otherwise."""
    needed = seeds_needed if power else (lambda effect, paired: math.nan)
    a, b = variant.dropna().astype(float), baseline.dropna().astype(float)
    paired = len(a) >= 2 and set(a.index) == set(b.index) and a.index.is_unique and b.index.is_unique
    if paired:
        diff = (a - b.reindex(a.index)).to_numpy()
        n, mean, sd = len(diff), float(diff.mean()), float(diff.std(ddof=1))
        if sd == 0:
            p = 1.0 if mean == 0 else 0.0  # no variance: the test is undefined, the difference is exact
            return {"test": "paired t", "n_pairs": n, "delta": mean, "delta_ci_low": mean, "delta_ci_high": mean,
                    "p_value": p, "seeds_needed": math.inf if mean == 0 else 2.0}
        half = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * sd / math.sqrt(n)
        p = float(stats.ttest_rel(a.to_numpy(), b.reindex(a.index).to_numpy()).pvalue)
        return {"test": "paired t", "n_pairs": n, "delta": mean, "delta_ci_low": mean - half,
                "delta_ci_high": mean + half, "p_value": p, "seeds_needed": needed(mean / sd, True)}
    if len(a) < 2 or len(b) < 2:
        return _nan_result("Welch t", 0)
    delta = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return {**_nan_result("Welch t", 0), "delta": delta, "p_value": 1.0 if delta == 0 else 0.0}
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch–Satterthwaite
    half = float(stats.t.ppf(1 - ALPHA / 2, df)) * math.sqrt(va + vb)
    p = float(stats.ttest_ind(a.to_numpy(), b.to_numpy(), equal_var=False).pvalue)
    pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    return {"test": "Welch t", "n_pairs": 0, "delta": delta, "delta_ci_low": delta - half,
            "delta_ci_high": delta + half, "p_value": p,
            "seeds_needed": needed(delta / pooled if pooled else math.inf, False)}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (NaN entries stay NaN and are not counted in the family)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=ALPHA, method="holm")[1]
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

    df = pd.DataFrame({"x": np.log10(np.asarray(x, float)) if log else np.asarray(x, float),
                       "y": np.asarray(y, float), "seed": list(seeds) if seeds is not None else 0}).dropna()
    blocked = seeds is not None and df["seed"].nunique() > 1 and \
        df.groupby("seed")["x"].apply(frozenset).nunique() == 1
    if len(df) < 3 or df["x"].nunique() < 2:
        return {"slope": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan, "n": len(df),
                "model": "too few points", "log_x": log}
    fit = smf.ols("y ~ x + C(seed)" if blocked else "y ~ x", data=df).fit()
    low, high = fit.conf_int(alpha=ALPHA).loc["x"]
    if fit.df_resid < 1:
        low = high = math.nan
    return {"slope": float(fit.params["x"]), "ci_low": float(low), "ci_high": float(high),
            "p_value": float(fit.pvalues["x"]) if fit.df_resid >= 1 else math.nan, "n": len(df),
            "model": "OLS, seed blocks" if blocked else "OLS", "log_x": log,
            "intercept": float(fit.params["Intercept"])}


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
