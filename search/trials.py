"""A validated spec expanded into rows (variants x grid x zip), seeds and a sampled space.

Resolution order of one trial's config: TrialConfig defaults < `fixed` (bases, then the spec) <
profile (never an ablated key) < `--data` < the row's overrides < sampled values < seed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mtl.config import ConfigError, TrialConfig
from mtl.profiles import PROFILES
from search.spec import (
    SAMPLERS,
    SeedsBlock,
    Spec,
    SpecError,
    check_objectives,
    check_reference_point,
    check_trial_keys,
    metric_mode,
    parse_spec,
)

REPORT_COLUMNS = ("multitask", "semseg_miou", "depth_silog", "depth_abs_rel", "depth_rmse", "depth_delta1",
                  "normals_mean", "normals_median", "normals_11", "normals_22", "normals_30",
                  "parameters", "peak_memory_mb", "train_time_s", "train_img_per_s", "epochs_run", "cost")


@dataclass(frozen=True)
class Row:
    """One named combination of ablated values; every seed of it is one trial."""

    name: str
    overrides: dict[str, Any]
    baseline: bool = False


@dataclass(frozen=True)
class Experiment:
    name: str
    path: str
    spec: Spec
    rows: tuple[Row, ...]
    seeds: tuple[int, ...]
    ablated: tuple[str, ...]
    metric: str
    mode: str
    algorithm: str
    scheduler: str
    profile: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)  # fixed + profile + data + --set
    sets: dict[str, Any] = field(default_factory=dict)  # `--set key=value` overrides of fixed keys
    adaptive: SeedsBlock | None = None  # seeds added round by round (search/adaptive.py); `seeds` holds all `max`

    @property
    def objectives(self) -> dict[str, str] | None:
        """{metric: max|min} of a multi-objective experiment, else None (one metric: `metric`, `mode`)."""
        return dict(self.spec.objectives) if self.spec.objectives else None

    @property
    def space(self) -> dict[str, dict[str, Any]]:
        return self.spec.space

    @property
    def reports_per_class(self) -> bool:
        """Whether the experiment names an `iou_<class>` (metric, objective, report column): then each class's IoU
        goes to Tune as a number of its own; otherwise all of them as one text field (core.perclass)."""
        named = [self.metric, *(self.objectives or {}), *(self.spec.report.columns or [])]
        return any(n.startswith("iou_") for n in named)

    @property
    def shown_axes(self) -> tuple[str, ...]:
        """Ablated keys that Tune's config does not already show (sampled keys are config columns)."""
        return tuple(k for k in self.ablated if k not in self.space)

    @property
    def baseline(self) -> Row:
        named = self.spec.report.baseline
        return next((r for r in self.rows if r.name == named or (not named and r.baseline)), self.rows[0])

    def row(self, name: str) -> Row:
        return next(r for r in self.rows if r.name == name)

    def trial_config(self, config: dict[str, Any]) -> TrialConfig:
        """The TrialConfig of the Tune trial whose param-space sample is `config`."""
        sampled = {k: config[k] for k in self.space if k in config}
        values = {**self.defaults, **self.row(config["variant"]).overrides, **sampled, "seed": config["seed"]}
        return TrialConfig.from_dict(values, source=f"{self.path} (trial {config['variant']!r})")

    @property
    def comparisons(self) -> tuple[tuple[str, str], ...]:
        """(row, reference) pairs the statistics test: the adaptive design's `compare`, else row vs baseline."""
        if self.adaptive is not None and self.adaptive.compare:
            return tuple(split_comparison(c) for c in self.adaptive.compare)
        base = self.baseline.name
        return tuple((r.name, base) for r in self.rows if r.name != base)

    def trial_count(self) -> int:
        """Trials the search runs (an adaptive design: at most)."""
        if self.adaptive is not None and self.spec.report.frontier is not None:
            tuning = self.spec.report.frontier.tuning_seeds  # every row tunes; each variant's chosen row compares
            return len(self.rows) * len(tuning) + len(self.spec.variants) * (len(self.seeds) - len(tuning))
        if self.adaptive is not None:
            return len({r for pair in self.comparisons for r in pair}) * len(self.seeds)
        if self.algorithm == "optuna":
            return self.spec.search.num_samples
        samples = self.spec.search.num_samples if self.algorithm == "random" else 1
        return len(self.rows) * len(self.seeds) * samples

    def configure(self, profile: str | None, data: str | None = None, sets: dict[str, Any] | None = None
                  ) -> Experiment:
        """Apply a run profile, a dataset and `--set` overrides (the user's word wins over the profile);
        profile keys the spec ablates are left alone, and `--set` never names one (see preflight)."""
        scale = {k: v for k, v in PROFILES.get(profile, {}).items() if k not in self.ablated}
        defaults = {**self.spec.fixed, **scale}
        if data is not None:
            defaults["data"] = data
        if defaults.get("data", "synthetic") != "synthetic" and profile == "full":
            for key in ("train_images", "val_images", "test_images"):
                defaults.pop(key, None)  # course scale on real data: every image
        defaults.update(sets or {})
        # a model file named relative to where the command runs: made absolute, as trials run in their own folders
        rows = tuple(replace(r, overrides=_absolute_model(r.overrides)) for r in self.rows)
        exp = replace(self, profile=profile, defaults=_absolute_model(defaults), rows=rows, sets=dict(sets or {}))
        _validate_configs(exp)
        return exp


