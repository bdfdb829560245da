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
