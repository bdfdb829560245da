"""The adaptive-seeds Searcher (search/adaptive.py), driven the way Tune drives it, on simulated tables.

Model (the issue's design study): Y[row, seed] = mu_row + u_seed + eps, u ~ N(0, 2^2) shared by every row of a
seed, eps ~ N(0, sigma^2); rows compared with a baseline; first 3, max 8; one seed per round.
"""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest

from bench.page_error import drive
from search.adaptive import AdaptiveSeeds, paired_diffs
from search.runconfig import parse_budget as budget_flag
from search.spec import SpecError

BASE = "base"


def _table(rng, effects: dict[str, float], sigma: float, seeds: int = 8):
    u = rng.normal(0, 2, seeds)
    values = {r: mu + u + rng.normal(0, sigma, seeds) for r, mu in {BASE: 0.0, **effects}.items()}
    return lambda row, seed: float(values[row][seed])


def _searcher(rows, **kw) -> AdaptiveSeeds:
    return AdaptiveSeeds([(r, BASE) for r in rows], list(range(8)), 3, "multitask", "max", **kw)


def test_large_effect_stops_at_first_and_null_rows_run_on():
    rng = np.random.default_rng(1)
    s = _searcher(["big", "null"])
    ran = drive(s, _table(rng, {"big": 10.0, "null": 0.0}, sigma=0.2))
    counts = {r: sum(c[0] == r for c in ran) for r in ("big", "null", BASE)}
    assert counts["big"] == 3  # settled at the first look: never given a fourth seed
    assert 3 < counts["null"] <= 8 and counts[BASE] == counts["null"]  # pairs stay complete
    final = s.looks[-1]["comparisons"]
    assert final["big vs base"]["decision"] == "resolved" and final["big vs base"]["seeds"] == 3
    assert s.looks[0]["added"] and s.stopped == "settled"
    assert len(ran) == len(set(ran))  # no (row, seed) twice


def test_null_tables_keep_the_error_rate_and_use_few_seeds():
    """The production decision path (Searcher -> settled -> Holm -> futility), driven as Tune drives it, over 4 000
    null tables: the share with a false positive must stay at the nominal 0.05 (threshold 0.06: Monte-Carlo SE
    0.0034, so a path whose true error is 0.07 fails this ~99 % of the time)."""
    rng = np.random.default_rng(7)
    false_positive, seeds_used, tables = 0, [], 4000
    for _ in range(tables):
        rows = ["a", "b", "c", "d"]
        s = _searcher(rows)
        drive(s, _table(rng, dict.fromkeys(rows, 0.0), sigma=0.5))
        last = s.looks[-1]["comparisons"]
        false_positive += any(v["decision"] == "resolved" for v in last.values())
        seeds_used += [v["seeds"] for v in last.values()]
        assert max(v["seeds"] for v in last.values()) <= 8
    assert false_positive / tables <= 0.06, false_positive / tables
    assert np.mean(seeds_used) <= 6.5


def test_failed_trials_use_up_their_seed_and_pairs_skip_it():
    rng = np.random.default_rng(3)
    table = _table(rng, {"x": 0.3}, sigma=1.0)
    s = _searcher(["x"])
    ran = drive(s, lambda row, seed: None if (row, seed) == ("x", 1) else table(row, seed))
    assert ("x", 1) in ran and ran.count(("x", 1)) == 1
    diffs = paired_diffs(s.values, "x", BASE, s.seeds)
    assert len(diffs) == sum(1 for r, _ in ran if r == "x") - 1


def test_budget_and_prior_trials():
    rng = np.random.default_rng(5)
    table = _table(rng, {"a": 0.0, "b": 0.0}, sigma=1.0)
    s = _searcher(["a", "b"], budget={"trials": 11})
    ran = drive(s, table)
    assert len(ran) <= 11 and s.stopped == "budget"
    # an extended experiment: its trials count as run, never rerun, and the first look is taken at once
    prior = {(r, seed): table(r, seed) for r in ("a", "b", BASE) for seed in range(3)}
    s = _searcher(["a", "b"], prior=prior)
    ran = drive(s, table)
    assert not set(ran) & set(prior) and s.looks[0]["comparisons"]["a vs base"]["seeds"] == 3


def test_save_and_restore_continue_the_same_design(tmp_path):
    rng = np.random.default_rng(11)
    table = _table(rng, {"a": 1.0}, sigma=1.0)
    s = _searcher(["a"])
    first = [s.suggest(f"t{i}") for i in range(7)]  # 6 trials of round 1, then a wait
    assert first[-1] is None
    for i in range(3):
        s.on_trial_complete(f"t{i}", {"status": "completed", "multitask": table(first[i]["variant"],
                                                                                first[i]["seed"])})
    s.save(str(tmp_path / "state.pkl"))
    fresh = _searcher(["a"])
    fresh.restore(str(tmp_path / "state.pkl"))
    assert fresh.pending == s.pending and fresh.values == s.values and fresh.looks == s.looks
    pickle.dumps(fresh)  # Tune pickles searchers with the tuner
    fresh.save_to_dir(str(tmp_path))  # Tune's snapshot: the looks go beside it, into the experiment folder
    assert json.loads((tmp_path / "seed_looks.json").read_text())["looks"] == s.looks


