"""Table statistics pinned against scipy / numpy on known inputs, and a simulation of the paired design."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.tables import ablation_stats, display_table, stats_footnote
from stats.inference import axis_trends, compare, holm, numeric_axis, seeds_needed, trend

BASE = pd.Series([40.1, 43.0, 38.2], index=[0, 1, 2])
VARIANT = pd.Series([41.0, 44.1, 38.9], index=[0, 1, 2])


def test_paired_when_seeds_pair_up_matches_scipy():
    r = compare(VARIANT, BASE)
    d = (VARIANT - BASE).to_numpy()
    low, high = stats.t.interval(0.95, df=2, loc=d.mean(), scale=stats.sem(d))
    assert r["test"] == "paired t" and r["n_pairs"] == 3
    assert r["delta"] == pytest.approx(d.mean())
    assert (r["delta_ci_low"], r["delta_ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert r["p_value"] == pytest.approx(stats.ttest_rel(VARIANT, BASE).pvalue)


def test_welch_when_seeds_do_not_pair_up_matches_scipy():
    other = pd.Series([45.0, 46.2, 44.8, 47.0], index=[5, 6, 7, 8])
    r = compare(other, BASE)
    assert r["test"] == "Welch t"
    assert r["p_value"] == pytest.approx(stats.ttest_ind(other, BASE, equal_var=False).pvalue)
    # the Welch–Satterthwaite CI equals scipy's own interval for the same test
    ci = stats.ttest_ind(other, BASE, equal_var=False).confidence_interval(0.95)
    assert (r["delta_ci_low"], r["delta_ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert math.isnan(compare(pd.Series([1.0]), BASE)["p_value"])


def test_differences_without_variance_are_undefined_never_significant():
    # before: p = 0 and "p_adj<0.001" from two seeds whose differences happen to be equal
    same = compare(BASE + 0.0, BASE)
    assert math.isnan(same["p_value"]) and same["delta"] == 0.0
    shifted = compare(BASE + 2.0, BASE)
    assert math.isnan(shifted["p_value"]) and shifted["delta"] == pytest.approx(2.0)
    assert "undefined" in shifted["test"]
    two = compare(pd.Series([31.0, 35.0]), pd.Series([30.0, 34.0]))
    assert math.isnan(two["p_value"])
    table = ablation_stats(pd.DataFrame({"variant": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1],
                                         "status": "completed", "multitask": [30.0, 34.0, 31.0, 35.0]}),
                           ["a", "b"], "a", ["multitask"])
    row = table[table["variant"] == "b"].iloc[0]
    assert math.isnan(row["p_holm"]) and "test undefined" in display_table(table, lambda s: s).iloc[1]["Δ Multitask"]


def test_one_missing_seed_keeps_the_pairing_on_the_seeds_both_sides_have():
    # the repro: paired Δ 1.05, p 0.0005; dropping seed 3 of b switched to Welch (Δ 3.53, p 0.45)
    a = pd.Series([30.0, 35.0, 40.0, 45.0], index=[0, 1, 2, 3])
    b = a - pd.Series([1.0, 1.2, 0.9, 1.1], index=[0, 1, 2, 3])
    full = compare(a, b)
    assert full["test"] == "paired t" and full["delta"] == pytest.approx(1.05)
    assert full["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue) and full["p_value"] < 0.001
    missing = compare(a, b.drop(3))
    assert missing["test"] == "paired t" and missing["n_pairs"] == 3 and missing["dropped_seeds"] == "3"
    assert missing["delta"] == pytest.approx((a - b)[:3].mean())
    assert missing["p_value"] == pytest.approx(stats.ttest_rel(a[:3], b[:3]).pvalue) and missing["p_value"] < 0.01
    assert compare(a, b.drop([1, 2, 3]).rename(index={0: 9}))["test"] == "Welch t"  # < 2 shared seeds
    frame = pd.DataFrame({"variant": ["a"] * 4 + ["b"] * 3, "seed": [0, 1, 2, 3, 0, 1, 2], "status": "completed",
                          "multitask": [*a, *b[:3]]})
    note = stats_footnote(ablation_stats(frame, ["a", "b"], "a", ["multitask"]))
    assert "seeds without a pair left out: b (3)" in note


def test_seeds_needed_is_monotone_and_at_the_holm_level():
    # before: NaN power values were skipped, so effect 8 needed 3 seeds and effect 10 needed 4
    effects = [0.5, 1, 2, 4, 6, 8, 10, 15, 30]
    needed = [seeds_needed(d, True) for d in effects]
    assert needed == sorted(needed, reverse=True) and needed[-1] == 2
    assert seeds_needed(10, True) <= seeds_needed(8, True)
    # the level the verdict uses: a Holm family of 12 needs more seeds than a single test
    assert seeds_needed(1.0, True, 0.05 / 12) > seeds_needed(1.0, True, 0.05)
    frame = pd.DataFrame({"variant": [v for v in "abcde" for _ in range(3)], "seed": [0, 1, 2] * 5,
                          "status": "completed", "multitask": [30, 32, 34, 31, 33, 36, 30, 33, 34, 32, 32, 35,
                                                               30.5, 32.2, 34.9]})
    table = ablation_stats(frame, list("abcde"), "a", ["multitask"])
    row = table[table["variant"] == "b"].iloc[0]
    assert row["seeds_needed"] == seeds_needed(row["effect_size"], True, 0.05 / 4)


def test_a_log_axis_with_zero_is_fitted_on_its_positive_values():
    # before: log10(0) = -inf, then an SVD error, and no report
    fit = trend([0, 0, 1e-4, 1e-4, 1e-3, 1e-3], [10, 11, 12, 13, 15, 16], log=True)
    assert fit["excluded"] == 2 and fit["n"] == 4 and np.isfinite(fit["slope"])
    assert "left out of the log axis" in fit["model"]


def test_holm_matches_the_step_down_definition():
    p = [0.01, 0.04, 0.03, 0.005, float("nan")]
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1, made monotone
    assert holm(p)[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(holm(p)[4])


def _power(n: int, d: float, paired: bool) -> float:
    df = n - 1 if paired else 2 * n - 2
    nc = d * math.sqrt(n) if paired else d * math.sqrt(n / 2)
    crit = stats.t.ppf(0.975, df)
    return stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)


@pytest.mark.parametrize("paired", [True, False])
@pytest.mark.parametrize("d", [0.5, 1.3, 3.0])
def test_seeds_needed_is_the_first_n_with_80_percent_power(d, paired):
    n = int(seeds_needed(d, paired))
    assert _power(n, d, paired) >= 0.8 and (n == 2 or _power(n - 1, d, paired) < 0.8)
    assert seeds_needed(0.0, paired) == math.inf and seeds_needed(1e-4, paired) == math.inf


def test_trend_matches_linregress_and_seed_blocks_match_lstsq():
    x = [0.2, 0.4, 0.6, 0.8] * 2
    seeds = [0] * 4 + [1] * 4
    y = [20.0, 23.1, 24.9, 28.2, 25.0, 27.8, 30.2, 33.1]
    plain = trend(x, y)
    ref = stats.linregress(x, y)
    assert plain["model"] == "OLS" and plain["slope"] == pytest.approx(ref.slope)
    assert plain["p_value"] == pytest.approx(ref.pvalue)
    half = stats.t.ppf(0.975, len(x) - 2) * ref.stderr
    assert plain["ci_low"] == pytest.approx(ref.slope - half)
    blocked = trend(x, y, seeds)
    design = np.column_stack([np.ones(8), x, np.array(seeds) == 1])
    coef, *_ = np.linalg.lstsq(design, np.array(y), rcond=None)
    assert blocked["model"] == "OLS, seed blocks" and blocked["slope"] == pytest.approx(coef[1])
    assert blocked["ci_high"] - blocked["ci_low"] < plain["ci_high"] - plain["ci_low"]  # the seed offset is removed
    assert trend([1e-4, 1e-3, 1e-2], [1.0, 2.0, 3.0], log=True)["slope"] == pytest.approx(1.0)


def test_numeric_axes_and_trends_per_group():
    assert numeric_axis(["[0.2, 0.8]", "[0.5, 0.5]"]) == [0.2, 0.5] and numeric_axis(["adam", "sgd"]) is None
    rows = [{"variant": f"{o} {lr}", "seed": s, "status": "completed", "config/optimizer": o, "config/lr": lr,
             "semseg_miou": (10 if o == "adam" else 5) * np.log10(lr) + s}
            for o in ("adam", "sgd") for lr in (1e-4, 1e-3, 1e-2) for s in (0, 1)]
    fits = axis_trends(pd.DataFrame(rows), ["optimizer", "lr"], ["semseg_miou"]).set_index("group")
    assert fits.loc["optimizer=adam", "slope"] == pytest.approx(10.0)
    assert fits.loc["optimizer=sgd", "slope"] == pytest.approx(5.0) and fits["log_x"].all()


def _table(rng, planted: float, k: int = 4, seeds: int = 3) -> pd.DataFrame:
    """A baseline and k variants; each seed adds one shared offset (sd 2.0), each trial its own noise (sd 0.2)."""
    offset = rng.normal(0, 2.0, seeds)
    rows = []
    for v in range(k + 1):
        effect = planted if v == 1 else 0.0
        rows += [{"variant": f"v{v}", "seed": s, "status": "completed",
                  "multitask": 40 + offset[s] + effect + rng.normal(0, 0.2)} for s in range(seeds)]
    return pd.DataFrame(rows)


def _simulated(rng, planted: float, k: int = 4, seeds: int = 3) -> list[pd.Series]:
    """The same design as `_table`, as one Series per variant indexed by seed (v0 first): fast enough for 500."""
    offset = rng.normal(0, 2.0, seeds)
    return [pd.Series(40 + offset + (planted if v == 1 else 0.0) + rng.normal(0, 0.2, seeds), index=range(seeds))
            for v in range(k + 1)]


def test_simulated_tables_paired_detects_what_welch_cannot_and_holm_controls_false_positives(monkeypatch):
    # statsmodels' Holm runs gc.collect() on every call: harmless in a report, minutes over 500 tables in a big
    # test process
    import gc

    monkeypatch.setattr(gc, "collect", lambda *a: 0)  # it imports gc inside the function: patch gc itself
    rng = np.random.default_rng(2026)
    paired = welch = false_positive = 0
    for _ in range(500):
        base, var = _simulated(rng, planted=1.0, k=1)
        paired += compare(var, base, power=False)["p_value"] < 0.05
        shifted = pd.Series(var.to_numpy(), index=[10, 11, 12])  # the same trials, seeds not paired
        welch += compare(shifted, base, power=False)["p_value"] < 0.05
        null = _simulated(rng, planted=0.0)
        false_positive += min(holm([compare(v, null[0], power=False)["p_value"] for v in null[1:]])) < 0.05
    assert paired / 500 >= 0.75
    assert welch / 500 < 0.10
    assert false_positive / 500 <= 0.07


def test_table_reports_test_raw_and_adjusted_p_and_seeds_needed():
    t = _table(np.random.default_rng(1), planted=3.0)
    st = ablation_stats(t, [f"v{v}" for v in range(5)], "v0", columns=["multitask"])
    v1 = st[st.variant == "v1"].iloc[0]
    assert v1["test"] == "paired t" and v1["p_holm"] >= v1["p_value"] and v1["within_noise"] is False
    others = st[st.variant.isin(["v2", "v3", "v4"])]
    assert (others["p_holm"] >= others["p_value"]).all()
    cell = display_table(st, bold=lambda s: s).set_index("Variant").loc["v1", "Δ Multitask"]
    assert cell.startswith("+3.") and "p_adj" in cell and "[" in cell
    assert "paired t-test" in stats_footnote(st) and "Holm" in stats_footnote(st)


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for _ in range(10):  # statsmodels runs gc.collect() per call: ~0.7 s each in a full test process
        p = rng.uniform(0, 0.3, rng.integers(1, 15))
        assert np.allclose(holm(p), multipletests(p, method="holm")[1])
    assert np.isnan(holm([0.01, np.nan])[1])
