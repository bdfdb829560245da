"""The frontier study: verdicts on hand-made values, the whole page's error simulated, the spec's design checked
before Ray, and a two-method study through Tune whose page gives a verdict per method."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import write_spec

from analysis.frontier import main as frontier_main
from app.cli import main
from search.frontier_seeds import FrontierSeeds
from stats.frontier import frontier_verdicts, tost_p

OBJ = {"semseg_miou": "max", "depth_silog": "min"}
MARGIN = {"semseg_miou": 1.0, "depth_silog": 1.0}


def _values(means: dict[str, tuple[float, float]], sd: float, n: int, rng: np.random.Generator) -> dict:
    seeds = np.arange(1, n + 1)
    shared = rng.normal(0, sd, (n, 2))  # a seed's shared part: what pairing removes
    return {row: {m: pd.Series(mu[i] + shared[:, i] + rng.normal(0, sd / 4, n), index=seeds)
                  for i, m in enumerate(OBJ)} for row, mu in means.items()}


def test_tost_shows_equivalence_only_well_within_the_margin():
    assert tost_p(np.array([0.1, -0.1, 0.05, 0.0]), 1.0) < 0.01
    assert tost_p(np.array([0.9, 1.1, 1.0, 0.95]), 1.0) > 0.3
    assert math.isnan(tost_p(np.array([0.3]), 1.0))


def test_each_verdict_on_hand_made_results():
    rng = np.random.default_rng(0)
    values = _values({"w1": (30, 20), "w2": (32, 22),  # the front: seg up, depth worse
                      "better": (34, 18), "worse": (26, 25), "same": (31.0, 21.0), "noisy": (31, 21)}, 1.0, 8, rng)
    noisy = {m: s + rng.normal(0, 6, len(s)) for m, s in values["noisy"].items()}
    values["noisy"] = noisy
    result = frontier_verdicts(values, ["better", "worse", "same", "noisy"], ["w1", "w2"], OBJ,
                               {"semseg_miou": 2.5, "depth_silog": 2.5})
    v = result.verdicts["verdict"]
    assert v["better"] == "beats the front" and v["worse"] == "behind the front"
    assert v["same"] == "on the front" and v["noisy"] == "unresolved"
    assert math.isfinite(result.verdicts.loc["noisy", "seeds_needed"]) or result.verdicts.loc["noisy", "pairs"] == 8
    assert result.family == 4 * 2 * 3  # every test of the page in one Holm family


# the binding null (at the margin) in the fast tier; all rows alike, which the page meets conservatively, in the slow
@pytest.mark.parametrize("scenario", [pytest.param("no dominance", marks=pytest.mark.slow), "at the margin"])
def test_the_whole_page_keeps_its_family_wise_error(scenario):
    """The procedure as the page runs it - 3 methods x 3 weighted sums, 3 paired seeds, three tests each, Holm
    over all - under the worst null: no method dominates or is dominated (all rows alike), or every method differs
    from every front row by exactly the margin on one objective. Any verdict other than 'unresolved' (or 'on the
    front' under the first null, where equivalence is true) is an error; its rate stays below alpha."""
    rng = np.random.default_rng(1)
    draws, errors = 400, 0
    for _ in range(draws):
        if scenario == "no dominance":
            means = {r: (30.0, 20.0) for r in ("w1", "w2", "w3", "m1", "m2", "m3")}
        else:
            means = {**{w: (30.0, 20.0) for w in ("w1", "w2", "w3")}, **{m: (31.0, 20.0) for m in ("m1", "m2", "m3")}}
        values = _values(means, 1.0, 3, rng)
        v = frontier_verdicts(values, ["m1", "m2", "m3"], ["w1", "w2", "w3"], OBJ, MARGIN).verdicts["verdict"]
        wrong = {"beats the front", "behind the front"} | ({"on the front"} if scenario == "at the margin" else set())
        errors += any(x in wrong for x in v)
    rate = errors / draws
    assert rate <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / draws), rate


FRONTIER = """
fixed: {optimizer: adam}
variants:
  - {name: "sum 0.3 / 0.7", loss_weights: [0.3, 0.7]}
  - {name: "sum 0.7 / 0.3", loss_weights: [0.7, 0.3]}
  - {name: UPGrad, task_weighting: upgrad}
  - {name: GradNorm, task_weighting: gradnorm}
grid: {lr: [1.0e-3, 3.0e-3]}
seeds: %s
objectives: {semseg_miou: max, depth_silog: min}
report:
  frontier: {%s}
"""