def test_budget_flag():
    assert budget_flag("trials=40,hours=2.5") == {"trials": 40, "hours": 2.5}
    for bad in ("trials", "days=2", "hours=-1", "trials=x"):
        with pytest.raises(SpecError, match="--budget"):
            budget_flag(bad)


def test_paired_diffs_skip_missing_and_failed_seeds():
    values = {"a": {0: 1.0, 1: 2.0, 2: math.nan, 3: 4.0}, BASE: {0: 0.5, 2: 1.0, 3: 1.0}}
    assert paired_diffs(values, "a", BASE, [0, 1, 2, 3]) == [0.5, 3.0]


def test_plan_from_a_pilot(tmp_path):
    """--dry-run --plan-from: power, expected seeds and cost of the design, from a pilot's per-trial results."""
    import pandas as pd

    from search.cli import _experiment, parse_args
    from search.plan import plan
    from search.record import experiment_record

    rng = np.random.default_rng(2)
    rows = [{"variant": v, "seed": s, "status": "completed", "train_time_s": 90.0,
             "multitask": 10 + mu + rng.normal(0, 0.5) + s} for v, mu in (("L2", 0), ("L1", 3), ("berHu", 0.2))
            for s in range(3)]
    pilot = tmp_path / "pilot"
    pilot.mkdir()
    pd.DataFrame(rows).to_parquet(pilot / "results.parquet")
    args = parse_args(["ablations/depth_loss.yaml", "--seeds", "first=3,max=8", "--compare", "L1 vs L2",
                       "--compare", "berHu vs L2"])
    (pilot / "mtl_experiment.json").write_text(experiment_record(_experiment(args).configure("smoke")).to_json())
    text = plan(_experiment(args), str(pilot))
    assert "plan from 9 pilot trial(s): design first 3, max 8" in text and "0.05 / 2" in text
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if " vs L2" in line}
    assert "| 1.00 " in lines["L1 vs L2"] or "| 0.9" in lines["L1 vs L2"]  # a large effect: high power
    assert "> 40" in lines["berHu vs L2"] or int(lines["berHu vs L2"].split("|")[-2]) > 8  # a small one: more seeds
    assert "trial-hours" in text and "optimistic" in text


@pytest.mark.parametrize(("old_seeds", "new_seeds", "margin", "expected"), [
    ("first=3,max=8", "first=3,max=13", None, ["max: 8 -> 13"]),  # re-extending a finished design
    ("first=3,max=8", "first=3,max=8", None, []),
    ("3", "first=3,max=8", None, []),  # a fixed-seed run is the new design's first look
    ("3", "first=2,max=8", None, ["first: its 3 fixed seeds are the design's first look -> first=2"]),
    ("first=3,max=8", "first=3,max=8", 1.0, ["report.equivalence_margin: None -> {'multitask': 1.0}"]),
    ("first=3,max=8", "first=3,max=8,start=100", None, ["start: 0 -> 100"]),  # fresh seeds are a new study
    ("3", "first=3,max=8,start=100", None, ["start: its seeds [0, 1, 2] are the design's first look -> seeds "
                                            "from 100"]),
    ("3", "first=3,max=20", None, ["max: a fixed-seed experiment is the first look of the default design (max 8), "
                                   "declared before its data; max=20 chosen after it could be picked to fit them"]),
])
def test_extend_refuses_a_design_other_than_the_one_that_ran(old_seeds, new_seeds, margin, expected):
    """--extend continues the design the experiment ran, or its error rate would not be the design's: another
    first / max / family, or a margin added after the results, is named (search.extend.design_changes)."""
    import dataclasses

    from search.cli import _experiment, parse_args
    from search.extend import design_changes
    from search.record import experiment_record

    spec = "ablations/depth_loss.yaml"
    old = _experiment(parse_args([spec, "--seeds", old_seeds])).configure("smoke", sets={"pretrained": False})
    new = _experiment(parse_args([spec, "--seeds", new_seeds])).configure("smoke", sets={"pretrained": False})
    if margin is not None:
        report = new.spec.report.model_copy(update={"equivalence_margin": {"multitask": margin}})
        new = dataclasses.replace(new, spec=new.spec.model_copy(update={"report": report}))
    changes = design_changes(experiment_record(old), new)
    assert [c.split(" (a margin")[0] for c in changes] == expected
    if "start=100" in new_seeds:
        assert new.seeds == tuple(range(100, 108))  # a new study on fresh seeds: 100 .. 107


def test_a_dry_run_refuses_the_extension_a_real_run_would_refuse(capsys):
    from app.cli import main

    argv = ["ablations/depth_loss.yaml", "--dry-run", "--profile", "cpu", "--probe-steps", "1", "--set",
            "pretrained=false", "--set", "lr=0.001", "--compare", "L1 vs L2", "--extend", "docs/findings/depth_loss"]
    assert main([*argv, "--seeds", "first=3,max=8,family=14,start=100"]) == 2
    assert "changed: start: 0 -> 100" in capsys.readouterr().err
    assert main([*argv, "--seeds", "first=3,max=8,family=14"]) == 0  # the design it ran
