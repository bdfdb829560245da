"""Searches end to end on a real local Ray (2 CPUs), smoke profile."""

from __future__ import annotations

import json
import re
import signal

import pandas as pd
import pytest
from conftest import (
    SHORT_AND_LONG,
    result_epochs,
    start_driver,
    trial_dir,
    wait_short_done_long_running,
    write_spec,
)

from analysis.report import build_report
from app.cli import main


def _run(spec, storage, *extra) -> int:
    return main([str(spec), "--profile", "smoke", "--storage", str(storage), "--no-dashboard", "--no-report", *extra])


def test_grid_search_with_a_diverging_trial_and_wandb_offline(ray_local, tmp_path, capsys):
    spec = write_spec(tmp_path, """
fixed: {optimizer: adam, lr: 1.0e-3}
variants:
  - {name: steady, baseline: true}
  - {name: exploding, optimizer: sgd, lr: 1000.0}
""", name="grid_e2e")
    assert _run(spec, tmp_path / "results", "--wandb", "offline", "--set", "weight_decay=5.0e-4") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "profile: smoke"
    assert "TensorBoard: tensorboard --logdir" in out and "W&B: project mtl-tune-grid_e2e" in out
    # Tune's progress table: the ablated keys, then epoch / multitask / mIoU / SI-log per trial
    header = r"\s+\|\s+".join(["variant", "seed", "optimizer", "lr", "epoch", "multitask", "mIoU", "SI-log"])
    assert re.search(r"\|\s+" + header + r"\s+\|", out)
    exp_dir = tmp_path / "results" / "grid_e2e"
    df = pd.read_parquet(exp_dir / "results.parquet")
    assert len(df) == 2
    status = dict(zip(df["variant"], df["status"], strict=True))
    assert status == {"steady": "completed", "exploding": "diverged"}
    steady = df[df["variant"] == "steady"].iloc[0]
    assert steady["epochs_run"] == 2 and steady["config/optimizer"] == "adam" and steady["config/image_size"] == \
        "[32, 64]"
    for column in ("multitask", "semseg_miou", "depth_silog", "best_multitask", "best_epoch", "train_time_s",
                   "parameters", "peak_memory_mb"):
        assert column in df
    record = json.loads((exp_dir / "mtl_experiment.json").read_text())
    assert record["profile"] == "smoke" and record["baseline"] == "steady" and record["set"] == {"weight_decay": 5e-4}
    # the --dry-run model's estimate, made as the run started, beside the measured time
    assert record["estimate_s"] > 0 and record["wall_s"] > 0 and record["estimate_how"].startswith("2 concurrent")
    assert (df["config/weight_decay"] == 5e-4).all()
    checkpoints = {v: len(list((exp_dir / d).glob("checkpoint_*"))) for v, d in zip(df["variant"], df["trial_dir"],
                                                                                   strict=True)}
    assert checkpoints == {"steady": 1, "exploding": 0}  # a diverged trial keeps nothing
    trial_dirs = sorted(p for p in exp_dir.iterdir() if p.is_dir() and p.name != "wandb")
    assert all((d / "trial_config.yaml").is_file() and (d / "progress.csv").is_file() for d in trial_dirs)
    # W&B offline: one run per trial, whose config is the whole resolved TrialConfig
    runs = sorted((exp_dir / "wandb").rglob("offline-run-*/run-*.wandb"))
    assert len(runs) == 2
    logged = [_wandb_items(r) for r in runs]
    assert {c["variant"] for c in logged} == {"steady", "exploding"}
    assert all(c["loss_weights"] == [0.5, 0.5] and c["image_size"] == [32, 64] for c in logged)
    assert all(c["cli_set"] == {"weight_decay": 5e-4} and c["weight_decay"] == 5e-4 for c in logged)
    assert {c["optimizer"] for c in logged} == {"adam", "sgd"}
    # results.parquet is built from the trials Tune holds at the end (search/ended.py); read back through Tune's
    # snapshot and every trial's files (the path while a search runs, or after --resume), the table is the same
    import io

    from core.results import load_results, parquet_bytes

    (exp_dir / "results.parquet").rename(exp_dir / "results.saved")
    read_back = pd.read_parquet(io.BytesIO(parquet_bytes(load_results(str(exp_dir)).frame)))
    (exp_dir / "results.saved").rename(exp_dir / "results.parquet")
    pd.testing.assert_frame_equal(df, read_back)
    # a trial whose trial_config.yaml never reached the storage (on a cluster: retried on another node that died
    # before syncing) keeps its row: its config is rebuilt from the record
    (exp_dir / df.loc[df["variant"] == "steady", "trial_dir"].iloc[0] / "trial_config.yaml").unlink()
    (exp_dir / "results.parquet").unlink()  # the Tune path, as while a search runs
    rebuilt = load_results(str(exp_dir)).frame
    assert len(rebuilt) == 2 and rebuilt.set_index("variant").loc["steady", "config/optimizer"] == "adam"


