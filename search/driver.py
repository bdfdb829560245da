"""Run a configured experiment on Ray Tune: start or join Ray, fit or restore, write results."""

from __future__ import annotations

import gc
import os
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path

import ray
from ray import tune

from core.layout import EXTENDED_FILE, RECORD_FILE, RESULTS_FILE, SCHEDULER_STATE
from core.record import Extends, parse_record
from core.results import load_results, parquet_bytes, results_of_run
from core.saved import SavedExperiment
from core.storage import Storage, free_bytes, megabytes
from mtl.config import TrialConfig
from mtl.data.cache import ensure_synthetic
from mtl.data.loading import decode_splits, decoded_key, use_decoded
from search import tuning
from search.adaptive import AdaptiveSeeds
from search.ended import EndedTrials
from search.extend import prior_cells
from search.frontier_seeds import frontier_searcher
from search.raycompat import ray_listens_on_loopback
from search.record import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_STORAGE_FULL,
    experiment_record,
)
from search.reporting import Reporting
from search.retention import CheckpointRetention, storage_full_reason
from search.rounds import GridCells, RoundSearcher, pending_trials_env
from search.runconfig import RunConfig
from search.trials import Experiment


def _init_ray(run: RunConfig) -> str | None:
    """Join `--address`, reuse an initialised Ray, or start a local one on loopback (see search.cli)."""
    if ray.is_initialized():
        return None
    if run.address:
        return ray.init(address=run.address).dashboard_url or None
    if not ray_listens_on_loopback():  # Ray was imported before search.cli could ask for loopback
        print("warning: Ray was imported before the search started; its services listen on the node's address",
              flush=True)
    ctx = ray.init(include_dashboard=run.dashboard, dashboard_host="127.0.0.1")
    return ctx.dashboard_url or None


def _prepare_data(exp: Experiment) -> None:
    """Generate the synthetic datasets once on the driver, not in racing trials (they would wait on a lock).
    Only for a local Ray: on a cluster the driver's node runs no trial, and each worker node fills its own
    cache on first use."""
    seen = set()
    for row in exp.rows:
        cfg = TrialConfig.from_dict({**exp.defaults, **row.overrides})
        key = (tuple(cfg.counts().items()), tuple(cfg.image_size), cfg.data_seed)
        if cfg.synthetic and key not in seen:
            seen.add(key)
            root = ensure_synthetic(cfg.counts(), tuple(cfg.image_size), cfg.data_seed, progress=True)
            print(f"data: synthetic {cfg.image_size[0]}x{cfg.image_size[1]} at {root}", flush=True)


def _shared_data(exp: Experiment) -> dict:
    """Decode once, on the driver, every dataset that `in_memory` trials read, to share them through Ray's object
    store (one copy per node, read zero-copy); "auto" only when train + val fit in half of the object store."""
    budget = 0.5 * ray.available_resources().get("object_store_memory", 0)
    shared = {}
    for row in exp.rows:
        cfg = TrialConfig.from_dict({**exp.defaults, **row.overrides})
        key = decoded_key(cfg)
        if key not in shared and use_decoded(cfg, budget):
            shared[key] = decode_splits(cfg, progress=True)
            size = sum(s.nbytes for s in shared[key].values()) / 2**20
            print(f"data: train/val decoded once, {size:.0f} MiB shared through Ray's object store", flush=True)
    return shared


def _wandb(exp: Experiment, run: RunConfig, storage: Storage) -> tuning.WandbSettings | None:
    """W&B through Ray's setup_wandb in each trial (search.trainable): one run per trial, offline files under the
    experiment folder (a temp folder when the storage is S3)."""
    if run.wandb == "off":
        return None
    os.environ["WANDB_MODE"] = run.wandb
    local = storage.experiment(exp.name) if not storage.is_s3 else str(Path(tempfile.gettempdir()) / "mtl-tune" /
                                                                       exp.name)
    wandb_dir = str(Path(local) / "wandb")
    Path(wandb_dir).mkdir(parents=True, exist_ok=True)
    return tuning.WandbSettings(mode=run.wandb, project=f"mtl-tune-{exp.name}", group=exp.name, dir=wandb_dir)


def _resources(run: RunConfig) -> tuple[float, float]:
    return run.cpus_per_trial, run.gpus(ray.cluster_resources().get("GPU", 0))


