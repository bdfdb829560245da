"""Seed-aware ASHA: rows are promoted or stopped on the mean over their seeds, on known curves."""

from __future__ import annotations

import time

from ray.tune.schedulers import TrialScheduler

from search.schedulers import RankedASHAScheduler, SeedAwareASHAScheduler

QUALITY = {"best": 3.0, "good": 2.0, "poor": 1.0, "worst": 0.5}


class _Trial:
    def __init__(self, row: str, seed: int) -> None:
        self.trial_id, self.config, self.status = f"{row}-{seed}", {"variant": row, "seed": seed}, "RUNNING"
        self.last_result: dict = {}


class _Controller:
    """Tune's controller as the scheduler sees it: the trials, and `stop_trial` to end a running one."""

    def __init__(self, trials: list[_Trial]) -> None:
        self.trials = trials

    def get_trials(self) -> list[_Trial]:
        return self.trials

    def stop_trial(self, trial: _Trial) -> None:
        trial.status = "TERMINATED"


def _curve(row: str, seed: int, t: int) -> float:
    luck = -1.6 if (row, seed) == ("good", 1) else 0.1 * seed
    return QUALITY[row] * t + luck


def test_rows_are_decided_on_their_seed_mean_and_siblings_share_the_fate():
    sched = SeedAwareASHAScheduler(seeds=2, max_t=9, grace_period=1, reduction_factor=2, metric="m", mode="max")
    assert sched.rungs == [1, 2, 4, 8]
    trials = [_Trial(row, seed) for row in QUALITY for seed in (0, 1)]
    alive, controller = {t.trial_id: t for t in trials}, _Controller(trials)
    history: dict[str, int] = {}
    for t in range(1, 10):
        for trial in [trial for trial in alive.values() if trial.status == "RUNNING"]:
            metric = _curve(trial.config["variant"], trial.config["seed"], t)
            trial.last_result = {"training_iteration": t, "m": metric}
            action = sched.on_trial_result(controller, trial, trial.last_result)
            history[trial.trial_id] = t
            if action == TrialScheduler.STOP:
                trial.status = "TERMINATED"
    fate = {row: [history[f"{row}-{s}"] for s in (0, 1)] for row in QUALITY}
    assert fate["best"] == [9, 9]  # promoted at every rung, to the end
    # both seeds share the row's fate: the seed that reached the rung first was stopped with its sibling, at once
    assert all(e[0] == e[1] for e in fate.values())
    assert max(fate["worst"]) <= 2 and sched.stopped_rows["worst"] == 1
    # the row's seed mean, not one (unlucky) seed, is what the rung compares
    assert sched.decided[1]["good"] == (_curve("good", 0, 1) + _curve("good", 1, 1)) / 2
    assert sched.trial_epochs < len(trials) * 9


def test_a_real_tune_search_with_seeds_stops_rows_not_trials(tmp_path, ray_local):
    from ray import tune

    quality = dict(QUALITY)  # captured by value: Ray's workers cannot import this test module

    def trainable(config):
        for t in range(1, 10):
            time.sleep(0.1)  # seeds of a row run side by side: a stopped row's running sibling is stopped by Tune
            tune.report({"m": quality[config["variant"]] * t + 0.1 * config["seed"]})

    sched = SeedAwareASHAScheduler(seeds=2, max_t=9, grace_period=1, reduction_factor=2)
    tuner = tune.Tuner(trainable, param_space={"variant": tune.grid_search(list(QUALITY)),
                                               "seed": tune.grid_search([0, 1])},
                       tune_config=tune.TuneConfig(metric="m", mode="max", scheduler=sched),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="toy", verbose=0))
    grid = tuner.fit()
    epochs = {(r.config["variant"], r.config["seed"]): r.metrics["training_iteration"] for r in grid}
    assert epochs[("best", 0)] == epochs[("best", 1)] == 9
    assert max(epochs[("worst", 0)], epochs[("worst", 1)]) < 9  # the worst row was stopped, both seeds
    assert all(abs(epochs[(row, 0)] - epochs[(row, 1)]) <= 1 for row in QUALITY)
    assert sum(epochs.values()) < 8 * 9


def test_a_seed_ahead_of_its_row_waits_until_the_next_rung_and_rows_without_a_score_rank_last():
    sched = SeedAwareASHAScheduler(seeds=2, max_t=9, grace_period=1, reduction_factor=2, metric="m", mode="max")
    controller = _Controller([])
    for row, value in (("a", 5.0), ("b", 4.0)):  # two rows decided at rung 1 with both seeds
        for seed in (0, 1):
            sched.on_trial_result(controller, _Trial(row, seed), {"training_iteration": 1, "m": value})
    early = _Trial("c", 0)  # c's second seed has not started (few workers)
    sched.on_trial_result(controller, early, {"training_iteration": 1, "m": 1.0})
    # before: the row was decided on this one seed as soon as it passed rung 1 (t = 1.5 > 1)
    assert sched.on_trial_result(controller, early, {"training_iteration": 1.5, "m": 1.0}) == TrialScheduler.CONTINUE
    assert "c" not in sched.decided[1]
    # at the next rung (2) it forces the decision on what is seen: c's one seed is below the cutoff
    assert sched.on_trial_result(controller, early, {"training_iteration": 2, "m": 1.0}) == TrialScheduler.STOP
    # before: a row whose ranking metric is NaN (single-task, ranked on multitask_raw) was never stopped
    for seed in (0, 1):
        action = sched.on_trial_result(controller, _Trial("single", seed), {"training_iteration": 1, "m": float("nan")})
    assert action == TrialScheduler.STOP and sched.stopped_rows["single"] == 1


