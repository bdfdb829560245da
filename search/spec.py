"""The experiment spec: a YAML file that expands into Ray Tune trials.

    name: task_weights
    base: [../search/spaces/base.yaml]           # spec fragments merged in order, relative to this file
    fixed: {optimizer: adam, lr: 1.0e-4}         # TrialConfig overrides for every trial
    variants: [{name: "seg 0.2 / depth 0.8", loss_weights: [0.2, 0.8]}, ...]
    grid: {encoder: [resnet18, resnet34]}        # cross product with the variants
    zip: {batch_size: [2, 4], epochs: [8, 16]}   # coupled axes of equal length
    space: {lr: {loguniform: [1.0e-5, 1.0e-1]}}  # sampled by the search algorithm
    seeds: 3                                     # or a list, or adaptive: {first: 3, max: 8, compare: [...]}
    search: {algorithm: grid|random|optuna, num_samples: 32, max_concurrent: 4}
    scheduler: {type: none|asha|median, grace_period: 2, reduction_factor: 3, seed_aware: true}
    metric: multitask                            # mode: max unless the metric is an error
    resources: {cpus: 1, gpus: 0.25}
    report: {columns: [...], order: [...], baseline: "...", single_task: DIR,   # DIR: Δm % reference
             equivalence_margin: {multitask: 1.0}}       # "no difference" shown by TOST within ±margin
    trial_price_per_hour: 0.27                   # optional: cost column in reports
    checkpoints: {keep: auto|none|rows|top|all, top: 3, state: weights|full}   # what finished trials keep

Every problem is a `SpecError` naming the file and the key, raised before anything starts.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mtl.config import TrialConfig, validation_message
from mtl.metrics import WORST_VALUES


class SpecError(ValueError):
    """A malformed experiment spec. The message names the file and the key."""


REPORTED_METRICS = ("multitask", "multitask_raw", "semseg_miou", "depth_silog", "depth_abs_rel", "depth_rmse",
                    "depth_delta1", "normals_mean", "normals_median", "normals_11", "normals_22", "normals_30",
                    "train_loss", "train_semseg_loss", "train_depth_loss", "train_normals_loss")
LOWER_IS_BETTER = ("depth_silog", "depth_abs_rel", "depth_rmse", "normals_mean", "normals_median", "train_loss",
                   "train_semseg_loss", "train_depth_loss", "train_normals_loss")
SAMPLERS = ("loguniform", "uniform", "quniform", "randint", "choice")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchBlock(_Strict):
    algorithm: Literal["grid", "random", "optuna"] | None = None  # default: grid, or random with a space
    num_samples: int = Field(1, ge=1)
    max_concurrent: int | None = Field(None, ge=1)


class SchedulerBlock(_Strict):
    type: Literal["none", "asha", "median"] | None = None  # default: none for matrices, asha with a space
    grace_period: int = Field(2, ge=1)  # epochs
    reduction_factor: float = Field(3.0, gt=1)
    # asha with seeds: stop or promote a row on its seeds' mean (search/schedulers.py); false: trial by trial
    seed_aware: bool = True
    # what ASHA ranks trials on at a rung; default: multitask_raw when the experiment's metric is multitask (the
    # clipped score is 0 for every young model, so ASHA could not tell them apart), else the experiment's metric
    metric: str | None = None


def scheduler_flag(text: str, current: SchedulerBlock) -> SchedulerBlock:
    """`--scheduler asha,grace_period=1,seed_aware=false` -> the spec's scheduler block with those changes."""
    return _block_flag("--scheduler", text, current, "type", "none, asha, median")


