"""Is ASHA worth its name? A full grid against the same grid under ASHA (per trial) and seed-aware ASHA.

The study pairs experiments of one spec and `--set`: the one without a scheduler is the grid; each ASHA run is
scored on the trial-epochs it spent (against the grid's on the same seeds), the row it picks (best mean over
its completed trials), that row's rank in the grid's own table, and whether it is within noise of the grid's
best row (paired t-test on the grid's seeds, p >= 0.05). Goal: the grid's best row, or one within noise of it,
for at most 35 % of the grid's trial-epochs.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from core.saved import SavedExperiment
from stats.inference import ALPHA, compare

GOAL = 0.35


def _key(exp: SavedExperiment) -> tuple:
    rec = exp.record
    return (rec.spec_path or "").rsplit("/", 1)[-1], tuple(sorted(rec.set.items()))


def _row_means(frame: pd.DataFrame, metric: str, mode: str) -> pd.Series:
    done = frame[frame["status"] == "completed"]
    means = done.groupby("variant")[metric].mean().dropna()
    return means.sort_values(ascending=mode == "min")


def _scheduler_label(exp: SavedExperiment) -> str:
    sched = exp.record.spec.get("scheduler") or {}
    if exp.record.scheduler != "asha":
        return exp.record.scheduler or "none"
    label = "seed-aware ASHA" if sched.get("seed_aware", True) and len(exp.record.seeds) > 1 else "ASHA"
    ranked = exp.record.scheduler_metric or exp.record.metric  # records before it ranked on the metric
    return f"{label} (grace {sched.get('grace_period')}, η={sched.get('reduction_factor'):g}, on {ranked})"


def asha_study(experiments: list[SavedExperiment]) -> pd.DataFrame | None:
    """One row per run (the grid first) of the first spec that has both a grid and an ASHA run; else None."""
    groups: dict[tuple, list[SavedExperiment]] = {}
    for exp in experiments:
        groups.setdefault(_key(exp), []).append(exp)
    for runs in groups.values():
        grids = [e for e in runs if e.record.scheduler == "none" and not e.record.spec.get("space")]
        ashas = sorted((e for e in runs if e.record.scheduler == "asha"), key=lambda e: e.name)
        if grids and ashas:
            return _study(grids[0], ashas)
    return None


def _study(grid: SavedExperiment, ashas: list[SavedExperiment]) -> pd.DataFrame:
    metric, mode = grid.record.metric, grid.record.mode
    seeds = sorted(set().union(*(set(a.record.seeds) for a in ashas)))
    gframe = grid.frame[grid.frame["seed"].isin(seeds)]  # the grid on the ASHA runs' seeds
    gmeans = _row_means(gframe, metric, mode)
    best = gmeans.index[0]
    grid_epochs = float(gframe["epochs_run"].sum())
    rows = []
    for exp in [grid, *ashas]:
        frame = gframe if exp is grid else exp.frame
        picked = _row_means(frame, metric, mode).index[0]
        done = gframe[gframe["status"] == "completed"]
        series = {v: pd.Series(done.loc[done["variant"] == v, metric].to_numpy(),
                               index=done.loc[done["variant"] == v, "seed"].to_numpy()) for v in (picked, best)}
        p = 1.0 if picked == best else compare(series[picked], series[best], power=False)["p_value"]
        epochs = float(frame["epochs_run"].sum())
        rows.append({"run": exp.name, "scheduler": _scheduler_label(exp), "trials": len(frame), "seeds": len(seeds),
                     "trial_epochs": epochs, "share_of_grid": epochs / grid_epochs, "picked": picked,
                     "grid_rank": int(list(gmeans.index).index(picked)) + 1 if picked in gmeans.index else math.nan,
                     "grid_mean": float(gmeans.get(picked, math.nan)), "p_vs_grid_best": p,
                     "within_noise": bool(np.isfinite(p) and p >= ALPHA),
                     "stopped_early": int(frame["status"].astype(str).str.startswith("stopped early").sum()),
                     "wall_min": (exp.record.wall_s or math.nan) / 60,
                     "wall_seeds": len(exp.record.seeds)})
    return pd.DataFrame(rows)


def study_markdown(study: pd.DataFrame) -> str:
    table = pd.DataFrame({
        "Run": study["run"], "Scheduler": study["scheduler"], "Trials": study["trials"],
        "Stopped early": study["stopped_early"], "Trial-epochs": study["trial_epochs"].map("{:.0f}".format),
        "% of grid": study["share_of_grid"].map("{:.0%}".format), "Row picked": study["picked"],
        "Rank in grid": study["grid_rank"], "Grid mean of that row": study["grid_mean"].map("{:.2f}".format),
        "p vs grid's best (paired)": study["p_vs_grid_best"].map(lambda p: "same row" if p == 1.0 else f"{p:.2g}"),
        "Wall (min)": [f"{m:.1f} ({n} seeds)" if np.isfinite(m) else "—"
                       for m, n in zip(study["wall_min"], study["wall_seeds"], strict=True)]})
    goal = [f"- {r['run']}: {'meets' if r['within_noise'] and r['share_of_grid'] <= GOAL else 'misses'} the goal "
            f"(the grid's best row or one within noise, at ≤ {GOAL:.0%} of the grid's trial-epochs): "
            f"{r['share_of_grid']:.0%}, rank {r['grid_rank']}, "
            f"{'within noise' if r['within_noise'] else 'resolved worse'}."
            for _, r in study.iloc[1:].iterrows()]
    return (f"Grid: {study['run'].iloc[0]} with {int(study['seeds'].iloc[0])} seeds (its trial-epochs counted on the "
            f"ASHA runs' seeds).\n\n{table.to_markdown(index=False)}\n\n" + "\n".join(goal))
