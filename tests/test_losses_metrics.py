"""Losses, task weighting and metrics on hand-computed examples."""

from __future__ import annotations

import math

import pytest
import torch

from mtl.data.depth_units import DepthUnit
from mtl.losses import TaskWeighting, depth_loss, semseg_loss
from mtl.metrics import (
    ConfusionMatrix,
    DepthMetrics,
    confusion_matrix,
    miou,
    multitask_score,
    si_log_rmse,
    si_log_rmse_per_image,
)

NAN = float("nan")
IDENTITY = DepthUnit("standardized", mean=0.0, std=1.0)


def _d(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 1, -1)


def test_cross_entropy_ignores_255():
    logits = torch.tensor([[2.0, 0.0], [0.0, 5.0]]).T.reshape(1, 2, 1, 2)  # pixel 0 -> [2, 0], pixel 1 -> [0, 5]
    target = torch.tensor([[[0, 255]]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert semseg_loss(logits, target).item() == pytest.approx(expected)


def test_l2_l1_masked_to_valid_depth():
    pred, target = _d([1.0, 2.0, 3.0]), _d([1.0, NAN, 5.0])
    assert depth_loss(pred, target, "l2").item() == pytest.approx((0 + 4) / 2)
    assert depth_loss(pred, target, "l1").item() == pytest.approx((0 + 2) / 2)
    empty = depth_loss(pred, _d([NAN, NAN, NAN]), "l1")
    assert empty.item() == 0.0 and empty.requires_grad is False


def test_berhu_threshold_is_a_fifth_of_the_largest_error():
    pred, target = _d([0.1, 1.0]), _d([0.0, 0.0])
    c = 0.2 * 1.0
    expected = (0.1 + (1.0 + c * c) / (2 * c)) / 2  # |0.1| <= c is L1; 1.0 > c is the scaled L2 branch
    assert depth_loss(pred, target, "berhu").item() == pytest.approx(expected)


def test_silog_loss_is_scale_invariant_in_metres():
    target = _d([4.0, 10.0, 50.0, NAN])
    pred = target.nan_to_num(1.0) * 2.0
    # d = -log 2 everywhere: sqrt(mean d^2 - 0.85 mean(d)^2) = sqrt(0.15) * log 2
    assert depth_loss(pred, target, "silog", IDENTITY).item() == pytest.approx(math.sqrt(0.15) * math.log(2), rel=1e-5)
    with pytest.raises(ValueError, match="depth unit"):
        depth_loss(pred, target, "silog")


def test_fixed_and_uncertainty_weighting():
    losses = {"semseg": torch.tensor(2.0), "depth": torch.tensor(4.0)}
    assert TaskWeighting("fixed", (0.2, 0.8))(losses).item() == pytest.approx(0.4 + 3.2)
    uw = TaskWeighting("uncertainty", (0.5, 0.5))
    assert uw(losses).item() == pytest.approx(0.5 * 2 + 0.5 * 4)  # log-variances start at 0
    uw(losses).backward()
    assert uw.log_vars.grad.tolist() == pytest.approx([0.5 - 0.5 * 2, 0.5 - 0.5 * 4])


def test_dwa_weights_follow_the_loss_ratio():
    dwa = TaskWeighting("dwa", (0.5, 0.5), temperature=2.0)
    dwa.end_epoch({"semseg": 1.0, "depth": 1.0})
    assert dwa.current_weights().tolist() == [0.5, 0.5]  # fixed until two epochs are known
    dwa.end_epoch({"semseg": 0.5, "depth": 1.0})
    r = torch.tensor([0.5, 1.0]) / 2.0
    assert torch.allclose(dwa.current_weights(), torch.softmax(r, 0))
    restored = TaskWeighting("dwa", (0.5, 0.5))
    restored.load_state_dict(dwa.state_dict())
    assert torch.equal(restored.history, dwa.history)


def test_confusion_matrix_and_miou_with_ignore_and_absent_classes():
    target = torch.tensor([[0, 0, 1, 255], [1, 1, 255, 0]])
    pred = torch.tensor([[0, 1, 1, 3], [1, 1, 0, 0]])
    conf = confusion_matrix(pred, target)
    assert conf[0, 0] == 2 and conf[0, 1] == 1 and conf[1, 1] == 3 and conf.sum() == 6
    # class 0: TP 2, FP 0, FN 1 -> 2/3; class 1: TP 3, FP 1, FN 0 -> 3/4; 17 absent classes count 0
    assert miou(conf) == pytest.approx((2 / 3 + 3 / 4) / 19 * 100)
    acc = ConfusionMatrix()
    acc.update(pred[:1], target[:1])
    acc.update(pred[1:], target[1:])  # one matrix over the whole split, not a mean of per-image scores
    assert acc.miou() == pytest.approx(miou(conf))
    assert acc.per_class()["road"] == pytest.approx(200 / 3) and acc.per_class()["bicycle"] == 0.0


def test_si_log_rmse_hand_example_and_clamping():
    target = torch.tensor([[[[4.0, 4.0 * math.e]]]])
    pred = torch.tensor([[[[4.0, 4.0]]]])
    # d = [0, 1]: mean d^2 = 0.5, mean d = 0.5 -> sqrt(0.25) = 0.5 -> x100
    assert si_log_rmse(pred, target) == pytest.approx(50.0)
    assert si_log_rmse(torch.full_like(pred, 1.0), target) == pytest.approx(50.0)  # predictions clamp to >= 4 m
    assert si_log_rmse(target * 3.0, target) == pytest.approx(0.0, abs=1e-4)  # scale invariant
    two = torch.cat([target, torch.tensor([[[[10.0, NAN]]]])])
    assert si_log_rmse_per_image(torch.cat([pred, pred]), two).tolist() == pytest.approx([50.0, 0.0])


def test_multitask_score_matches_the_course_formula():
    assert multitask_score(67.5, 27.1) == pytest.approx(17.5 + 22.9)  # the untouched template's 40.4
    assert multitask_score(40.0, 60.0) == 0.0


def test_depth_metrics_accumulate_over_pixels():
    m = DepthMetrics()
    m.update(torch.tensor([[[[5.0, 10.0]]]]), torch.tensor([[[[4.0, 10.0]]]]))
    m.update(torch.tensor([[[[20.0, 1.0]]]]), torch.tensor([[[[25.0, NAN]]]]))
    out = m.compute()
    assert out["depth_abs_rel"] == pytest.approx((0.25 + 0 + 0.2) / 3)
    assert out["depth_rmse"] == pytest.approx(math.sqrt((1 + 0 + 25) / 3))
    assert out["depth_delta1"] == pytest.approx(100.0 / 3)  # 5/4 and 25/20 sit exactly on 1.25: not below it
