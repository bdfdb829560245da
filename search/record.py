"""What a run leaves besides Tune's own files: exit codes and the experiment record (core.record) built from a spec."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from core.record import ExperimentRecord, Row
from mtl.config import TrialConfig
from search.spec import rank_metric
from search.trials import Experiment

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_STORAGE_FULL = 75  # EX_TEMPFAIL: free space, then --resume


def experiment_record(exp: Experiment) -> ExperimentRecord:
    """mtl_experiment.json: what analysis needs besides Tune's own files (core.record's typed model)."""
    return ExperimentRecord(
        name=exp.name, spec_path=exp.path, spec=exp.spec.model_dump(mode="json"), profile=exp.profile,
        defaults=exp.defaults, set=exp.sets, rows=[Row(**dataclasses.asdict(r)) for r in exp.rows],
        seeds=list(exp.seeds), ablated=list(exp.ablated), metric=exp.metric, mode=exp.mode,
        algorithm=exp.algorithm, scheduler=exp.scheduler,
        scheduler_metric=rank_metric(exp.metric, exp.mode, exp.spec.scheduler)[0] if exp.scheduler != "none"
        else None, baseline=exp.baseline.name, trial_count=exp.trial_count(),
        argv=[Path(sys.argv[0]).name, *(sys.argv[1:])], trial_config_fields=list(TrialConfig.model_fields),
        adaptive=exp.adaptive.model_dump() if exp.adaptive is not None else None,
        comparisons=[list(c) for c in exp.comparisons])


DESIGN_KEYS = ("spec", "profile", "defaults", "set", "rows", "seeds", "metric", "mode", "algorithm", "scheduler")


def design_changes(recorded: ExperimentRecord, exp: Experiment) -> list[str]:
    """What differs between the experiment as recorded when it started and the one this command describes: a
    `--resume` under another `--set`, an edited spec or another profile would silently continue another design."""
    old_all, now = recorded.model_dump(mode="json"), experiment_record(exp).model_dump(mode="json")
    out = []
    for key in DESIGN_KEYS:
        old, new = old_all.get(key), now.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            # a spec key the old record lacks came with a later version of mtl-tune: not a change of design
            keys = sorted(k for k in set(old) | set(new) if (key != "spec" or k in old) and old.get(k) != new.get(k))
            out += [f"{key}.{k}: {json.dumps(old.get(k), default=str)} -> {json.dumps(new.get(k), default=str)}"
                    for k in keys]
        else:
            out.append(f"{key}: {json.dumps(old, default=str)[:80]} -> {json.dumps(new, default=str)[:80]}")
    return out