def split_comparison(text: str) -> tuple[str, str]:
    row, _, reference = text.partition(" vs ")
    return row.strip(), reference.strip()


def with_seeds(exp: Experiment, seeds: int | list[int] | SeedsBlock, where: str) -> Experiment:
    """The experiment replicated over `seeds`: a count, a list, or an adaptive design (checked here: it needs a
    grid of rows, no early-stopping scheduler, and `compare` entries naming two rows)."""
    start = exp.spec.fixed.get("seed", 0)
    if isinstance(seeds, SeedsBlock):
        _check_adaptive(exp, seeds, where)
        start += seeds.start
        tuning = exp.spec.report.frontier.tuning_seeds if exp.spec.report.frontier else []
        # a frontier study: its tuning seeds, then `max` comparison seeds (first / max count those)
        compare = [s for s in range(start, start + seeds.max + len(tuning)) if s not in tuning][:seeds.max]
        return replace(exp, seeds=tuple(dict.fromkeys([*tuning, *compare])), adaptive=seeds)
    if exp.algorithm == "optuna" and (isinstance(seeds, list) or seeds > 1):
        raise SpecError(f"{where}: optuna proposes each trial itself; replicate with num_samples instead")
    values = tuple(seeds) if isinstance(seeds, list) else tuple(range(start, start + seeds))
    return replace(exp, seeds=values, adaptive=None)


def check_frontier(exp: Experiment, where: str) -> None:
    """`report.frontier` names weighted-sum variants, a grid key every variant tunes, seeds the spec runs, and a
    margin per objective; what is wrong is named."""
    fb = exp.spec.report.frontier
    if fb is None:
        return
    key = f"{where}: key 'report.frontier"
    names = [v.get("name") for v in exp.spec.variants]
    if not exp.objectives:
        raise SpecError(f"{key}': a frontier study needs objectives, e.g. {{semseg_miou: max, depth_silog: min}}")
    unknown = [f for f in fb.front if f not in names]
    if unknown or len(fb.front) < 2:
        raise SpecError(f"{key}.front': {unknown[0] if unknown else fb.front}: expected two or more variant names; "
                        f"variants: {', '.join(map(str, names))}")
    if fb.tune not in exp.spec.grid:
        raise SpecError(f"{key}.tune': {fb.tune!r} is not a grid key (every variant tunes the same values); "
                        f"grid keys: {', '.join(exp.spec.grid) or 'none'}")
    if set(fb.margin) != set(exp.objectives) or not all(m > 0 for m in fb.margin.values()):
        raise SpecError(f"{key}.margin': one margin > 0 per objective ({', '.join(exp.objectives)}); "
                        f"got {fb.margin}")
    left = [s for s in exp.seeds if s not in fb.tuning_seeds]
    if not set(fb.tuning_seeds) <= set(exp.seeds) or len(left) < 2:
        raise SpecError(f"{key}.tuning_seeds': {fb.tuning_seeds} must be seeds the spec runs "
                        f"({list(exp.seeds)}) and leave two or more to compare on")


def check_objectives_fit(exp: Experiment, where: str) -> None:
    """Objectives with what serves one metric only: refused, naming the key."""
    check_reference_point(exp.objectives, exp.spec.report.reference_point, where)
    check_frontier(exp, where)
    if exp.objectives is None:
        return
    if exp.adaptive is not None and exp.spec.report.frontier is None:
        raise SpecError(f"{where}: key 'objectives': adaptive seeds test one metric (`metric:`, the group-sequential "
                        "test); use a fixed number of seeds with objectives")
    if exp.scheduler == "median":
        raise SpecError(f"{where}: key 'objectives': the median stopping rule ranks one metric; use scheduler asha "
                        "(ranked by non-dominated sorting) or none")
    if exp.scheduler == "asha" and exp.spec.scheduler.metric is not None:
        raise SpecError(f"{where}: key 'scheduler.metric': with objectives ASHA ranks by non-dominated sorting on "
                        "the objectives; remove scheduler.metric")


