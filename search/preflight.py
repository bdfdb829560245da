"""Everything that can fail before Ray starts, checked on the driver: flags, `--set`, storage, data, weights.

A failed check raises `SpecError` with the flag, file or key and what is allowed; `run_search.py` prints it and
exits 2. Nothing is written before every check has passed (a local storage directory is created by the run).
"""

from __future__ import annotations

import difflib
import os
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from core.layout import RECORD_FILE, RESULTS_FILE
from core.record import parse_record
from core.saved import SavedExperiment
from core.storage import STORAGE_SCHEMES, Storage, open_storage
from mtl.config import ConfigError, TrialConfig, parse_overrides
from mtl.data.datasets import DatasetError, open_dataset
from mtl.data.describe import check_dataset
from mtl.models.encoder import PretrainedWeightsError, cached_weights, fetch_weights
from search.extend import check_extend
from search.record import design_changes
from search.runconfig import RunConfig
from search.spec import SpecError
from search.trials import Experiment

SPLITS = ("train", "val", "test")


def parse_sets(items: list[str] | None, exp: Experiment) -> dict[str, Any]:
    """`--set key=value` pairs as TrialConfig overrides of the spec's `fixed` keys; an ablated key is refused."""
    try:
        values = parse_overrides(items or [])
    except ConfigError as e:
        raise SpecError(f"--set: {e}".replace("command line: ", "")) from None
    for key in values:
        if key not in TrialConfig.model_fields:
            near = difflib.get_close_matches(key, list(TrialConfig.model_fields), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise SpecError(f"--set {key}: not a TrialConfig field{hint}")
        if key in exp.ablated:
            raise SpecError(f"--set {key}: {key!r} is ablated by {exp.path} (it is what the rows compare); --set "
                            "only overrides the spec's fixed keys")
        if key == "seed":
            raise SpecError("--set seed: seeds are replicated with --seeds N (or the spec's `seeds`)")
    return values


def check_flags(run: RunConfig, gpu_bench: str | None = None) -> None:
    """Resources no more than this machine has when Ray is local (their ranges are checked as they resolve)."""
    if gpu_bench and not Path(gpu_bench).is_file():
        raise SpecError(f"--gpu-bench {gpu_bench}: file not found (write it with `python -m bench.gpu --out DIR`)")
    if run.address:
        return  # a cluster's resources are known once we join it; Tune reports trials that cannot fit
    cpus = os.cpu_count() or 1
    if "cpus_per_trial" in run.given and run.cpus_per_trial > cpus:
        raise SpecError(f"--cpus-per-trial {run.cpus_per_trial:g}: this machine has {cpus} CPUs (local Ray)")
    if "gpus_per_trial" in run.given and run.gpus_per_trial:
        import torch

        gpus = torch.cuda.device_count()
        if run.gpus_per_trial > gpus:
            raise SpecError(f"--gpus-per-trial {run.gpus_per_trial:g}: this machine has {gpus} CUDA GPUs "
                            "(local Ray); use 0 for CPU trials or --address to join a GPU cluster")


def check_storage_uri(uri: str) -> None:
    parsed = urlparse(uri)
    scheme = parsed.scheme
    if scheme == "s3" and not parsed.netloc:
        raise SpecError(f"--storage {uri}: no bucket; use s3://bucket/prefix")
    if scheme and len(scheme) > 1 and scheme not in STORAGE_SCHEMES:  # one letter: a Windows drive
        raise SpecError(f"--storage {uri}: the scheme {scheme}:// is not supported; use a local directory or "
                        "s3://bucket/prefix (S3-compatible stores through AWS_ENDPOINT_URL)")


def check_data(exp: Experiment) -> None:
    """For `--data PATH` (or a spec's `data:`): its descriptor (mtl_dataset.yaml: classes, depth range, tasks)
    against the first samples and the tasks asked for, the layout, every split's files, and one decoded sample
    each - the checks the loaders make, on the driver, instead of in every trial."""
    seen = set()
    for row in exp.rows:
        cfg = TrialConfig.from_dict({**exp.defaults, **row.overrides})
        if cfg.synthetic or (cfg.data, cfg.tasks) in seen:
            continue
        seen.add((cfg.data, cfg.tasks))
        counts = cfg.counts()
        try:
            check_dataset(Path(cfg.data).expanduser(), cfg.tasks)
        except DatasetError as e:
            raise SpecError(f"--data {cfg.data}: {e}") from None
        for split in SPLITS:
            try:
                ds = open_dataset(Path(cfg.data).expanduser(), split, limit=counts[split],
                                  normals="normals" in cfg.tasks)
                ds.read_raw(0)
                if split == "train" and len(ds) < cfg.batch_size:
                    raise SpecError(f"--data {cfg.data}: {len(ds)} training images, fewer than batch_size "
                                    f"{cfg.batch_size}")
            except DatasetError as e:
                raise SpecError(f"--data {cfg.data}: {e}") from None


def check_models(exp: Experiment) -> None:
    """A user's model (`model: pkg.mod:fn`) is imported, built and run on a dummy batch here, on the driver: an
    import error, a wrong output key or shape is one line naming the key, before Ray starts."""
    seen = set()
    for row in exp.rows:
        cfg = TrialConfig.from_dict({**exp.defaults, **row.overrides})
        if not cfg.model or (cfg.model, cfg.tasks, cfg.task_weighting) in seen:
            continue
        seen.add((cfg.model, cfg.tasks, cfg.task_weighting))
        from mtl.models.user import check_model  # torch: only when a spec names a model of its own

        try:
            check_model(cfg)
        except ConfigError as e:
            raise SpecError(f"{exp.path} (row {row.name!r}): {e}") from None
        except Exception as e:  # the user's code failing on the dummy batch
            raise SpecError(f"{exp.path} (row {row.name!r}): model: {cfg.model!r} failed on a dummy batch "
                            f"(2, 3, {cfg.crop[0]}, {cfg.crop[1]}): {type(e).__name__}: {e}") from None


def missing_weights(exp: Experiment) -> list[str]:
    """Human-readable problems with `pretrained` weights that are not on this machine."""
    problems = []
    for row in exp.rows:
        cfg = TrialConfig.from_dict({**exp.defaults, **row.overrides})
        path = cached_weights(cfg.encoder)
        if cfg.pretrained is True and not path.is_file():
            problems.append(f"{cfg.encoder} ImageNet weights are not in the torch cache ({path})")
        elif isinstance(cfg.pretrained, str) and not Path(cfg.pretrained).expanduser().is_file():
            problems.append(f"weights file {cfg.pretrained} not found")
    return sorted(set(problems))


def scratch_command(exp: Experiment, argv: list[str]) -> str:
    """The command that runs this spec from scratch, or why there is none (pretrained is what it compares)."""
    if "pretrained" in exp.ablated:
        return f"{exp.path} compares pretrained weights, so it cannot run from scratch"
    words = [w for w in argv if w != "--dry-run"]
    return "run it from scratch with: python run_search.py " + shlex.join([*words, "--set", "pretrained=false"])


def ensure_weights(exp: Experiment, argv: list[str]) -> None:
    """Torch cache first; else torchvision's download (fails within seconds offline or with MTL_TUNE_OFFLINE=1)."""
    encoders = set()
    for row in exp.rows:
        cfg = TrialConfig.from_dict({**exp.defaults, **row.overrides})
        if isinstance(cfg.pretrained, str) and not Path(cfg.pretrained).expanduser().is_file():
            raise SpecError(f"{exp.path}: pretrained: weights file {cfg.pretrained} not found")
        if cfg.pretrained is True:
            encoders.add(cfg.encoder)
    for encoder in sorted(encoders):
        try:
            fetch_weights(encoder)
        except PretrainedWeightsError as e:
            raise SpecError(f"{exp.path}: pretrained weights are not available: {e}. Or "
                            f"{scratch_command(exp, argv)}") from None


def check_local_storage(storage: Storage) -> None:
    """A local storage directory must exist as a writable directory or be creatable: tried here, and what this
    check created is removed again (the run creates it for real)."""
    path, missing = Path(storage.root), []
    while not path.exists():
        missing.append(path)
        path = path.parent
    if not path.is_dir() or not os.access(path, os.W_OK):
        raise SpecError(f"--storage {storage.uri}: {path} is not a writable directory")
    try:
        for directory in reversed(missing):
            directory.mkdir()
    except OSError as e:
        raise SpecError(f"--storage {storage.uri}: cannot create {directory} ({e.strerror or e})") from None
    finally:
        for directory in missing:  # deepest first
            if directory.is_dir():
                directory.rmdir()


def check_spec_resources(exp: Experiment, run: RunConfig) -> None:
    """The spec's `resources` on a local Ray, as the flags are checked: trials asking for more than this machine
    has would wait forever."""
    if run.address:
        return
    cpus = run.cpus_per_trial
    if cpus > (os.cpu_count() or 1):
        raise SpecError(f"{exp.path}: key 'resources.cpus': {cpus:g} per trial, but this machine has "
                        f"{os.cpu_count() or 1} CPUs (local Ray); lower it, or --cpus-per-trial")
    gpus = run.gpus_per_trial
    if gpus:
        import torch

        if gpus > torch.cuda.device_count():
            raise SpecError(f"{exp.path}: key 'resources.gpus': {gpus:g} per trial, but this machine has "
                            f"{torch.cuda.device_count()} CUDA GPUs (local Ray); use --gpus-per-trial 0 for CPU "
                            "trials or --address to join a GPU cluster")


def preflight(exp: Experiment, run: RunConfig) -> tuple[Storage, SavedExperiment | None]:
    """Every check of a real run, cheapest first (the flags and the storage URI were checked as the command line
    resolved); returns the opened storage and, for `--extend`, the experiment it extends."""
    check_spec_resources(exp, run)
    if run.wandb == "online" and not os.environ.get("WANDB_API_KEY"):
        raise SpecError("--wandb online needs WANDB_API_KEY in the environment (it is never written anywhere)")
    ensure_weights(exp, list(run.argv))
    reference = exp.spec.report.single_task
    if reference and "://" not in reference and not (Path(reference) / RESULTS_FILE).is_file():
        print(f"warning: {exp.path}: key 'report.single_task': {reference} has no results.parquet yet (run "
              "ablations/single_task.yaml there); the report will have no Δm column until it has", flush=True)
    storage = open_storage(run.storage)
    if storage.is_s3:
        from search.s3check import check_storage  # boto3 is only imported when it is needed

        check_storage(storage)
    else:
        check_local_storage(storage)
    exists = storage.exists(f"{storage.experiment(exp.name)}/{RECORD_FILE}")
    if run.resume and not exists:
        raise SpecError(f"--resume: no experiment {exp.name!r} under {run.storage}")
    if run.resume:
        recorded = parse_record(storage.read_text(f"{storage.experiment(exp.name)}/{RECORD_FILE}"))
        conflicts = run.resume_conflicts(recorded.runs[0] if recorded.runs else None)
        if conflicts:
            raise SpecError(f"--resume: {conflicts[0]}")
        changes = design_changes(recorded, exp)
        if changes:
            raise SpecError(f"--resume: experiment {exp.name!r} was started with another design; changed: "
                            f"{'; '.join(changes[:6])}{' …' if len(changes) > 6 else ''}. Resume it with the command "
                            f"it started with (`{' '.join(recorded.argv)}` --resume), or start a new "
                            "experiment with --name")
    if exists and not run.resume:
        raise SpecError(f"experiment {exp.name!r} already exists under {run.storage}: continue it with --resume, "
                        "or start another with --name")
    return storage, check_extend(exp, run, storage)