def _tuner(exp: Experiment, run: RunConfig, storage: Storage, extended: SavedExperiment | None,
           wandb: tuning.WandbSettings | None, callbacks: list) -> tune.Tuner:
    cpus, gpus = _resources(run)  # honoured on --resume too: Tune takes the trainable (resources, W&B) anew
    trainable = tuning.trainable(exp, cpus, gpus, _shared_data(exp), wandb)
    if run.resume:
        return tune.Tuner.restore(storage.experiment(exp.name), trainable, resume_unfinished=True,
                                  resume_errored=True, storage_filesystem=storage.fs)
    run_config = tune.RunConfig(
        name=exp.name, storage_path=storage.root, storage_filesystem=storage.fs,
        failure_config=tune.FailureConfig(max_failures=3),
        # search.retention keeps a running trial's two latest full states and deletes what finished trials need not
        # keep (Tune's num_to_keep would save the whole experiment after every checkpoint: quadratic in trials)
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        callbacks=callbacks, progress_reporter=tuning.reporter(exp), verbose=1,
        sync_config=tune.SyncConfig(sync_artifacts=True))  # trial_config.yaml reaches remote storage too
    cells = _cells(exp, run, extended)
    return tune.Tuner(trainable, param_space=tuning.param_space(exp, cells),
                      tune_config=tuning.tune_config(exp, run.max_concurrent, _scheduler_state(exp, storage), cells),
                      run_config=run_config)


def _uses_cells(exp: Experiment, max_concurrent: int | None) -> bool:
    """Adaptive seeds, and a capped grid: searchers of search.rounds, which stay in step with Tune on --resume."""
    return exp.adaptive is not None or (exp.algorithm == "grid" and not exp.space and bool(max_concurrent))


def _cells(exp: Experiment, run: RunConfig, extended: SavedExperiment | None) -> RoundSearcher | None:
    """The searcher that suggests every (row, seed): adaptive seeds (with the extended experiment's trials as
    already run), or a capped grid's cells."""
    cap = run.max_concurrent
    if not _uses_cells(exp, cap):
        return None
    if exp.adaptive is None:
        return GridCells([r.name for r in exp.rows], list(exp.seeds), cap)
    if exp.spec.report.frontier is not None:
        return frontier_searcher(exp, run.budget, cap)
    prior = prior_cells(extended.frame, exp) if extended is not None else None
    return AdaptiveSeeds(list(exp.comparisons), list(exp.seeds), exp.adaptive.first, exp.metric, exp.mode,
                         run.budget, prior, (exp.spec.report.equivalence_margin or {}).get(exp.metric),
                         exp.adaptive.family, cap)


def _start_record(exp: Experiment, run: RunConfig, storage: Storage, extended: SavedExperiment | None,
                  exp_path: str) -> None:
    """mtl_experiment.json (with the wall-time estimate) and, for `--extend`, the extended trials' results."""
    seconds, how = _estimate(exp, run)
    record = experiment_record(exp).model_copy(update={
        "estimate_s": None if seconds is None else round(seconds, 1), "estimate_how": how, "runs": [run.recorded()]})
    if extended is not None:
        frame = extended.frame.assign(extended_from=run.extend)
        storage.write_bytes(f"{exp_path}/{EXTENDED_FILE}", parquet_bytes(frame))
        record = record.model_copy(update={"extends": Extends(
            uri=run.extend, trials=len(frame), wall_s=extended.record.wall_s, argv=extended.record.argv,
            seeds=extended.record.seeds)})
    storage.write_text(f"{exp_path}/{RECORD_FILE}", record.to_json())


def _resume_record(storage: Storage, exp_path: str, run: RunConfig) -> int | None:
    """On --resume: this driver run's configuration joins the record's list of runs; the concurrency limit the
    experiment started with (Tune restores it)."""
    path = f"{exp_path}/{RECORD_FILE}"
    record = parse_record(storage.read_text(path))
    storage.write_text(path, record.model_copy(update={"runs": [*record.runs, run.recorded()]}).to_json())
    return record.runs[0].get("max_concurrent") if record.runs else run.max_concurrent


def _scheduler_state(exp: Experiment, storage: Storage) -> tuple:
    return storage.fs, f"{storage.experiment(exp.name)}/{SCHEDULER_STATE}"


