"""Every Ray internal that search/raycompat.py leans on is still where it was: an upgrade of Ray that moves one
fails here, by name, instead of somewhere deep inside a search. And nothing else in the product touches one."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_loopback_flag_is_where_ray_reads_it():
    from ray._private import ray_constants

    assert isinstance(ray_constants.ENABLE_RAY_CLUSTER, bool), "ray._private.ray_constants.ENABLE_RAY_CLUSTER moved"


def test_a_trials_storage_context_has_its_filesystem_and_folder():
    from ray.train._internal.storage import StorageContext
    from ray.tune import TuneContext

    assert hasattr(TuneContext, "get_storage"), "TuneContext.get_storage moved"
    fields = set(inspect.signature(StorageContext.__init__).parameters) | set(dir(StorageContext))
    assert {"storage_filesystem", "trial_fs_path"} <= fields | _assigned(StorageContext), \
        "StorageContext no longer has storage_filesystem / trial_fs_path"


def test_the_controller_a_scheduler_receives_can_list_and_stop_trials():
    from ray.tune.execution.tune_controller import TuneController

    for name in ("get_trials", "stop_trial"):
        assert callable(getattr(TuneController, name, None)), f"TuneController.{name} moved"


def test_only_raycompat_touches_ray_internals():
    private = re.compile(r"ray(\.\w+)*\._\w+|_Wandb\w+|get_storage\(\)|\.trial_fs_path")
    offenders = [f"{path.relative_to(REPO)}:{n}" for folder in ("app", "search", "analysis", "core", "stats", "mtl")
                 for path in (REPO / folder).rglob("*.py") if path.name != "raycompat.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1) if private.search(line)]
    assert offenders == []


def _assigned(cls) -> set[str]:
    """Attribute names a class's __init__ assigns (self.x = ...)."""
    return set(re.findall(r"self\.(\w+)\s*=", inspect.getsource(cls.__init__)))
