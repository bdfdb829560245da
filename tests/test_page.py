"""A page of claims judged as one design (stats/page.py), and the whole page procedure's family-wise error."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stats.inference import holm
from stats.page import PAGE_DESIGN, Claim, Design, judge_page
from stats.sequential import equivalence_p, repeated_p

TIGHT = (2.0, 2.1, 1.9, 2.05, 1.95, 2.0, 2.1, 1.9)  # Δ ≈ 2 with little noise, 8 seeds


def _one(claim: Claim, others: int = 0):
    """Judge `claim` on a page with `others` rows of no effect (a larger family)."""
    rng = np.random.default_rng(0)
    rest = [Claim(diffs=tuple(rng.normal(0, 1, 8))) for _ in range(others)]
    return judge_page([claim, *rest])[0]


def test_a_row_with_one_look_gets_the_look_one_repeated_p_of_the_page_s_design():
    d = (1.0, 1.4, 0.8)
    j = _one(Claim(diffs=d))
    assert j.p == repeated_p(np.array(d), PAGE_DESIGN.first, PAGE_DESIGN.max)  # not the fixed-n t's 0.03
    assert j.test == "group-sequential paired t (looks 3..8)" and j.n == 3 and j.outcome == "unresolved"
    assert _one(Claim(diffs=(1.0, 2.0))).outcome == "untested"  # before the first look: no test


@pytest.mark.parametrize(("size", "outcome"), [(2.0, "reproduced"), (11.0, "smaller"), (0.5, "larger"),
                                               (None, "reproduced"), (-2.0, "contradicted")])
def test_reproduced_needs_the_sign_and_the_course_s_size_inside_the_family_level_interval(size, outcome):
    expect = -1 if size is not None and size < 0 else 1
    j = _one(Claim(expect=expect, size=size, diffs=TIGHT), others=5)
    assert j.outcome == outcome and j.p_holm < 0.05
    if outcome in ("smaller", "larger"):
        assert not j.ci_low <= size <= j.ci_high


def test_the_interval_is_simultaneous_at_the_family_s_level():
    alone, crowded = _one(Claim(diffs=TIGHT, size=2.0)), _one(Claim(diffs=TIGHT, size=2.0), others=9)
    assert crowded.ci_low < alone.ci_low and crowded.ci_high > alone.ci_high  # alpha / 10 against alpha / 1


def test_same_claims_need_equivalence_and_a_post_hoc_margin_does_not_settle():
    small = (0.05, -0.1, 0.02, 0.08, -0.03, 0.0, 0.04, -0.06)
    j = _one(Claim(kind="same", margin=1.0, diffs=small))
    assert j.outcome == "equivalent" and j.p_equivalence == equivalence_p(np.array(small), 1.0, 3, 8)
    assert _one(Claim(kind="same", margin=1.0, margin_post_hoc=True, diffs=small)).outcome == "equivalent_post_hoc"
    assert _one(Claim(kind="same", diffs=small)).outcome == "unresolved"  # no margin: nothing to show
    assert _one(Claim(kind="same", margin=1.0, diffs=TIGHT)).outcome == "contradicted"
    # the equivalence test counts in the family: two tests for one "same" row
    family = judge_page([Claim(kind="same", margin=1.0, diffs=small), Claim(diffs=TIGHT)])
    expected = holm([family[0].p, family[1].p, family[0].p_equivalence, math.nan])
    assert (family[0].p_holm, family[1].p_holm, family[0].p_equivalence_holm) == tuple(expected[:3])


def test_diverges_is_an_exact_binomial_test_on_the_count():
    assert _one(Claim(kind="diverges", failures=3, runs=3)).outcome == "unresolved"  # p = 0.25 at best
    j = _one(Claim(kind="diverges", failures=0, runs=10))
    assert j.outcome == "contradicted" and j.p == pytest.approx(2 * 0.5 ** 10)
    assert _one(Claim(kind="diverges", failures=10, runs=10)).outcome == "reproduced"
    assert _one(Claim(kind="diverges", failures=0, runs=0)).outcome == "untested"
    assert math.isnan(_one(Claim(kind="diverges", failures=0, runs=0)).p)


def test_the_interval_need_not_hold_the_overall_mean_and_an_empty_one_leaves_the_size_untested():
    """The accepted shifts are the intersection of one interval per look, which can exclude the overall mean: the
    interval is still found (and the course's size judged against it), not reported missing."""
    d = (1.0, 1.0001, 1.0002, 5.0, -3.0, 4.0, -2.0, 3.0)  # the first looks pin Δ near 1; the mean is 1.25
    j = _one(Claim(size=10.0, diffs=d), others=15)
    assert j.p_holm < 0.05 and np.isfinite(j.ci_low) and j.ci_high < 10 and j.outcome == "smaller"
    assert not j.ci_low <= float(np.mean(d)) <= j.ci_high


def test_a_claim_checks_its_size_s_sign_and_its_design_s_seeds():
    with pytest.raises(ValueError, match="must have the claim's sign"):
        Claim(expect=1, size=-3.0, diffs=TIGHT)
    with pytest.raises(ValueError, match="more than the design's max"):
        Claim(diffs=(*TIGHT, 1.0), design=Design(3, 8))


def test_a_row_s_own_design_is_used():
    d = (1.0, 1.4, 0.8, 1.1, 1.2)
    assert _one(Claim(diffs=d, design=Design(3, 5))).p == repeated_p(np.array(d), 3, 5)


def test_the_whole_page_procedure_keeps_its_family_wise_error_and_two_standards_do_not():
    """Fast-tier size of bench/page_error.py (the slow tier runs 4 000 pages): pages of 13 null comparisons through
    the production Searcher, a "≈" row on its margin, a "diverges" count; every verdict by stats.page."""
    from bench.page_error import simulate

    result = simulate(600, seed=3)
    assert result["one design"]["fwer"] <= 0.065, result  # nominal 0.05; SE at 600 pages: 0.009
    assert result["two standards"]["fwer"] > result["one design"]["fwer"], result


@pytest.mark.slow
def test_the_whole_page_error_over_4000_pages():
    from bench.page_error import simulate

    result = simulate(4000, seed=1)
    one, two = result["one design"], result["two standards"]
    assert one["fwer"] <= 0.05, result  # 0.038, SE 0.003 (python -m bench.page_error --pages 4000 --seed 1)
    assert two["fwer"] >= 0.06, result  # the test chosen after the data: 0.073
