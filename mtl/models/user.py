"""Your own model: `model: mylab.nets:build` (a module on the Python path) or `model: path/to/nets.py:build` (a file,
imported under its package name when it sits in one) names a function that takes the resolved TrialConfig and
returns an `nn.Module`.

The module maps rgb (B, 3, H, W) to a dict with one entry per task of `cfg.tasks`, at input resolution: "semseg":
(B, C, H, W) logits for the dataset's C classes (19 for the course; `mtl.data.describe.dataset_info(
cfg.data).num_classes`), "depth": (B, 1, H, W) in the config's depth unit (the trainer converts, as it does for the
built-in models) and "normals": (B, 3, H, W) (normalised by the trainer). While training it may add "<task>_aux"
outputs (deep supervision: they get the task's loss too). The gradient-aggregation task weightings (MGDA, PCGrad,
...) take the Jacobian at the shared part, so they also need `shared_features(rgb) -> tuple of tensors`,
`heads(features, size, per_task=False) -> dict` and `shared_parameters() -> list` (see
mtl/models/architectures.py); loss weightings (fixed, uncertainty, DWA) work with any module. `check_model` runs
the function on a dummy batch before Ray starts and names what is wrong in one line.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from mtl.config import ConfigError, TrialConfig
from mtl.data.labels import NUM_CLASSES

FORMS = "'package.module:function' or 'path/to/file.py:function'"
GRADIENT_API = ("shared_features", "heads", "shared_parameters")


def load_builder(ref: str) -> Callable[[TrialConfig], nn.Module]:
    """The function `ref` names; a ConfigError naming the key `model` and the problem otherwise."""
    target, sep, attr = ref.rpartition(":")
    if not sep or not target or not attr.isidentifier():
        raise ConfigError(f"model: expected {FORMS}, got {ref!r}")
    name = target
    if target.endswith(".py"):
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"model: {ref!r}: no file {path}")
        root, parts = path.parent, [path.stem]
        while (root / "__init__.py").is_file():  # a file inside a package: import it as package.module
            parts.insert(0, root.name)
            root = root.parent
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        name = ".".join(parts)
    try:
        module = importlib.import_module(name)
    except Exception as e:  # an import error, or the user's module failing as it loads
        raise ConfigError(f"model: {ref!r}: cannot import {name} ({type(e).__name__}: {e})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"model: {ref!r}: {name} has no function {attr!r}")
    return fn


def build_user_model(cfg: TrialConfig) -> nn.Module:
    model = load_builder(cfg.model)(cfg)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model: {cfg.model!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def expected_channels(task: str, num_classes: int = NUM_CLASSES) -> int:
    from mtl.models.architectures import task_channels

    return task_channels(task, num_classes)


def check_model(cfg: TrialConfig, batch: int = 2) -> None:
    """Build the user's model and run it on a dummy batch: the outputs' keys and shapes, and the methods a
    gradient-aggregation weighting needs. Raises ConfigError (one line) on the first problem."""
    model = build_user_model(cfg)
    if cfg.task_weighting not in ("fixed", "uncertainty", "dwa"):
        missing = [m for m in GRADIENT_API if not callable(getattr(model, m, None))]
        if missing:
            raise ConfigError(f"model: {cfg.model!r}: task_weighting {cfg.task_weighting} needs the model's "
                              f"{', '.join(missing)} (mtl/models/user.py); fixed, uncertainty and dwa need none")
    h, w = cfg.crop
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(batch, 3, h, w))
    if not isinstance(out, dict):
        raise ConfigError(f"model: {cfg.model!r}: forward returned {type(out).__name__}; expected a dict "
                          f"{{task: tensor}} for tasks {list(cfg.tasks)}")
    allowed = {*cfg.tasks, *(f"{t}_aux" for t in cfg.tasks)}
    if set(cfg.tasks) - set(out) or set(out) - allowed:
        raise ConfigError(f"model: {cfg.model!r}: forward returned keys {sorted(out)}; expected {list(cfg.tasks)} "
                          "(plus '<task>_aux' while training)")
    from mtl.data.describe import dataset_info

    classes = dataset_info(cfg.data).num_classes
    for task in cfg.tasks:
        want = (batch, expected_channels(task, classes), h, w)
        if tuple(out[task].shape) != want:
            raise ConfigError(f"model: {cfg.model!r}: output {task!r} has shape {tuple(out[task].shape)}; expected "
                              f"{want} (B, C, H, W at input resolution)")
