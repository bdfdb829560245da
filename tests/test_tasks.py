"""N tasks: surface normals from the synthetic generator (unit length, consistent with its depth), through the
transforms and the decoded path, the normals loss and metrics, per-task weights, three-task models and a
three-task training run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtl.config import ConfigError, TrialConfig
from mtl.data.datasets import decode_normals, encode_normals, open_dataset
from mtl.data.raycast import make_rays
from mtl.data.scene_sampler import sample_scene
from mtl.data.synthetic import render_sample
from mtl.data.transforms import JointTransform
from mtl.losses import TaskWeighting, normals_loss
from mtl.metrics import NormalsMetrics
from mtl.models import build_model
from mtl.profiles import PROFILES
from mtl.tasks import TASKS, canonical_tasks

THREE = {"tasks": ["semseg", "depth", "normals"]}


def _fd_normals(depth: np.ndarray, focal: float) -> np.ndarray:
    """Normals from the depth map alone: back-project each pixel (z * (u, v, 1)) and cross the neighbour
    differences; oriented towards the camera. (H-1, W-1, 3)."""
    h, w = depth.shape
    u = (np.arange(w) + 0.5 - w / 2.0) / focal
    v = (np.arange(h) + 0.5 - h / 2.0) / focal
    p = np.stack([depth * u[None, :], depth * v[:, None], depth], -1).astype(np.float64)
    du, dv = p[:-1, 1:] - p[:-1, :-1], p[1:, :-1] - p[:-1, :-1]
    n = np.cross(dv, du)  # y down, x right: dv x du points back at the camera
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


@pytest.mark.parametrize("index", [0, 3, 5])
def test_synthetic_normals_are_unit_and_agree_with_the_depth_on_ground_and_walls(index):
    h, w = 96, 192
    _, label, depth, normals = render_sample(0, "train", index, h, w)
    assert normals.shape == (h, w, 3) and normals.dtype == np.float32
    sky = ~np.isfinite(normals).all(-1)
    assert (sky == (label == 10)).mean() > 0.99  # NaN exactly where the sky is (class 10)
    assert np.allclose(np.linalg.norm(normals[~sky], axis=-1), 1.0, atol=1e-5)
    scene = sample_scene(np.random.default_rng([0, 0, index]))
    fd = _fd_normals(depth, make_rays(scene.camera, h, w).focal)
    n = normals[:-1, :-1]
    # flat pieces only: the pixel, its right and lower neighbours on one surface (same normal), depth inside the
    # stored range (the generator clamps to 4-300 m)
    same = (np.abs(normals[:-1, 1:] - n).sum(-1) < 1e-4) & (np.abs(normals[1:, :-1] - n).sum(-1) < 1e-4)
    inside = np.isfinite(depth[:-1, :-1]) & (depth[:-1, :-1] > 4.01) & (depth[:-1, :-1] < 60)
    for cls in (0, 2):  # road (the ground plane), building (box faces: walls)
        keep = same & inside & (label[:-1, :-1] == cls)
        if keep.sum() < 20:
            continue
        cos = np.clip((fd[keep] * n[keep]).sum(-1), -1, 1)
        angle = np.degrees(np.arccos(cos))
        assert np.median(angle) < 2.0 and np.quantile(angle, 0.9) < 8.0, (cls, np.median(angle))


def test_normals_png_code_round_trips_within_half_a_degree():
    rng = np.random.default_rng(0)
    n = rng.normal(size=(16, 16, 3)).astype(np.float32)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    n[0, 0] = np.nan
    back = decode_normals(encode_normals(n))
    assert np.isnan(back[0, 0]).all() and np.isfinite(back[1:]).all()
    cos = np.clip((back[1:] * n[1:]).sum(-1), -1, 1)
    assert np.degrees(np.arccos(cos)).max() < 0.6


def test_flip_mirrors_the_normals_x(tiny_synth):
    ds = open_dataset(tiny_synth, "train", normals=True)
    raw = ds.read_raw(0)
    flips = JointTransform(train=True, crop=(32, 64), flip=True)
    plain = JointTransform(train=False)(raw, 0)
    for seed in range(8):
        s = flips(raw, seed)
        if not torch.equal(s["semseg"], plain["semseg"]):  # this seed flipped
            mirrored = plain["normals"].flip(-1) * torch.tensor([-1.0, 1.0, 1.0]).view(3, 1, 1)
            assert torch.equal(s["normals"].nan_to_num(9), mirrored.nan_to_num(9))
            return
    pytest.fail("no seed flipped")


def test_decoded_normals_equal_the_png_path(tiny_synth):
    from mtl.data.decoded import BatchAugment, decode_split

    files = open_dataset(tiny_synth, "train", transform=JointTransform(train=True, crop=(16, 24), flip=True),
                         normals=True)
    split = decode_split(files)
    assert split.normals is not None and split.normals.shape == (8, 32, 64, 3)
    seeds, idx = [11, 12345, 7, 99], [0, 5, 2, 7]
    arrays = [torch.from_numpy(a[idx]) for a in split.arrays()]
    batch = BatchAugment((16, 24), flip=True)(*arrays[:3], seeds, arrays[3])
    for k, (i, seed) in enumerate(zip(idx, seeds, strict=True)):
        ref = files[(i, seed)]["normals"]
        assert torch.allclose(batch["normals"][k].nan_to_num(9), ref.nan_to_num(9), atol=1e-3)  # float rounding
    without = decode_split(open_dataset(tiny_synth, "train"))
    assert without.normals is None  # a two-task run keeps no normals


def test_normals_loss_and_metrics():
    target = torch.tensor([0.0, 0.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4).clone()
    target[..., 0, 0] = float("nan")
    assert normals_loss(target * 5, target).item() == pytest.approx(0.0, abs=1e-6)  # scale does not matter
    assert normals_loss(-target, target).item() == pytest.approx(2.0)
    tilt = torch.tensor([math.sin(math.radians(20)), 0.0, -math.cos(math.radians(20))]).view(1, 3, 1, 1)
    m = NormalsMetrics()
    m.update(tilt.expand(1, 3, 4, 4), target)
    out = m.compute()
    assert out["normals_mean"] == pytest.approx(20.0, abs=0.01)
    assert out["normals_median"] == pytest.approx(20.0, abs=0.01)
    assert (out["normals_11"], out["normals_22"], out["normals_30"]) == (0.0, 100.0, 100.0)
    assert math.isnan(NormalsMetrics().compute()["normals_mean"])


def test_tasks_and_per_task_weights_in_the_config():
    cfg = TrialConfig.from_dict(THREE)
    assert cfg.tasks == TASKS and cfg.loss_weights == pytest.approx((1 / 3,) * 3, abs=1e-5)
    assert TrialConfig.from_dict({"tasks": ["normals", "semseg"]}).tasks == ("semseg", "normals")
    with pytest.raises(ConfigError, match=r"loss_weights: one weight per task .* got 2"):
        TrialConfig.from_dict({**THREE, "loss_weights": [0.5, 0.5]})
    with pytest.raises(ConfigError, match="architecture distilled gates"):
        TrialConfig.from_dict({**THREE, "architecture": "distilled"})
    with pytest.raises(ConfigError, match="tasks"):
        TrialConfig.from_dict({"tasks": ["semseg", "edges"]})
    with pytest.raises(ValueError, match="non-empty list of distinct tasks"):
        canonical_tasks([])
    w = TaskWeighting("fixed", (0.2, 0.3, 0.5), tasks=TASKS)
    losses = {"semseg": torch.tensor(1.0), "depth": torch.tensor(2.0), "normals": torch.tensor(4.0)}
    assert w(losses).item() == pytest.approx(0.2 + 0.6 + 2.0)


@pytest.mark.parametrize("architecture", ["joint", "branched"])
def test_three_task_models_have_a_head_per_task_and_gradients_everywhere(architecture):
    cfg = TrialConfig.from_dict({**THREE, "architecture": architecture, "encoder": "resnet18",
                                 "decoder_channels": 32})
    torch.manual_seed(0)
    model = build_model(cfg).train()
    for mod in model.modules():  # zero_init_residual silences residual branches on step one; undo it here
        if isinstance(mod, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(mod.weight)
    out = model(torch.randn(2, 3, 32, 64))
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == {"semseg": (19, 32, 64), "depth": (1, 32, 64),
                                                               "normals": (3, 32, 64)}
    sum(v.square().mean() for v in out.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_a_three_task_run_reports_every_task(tiny_synth, tmp_path):
    from mtl.train import train

    cfg = TrialConfig.from_dict({**PROFILES["smoke"], **THREE, "data": str(tiny_synth), "epochs": 1,
                                 "train_images": 8, "val_images": 4, "encoder": "resnet18", "in_memory": True})
    rows = []
    train(cfg, lambda m, ckpt: rows.append(m), None)
    last = rows[-1]
    for key in ("semseg_miou", "depth_silog", "normals_mean", "normals_median", "normals_11", "normals_22",
                "normals_30", "train_normals_loss"):
        assert math.isfinite(last[key]), key
    assert 0 <= last["normals_11"] <= last["normals_22"] <= last["normals_30"] <= 100


def test_the_trade_off_of_three_objectives_leaves_single_task_rows_out(tmp_path):
    import pandas as pd

    from analysis.tradeoff import figure, tradeoff

    rng = np.random.default_rng(0)
    rows = [{"variant": v, "seed": s, "status": "completed", "semseg_miou": 30 + rng.normal() + 5 * (v == "a"),
             "depth_silog": 40 + rng.normal() - 5 * (v == "a"), "normals_mean": 30 + rng.normal() - 5 * (v == "a"),
             **({"depth_silog": np.nan, "normals_mean": np.nan} if v == "seg" else {})}
            for v in ("a", "b", "seg") for s in range(4)]
    frame = pd.DataFrame(rows)
    objectives = {"semseg_miou": "max", "depth_silog": "min", "normals_mean": "min"}
    result = tradeoff(frame, ["a", "b", "seg"], objectives)
    assert list(result.table["Variant"]) == ["a", "b"]  # the single-task row has no point in this space
    assert "Normals mean (°) (min)" in result.table and "Hypervolume of each seed's front" in result.note
    assert result.dominance.table.loc["b", "dominated_by"] == "a"
    assert figure(frame, result, tmp_path / "t.png").is_file()  # three pairwise panels