GOOD = {"front": '["sum 0.3 / 0.7", "sum 0.7 / 0.3"]', "tune": "lr", "tuning_seeds": "[0]",
        "margin": "{semseg_miou: 1.0, depth_silog: 1.0}"}


def _design(seeds: str = "3", **changes: str) -> str:
    return FRONTIER % (seeds, ", ".join(f"{k}: {v}" for k, v in {**GOOD, **changes}.items()))


@pytest.mark.parametrize("changes, needle", [
    ({"margin": "{semseg_miou: 1.0}"}, "report.frontier.margin': one margin > 0 per objective"),
    ({"front": '[nope, "sum 0.7 / 0.3"]'}, "report.frontier.front': nope"),
    ({"tune": "epochs"}, "'epochs' is not a grid key"),
    ({"tuning_seeds": "[0, 1]"}, "leave two or more to compare on"),
    ({"seeds": "{first: 2, max: 3, compare: [\"UPGrad vs GradNorm\"]}"}, "leave out compare and family"),
])
def test_a_bad_frontier_design_is_refused_before_ray(tmp_path, capsys, monkeypatch, changes, needle):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray must not start on bad input"))
    assert main([str(write_spec(tmp_path, _design(**changes))), "--dry-run", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err, err


def test_a_two_method_frontier_study_through_tune_gives_a_verdict_per_method(ray_local, tmp_path):
    spec = write_spec(tmp_path, _design(seeds="{first: 2, max: 3}"), name="frontier_smoke")
    assert main([str(spec), "--profile", "smoke", "--storage", str(tmp_path / "r"), "--no-dashboard", "--no-report",
                 "--checkpoints", "none", "--set", "epochs=1", "--set", "train_images=8"]) == 0
    out = tmp_path / "frontier.md"
    assert frontier_main([str(tmp_path / "r" / "frontier_smoke"), "--out", str(out),
                          "--copy", str(tmp_path / "copy")]) == 0
    text = out.read_text()
    assert (tmp_path / "frontier.png").is_file() and (tmp_path / "copy" / "frontier_smoke").is_dir()
    for method in ("UPGrad", "GradNorm"):
        line = next(line for line in text.splitlines() if line.startswith(f"| {method} "))
        assert any(v in line for v in ("beats the front", "behind the front", "on the front", "unresolved")), line
    assert "Headline." in text and "Holm-adjusted together" in text and "Seeds: adaptive, 2 comparison" in text
    assert "step (ms)" in text and "Planned: at most 20 trials" in text and "looks and stopped" in text


def test_the_frontier_plan_from_a_pilot(tmp_path, capsys):
    """--dry-run --plan-from: each method's route to a verdict, its power and seeds, and the trials in all."""
    rng = np.random.default_rng(2)
    rows = []
    for variant, mu in {"sum 0.3 / 0.7": (30, 20), "sum 0.7 / 0.3": (32, 22), "UPGrad": (36, 16),
                        "GradNorm": (31, 21)}.items():
        for lr, shift in ((0.001, 0.0), (0.003, -3.0)):
            for seed in range(4):
                rows.append({"variant": f"{variant} | lr={lr:g}", "seed": seed, "status": "completed",
                             "semseg_miou": mu[0] + shift + rng.normal(0, 0.3), "train_time_s": 6.0,
                             "depth_silog": mu[1] - shift + rng.normal(0, 0.3)})
    from search.record import experiment_record
    from search.trials import load_experiment

    spec = write_spec(tmp_path, _design(seeds="{first: 3, max: 8}"))
    pilot = tmp_path / "pilot"
    pilot.mkdir()
    pd.DataFrame(rows).to_parquet(pilot / "results.parquet")
    (pilot / "mtl_experiment.json").write_text(experiment_record(load_experiment(spec).configure("smoke")).to_json())
    assert main([str(spec), "--dry-run", "--profile", "smoke", "--plan-from", str(pilot)]) == 0
    out = capsys.readouterr().out
    assert "frontier plan from 32 pilot trial(s): 2 weighted sums, 2 methods" in out, out
    upgrad = next(line for line in out.splitlines() if line.startswith("| UPGrad"))
    assert "beats vs" in upgrad and "1.00" in upgrad, upgrad
    assert "expected: ~" in out and "(8 tuning; at most 40)" in out


def _drive(searcher: FrontierSeeds, truth: dict[str, tuple[float, float]], rng: np.random.Generator,
           sd: float = 1.0) -> int:
    """Run a FrontierSeeds design to its end without Ray: each suggested (row, seed) gets truth + the seed's shared
    part + its own noise. Returns the trials it ran."""
    shared: dict[int, np.ndarray] = {}
    trials = 0
    while True:
        batch = []
        while isinstance(cell := searcher.suggest(f"t{trials + len(batch)}"), dict):
            batch.append(cell)
        for i, cell in enumerate(batch):
            noise = shared.setdefault(cell["seed"], rng.normal(0, sd, 2)) + rng.normal(0, sd / 4, 2)
            mu = truth[cell["variant"]]
            searcher.on_trial_complete(f"t{trials + i}", {"status": "completed", "semseg_miou": mu[0] + noise[0],
                                                          "depth_silog": mu[1] + noise[1]})
        trials += len(batch)
        if not batch:
            return trials


def _searcher(variants: list[str], front: list[str], first: int = 3, last: int = 8) -> FrontierSeeds:
    rows = {v: [f"{v} | lr=0.001", f"{v} | lr=0.003"] for v in variants}
    return FrontierSeeds(rows, front, [0], list(range(1, last + 1)), first, OBJ, MARGIN, [0.0, 100.0])


def test_the_adaptive_design_settles_clear_methods_early_and_tunes_on_the_tuning_seed_only():
    rng = np.random.default_rng(3)
    truth = {"w1 | lr=0.001": (30, 20), "w1 | lr=0.003": (31, 21), "w2 | lr=0.001": (32, 22),
             "w2 | lr=0.003": (20, 30), "good | lr=0.001": (38, 15), "good | lr=0.003": (10, 40),
             "bad | lr=0.001": (20, 30), "bad | lr=0.003": (21, 31)}
    searcher = _searcher(["w1", "w2", "good", "bad"], ["w1", "w2"])
    trials = _drive(searcher, truth, rng, sd=0.5)
    assert searcher.chosen == {"w1": "w1 | lr=0.003", "w2": "w2 | lr=0.001", "good": "good | lr=0.001",
                               "bad": "bad | lr=0.003"}
    v = searcher.verdicts()["verdict"]
    assert v["good"] == "beats the front" and v["bad"] == "behind the front"
    assert trials < 8 + 4 * 8, trials  # settled before max seeds: seeds went nowhere they were not needed
    doc = searcher.looks_document()
    assert doc["design"]["kind"] == "frontier" and doc["stopped"].startswith("every method has a verdict")
    assert doc["looks"][0]["reason"].startswith("tuning") and doc["looks"][-1]["verdicts"]["good"]["pairs"] >= 3


# the binding null (at the margin) in the fast tier; all rows alike, which the page meets conservatively, in the slow
@pytest.mark.parametrize("scenario", [pytest.param("no dominance", marks=pytest.mark.slow), "at the margin"])
def test_the_whole_adaptive_procedure_keeps_the_page_family_wise_error(scenario):
    """The whole design as the search runs it - tune on seed 0, then 3 comparison seeds and one more per unresolved
    method up to 8, a look each round, Holm over the page - under the worst nulls of the fixed-seed test above.
    An error is a verdict the truth does not allow; its rate stays below alpha however the seeds were added."""
    rng = np.random.default_rng(5)
    draws, errors = 200, 0
    base = (30.0, 20.0)
    method = base if scenario == "no dominance" else (31.0, 20.0)
    for _ in range(draws):
        truth = {f"{v} | lr={lr}": (base if v.startswith("w") else method)
                 for v in ("w1", "w2", "m1", "m2") for lr in ("0.001", "0.003")}
        searcher = _searcher(["w1", "w2", "m1", "m2"], ["w1", "w2"])
        _drive(searcher, truth, rng)
        v = searcher.verdicts()["verdict"]
        wrong = {"beats the front", "behind the front"} | ({"on the front"} if scenario == "at the margin" else set())
        errors += any(x in wrong for x in v)
    rate = errors / draws
    assert rate <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / draws), rate


def test_extend_is_refused_for_a_frontier_study(tmp_path, capsys, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray must not start on bad input"))
    spec = write_spec(tmp_path, _design(seeds="{first: 2, max: 3}"))
    assert main([str(spec), "--dry-run", "--profile", "smoke", "--extend", "docs/findings/depth_loss"]) == 2
    assert "--extend: a frontier study tunes before it compares" in capsys.readouterr().err
