"""One resolved run configuration: the command line and the spec merged once into a frozen object, printed at
start, saved in the experiment record, passed whole to the driver (nothing reads the argparse Namespace after it).

Resources, concurrency and the budget are resolved here and nowhere else. On `--resume` every option either
applies to this driver run (and is recorded with it) or is fixed when the experiment started, because Tune
restores it from its own saved state (`Tuner.restore` takes the tune configuration - searcher, concurrency limit -
from the experiment, and only the trainable, with its resources and W&B, anew): given with another value on
`--resume`, such an option is refused before Ray starts, naming it and why.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field
from typing import Any

from search.spec import SpecError
from search.trials import Experiment

BUDGET_UNITS = ("trials", "hours")
WANDB_MODES = ("off", "offline", "online")

# fixed when the experiment starts: Tune restores them with the experiment (flag, what restores it)
FIXED_AT_START = {
    "max_concurrent": ("--max-concurrent", "Tune restores the experiment's concurrency limit"),
    "budget": ("--budget", "the adaptive-seeds searcher restores its budget with its state"),
    "extend": ("--extend", "the extended experiment's trials were saved with the experiment when it started"),
}


def parse_budget(text: str | None) -> dict[str, float]:
    """`--budget trials=40` or `--budget hours=2.5` (trial-hours), or both comma-separated."""
    out: dict[str, float] = {}
    for part in [p.strip() for p in (text or "").split(",") if p.strip()]:
        key, sep, value = part.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or key.strip() not in BUDGET_UNITS or not number > 0:
            raise SpecError(f"--budget: expected trials=N and/or hours=H with positive numbers; got {part!r}")
        out[key.strip()] = number
    return out


@dataclass(frozen=True)
class RunConfig:
    """How this driver run runs the experiment (what it runs is the `Experiment`)."""

    storage: str
    resume: bool = False
    address: str | None = None
    storage_shared: bool = False
    cpus_per_trial: float = 1.0  # --cpus-per-trial, else the spec's resources.cpus
    gpus_per_trial: float | None = None  # --gpus-per-trial, else the spec's; None: 1 on a cluster with GPUs, else 0
    max_concurrent: int | None = None  # --max-concurrent, else the spec's search.max_concurrent; None: as many fit
    budget: dict[str, float] = field(default_factory=dict)  # --budget, parsed
    wandb: str = "off"
    dashboard: bool = True
    report: bool = True
    probe_steps: int = 2
    extend: str | None = None
    argv: tuple[str, ...] = ()
    given: frozenset[str] = frozenset()  # the options given on the command line (a resume checks only those)

    def concurrency(self, slots: int, trials: int) -> int:
        """Trials running at once: the asked-for limit, within the slots the resources leave and the trial count."""
        return max(min(self.max_concurrent or slots, slots, trials), 1)

    def gpus(self, cluster_gpus: float) -> float:
        """GPUs a trial reserves, once the cluster's are known."""
        if self.gpus_per_trial is not None:
            return self.gpus_per_trial
        return 1.0 if cluster_gpus > 0 else 0.0

    def recorded(self) -> dict[str, Any]:
        """What the experiment record keeps of this run (the command line itself is kept as `argv`)."""
        keep = ("resume", "address", "storage_shared", "cpus_per_trial", "gpus_per_trial", "max_concurrent", "budget",
                "wandb", "report", "extend")
        return {k: getattr(self, k) for k in keep}

    def describe(self) -> str:
        """The line printed at start."""
        gpus = "auto" if self.gpus_per_trial is None else f"{self.gpus_per_trial:g}"
        parts = [f"cpus/trial {self.cpus_per_trial:g}", f"gpus/trial {gpus}",
                 f"max concurrent {self.max_concurrent or 'as many as fit'}", f"wandb {self.wandb}"]
        if self.budget:
            parts.append("budget " + ",".join(f"{k}={v:g}" for k, v in self.budget.items()))
        if self.extend:
            parts.append(f"extends {self.extend}")
        if self.address:
            parts.append(f"cluster {self.address}")
        return "run: " + "; ".join(parts) + ("; resuming" if self.resume else "")

    def resume_conflicts(self, started: dict[str, Any] | None) -> list[str]:
        """Options given on `--resume` that differ from how the experiment started and cannot change (see
        FIXED_AT_START), each with why. `started`: the record's first run (None: recorded before runs were)."""
        if not self.resume or started is None:
            return []
        out = []
        for key, (flag, why) in FIXED_AT_START.items():
            if key in self.given and getattr(self, key) != started.get(key):
                out.append(f"{flag} {_show(getattr(self, key))}: this experiment started with "
                           f"{_show(started.get(key))}, and {why}; resume without {flag} (or with the same value), "
                           "or start a new experiment with --name")
        return out


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={v:g}" for k, v in value.items()) or "none"
    return "none" if value is None else str(value)


def resolve(args: argparse.Namespace, exp: Experiment, argv: list[str]) -> RunConfig:
    """The run configuration of `args` (as parsed) and the spec of `exp`, checked: bad values raise SpecError."""
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise SpecError(f"--max-concurrent must be >= 1, got {args.max_concurrent}")
    if args.cpus_per_trial is not None and args.cpus_per_trial <= 0:
        raise SpecError(f"--cpus-per-trial must be > 0, got {args.cpus_per_trial:g}")
    if args.gpus_per_trial is not None and args.gpus_per_trial < 0:
        raise SpecError(f"--gpus-per-trial must be >= 0, got {args.gpus_per_trial:g}")
    budget = parse_budget(args.budget)
    for flag, value in (("--budget", args.budget), ("--extend", args.extend)):
        if value and exp.adaptive is None:
            raise SpecError(f"{flag}: needs adaptive seeds (--seeds first=N,max=M, or a spec `seeds: {{first, max}}`)")
    if args.extend and exp.spec.report.frontier is not None:
        raise SpecError("--extend: a frontier study tunes before it compares, so an earlier run's trials cannot enter "
                        "its design; run the study again (or --resume it)")
    given = frozenset(k for k in ("max_concurrent", "budget", "wandb", "extend", "cpus_per_trial", "gpus_per_trial")
                      if getattr(args, k) is not None)
    return RunConfig(
        storage=args.storage, resume=args.resume, address=args.address, storage_shared=args.storage_shared,
        cpus_per_trial=args.cpus_per_trial or exp.spec.resources.cpus,
        gpus_per_trial=args.gpus_per_trial if args.gpus_per_trial is not None else exp.spec.resources.gpus,
        max_concurrent=args.max_concurrent or exp.spec.search.max_concurrent, budget=budget,
        wandb=args.wandb or "off", dashboard=args.dashboard, report=args.report, probe_steps=max(args.probe_steps, 1),
        extend=args.extend, argv=tuple(argv), given=given)


def local_slots(run: RunConfig) -> int:
    """Trials that fit this machine at once (a local Ray)."""
    return max(int((os.cpu_count() or 1) // run.cpus_per_trial), 1)

