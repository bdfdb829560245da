"""Trade-offs between objectives, seed-aware: fronts, hypervolume with a CI over seeds, and a dominance test on
paired seeds with its family-wise error controlled.

Directions are given per objective ("max" or "min"); internally every objective is turned to "min" by flipping the
sign of "max" ones, which is what moocore (non-dominated sorting, hypervolume) expects.

**The dominance test.** Row A dominates row B when it is at least as good on every objective and better on one.
From seeds, "at least as good" cannot be shown without a margin, so the test claims the strict form: A is better
than B on *every* objective. It is an intersection-union test (Berger 1982): one one-sided paired t-test per
objective on the per-seed differences (stats.paired), and p = the largest of them; it keeps its level whatever
the correlation between objectives, and a row on the front of a trade-off (better on one objective, worse on
another) is called dominated with probability at most α. Each unordered pair of rows is one hypothesis ("neither
dominates the other"), tested in the direction its means point to (p = min over the two directions: both
directions small at once needs every objective tied, where each is ~α^K), and Holm runs across all pairs of the
table, so the family-wise error of every dominance the table claims is ≤ α.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import moocore
import numpy as np
import pandas as pd
from scipy import special, stats

from stats.inference import ALPHA, holm
from stats.paired import paired_differences

DIRECTIONS = ("max", "min")


def as_minimised(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """(n, K) values -> the same points with every "max" objective negated (all objectives minimised)."""
    sign = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    return np.asarray(values, dtype=float) * sign


def nondominated(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """(n,) bool: the points no other point dominates (moocore's non-dominated sorting; NaN rows are never on it)."""
    points = as_minimised(values, directions)
    ok = np.isfinite(points).all(axis=1)
    out = np.zeros(len(points), dtype=bool)
    if ok.any():
        out[np.flatnonzero(ok)] = moocore.is_nondominated(points[ok])
    return out


def pareto_ranks(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """(n,) int: 0 for the front, 1 for the front once it is removed, ...; NaN rows rank after every other."""
    points = as_minimised(values, directions)
    ok = np.isfinite(points).all(axis=1)
    out = np.full(len(points), np.iinfo(np.int64).max // 2, dtype=np.int64)
    if ok.any():
        out[np.flatnonzero(ok)] = moocore.pareto_rank(points[ok])
    return out


def reference_point(objectives: Mapping[str, str], declared: Mapping[str, float] | None,
                    worst: Mapping[str, float]) -> list[float] | None:
    """The hypervolume's reference point, objective by objective: the declared value, else the metric's worst
    value (`mtl.metrics.WORST_VALUES`); None when one is unknown."""
    values = [(declared or {}).get(m, worst.get(m)) for m in objectives]
    return None if any(v is None for v in values) else [float(v) for v in values]


def hypervolume(values: np.ndarray, directions: Sequence[str], reference: Sequence[float]) -> float:
    """The hypervolume the points dominate up to the reference point (given in the objectives' own units)."""
    points = as_minimised(values, directions)
    ref = as_minimised(np.asarray(reference, dtype=float)[None, :], directions)[0]
    points = points[np.isfinite(points).all(axis=1) & (points < ref).all(axis=1)]
    return float(moocore.hypervolume(points, ref=ref)) if len(points) else 0.0


def hv_contributions(values: np.ndarray, directions: Sequence[str], reference: Sequence[float]) -> np.ndarray:
    """(n,) each point's exclusive hypervolume (0 for dominated points and those beyond the reference)."""
    points = as_minimised(values, directions)
    ref = as_minimised(np.asarray(reference, dtype=float)[None, :], directions)[0]
    keep = np.isfinite(points).all(axis=1) & (points < ref).all(axis=1)
    out = np.zeros(len(points))
    if keep.any():
        out[np.flatnonzero(keep)] = moocore.hv_contributions(points[keep], ref=ref)
    return out


def hypervolume_over_seeds(frame: pd.DataFrame, rows: Sequence[str], objectives: Mapping[str, str],
                           reference: Sequence[float]) -> dict[str, float]:
    """Each seed's front (the rows' results at that seed) as one hypervolume; their mean with a 95 % t-interval
    over seeds. `frame`: one line per trial (`variant`, `seed`, the objectives), completed trials only."""
    names, directions = list(objectives), list(objectives.values())
    per_seed = []
    for _, part in frame[frame["variant"].isin(rows)].groupby("seed"):
        values = part[names].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
        per_seed.append(hypervolume(values, directions, reference))
    return mean_ci(per_seed)


def mean_ci(values: Sequence[float], alpha: float = ALPHA) -> dict[str, float]:
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    mean = float(x.mean())
    if n < 2:
        return {"mean": mean, "ci_low": math.nan, "ci_high": math.nan, "n": 1}
    half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def _one_sided_p(diffs: np.ndarray) -> float:
    """p of H0: mean <= 0 against mean > 0 (paired t); NaN below 2 pairs or without variance."""
    n = len(diffs)
    if n < 2:
        return math.nan
    sd = float(diffs.std(ddof=1))
    if sd == 0:
        return math.nan
    t = float(diffs.mean()) / (sd / math.sqrt(n))
    return float(special.stdtr(n - 1, -t))  # = t.sf(t, n - 1), without scipy.stats' per-call overhead


def dominance_p(better: Mapping[str, pd.Series], worse: Mapping[str, pd.Series],
                objectives: Mapping[str, str]) -> tuple[float, int]:
    """Intersection-union p that `better` dominates `worse` (better on every objective), and the pairs used.
    `better[k]`, `worse[k]`: seed -> value of objective k."""
    ps, n = [], 0
    for name, direction in objectives.items():
        pairs = paired_differences(better[name], worse[name])
        diffs = pairs.diffs if direction == "max" else -pairs.diffs
        ps.append(_one_sided_p(diffs))
        n = pairs.n if not n else min(n, pairs.n)
    return (max(ps) if ps and all(math.isfinite(p) for p in ps) else math.nan), n


@dataclass(frozen=True)
class Dominance:
    table: pd.DataFrame  # one line per row: means, on the observed front, dominated by, adjusted p
    pairs: pd.DataFrame  # one line per unordered pair: direction tested, p, Holm-adjusted p
    alpha: float

    @property
    def nondominated(self) -> list[str]:
        """The statistically non-dominated set: rows that no row dominates at the family-wise level alpha."""
        return [r for r, d in zip(self.table.index, self.table["dominated_by"], strict=True) if not d]


def _by_row(frame: pd.DataFrame, rows: Sequence[str], names: Sequence[str]) -> dict[str, dict[str, pd.Series]]:
    """row -> objective -> its values by seed (one pass over the frame)."""
    out: dict[str, dict[str, pd.Series]] = {r: {} for r in rows}
    for row, part in frame[frame["variant"].isin(rows)].groupby("variant", sort=False):
        seeds = part["seed"].to_numpy()
        for m in names:
            out[row][m] = pd.Series(pd.to_numeric(part[m], errors="coerce").to_numpy(dtype=float), index=seeds)
    empty = pd.Series(dtype=float)
    return {r: {m: out[r].get(m, empty) for m in names} for r in rows}


def dominance_table(frame: pd.DataFrame, rows: Sequence[str], objectives: Mapping[str, str],
                    alpha: float = ALPHA) -> Dominance:
    """Every unordered pair of rows tested for dominance (IUT on paired seeds, Holm across the pairs); per row the
    means, whether the means put it on the front, and the row that dominates it (smallest adjusted p) if any.
    `frame`: completed trials, one line per trial (`variant`, `seed`, the objectives)."""
    names = list(objectives)
    series = _by_row(frame, rows, names)
    pairs = []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            p_ab, n = dominance_p(series[a], series[b], objectives)
            p_ba, _ = dominance_p(series[b], series[a], objectives)
            forward = not (math.isfinite(p_ba) and (not math.isfinite(p_ab) or p_ba < p_ab))
            pairs.append({"better": a if forward else b, "worse": b if forward else a, "n_pairs": n,
                          "p_value": p_ab if forward else p_ba})
    pair_frame = pd.DataFrame(pairs, columns=["better", "worse", "n_pairs", "p_value"])
    pair_frame["p_holm"] = holm(pair_frame["p_value"].tolist()) if len(pair_frame) else []
    means = pd.DataFrame({m: [series[r][m].mean() for r in rows] for m in names}, index=list(rows))
    on_front = nondominated(means.to_numpy(dtype=float), list(objectives.values()))
    table = means.assign(on_front=on_front, dominated_by="", p_holm=math.nan)
    for _, pair in pair_frame[pair_frame["p_holm"] < alpha].sort_values("p_holm").iterrows():
        if not table.at[pair["worse"], "dominated_by"]:
            table.at[pair["worse"], "dominated_by"] = pair["better"]
            table.at[pair["worse"], "p_holm"] = pair["p_holm"]
    return Dominance(table, pair_frame, alpha)


def attainment_surface(frame: pd.DataFrame, rows: Sequence[str], objectives: Mapping[str, str],
                       percentile: float = 50.0) -> np.ndarray | None:
    """The `percentile` % attainment surface of the empirical attainment function over seeds (moocore): each seed's
    results of `rows` are one run's set of points; the surface bounds what at least that share of seeds attained.
    Two objectives only: the staircase's corners as an (m, 2) polyline in the objectives' own units, or None."""
    names, directions = list(objectives), list(objectives.values())
    done = frame[frame["variant"].isin(rows)]
    if len(names) != 2 or done["seed"].nunique() < 2:
        return None
    points = as_minimised(done[names].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float), directions)
    ok = np.isfinite(points).all(axis=1)
    seeds = pd.factorize(done["seed"])[0] + 1
    surface = moocore.eaf(points[ok], seeds[ok], percentiles=[percentile])[:, :2]
    surface = surface[np.argsort(surface[:, 0])]
    corners = [surface[0]]
    for a, b in itertools.pairwise(surface):  # minimised: right along the upper step, then down
        corners += [np.array([b[0], a[1]]), b]
    return as_minimised(np.array(corners), directions)  # negating the "max" axes again restores their units
