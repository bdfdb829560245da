"""Per-class IoUs as one field through Tune (core.perclass), numbers of their own when the spec names one."""

from __future__ import annotations

import math

from core.perclass import PER_CLASS_FIELD, packed, unpacked
from search.trials import load_experiment


def test_packing_round_trips_and_leaves_other_metrics_alone():
    metrics = {"multitask": 3.0, "iou_road": 90.5, "iou_traffic_sign": 0.0, "iou_sky": math.nan, "lr": 1e-3}
    out = packed(metrics)
    assert set(out) == {"multitask", "lr", PER_CLASS_FIELD} and isinstance(out[PER_CLASS_FIELD], str)
    assert unpacked(out) == {"iou_road": 90.5, "iou_traffic_sign": 0.0}  # NaN (not JSON) stays out
    assert unpacked(metrics)["iou_road"] == 90.5 and packed({"lr": 1.0}) == {"lr": 1.0}


def test_an_experiment_that_names_a_class_reports_it_as_a_number(tmp_path):
    base = "fixed: {optimizer: adam}\nvariants:\n  - {name: a, baseline: true}\n"
    plain = tmp_path / "plain.yaml"
    plain.write_text(base)
    named = tmp_path / "named.yaml"
    named.write_text(base + "report: {columns: [multitask, iou_car]}\n")
    assert not load_experiment(plain).reports_per_class and load_experiment(named).reports_per_class
