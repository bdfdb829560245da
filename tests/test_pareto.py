"""Fronts, hypervolume and the dominance test on paired seeds (stats.pareto), checked on hand-computed cases and
by simulating the whole procedure a report runs (every pair of rows, the IUT per pair, Holm across the table)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from stats.pareto import (
    dominance_p,
    dominance_table,
    hv_contributions,
    hypervolume,
    hypervolume_over_seeds,
    nondominated,
    pareto_ranks,
)

TWO = {"semseg_miou": "max", "depth_silog": "min"}


def test_fronts_ranks_and_hypervolume_by_hand():
    # minimise both: (1,3) (2,2) (3,1) form the front, (2.5,2.5) is dominated by (2,2)
    x = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [2.5, 2.5], [np.nan, 0.0]])
    assert nondominated(x, ["min", "min"]).tolist() == [True, True, True, False, False]
    assert pareto_ranks(x, ["min", "min"])[:4].tolist() == [0, 0, 0, 1]
    # staircase up to (4, 4): 3x1 + 2x1 + 1x1 = 6; each front point alone adds 1
    assert hypervolume(x, ["min", "min"], [4, 4]) == pytest.approx(6.0)
    assert hv_contributions(x, ["min", "min"], [4, 4]).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    # a maximised objective: mIoU 30 over a reference of 0, SI-log 34 under 50 -> 30 x 16
    assert hypervolume(np.array([[30.0, 34.0]]), ["max", "min"], [0, 50]) == pytest.approx(480.0)
    assert hypervolume(np.array([[30.0, 60.0]]), ["max", "min"], [0, 50]) == 0.0  # beyond the reference


def test_hypervolume_over_seeds_is_a_t_interval_of_each_seeds_front():
    frame = pd.DataFrame({"variant": ["a", "b", "a", "b"], "seed": [0, 0, 1, 1],
                          "semseg_miou": [10.0, 20.0, 12.0, 20.0], "depth_silog": [30.0, 40.0, 30.0, 40.0]})
    hv = hypervolume_over_seeds(frame, ["a", "b"], TWO, [0, 50])
    # seed 0: 10x20 + 10x10 = 300; seed 1: 12x20 + 8x10 = 320
    assert hv["mean"] == pytest.approx(310.0) and hv["n"] == 2 and hv["ci_low"] < 300 < 320 < hv["ci_high"]


def test_iut_p_is_the_largest_one_sided_p():
    seeds = range(5)
    a = {"semseg_miou": pd.Series([30, 31, 29, 30.5, 30.2], index=seeds),
         "depth_silog": pd.Series([34, 33.8, 34.5, 34.1, 33.9], index=seeds)}
    b = {"semseg_miou": pd.Series([25, 26, 24.5, 25.5, 25.1], index=seeds),
         "depth_silog": pd.Series([34.3, 34.0, 34.6, 34.5, 34.0], index=seeds)}
    p, n = dominance_p(a, b, TWO)
    p_miou, _ = dominance_p({"semseg_miou": a["semseg_miou"]}, {"semseg_miou": b["semseg_miou"]},
                            {"semseg_miou": "max"})
    p_silog, _ = dominance_p({"depth_silog": a["depth_silog"]}, {"depth_silog": b["depth_silog"]},
                             {"depth_silog": "min"})
    assert n == 5 and p == pytest.approx(max(p_miou, p_silog)) and p_miou < p_silog < 0.05


def _table(rng, means: np.ndarray, seeds: int, sd: float = 1.0, seed_sd: float = 1.0, rho: float = -0.5):
    """Rows x 2 objectives (both maximised here), a shared seed effect and noise correlated across objectives."""
    cov = sd**2 * np.array([[1.0, rho], [rho, 1.0]])
    shared = rng.normal(0, seed_sd, size=(seeds, 2))
    lines = []
    for r, mu in enumerate(means):
        noise = rng.multivariate_normal([0, 0], cov, size=seeds)
        for s in range(seeds):
            lines.append({"variant": f"r{r}", "seed": s, "o1": mu[0] + shared[s, 0] + noise[s, 0],
                          "o2": mu[1] + shared[s, 1] + noise[s, 1]})
    return pd.DataFrame(lines), [f"r{r}" for r in range(len(means))]


BOTH_MAX = {"o1": "max", "o2": "max"}


def _claims(rng, means, seeds) -> pd.DataFrame:
    frame, rows = _table(rng, np.asarray(means, dtype=float), seeds)
    return dominance_table(frame, rows, BOTH_MAX).table


def test_equal_rows_claim_a_dominance_in_at_most_5_percent_of_tables():
    """2 000 tables of 4-6 equal rows, 3-8 seeds: any claimed dominance is a family-wise error."""
    rng = np.random.default_rng(20261206)
    draws = 2000
    errors = 0
    for i in range(draws):
        rows, seeds = 4 + i % 3, 3 + i % 6
        errors += bool((_claims(rng, np.zeros((rows, 2)), seeds)["dominated_by"] != "").any())
    rate = errors / draws
    se = math.sqrt(0.05 * 0.95 / draws)
    print(f"\nequal rows: family-wise error {rate:.4f} (Monte-Carlo SE {se:.4f}) over {draws} tables")
    assert rate <= 0.05 + 2 * se


def test_a_row_on_the_front_of_a_trade_off_is_called_dominated_in_at_most_5_percent():
    """One row better on o1 and worse on o2 than the rest (the least favourable case: o1 tied at the boundary, and
    a clear trade-off), among 4-6 rows: it is called dominated in <= 5 % of 2 000 tables."""
    rng = np.random.default_rng(7)
    for gain, draws in ((0.0, 2000), (1.0, 500)):
        called = 0
        for i in range(draws):
            rows, seeds = 4 + i % 3, 3 + i % 6
            means = np.zeros((rows, 2))
            means[0] = [gain, -3.0]  # row r0: better (or tied) on o1, clearly worse on o2
            called += bool(_claims(rng, means, seeds).at["r0", "dominated_by"])
        rate = called / draws
        print(f"\nfront row (o1 {gain:+.0f} sd, o2 -3 sd): called dominated in {rate:.4f} of {draws} tables")
        assert rate <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / draws)


@pytest.mark.slow  # 3 000 tables: the figure for the statistics guide
def test_power_to_find_a_planted_dominance_grows_with_seeds_and_size():
    """Power curve: r1 better than r0 by `size` (in units of the per-seed noise of a difference) on both objectives,
    5 rows; printed as a table, with the size at which power reaches 0.8 for 3, 5 and 8 seeds."""
    rng = np.random.default_rng(11)
    sizes, draws = (1.0, 1.5, 2.0, 3.0, 4.0), 200
    curve = {}
    for seeds in (3, 5, 8):
        for size in sizes:
            means = np.zeros((5, 2))
            # a paired difference has sd sqrt(2) (two rows' noise): size sd of a difference
            means[1] = [size * math.sqrt(2), size * math.sqrt(2)]
            hits = sum(_claims(rng, means, seeds).at["r0", "dominated_by"] == "r1" for _ in range(draws))
            curve[(seeds, size)] = hits / draws
    lines = ["seeds | " + " | ".join(f"{s:g}" for s in sizes) + " | size for 0.8"]
    for seeds in (3, 5, 8):
        enough = next((s for s in sizes if curve[(seeds, s)] >= 0.8), None)
        lines.append(f"{seeds} | " + " | ".join(f"{curve[(seeds, s)]:.2f}" for s in sizes) +
                     f" | {enough if enough is not None else '> ' + str(sizes[-1])}")
    print("\npower of the dominance test (5 rows, Holm over 10 pairs)\n" + "\n".join(lines))
    assert curve[(8, 4.0)] >= 0.8 and curve[(8, 2.0)] > curve[(3, 2.0)]
    for seeds in (3, 5, 8):
        assert curve[(seeds, 4.0)] >= curve[(seeds, 1.0)]


def test_the_median_attainment_surface_by_hand():
    from stats.pareto import attainment_surface

    # seed 0 attains (1,3) and (3,1); seed 1 attains (2,2) ((4,4) is dominated): at 50 % of 2 seeds, the union
    frame = pd.DataFrame({"variant": ["a", "b", "a", "b"], "seed": [0, 0, 1, 1],
                          "x": [1.0, 3.0, 2.0, 4.0], "y": [3.0, 1.0, 2.0, 4.0]})
    surface = attainment_surface(frame, ["a", "b"], {"x": "min", "y": "min"})
    assert surface.tolist() == [[1, 3], [2, 3], [2, 2], [3, 2], [3, 1]]
    # a maximised objective comes back in its own units
    flipped = attainment_surface(frame.assign(x=-frame["x"]), ["a", "b"], {"x": "max", "y": "min"})
    assert flipped[:, 0].tolist() == [-1, -2, -2, -3, -3]
    assert attainment_surface(frame[frame["seed"] == 0], ["a", "b"], {"x": "min", "y": "min"}) is None  # one seed
