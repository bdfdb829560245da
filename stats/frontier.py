"""Multi-task optimisers against a tuned front of weighted sums: a verdict per method, with the error controlled
across the whole page.

For each method M and each weighted sum W of the front, on the seeds both have (paired), three tests:
- M dominates W: intersection-union over the objectives of one-sided paired t-tests (`stats.pareto.dominance_p`);
- W dominates M: the same, the other way;
- M is equivalent to W: intersection-union over the objectives of paired TOSTs within the margins the spec
  declared before the runs (`|mean difference| < margin` on every objective).
With an adaptive design (seeds added round by round, search/frontier_seeds.py) each one-sided test is the
group-sequential one of `stats.sequential` (its repeated p-value stays valid whatever decided to add or stop
seeds); an intersection-union of valid tests is valid. Every p-value of the page (methods x front x 3) is
Holm-adjusted as one family, so the page's family-wise error is
at most alpha whatever the verdicts. The verdict of M: **behind the front** (some W dominates it), else **beats
the front** (it dominates some W), else **on the front** (no W dominates it and it is equivalent to some W), else
**unresolved**, with the seeds per row at which its most promising test would reach 80 % power at the level its
Holm step needs (the observed effect taken as true: an estimate, not a promise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

from stats.inference import ALPHA, holm, seeds_needed
from stats.paired import paired_differences
from stats.pareto import dominance_p, hypervolume
from stats.sequential import equivalence_p as sequential_equivalence_p
from stats.sequential import repeated_p

Values = Mapping[str, Mapping[str, pd.Series]]  # row -> objective -> seed -> value
Design = tuple[int, int]  # (first, max) comparison seeds of an adaptive design; None: a fixed number of seeds
VERDICTS = ("beats the front", "behind the front", "on the front", "unresolved")


def best_row(points: Mapping[str, Sequence[float]], directions: Sequence[str], reference: Sequence[float]) -> str:
    """The row whose mean point has the largest hypervolume against `reference` (a point with a non-finite value,
    or none better than the reference, counts as nothing; ties go to the first row): how each variant's tuned
    value is chosen, by the search that adds seeds and by the page alike."""
    def score(point: Sequence[float]) -> float:
        p = np.asarray(point, float)[None, :]
        return hypervolume(p, list(directions), reference) if np.isfinite(p).all() else -1.0

    return max(points, key=lambda row: score(points[row]))


def tost_p(diffs: np.ndarray, margin: float) -> float:
    """Paired TOST of |mean| < margin: the larger of the two one-sided t p-values; NaN below 2 pairs."""
    n = len(diffs)
    sd = float(diffs.std(ddof=1)) if n >= 2 else 0.0
    if n < 2 or sd == 0:
        return math.nan
    se = sd / math.sqrt(n)
    lower = special.stdtr(n - 1, -(float(diffs.mean()) + margin) / se)  # H0: mean <= -margin
    upper = special.stdtr(n - 1, (float(diffs.mean()) - margin) / se)  # H0: mean >= margin
    return float(max(lower, upper))


def equivalence_p(a: Mapping[str, pd.Series], b: Mapping[str, pd.Series], margins: Mapping[str, float],
                  design: Design | None = None) -> tuple[float, int]:
    """Intersection-union p that a and b are equivalent on every objective, and the pairs used."""
    ps, n = [], 0
    for name, margin in margins.items():
        pairs = paired_differences(a[name], b[name])
        ps.append(sequential_equivalence_p(pairs.diffs, margin, *design) if design else tost_p(pairs.diffs, margin))
        n = pairs.n if not n else min(n, pairs.n)
    return (max(ps) if ps and all(math.isfinite(p) for p in ps) else math.nan), n


def sequential_dominance_p(better: Mapping[str, pd.Series], worse: Mapping[str, pd.Series],
                           objectives: Mapping[str, str], design: Design) -> tuple[float, int]:
    """`stats.pareto.dominance_p` for seeds added adaptively: per objective the one-sided group-sequential repeated
    p of "better is better" on the paired differences in seed order, the largest of them (intersection-union)."""
    ps, n = [], 0
    for name, direction in objectives.items():
        pairs = paired_differences(better[name], worse[name])
        ps.append(repeated_p(pairs.diffs if direction == "max" else -pairs.diffs, *design, sided=1))
        n = pairs.n if not n else min(n, pairs.n)
    return (max(ps) if ps and all(math.isfinite(p) for p in ps) else math.nan), n


def _effect(a: Mapping[str, pd.Series], b: Mapping[str, pd.Series], objectives: Mapping[str, str]) -> float:
    """The weakest objective's standardised paired effect (a better than b): what a dominance test hinges on."""
    effects = []
    for name, direction in objectives.items():
        d = paired_differences(a[name], b[name]).diffs * (1 if direction == "max" else -1)
        effects.append(d.mean() / d.std(ddof=1) if len(d) >= 2 and d.std(ddof=1) > 0 else math.nan)
    return min(effects) if effects else math.nan


