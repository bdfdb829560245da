"""Cell searchers (search.rounds): the capped grid, and the reconciliation with Tune's restored trials that keeps
a `--resume` after a driver died between Tune's uploads from hanging, skipping a row, or running one twice."""

from __future__ import annotations

import math

from ray.tune.search import Searcher

from search.adaptive import AdaptiveSeeds
from search.rounds import PENDING_TRIALS_ENV, GridCells, RestoredTrial, pending_trials_env


def _run(s: Searcher, ids: list[str]) -> list:
    return [s.suggest(i) for i in ids]


def test_a_capped_grid_suggests_rows_then_seeds_at_most_cap_at_once():
    g = GridCells(["a", "b"], [0, 1], max_concurrent=2)
    assert _run(g, ["t0", "t1", "t2"]) == [{"variant": "a", "seed": 0}, {"variant": "a", "seed": 1}, None]
    g.on_trial_complete("t0", {"status": "completed"})
    assert _run(g, ["t2", "t3"]) == [{"variant": "b", "seed": 0}, None]
    for t in ("t1", "t2"):
        g.on_trial_complete(t, {"status": "completed"})
    assert g.suggest("t3") == {"variant": "b", "seed": 1}
    assert g.suggest("t4") is None  # one still running: not finished yet
    g.on_trial_complete("t3", {"status": "completed"})
    assert g.suggest("t4") == Searcher.FINISHED and g.looks_document() is None


def test_a_cell_tune_lost_is_queued_again_and_a_trial_tune_knows_is_adopted(tmp_path):
    """The lost driver saved the searcher after suggesting t2 (b, 0) but the trial list before it: Tune restores
    t0 (finished) and t1 (running) only. Without reconciling, t2 would stay pending forever: with a cap of 2 the
    grid never finishes; here (b, 0) is suggested again and every cell runs once."""
    g = GridCells(["a", "b"], [0, 1], max_concurrent=2)
    _run(g, ["t0", "t1"])
    g.on_trial_complete("t0", {"status": "completed"})
    g.suggest("t2")
    g.save(str(tmp_path / "state.pkl"))
    fresh = GridCells(["a", "b"], [0, 1], max_concurrent=2)
    fresh.restore(str(tmp_path / "state.pkl"))
    changes = fresh.reconcile([RestoredTrial("t0", ("a", 0), True, {"status": "completed"}),
                               RestoredTrial("t1", ("a", 1), False, {})])
    assert changes == {"requeued": ["t2"], "adopted": [], "counted": []}
    assert fresh.suggest("t3") == {"variant": "b", "seed": 0}
    fresh.on_trial_complete("t1", {"status": "completed"})
    fresh.on_trial_complete("t3", {"status": "completed"})
    assert fresh.suggest("t4") == {"variant": "b", "seed": 1}


def test_trials_newer_than_the_searcher_are_adopted_and_counted_once():
    """The other order: the trial list was saved after the searcher. t1 (a, 1) is unknown to the searcher (it would
    run (a, 1) twice) and t0 finished after the searcher's state (it would wait for t0 forever)."""
    s = AdaptiveSeeds([("b", "a")], [0, 1, 2], 1, "multitask", "max", max_concurrent=4)
    assert _run(s, ["t0"]) == [{"variant": "b", "seed": 0}]
    changes = s.reconcile([RestoredTrial("t0", ("b", 0), True, {"status": "completed", "multitask": 3.0}),
                           RestoredTrial("t1", ("a", 0), False, {})])
    assert changes == {"requeued": [], "adopted": ["t1"], "counted": ["t0"]}
    assert s.values == {"b": {0: 3.0}} and s.pending == {"t1": ("a", 0)} and s.queue == []
    again = s.reconcile([RestoredTrial("t0", ("b", 0), True, {"status": "completed"}),
                         RestoredTrial("t1", ("a", 0), False, {})])
    assert again == {"requeued": [], "adopted": [], "counted": []}  # counted once
    s.on_trial_complete("t1", {"status": "diverged"})
    assert math.isnan(s.values["a"][0]) and s.spent["trials"] == 2


def test_a_trial_counted_but_lost_by_tune_is_taken_back_and_run_again():
    """A short trial suggested and finished between two uploads of Tune's list: the searcher counted it, Tune's
    list never had it (nor do the results). Its value and spend are taken back and its cell runs again."""
    s = AdaptiveSeeds([("b", "a")], [0, 1, 2], 1, "multitask", "max")
    _run(s, ["t0", "t1"])
    s.on_trial_complete("t0", {"status": "completed", "multitask": 3.0, "time_total_s": 36.0})
    changes = s.reconcile([RestoredTrial("t1", ("a", 0), False, {})])
    assert changes == {"requeued": ["t0"], "adopted": [], "counted": []}
    assert s.values == {"b": {}} and s.spent == {"trials": 0, "hours": 0.0} and s.queue == [("b", 0)]
    assert s.suggest("t2") == {"variant": "b", "seed": 0}


def test_a_state_saved_before_reconciling_existed_restores(tmp_path, capsys):
    import pickle

    s = AdaptiveSeeds([("b", "a")], [0, 1], 1, "multitask", "max")
    state = s._state()
    del state["done"]
    (tmp_path / "searcher-state-x.pkl").write_bytes(pickle.dumps(state))
    fresh = AdaptiveSeeds([("b", "a")], [0, 1], 1, "multitask", "max")
    del fresh.done
    fresh.restore_from_dir(str(tmp_path))  # no Tune snapshot beside it: said, never raised (Tune would restart)
    assert fresh.done == {} and "could not compare the search state" in capsys.readouterr().out


def test_only_a_capped_cell_searcher_sets_tunes_pending_trials(monkeypatch):
    monkeypatch.delenv(PENDING_TRIALS_ENV, raising=False)
    assert pending_trials_env(3) == {PENDING_TRIALS_ENV: "3"} and pending_trials_env(None) == {}
    monkeypatch.setenv(PENDING_TRIALS_ENV, "7")
    assert pending_trials_env(3) == {}  # the user's own setting stands
