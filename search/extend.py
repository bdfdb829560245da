"""`--extend EXPERIMENT` and `--budget`: checked before Ray starts, like every flag.

Extension adds seeds to an experiment that already ran, without rerunning any of its trials: it needs only the
per-trial results (`results.parquet` and `mtl_experiment.json`, what docs/findings/<exp>/ keeps), so it works on
a machine that has none of the original experiment's folders. The new trials are paired with the old ones by
seed; the design (rows, profile, fixed keys, `--set`, metric) must be the one the old trials ran, or the pairs
would compare different things.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from core.record import ExperimentRecord
from core.saved import SavedExperiment, read_saved
from core.storage import Storage, split_experiment_uri
from search.record import experiment_record
from search.runconfig import RunConfig
from search.spec import SeedsBlock, SpecError
from search.trials import Experiment

SAME_DESIGN = ("profile", "defaults", "set", "rows", "metric")
def check_extend(exp: Experiment, run: RunConfig, storage: Storage) -> SavedExperiment | None:
    """The experiment `--extend` adds seeds to: it must exist and have run this design (the flags themselves were
    checked as the run configuration resolved)."""
    if not run.extend or run.resume:
        return None  # on --resume the extended trials were saved with the experiment when it started
    try:
        old = read_saved(run.extend)
    except (OSError, ValueError) as e:
        raise SpecError(f"--extend {run.extend}: {e}") from None
    src_storage, src_name = split_experiment_uri(run.extend)
    if src_storage.display(src_storage.experiment(src_name)) == storage.display(storage.experiment(exp.name)):
        raise SpecError(f"--extend {run.extend}: the extension is a new experiment: write it elsewhere (--storage "
                        "or --name)")
    before, now = old.record.model_dump(mode="json"), experiment_record(exp).model_dump(mode="json")
    changed = [k for k in SAME_DESIGN if before[k] != now[k]]
    if changed:
        detail = "; ".join(f"{k}: {json.dumps(before[k], default=str)[:70]} -> "
                           f"{json.dumps(now[k], default=str)[:70]}" for k in changed)
        raise SpecError(f"--extend {run.extend}: it ran another design, so its seeds cannot pair with new ones "
                        f"({detail}). Use the command it ran (`{old.command()}`) with the adaptive flags")
    changed = design_changes(old.record, exp)
    if changed:
        raise SpecError(f"--extend {run.extend}: the extension must continue the design the experiment ran, or its "
                        f"error rate is no longer the design's; changed: {'; '.join(changed)}")
    return old


def design_changes(old: ExperimentRecord, exp: Experiment) -> list[str]:
    """What differs between the sequential design `old` ran and the one extending it. A finished 3..8 design
    extended to 3..13 looks again at data it already judged (the error grows by half); a margin added after the
    results is chosen on them. A fixed-seed experiment is the first look of the new design: its seed count must be
    the design's `first`."""
    new = exp.adaptive
    out = []
    if old.adaptive is None:
        if new is not None and new.first != len(old.seeds):
            out.append(f"first: its {len(old.seeds)} fixed seeds are the design's first look -> first={new.first}")
        if new is not None and new.max != SeedsBlock().max:  # the max, too, is fixed before the first look
            out.append(f"max: a fixed-seed experiment is the first look of the default design (max "
                       f"{SeedsBlock().max}), declared before its data; max={new.max} chosen after it could be "
                       "picked to fit them")
        if new is not None and old.seeds and list(exp.seeds[:len(old.seeds)]) != list(old.seeds):
            out.append(f"start: its seeds {old.seeds} are the design's first look -> seeds from {exp.seeds[0]}")
    elif new is not None:
        out += [f"{key}: {old.adaptive.get(key, 0 if key == 'start' else None)} -> {getattr(new, key)}"
                for key in ("first", "max", "family", "start")
                if old.adaptive.get(key, 0 if key == "start" else None) != getattr(new, key)]
    margin_old = (old.spec.get("report") or {}).get("equivalence_margin")
    margin_new = exp.spec.report.equivalence_margin
    if (margin_old or None) != (margin_new or None):
        out.append(f"report.equivalence_margin: {margin_old} -> {margin_new} (a margin is declared before the "
                   "results it judges)")
    return out


def prior_cells(frame: pd.DataFrame, exp: Experiment) -> dict[tuple[str, int], float]:
    """(row, seed) -> final metric of the extended trials on the design's seeds (NaN: it ran but did not
    complete, so its seed is used up, as it would have been in the original run)."""
    out = {}
    for r in frame.to_dict("records"):
        if r["variant"] in {row.name for row in exp.rows} and int(r["seed"]) in exp.seeds:
            value = pd.to_numeric(r.get(exp.metric), errors="coerce")
            out[(r["variant"], int(r["seed"]))] = float(value) if r["status"] == "completed" else math.nan
    return out