def _check_adaptive(exp: Experiment, block: SeedsBlock, where: str) -> None:
    if exp.algorithm != "grid":
        raise SpecError(f"{where}: adaptive seeds need a grid of rows (search.algorithm grid, no 'space'), not "
                        f"{exp.algorithm}")
    if exp.scheduler != "none":
        raise SpecError(f"{where}: adaptive seeds compare final results: use scheduler none, not {exp.scheduler} "
                        "(an early-stopped seed has no final result to pair)")
    if exp.spec.report.frontier is not None and (block.compare or block.family):
        raise SpecError(f"{where}: a frontier study's adaptive seeds compare every method with the front and adjust "
                        "across its page: leave out compare and family")
    names = [r.name for r in exp.rows]
    for i, text in enumerate(block.compare or []):
        pair = split_comparison(text)
        bad = [n for n in pair if n not in names]
        if " vs " not in text or bad or pair[0] == pair[1]:
            raise SpecError(f"{where}: compare[{i}] {text!r}: expected 'ROW vs REFERENCE' naming two different rows; "
                            f"rows: {names}")
    if len(names) < 2:
        raise SpecError(f"{where}: adaptive seeds need at least two rows to compare")


def format_value(value: Any) -> str:
    """Short, YAML-like text of a config value (row names, tables, progress columns)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def _axis_rows(spec: Spec, path: Path) -> list[dict[str, Any]]:
    """The cross product of `grid` with the rows of `zip` (each a dict of overrides)."""
    for block in ("grid", "zip"):
        for key, values in getattr(spec, block).items():
            if not values:
                raise SpecError(f"{path}: key '{block}.{key}': needs at least one value")
    lengths = {k: len(v) for k, v in spec.zip.items()}
    if len(set(lengths.values())) > 1:
        raise SpecError(f"{path}: key 'zip': lists must have equal length, got {lengths}")
    zipped = [dict(zip(spec.zip, vals, strict=True)) for vals in zip(*spec.zip.values(), strict=True)] or [{}]
    grid = [dict(zip(spec.grid, vals, strict=True)) for vals in itertools.product(*spec.grid.values())]
    return [{**g, **z} for g in grid for z in zipped]


def _variants(spec: Spec, path: Path) -> list[Row]:
    rows, seen = [], set()
    for i, v in enumerate(spec.variants):
        if not isinstance(v, dict) or not isinstance(v.get("name"), str) or not v["name"].strip():
            raise SpecError(f"{path}: key 'variants[{i}].name': every variant needs a non-empty name")
        if v["name"] in seen:
            raise SpecError(f"{path}: key 'variants[{i}].name': duplicate variant name {v['name']!r}")
        seen.add(v["name"])
        overrides = {k: val for k, val in v.items() if k not in ("name", "baseline")}
        check_trial_keys(path, f"variants[{i}]", overrides)
        rows.append(Row(v["name"], overrides, bool(v.get("baseline", False))))
    if sum(r.baseline for r in rows) > 1:
        raise SpecError(f"{path}: key 'variants': more than one variant has baseline: true "
                        f"({', '.join(r.name for r in rows if r.baseline)})")
    return rows


def _rows(spec: Spec, path: Path) -> list[Row]:
    variants = _variants(spec, path) or [Row("baseline", {}, True)]
    axes = _axis_rows(spec, path)
    rows = []
    for v, a in itertools.product(variants, axes):
        clash = set(v.overrides) & set(a)
        if clash:
            raise SpecError(f"{path}: key {sorted(clash)[0]!r} is set by both a variant and grid/zip")
        label = ", ".join(f"{k}={format_value(val)}" for k, val in a.items())
        name = v.name if not label else (label if not spec.variants else f"{v.name} | {label}")
        rows.append(Row(name, {**v.overrides, **a}, v.baseline and a == axes[0]))
    return rows


def _check_space(spec: Spec, path: Path, algorithm: str) -> None:
    if spec.space and algorithm == "grid":
        raise SpecError(f"{path}: key 'space': sampled axes need search.algorithm random or optuna, not grid")
    for key, sampler in spec.space.items():
        if not isinstance(sampler, dict) or len(sampler) != 1 or next(iter(sampler)) not in SAMPLERS:
            raise SpecError(f"{path}: key 'space.{key}': expected one of {{{', '.join(SAMPLERS)}: ...}}")
        kind, args = next(iter(sampler.items()))
        if kind == "choice":
            if not isinstance(args, list) or not args:
                raise SpecError(f"{path}: key 'space.{key}.choice': expected a non-empty list")
            continue
        n = 3 if kind == "quniform" else 2
        if not isinstance(args, list) or len(args) != n or not all(isinstance(a, (int, float)) for a in args):
            raise SpecError(f"{path}: key 'space.{key}.{kind}': expected [low, high{', q' if n == 3 else ''}]")
        if args[0] >= args[1] or (kind == "loguniform" and args[0] <= 0):
            raise SpecError(f"{path}: key 'space.{key}.{kind}': need 0 < low < high for loguniform, low < high "
                            f"otherwise; got {args}")


def _space_probes(space: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Values to validate: both ends of each range and every choice."""
    probes = []
    for key, sampler in space.items():
        kind, args = next(iter(sampler.items()))
        values = args if kind == "choice" else [args[0], args[1] - 1 if kind == "randint" else args[1]]
        probes += [{key: v} for v in values]
    return probes or [{}]