def _unshared_storage(storage: Storage, run: RunConfig) -> str | None:
    """A local --storage path on a cluster of several nodes: each node would write its trials to its own disk
    (Ray fails only at the first checkpoint, and artifact syncing fails silently). Refused before any trial."""
    if not run.address or storage.is_s3 or run.storage_shared:
        return None
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return None
    return (f"--storage {run.storage}: a local path, but this Ray cluster has {len(nodes)} nodes, each with its own "
            "disk: use s3://bucket/prefix (or an S3-compatible store through AWS_ENDPOINT_URL), or a folder every "
            "node mounts at the same path (NFS) declared with --storage-shared")


def _watch_lines(exp: Experiment, storage: Storage, dashboard: str | None, wandb_dir: str | None) -> None:
    where = storage.display(storage.experiment(exp.name))
    count = f"at most {exp.trial_count()} trials, seeds added where comparisons are open" if exp.adaptive else \
        f"{exp.trial_count()} trials"
    print(f"experiment: {where}  ({count}; resume with --resume)", flush=True)
    if dashboard:
        url = dashboard if "://" in dashboard else f"http://{dashboard}"
        print(f"Ray dashboard: {url} - token authentication is on: paste the output of `ray get-auth-token` "
              "into its dialog")
    else:
        print("Ray dashboard: `ray dashboard cluster/aws.yaml` opens it through an SSH tunnel on your machine; "
              "paste the output of `ray get-auth-token` there (the token cluster/aws.yaml mounts on every node)")
    print(f"TensorBoard: tensorboard --logdir {where}")
    if wandb_dir:
        print(f"W&B: project mtl-tune-{exp.name}, run files in {wandb_dir}" +
              (" (offline: `wandb sync` them later)" if os.environ.get("WANDB_MODE") == "offline" else ""))


_SIGNALLED: list[int] = []  # set when our own handler caught a Ctrl-C (Tune's was not installed)


def _interrupt_sentinel(signum, frame):
    _SIGNALLED.append(signum)
    raise KeyboardInterrupt


def _term_as_interrupt(signum, frame):
    os.kill(os.getpid(), signal.SIGINT)  # `ray job stop` and `kill` send SIGTERM: stop as Ctrl-C does


def _fit(tuner: tune.Tuner, env: dict[str, str]):
    """fit() and whether Ctrl-C (SIGINT) or SIGTERM interrupted it. Tune's handler saves the experiment, stops,
    and puts back the handler it found - only when it fired - so finding our sentinel again means it fired. `env`:
    Tune's variables for this fit only (the process may run other searches after it)."""
    os.environ.update(env)
    previous = signal.signal(signal.SIGINT, _interrupt_sentinel)
    previous_term = signal.signal(signal.SIGTERM, _term_as_interrupt)
    _SIGNALLED.clear()
    # with TUNE_DISABLE_SIGINT_HANDLER Tune installs no handler of its own: finding ours then says nothing
    tune_handles = not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") or 0)
    try:
        result_grid = tuner.fit()
        fired = tune_handles and signal.getsignal(signal.SIGINT) is _interrupt_sentinel
        return result_grid, fired or bool(_SIGNALLED)
    except KeyboardInterrupt:
        if not _SIGNALLED:
            raise
        return None, True
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
        for key in env:
            os.environ.pop(key, None)


def _resume_command(run: RunConfig) -> str:
    argv = list(run.argv)
    return "python run_search.py " + shlex.join(argv + ([] if "--resume" in argv else ["--resume"]))


