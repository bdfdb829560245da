"""The Ray Tune trainable: one trial = one `mtl.train.train` run, reported every epoch."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch
import yaml
from ray import tune

from core.layout import TRIAL_CONFIG_FILE
from core.perclass import packed
from core.storage import checkpoint_folders, free_bytes, is_storage_full, megabytes, tree_bytes
from mtl.checkpoint import staging_dir, sweep_staging
from mtl.data.loading import decoded_key
from mtl.train import train
from search.raycompat import trial_storage
from search.retention import STORAGE_FULL
from search.trials import Experiment, format_value

# room left beside the next checkpoint: Tune's own state and results, the finished trials' weights copies
STORAGE_RESERVE_BYTES = int(float(os.environ.get("MTL_TUNE_STORAGE_RESERVE_MB", "64")) * 2**20)


_TRIALS_IN_PROCESS = [0]  # trials this worker process ran: an actor reused by Tune starts none of its own


def _actor_start_s() -> float:
    """Seconds from this worker process's start to its first trial (Python, torch, Ray and our imports); 0 for a
    reused actor's later trials."""
    _TRIALS_IN_PROCESS[0] += 1
    if _TRIALS_IN_PROCESS[0] > 1:
        return 0.0
    try:
        import psutil

        return max(time.time() - psutil.Process().create_time(), 0.0)
    except ImportError:
        return float("nan")


def _artifact_dir() -> str:
    """Where a trial's own files go, to reach the storage with its results (SyncConfig(sync_artifacts=True)): Tune's
    trial working directory, which Tune makes the trainable's working directory (unless RAY_CHDIR_TO_TRIAL_DIR=0).
    Not get_trial_dir(): that is the driver's staging folder, which exists on the head node only - on a worker
    node of a real cluster every trial failed writing there."""
    if os.environ.get("RAY_CHDIR_TO_TRIAL_DIR", "1") != "0":
        return os.getcwd()
    path = tune.get_context().get_trial_dir()
    os.makedirs(path, exist_ok=True)
    return path


@dataclass(frozen=True)
class WandbSettings:
    """W&B for every trial, through Ray's public `setup_wandb` inside the trial (each trial one run)."""

    mode: str  # offline | online
    project: str
    group: str
    dir: str  # where the run files go (offline: `wandb sync` them later)


def _wandb_run(settings: WandbSettings | None, experiment: Experiment, config: dict[str, Any], cfg):
    """The trial's W&B run, its config the whole resolved TrialConfig (Tune's trial config holds only the variant,
    the seed and sampled keys), or None."""
    if settings is None:
        return None
    from ray.air.integrations.wandb import setup_wandb

    os.environ["WANDB_MODE"] = settings.mode  # setup_wandb reads it to skip the API key offline
    os.makedirs(settings.dir, exist_ok=True)
    return setup_wandb({"variant": config["variant"], **cfg.to_flat(), "cli_set": dict(experiment.sets)},
                       project=settings.project, group=settings.group, mode=settings.mode, dir=settings.dir)


def _wandb_finish(run) -> None:
    if run is None:
        return
    import wandb

    run.finish()
    wandb.teardown()  # wandb-core writes the run's records after finish() returns: wait, before Ray ends the actor


