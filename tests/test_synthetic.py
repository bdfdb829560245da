"""The ray-cast generator: determinism, layout, ranges, geometry, class coverage, repair."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from mtl.data.depth_io import DEPTH_MAX, DEPTH_MIN
from mtl.data.labels import CLS, IGNORE_INDEX, NUM_CLASSES
from mtl.data.raycast import cast, make_rays
from mtl.data.scene import Camera, GroundBand, Lighting, SceneBuilder, camera_rotation
from mtl.data.shading import shade
from mtl.data.synthetic import SPLITS, generate, main, render_sample


def _digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.png"))}


def test_two_generations_are_byte_identical(tmp_path, tiny_synth):
    again = tmp_path / "again"
    generate(again, {"train": 8, "val": 4, "test": 4}, (32, 64), seed=0, workers=2, progress=False)
    assert _digest(again) == _digest(tiny_synth)  # worker count does not change a byte
    assert json.loads((again / "meta.json").read_text()) == json.loads((tiny_synth / "meta.json").read_text())


def test_layout_modes_and_meta(tiny_synth):
    meta = json.loads((tiny_synth / "meta.json").read_text())
    assert meta["counts"] == {"train": 8, "val": 4, "test": 4}
    assert meta["size"] == [32, 64] and meta["seed"] == 0 and meta["generator_version"] >= 1
    stats = meta["train_statistics"]
    assert len(stats["rgb_mean"]) == 3 and DEPTH_MIN <= stats["depth_min"] <= stats["depth_max"] <= DEPTH_MAX
    for split, n in meta["counts"].items():
        for kind, mode in (("rgb", "RGB"), ("semseg", "L"), ("depth", "L")):
            files = sorted((tiny_synth / split / kind).iterdir())
            assert [f.name for f in files] == [f"{i:06d}.png" for i in range(n)]
            with Image.open(files[0]) as im:
                assert im.mode == mode and im.size == (64, 32)


def test_label_and_depth_ranges(tiny_synth):
    for path in (tiny_synth / "train" / "semseg").iterdir():
        labels = np.asarray(Image.open(path))
        assert np.all((labels < NUM_CLASSES) | (labels == IGNORE_INDEX))
    for path in (tiny_synth / "train" / "depth").iterdir():
        code = np.asarray(Image.open(path))
        labels = np.asarray(Image.open(tiny_synth / "train" / "semseg" / path.name))
        assert np.all(code[labels == CLS["sky"]] == 0)  # sky: invalid, as in Cityscapes
        assert (code > 0).mean() > 0.5  # the scene itself keeps its depth
    _, label, depth, _ = render_sample(0, "train", 3, 32, 64)
    valid = np.isfinite(depth)
    assert depth.dtype == np.float32 and depth[valid].min() >= DEPTH_MIN and depth[valid].max() < DEPTH_MAX
    assert not valid[label == CLS["sky"]].any()


@pytest.mark.parametrize("index", range(6))
def test_sky_is_invalid_and_road_recedes_upwards(index):
    _, label, depth, _ = render_sample(7, "val", index, 64, 128)
    assert np.all(np.isnan(depth[label == CLS["sky"]]))
    road = (label == CLS["road"]) & np.isfinite(depth)
    assert road.any()
    for col in range(label.shape[1]):
        d = depth[road[:, col], col]  # top to bottom
        assert np.all(np.diff(d) <= 1e-3), f"road depth must shrink going down column {col}"


def _one_box_scene(car_z: float, building_z: float):
    b = SceneBuilder()
    b.box((-1.0, 0.0, car_z), (1.0, 1.5, car_z + 4.0), CLS["car"], (0.6, 0.1, 0.1))
    b.box((-20.0, 0.0, building_z), (20.0, 30.0, building_z + 10.0), CLS["building"], (0.7, 0.7, 0.7))
    camera = Camera(np.array([0.0, 1.0, 0.0]), camera_rotation(0, 0, 0), 60.0)
    road = GroundBand(-5.0, 5.0, CLS["road"], (0.3, 0.3, 0.3), 1)
    terrain = GroundBand(-np.inf, np.inf, CLS["terrain"], (0.3, 0.4, 0.2), 3)
    return b.build(camera, Lighting(sun=np.array([0.0, 1.0, 0.0])), road, terrain)


def test_nearer_objects_occlude_farther_ones():
    scene = _one_box_scene(car_z=10.0, building_z=40.0)
    rays = make_rays(scene.camera, 64, 128)
    _, label, depth, _ = shade(scene, rays, cast(scene, rays), np.random.default_rng(0))
    # The optical axis (image centre) passes through the car's rear face at z = 10 m.
    assert label[31, 63] == CLS["car"] and depth[31, 63] == pytest.approx(10.0, abs=1e-4)
    # Above the car, the same column sees the building front at z = 40 m.
    assert label[5, 63] == CLS["building"] and depth[5, 63] == pytest.approx(40.0, abs=1e-4)
    # Swap the order: the building now hides the car completely.
    scene = _one_box_scene(car_z=50.0, building_z=20.0)
    _, label, _, _ = shade(scene, rays, cast(scene, rays), np.random.default_rng(0))
    assert not np.any(label == CLS["car"])


def test_all_classes_occur_across_a_few_hundred_images():
    seen = set()
    for index in range(200):
        _, label, _, _ = render_sample(0, "train", index, 48, 96)
        seen.update(np.unique(label).tolist())
    assert set(range(NUM_CLASSES)) <= seen


def test_same_scene_at_every_size_and_splits_differ():
    small = render_sample(0, "train", 5, 32, 64)[1]
    large = render_sample(0, "train", 5, 64, 128)[1]
    assert (large[::2, ::2] == small).mean() > 0.8  # one scene, two resolutions
    hashes = {split: {hashlib.sha1(render_sample(0, split, i, 16, 32)[0].tobytes()).hexdigest() for i in range(5)}
              for split in SPLITS}
    assert not (hashes["train"] & hashes["val"]) and not (hashes["train"] & hashes["test"])


def test_rerun_skips_complete_files_and_repairs_damaged_ones(tmp_path, tiny_synth, capsys):
    root = tmp_path / "d"
    main(["--root", str(root), "--train", "8", "--val", "4", "--test", "4", "--size", "32x64", "--workers", "1"])
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["rendered"] == 16
    (root / "train" / "rgb" / "000002.png").write_bytes(b"\x89PNG broken")
    (root / "val" / "depth" / "000001.png").unlink()
    (root / "test" / "semseg" / "000000.png.tmp").write_bytes(b"partial")
    main(["--root", str(root), "--train", "8", "--val", "4", "--test", "4", "--size", "32x64", "--workers", "1"])
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["rendered"] == 2
    assert _digest(root) == _digest(tiny_synth)
    assert not list(root.rglob("*.tmp"))


def test_cli_rejects_bad_size():
    with pytest.raises(SystemExit):
        main(["--root", "/tmp/x", "--size", "big"])
