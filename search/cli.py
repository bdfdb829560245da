"""`python run_search.py SPEC [options]`: validate a spec, then run it as a Ray Tune experiment."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import torch

from core.storage import open_storage
from mtl.profiles import PROFILE_NAMES, resolve_profile
from search.dryrun import budget, trial_table
from search.extend import check_extend
from search.frontier_plan import frontier_plan
from search.plan import plan
from search.preflight import (
    check_data,
    check_flags,
    check_models,
    check_storage_uri,
    missing_weights,
    parse_sets,
    preflight,
    scratch_command,
)
from search.record import EXIT_BAD_INPUT
from search.reporting import Reporting
from search.runconfig import WANDB_MODES, RunConfig, local_slots, resolve
from search.spec import (
    SeedsBlock,
    SpecError,
    check_metric,
    checkpoints_flag,
    objectives_flag,
    scheduler_flag,
    seeds_flag,
)
from search.trials import Experiment, check_grace_period, check_objectives_fit, load_experiment, with_seeds

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def parser() -> argparse.ArgumentParser:
    """The command line (also what docs/reference.md shows and a test checks)."""
    p = argparse.ArgumentParser(prog="run_search.py", description="Run an experiment spec as a Ray Tune experiment.")
    p.add_argument("spec", help="experiment YAML (ablations/*.yaml).")
    p.add_argument("--profile", default="auto", choices=PROFILE_NAMES,
                   help="scale data size, resolution and epochs (auto: full with a GPU, else cpu).")
    p.add_argument("--dry-run", action="store_true", help="print the trials and a budget; start nothing.")
    p.add_argument("--data", help="'synthetic' or a Miniscapes/Cityscapes-layout directory.")
    p.add_argument("--storage", default="./results", help="local directory or s3://bucket/prefix.")
    p.add_argument("--name", help="experiment name (default: the spec's name).")
    p.add_argument("--resume", action="store_true", help="continue an interrupted experiment of this name.")
    p.add_argument("--address", help="join a running Ray cluster ('auto' on a `ray up` head node).")
    p.add_argument("--storage-shared", action="store_true",
                   help="--storage is a local path that every node of the cluster mounts (NFS); without it a local "
                        "path is refused on a multi-node cluster.")
    p.add_argument("--max-concurrent", type=int, help="trials running at once.")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs a trial reserves (and its torch threads); default 1.")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs a trial reserves, e.g. 0.25 packs four trials on "
                   "a GPU; default 1 on a cluster with GPUs, else 0.")
    p.add_argument("--seeds", metavar="N|first=N,max=M",
                   help="replicate every row over N seeds, or add seeds adaptively: first=3,max=8 runs 3 and gives "
                        "one more seed, round by round, to each comparison the sequential test has not settled; "
                        "start=100 numbers the seeds from 100, for a new study on fresh seeds.")
    p.add_argument("--compare", action="append", metavar="'ROW vs REFERENCE'",
                   help="with adaptive seeds: a comparison to settle (repeatable); default: every row vs the baseline.")
    p.add_argument("--budget", metavar="trials=N|hours=H",
                   help="with adaptive seeds: stop adding seeds once N trials (or H trial-hours) were spent.")
    p.add_argument("--plan-from", metavar="EXPERIMENT",
                   help="--dry-run: plan the adaptive design's seeds, trials, trial-hours and cost from a pilot or "
                        "an earlier run of these rows (its results.parquet).")
    p.add_argument("--extend", metavar="EXPERIMENT",
                   help="add seeds to a finished experiment (a folder or s3:// with its results.parquet, e.g. "
                        "docs/findings/se): its trials count as already run; needs adaptive --seeds.")
    p.add_argument("--scheduler", metavar="TYPE[,KEY=VALUE...]",
                   help="replace the spec's scheduler: none, asha or median, with grace_period, reduction_factor, "
                        "seed_aware (e.g. asha,grace_period=1,seed_aware=false).")
    p.add_argument("--objectives", metavar="METRIC=max|min,...",
                   help="search and report two or more metrics together, e.g. semseg_miou=max,depth_silog=min "
                        "(replaces the spec's objectives).")
    p.add_argument("--checkpoints", metavar="KEEP[,KEY=VALUE...]",
                   help="what finished trials keep: auto, none, rows, top or all, with top=K and state=weights|full "
                        "(e.g. top,top=5); default: the spec's checkpoints block.")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", dest="sets",
                   help="override a fixed TrialConfig key of the spec (repeatable), e.g. --set pretrained=false.")
    p.add_argument("--wandb", choices=WANDB_MODES, help="log trials to W&B (default: off).")
    p.add_argument("--dashboard", action=argparse.BooleanOptionalAction, default=True,
                   help="start the Ray dashboard on 127.0.0.1 (local clusters).")
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=True, help="build the report at the end.")
    p.add_argument("--probe-steps", type=int, default=2, help="training steps timed by --dry-run's throughput probe.")
    p.add_argument("--gpu-bench", metavar="GPU_JSON", help="--dry-run: gpu.json of `python -m bench.gpu`, whose "
                   "measured packing turns fractional --gpus-per-trial into throughput.")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return parser().parse_args(argv)


def _experiment(args: argparse.Namespace) -> Experiment:
    exp = load_experiment(args.spec)
    if args.name:
        exp = dataclasses.replace(exp, name=args.name)
    if args.scheduler:
        block = scheduler_flag(args.scheduler, exp.spec.scheduler)
        if block.metric is not None:
            check_metric(block.metric, "metric", "--scheduler")
        exp = dataclasses.replace(exp, spec=exp.spec.model_copy(update={"scheduler": block}), scheduler=block.type)
        check_grace_period(exp)
    if args.seeds or args.compare:
        seeds = seeds_flag(args.seeds) if args.seeds else exp.adaptive or exp.spec.seeds
        if args.compare:
            if not isinstance(seeds, SeedsBlock):
                raise SpecError("--compare: needs adaptive seeds (--seeds first=N,max=M or the spec's seeds block)")
            seeds = seeds.model_copy(update={"compare": list(args.compare)})
        exp = with_seeds(exp, seeds, "--seeds")
    elif exp.adaptive is not None and args.scheduler:
        exp = with_seeds(exp, exp.adaptive, "--scheduler")
    if args.checkpoints is not None:
        block = checkpoints_flag(args.checkpoints, exp.spec.checkpoints)
        exp = dataclasses.replace(exp, spec=exp.spec.model_copy(update={"checkpoints": block}))
    if args.objectives is not None:
        objectives = objectives_flag(args.objectives)
        exp = dataclasses.replace(exp, spec=exp.spec.model_copy(update={"objectives": objectives}))
    check_objectives_fit(exp, "--objectives" if args.objectives else exp.path)
    return exp


def _dry_run(exp: Experiment, run: RunConfig, args: argparse.Namespace) -> int:
    if run.extend:  # a design the extension would refuse is refused by its dry run too
        check_extend(exp, run, open_storage(run.storage))
    print(trial_table(exp))
    for problem in missing_weights(exp):
        print(f"warning: {problem}. A real run downloads it with torchvision where there is internet; offline, "
              f"put it in the torch cache or set `pretrained: /path/to/weights.pth`, or "
              f"{scratch_command(exp, list(run.argv))}.")
    concurrency = run.concurrency(local_slots(run), exp.trial_count())
    print(budget(exp, concurrency, run.probe_steps, run.gpus_per_trial or 0.0, args.gpu_bench, run.cpus_per_trial))
    if args.plan_from:
        print(frontier_plan(exp, args.plan_from) if exp.spec.report.frontier else plan(exp, args.plan_from))
    return 0


def main(argv: list[str] | None = None, reporting: Reporting | None = None) -> int:
    """Validate, then run. `reporting` (app.cli gives analysis/'s tables and report) is what the end prints."""
    args = parse_args(argv)
    try:
        exp = _experiment(args)
        run = resolve(args, exp, list(argv if argv is not None else sys.argv[1:]))
        check_flags(run, args.gpu_bench)
        check_storage_uri(run.storage)
        sets = parse_sets(args.sets, exp)
        profile = resolve_profile(args.profile, torch.cuda.is_available())
        reason = f" (auto: {'a CUDA GPU' if torch.cuda.is_available() else 'no CUDA GPU'} here)" \
            if args.profile == "auto" else ""
        print(f"profile: {profile}{reason}", flush=True)
        exp = exp.configure(profile, args.data, sets)
        check_models(exp)
        check_data(exp)  # the dataset against its descriptor and the tasks: a dry run checks it too
        if args.dry_run:
            return _dry_run(exp, run, args)
        storage, extended = preflight(exp, run)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(run.describe(), flush=True)
    if not run.address and "ray" not in sys.modules:
        # A local Ray binds its services to the node's address, reachable from the network. With this flag
        # (the single-machine mode Ray uses on macOS and Windows) the node's address is 127.0.0.1 and every
        # GCS, raylet, worker and agent socket listens on loopback only. It must be set before Ray is imported.
        os.environ.setdefault(LOOPBACK_ENV, "0")
    from search.driver import run_search  # imports Ray: not needed for validation or dry runs

    return run_search(exp, run, storage, extended, reporting)