def _absolute_model(values: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(values.get("model"), str):
        return values
    from mtl.config import absolute_model_reference

    return {**values, "model": absolute_model_reference(values["model"])}


def _validate_configs(exp: Experiment) -> None:
    for row, seed, probe in itertools.product(exp.rows, exp.seeds, _space_probes(exp.space)):
        try:
            TrialConfig.from_dict({**exp.defaults, **row.overrides, **probe, "seed": seed},
                                  source=f"{exp.path} (row {row.name!r})")
        except ConfigError as e:
            raise SpecError(str(e)) from None
    check_grace_period(exp)


def check_grace_period(exp: Experiment) -> None:
    epochs = min(TrialConfig.from_dict({**exp.defaults, **r.overrides}).epochs for r in exp.rows)
    if exp.scheduler != "none" and exp.spec.scheduler.grace_period > epochs:
        raise SpecError(f"{exp.path}: key 'scheduler.grace_period': {exp.spec.scheduler.grace_period} is more than "
                        f"the {epochs} epochs of the shortest trial")


def _check_report(spec: Spec, path: Path, rows: list[Row]) -> None:
    names = {r.name for r in rows}
    rb = spec.report
    for i, name in enumerate(rb.order or []):
        if name not in names:
            raise SpecError(f"{path}: key 'report.order[{i}]': no row named {name!r}; rows: {sorted(names)}")
    if rb.baseline is not None and rb.baseline not in names:
        raise SpecError(f"{path}: key 'report.baseline': no row named {rb.baseline!r}; rows: {sorted(names)}")
    for i, col in enumerate(rb.columns or []):
        if col not in REPORT_COLUMNS and not col.startswith("iou_"):
            raise SpecError(f"{path}: key 'report.columns[{i}]': unknown column {col!r}; allowed: "
                            f"{', '.join(REPORT_COLUMNS)}, iou_<class>")


def load_experiment(path: str | Path) -> Experiment:
    """Parse, merge and validate a spec file; every error is a SpecError naming file and key."""
    path, spec = parse_spec(path)
    for block in ("fixed", "grid", "zip", "space"):
        check_trial_keys(path, block, getattr(spec, block))
    for key in ("seed",):
        if key in spec.grid or key in spec.zip or key in spec.space or any(key in v for v in spec.variants):
            raise SpecError(f"{path}: key 'seed' cannot be an axis: use 'seeds' to replicate trials")
    for a, b in (("grid", "zip"), ("grid", "space"), ("zip", "space")):
        clash = set(getattr(spec, a)) & set(getattr(spec, b))
        if clash:
            raise SpecError(f"{path}: key {sorted(clash)[0]!r} is set by both '{a}' and '{b}'")
    algorithm = spec.search.algorithm or ("random" if spec.space else "grid")
    _check_space(spec, path, algorithm)
    if algorithm == "grid" and spec.search.num_samples > 1:
        raise SpecError(f"{path}: key 'search.num_samples': only random and optuna sample; use 'seeds' to replicate")
    rows = _rows(spec, path)
    if any(key in spec.space for r in rows for key in r.overrides):
        raise SpecError(f"{path}: a key is set by both a variant and 'space'")
    _check_report(spec, path, rows)
    ablated = tuple(dict.fromkeys([k for r in rows for k in r.overrides] + list(spec.space)))
    exp = Experiment(name=spec.name or path.stem, path=str(path), spec=spec, rows=tuple(rows), seeds=(0,),
                     ablated=ablated, metric=spec.metric, mode=metric_mode(spec, path), algorithm=algorithm,
                     scheduler=spec.scheduler.type or ("asha" if spec.space else "none"),
                     defaults=dict(spec.fixed))
    check_objectives(spec.objectives, path)
    exp = with_seeds(exp, spec.seeds, f"{path}: key 'seeds'")
    check_objectives_fit(exp, str(path))
    _validate_configs(exp)
    return exp