@dataclass(frozen=True)
class Frontier:
    tests: pd.DataFrame  # one line per (method, weighted sum, test): p, Holm-adjusted p, pairs
    verdicts: pd.DataFrame  # one line per method: verdict, against which weighted sum, adjusted p, seeds needed
    alpha: float
    family: int  # how many tests the Holm family holds


def frontier_verdicts(values: Values, methods: Sequence[str], front: Sequence[str], objectives: Mapping[str, str],
                      margins: Mapping[str, float], alpha: float = ALPHA, design: Design | None = None,
                      estimate: bool = True) -> Frontier:
    """`design`: (first, max) when the comparison seeds were added adaptively (the group-sequential tests);
    `estimate`: give unresolved methods the seeds that would settle them (a power calculation each)."""
    def dominates(a: str, b: str) -> tuple[float, int]:
        if design:
            return sequential_dominance_p(values[a], values[b], objectives, design)
        return dominance_p(values[a], values[b], objectives)

    lines = []
    for m in methods:
        for w in front:
            beats, n = dominates(m, w)
            behind, _ = dominates(w, m)
            equal, _ = equivalence_p(values[m], values[w], margins, design)
            lines += [(m, w, "beats", beats, n), (m, w, "behind", behind, n), (m, w, "equivalent", equal, n)]
    tests = pd.DataFrame(lines, columns=["method", "front", "test", "p", "pairs"])
    finite = tests["p"].notna()
    tests["p_adj"] = math.nan
    tests.loc[finite, "p_adj"] = holm(tests.loc[finite, "p"].tolist())
    rows = [_verdict(m, part, values, objectives, alpha, int(finite.sum()) if estimate else 0)
            for m, part in tests.groupby("method", sort=False)]
    return Frontier(tests, pd.DataFrame(rows).set_index("method"), alpha, int(finite.sum()))


def _verdict(method: str, tests: pd.DataFrame, values: Values, objectives: Mapping[str, str], alpha: float,
             family: int) -> dict:
    """`family` 0: no estimate of the seeds needed."""
    def best(kind: str) -> pd.Series | None:
        part = tests[(tests["test"] == kind) & tests["p_adj"].notna()]
        return part.loc[part["p_adj"].idxmin()] if len(part) else None

    for kind, verdict in (("behind", "behind the front"), ("beats", "beats the front"),
                          ("equivalent", "on the front")):
        line = best(kind)
        if line is not None and line["p_adj"] < alpha:
            return {"method": method, "verdict": verdict, "against": line["front"], "test": kind,
                    "p_adj": line["p_adj"], "pairs": int(line["pairs"]), "seeds_needed": math.nan}
    raw = tests[tests["test"] != "equivalent"].dropna(subset=["p"])
    if raw.empty:
        return {"method": method, "verdict": "unresolved", "against": "", "test": "", "p_adj": math.nan,
                "pairs": 0, "seeds_needed": math.nan}
    line = raw.loc[raw["p"].idxmin()]
    a, b = (method, line["front"]) if line["test"] == "beats" else (line["front"], method)
    need = seeds_needed(_effect(values[a], values[b], objectives), paired=True, alpha=2 * alpha / family) \
        if family else math.nan
    return {"method": method, "verdict": "unresolved", "against": line["front"], "test": line["test"],
            "p_adj": line["p_adj"], "pairs": int(line["pairs"]), "seeds_needed": need}
