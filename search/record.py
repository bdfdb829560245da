"""What a run leaves besides Tune's own files: exit codes and `mtl_experiment.json` (no environment, no secrets)."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from mtl.config import TrialConfig
from search.spec import rank_metric
from search.trials import Experiment

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_STORAGE_FULL = 75  # EX_TEMPFAIL: free space, then --resume


def experiment_record(exp: Experiment) -> str:
    """mtl_experiment.json: what analysis needs besides Tune's own files."""
    record = {
        "name": exp.name, "spec_path": exp.path, "spec": exp.spec.model_dump(mode="json"), "profile": exp.profile,
        "defaults": exp.defaults, "set": exp.sets, "rows": [dataclasses.asdict(r) for r in exp.rows],
        "seeds": list(exp.seeds), "ablated": list(exp.ablated), "metric": exp.metric, "mode": exp.mode,
        "algorithm": exp.algorithm, "scheduler": exp.scheduler,
        "scheduler_metric": rank_metric(exp.metric, exp.mode, exp.spec.scheduler)[0] if exp.scheduler != "none"
        else None, "baseline": exp.baseline.name,
        "trial_count": exp.trial_count(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "argv": [Path(sys.argv[0]).name, *(sys.argv[1:])], "trial_config_fields": list(TrialConfig.model_fields),
        "adaptive": exp.adaptive.model_dump() if exp.adaptive is not None else None,
        "comparisons": [list(c) for c in exp.comparisons],
    }
    return json.dumps(record, indent=2, default=str)


def finished_record(record_text: str, wall_s: float, interrupted: bool) -> str:
    """The record again at the end of a run, with its wall time (what docs/findings.md quotes per experiment):
    after `--resume`, the driver runs' times add up (`wall_s_runs` lists them)."""
    record = json.loads(record_text)
    runs = record.get("wall_s_runs") or ([record["wall_s"]] if "wall_s" in record else [])
    runs = [*runs, round(wall_s, 1)]
    record.update(finished=time.strftime("%Y-%m-%d %H:%M:%S"), wall_s=round(sum(runs), 1), wall_s_runs=runs,
                  interrupted=interrupted)
    return json.dumps(record, indent=2, default=str)


def with_estimate(record_text: str, seconds: float | None, how: str) -> str:
    """The dry-run model's estimate of the search's wall time, made as the run starts (the report sets it against
    the measured `wall_s`)."""
    record = json.loads(record_text)
    record.update(estimate_s=None if seconds is None else round(seconds, 1), estimate_how=how)
    return json.dumps(record, indent=2, default=str)


DESIGN_KEYS = ("spec", "profile", "defaults", "set", "rows", "seeds", "metric", "mode", "algorithm", "scheduler")


def design_changes(recorded: dict, exp: Experiment) -> list[str]:
    """What differs between the experiment as recorded when it started and the one this command describes: a
    `--resume` under another `--set`, an edited spec or another profile would silently continue another design."""
    now = json.loads(experiment_record(exp))
    out = []
    for key in DESIGN_KEYS:
        old, new = recorded.get(key), now.get(key)
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
