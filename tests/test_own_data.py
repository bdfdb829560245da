"""Your own dataset: the NYUv2 layout of the multi-task literature (a small copy this test generates), a descriptor
(mtl_dataset.yaml) with its classes, depth range and tasks, each checked before Ray with a one-line error naming
the key, and a three-task search through Tune on it whose report has every task's metrics and Δm."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from mtl.data.datasets import DatasetError, RawSample, detect_layout, open_dataset
from mtl.data.describe import DESCRIPTOR, NYUV2_CLASSES, check_dataset, dataset_info
from mtl.data.nyuv2 import NYUv2Dataset, main, synthetic_as_nyuv2


def _nyu_like(index: int, split: str) -> RawSample:
    return synthetic_as_nyuv2(3, split, index, 32, 64)


@pytest.fixture(scope="module")
def nyu_copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("nyuv2")
    main(["--root", str(root), "--train", "16", "--val", "8", "--size", "32x64"])  # python -m mtl.data.nyuv2
    return root


def _describe(root, **changes) -> None:
    body = {"layout": "nyuv2", "classes": list(NYUV2_CLASSES), "ignore_index": -1,
            "depth": {"min": 0.5, "max": 10.0, "unit": "m"}, "tasks": ["semseg", "depth", "normals"], **changes}
    (root / DESCRIPTOR).write_text(yaml.safe_dump({k: v for k, v in body.items() if v is not None}))


def test_the_nyuv2_layout_reads_13_classes_depth_and_normals(nyu_copy):
    assert detect_layout(nyu_copy) == "nyuv2"
    info = dataset_info(nyu_copy)
    assert (info.layout, info.num_classes, info.depth_range, info.tasks) == ("nyuv2", 13, (0.5, 10.0),
                                                                             ("semseg", "depth", "normals"))
    ds = open_dataset(nyu_copy, "train", normals=True)
    assert isinstance(ds, NYUv2Dataset) and len(ds) == 16
    raw, want = ds.read_raw(2), _nyu_like(2, "train")
    assert np.array_equal(raw.semseg, want.semseg)  # -1 in the arrays reads as 255
    assert np.allclose(raw.depth, want.depth, equal_nan=True)  # 0 in the arrays reads as NaN
    assert np.allclose(raw.normals, want.normals, atol=1e-6, equal_nan=True)
    assert np.abs(raw.rgb.astype(int) - want.rgb).max() <= 1
    assert len(open_dataset(nyu_copy, "test")) == 8  # the layout has no test split: val stands in
    assert open_dataset(nyu_copy, "val").read_raw(0).normals is None  # read for a normals task only


@pytest.mark.parametrize(("changes", "message"), [
    ({"classes": ["a", "b", "c"]}, r"mtl_dataset.yaml: key 'classes': 3 classes, but .*/label/0.npy: label values"),
    ({"depth": {"min": 1.0, "max": 5.0}}, r"key 'depth': range \[1, 5\] m, but .*/depth/0.npy has valid depth"),
    ({"depth": {"min": 2.0, "max": 1.0}}, r"key 'depth': .*depth.max \(1.0\) must be above depth.min"),
    ({"tasks": ["semseg", "depth"]}, r"key 'tasks': the dataset has no labels for \['normals'\]"),
    ({"layout": "miniscapes", "ignore_index": None},
     r"key 'layout': miniscapes, but the folders under .* are a nyuv2 layout"),
    ({"colours": [1]}, r"key 'colours': Extra inputs are not permitted"),
    ({"ignore_index": "none"}, r"key 'ignore_index': Input should be a valid integer"),
    ({"depth": {"min": 0.5, "max": 10.0, "unit": "ft"}}, r"key 'depth.unit': Input should be 'm', 'cm' or 'mm'"),
])
def test_a_descriptor_the_data_contradicts_is_refused_naming_the_key(nyu_copy, tmp_path, changes, message):
    import shutil

    root = shutil.copytree(nyu_copy, tmp_path / "nyu")
    _describe(root, **changes)
    with pytest.raises(DatasetError, match=message):
        check_dataset(root, ("semseg", "depth", "normals"))


def test_depth_in_millimetres_and_a_course_layout_without_normals(nyu_copy, tmp_path, tiny_synth):
    import shutil

    root = shutil.copytree(nyu_copy, tmp_path / "mm")
    for path in (root / "train" / "depth").glob("*.npy"):
        np.save(path, np.load(path) * 1000.0)
    _describe(root, depth={"min": 0.5, "max": 10.0, "unit": "mm"})
    info = check_dataset(root, ("semseg", "depth"))
    assert info.depth_scale == 0.001 and np.nanmax(open_dataset(root, "train").read_raw(0).depth) < 10
    course = shutil.copytree(tiny_synth, tmp_path / "course", ignore=shutil.ignore_patterns("normals"))
    with pytest.raises(DatasetError, match=r"\(miniscapes defaults\): key 'tasks': the dataset has no labels for"):
        check_dataset(course, ("semseg", "depth", "normals"))
    assert check_dataset(course, ("semseg", "depth")).num_classes == 19


def test_bad_data_is_refused_before_ray(nyu_copy, tmp_path, capsys):
    import shutil

    from conftest import write_spec

    from app.cli import main as run_search

    bad = shutil.copytree(nyu_copy, tmp_path / "bad")
    _describe(bad, classes=["a", "b"])
    for data, message in ((tmp_path / "nowhere", "dataset root not found"), (bad, "key 'classes': 2 classes")):
        spec = write_spec(tmp_path, f"fixed: {{data: {data}, tasks: [semseg, depth, normals], "
                                    "loss_weights: [0.4, 0.4, 0.2]}\n", name="bad_data")
        assert run_search([str(spec), "--profile", "smoke", "--storage", str(tmp_path / "r"), "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert f"--data {data}" in err and message in err


@pytest.fixture(scope="module")
def three_task_search(ray_local, nyu_copy, tmp_path_factory) -> str:
    from conftest import write_spec

    from app.cli import main as run_search

    tmp = tmp_path_factory.mktemp("three_tasks")
    spec = write_spec(tmp, f"""
