"""Δm against single-task baselines: the formula and its sign convention, pairing by seed, the report column."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.delta_m import delta_m, delta_m_text, single_task_reference, trial_tasks
from analysis.tables import summarize


def _frame(rows) -> pd.DataFrame:
    return pd.DataFrame([{"variant": v, "seed": s, "status": "completed", "config/tasks": t, "semseg_miou": m,
                          "depth_silog": d} for v, s, t, m, d in rows])


ROWS = [("mt", 0, "[semseg, depth]", 44.0, 27.0), ("mt", 1, "[semseg, depth]", 42.0, 33.0),
        ("seg", 0, "[semseg]", 40.0, float("nan")), ("seg", 1, "[semseg]", 42.0, float("nan")),
        ("dep", 0, "[depth]", float("nan"), 30.0), ("dep", 1, "[depth]", float("nan"), 30.0)]


def test_sign_convention_follows_maninis_and_vandenhende():
    frame = _frame(ROWS)
    assert list(trial_tasks(frame)) == [("semseg", "depth")] * 2 + [("semseg",)] * 2 + [("depth",)] * 2
    dm = delta_m(frame, single_task_reference(frame)).set_index("variant")
    # seed 0: mIoU +10 % (higher is better: +), SI-log 27 vs 30 = -10 % (lower is better: counts +10) -> +10
    # seed 1: mIoU 0 %, SI-log 33 vs 30 = +10 % error (counts -10) -> -5
    assert dm.loc["mt", "n"] == 2 and bool(dm.loc["mt", "paired"])
    expected = summarize([10.0, -5.0])
    assert dm.loc["mt", "mean"] == pytest.approx(2.5)
    assert dm.loc["mt", "ci_low"] == pytest.approx(expected["ci_low"])
    assert delta_m_text(dm.loc["mt"]).startswith("+2.50 [")


def test_single_task_baselines_of_another_setup_are_refused():
    # before: Δm against baselines trained with another encoder, scale or lr was computed as if they were twins
    frame = _frame(ROWS).assign(**{"config/encoder": "resnet18", "config/lr": 0.001, "config/image_size": "[64, 128]"})
    reference = frame[frame["variant"] != "mt"].assign(**{"config/encoder": "resnet34", "config/lr": 0.0001})
    dm = delta_m(frame[frame["variant"] == "mt"], single_task_reference(reference), reference).set_index("variant")
    assert dm.loc["mt", "refused"] == "encoder resnet18 vs resnet34, lr 0.001 vs 0.0001" and dm.loc["mt", "n"] == 0
    assert delta_m_text(dm.loc["mt"]).startswith("— (refused: the single-task baselines differ: encoder")
    same = delta_m(frame, single_task_reference(frame)).set_index("variant")
    assert same.loc["mt", "refused"] == "" and same.loc["mt", "n"] == 2


def test_unpaired_seeds_use_the_single_task_mean_and_missing_tasks_give_nothing():
    frame = _frame([*ROWS, ("mt", 5, "[semseg, depth]", 41.0, 30.0)])
    dm = delta_m(frame, single_task_reference(frame)).set_index("variant")
    assert dm.loc["mt", "n"] == 3 and not bool(dm.loc["mt", "paired"])  # seed 5 has no single-task twin
    assert delta_m(frame, single_task_reference(frame[frame["variant"] != "dep"])).empty  # no depth-only row
    legacy = frame.drop(columns="config/tasks")  # results from before single-task models: all multi-task
    assert single_task_reference(legacy) == {}


@pytest.fixture(scope="module")
def single_task_experiment(ray_local, tmp_path_factory) -> str:
    """A multi-task row and the two single-task rows, 2 seeds, one epoch: the report gains Δm %."""
    from conftest import write_spec

    from app.cli import main as run_search

    tmp = tmp_path_factory.mktemp("delta_m")
    spec = write_spec(tmp, """
fixed: {optimizer: adam, lr: 1.0e-3, epochs: 1}
variants:
  - {name: multi-task, baseline: true}
  - {name: semseg only, tasks: [semseg]}
  - {name: depth only, tasks: [depth]}
seeds: 2
""", name="delta_m_e2e")
    assert run_search([str(spec), "--profile", "smoke", "--storage", str(tmp / "results"), "--no-dashboard"]) == 0
    return str(tmp / "results" / "delta_m_e2e")


def test_report_gains_delta_m_from_its_own_and_from_a_reference_experiment(single_task_experiment, tmp_path):
    from analysis.report import build_report
    from core.results import load_results

    res = load_results(single_task_experiment)
    frame = res.frame.set_index(["variant", "seed"])
    assert frame.loc[("semseg only", 0), "parameters"] < frame.loc[("multi-task", 0), "parameters"]  # head dropped
    out = tmp_path / "own"
    build_report(single_task_experiment, str(out), formats=("md", "csv", "html"))
    dm = pd.read_csv(out / "delta_m.csv").set_index("variant")
    assert list(dm.index) == ["multi-task"] and dm.loc["multi-task", "n"] == 2
    expected = [50.0 * ((frame.loc[("multi-task", s), "semseg_miou"] - frame.loc[("semseg only", s), "semseg_miou"])
                        / frame.loc[("semseg only", s), "semseg_miou"]
                        - (frame.loc[("multi-task", s), "depth_silog"] - frame.loc[("depth only", s), "depth_silog"])
                        / frame.loc[("depth only", s), "depth_silog"]) for s in (0, 1)]
    assert dm.loc["multi-task", "mean"] == pytest.approx(sum(expected) / 2)
    md = (out / "table.md").read_text()
    assert "Δm %" in md and "Maninis et al. 2019" in md
    # another experiment names this one as its single-task reference (report: {single_task: DIR})
    spec = {**res.record.spec, "report": {**res.record.spec["report"], "single_task": single_task_experiment}}
    record = res.record.model_copy(update={"name": "reference_user", "spec": spec})
    only_mt = res.frame[res.frame["variant"] == "multi-task"].copy()
    res2 = type(res)(uri=res.uri, record=record, frame=only_mt, histories=res.histories, configs=res.configs,
                     storage=res.storage)
    from analysis.report import delta_m_for

    dm2, note = delta_m_for(res2)
    assert dm2.set_index("variant").loc["multi-task", "mean"] == pytest.approx(sum(expected) / 2)
    assert single_task_experiment in note


def test_a_missing_reference_experiment_is_a_note_not_a_crash(tmp_path):
    from analysis.report import delta_m_for
    from core.record import ExperimentRecord
    from core.results import ExperimentResults

    frame = _frame(ROWS[:2])
    record = ExperimentRecord(name="x", spec={"report": {"single_task": str(tmp_path / "single_task")}}, profile="cpu",
                              defaults={}, rows=[], seeds=[0], metric="multitask", mode="max", algorithm="grid",
                              scheduler="none", baseline="", trial_count=0)
    dm, note = delta_m_for(ExperimentResults(uri=str(tmp_path), record=record, frame=frame))
    assert dm.empty and note.startswith(f"No Δm: the single-task reference {tmp_path / 'single_task'} could not")
