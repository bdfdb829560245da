"""What a dataset is: its layout, class names, ignore value, depth range and unit, and tasks.

A dataset folder may carry a descriptor, `mtl_dataset.yaml`, beside its splits:

    layout: nyuv2                  # miniscapes | cityscapes | nyuv2 (the folders under the root)
    classes: [wall, floor, ...]    # one name per class id 0..C-1 (C <= 255)
    ignore_index: -1               # the label value that means "no label" in the files (read as 255)
    depth: {min: 0.5, max: 10.0, unit: m}   # valid range in metres (predictions are clamped to it); file unit
    tasks: [semseg, depth, normals]         # what the labels support

Without one, a folder is read by its layout's defaults: Miniscapes and Cityscapes as the course's data (19
Cityscapes classes, 4-300 m, semseg and depth; normals too where a Miniscapes folder has `normals/`), NYUv2 as the
multi-task literature's preprocessed arrays (13 classes, 0.5-10 m, semseg, depth and normals). `data: synthetic` is
the embedded generator: the course's classes and range, and all three tasks. `check_dataset` reads a few samples and
refuses, naming the descriptor key, labels beyond the classes and depth outside a declared range; the search runs it
before Ray starts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mtl.data.datasets import DatasetError, LabelError, detect_layout
from mtl.data.depth_io import DEPTH_MAX, DEPTH_MIN
from mtl.data.labels import CLASS_NAMES, IGNORE_INDEX
from mtl.tasks import COURSE_TASKS, TASKS, canonical_tasks

DESCRIPTOR = "mtl_dataset.yaml"
NYUV2_CLASSES = ("bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa", "table",
                 "tv", "wall", "window")  # the 13-class NYUv2 split of Couprie et al. 2013, as MTAN and LibMTL use
UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001}


@dataclass(frozen=True)
class DatasetInfo:
    layout: str
    classes: tuple[str, ...]
    depth_range: tuple[float, float]  # metres
    tasks: tuple[str, ...]
    ignore_index: int = IGNORE_INDEX  # in the files; read as 255
    depth_scale: float = 1.0  # file unit -> metres (NYUv2 arrays)
    source: str = "defaults"  # the descriptor's path, or the defaults of the layout

    @property
    def num_classes(self) -> int:
        return len(self.classes)


COURSE = DatasetInfo("miniscapes", CLASS_NAMES, (DEPTH_MIN, DEPTH_MAX), COURSE_TASKS)
SYNTHETIC = DatasetInfo("miniscapes", CLASS_NAMES, (DEPTH_MIN, DEPTH_MAX), TASKS, source="the synthetic generator")
DEFAULTS = {"miniscapes": COURSE, "cityscapes": DatasetInfo("cityscapes", CLASS_NAMES, (DEPTH_MIN, DEPTH_MAX),
                                                             COURSE_TASKS),
            "nyuv2": DatasetInfo("nyuv2", NYUV2_CLASSES, (0.5, 10.0), TASKS, ignore_index=-1)}


class _Depth(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min: float = Field(gt=0)
    max: float
    unit: Literal["m", "cm", "mm"] = "m"

    @model_validator(mode="after")
    def _order(self) -> _Depth:
        if not self.max > self.min:
            raise ValueError(f"depth.max ({self.max}) must be above depth.min ({self.min})")
        return self


class Descriptor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layout: Literal["miniscapes", "cityscapes", "nyuv2"]
    classes: list[str] = Field(min_length=1, max_length=255)
    ignore_index: int = IGNORE_INDEX
    depth: _Depth
    tasks: tuple[str, ...] = COURSE_TASKS

    @field_validator("tasks", mode="before")
    @classmethod
    def _tasks(cls, v: object) -> tuple[str, ...]:
        return canonical_tasks(v)

    @field_validator("classes")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("class names must be distinct")
        return v


def read_descriptor(path: Path) -> DatasetInfo:
    try:
        raw = yaml.safe_load(path.read_text())
        d = Descriptor(**(raw if isinstance(raw, dict) else {}))
    except (OSError, yaml.YAMLError) as e:
        raise DatasetError(f"{path}: cannot read the dataset descriptor ({e})") from None
    except (ValidationError, TypeError) as e:
        first = e.errors()[0] if isinstance(e, ValidationError) else {"loc": (), "msg": str(e)}
        key = ".".join(str(p) for p in first["loc"])
        raise DatasetError(f"{path}: {'key ' + repr(key) + ': ' if key else ''}{first['msg']}") from None
    if d.layout != "nyuv2" and d.depth.unit != "m":
        raise DatasetError(f"{path}: key 'depth.unit': the {d.layout} layout stores depth as disparity PNGs read in "
                           "metres; unit applies to the nyuv2 arrays")
    if d.layout != "nyuv2" and d.ignore_index != IGNORE_INDEX:
        raise DatasetError(f"{path}: key 'ignore_index': the {d.layout} layout's PNG labels use 255 for 'no label'")
    return DatasetInfo(d.layout, tuple(d.classes), (d.depth.min, d.depth.max), d.tasks, d.ignore_index,
                       UNITS[d.depth.unit], str(path))


def dataset_info(data: str | Path) -> DatasetInfo:
    """The description of `data` (a config's `data`: "synthetic" or a folder); DatasetError naming the path or
    the descriptor key when it is wrong."""
    if str(data) == "synthetic":
        return SYNTHETIC
    root = Path(data).expanduser()
    descriptor = root / DESCRIPTOR
    if descriptor.is_file():
        info = read_descriptor(descriptor)
        found = detect_layout(root)
        if found != info.layout:
            raise DatasetError(f"{descriptor}: key 'layout': {info.layout}, but the folders under {root} are a "
                               f"{found} layout")
        return info
    info = DEFAULTS[detect_layout(root)]
    if info.layout == "miniscapes" and (root / "train" / "normals").is_dir():  # as the synthetic data writes it
        info = replace(info, tasks=TASKS)
    return info


def check_dataset(data: str | Path, tasks: tuple[str, ...], samples: int = 4) -> DatasetInfo:
    """The descriptor against the tasks asked for and the first `samples` training samples: labels within the
    classes, valid depth within the range, normals present for a normals task. Raises DatasetError naming the key."""
    from mtl.data.datasets import open_dataset  # a cycle otherwise: open_dataset reads the descriptor

    info = dataset_info(data)
    where = info.source if info.source.endswith(DESCRIPTOR) else f"{data} ({info.layout} defaults)"
    missing = [t for t in tasks if t not in info.tasks]
    if missing:
        raise DatasetError(f"{where}: key 'tasks': the dataset has no labels for {missing} (it has "
                           f"{list(info.tasks)}); drop them from the config's tasks or add them to the descriptor")
    ds = open_dataset(data, "train", normals="normals" in tasks)
    for i in range(min(samples, len(ds))):
        try:
            raw = ds.read_raw(i)
        except LabelError as e:
            raise DatasetError(f"{where}: key 'classes': {info.num_classes} classes, but {e}") from None
        depth = raw.depth[np.isfinite(raw.depth)]
        lo, hi = info.depth_range
        declared = info.source.endswith(DESCRIPTOR)  # a layout's defaults clamp predictions, they bound no data
        if declared and depth.size and (depth.min() < lo * 0.999 or depth.max() > hi * 1.001):
            raise DatasetError(f"{where}: key 'depth': range [{lo:g}, {hi:g}] m, but {ds.items[i][2]} has valid "
                               f"depth {depth.min():.3g}..{depth.max():.3g} m")
        if "normals" in tasks and raw.normals is None:
            raise DatasetError(f"{where}: key 'tasks': normals, but {ds.items[i][0]} has no normals file")
    return info