def _block_flag(flag: str, text: str, current: BaseModel, first: str, allowed: str):
    """`FIRST[,key=value...]` (or only key=value pairs) -> a copy of the spec block `current` with those changes."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise SpecError(f"{flag}: expected {first.upper()}[,key=value...] with {first.upper()} one of {allowed}; "
                        f"got {text!r}")
    values = current.model_dump()
    if "=" not in parts[0]:
        values[first] = parts.pop(0)
    for pair in parts:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SpecError(f"{flag}: expected {first.upper()}[,key=value...], got {pair!r}")
        values[key.strip()] = yaml.safe_load(value)
    try:
        return type(current)(**values)
    except ValidationError as e:
        raise SpecError(validation_message(flag, e).replace("Input should be", "allowed:")) from None


class CheckpointsBlock(_Strict):
    """What a trial keeps in storage (search/retention.py). A running trial always keeps its latest full state
    (weights, optimizer, RNG) to resume from; when it finishes, only what a feature needs stays:
    keep: auto   - `rows` for matrices, `all` when the report evaluates checkpoints post hoc (`report.posthoc_tta`),
                   `top` for sampled searches
          rows   - the best trial of each row (the report's example predictions; `analysis.export` of the best)
          top    - the `top` best trials of the experiment
          all    - every completed trial
          none   - nothing (the report then has no example predictions)
    state: weights - the best epoch's weights only (no optimizer moments: about a third of the full state)
           full    - the full state at the last epoch plus the best weights (to train on later)
    Trials stopped early, diverged or out of memory keep nothing."""

    keep: Literal["auto", "none", "rows", "top", "all"] = "auto"
    top: int = Field(3, ge=1)
    state: Literal["weights", "full"] = "weights"


def checkpoints_flag(text: str, current: CheckpointsBlock) -> CheckpointsBlock:
    """`--checkpoints top,top=5,state=full` -> the spec's checkpoints block with those changes."""
    return _block_flag("--checkpoints", text, current, "keep", "auto, none, rows, top, all")


class SeedsBlock(_Strict):
    """Adaptive seeds (search/adaptive.py): every compared row runs `first` seeds; then, round by round, each
    comparison not yet settled by the group-sequential test (stats/sequential.py) gets one more seed on both of
    its rows, until all are settled or `max` seeds (or the run's --budget) are reached.
    compare: ["ROW vs REFERENCE", ...]; default: every row against the baseline.
    family: the number of tests the final verdicts are adjusted across, when it is larger than this experiment's
    comparisons (a findings page): a comparison is then settled at p < 0.05 / family, which that page's Holm
    step always accepts; default: Holm across this experiment's comparisons.
    start: the first seed (seeds start .. start + max - 1); a new study on fresh seeds starts past the seeds an
    earlier study used, so that none of its data was seen before its design was fixed."""

    first: int = Field(3, ge=2)
    max: int = Field(8, ge=2)
    compare: list[str] | None = None
    family: int | None = Field(None, ge=1)
    start: int = Field(0, ge=0)  # the first seed: a new study on fresh seeds starts past those an earlier one used

    @field_validator("max")
    @classmethod
    def _max(cls, v: int, info) -> int:
        if v < info.data.get("first", 2):
            raise ValueError(f"max ({v}) must be >= first ({info.data.get('first')})")
        return v


def seeds_flag(text: str) -> int | SeedsBlock:
    """`--seeds 3` (a fixed count) or `--seeds first=3,max=8` (adaptive)."""
    if "=" not in text:
        try:
            n = int(text)
        except ValueError:
            raise SpecError(f"--seeds: expected a count (e.g. 3) or first=N,max=M; got {text!r}") from None
        if n < 1:
            raise SpecError(f"--seeds must be >= 1, got {n}")
        return n
    return _block_flag("--seeds", text, SeedsBlock(), "first", "a count")


class ResourcesBlock(_Strict):
    cpus: float = Field(1.0, gt=0)
    gpus: float | None = Field(None, ge=0)  # default: 1 per trial when the cluster has GPUs, else 0


class FrontierBlock(_Strict):
    """A frontier study (analysis.frontier): methods judged against a tuned front of weighted sums."""

    front: list[str]  # variant names of the weighted sums (fixed loss_weights): the scalarisation front
    tune: str = "lr"  # the grid key each variant tunes, with the same values (the same budget) for every variant
    tuning_seeds: list[int] = [0]  # seeds that choose each variant's value; the others compare (never both)
    margin: dict[str, float]  # {objective: margin}: "equivalent" within it, declared before the runs
    alpha: float = Field(0.05, gt=0, lt=1)  # the page's family-wise error


class ReportBlock(_Strict):
    columns: list[str] | None = None
    order: list[str] | None = None
    baseline: str | None = None
    title: str | None = None
    posthoc_tta: list[Literal["off", "flip", "multiscale"]] | None = None  # evaluated on checkpoints afterwards
    single_task: str | None = None  # an experiment (dir or s3://) with single-task rows: the table gains Δm %
    # {metric: margin}: a difference within ±margin counts as none, and "no difference" can be shown (TOST)
    equivalence_margin: dict[str, float] | None = None
    # {metric: value}: the hypervolume's reference point for the objectives (default: mtl.metrics.WORST_VALUES)
    reference_point: dict[str, float] | None = None
    frontier: FrontierBlock | None = None

    @field_validator("equivalence_margin")
    @classmethod
    def _margins(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for metric, margin in (v or {}).items():
            if metric not in REPORTED_METRICS or not margin > 0:
                raise ValueError(f"{metric}: {margin}: expected a reported metric ({', '.join(REPORTED_METRICS)}) "
                                 "and a margin > 0")
        return v


class Spec(_Strict):
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str | None = None
    base: list[str] = []
    fixed: dict[str, Any] = {}
    variants: list[dict[str, Any]] = []
    grid: dict[str, list[Any]] = {}
    zip: dict[str, list[Any]] = {}
    space: dict[str, dict[str, Any]] = {}
    seeds: int | list[int] | SeedsBlock = 1
    search: SearchBlock = SearchBlock()
    scheduler: SchedulerBlock = SchedulerBlock()
    metric: str = "multitask"
    mode: Literal["max", "min"] | None = None
    # two or more reported metrics with their directions, e.g. {semseg_miou: max, depth_silog: min}: Optuna searches
    # them together, ASHA ranks rows by non-dominated sorting, the report draws and tests their trade-off
    objectives: dict[str, Literal["max", "min"]] | None = None
    resources: ResourcesBlock = ResourcesBlock()
    report: ReportBlock = ReportBlock()
    trial_price_per_hour: float | None = Field(None, ge=0)
    checkpoints: CheckpointsBlock = CheckpointsBlock()

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | list[int] | SeedsBlock) -> int | list[int] | SeedsBlock:
        if isinstance(v, int) and v < 1:
            raise ValueError("seeds must be >= 1 or a non-empty list of distinct integers")
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("seeds must be a non-empty list of distinct integers")
        return v


_MERGED_DICTS = ("fixed", "grid", "zip", "space")
_MERGED_BLOCKS = ("search", "scheduler", "resources", "report", "checkpoints")


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise SpecError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a {what} must be a mapping of spec keys, got {type(data).__name__}")
    return data


def _check_top_keys(path: Path, data: dict[str, Any]) -> None:
    for key in data:
        if key not in Spec.model_fields:
            near = difflib.get_close_matches(str(key), list(Spec.model_fields), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise SpecError(f"{path}: unknown key {key!r}{hint}; allowed: {', '.join(Spec.model_fields)}")


def _merge(into: dict[str, Any], data: dict[str, Any]) -> None:
    """Later files win: mappings merge key by key, everything else is replaced."""
    for key, value in data.items():
        if key in _MERGED_DICTS + _MERGED_BLOCKS and isinstance(value, dict) and isinstance(into.get(key), dict):
            into[key] = {**into[key], **value}
        else:
            into[key] = value


def load_raw(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """Read a spec and its base files (one level: a base may not have bases of its own)."""
    path = Path(path)
    data = _read_yaml(path, "spec")
    _check_top_keys(path, data)
    merged: dict[str, Any] = {}
    bases = data.get("base", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list):
        raise SpecError(f"{path}: key 'base': expected a list of file paths")
    for entry in bases:
        base_path = (path.parent / str(entry)).resolve()
        base = _read_yaml(base_path, f"base file (listed under 'base' in {path})")
        _check_top_keys(base_path, base)
        if "base" in base:
            raise SpecError(f"{base_path}: key 'base': a base file cannot list bases of its own (no chains)")
        _merge(merged, base)
    _merge(merged, {k: v for k, v in data.items() if k != "base"})
    merged.setdefault("name", path.stem)
    merged["base"] = [str(b) for b in bases]
    return path, merged


def parse_spec(path: str | Path) -> tuple[Path, Spec]:
    path, raw = load_raw(path)
    try:
        return path, Spec(**raw)
    except ValidationError as e:
        raise SpecError(validation_message(str(path), e)) from None


def check_trial_keys(path: Path, where: str, keys) -> None:
    fields = TrialConfig.model_fields
    for key in keys:
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise SpecError(f"{path}: key '{where}.{key}': not a TrialConfig field{hint}")


def metric_mode(spec: Spec, path: Path) -> str:
    check_metric(spec.metric, "metric", path)
    if spec.scheduler.metric is not None:
        check_metric(spec.scheduler.metric, "scheduler.metric", path)
    return spec.mode or ("min" if spec.metric in LOWER_IS_BETTER else "max")


def check_objectives(objectives: dict[str, str] | None, path: Path | str, key: str = "key 'objectives'") -> None:
    """Two or more reported metrics, each max or min (the directions are checked as the spec parses)."""
    if objectives is None:
        return
    where = f"{path}: {key}" if key else str(path)
    if len(objectives) < 2:
        raise SpecError(f"{where}: needs two or more metrics with their directions, e.g. "
                        "{semseg_miou: max, depth_silog: min}; a single one is `metric:`")
    for name, direction in objectives.items():
        check_metric(name, f"objectives.{name}", path)
        if direction not in ("max", "min"):
            raise SpecError(f"{where}: {name}: {direction!r}: allowed: max, min")


def check_reference_point(objectives: dict[str, str] | None, declared: dict[str, float] | None,
                          path: Path | str) -> None:
    """Every objective needs a hypervolume reference point: declared, or a metric's known worst value."""
    for name in declared or {}:
        if not objectives or name not in objectives:
            raise SpecError(f"{path}: key 'report.reference_point.{name}': not an objective; objectives: "
                            f"{', '.join(objectives or {}) or 'none'}")
    missing = [m for m in objectives or {} if m not in (declared or {}) and m not in WORST_VALUES]
    if missing:
        raise SpecError(f"{path}: key 'report.reference_point': {missing[0]} has no default worst value; declare "
                        f"one, e.g. report: {{reference_point: {{{missing[0]}: VALUE}}}}")


def objectives_flag(text: str) -> dict[str, str]:
    """`--objectives semseg_miou=max,depth_silog=min`."""
    out = {}
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        name, sep, direction = part.partition("=")
        if not sep or direction.strip() not in ("max", "min"):
            raise SpecError(f"--objectives: expected METRIC=max|min, comma-separated; got {part!r}")
        if name.strip() in out:
            raise SpecError(f"--objectives: {name.strip()} is named twice")
        out[name.strip()] = direction.strip()
    check_objectives(out, "--objectives", "")
    return out


def check_metric(metric: str, key: str, path: Path | str) -> None:
    if metric not in REPORTED_METRICS and not metric.startswith("iou_"):
        near = difflib.get_close_matches(metric, REPORTED_METRICS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise SpecError(f"{path}: key {key!r}: {metric!r} is not a reported metric{hint}; "
                        f"allowed: {', '.join(REPORTED_METRICS)}, iou_<class>")


def rank_metric(metric: str, mode: str, block: SchedulerBlock) -> tuple[str, str]:
    """What a scheduler ranks trials on, and in which direction (see SchedulerBlock.metric)."""
    if block.metric is None:
        return ("multitask_raw", "max") if metric == "multitask" else (metric, mode)
    return block.metric, "min" if block.metric in LOWER_IS_BETTER else "max"
