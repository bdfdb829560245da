"""Gradient-aggregation methods: each trains a step on every architecture's shared part, the defining property of
MGDA, PCGrad and UPGrad on hand-made gradients, GradNorm against its paper, and bad input refused before Ray."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import write_spec
from torchjd import aggregation as jd

from app.cli import main
from mtl.aggregation import METHODS, OPTION_KEYS, GradNorm, build_aggregator
from mtl.config import ConfigError, TrialConfig
from mtl.data.depth_units import DepthUnit
from mtl.engine import Runtime, train_step
from mtl.losses import TaskWeighting
from mtl.models import build_model
from mtl.optim import build_optimizer
from mtl.profiles import PROFILES


def _step(method: str, architecture: str = "joint") -> tuple[float, torch.nn.Module, TaskWeighting]:
    torch.manual_seed(0)
    cfg = TrialConfig.from_dict({**PROFILES["smoke"], "architecture": architecture, "task_weighting": method})
    model = build_model(cfg)
    weighting = TaskWeighting(cfg.task_weighting, cfg.loss_weights, cfg.dwa_temperature, cfg.tasks,
                              cfg.weighting_options())
    optimizer = build_optimizer(cfg, model, weighting)
    rgb = torch.randn(2, 3, 32, 32)
    semseg, depth = torch.randint(0, 19, (2, 32, 32)), torch.randn(2, 1, 32, 32)
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    value, _ = train_step(model, rgb, {"semseg": semseg, "depth": depth}, optimizer, weighting,
                          Runtime(torch.device("cpu"), DepthUnit("standardized", 50, 50)))
    moved = [not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)]
    return value, model, weighting, moved


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_trains_a_step_and_every_parameter_gets_a_gradient(method):
    value, model, _, moved = _step(method)
    assert math.isfinite(value)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert any(moved[: len(model.shared_parameters())]), "the shared part moved"


@pytest.mark.parametrize("architecture", ["branched", "distilled"])
@pytest.mark.parametrize("method", ["upgrad", "gradnorm", "pcgrad"])
def test_methods_work_on_every_architecture(method, architecture):
    value, model, _, _ = _step(method, architecture)
    assert math.isfinite(value)
    shared = {id(p) for p in model.shared_parameters()}
    assert all(p.grad is not None for p in model.parameters() if id(p) in shared)
    assert all(p.grad is not None for p in model.parameters() if id(p) not in shared)  # the heads: plain sums


def test_mgda_returns_the_minimum_norm_point_of_the_convex_hull():
    g = torch.tensor([[1.0, 0.0], [-0.5, 1.0]])  # conflicting: g1 . g2 < 0
    lam = torch.linspace(0, 1, 100001)[:, None]
    hull = lam * g[0] + (1 - lam) * g[1]
    best = hull[hull.norm(dim=1).argmin()]
    assert torch.allclose(jd.MGDA(epsilon=1e-6, max_iters=1000)(g), best, atol=1e-3)


def test_pcgrad_removes_the_conflicting_components():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-0.5, 1.0])
    p1 = g1 - (g1 @ g2) / (g2 @ g2) * g2  # each projected onto the other's normal plane
    p2 = g2 - (g2 @ g1) / (g1 @ g1) * g1
    assert torch.allclose(jd.PCGrad()(torch.stack([g1, g2])), p1 + p2, atol=1e-5)
    agree = torch.tensor([[1.0, 0.2], [0.3, 1.0]])  # no conflict: the plain sum
    assert torch.allclose(jd.PCGrad()(agree), agree.sum(0), atol=1e-5)


def test_upgrad_never_conflicts_with_a_task_gradient():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        jac = torch.randn(3, 10, generator=gen)
        update = jd.UPGrad()(jac)
        assert (jac @ update >= -1e-5).all()  # no task's loss increases to first order


def test_gradnorm_equalises_the_weighted_gradient_norms():
    """Chen et al. 2018, eq. 1-2: with equal training rates the weighted norms w_t |g_t| converge to one value;
    the weights sum to the number of tasks. The L1 objective makes the weights step around the balance point:
    their mean over the last steps is compared."""
    gn = GradNorm(2, alpha=1.5, lr=0.002)
    jac = torch.tensor([[10.0, 0.0], [0.0, 1.0]])
    seen = []
    for _ in range(4000):
        gn.observe(torch.tensor([1.0, 1.0]))
        gn(jac)
        seen.append(gn.weights.clone())
    assert gn.weights.sum().item() == pytest.approx(2.0)
    w = torch.stack(seen[-1000:]).mean(0)
    assert (w[0] * 10).item() == pytest.approx(w[1].item(), rel=0.05)


@pytest.mark.parametrize("alpha", [0.0, 1.5])
def test_gradnorm_gives_the_slower_task_the_larger_gradient(alpha):
    """The relative inverse training rate r_t = L~_t / mean L~ sets the targets mean(G) r_t^alpha: with alpha > 0 a
    task whose loss fell less gets the larger weight; with alpha = 0 the rates play no part (equal norms here)."""
    gn = GradNorm(2, alpha=alpha, lr=0.002)
    jac = torch.eye(2)
    gn.observe(torch.tensor([1.0, 1.0]))
    seen = []
    for _ in range(4000):
        gn.observe(torch.tensor([0.2, 0.8]))  # task 0 trained four times as far
        gn(jac)
        seen.append(gn.weights.clone())
    w = torch.stack(seen[-1000:]).mean(0)
    if alpha == 0:
        assert w[1].item() == pytest.approx(w[0].item(), rel=0.02)
    else:
        assert (w[1] / w[0]).item() > 4  # beyond the rates' own ratio: r_1 / r_0 = 4


def test_options_are_config_keys_and_reach_the_aggregator():
    assert set(OPTION_KEYS) == set(TrialConfig().weighting_options())
    cfg = TrialConfig(task_weighting="cagrad", cagrad_c=0.2)
    assert build_aggregator("cagrad", 2, cfg.weighting_options()).weighting.weighting.c == 0.2


@pytest.mark.parametrize("body, needles", [
    ("fixed: {task_weighting: gradsurgery}", ["task_weighting", "'pcgrad'", "'upgrad'", "'gradnorm'"]),
    ("fixed: {task_weighting: pcgrad, cagrad_c: 0.5}", ["cagrad_c: an option of task_weighting cagrad",
                                                       "task_weighting pcgrad has no options"]),
    ("fixed: {task_weighting: upgrad, loss_weights: [0.2, 0.8]}", ["loss_weights", "task_weighting upgrad"]),
])
def test_bad_methods_and_options_are_refused_before_ray(tmp_path, capsys, monkeypatch, body, needles):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray must not start on bad input"))
    assert main([str(write_spec(tmp_path, body)), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(n in err for n in needles), err


def test_a_method_whose_solver_extra_is_missing_says_what_to_install(tmp_path, capsys, monkeypatch):
    import ray

    def missing(**_):
        raise ImportError("No module named 'cvxpy'")

    monkeypatch.setattr(jd, "CAGrad", missing)
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray must not start on bad input"))
    with pytest.raises(ConfigError, match=r"task_weighting cagrad needs cvxpy .*mtl-tune\[solvers\]"):
        TrialConfig.from_dict({"task_weighting": "cagrad"})
    assert main([str(write_spec(tmp_path, "fixed: {task_weighting: cagrad}")), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "mtl-tune[solvers]" in err and len([line for line in err.splitlines() if "cagrad" in line]) == 1


def test_the_report_shows_each_method_s_step_against_fixed_weights():
    import pandas as pd

    from analysis.tables import step_costs

    frame = pd.DataFrame({"config/task_weighting": ["fixed", "fixed", "upgrad", "upgrad", "dwa"],
                          "train_step_ms": [100.0, 110.0, 300.0, 330.0, 104.0]})
    line = step_costs(frame)
    assert line.startswith("training step by task_weighting (mean over trials, against fixed)")
    assert "fixed 105 ms (1.0x)" in line and "upgrad 315 ms (3.0x)" in line and "dwa 104 ms (1.0x)" in line
    assert step_costs(frame[frame["config/task_weighting"] == "fixed"]) == ""  # one method: nothing to compare


def test_fp16_is_refused_and_compile_trains_the_parts_eagerly():
    """A Jacobian has no grad-scaler path: fp16 is refused naming why; with compile (the full profile on a GPU) the
    aggregated step calls the model's parts through torch.compile's wrapper, eagerly, and trains."""
    with pytest.raises(ConfigError, match="no grad-scaler path"):
        TrialConfig.from_dict({"task_weighting": "upgrad", "amp": "fp16"})
    cfg = TrialConfig.from_dict({**PROFILES["smoke"], "task_weighting": "upgrad", "compile": "default"})
    torch.manual_seed(0)
    model = build_model(cfg)
    weighting = TaskWeighting(cfg.task_weighting, cfg.loss_weights, tasks=cfg.tasks)
    optimizer = build_optimizer(cfg, model, weighting)
    compiled = torch.compile(model)  # as mtl.train wraps it; nothing compiles until its forward runs
    rgb, semseg, depth = torch.randn(2, 3, 32, 32), torch.randint(0, 19, (2, 32, 32)), torch.randn(2, 1, 32, 32)
    value, _ = train_step(compiled, rgb, {"semseg": semseg, "depth": depth}, optimizer, weighting,
                          Runtime(torch.device("cpu"), DepthUnit("standardized", 50, 50)))
    assert math.isfinite(value) and all(p.grad is not None for p in model.parameters() if p.requires_grad)
