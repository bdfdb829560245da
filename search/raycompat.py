"""The Ray internals mtl-tune still uses, each with why there is no public equivalent. Nothing else in the product
touches a private or developer API of Ray; tests/test_raycompat.py fails loudly, naming the piece, when an upgrade
of Ray moves one.

1. `ray._private.ray_constants.ENABLE_RAY_CLUSTER`: whether the Ray that was imported listens on loopback only.
   Ray reads `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER` once, at import; no public API tells which mode it took, and a Ray
   imported before search.cli could set the variable listens on the node's address.
2. `tune.get_context().get_storage()` (a DeveloperAPI returning Ray's internal `StorageContext`): a trial's folder
   in the experiment storage and its filesystem. The public `get_trial_dir()` is the driver's local staging
   folder; the storage is where the checkpoint room check looks and where a resume finds checkpoints a killed
   driver's snapshot did not know of.
3. The `tune_controller` a `TrialScheduler` receives (its `get_trials` and `stop_trial`): the scheduler interface
   hands it over, and stopping a row's other seeds mid-run has no other way (Ray's own schedulers use it too).
"""

from __future__ import annotations

import pyarrow.fs as pafs


def ray_listens_on_loopback() -> bool:
    from ray._private import ray_constants

    return not ray_constants.ENABLE_RAY_CLUSTER


def trial_storage() -> tuple[pafs.FileSystem, str]:
    """Inside a trial: the experiment storage's filesystem and this trial's folder in it."""
    from ray import tune

    storage = tune.get_context().get_storage()
    return storage.storage_filesystem, storage.trial_fs_path


def running_trials(tune_controller) -> list:
    """The trials a scheduler's controller knows of."""
    return list(tune_controller.get_trials())


def stop_trial(tune_controller, trial) -> None:
    """Stop another trial than the one a scheduler decides on (its last result stays its final one)."""
    tune_controller.stop_trial(trial)
