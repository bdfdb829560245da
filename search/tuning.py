"""Assemble Ray Tune's own pieces for an `Experiment`: param space, scheduler, searcher, configs."""

from __future__ import annotations

import re
from typing import Any

from ray import tune
from ray.tune.schedulers import MedianStoppingRule, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from core.spaces import sampler
from mtl.config import TrialConfig
from search.pareto_asha import ParetoASHAScheduler
from search.rounds import RoundSearcher
from search.schedulers import LiveFIFOScheduler, RankedASHAScheduler, SeedAwareASHAScheduler
from search.spec import rank_metric
from search.trainable import WandbSettings, run_trial
from search.trials import Experiment

PROGRESS_METRICS = {"epoch": "epoch", "multitask": "multitask", "semseg_miou": "mIoU", "depth_silog": "SI-log",
                    "status": "result"}


def param_space(exp: Experiment, cells: RoundSearcher | None = None) -> dict[str, Any]:
    """What Tune varies: the row name, the seed and the sampled keys. The trainable resolves the rest."""
    names = [r.name for r in exp.rows]
    if cells is not None:
        return {}  # a cell searcher (search.rounds) suggests every trial's variant and seed
    if exp.algorithm == "optuna":
        variant = tune.choice(names) if len(names) > 1 else names[0]
        seed = exp.seeds[0]
    else:
        variant = tune.grid_search(names) if len(names) > 1 else names[0]
        seed = tune.grid_search(list(exp.seeds)) if len(exp.seeds) > 1 else exp.seeds[0]
    return {"variant": variant, "seed": seed, **{k: sampler(v) for k, v in exp.space.items()}}


def max_epochs(exp: Experiment) -> int:
    return max(TrialConfig.from_dict({**exp.defaults, **r.overrides}).epochs for r in exp.rows)


def scheduler(exp: Experiment, state_file: tuple | None = None) -> TrialScheduler:
    s = exp.spec.scheduler
    # sampled trials are rows of one; seed_aware: false asks for Ray's per-trial ASHA
    metric, mode = rank_metric(exp.metric, exp.mode, s)
    if exp.scheduler == "asha" and exp.objectives:
        # rows (or sampled trials) ranked by non-dominated sorting on their seed means (search/pareto_asha.py)
        sampled = bool(exp.space)
        return ParetoASHAScheduler(exp.objectives, seeds=1 if sampled else len(exp.seeds), max_t=max_epochs(exp),
                                   grace_period=s.grace_period, reduction_factor=s.reduction_factor,
                                   group_by="trial_id" if sampled else "variant", state_file=state_file)
    if exp.scheduler == "asha" and s.seed_aware and len(exp.seeds) > 1 and not exp.space:
        # rows replicated over seeds: promote or stop a row on its seed mean (search/schedulers.py)
        return SeedAwareASHAScheduler(seeds=len(exp.seeds), max_t=max_epochs(exp), grace_period=s.grace_period,
                                      reduction_factor=s.reduction_factor, metric=metric, mode=mode,
                                      state_file=state_file)
    if exp.scheduler == "asha":
        return RankedASHAScheduler(metric, mode, time_attr="training_iteration", max_t=max_epochs(exp),
                                   grace_period=s.grace_period, reduction_factor=s.reduction_factor)
    if exp.scheduler == "median":
        return MedianStoppingRule(time_attr="training_iteration", grace_period=s.grace_period)
    return LiveFIFOScheduler()


def search_alg(exp: Experiment, max_concurrent: int | None) -> Searcher | None:
    if exp.algorithm != "optuna":
        return None
    objectives = exp.objectives
    if objectives:  # Optuna's multi-objective study (its default sampler for several objectives: NSGA-II)
        optuna = OptunaSearch(metric=list(objectives), mode=list(objectives.values()), seed=exp.seeds[0])
    else:
        optuna = OptunaSearch(metric=exp.metric, mode=exp.mode, seed=exp.seeds[0])
    return ConcurrencyLimiter(optuna, max_concurrent=max_concurrent) if max_concurrent else optuna


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")[:60]


def trial_name(trial) -> str:
    return f"{trial.trial_id} {trial.config.get('variant')} s{trial.config.get('seed')}"


def trial_dirname(trial) -> str:
    return f"{trial.trial_id}_{_slug(str(trial.config.get('variant')))}_s{trial.config.get('seed')}"


def tune_config(exp: Experiment, max_concurrent: int | None, state_file: tuple | None = None,
                cells: RoundSearcher | None = None) -> tune.TuneConfig:
    """`state_file`: (filesystem, path) where seed-aware ASHA keeps its rungs for `--resume`; `cells`: the
    searcher that suggests every (row, seed) (search.rounds; it caps the concurrency itself and says when the
    search is finished)."""
    if cells is not None:
        searcher, samples = cells, -1
    else:
        searcher = search_alg(exp, max_concurrent)
        samples = exp.spec.search.num_samples if exp.algorithm != "grid" else 1
    chosen = scheduler(exp, state_file)
    # with several objectives Tune's own metric stays unset: Tune would hand its one metric to OptunaSearch, which
    # then replaces its list of objectives with it (set_search_properties) and the study sees one value
    several = exp.objectives is not None and exp.algorithm == "optuna"
    return tune.TuneConfig(metric=None if several else exp.metric, mode=None if several else exp.mode,
                           scheduler=chosen, search_alg=searcher,
                           num_samples=samples, max_concurrent_trials=None if searcher else max_concurrent,
                           trial_name_creator=trial_name, trial_dirname_creator=trial_dirname,
                           # a trial's worker process runs the next trial too: starting one (Python, torch, Ray)
                           # took ~5 s on 2 cores, more than a short trial itself (bench.search_overhead). Not with
                           # seed-aware ASHA: it stops a row's other seeds mid-epoch, and Tune gives a reused worker
                           # 2 s to finish the stopped trial's epoch before it fails the next trial (with one seed a
                           # row has no sibling to stop)
                           reuse_actors=not (isinstance(chosen, SeedAwareASHAScheduler) and chosen.seeds > 1))


def trainable(exp: Experiment, cpus: float, gpus: float, shared: dict | None = None,
              wandb: WandbSettings | None = None):
    """The function trainable with its resources; `shared` (decoded datasets) goes to Ray's object store once.
    Re-specified on `--resume` too (Tune restores everything else from the experiment): resources and W&B given
    then apply to the resumed trials."""
    return tune.with_resources(tune.with_parameters(run_trial, experiment=exp, shared=shared or {}, wandb=wandb),
                               {"cpu": cpus, "gpu": gpus})


def reporter(exp: Experiment) -> tune.CLIReporter:
    """Tune's progress table: the ablated keys, then multitask / semseg / depth / epoch per trial."""
    columns = {"variant": "variant", "seed": "seed", **{k: k for k in exp.space}}
    metrics = {**{f"ablated/{k}": k for k in exp.shown_axes}, **PROGRESS_METRICS}
    return tune.CLIReporter(parameter_columns=columns, metric_columns=metrics, max_report_frequency=30,
                            sort_by_metric=False, max_progress_rows=40,
                            # explicit: left unset, Tune derives it from the global verbosity the previous
                            # fit() in this process left behind, and a second search prints no table
                            print_intermediate_tables=True)


def full_config(exp: Experiment, config: dict[str, Any]) -> dict[str, Any]:
    """A trial's whole resolved TrialConfig (what W&B logs as the run's config)."""
    return {"variant": config["variant"], **exp.trial_config(config).to_flat(), "cli_set": dict(exp.sets)}
