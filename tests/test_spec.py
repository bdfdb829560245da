"""Spec validation (no Ray): the malformed-spec suite, expansion, every shipped YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from app.cli import main
from mtl.config import TrialConfig
from search.dryrun import Probe
from search.spec import SpecError
from search.trials import load_experiment

REPO = Path(__file__).resolve().parents[1]
BASE = str(REPO / "search" / "spaces" / "base.yaml")

MALFORMED = [
    ("grids: {lr: [0.1]}\n", r"unknown key 'grids' \(did you mean 'grid'\?\)"),
    ("fixed: {lrr: 0.1}\n", r"key 'fixed.lrr': not a TrialConfig field \(did you mean 'lr'\?\)"),
    ("variants: [{name: a, loss_weight: [0.2, 0.8]}]\n", r"variants\[0\].loss_weight'.*'loss_weights'"),
    ("zip: {batch_size: [2, 4], epochs: [8]}\n", r"key 'zip': lists must have equal length"),
    ("space: {lr: {loguniform: [1.0e-5, 0.1]}}\nsearch: {algorithm: grid}\n", r"random or optuna, not grid"),
    ("variants: [{name: a, baseline: true}, {name: b, baseline: true}]\n", r"more than one variant has baseline"),
    ("base: [does_not_exist.yaml]\n", r"does_not_exist.yaml: cannot read base file"),
    ("fixed: {lr: [unclosed\n", r"not valid YAML"),
    ("- just\n- a list\n", r"must be a mapping of spec keys"),
    ("variants: [{loss_weights: [0.2, 0.8]}]\n", r"'variants\[0\].name': every variant needs a non-empty name"),
    ("variants: [{name: a}, {name: a}]\n", r"duplicate variant name 'a'"),
    ("fixed: {lr: fast}\n", r"key 'lr': Input should be a valid number"),
    ("grid: {architecture: [joint, mti-net]}\n", r"Input should be 'joint', 'branched' or 'distilled'"),
    ("grid: {lr: []}\n", r"key 'grid.lr': needs at least one value"),
    ("space: {lr: {lognormal: [0.1, 1]}}\n", r"key 'space.lr': expected one of \{loguniform"),
    ("space: {lr: {loguniform: [0, 0.1]}}\n", r"need 0 < low < high"),
    ("metric: mIoU\n", r"key 'metric': 'mIoU' is not a reported metric"),
    ("space: {lr: {loguniform: [1.0e-5, 0.1]}}\nsearch: {algorithm: optuna}\nseeds: 3\n", r"optuna proposes"),
    ("grid: {seed: [0, 1]}\n", r"key 'seed' cannot be an axis: use 'seeds'"),
    ("grid: {lr: [0.1]}\nzip: {lr: [0.1]}\n", r"key 'lr' is set by both 'grid' and 'zip'"),
    ("variants: [{name: a}]\nreport: {baseline: b}\n", r"key 'report.baseline': no row named 'b'"),
    ("seeds: 0\n", r"key 'seeds'.*seeds must be >= 1"),
    ("scheduler: {type: hyperband}\n", r"key 'scheduler.type': Input should be 'none', 'asha' or 'median'"),
    ("fixed: {epochs: 2}\nscheduler: {type: asha, grace_period: 5}\n", r"grace_period': 5 is more than the 2 epochs"),
    ("search: {num_samples: 4}\n", r"key 'search.num_samples': only random and optuna sample"),
    ("variants: [{name: a, lr: 0.1}]\ngrid: {lr: [0.1, 0.2]}\n", r"key 'lr' is set by both a variant and grid/zip"),
    ("search: {algo: optuna}\n", r"key 'search.algo': Extra inputs are not permitted"),
    ("name: my exp/1\n", r"key 'name': String should match pattern"),
    ("resources: {cpus: 0}\n", r"key 'resources.cpus': Input should be greater than 0"),
    ("report: {columns: [multitask, accuracy]}\n", r"key 'report.columns\[1\]': unknown column 'accuracy'"),
    ("fixed: {dilation: [true, false, false]}\n", r"key 'dilation'.*allowed"),
]


@pytest.mark.parametrize(("text", "message"), MALFORMED, ids=[f"malformed-{i}" for i in range(len(MALFORMED))])
def test_malformed_specs_fail_early_naming_file_and_key(tmp_path, text, message):
    spec = tmp_path / "exp.yaml"
    spec.write_text(text)
    with pytest.raises(SpecError, match=message) as info:
        load_experiment(spec)
    assert "exp.yaml" in str(info.value)


def test_nested_base_files_are_refused(tmp_path):
    (tmp_path / "inner.yaml").write_text("fixed: {lr: 0.1}\n")
    (tmp_path / "outer.yaml").write_text("base: [inner.yaml]\n")
    (tmp_path / "exp.yaml").write_text("base: [outer.yaml]\n")
    with pytest.raises(SpecError, match=r"outer.yaml: key 'base': a base file cannot list bases of its own"):
        load_experiment(tmp_path / "exp.yaml")


def test_cli_exits_2_before_ray_starts(tmp_path, monkeypatch, capsys):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray must not start for a bad spec"))
    spec = tmp_path / "exp.yaml"
    spec.write_text("fixed: {optimiser: adam}\n")
    assert main([str(spec), "--storage", str(tmp_path / "r")]) == 2
    assert "unknown key" not in capsys.readouterr().out
    spec.write_text(f"base: [{BASE}]\nfixed: {{pretrained: /nowhere/weights.pth}}\n")
    assert main([str(spec), "--storage", str(tmp_path / "r"), "--profile", "smoke"]) == 2
    assert "weights file /nowhere/weights.pth not found" in capsys.readouterr().err


def test_wandb_online_needs_a_key_in_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    spec = tmp_path / "exp.yaml"
    spec.write_text(f"base: [{BASE}]\n")
    assert main([str(spec), "--profile", "smoke", "--storage", str(tmp_path / "r"), "--wandb", "online"]) == 2
    assert "needs WANDB_API_KEY in the environment" in capsys.readouterr().err


def test_existing_experiment_needs_resume_or_a_new_name(tmp_path, capsys):
    spec = tmp_path / "exp.yaml"
    spec.write_text(f"base: [{BASE}]\n")
    (tmp_path / "r" / "exp").mkdir(parents=True)
    (tmp_path / "r" / "exp" / "mtl_experiment.json").write_text("{}")
    assert main([str(spec), "--profile", "smoke", "--storage", str(tmp_path / "r")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([str(spec), "--profile", "smoke", "--storage", str(tmp_path / "r"), "--name", "x", "--resume"]) == 2
    assert "--resume: no experiment 'x'" in capsys.readouterr().err


def test_expansion_variants_grid_zip_seeds(tmp_path):
    spec = tmp_path / "exp.yaml"
    spec.write_text(yaml.safe_dump({
        "base": [BASE], "fixed": {"optimizer": "adam"},
        "variants": [{"name": "A", "loss_weights": [0.2, 0.8]}, {"name": "B", "baseline": True}],
        "grid": {"encoder": ["resnet18", "resnet34"]}, "zip": {"batch_size": [2, 8], "epochs": [4, 8]}, "seeds": [3, 7],
    }))
    exp = load_experiment(spec)
    assert len(exp.rows) == 2 * 2 * 2 and exp.seeds == (3, 7) and exp.trial_count() == 16
    assert exp.rows[0].name == "A | encoder=resnet18, batch_size=2, epochs=4"
    assert exp.baseline.name == "B | encoder=resnet18, batch_size=2, epochs=4"
    assert set(exp.ablated) == {"loss_weights", "encoder", "batch_size", "epochs"}
    smoke = exp.configure("smoke")
    cfg = smoke.trial_config({"variant": "A | encoder=resnet34, batch_size=8, epochs=8", "seed": 7})
    assert (cfg.encoder, cfg.batch_size, cfg.epochs, cfg.seed, cfg.loss_weights) == ("resnet34", 8, 8, 7, (0.2, 0.8))
    assert cfg.image_size == (32, 64) and cfg.optimizer == "adam"  # profile scales; the ablated epochs stay


def test_base_yaml_is_the_trial_config_defaults():
    fixed = yaml.safe_load((REPO / "search" / "spaces" / "base.yaml").read_text())["fixed"]
    defaults = TrialConfig()
    assert TrialConfig.from_dict(fixed) == defaults


EXPECTED_TRIALS = {
    "task_weights": 10, "optimizer_lr": 10, "batch_epochs": 4, "pretrained_dilation": 3, "aspp_skip": 4,
    "architecture": 3, "se": 4, "depth_loss": 4, "depth_unit": 4, "task_weighting": 3, "tta": 3, "lr_search": 24,
    "single_task": 9, "dilation": 2, "frontier": 165, "own_model": 2, "three_tasks": 12,
}


def test_every_shipped_spec_is_tested():
    shipped = {p.stem for p in (REPO / "ablations").glob("*.yaml")}
    assert shipped == set(EXPECTED_TRIALS)
    for fragment in (REPO / "search" / "spaces").glob("*.yaml"):
        assert load_experiment(fragment).rows  # a fragment is itself a valid spec


@pytest.mark.parametrize("name", sorted(EXPECTED_TRIALS))
def test_shipped_spec_dry_runs(name, capsys):
    # the probe really builds and trains each model shape (cached per shape within the session)
    spec = str(REPO / "ablations" / f"{name}.yaml")
    assert main([spec, "--profile", "smoke", "--dry-run", "--probe-steps", "1"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "profile: smoke"
    assert f"budget: {EXPECTED_TRIALS[name]} trials" in out
    assert load_experiment(REPO / "ablations" / f"{name}.yaml").configure("full").trial_count() == EXPECTED_TRIALS[name]


def test_dry_run_warns_about_missing_pretrained_weights(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr("search.dryrun.probe", lambda cfg, steps=2, threads=None: Probe(0.4, 0.3, 1.0, 0.1))
    assert main([str(REPO / "ablations" / "architecture.yaml"), "--profile", "smoke", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "warning: resnet34 ImageNet weights are not in the torch cache" in out and "pretrained:" in out
    assert main([str(REPO / "ablations" / "architecture.yaml"), "--profile", "smoke"]) == 2
    assert "pretrained weights are not available" in capsys.readouterr().err