def test_tensorboard_reads_every_reported_metric_at_every_epoch(ray_local, tmp_path, capsys):
    """The printed `tensorboard --logdir` works: TensorBoard's own reader finds each metric of each epoch. The
    trial reads the decoded dataset the driver shared through Ray's object store (in_memory)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = write_spec(tmp_path, "fixed: {optimizer: adam, lr: 1.0e-3}\n", name="tb")
    assert _run(spec, tmp_path / "results", "--set", "in_memory=true", "--set", "epochs=3") == 0  # beats the profile
    assert "data: train/val decoded once" in capsys.readouterr().out
    trial = next(p for p in (tmp_path / "results" / "tb").iterdir() if p.is_dir())
    reported = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
    events = EventAccumulator(str(next(trial.glob("events.out.tfevents.*"))), size_guidance={"scalars": 0})
    events.Reload()
    tune_own = {"timestamp", "training_iteration", "time_total_s", "pid"}  # Tune's bookkeeping, not ours
    numeric = [k for k, v in reported[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and k not in tune_own]
    assert {"multitask", "semseg_miou", "depth_silog", "train_loss", "lr", "time_train_s"} <= set(numeric)
    # per-class IoUs travel as one text field (core.perclass: Tune's per-number record in the driver), and come
    # back as columns of the results
    assert not any(k.startswith("iou_") for k in numeric) and "road" in json.loads(reported[-1]["iou_per_class"])
    frame = pd.read_parquet(tmp_path / "results" / "tb" / "results.parquet")
    assert frame["iou_road"].iloc[0] == pytest.approx(json.loads(reported[-1]["iou_per_class"])["road"])
    for key in numeric:
        scalars = events.Scalars(f"ray/tune/{key}")
        assert [e.step for e in scalars] == [1, 2, 3], key  # every epoch (Tune's training_iteration)
        assert [e.value for e in scalars] == pytest.approx([r[key] for r in reported], rel=1e-5), key


def _wandb_items(path) -> dict:
    """Key -> JSON value items of an offline run's transaction log (wandb >= 0.19 has no Python reader;
    each config item is a protobuf message: key (field 1) then value_json (field 16))."""
    data, items = path.read_bytes(), {}
    for m in re.finditer(rb"\n([\x01-\x7f])([A-Za-z_][A-Za-z0-9_]*)\x82\x01([\x01-\x7f])", data):
        if len(m.group(2)) != m.group(1)[0]:
            continue
        raw = data[m.end():m.end() + m.group(3)[0]]
        try:
            items.setdefault(m.group(2).decode(), json.loads(raw))
        except ValueError:
            continue
    return items


def test_optuna_with_asha_stops_trials_early(ray_local, tmp_path):
    spec = write_spec(tmp_path, """
fixed: {optimizer: adam}
space:
  lr: {loguniform: [1.0e-5, 1.0e-1]}
  depth_loss: {choice: [l1, l2]}
