"""The standalone trainer: learning, exact resume, divergence, CLI, prediction export."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from mtl.config import ConfigError, TrialConfig
from mtl.profiles import PROFILES
from mtl.train import main, train

SMOKE = TrialConfig.from_dict({**PROFILES["smoke"], "optimizer": "adam", "lr": 1e-3})
KEYS = ("train_loss", "multitask", "semseg_miou", "depth_silog", "depth_abs_rel", "lr")


def _collect():
    history = []
    return history, lambda metrics, path: history.append((dict(metrics), path))


def test_two_epoch_run_learns_and_reports_everything():
    history, report = _collect()
    final = train(SMOKE, report)
    assert [m["epoch"] for m, _ in history] == [1, 2]
    first, second = history[0][0], history[1][0]
    assert second["train_loss"] < first["train_loss"]
    for key in (*KEYS, "train_img_per_s", "eval_img_per_s", "epoch_seconds", "peak_memory_mb", "parameters",
                "iou_road", "iou_bicycle", "depth_rmse", "depth_delta1", "best_multitask", "best_epoch"):
        assert key in second, key
    assert first["status"] == "running" and final["status"] == "completed"
    assert all(path is not None for _, path in history)  # a checkpoint with every report


@pytest.mark.parametrize("task", ["semseg", "depth"])
def test_single_task_run_reports_its_task_only(task):
    history, report = _collect()
    final = train(SMOKE.replace(tasks=[task], epochs=1), report)
    metrics = history[-1][0]
    other = "depth_silog" if task == "semseg" else "semseg_miou"
    own = "semseg_miou" if task == "semseg" else "depth_silog"
    assert math.isnan(metrics[other]) and math.isnan(metrics["multitask"])  # no score for a missing task
    assert math.isfinite(metrics[own]) and math.isfinite(metrics["train_loss"])
    assert metrics["w_" + task] == 1.0 and metrics["w_" + other.split("_")[0]] == 0.0  # its own loss alone
    assert final["best_epoch"] == 1


def test_checkpoint_every_and_time_split():
    history, report = _collect()
    train(SMOKE.replace(epochs=3, checkpoint_every=2, in_memory=True), report)
    assert [path is not None for _, path in history] == [False, True, True]  # every 2nd epoch and the last
    last = history[-1][0]
    parts = ("startup", "data", "train", "eval", "checkpoint", "other")
    assert sum(last[f"time_{p}_s"] for p in parts) == pytest.approx(last["time_wall_s"], abs=0.01)
    assert last["time_train_s"] > 0 and last["time_eval_s"] > 0 and last["time_checkpoint_s"] > 0
    assert 0 < last["time_in_steps"] <= 1


class _Crash(RuntimeError):
    pass


def test_resume_continues_exactly(tmp_path):
    cfg = SMOKE.replace(epochs=3)
    full, report = _collect()
    train(cfg, report)

    def crash_after_two(metrics, path):
        if metrics["epoch"] == 2:
            raise _Crash  # the node dies right after epoch 2 was checkpointed

    with pytest.raises(_Crash):
        train(cfg, crash_after_two, out_dir=tmp_path)
    resumed, report = _collect()
    train(cfg, report, checkpoint_dir=tmp_path / "last", out_dir=tmp_path)
    assert [m["epoch"] for m, _ in resumed] == [3]
    for key in KEYS:
        assert resumed[0][0][key] == pytest.approx(full[2][0][key], rel=1e-6, abs=1e-9), key


def test_a_truncated_checkpoint_restarts_the_run_cleanly(tmp_path, caplog):
    cfg = SMOKE.replace(epochs=2)
    reference, report = _collect()
    train(cfg, report, out_dir=tmp_path)
    state = tmp_path / "last" / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 3])  # a copy cut short
    resumed, report = _collect()
    with caplog.at_level("WARNING", logger="mtl.train"):
        train(cfg, report, checkpoint_dir=tmp_path / "last", out_dir=tmp_path)
    assert "unreadable checkpoint" in caplog.text and "restarting this run from epoch 0" in caplog.text
    assert [m["epoch"] for m, _ in resumed] == [1, 2]  # from the start, and to the same result
    assert resumed[-1][0]["train_loss"] == pytest.approx(reference[-1][0]["train_loss"], rel=1e-6)


def test_exploding_lr_ends_as_diverged():
    history, report = _collect()
    final = train(SMOKE.replace(optimizer="sgd", lr=1e6, epochs=3), report)
    assert final["status"] == "diverged" and final["multitask"] == 0.0
    assert "loss became" in final["diverged_reason"]
    assert history[-1][0]["status"] == "diverged" and history[-1][1] is None


def test_forced_nan_ends_as_diverged(monkeypatch):
    import mtl.engine as engine

    real = engine.task_losses

    def poisoned(*args, **kwargs):
        losses = real(*args, **kwargs)
        losses["depth"] = losses["depth"] * float("nan")
        return losses

    monkeypatch.setattr(engine, "task_losses", poisoned)
    final = train(SMOKE)
    assert final["status"] == "diverged" and final["epoch"] == 1


@pytest.mark.parametrize("weighting", ["uncertainty", "dwa"])
def test_learned_task_weighting_trains(weighting):
    history, report = _collect()
    train(SMOKE.replace(task_weighting=weighting, epochs=3), report)
    weights = [(m["w_semseg"], m["w_depth"]) for m, _ in history]
    assert weights[0] == pytest.approx((0.5, 0.5), abs=0.01)  # both start from the 0.5 / 0.5 baseline
    assert weights[-1] != pytest.approx((0.5, 0.5), abs=1e-4)  # learned (uncertainty) or loss-ratio driven (dwa)


def test_cli_writes_run_dir_and_exports_test_predictions(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["--profile", "smoke", "--out", str(out), "epochs=1", "export_predictions=true",
                 "architecture=distilled"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("epoch   1") and json.loads(lines[-1])["status"] == "completed"
    assert (out / "last" / "state.pt").is_file() and (out / "best" / "state.pt").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    semseg = sorted((out / "predictions" / "semseg").iterdir())
    depth = sorted((out / "predictions" / "depth").iterdir())
    assert len(semseg) == len(depth) == PROFILES["smoke"]["test_images"]
    label, cm = np.asarray(Image.open(semseg[0])), np.asarray(Image.open(depth[0]))
    assert label.shape == (32, 64) and label.max() < 19 and cm.dtype == np.uint16 and cm.min() >= 400


def test_cli_rejects_bad_keys(capsys):
    assert main(["--profile", "smoke", "optimiser=adam"]) == 2
    assert "unknown key 'optimiser' (did you mean 'optimizer'?)" in capsys.readouterr().err


def test_training_on_a_dataset_directory(tiny_synth):
    """`data` may point at a Miniscapes-layout directory instead of the synthetic cache."""
    cfg = SMOKE.replace(data=str(tiny_synth), train_images=8, val_images=4, test_images=4, epochs=1)
    history, report = _collect()
    assert train(cfg, report)["status"] == "completed" and history[0][0]["epoch"] == 1


@pytest.mark.filterwarnings("ignore:.*CUDA is not available")
def test_mixed_precision_switches(monkeypatch):
    import torch

    from mtl.data.depth_units import DepthUnit
    from mtl.train import make_runtime

    unit = DepthUnit("standardized")
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    fp16 = make_runtime(SMOKE.replace(amp="fp16", channels_last=True), cuda, unit)
    assert fp16.amp_dtype == torch.float16 and fp16.scaler is not None and fp16.channels_last
    bf16 = make_runtime(SMOKE.replace(amp="bf16"), cuda, unit)
    assert bf16.amp_dtype == torch.bfloat16 and bf16.scaler is None  # bf16 needs no loss scaling
    on_cpu = make_runtime(SMOKE.replace(amp="bf16", channels_last=True), cpu, unit)
    assert on_cpu.amp_dtype == torch.bfloat16 and on_cpu.scaler is None and on_cpu.channels_last
    with pytest.raises(ConfigError, match="fp16 autocast needs a CUDA GPU"):
        make_runtime(SMOKE.replace(amp="fp16"), cpu, unit)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a T4
    fallback = make_runtime(SMOKE.replace(amp="bf16"), cuda, unit)
    assert fallback.amp_dtype == torch.float16 and fallback.scaler is not None


def test_bf16_channels_last_and_compile_train_on_cpu(tmp_path):
    """The GPU switches run on the CPU too (at tiny sizes): bf16 autocast, channels_last, torch.compile; the
    checkpoint holds the plain model's keys, so a compiled run resumes into an eager one."""
    from mtl.checkpoint import load_checkpoint
    from mtl.models import build_model

    cfg = SMOKE.replace(epochs=1, encoder="resnet18", amp="bf16", channels_last=True, compile="default",
                        in_memory=True, train_images=8, val_images=4)
    final = train(cfg, out_dir=tmp_path)
    assert final["status"] == "completed" and np.isfinite(final["train_loss"])
    state = load_checkpoint(tmp_path / "last")
    build_model(cfg).load_state_dict(state["model"])  # no "_orig_mod." prefixes
