"""The checkpoint policy: what a trial keeps while it runs and once it has finished."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import write_spec

from app.cli import main as run_search
from core.storage import is_storage_full
from mtl.checkpoint import BEST_WEIGHTS, best_weights, load_checkpoint
from mtl.config import TrialConfig
from mtl.profiles import PROFILES
from mtl.train import train
from search.cli import _experiment, parse_args
from search.retention import keep_rule


def _copying_report():
    """A report() that keeps a copy of every checkpoint, as Tune would persist it."""
    seen: list[dict] = []

    def report(metrics, path):
        if path:
            seen.append({"epoch": metrics["epoch"], "state": load_checkpoint(path),
                         "bytes": (Path(path) / "state.pt").stat().st_size})
    return report, seen


def test_a_finished_run_keeps_only_its_best_epochs_weights(tiny_synth, tmp_path):
    cfg = TrialConfig.from_dict({**PROFILES["smoke"], "data": str(tiny_synth), "epochs": 3, "encoder": "resnet18",
                                 "train_images": 8, "val_images": 4, "test_images": 4, "optimizer": "adam",
                                 "lr": 1.0e-3})
    report, seen = _copying_report()
    final = train(cfg, report, final="weights")
    states = {s["epoch"]: s["state"] for s in seen}
    sizes = {s["epoch"]: s["bytes"] for s in seen}
    last = states[3]
    assert last["kind"] == BEST_WEIGHTS and "optimizer" not in last and "rng" not in last
    best = final["best_epoch"]
    # the kept weights are those of the best epoch, whichever epoch that was
    reference = states[best]["model"] if best < 3 else best_weights(states[3])
    assert all(torch.equal(last["model"][k], reference[k]) for k in reference)
    # while running, a full state carries the best weights when they differ from the current ones
    for epoch in (1, 2):
        full = states[epoch]
        assert "optimizer" in full and (full["best_model"] is None) == (full["best"]["best_epoch"] == epoch)
    # the weights-only checkpoint is about a third of the full state (Adam keeps two moments per weight)
    assert states[1]["best_model"] is None and sizes[3] < 0.4 * sizes[1]


def test_a_run_retried_after_its_last_report_reports_again_and_trains_nothing(tiny_synth, tmp_path):
    cfg = TrialConfig.from_dict({**PROFILES["smoke"], "data": str(tiny_synth), "epochs": 1, "encoder": "resnet18",
                                 "train_images": 8, "val_images": 4, "test_images": 4})
    from mtl.checkpoint import save_checkpoint

    report, seen = _copying_report()
    train(cfg, report, final="weights")
    save_checkpoint(tmp_path / "final", seen[-1]["state"])
    again: list = []
    metrics = train(cfg, lambda m, p: again.append((m, p)), checkpoint_dir=tmp_path / "final", final="weights")
    assert again == [(metrics, None)] and metrics["epoch"] == 1


def test_checkpoint_policy_in_the_spec_and_on_the_command_line(tmp_path, capsys):
    matrix = _experiment(parse_args(["ablations/task_weights.yaml"]))
    assert keep_rule(matrix) == ("rows", 1)
    assert keep_rule(_experiment(parse_args(["ablations/tta.yaml"]))) == ("all", None)  # post-hoc needs every trial
    assert keep_rule(_experiment(parse_args(["ablations/lr_search.yaml"]))) == ("top", 3)
    flagged = _experiment(parse_args(["ablations/task_weights.yaml", "--checkpoints", "top,top=2,state=full"]))
    assert keep_rule(flagged) == ("top", 2) and flagged.spec.checkpoints.state == "full"
    assert keep_rule(_experiment(parse_args(["ablations/task_weights.yaml", "--checkpoints", "none"]))) == ("none", 0)
    for bad, message in (("best", "--checkpoints: key 'keep': allowed: 'auto', 'none', 'rows', 'top' or 'all'"),
                         ("top,top=0", "--checkpoints: key 'top'"), ("rows,state=optimizer", "key 'state'"),
                         ("", "--checkpoints: expected KEEP[,key=value...] with KEEP one of auto, none, rows")):
        assert run_search(["ablations/task_weights.yaml", "--dry-run", "--checkpoints", bad]) == 2
        assert message in capsys.readouterr().err
    spec = write_spec(tmp_path, "checkpoints: {keep: rows, keep_last: 2}\n")
    assert run_search([str(spec), "--dry-run"]) == 2
    assert "key 'checkpoints.keep_last'" in capsys.readouterr().err


def test_storage_full_errors_are_recognised():
    assert is_storage_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_storage_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    wrapped = RuntimeError("upload failed")
    wrapped.__cause__ = OSError("AWS Error QUOTA_EXCEEDED during PutObject operation: QuotaExceeded")
    assert is_storage_full(wrapped)
    assert not is_storage_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_storage_full(ValueError("nan"))


def kept_checkpoints(exp_dir: Path) -> dict[str, list[str]]:
    """Trial folder -> its checkpoint folders."""
    return {d.name: sorted(p.name for p in d.glob("checkpoint_*")) for d in exp_dir.iterdir() if d.is_dir()}


def test_a_search_keeps_the_best_weights_of_each_row_and_nothing_else(ray_local, tmp_path):
    spec = write_spec(tmp_path, """
fixed: {optimizer: adam, lr: 1.0e-3, encoder: resnet18}
variants:
  - {name: steady, baseline: true}
  - {name: slower, lr: 1.0e-4}
  - {name: exploding, optimizer: sgd, lr: 1000.0}
