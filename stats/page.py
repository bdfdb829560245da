"""A page of claims judged as one design: the procedure behind docs/findings.md, whose family-wise error holds as a
whole.

Every claim on the page is tested the same way, whatever its data looked like:

- an "effect" or "same" claim is tested on its paired per-seed differences by the group-sequential paired t of
  `stats.sequential`, under the design its seeds were chosen by. A row that was never extended has had one look:
  its p is the *look-1 repeated p-value* of the page's design (first 3, max 8 seeds), not a fixed-n t-test. So
  no row's test is chosen after seeing its data (choosing the fixed-n t for rows settled at 3 seeds and the
  sequential one for the others is a union of two tests: about 1.8x the error, bench/page_error.py);
- a "same" claim with a margin declared before the data also gets its equivalence test (two one-sided sequential
  tests, TOST); a margin set after the data is tested and shown, but does not settle the claim;
- a "diverges" claim is judged by an exact binomial test on the count of failed runs against "half of the runs
  fail" (with 3 runs no outcome is significant: it says so instead of calling 3 / 3 settled);
- Holm across every test of the page (differences, equivalences, counts) at 0.05;
- intervals are simultaneous at the family's level (Bonferroni, alpha / m): an interval that excludes 0 always goes
  with a resolved row, and the course's magnitude is checked against that interval.

The family-wise error of this whole procedure, extension rule included, is simulated through the production
Searcher in tests/test_page.py (bench/page_error.py prints it with its Monte-Carlo standard error).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from stats.inference import ALPHA, holm
from stats.sequential import equivalence_p, repeated_ci, repeated_p


@dataclass(frozen=True)
class Design:
    """The looks a comparison's seeds were added by: first .. max seeds (a row never extended had only the first)."""

    first: int = 3
    max: int = 8


PAGE_DESIGN = Design()  # the findings page's design, declared before its runs (--seeds first=3,max=8)
DIVERGE_NULL = 0.5  # "diverges" means: more than half of the runs fail; the exact test is against one half


@dataclass(frozen=True)
class Claim:
    """One row of a page: what it claims and the data that tests it."""

    kind: str = "effect"  # effect (a signed difference) | same (no difference) | diverges (runs fail)
    expect: int = 1  # effect: the claim's sign
    size: float | None = None  # effect: the claimed magnitude (signed), checked against the family-level interval
    margin: float | None = None  # same: the equivalence margin
    margin_post_hoc: bool = False  # the margin was set after the data: tested, shown, never settles the claim
    diffs: tuple[float, ...] = ()  # effect / same: paired differences, ascending seeds
    design: Design = PAGE_DESIGN
    failures: int = 0  # diverges: runs that failed
    runs: int = 0  # diverges: runs that trained to the end or failed

    def __post_init__(self) -> None:
        if self.size is not None and self.size != 0 and np.sign(self.size) != self.expect:
            raise ValueError(f"a claimed size {self.size:+g} must have the claim's sign ({self.expect:+d})")
        if len(self.diffs) > self.design.max:
            raise ValueError(f"{len(self.diffs)} paired differences, more than the design's max "
                             f"({self.design.max}): the test would leave seeds out")


@dataclass(frozen=True)
class Judged:
    test: str
    n: int
    p: float  # raw: the repeated p (effect / same) or the exact binomial p (diverges)
    p_holm: float
    p_equivalence: float = math.nan
    p_equivalence_holm: float = math.nan
    outcome: str = "unresolved"  # see OUTCOMES
    ci_low: float = math.nan  # simultaneous interval of Δ (only computed where the outcome needs it)
    ci_high: float = math.nan


OUTCOMES = ("reproduced", "smaller", "larger", "size_untested", "contradicted", "equivalent", "equivalent_post_hoc",
            "unresolved", "untested")


def raw_p(c: Claim) -> float:
    if c.kind == "diverges":
        return float(stats.binomtest(c.failures, c.runs, DIVERGE_NULL).pvalue) if c.runs else math.nan
    return repeated_p(np.asarray(c.diffs, float), c.design.first, c.design.max)


def family_level(tests: list[float], alpha: float = ALPHA) -> float:
    """The level of the family's simultaneous intervals: alpha / m (Bonferroni over the m tests with a p)."""
    m = int(np.isfinite(np.asarray(tests, float)).sum())
    return alpha / max(m, 1)


def interval(c: Claim, level: float) -> tuple[float, float]:
    """The simultaneous (1 - level) repeated interval of a claim's mean difference."""
    if c.kind == "diverges":
        return math.nan, math.nan
    return repeated_ci(np.asarray(c.diffs, float), c.design.first, c.design.max, level)


def judge_page(claims: list[Claim], alpha: float = ALPHA) -> list[Judged]:
    """Holm over every test of the page, then each claim's outcome."""
    raw = [raw_p(c) for c in claims]
    eq = [equivalence_p(np.asarray(c.diffs, float), c.margin, c.design.first, c.design.max)
          if c.kind == "same" and c.margin and len(c.diffs) >= c.design.first else math.nan for c in claims]
    adjusted = holm(raw + eq)
    level = family_level(raw + eq, alpha)
    out = []
    for i, c in enumerate(claims):
        p_h, e_h = adjusted[i], adjusted[len(claims) + i]
        outcome, ci = _outcome(c, p_h, e_h, level, alpha)
        test = "exact binomial (half fail)" if c.kind == "diverges" else \
            f"group-sequential paired t (looks {c.design.first}..{c.design.max})"
        n = c.runs if c.kind == "diverges" else len(c.diffs)
        out.append(Judged(test, n, raw[i], p_h, eq[i], e_h, outcome, *ci))
    return out


def _outcome(c: Claim, p_h: float, e_h: float, level: float, alpha: float) -> tuple[str, tuple[float, float]]:
    none = (math.nan, math.nan)
    if not np.isfinite(p_h):
        return "untested", none
    resolved = p_h < alpha
    if c.kind == "diverges":
        more = c.failures > c.runs * DIVERGE_NULL
        return ("reproduced" if more else "contradicted") if resolved else "unresolved", none
    if c.kind == "same":
        if resolved:
            return "contradicted", none
        if np.isfinite(e_h) and e_h < alpha:
            return ("equivalent_post_hoc" if c.margin_post_hoc else "equivalent"), none
        return "unresolved", none
    mean = float(np.mean(c.diffs))
    if not resolved:
        return "unresolved", none
    if np.sign(mean) != c.expect:
        return "contradicted", none
    ci = interval(c, level)
    if c.size is None:
        return "reproduced", ci
    if not np.isfinite(ci[0]):  # an empty interval: no size is consistent with the data, the course's either
        return "size_untested", ci
    if ci[0] <= c.size <= ci[1]:
        return "reproduced", ci
    # the course's size lies outside the family-level interval: which side says whether ours is smaller
    return ("smaller" if abs(c.size) > max(abs(ci[0]), abs(ci[1])) else "larger"), ci
