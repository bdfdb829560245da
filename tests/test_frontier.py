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


@pytest.mark.parametrize("scenario", ["no dominance", "at the margin"])
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
seeds: 3
objectives: {semseg_miou: max, depth_silog: min}
report:
  frontier: {%s}
"""


GOOD = {"front": '["sum 0.3 / 0.7", "sum 0.7 / 0.3"]', "tune": "lr", "tuning_seeds": "[0]",
        "margin": "{semseg_miou: 1.0, depth_silog: 1.0}"}


def _design(**changes: str) -> str:
    return ", ".join(f"{k}: {v}" for k, v in {**GOOD, **changes}.items())


@pytest.mark.parametrize("changes, needle", [
    ({"margin": "{semseg_miou: 1.0}"}, "report.frontier.margin': one margin > 0 per objective"),
    ({"front": '[nope, "sum 0.7 / 0.3"]'}, "report.frontier.front': nope"),
    ({"tune": "epochs"}, "'epochs' is not a grid key"),
    ({"tuning_seeds": "[0, 1]"}, "leave two or more to compare on"),
])
def test_a_bad_frontier_design_is_refused_before_ray(tmp_path, capsys, monkeypatch, changes, needle):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray must not start on bad input"))
    assert main([str(write_spec(tmp_path, FRONTIER % _design(**changes))), "--dry-run", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err, err


def test_a_two_method_frontier_study_through_tune_gives_a_verdict_per_method(ray_local, tmp_path):
    spec = write_spec(tmp_path, FRONTIER % _design(), name="frontier_smoke")
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
    assert "Headline." in text and "Holm-adjusted together" in text and "seeds [1, 2]" in text
    assert "step (ms)" in text