def run_trial(config: dict[str, Any], experiment: Experiment, shared: dict | None = None,
              wandb: WandbSettings | None = None) -> None:
    """Function trainable: config in (variant, seed, sampled keys), `tune.report` out every epoch with a
    checkpoint; resumes from `tune.get_checkpoint()`; a diverged run ends with status "diverged". `shared`: decoded
    splits by `decoded_key`, put in Ray's object store once by the driver (read zero-copy by every trial of a node)."""
    entered, actor_start = time.perf_counter(), _actor_start_s()
    sweep_staging()  # checkpoints a killed worker of this node left in the temp folder
    cfg = experiment.trial_config(config)
    # shared arrays only for trials that read decoded data (a spec may ablate in_memory itself)
    decoded = (shared or {}).get(decoded_key(cfg)) if cfg.in_memory else None
    if cfg.in_memory == "auto":  # the driver decided by size: shared arrays, or the PNG path
        cfg = cfg.replace(in_memory=decoded is not None)
    gpus = float(tune.get_context().get_trial_resources().required_resources.get("GPU", 0))
    cpus = max(int(tune.get_context().get_trial_resources().required_resources.get("CPU", 1)), 1)
    cfg = cfg.replace(device="cuda" if gpus > 0 else "cpu", cpu_threads=cfg.cpu_threads or cpus)
    # The resolved config, next to Tune's params.json: what analysis and exports rebuild the model from.
    with open(f"{_artifact_dir()}/{TRIAL_CONFIG_FILE}", "w") as f:
        yaml.safe_dump({"variant": config["variant"], **cfg.to_flat()}, f, sort_keys=False)
    # the ablated values ride along with every result, so Tune's progress table can show them
    tags = {"variant": config["variant"], "seed": cfg.seed,
            **{f"ablated/{k}": format_value(getattr(cfg, k)) for k in experiment.shown_axes},
            "time_actor_start_s": round(actor_start, 3),
            "time_trainable_setup_s": round(time.perf_counter() - entered, 3)}

    logged = _wandb_run(wandb, experiment, config, cfg)

    def report(metrics: dict[str, Any], checkpoint_path: str | None) -> None:
        if logged is not None:
            logged.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        checkpoint = tune.Checkpoint.from_directory(checkpoint_path) if checkpoint_path else None
        try:
            if checkpoint_path:
                _check_room(checkpoint_path)
            tune.report({**(metrics if experiment.reports_per_class else packed(metrics)), **tags},
                        checkpoint=checkpoint)
        except OSError as e:
            if not is_storage_full(e):
                raise
            _stop_for_storage(str(e).strip().splitlines()[0][:300], metrics, tags, experiment.metric)

    try:
        _train_or_resume(cfg, report, config["variant"], decoded, experiment.spec.checkpoints.state)
    except (torch.OutOfMemoryError, MemoryError) as e:
        # the same trial would run out of memory again on a retry: record it and let the search go on
        reason = f"out of memory: {str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__}"
        # Tune needs the search metric in every result: NaN, which no scheduler or table counts
        tune.report({**tags, "status": "error", "error_reason": reason, "epoch": 0, experiment.metric: float("nan")})
    finally:
        _wandb_finish(logged)


class StorageFullError(OSError):
    """The next checkpoint does not fit in the experiment's storage."""


def _check_room(checkpoint_path: str) -> None:
    """Refuse a checkpoint that would leave less than the reserve free (local storage; S3 tells no free space):
    failing here, before the disk is full, leaves room for Tune to save the experiment cleanly."""
    fs, trial_path = trial_storage()
    free = free_bytes(fs, trial_path)
    need = tree_bytes(pafs.LocalFileSystem(), str(Path(checkpoint_path).resolve())) + STORAGE_RESERVE_BYTES
    if free is not None and free < need:
        raise StorageFullError(28, f"no space left for a checkpoint: {trial_path} has {megabytes(free)} "
                                   f"free, the next checkpoint and a reserve need {megabytes(need)}")


def _stop_for_storage(reason: str, metrics: dict[str, Any], tags: dict[str, Any], metric: str) -> None:
    """Tell the driver (search.retention stops the search at this result, as Ctrl-C would), then wait for it: the
    trial must stay unfinished so that `--resume` continues it from its last checkpoint."""
    tune.report({**tags, "status": STORAGE_FULL, "storage_full_reason": reason, "epoch": metrics.get("epoch", 0),
                 metric: float("nan")})
    time.sleep(300)
    raise StorageFullError(28, reason)


def _resume_point(checkpoint: tune.Checkpoint | None) -> tune.Checkpoint | None:
    """Tune's latest checkpoint of this trial, or, when the experiment snapshot it came from is older than what the
    trial saved (a driver killed between two snapshots: a checkpoint it does not know of, or one the checkpoint
    policy has deleted since), the newest one in storage."""
    if checkpoint is not None and checkpoint.filesystem.get_file_info(checkpoint.path).type != pafs.FileType.NotFound:
        return checkpoint
    fs, trial_path = trial_storage()  # also when Tune knows none: a killed driver's snapshot lags
    newest = max(checkpoint_folders(fs, trial_path), key=lambda i: i.base_name, default=None)
    return tune.Checkpoint(newest.path, filesystem=fs) if newest else None


def _train_or_resume(cfg, report, variant: str, decoded: dict | None, final: str = "full") -> None:
    previous = _resume_point(tune.get_checkpoint())
    if previous is None:
        train(cfg, report, decoded=decoded, final=final)
        return
    with staging_dir() as local:
        previous.to_directory(local)  # a local copy: Tune may prune the stored one while we train
        train(cfg, report, checkpoint_dir=local, decoded=decoded, final=final)
