"""Loaders for both layouts, depth encoding and units, joint transforms, statistics, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mtl.data.datasets import (
    CityscapesDataset,
    DatasetError,
    MiniscapesDataset,
    RawSample,
    detect_layout,
    open_dataset,
)
from mtl.data.depth_io import DEPTH_MAX, DEPTH_MIN, depth_to_disparity8, disparity8_to_depth
from mtl.data.depth_units import DEPTH_UNITS, DepthUnit
from mtl.data.stats import compute_stats
from mtl.data.stats import main as stats_main
from mtl.data.transforms import JointTransform, denormalize


def test_metres_to_disparity_and_back_within_quantisation():
    depth = np.geomspace(DEPTH_MIN, DEPTH_MAX, 2000)
    back = disparity8_to_depth(depth_to_disparity8(depth))
    step = (1 / DEPTH_MIN - 1 / DEPTH_MAX) / 254  # one code in disparity
    # Half a code of disparity error, mapped through depth = 1/disparity.
    assert np.all(np.abs(1 / back - 1 / depth) <= step / 2 + 1e-9)
    assert depth_to_disparity8(np.array([DEPTH_MIN, DEPTH_MAX])).tolist() == [255, 1]
    assert np.isnan(disparity8_to_depth(np.array([0]))[0])
    assert depth_to_disparity8(np.array([np.nan]))[0] == 0


@pytest.mark.parametrize("unit", DEPTH_UNITS)
def test_each_depth_unit_inverts_exactly(unit):
    stats = {"depth_mean": 27.07, "depth_std": 29.13, "depth_min": 4.0, "depth_max": 300.0}
    u = DepthUnit.from_stats(unit, stats)
    metres = torch.tensor([4.0, 10.0, 27.07, 150.0, 300.0, float("nan")], dtype=torch.float64)
    back = u.decode(u.encode(metres))
    assert torch.allclose(back[:-1], metres[:-1], rtol=1e-12) and torch.isnan(back[-1])
    with pytest.raises(ValueError, match="depth_unit must be one of"):
        DepthUnit.from_stats("feet", stats)


def test_miniscapes_loader_reads_generated_data(tiny_synth):
    assert detect_layout(tiny_synth) == "miniscapes"
    ds = open_dataset(tiny_synth, "train", transform=JointTransform(train=False))
    assert isinstance(ds, MiniscapesDataset) and len(ds) == 8
    s = ds[0]
    assert s["rgb"].shape == (3, 32, 64) and s["rgb"].dtype == torch.float32
    assert s["semseg"].shape == (32, 64) and s["semseg"].dtype == torch.int64
    valid = torch.isfinite(s["depth"])
    assert s["depth"].shape == (1, 32, 64) and float(s["depth"][valid].min()) >= DEPTH_MIN
    assert 0 < (~valid).sum() < valid.sum()  # the sky is invalid, the rest is not
    raw = np.asarray(Image.open(tiny_synth / "train" / "depth" / "000000.png"))
    assert torch.allclose(s["depth"][0], torch.from_numpy(disparity8_to_depth(raw)), equal_nan=True)
    assert len(open_dataset(tiny_synth, "val", limit=2)) == 2


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.nan_to_num(-1.0), b.nan_to_num(-1.0))


def test_decoded_batches_equal_the_png_path_without_random_scaling(tiny_synth):
    from mtl.data.decoded import BatchAugment, decode_split

    files = open_dataset(tiny_synth, "train", transform=JointTransform(train=True, crop=(16, 24), flip=True))
    split = decode_split(files)
    assert len(split) == 8 and split.nbytes == 8 * 32 * 64 * 6 and split.depth.dtype == np.float16
    seeds, idx = [11, 12345, 7, 99], [0, 5, 2, 7]
    batch = BatchAugment((16, 24), flip=True)(torch.from_numpy(split.rgb[idx]), torch.from_numpy(split.semseg[idx]),
                                              torch.from_numpy(split.depth[idx]), seeds)
    assert batch["rgb"].shape == (4, 3, 16, 24) and batch["semseg"].dtype == torch.int64
    for k, (i, seed) in enumerate(zip(idx, seeds, strict=True)):
        ref = files[(i, seed)]  # the same crop and flip, drawn from the same seed
        assert torch.allclose(batch["rgb"][k], ref["rgb"], atol=1e-5)
        assert torch.equal(batch["semseg"][k], ref["semseg"])
        assert _same(batch["depth"][k], ref["depth"].half().float())  # depth is stored as float16


def test_decoded_random_scaling_pads_with_ignore_and_invalid(tiny_synth):
    from mtl.data.decoded import BatchAugment, decode_split

    split = decode_split(open_dataset(tiny_synth, "train"))
    aug = BatchAugment((32, 48), scale=(0.5, 0.6))
    tensors = [torch.from_numpy(a[:4]) for a in (split.rgb, split.semseg, split.depth)]
    batch = aug(*tensors, [1, 2, 3, 4])
    assert batch["rgb"].shape == (4, 3, 32, 48) and batch["depth"].shape == (4, 1, 32, 48)
    # the image shrank to at most 20x39 pixels, below the crop: padding below and to the right
    assert (batch["semseg"][:, 20:] == 255).all() and (batch["semseg"][:, :, 39:] == 255).all()
    assert torch.isnan(batch["depth"][:, :, 20:]).all() and torch.isnan(batch["depth"][:, :, :, 39:]).all()
    assert (batch["semseg"][:, :16, :32] != 255).float().mean() > 0.8  # the image itself is kept
    assert torch.equal(aug(*tensors, [1, 2, 3, 4])["rgb"], batch["rgb"])  # seeds decide everything


def test_device_loader_follows_the_epoch_sampler_and_centre_crops_for_eval(tiny_synth):
    from mtl.data.decoded import DeviceLoader, decode_split
    from mtl.data.loading import EpochSampler, make_loader

    files = open_dataset(tiny_synth, "val", transform=JointTransform(train=False))
    split = decode_split(files)
    loader = DeviceLoader(split, 3, EpochSampler(len(split), 0, False), torch.device("cpu"), None, drop_last=False)
    reference = make_loader(files, 3, 0, train=False, workers=0)
    assert len(loader) == len(reference) == 2
    for ours, theirs in zip(loader, reference, strict=True):
        assert torch.allclose(ours["rgb"], theirs["rgb"], atol=1e-6) and torch.equal(ours["semseg"], theirs["semseg"])
        assert _same(ours["depth"], theirs["depth"].half().float()) and torch.equal(ours["index"], theirs["index"])


def test_in_memory_auto_decides_by_size():
    from mtl.config import TrialConfig
    from mtl.data.loading import use_decoded

    cfg = TrialConfig(image_size=(64, 128), train_images=100, val_images=20, in_memory="auto")
    assert use_decoded(cfg, budget_bytes=120 * 64 * 128 * 6) and not use_decoded(cfg, budget_bytes=1e6)
    assert use_decoded(cfg.replace(in_memory=True), 0) and not use_decoded(cfg.replace(in_memory=False), 1e12)


def test_stats_cli_matches_generation_meta(tiny_synth, capsys):
    stats_main([str(tiny_synth)])
    printed = json.loads(capsys.readouterr().out)
    meta = json.loads((tiny_synth / "meta.json").read_text())["train_statistics"]
    reference = printed.pop("vs_miniscapes")
    assert printed == meta and 0.5 < meta["depth_valid_fraction"] < 1  # sky pixels carry no depth
    assert reference["depth_mean"]["miniscapes"] == 27.07 and reference["depth_std"]["difference"].endswith("%")
    assert compute_stats(str(tiny_synth), "val")["images"] == 4


def _cityscapes_tree(root, n_per_city=2):
    label_ids = np.array([[7, 8, 26, 0], [23, 24, 33, 255]], dtype=np.uint8)  # road sidewalk car unlabeled ...
    for city in ("aachen", "bonn"):
        for i in range(n_per_city):
            stem = f"{city}_000000_{i:06d}"
            paths = {k: root / k / "train" / city for k in ("leftImg8bit", "gtFine", "disparity", "camera")}
            for p in paths.values():
                p.mkdir(parents=True, exist_ok=True)
            rgb = np.full((2, 4, 3), 100 + i, np.uint8)
            Image.fromarray(rgb).save(paths["leftImg8bit"] / f"{stem}_leftImg8bit.png")
            Image.fromarray(label_ids).save(paths["gtFine"] / f"{stem}_gtFine_labelIds.png")
            disp = np.array([[0, 1, 257, 2561], [5121, 12801, 25601, 513]], dtype=np.uint16)
            Image.fromarray(disp).save(paths["disparity"] / f"{stem}_disparity.png")
            (paths["camera"] / f"{stem}_camera.json").write_text(
                json.dumps({"extrinsic": {"baseline": 0.2}, "intrinsic": {"fx": 2000.0}}))
    return root


def test_cityscapes_layout_maps_labels_and_disparity(tmp_path):
    root = _cityscapes_tree(tmp_path / "cs")
    assert detect_layout(root) == "cityscapes"
    ds = open_dataset(root, "train")
    assert isinstance(ds, CityscapesDataset) and len(ds) == 4
    rgb, label, depth, _ = ds.read_raw(0)
    assert rgb.shape == (2, 4, 3)
    assert label.tolist() == [[0, 1, 13, 255], [10, 11, 18, 255]]
    # depth = baseline * fx / ((d - 1) / 256); d = 0 (and d = 1, zero disparity) invalid
    assert np.isnan(depth[0, 0]) and np.isnan(depth[0, 1])
    assert depth[0, 2] == pytest.approx(0.2 * 2000 / 1.0)
    assert depth[0, 3] == pytest.approx(0.2 * 2000 / 10.0)
    assert depth[1, 3] == pytest.approx(0.2 * 2000 / 2.0)
    sample = CityscapesDataset(root, "train", transform=JointTransform(train=False))[1]
    assert sample["semseg"].shape == (2, 4)


def test_joint_transform_moves_all_three_together():
    h, w = 40, 60
    rows, cols = np.mgrid[0:h, 0:w]
    rgb = np.stack([rows * 6, cols * 4, np.zeros_like(rows)], -1).astype(np.uint8)
    semseg = (cols % 19).astype(np.uint8)
    depth = (4.0 + cols).astype(np.float32)
    t = JointTransform(train=True, crop=(16, 24), scale=(1.0, 1.0), flip=True)
    flipped = 0
    for seed in range(12):
        s = t(RawSample(rgb, semseg, depth), seed)
        assert s["rgb"].shape == (3, 16, 24) and s["semseg"].shape == (16, 24) and s["depth"].shape == (1, 16, 24)
        col_from_rgb = torch.round(denormalize(s["rgb"])[1] * 255 / 4)  # the column each rgb pixel came from
        assert torch.equal(col_from_rgb.long() % 19, s["semseg"])
        assert torch.allclose(col_from_rgb, s["depth"][0] - 4.0)
        flipped += bool(s["depth"][0, 0, 0] > s["depth"][0, 0, -1])
        assert torch.equal(s["semseg"], t(RawSample(rgb, semseg, depth), seed)["semseg"])  # seeded
    assert 0 < flipped < 12


def test_random_scale_pads_with_ignore_and_nan():
    rgb = np.full((32, 32, 3), 128, np.uint8)
    t = JointTransform(train=True, crop=(32, 32), scale=(0.5, 0.5))
    s = t(RawSample(rgb, np.zeros((32, 32), np.uint8), np.full((32, 32), 10.0, np.float32)), 0)
    assert (s["semseg"] == 255).float().mean() == pytest.approx(0.75)
    assert torch.isnan(s["depth"]).float().mean() == pytest.approx(0.75)


def test_eval_crops_to_a_multiple_of_32():
    s = JointTransform(train=False)(RawSample(np.zeros((70, 100, 3), np.uint8), np.zeros((70, 100), np.uint8),
                                               np.ones((70, 100), np.float32)), 0)
    assert s["rgb"].shape == (3, 64, 96)


# --- bad input: each error names the path -----------------------------------------------------


def test_missing_root_and_split(tmp_path, tiny_synth):
    with pytest.raises(DatasetError, match=r"nowhere.*not found"):
        open_dataset(tmp_path / "nowhere", "train")
    with pytest.raises(DatasetError, match="split 'holdout'"):
        MiniscapesDataset(tiny_synth, "holdout")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="neither a Miniscapes layout"):
        detect_layout(tmp_path / "empty")


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_rgb_without_twins_lists_them(tmp_path, tiny_synth):
    root = _copy(tiny_synth, tmp_path / "d")
    for i in (1, 3):
        (root / "train" / "depth" / f"{i:06d}.png").unlink()
    with pytest.raises(DatasetError, match=r"depth: no file for 2 rgb image\(s\): 000001.png, 000003.png"):
        MiniscapesDataset(root, "train")


def test_unreadable_and_wrong_mode_png(tmp_path, tiny_synth):
    root = _copy(tiny_synth, tmp_path / "d")
    (root / "train" / "semseg" / "000000.png").write_bytes(b"not a png")
    ds = MiniscapesDataset(root, "train")
    with pytest.raises(DatasetError, match=r"semseg/000000.png: unreadable image"):
        ds.read_raw(0)
    Image.new("RGB", (64, 32)).save(root / "train" / "depth" / "000001.png")
    with pytest.raises(DatasetError, match=r"depth/000001.png: PNG mode 'RGB'"):
        ds.read_raw(1)


def test_label_outside_the_classes(tmp_path, tiny_synth):
    root = _copy(tiny_synth, tmp_path / "d")
    Image.fromarray(np.full((32, 64), 42, np.uint8)).save(root / "train" / "semseg" / "000002.png")
    with pytest.raises(DatasetError, match=r"000002.png: label values \[42\] outside 0..18 and 255"):
        MiniscapesDataset(root, "train").read_raw(2)


def test_cityscapes_missing_camera_file(tmp_path):
    root = _cityscapes_tree(tmp_path / "cs")
    (root / "camera" / "train" / "bonn" / "bonn_000000_000001_camera.json").unlink()
    with pytest.raises(DatasetError, match=r"camera/train: no file for 1 rgb image\(s\): bonn_000000_000001"):
        open_dataset(root, "train")
