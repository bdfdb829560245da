"""Several objectives: the spec key and flag (refused before Ray when wrong), Pareto ASHA's rung decisions on
planted results and across a resume, and Optuna's multi-objective study through Tune."""

from __future__ import annotations

import numpy as np
import pyarrow.fs as pafs
import pytest
from conftest import REPO, write_spec
from ray.tune.schedulers import TrialScheduler

from app.cli import main
from search.pareto_asha import ParetoASHAScheduler, pareto_order

TASK_WEIGHTS = str(REPO / "ablations" / "task_weights.yaml")
TWO = {"semseg_miou": "max", "depth_silog": "min"}


class _Trial:
    def __init__(self, row: str, seed: int) -> None:
        self.trial_id, self.config, self.status = f"{row}-{seed}", {"variant": row, "seed": seed}, "RUNNING"
        self.last_result: dict = {}


class _Controller:
    def __init__(self, trials=()) -> None:
        self.trials = list(trials)

    def get_trials(self):
        return self.trials

    def stop_trial(self, trial) -> None:
        trial.status = "TERMINATED"


@pytest.mark.parametrize(("argv", "message"), [
    (["--objectives", "semseg_miou=max"], "needs two or more metrics"),
    (["--objectives", "semseg_miou=max,depth_silg=min"], "key 'objectives.depth_silg': 'depth_silg' is not a "
                                                          "reported metric (did you mean 'depth_silog'?)"),
    (["--objectives", "semseg_miou=up,depth_silog=min"], "--objectives: expected METRIC=max|min"),
    (["--objectives", "semseg_miou=max,depth_silog=min", "--seeds", "first=3,max=8"],
     "key 'objectives': adaptive seeds test one metric"),
    (["--objectives", "semseg_miou=max,depth_silog=min", "--scheduler", "median"],
     "the median stopping rule ranks one metric"),
    (["--objectives", "semseg_miou=max,depth_silog=min", "--scheduler", "asha,metric=multitask"],
     "key 'scheduler.metric': with objectives ASHA ranks by non-dominated sorting"),
])
def test_bad_objectives_are_refused_before_ray(argv, message, capsys, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray must not start on bad input"))
    assert main([TASK_WEIGHTS, "--dry-run", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_objectives_in_a_spec_are_checked_with_the_file_named(tmp_path, capsys):
    spec = write_spec(tmp_path, "objectives: {semseg_miou: max, depth_silog: down}\n", name="bad_direction")
    assert main([str(spec), "--dry-run", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert str(spec) in err and "objectives.depth_silog" in err and "'max' or 'min'" in err


def test_pareto_order_ranks_fronts_then_hypervolume_contribution():
    # max terms: (3,1) (1,3) (2,2) on the front; (2,2) adds least? all equal by symmetry; (1,1) is behind
    points = np.array([[1.0, 1.0], [3.0, 1.0], [1.0, 3.0], [2.5, 2.5], [-np.inf, -np.inf]])
    order = pareto_order(points)
    assert order[-1] == 4 and order[-2] == 0  # no score last, the dominated point before it
    assert order[0] == 3  # the knee point adds the most hypervolume


def _feed(sched, controller, results: dict[str, tuple[float, float]], t: int = 1) -> dict[str, str]:
    actions = {}
    for row, (miou, silog) in results.items():
        for seed in (0, 1):
            actions[row] = sched.on_trial_result(controller, _Trial(row, seed),
                                                 {"training_iteration": t, "semseg_miou": miou + seed,
                                                  "depth_silog": silog})
    return actions


def test_rungs_keep_the_front_and_stop_dominated_rows(tmp_path):
    state = (pafs.LocalFileSystem(), str(tmp_path / "seed_asha_state.json"))
    sched = ParetoASHAScheduler(TWO, seeds=2, max_t=9, grace_period=1, reduction_factor=2, state_file=state)
    controller = _Controller()
    # rows arrive in this order; with reduction factor 2 a row continues when it is in the top half so far
    actions = _feed(sched, controller, {"seg-heavy": (30.0, 38.0), "depth-heavy": (20.0, 34.0),
                                        "dominated": (19.0, 39.0), "balanced": (26.0, 35.0)})
    assert actions["seg-heavy"] == actions["depth-heavy"] == TrialScheduler.CONTINUE  # each on the front
    assert actions["dominated"] == TrialScheduler.STOP  # worse on both than a decided row
    assert actions["balanced"] == TrialScheduler.CONTINUE  # on the front: mIoU and SI-log between the two
    assert sched.stopped_rows == {"dominated": 1}
    assert sched.decided[1]["seg-heavy"] == (30.5, -38.0)  # the seed mean, in "max" terms
    # a resume: Tune hands back the scheduler as it started; the rungs come back from the experiment's storage
    resumed = ParetoASHAScheduler(TWO, seeds=2, max_t=9, grace_period=1, reduction_factor=2, state_file=state)
    assert resumed.on_trial_result(controller, _Trial("dominated", 1),
                                   {"training_iteration": 2, "semseg_miou": 50.0, "depth_silog": 1.0}) == \
        TrialScheduler.STOP
    assert resumed.decided[1] == sched.decided[1]


def test_a_row_without_a_score_ranks_last():
    sched = ParetoASHAScheduler(TWO, seeds=1, max_t=9, grace_period=1, reduction_factor=2)
    controller = _Controller()
    assert sched.on_trial_result(controller, _Trial("a", 0), {"training_iteration": 1, "semseg_miou": 10.0,
                                                              "depth_silog": 40.0}) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(controller, _Trial("nan", 0), {"training_iteration": 1, "semseg_miou": float("nan"),
                                                                "depth_silog": 1.0}) == TrialScheduler.STOP


def _studies(obj, depth: int = 0):
    """Optuna studies inside an unpickled searcher state (Tune wraps the searcher and its dict)."""
    import optuna

    if isinstance(obj, optuna.Study):
        yield obj
    elif depth < 4 and isinstance(obj, dict):
        for value in obj.values():
            yield from _studies(value, depth + 1)
    elif depth < 4 and hasattr(obj, "__dict__"):
        yield from _studies(vars(obj), depth + 1)


def test_a_multi_objective_optuna_search_through_tune_and_its_front(ray_local, tmp_path):
    """Real Ray, real Optuna: both objectives reach the study (each trial's `values` has two entries), Pareto ASHA
    ranks the sampled trials, the report draws the front of all trials."""
    import pickle

    spec = write_spec(tmp_path, """
fixed: {optimizer: adam}
space: {lr: {loguniform: [1.0e-4, 1.0e-2]}}
search: {algorithm: optuna, num_samples: 4, max_concurrent: 2}
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
objectives: {semseg_miou: max, depth_silog: min}
""", name="mo_optuna")
    assert main([str(spec), "--profile", "smoke", "--storage", str(tmp_path / "r"), "--no-dashboard",
                 "--set", "epochs=2"]) == 0
    exp = tmp_path / "r" / "mo_optuna"
    states = sorted(exp.glob("searcher-state-*.pkl"))
    assert states, sorted(p.name for p in exp.iterdir())
    with open(states[-1], "rb") as f:
        study = next(_studies(pickle.load(f)))
    assert len(study.directions) == 2
    done = [t for t in study.trials if t.values is not None]
    assert len(done) == 4 and all(len(t.values) == 2 for t in done)
    assert (exp / "report" / "tradeoff.png").is_file()
    # trials Pareto ASHA stopped early are not on the front of final results
    import re

    assert re.search(r"Front of all [1-4] completed trials: [1-4] non-dominated, hypervolume \d",
                     (exp / "report" / "table.md").read_text())


def test_a_reference_point_is_known_or_declared(tmp_path, capsys):
    # depth_rmse has no default worst value: its hypervolume needs a declared reference
    assert main([TASK_WEIGHTS, "--dry-run", "--objectives", "semseg_miou=max,depth_rmse=min"]) == 2
    assert "key 'report.reference_point': depth_rmse has no default worst value" in capsys.readouterr().err
    spec = write_spec(tmp_path, "objectives: {semseg_miou: max, depth_rmse: min}\n"
                                "report: {reference_point: {depth_rmse: 50.0}}\n", name="declared")
    assert main([str(spec), "--dry-run", "--profile", "smoke"]) == 0
    capsys.readouterr()
    spec = write_spec(tmp_path, "objectives: {semseg_miou: max, depth_silog: min}\n"
                                "report: {reference_point: {multitask: 0.0}}\n", name="not_an_objective")
    assert main([str(spec), "--dry-run", "--profile", "smoke"]) == 2
    assert "key 'report.reference_point.multitask': not an objective" in capsys.readouterr().err
