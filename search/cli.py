"""`python run_search.py SPEC [options]`: validate a spec, then run it as a Ray Tune experiment."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

from mtl.config import TrialConfig
from mtl.profiles import PROFILE_NAMES, resolve_profile
from search.dryrun import budget, missing_weights, trial_table
from search.spec import SpecError
from search.storage import Storage, open_storage
from search.trials import Experiment, load_experiment

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="run_search.py", description="Run an experiment spec as a Ray Tune experiment.")
    p.add_argument("spec", help="experiment YAML (ablations/*.yaml)")
    p.add_argument("--profile", default="auto", choices=PROFILE_NAMES,
                   help="scale data size, resolution and epochs (auto: full with a GPU, else cpu)")
    p.add_argument("--dry-run", action="store_true", help="print the trials and a budget; start nothing")
    p.add_argument("--data", help="'synthetic' or a Miniscapes/Cityscapes-layout directory")
    p.add_argument("--storage", default="./results", help="local directory or s3://bucket/prefix")
    p.add_argument("--name", help="experiment name (default: the spec's name)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted experiment of this name")
    p.add_argument("--address", help="join a running Ray cluster ('auto' on a `ray up` head node)")
    p.add_argument("--max-concurrent", type=int, help="trials running at once")
    p.add_argument("--cpus-per-trial", type=float)
    p.add_argument("--gpus-per-trial", type=float)
    p.add_argument("--seeds", type=int, help="replicate every row over this many seeds")
    p.add_argument("--wandb", default="off", choices=("off", "offline", "online"))
    p.add_argument("--dashboard", action=argparse.BooleanOptionalAction, default=True,
                   help="start the Ray dashboard on 127.0.0.1 (local clusters)")
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=True, help="build the report at the end")
    p.add_argument("--probe-steps", type=int, default=2, help="training steps timed by --dry-run's throughput probe")
    return p.parse_args(argv)


def _experiment(args: argparse.Namespace) -> Experiment:
    exp = load_experiment(args.spec)
    if args.name:
        exp = dataclasses.replace(exp, name=args.name)
    if args.seeds:
        if exp.algorithm == "optuna" and args.seeds > 1:
            raise SpecError(f"{args.spec}: --seeds: optuna proposes each trial itself; use num_samples")
        first = exp.spec.fixed.get("seed", 0)
        exp = dataclasses.replace(exp, seeds=tuple(range(first, first + args.seeds)))
    return exp


def _preflight(exp: Experiment, args: argparse.Namespace) -> Storage:
    """Everything that can fail before Ray starts: weights, W&B key, storage. Raises SpecError."""
    if not args.dry_run:
        problems = missing_weights(exp)
        if problems:
            raise SpecError(f"{exp.path}: pretrained weights are not available offline: {'; '.join(problems)}. "
                            "Put them in the torch cache, set `pretrained: /path/to/weights.pth`, or set "
                            "MTL_TUNE_DOWNLOAD_WEIGHTS=1 on a machine with internet.")
    if args.wandb == "online" and not os.environ.get("WANDB_API_KEY"):
        raise SpecError("--wandb online needs WANDB_API_KEY in the environment (it is never written anywhere)")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise SpecError("--max-concurrent must be >= 1")
    from search.s3check import check_storage  # boto3 is only imported when it is needed

    storage = open_storage(args.storage)
    check_storage(storage)
    exists = storage.exists(f"{storage.experiment(exp.name)}/mtl_experiment.json")
    if args.resume and not exists:
        raise SpecError(f"--resume: no experiment {exp.name!r} under {args.storage}")
    if exists and not args.resume:
        raise SpecError(f"experiment {exp.name!r} already exists under {args.storage}: continue it with --resume, "
                        "or start another with --name")
    return storage


def _dry_run(exp: Experiment, args: argparse.Namespace) -> int:
    print(trial_table(exp))
    for problem in missing_weights(exp):
        print(f"warning: {problem}. Provide it in the torch cache or as `pretrained: /path/to/weights.pth` "
              "(or run with MTL_TUNE_DOWNLOAD_WEIGHTS=1 where there is internet) before a real run.")
    cpus = args.cpus_per_trial or exp.spec.resources.cpus
    slots = max(int((os.cpu_count() or 1) // cpus), 1)
    concurrency = min(args.max_concurrent or exp.spec.search.max_concurrent or slots, slots, exp.trial_count())
    print(budget(exp, concurrency, max(args.probe_steps, 1)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        exp = _experiment(args)
        profile = resolve_profile(args.profile, torch.cuda.is_available())
        reason = f" (auto: {'a CUDA GPU' if torch.cuda.is_available() else 'no CUDA GPU'} here)" \
            if args.profile == "auto" else ""
        print(f"profile: {profile}{reason}", flush=True)
        exp = exp.configure(profile, args.data)
        if args.dry_run:
            return _dry_run(exp, args)
        storage = _preflight(exp, args)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from search.driver import run  # imports Ray: not needed for validation or dry runs

    return run(exp, args, storage)


def experiment_record(exp: Experiment, args: argparse.Namespace) -> str:
    """mtl_experiment.json: what analysis needs besides Tune's own files (no environment, no secrets)."""
    record = {
        "name": exp.name, "spec_path": exp.path, "spec": exp.spec.model_dump(mode="json"), "profile": exp.profile,
        "defaults": exp.defaults, "rows": [dataclasses.asdict(r) for r in exp.rows], "seeds": list(exp.seeds),
        "ablated": list(exp.ablated), "metric": exp.metric, "mode": exp.mode, "algorithm": exp.algorithm,
        "scheduler": exp.scheduler, "baseline": exp.baseline.name, "trial_count": exp.trial_count(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": [Path(sys.argv[0]).name, *(sys.argv[1:])],
        "trial_config_fields": list(TrialConfig.model_fields),
    }
    return json.dumps(record, indent=2, default=str)