def test_scheduler_flag_swaps_the_spec_scheduler_before_ray_starts(capsys):
    from app.cli import main as run_search
    from search import tuning
    from search.cli import _experiment, parse_args

    spec = "ablations/optimizer_lr.yaml"
    per_trial = _experiment(parse_args([spec, "--seeds", "2", "--scheduler", "asha,grace_period=1,seed_aware=false"]))
    ray_asha = tuning.scheduler(per_trial)
    assert per_trial.spec.scheduler.grace_period == 1 and isinstance(ray_asha, RankedASHAScheduler)
    # multitask is 0 for every young model: ASHA ranks on the unclipped score; Tune's metric is untouched
    assert (ray_asha._metric, ray_asha._mode) == ("multitask_raw", "max")
    assert ray_asha.set_search_properties("multitask", "max") and ray_asha._metric == "multitask_raw"
    own = _experiment(parse_args([spec, "--seeds", "2", "--scheduler", "asha,metric=depth_silog"]))
    assert (tuning.scheduler(own)._metric, tuning.scheduler(own)._mode) == ("depth_silog", "min")
    per_row = _experiment(parse_args([spec, "--seeds", "2", "--scheduler", "asha,grace_period=1"]))
    assert isinstance(tuning.scheduler(per_row), SeedAwareASHAScheduler)
    for bad, message in (("fast", "key 'type': allowed: 'none', 'asha' or 'median'"),
                         ("asha,grace=1", "key 'grace'"), ("asha,1", "expected TYPE[,key=value...]"),
                         ("asha,metric=miou", "key 'metric': 'miou' is not a reported metric"),
                         (",,", "expected TYPE[,key=value...] with TYPE one of none, asha, median")):
        assert run_search([spec, "--dry-run", "--scheduler", bad]) == 2
        assert f"error: --scheduler: {message}" in capsys.readouterr().err


def test_workers_are_reused_except_under_seed_aware_asha():
    from search import tuning
    from search.cli import _experiment, parse_args

    grid = _experiment(parse_args(["ablations/task_weights.yaml"]))
    assert tuning.tune_config(grid, 2).reuse_actors
    seed_aware = _experiment(parse_args(["ablations/optimizer_lr.yaml", "--seeds", "2", "--scheduler", "asha"]))
    assert isinstance(tuning.scheduler(seed_aware), SeedAwareASHAScheduler)
    assert not tuning.tune_config(seed_aware, 2).reuse_actors  # it stops seeds mid-epoch


def test_the_rungs_survive_a_resume(tmp_path):
    # before: Tune restored the scheduler as it was at the start, so a resumed trial's epoch-5 value met empty rungs
    import pyarrow.fs as pafs

    state = (pafs.LocalFileSystem(), str(tmp_path / "seed_asha_state.json"))
    first = SeedAwareASHAScheduler(seeds=2, max_t=9, grace_period=1, reduction_factor=2, metric="m", mode="max",
                                   state_file=state)
    controller = _Controller([])
    for row, value in (("a", 5.0), ("b", 1.0)):
        for seed in (0, 1):
            first.on_trial_result(controller, _Trial(row, seed), {"training_iteration": 1, "m": value})
    assert first.stopped_rows == {"b": 1}
    resumed = SeedAwareASHAScheduler(seeds=2, max_t=9, grace_period=1, reduction_factor=2, metric="m", mode="max",
                                     state_file=state)  # what Tuner.restore hands back: empty rungs, same file
    assert resumed.on_trial_result(controller, _Trial("b", 0), {"training_iteration": 2, "m": 9.0}) == \
        TrialScheduler.STOP  # the row stopped before the interruption stays stopped
    assert resumed.decided[1] == {"a": 5.0, "b": 1.0}
    assert resumed.on_trial_result(controller, _Trial("a", 0), {"training_iteration": 2, "m": 6.0}) == \
        TrialScheduler.CONTINUE


def test_live_trials_choose_as_tunes_fifo_without_scanning_finished_ones():
    """search.schedulers.LiveTrials: the same choice as Tune's FIFOScheduler at every step of a random history of
    trial states, while it holds only the unfinished trials (Tune's scans all of them at every step)."""
    import pickle
    import random

    from ray.tune.experiment import Trial
    from ray.tune.schedulers import FIFOScheduler

    from search.schedulers import LiveFIFOScheduler

    class FakeTrial:
        def __init__(self, status: str) -> None:
            self.status = status

        def is_finished(self) -> bool:
            return self.status in (Trial.TERMINATED, Trial.ERROR)

    class Controller:
        trials: list = []

        def get_trials(self) -> list:
            return self.trials

    controller, live, fifo, rng = Controller(), LiveFIFOScheduler(), FIFOScheduler(), random.Random(0)
    states = [Trial.PENDING, Trial.RUNNING, Trial.PAUSED, Trial.TERMINATED, Trial.ERROR]
    for _ in range(500):
        if rng.random() < 0.4:
            controller.trials.append(FakeTrial(rng.choice(states)))
            live.on_trial_add(controller, controller.trials[-1])
        for trial in rng.sample(controller.trials, min(3, len(controller.trials))):
            if not trial.is_finished():  # a finished trial stays finished (a --resume adds new Trial objects)
                trial.status = rng.choice(states)
        assert live.choose_trial_to_run(controller) is fifo.choose_trial_to_run(controller)
    unfinished = sum(not t.is_finished() for t in controller.trials)
    assert len(live._live) == unfinished < len(controller.trials) / 2
    assert pickle.loads(pickle.dumps(live))._live == {}  # Tune pickles a scheduler; never with trials in it