fixed: {{data: {nyu_copy}, optimizer: adam, lr: 1.0e-3, epochs: 1, tasks: [semseg, depth, normals],
        loss_weights: [0.4, 0.4, 0.2]}}
variants:
  - {{name: three tasks, baseline: true}}
  - {{name: semseg only, tasks: [semseg]}}
  - {{name: depth only, tasks: [depth]}}
  - {{name: normals only, tasks: [normals]}}
scheduler: {{type: none}}
""", name="nyu_three")
    assert run_search([str(spec), "--profile", "smoke", "--storage", str(tmp / "results"), "--no-dashboard"]) == 0
    return str(tmp / "results" / "nyu_three")


def test_a_three_task_search_reports_every_task_and_delta_m(three_task_search, tmp_path):
    from analysis.report import build_report
    from core.results import load_results

    frame = load_results(three_task_search).frame.set_index("variant")
    assert math.isfinite(frame.loc["three tasks", "normals_mean"]) and math.isnan(frame.loc["semseg only",
                                                                                              "normals_mean"])
    build_report(three_task_search, str(tmp_path), formats=("md", "csv"))
    md = (tmp_path / "table.md").read_text()
    for column in ("mIoU", "SI-logRMSE", "Normals mean (°)", "Normals median (°)", "<11.25° (%)", "Δm %"):
        assert column in md, column
    dm = pd.read_csv(tmp_path / "delta_m.csv").set_index("variant")
    assert list(dm.index) == ["three tasks"] and math.isfinite(dm.loc["three tasks", "mean"])
    assert "normals: − for the mean and median angle" in md
