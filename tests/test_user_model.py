"""Your own model (`model: pkg.mod:fn`, mtl/models/user.py): a package the test creates is checked before Ray,
broken ones are refused in one line, and one runs in a real search."""

from __future__ import annotations

import textwrap

import pandas as pd
import pytest
import torch
from conftest import REPO, write_spec

from app.cli import main
from mtl.config import ConfigError, TrialConfig
from mtl.models import build_model
from mtl.models.user import check_model

GOOD = """
import torch.nn.functional as F
from torch import nn

from mtl.data.labels import NUM_CLASSES


class Tiny(nn.Module):
    def __init__(self, tasks):
        super().__init__()
        self.tasks = tasks
        self.trunk = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.ModuleDict({t: nn.Conv2d(8, NUM_CLASSES if t == "semseg" else 1, 1) for t in tasks})

    def forward(self, x):
        f = F.relu(self.trunk(x))
        return {t: self.head[t](f) for t in self.tasks}


def build(cfg):
    return Tiny(cfg.tasks)


def wrong_keys(cfg):
    model = Tiny(cfg.tasks)
    model.forward = lambda x: {"segmentation": x}
    return model


def wrong_shape(cfg):
    model = Tiny(cfg.tasks)
    model.forward = lambda x: {t: x[:, :1, ::2] for t in cfg.tasks}
    return model


def not_a_module(cfg):
    return "a string"
"""


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package of the user's own, `mylab.nets`, importable as a module and reachable as a file."""
    (tmp_path / "mylab").mkdir()
    (tmp_path / "mylab" / "__init__.py").write_text("")
    (tmp_path / "mylab" / "nets.py").write_text(textwrap.dedent(GOOD))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path / "mylab" / "nets.py"


def _cfg(model: str, **kw) -> TrialConfig:
    return TrialConfig.from_dict({"model": model, "crop_size": 32, "image_size": [32, 64], **kw})


def test_a_package_s_model_is_built_and_checked_by_module_and_by_file(package):
    check_model(_cfg("mylab.nets:build"))
    check_model(_cfg(f"{package}:build"))  # the file form imports it under its package name
    model = build_model(_cfg("mylab.nets:build", tasks=["depth"]))
    assert set(model(torch.zeros(1, 3, 32, 32))) == {"depth"}


@pytest.mark.parametrize(("ref", "message"), [
    ("mylab.nets:nowhere", "mylab.nets has no function 'nowhere'"),
    ("mylab.gone:build", "cannot import mylab.gone (ModuleNotFoundError"),
    ("mylab.nets", "expected 'package.module:function' or 'path/to/file.py:function'"),
    ("mylab.nets:wrong_keys", "forward returned keys ['segmentation']; expected ['semseg', 'depth']"),
    ("mylab.nets:wrong_shape", "output 'semseg' has shape (2, 1, 16, 32); expected (2, 19, 32, 32)"),
    ("mylab.nets:not_a_module", "returned str, not a torch.nn.Module"),
    ("/nowhere/nets.py:build", "no file /nowhere/nets.py"),
])
def test_a_broken_model_is_named_in_one_line(package, ref, message):
    with pytest.raises(ConfigError, match=r"^model: ") as e:
        check_model(_cfg(ref))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_gradient_aggregation_needs_the_shared_part_and_says_so(package):
    with pytest.raises(ConfigError, match="task_weighting mgda needs the model's shared_features, heads, "
                                          "shared_parameters"):
        check_model(_cfg("mylab.nets:build", task_weighting="mgda"))
    check_model(_cfg(f"{REPO}/examples/tinynet/nets.py:build", task_weighting="mgda"))  # the example has them


def test_the_example_model_trains_every_parameter():
    """The zoo check (timm style) for examples/tinynet: shapes, no NaN, a gradient at every parameter."""
    cfg = _cfg(f"{REPO}/examples/tinynet/nets.py:build")
    model = build_model(cfg)
    out = model(torch.randn(2, 3, 32, 48))
    assert out["semseg"].shape == (2, 19, 32, 48) and out["depth"].shape == (2, 1, 32, 48)
    sum(o.mean() for o in out.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_a_broken_model_is_refused_before_ray(package, tmp_path, capsys):
    spec = write_spec(tmp_path, "fixed: {model: mylab.nets:wrong_shape}\n", name="broken_model")
    assert main([str(spec), "--profile", "smoke", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "model: 'mylab.nets:wrong_shape': output 'semseg' has shape" in err


def test_a_user_model_runs_in_a_search(ray_local, package, tmp_path):
    """The file form through Tune: trials run in their own folders, so the path is made absolute first."""
    spec = write_spec(tmp_path, f"""
fixed: {{optimizer: adam, lr: 1.0e-3, epochs: 1}}
variants:
  - {{name: joint, baseline: true}}
  - {{name: mine, model: {package}:build}}
""", name="own_model_e2e")
    assert main([str(spec), "--profile", "smoke", "--storage", str(tmp_path / "runs"), "--no-dashboard",
                 "--no-report", "--wandb", "off"]) == 0
    df = pd.read_parquet(tmp_path / "runs" / "own_model_e2e" / "results.parquet").set_index("variant")
    assert (df["status"] == "completed").all()
    assert df.loc["mine", "parameters"] < df.loc["joint", "parameters"]  # the tiny model, not the built-in one
    assert df.loc["mine", "config/model"].endswith("mylab/nets.py:build")