seeds: 2
""", name="keep_rows")
    storage = tmp_path / "results"
    assert run_search([str(spec), "--profile", "smoke", "--storage", str(storage), "--no-dashboard"]) == 0
    exp_dir = storage / "keep_rows"
    df = pd.read_parquet(exp_dir / "results.parquet")
    kept = kept_checkpoints(exp_dir)
    manifest = json.loads((exp_dir / "checkpoints.json").read_text())
    assert manifest["keep"] == "rows" and len(manifest["kept"]) == 2
    for variant in ("steady", "slower"):
        rows = df[df["variant"] == variant]
        best = rows.loc[rows["multitask"].astype(float).idxmax(), "trial_dir"]
        for _, trial in rows.iterrows():  # the row's best trial: one checkpoint, best weights only
            assert len(kept[trial["trial_dir"]]) == (1 if trial["trial_dir"] == best else 0)
        state = load_checkpoint(exp_dir / best / kept[best][0])
        assert state["kind"] == BEST_WEIGHTS and "optimizer" not in state
    assert all(not kept[d] for d in df.loc[df["variant"] == "exploding", "trial_dir"])  # diverged: nothing
    table = (exp_dir / "report" / "table.md").read_text()
    assert "Storage: 2 finished trial(s) keep their best weights" in table and "keep=rows" in table
    assert (exp_dir / "report" / "predictions.png").is_file()  # example predictions from the kept weights
    from analysis.posthoc import run_posthoc

    with pytest.raises(SystemExit, match="2 of 4 completed trials kept no weights"):
        run_posthoc(str(exp_dir), ["off", "flip"])  # each row's best seed alone would bias the comparison
    # the same search keeping nothing, then the best trial only
    assert run_search([str(spec), "--profile", "smoke", "--storage", str(storage), "--no-dashboard", "--no-report",
                       "--name", "keep_none", "--checkpoints", "none"]) == 0
    assert not any(kept_checkpoints(storage / "keep_none").values())
    assert run_search([str(spec), "--profile", "smoke", "--storage", str(storage), "--no-dashboard", "--no-report",
                       "--name", "keep_top", "--checkpoints", "top,top=1,state=full"]) == 0
    top = [d for d, c in kept_checkpoints(storage / "keep_top").items() if c]
    assert len(top) == 1
    state = load_checkpoint(next((storage / "keep_top" / top[0]).glob("checkpoint_*")))
    assert "optimizer" in state and "kind" not in state  # state=full: the last full state (and the best weights)


def test_checkpoints_a_killed_process_was_staging_are_swept(tmp_path):
    # a worker killed inside a report (a lost node, a stopped actor) left its ~300 MB staging folder in /tmp
    import os
    import subprocess
    import sys

    from mtl.checkpoint import STAGING_PREFIX, sweep_staging

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"{STAGING_PREFIX}{int(gone.stdout)}-abc"
    alive = tmp_path / f"{STAGING_PREFIX}{os.getpid()}-def"
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "state.pt").write_bytes(b"x" * 1000)
    assert sweep_staging(str(tmp_path)) == 1
    assert not dead.exists() and alive.exists()  # a running process's checkpoint is left alone


def test_deletions_wait_until_the_snapshot_in_storage_is_newer(tmp_path):
    """A killed driver's snapshot restores trials from the checkpoints it knew: a superseded checkpoint stays until
    Tune's experiment snapshot in storage postdates the decision to delete it (the head-loss test found a resumed
    trial failing on a checkpoint deleted just before the head died)."""
    import os
    import pickle
    import time

    from core.storage import open_storage
    from search.retention import CheckpointRetention

    exp = _experiment(parse_args(["ablations/task_weights.yaml"])).configure("smoke")
    storage = open_storage(str(tmp_path))
    trial_dir = Path(storage.experiment(exp.name)) / "trial_a"
    for i in range(4):
        (trial_dir / f"checkpoint_00000{i}").mkdir(parents=True)

    class Trial:
        path, trial_id, last_result, checkpoint = str(trial_dir), "a", {}, None

    callback = CheckpointRetention(exp, storage)
    callback.on_checkpoint(0, [], Trial(), None)
    callback.on_step_begin(0, [])
    assert len(list(trial_dir.iterdir())) == 4 and len(callback.pending) == 2  # no snapshot yet: nothing goes
    snapshot = trial_dir.parent / "experiment_state-2026.json"
    snapshot.write_text("{}")
    os.utime(snapshot, (time.time() + 10, time.time() + 10))  # a snapshot written after the decision
    callback._checked = 0.0
    callback.on_step_begin(1, [])
    assert sorted(p.name for p in trial_dir.iterdir()) == ["checkpoint_000002", "checkpoint_000003"]
    # from now on the one snapshot file is looked at, not the folder of every trial; a resumed driver (which
    # unpickles the callback) writes a snapshot of its own and looks for it afresh
    assert callback._snapshot_file == str(snapshot)
    assert pickle.loads(pickle.dumps(callback))._snapshot_file is None
    resumed = CheckpointRetention(exp, storage)
    resumed._since = time.time() + 60  # started after that snapshot was written
    assert resumed._snapshot_time() is not None and resumed._snapshot_file is None  # not its own: keep listing
    callback.on_checkpoint(2, [], Trial(), None)  # nothing older than the newest two
    (trial_dir / "checkpoint_000004").mkdir()
    callback.on_checkpoint(3, [], Trial(), None)
    callback.on_experiment_end([])  # the end's snapshot knows everything: pending deletions go at once
    assert sorted(p.name for p in trial_dir.iterdir()) == ["checkpoint_000003", "checkpoint_000004"]