search: {algorithm: optuna, num_samples: 6, max_concurrent: 2}
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
metric: depth_silog
""", name="optuna_e2e")
    assert _run(spec, tmp_path / "results") == 0
    df = pd.read_parquet(tmp_path / "results" / "optuna_e2e" / "results.parquet")
    assert len(df) == 6
    assert df["config/lr"].nunique() == 6 and df["config/lr"].between(1e-5, 1e-1).all()
    statuses = set(df["status"])
    assert statuses <= {"completed", "stopped early at epoch 1", "diverged"}
    assert "stopped early at epoch 1" in statuses  # ASHA halved the field at the first rung
    stopped = df[df["status"] == "stopped early at epoch 1"]
    assert (stopped["epochs_run"] == 1).all()
    # the checkpoint policy of a sampled search: the best 3 completed trials keep their best weights, no other
    exp_dir = tmp_path / "results" / "optuna_e2e"
    kept = {d for d in df["trial_dir"] if any((exp_dir / d).glob("checkpoint_*"))}
    completed = df[df["status"] == "completed"].sort_values("depth_silog")
    assert kept == set(completed["trial_dir"][:3])
    # the report of a sampled search: importance (Optuna's evaluator), parallel coordinates, best-so-far with stops
    from analysis.report import build_report

    out = tmp_path / "report"
    build_report(str(tmp_path / "results" / "optuna_e2e"), str(out), formats=("md", "html"))
    importance = pd.read_csv(out / "importance.csv").set_index("key")["importance"]
    assert set(importance.index) == {"lr", "depth_loss"} and importance.sum() == pytest.approx(1.0)
    assert "Hyperparameter importance (PED-ANOVA via Optuna, of depth_silog on " in (out / "table.md").read_text()
    assert "at epoch 1 (ASHA's first rung" in (out / "table.md").read_text()
    html = (out / "report.html").read_text()
    assert "parallel_coordinates.png" in html or html.count("<img") >= 2
    assert (out / "parallel_coordinates.png").stat().st_size > 10_000 and (out / "best_so_far.png").is_file()


def test_sigint_then_resume_finishes_without_rerunning(ray_local, tmp_path):
    spec = write_spec(tmp_path, SHORT_AND_LONG, name="interrupt_e2e")
    storage = tmp_path / "results"
    exp_dir = storage / "interrupt_e2e"
    proc = start_driver(spec, storage, ray_local)
    wait_short_done_long_running(exp_dir, proc)
    proc.send_signal(signal.SIGINT)  # Ctrl-C: Tune saves the experiment state and stops
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "--resume" in output
    before = result_epochs(trial_dir(exp_dir, "long"))
    report = build_report(str(exp_dir), str(tmp_path / "partial"), formats=("md", "html"))
    assert "Partial results: 1 of 2 trials finished" in open(report).read()  # labelled while unfinished
    assert "(partial results)" in (tmp_path / "partial" / "table.md").read_text()

    assert main([str(spec), "--profile", "smoke", "--storage", str(storage), "--no-dashboard", "--no-report",
                 "--resume", "--cpus-per-trial", "0.5"]) == 0  # a resource flag applies to the resumed run
    assert result_epochs(trial_dir(exp_dir, "short")) == [1, 2]  # finished: not run again
    resumed = result_epochs(trial_dir(exp_dir, "long"))[len(before):]
    assert resumed[-1] == 8 and resumed[0] >= 3  # continued from its checkpoint, not from epoch 1
    df = pd.read_parquet(exp_dir / "results.parquet")
    assert sorted(df["status"]) == ["completed", "completed"] and len(df) == 2
    record = json.loads((exp_dir / "mtl_experiment.json").read_text())
    # each driver run's resolved configuration is recorded: the flags given on --resume are kept, not dropped
    assert [(r["resume"], r["cpus_per_trial"]) for r in record["runs"]] == [(False, 1.0), (True, 0.5)]
    assert len(record["wall_s_runs"]) == 2 and record["wall_s"] == pytest.approx(sum(record["wall_s_runs"]), abs=0.2)
    build_report(str(exp_dir), str(tmp_path / "final"), formats=("md",))
    assert "measured over 2 driver runs" in (tmp_path / "final" / "table.md").read_text()
