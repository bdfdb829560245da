"""Multi-task optimisers against a tuned front of weighted sums: a verdict per method, with the error controlled
across the whole page.

For each method M and each weighted sum W of the front, on the seeds both have (paired), three tests:
- M dominates W: intersection-union over the objectives of one-sided paired t-tests (`stats.pareto.dominance_p`);
- W dominates M: the same, the other way;
- M is equivalent to W: intersection-union over the objectives of paired TOSTs within the margins the spec
  declared before the runs (`|mean difference| < margin` on every objective).
Every p-value of the page (methods x front x 3) is Holm-adjusted as one family, so the page's family-wise error is
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
from stats.pareto import dominance_p

Values = Mapping[str, Mapping[str, pd.Series]]  # row -> objective -> seed -> value
VERDICTS = ("beats the front", "behind the front", "on the front", "unresolved")


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


def equivalence_p(a: Mapping[str, pd.Series], b: Mapping[str, pd.Series], margins: Mapping[str, float]
                  ) -> tuple[float, int]:
    """Intersection-union p that a and b are equivalent on every objective, and the pairs used."""
    ps, n = [], 0
    for name, margin in margins.items():
        pairs = paired_differences(a[name], b[name])
        ps.append(tost_p(pairs.diffs, margin))
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
                      margins: Mapping[str, float], alpha: float = ALPHA) -> Frontier:
    lines = []
    for m in methods:
        for w in front:
            beats, n = dominance_p(values[m], values[w], objectives)
            behind, _ = dominance_p(values[w], values[m], objectives)
            equal, _ = equivalence_p(values[m], values[w], margins)
            lines += [(m, w, "beats", beats, n), (m, w, "behind", behind, n), (m, w, "equivalent", equal, n)]
    tests = pd.DataFrame(lines, columns=["method", "front", "test", "p", "pairs"])
    finite = tests["p"].notna()
    tests["p_adj"] = math.nan
    tests.loc[finite, "p_adj"] = holm(tests.loc[finite, "p"].tolist())
    rows = [_verdict(m, tests[tests["method"] == m], values, objectives, alpha, int(finite.sum())) for m in methods]
    return Frontier(tests, pd.DataFrame(rows).set_index("method"), alpha, int(finite.sum()))


def _verdict(method: str, tests: pd.DataFrame, values: Values, objectives: Mapping[str, str], alpha: float,
             family: int) -> dict:
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
    need = seeds_needed(_effect(values[a], values[b], objectives), paired=True, alpha=2 * alpha / family)
    return {"method": method, "verdict": "unresolved", "against": line["front"], "test": line["test"],
            "p_adj": line["p_adj"], "pairs": int(line["pairs"]), "seeds_needed": need}