def _estimate(exp: Experiment, run: RunConfig) -> tuple[float | None, str]:
    """The --dry-run model's wall time for this search, on this machine (a cluster's workers are not here)."""
    if run.address:
        return None, "not estimated: trials run on the cluster's workers"
    from search.dryrun import estimate

    cpus, gpus = _resources(run)
    concurrency = run.concurrency(max(int(ray.cluster_resources().get("CPU", 1) // cpus), 1), exp.trial_count())
    est = estimate(exp, concurrency, run.probe_steps, gpus, None, cpus)
    return est.seconds, f"{concurrency} concurrent trial(s), {est.threads} thread(s) each"


def _storage_full(reason: str, storage: Storage, exp_path: str, run: RunConfig) -> int:
    """The storage ran out: Tune saved the experiment; every finished trial's result is kept."""
    free = free_bytes(storage.fs, exp_path)
    room = f"{megabytes(free)} free" if free is not None else "an object store: check its quota"
    print(f"error: the storage is full: {storage.display(exp_path)} ({room}): {reason}. The search stopped "
          f"cleanly; finished trials are kept and unfinished ones continue from their last checkpoints. Free some "
          f"space (or lower what finished trials keep: --checkpoints none|rows|top), then continue with: "
          f"{_resume_command(run)}", flush=True)
    return EXIT_STORAGE_FULL


def run_search(exp: Experiment, run: RunConfig, storage: Storage, extended: SavedExperiment | None = None,
               reporting: Reporting | None = None) -> int:
    """Run the configured experiment on Ray Tune (validated by search.cli and search.preflight); the exit code."""
    reporting = reporting or Reporting()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's CLIReporter with our columns
    # short epochs checkpoint often; the state snapshot that follows is cheap here, so skip the warning
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # How stale Tune's experiment snapshot may get: what a killed driver's --resume does not know happened (a
    # finished trial is re-reported from its final checkpoint). Tune's "auto" waits >= 10 s; a snapshot costs
    # 0.1-0.25 ms a trial (~40 kB of JSON each), so 1 s up to 100 trials, 10 s at 1 000 and 60 s from 6 000 keep
    # it near 2 % of a core (at 10 s, a 10 000-trial search would spend a quarter of one on it near its end).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", f"{min(max(exp.trial_count() / 100, 1.0), 60.0):g}")
    started = time.monotonic()
    dashboard = _init_ray(run)
    unshared = _unshared_storage(storage, run)
    if unshared:
        print(f"error: {unshared}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    exp_path = storage.experiment(exp.name)
    cap = run.max_concurrent
    if not run.resume or not storage.exists(f"{exp_path}/{RECORD_FILE}"):
        _start_record(exp, run, storage, extended, exp_path)
    else:
        cap = _resume_record(storage, exp_path, run)
    wandb = _wandb(exp, run, storage)
    _watch_lines(exp, storage, dashboard, wandb.dir if wandb else None)
    if not run.address:
        _prepare_data(exp)
    pending = pending_trials_env(cap) if _uses_cells(exp, cap) else {}
    ended = EndedTrials()
    grid, interrupted = _fit(_tuner(exp, run, storage, extended, wandb, [CheckpointRetention(exp, storage), ended]),
                             pending)
    full = storage_full_reason(grid)
    # the results table comes from what Tune holds at the end (its trials, the histories its ResultGrid read): one
    # copy of every trial's metrics. Read back from the storage (after --resume, or Ctrl-C: Tune's clean-up marks
    # the trials it stopped as terminated; its snapshot knows them unfinished), the grid goes first: a second copy
    # added ~90 MiB of Python heap at 400 trials (bench/driver_memory.py)
    histories = None if interrupted else ended.histories(grid)
    del grid
    gc.collect()
    if full:
        return _storage_full(full, storage, exp_path, run)
    try:
        frame = results_of_run(storage, exp_path, ended.trials, histories) if histories is not None else \
            load_results(storage.display(exp_path)).frame
        storage.write_bytes(f"{exp_path}/{RESULTS_FILE}", parquet_bytes(frame))
        record_path = f"{exp_path}/{RECORD_FILE}"
        record = parse_record(storage.read_text(record_path))
        storage.write_text(record_path, record.finished_run(time.monotonic() - started, interrupted).to_json())
    except OSError as e:  # the storage went away at the very end: Tune's state is saved, the trials' too
        print(f"error: cannot read the results back from {storage.display(exp_path)} ({e}); finished trials are "
              f"kept there: when it is reachable again, continue with: {_resume_command(run)}", flush=True)
        return 1
    if reporting.summary is not None:
        print(reporting.summary(frame))
    print(f"results: {storage.display(exp_path)}/{RESULTS_FILE}")
    if interrupted:
        print(f"interrupted: finished trials are kept; continue with: {_resume_command(run)}", flush=True)
        return EXIT_INTERRUPTED
    errored = int((frame["status"] == "error").sum()) if not frame.empty else 0
    if errored:
        print(f"{errored} trial(s) ended in error (see the status column); retry them from their last "
              f"checkpoints with: {_resume_command(run)}", flush=True)
    if run.report and reporting.report is not None:
        print(f"report: {reporting.report(storage.display(exp_path))}")
    posthoc = exp.spec.report.posthoc_tta
    if posthoc:
        print(f"post-hoc: python -m analysis.posthoc {storage.display(exp_path)} --tta {','.join(posthoc)} "
              "(evaluates the trained checkpoints; no retraining)", flush=True)
    return 0
