"""TrialConfig: defaults = the course template, flat round trip, clear errors."""

from __future__ import annotations

import pytest

from mtl.config import ConfigError, TrialConfig, parse_overrides
from mtl.profiles import PROFILES, resolve_profile


def test_defaults_are_the_course_template():
    c = TrialConfig()
    assert (c.optimizer, c.lr, c.momentum, c.weight_decay, c.lr_schedule, c.lr_power) == ("sgd", 0.01, 0.9, 1e-4,
                                                                                           "poly", 0.9)
    assert (c.batch_size, c.epochs, c.crop_size, c.encoder, c.pretrained) == (4, 16, 256, "resnet34", False)
    assert (c.dilation, c.aspp, c.skip, c.se, c.architecture) == ((False, False, False), False, False, (), "joint")
    assert (c.loss_weights, c.depth_loss, c.depth_unit, c.seed) == ((0.5, 0.5), "l2", "standardized", 0)
    assert c.counts() == {"train": 20000, "val": 2500, "test": 2500}


def test_flat_round_trip_is_plain_values():
    c = TrialConfig(se=True, loss_weights=[0.2, 0.8], dilation=[False, False, True], amp=True)
    flat = c.to_flat()
    assert flat["se"] == ["encoder", "aspp", "decoder"] and flat["loss_weights"] == [0.2, 0.8]
    assert flat["amp"] == "bf16"
    assert all(isinstance(v, (str, int, float, bool, list, type(None))) for v in flat.values())
    assert TrialConfig.from_dict(flat) == c
    assert c.replace(lr=0.1).lr == 0.1


@pytest.mark.parametrize(("values", "message"), [
    ({"lrr": 0.1}, r"unknown key 'lrr' \(did you mean 'lr'\?\)"),
    ({"architecture": "cross-stitch"}, r"key 'architecture': Input should be 'joint', 'branched' or 'distilled'"),
    ({"lr": "fast"}, r"key 'lr': Input should be a valid number"),
    ({"lr": -1.0}, r"key 'lr': Input should be greater than 0"),
    ({"loss_weights": [0.5]}, r"loss_weights: one weight per task in the order of tasks \['semseg', 'depth'\]; got 1"),
    ({"se": ["encoder", "head"]}, r"key 'se.1': Input should be 'encoder', 'aspp' or 'decoder'"),
    ({"dilation": [True, False, False]}, r"key 'dilation'.*allowed: \[false, false, false\]"),
    ({"depth_loss": "huber"}, r"'l2', 'l1', 'berhu' or 'silog'"),
])
def test_bad_values_name_the_key_and_the_allowed_values(values, message):
    with pytest.raises(ConfigError, match=message):
        TrialConfig.from_dict(values, source="exp.yaml")


def test_yaml_loading_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optimizer: adam\nlr: 1.0e-4\n")
    c = TrialConfig.from_yaml(f, parse_overrides(["epochs=3", "loss_weights=[0.2, 0.8]"]))
    assert (c.optimizer, c.lr, c.epochs, c.loss_weights) == ("adam", 1e-4, 3, (0.2, 0.8))
    f.write_text("- a list\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: expected a mapping"):
        TrialConfig.from_yaml(f)
    with pytest.raises(ConfigError, match="cannot read config"):
        TrialConfig.from_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["epochs"])


def test_profiles_are_valid_configs():
    for name, values in PROFILES.items():
        assert TrialConfig.from_dict(values, f"profile {name}")
    assert resolve_profile("auto", cuda_available=False) == "cpu"
    assert resolve_profile("auto", cuda_available=True) == "full"
    with pytest.raises(ValueError, match="profile must be one of"):
        resolve_profile("huge", False)
