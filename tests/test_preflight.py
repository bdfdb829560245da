"""Bad input never starts Ray: every check of `search.preflight` exits 2 naming the flag, file or key."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO, write_spec
from PIL import Image

from mtl.models.encoder import PretrainedWeightsError, _reachable, fetch_weights
from search.cli import main

TASK_WEIGHTS = str(REPO / "ablations" / "task_weights.yaml")


@pytest.fixture
def no_ray(monkeypatch, tmp_path):
    """Ray must not start; the working directory is empty, so anything written shows."""
    import ray

    import search.driver

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray must not start on bad input"))
    monkeypatch.setattr(search.driver, "run", lambda *a, **k: pytest.fail("the search must not start"))
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
