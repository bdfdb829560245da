"""Bad input never starts Ray: every check of `search.preflight` exits 2 naming the flag, file or key."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO, write_spec
from PIL import Image

from app.cli import main
from mtl.models.encoder import PretrainedWeightsError, _reachable, fetch_weights

TASK_WEIGHTS = str(REPO / "ablations" / "task_weights.yaml")
DEPTH_LOSS = str(REPO / "ablations" / "depth_loss.yaml")


@pytest.fixture
def no_ray(monkeypatch, tmp_path):
    """Ray must not start; the working directory is empty, so anything written shows."""
    import ray

    import search.driver

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray must not start on bad input"))
    monkeypatch.setattr(search.driver, "run_search", lambda *a, **k: pytest.fail("the search must not start"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _refused(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    for needle in needles:
        assert needle in captured.err, (needle, captured.err)
    return captured.err


def _written(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name != "ablations")


@pytest.mark.parametrize(("flags", "needles"), [
    (["--storage", "gs://bucket/x"], ["--storage gs://bucket/x", "gs:// is not supported", "s3://"]),
    (["--storage", "hdfs://nn/x", "--dry-run"], ["--storage hdfs://nn/x"]),
    (["--storage", "s3://"], ["--storage s3://: no bucket; use s3://bucket/prefix"]),
    (["--gpus-per-trial", "-1", "--dry-run"], ["--gpus-per-trial must be >= 0, got -1"]),
    (["--gpus-per-trial", "1"], ["--gpus-per-trial 1: this machine has 0 CUDA GPUs"]),
    (["--cpus-per-trial", "0"], ["--cpus-per-trial must be > 0"]),
    (["--cpus-per-trial", "4096"], ["--cpus-per-trial 4096: this machine has"]),
    (["--max-concurrent", "0"], ["--max-concurrent must be >= 1"]),
    (["--seeds", "0"], ["--seeds must be >= 1"]),
    (["--set", "lrr=0.1"], ["--set lrr: not a TrialConfig field (did you mean 'lr'?)"]),
    (["--set", "loss_weights=[0.3, 0.7]"], ["--set loss_weights: 'loss_weights' is ablated by", "fixed keys"]),
    (["--set", "epochs=-2"], ["key 'epochs'", "greater than or equal to 1"]),
    (["--set", "epochs"], ["--set", "expected key=value"]),
    (["--set", "seed=3"], ["--set seed", "--seeds"]),
    (["--storage", "file:///proc/mtl-tune-x"], ["--storage /proc/mtl-tune-x: cannot create /proc/mtl-tune-x"]),
])
def test_bad_flags_exit_2_before_anything_starts(no_ray, capsys, flags, needles):
    _refused(capsys, [TASK_WEIGHTS, "--profile", "smoke", *flags], *needles)
    assert _written(no_ray) == []


def test_data_directory_problems_are_found_on_the_driver(no_ray, tiny_synth, capsys, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty")
    _refused(capsys, [TASK_WEIGHTS, "--profile", "smoke", "--data", str(empty)], f"--data {empty}",
             "neither a Miniscapes layout")
    broken = tmp_path_factory.mktemp("broken")
    for split in ("train", "val", "test"):
        for kind in ("rgb", "semseg", "depth"):
            (broken / split / kind).mkdir(parents=True)
            for i in range(16):
                src = tiny_synth / ("train" if split == "train" else "val") / kind / f"{i % 4:06d}.png"
                (broken / split / kind / f"{i:06d}.png").write_bytes(src.read_bytes())
    (broken / "val" / "depth" / "000000.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    _refused(capsys, [TASK_WEIGHTS, "--profile", "smoke", "--data", str(broken)],
             "val/depth/000000.png: unreadable image")
    Image.fromarray(np.full((32, 64), 77, np.uint8)).save(broken / "val" / "depth" / "000000.png")
    Image.fromarray(np.full((32, 64), 40, np.uint8)).save(broken / "train" / "semseg" / "000000.png")
    _refused(capsys, [TASK_WEIGHTS, "--profile", "smoke", "--data", str(broken)],
             "train/semseg/000000.png: label values [40]")
    assert _written(no_ray) == []


def test_missing_weights_offline_fail_fast_with_the_scratch_command(no_ray, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(no_ray / "hub"))
    monkeypatch.setenv("MTL_TUNE_OFFLINE", "1")
    # fail fast: offline means no connection attempt at all, so nothing can wait on the network
    monkeypatch.setattr("mtl.models.encoder._reachable", lambda url, timeout: pytest.fail("tried to connect"))
    spec = str(REPO / "ablations" / "architecture.yaml")
    err = _refused(capsys, [spec, "--profile", "smoke"], "resnet34 ImageNet weights are not in the torch cache",
                   "MTL_TUNE_OFFLINE=1", f"python run_search.py {spec} --profile smoke --set pretrained=false")
    assert "forbids downloads" in err
    # a spec that compares pretrained weights cannot be run from scratch, and says so
    _refused(capsys, [str(REPO / "ablations" / "pretrained_dilation.yaml"), "--profile", "smoke"],
             "compares pretrained weights")
    assert _written(no_ray) == []


def test_weights_download_gives_up_after_a_bounded_probe_when_unreachable(tmp_path, monkeypatch):
    import socket

    import torch

    from mtl.models.encoder import CONNECT_TIMEOUT_S

    with socket.socket() as s:  # a closed port on loopback: the connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert _reachable(f"http://127.0.0.1:{port}/x.pth", timeout=2.0) is False
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("MTL_TUNE_OFFLINE", raising=False)
    probes = []
    monkeypatch.setattr("mtl.models.encoder._reachable", lambda url, timeout: probes.append(timeout) or False)
    with pytest.raises(PretrainedWeightsError, match="cannot be reached"):
        fetch_weights("resnet18")
    assert probes == [CONNECT_TIMEOUT_S]  # one probe, bounded by its timeout (DNS included), then the error


def test_set_applies_to_fixed_keys_and_is_shown_in_the_dry_run(capsys, tmp_path):
    spec = write_spec(tmp_path, "variants: [{name: a, baseline: true}, {name: b, lr: 0.1}]\n")
    from search.preflight import parse_sets
    from search.trials import load_experiment

    exp = load_experiment(spec)
    sets = parse_sets(["pretrained=false", "encoder=resnet18", "aspp_rates=[1, 2, 3]"], exp)
    configured = exp.configure("cpu", sets=sets)
    assert configured.sets == sets and configured.defaults["encoder"] == "resnet18"
    assert configured.trial_config({"variant": "b", "seed": 0}).aspp_rates == (1, 2, 3)
    # the user's --set beats the profile, which never touches an ablated key
    assert exp.configure("cpu", sets={"epochs": 1}).defaults["epochs"] == 1


def test_resume_under_another_design_is_refused_before_ray(no_ray, capsys):
    # before: --resume silently continued under a changed --set, an edited spec or another profile
    from search.cli import _experiment, parse_args
    from search.record import experiment_record

    started = _experiment(parse_args([TASK_WEIGHTS, "--profile", "smoke"])).configure("smoke")
    exp_dir = no_ray / "results" / "task_weights"
    exp_dir.mkdir(parents=True)
    (exp_dir / "mtl_experiment.json").write_text(experiment_record(started).to_json())
    err = _refused(capsys, [TASK_WEIGHTS, "--profile", "smoke", "--resume", "--set", "lr=0.01", "--no-dashboard"],
                   "--resume: experiment 'task_weights' was started with another design; changed:",
                   "set.lr: null -> 0.01", "defaults.lr: 0.001 -> 0.01", "or start a new experiment with --name")
    assert "Traceback" not in err
    _refused(capsys, [TASK_WEIGHTS, "--profile", "cpu", "--resume", "--no-dashboard"], 'profile: "smoke" -> "cpu"')
    _refused(capsys, [TASK_WEIGHTS, "--profile", "smoke", "--resume", "--seeds", "3", "--no-dashboard"],
             "seeds: [0, 1] -> [0, 1, 2]")


@pytest.mark.parametrize(("flag", "started", "message"), [
    (["--max-concurrent", "2"], "--max-concurrent 1", "--max-concurrent 2: this experiment started with 1, and Tune "
                                                      "restores the experiment's concurrency limit"),
    (["--budget", "trials=9"], "--budget trials=12", "--budget trials=9: this experiment started with trials=12"),
    (["--extend", "docs/findings/depth_loss"], "", "--extend docs/findings/depth_loss: this experiment started with "
                                                   "none"),
])
def test_an_option_tune_restores_cannot_change_on_resume(no_ray, capsys, flag, started, message):
    """Every option given with --resume is honoured or refused: one fixed when the experiment started (Tune
    restores it from its own state) is refused with exit 2 before Ray, naming it and why."""
    from search.cli import _experiment, parse_args
    from search.record import experiment_record
    from search.runconfig import resolve

    base = [DEPTH_LOSS, "--profile", "smoke", "--seeds", "first=2,max=4", "--compare", "L1 vs L2"]
    start = [*base, *started.split()]
    exp = _experiment(parse_args(start)).configure("smoke", sets={"pretrained": False})
    run = resolve(parse_args(start), exp, start)
    exp_dir = no_ray / "results" / "depth_loss"
    exp_dir.mkdir(parents=True)
    record = experiment_record(exp).model_copy(update={"runs": [run.recorded()]})
    (exp_dir / "mtl_experiment.json").write_text(record.to_json())
    err = _refused(capsys, [*base, "--set", "pretrained=false", "--resume", "--no-dashboard", *flag], message)
    assert "resume without" in err and "or start a new experiment with --name" in err
    # the same value again (or none) is no change
    for again in ([*base, "--resume", *started.split()], [*base, "--resume"]):
        assert resolve(parse_args(again), exp, again).resume_conflicts(run.recorded()) == []


def test_a_spec_asking_for_gpus_this_machine_lacks_is_refused(no_ray, capsys, tmp_path):
    # before: `resources: {gpus: 1}` on a CPU-only machine started Ray and left every trial pending forever
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the spec fits")
    spec = write_spec(tmp_path, "resources: {gpus: 1}\n", name="gpu_spec")
    _refused(capsys, [str(spec), "--profile", "smoke"], "key 'resources.gpus': 1 per trial, but this machine has 0",
             "--gpus-per-trial 0")
    assert [p for p in _written(no_ray) if not p.endswith(".yaml")] == []  # nothing but the spec itself
    spec = write_spec(tmp_path, "resources: {cpus: 64}\n", name="cpu_spec")
    _refused(capsys, [str(spec), "--profile", "smoke"], "key 'resources.cpus': 64 per trial")


def test_a_completed_run_is_not_reported_interrupted_without_tunes_sigint_handler(monkeypatch):
    # before: with TUNE_DISABLE_SIGINT_HANDLER=1 our own handler stayed in place, which read as "interrupted"
    import os
    import signal
    import time

    from search.driver import _fit

    class Finishes:
        def fit(self):
            return "grid"

    class CtrlC:
        def fit(self):
            os.kill(os.getpid(), signal.SIGINT)  # no Tune handler: ours catches it
            time.sleep(1)
            return "never"

    monkeypatch.setenv("TUNE_DISABLE_SIGINT_HANDLER", "1")
    assert _fit(Finishes(), {}) == ("grid", False)
    assert _fit(CtrlC(), {}) == (None, True)
    monkeypatch.setenv("TUNE_DISABLE_SIGINT_HANDLER", "0")
    assert _fit(Finishes(), {}) == ("grid", True)  # Tune's handler would have replaced ours had it not fired
