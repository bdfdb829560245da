"""Δm: a multi-task model's mean relative change against single-task baselines, in percent.

    Δm = 100 / T · Σ_t (−1)^{l_t} · (M_mt,t − M_st,t) / M_st,t,   l_t = 1 when lower is better for task t

as defined by Maninis et al. 2019 ("Attentive Single-Tasking of Multiple Tasks", CVPR) and used in the survey of
Vandenhende et al. 2021 ("Multi-Task Learning for Dense Prediction Tasks: A Survey", TPAMI), MTAN, Nash-MTL and
LibMTL. Positive Δm: the multi-task model beats its single-task baselines on average. Our tasks and metrics
(mtl.tasks.DELTA_M_METRICS): semseg by mIoU (higher is better), depth by SI-logRMSE (lower is better), surface
normals by the mean and median angle (lower) and the shares within 11.25, 22.5 and 30 degrees (higher), averaged
within the task first and then over the tasks, as LibMTL does (a task with one metric counts it alone).

Single-task rows are trials whose config trains one task (`tasks: [semseg]`, `[depth]` or `[normals]`, the other
heads dropped). A multi-task row's Δm covers the tasks it trains (two, three); it needs a single-task row of each.
They come from the experiment itself or from a reference experiment (`report: {single_task: DIR}`). Δm is
computed per seed - paired with the single-task trial of the same seed when there is one, else against the
single-task mean - and summarised over seeds with a 95 % t-interval.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.tables import summarize
from mtl.tasks import COURSE_TASKS, DELTA_M_METRICS, HEADLINE, TASKS, lower_is_better

# task -> (its headline metric, lower is better): what stands for the task in tables
TASK_METRICS = {t: (HEADLINE[t], lower_is_better(HEADLINE[t])) for t in TASKS}
BOTH = COURSE_TASKS
# how a model is trained and at what scale: a single-task baseline that differs in any of these is no baseline
SETUP_KEYS = ("encoder", "pretrained", "optimizer", "lr", "weight_decay", "lr_schedule", "batch_size", "epochs",
              "image_size", "crop_size", "train_images", "val_images", "decoder_channels", "dilation", "aspp", "skip",
              "depth_unit", "depth_loss", "data")


def setup_mismatch(mine: pd.DataFrame, reference: pd.DataFrame) -> str:
    """The training-setup keys on which a multi-task row's trials and the single-task trials differ ('' if none)."""
    out = []
    for key in SETUP_KEYS:
        col = f"config/{key}"
        if col in mine and col in reference:
            a, b = sorted(set(mine[col].astype(str))), sorted(set(reference[col].astype(str)))
            if a != b:
                out.append(f"{key} {'/'.join(a)} vs {'/'.join(b)}")
    return ", ".join(out)


def _single_task_trials(frame: pd.DataFrame, reference: dict[str, tuple[str, pd.Series]]) -> pd.DataFrame:
    return frame[frame["variant"].isin([variant for variant, _ in reference.values()])]


def trial_tasks(frame: pd.DataFrame) -> pd.Series:
    """The tasks each trial trained, as a tuple (both when the column predates single-task models)."""
    if "config/tasks" not in frame:
        return pd.Series([BOTH] * len(frame), index=frame.index, dtype=object)
    def parse(v) -> tuple[str, ...]:  # "[semseg, depth]" (parquet keeps lists as text) or a list
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return BOTH
        names = [n.strip(" '\"") for n in v.strip("[]()").split(",")] if isinstance(v, str) else list(v)
        return tuple(t for t in TASKS if t in names)

    return frame["config/tasks"].map(parse)


def single_task_reference(frame: pd.DataFrame) -> dict[str, tuple[str, pd.DataFrame]]:
    """task -> (variant, its Δm metrics per seed: a frame indexed by seed) from the completed single-task trials; the
    first such variant of a task wins."""
    tasks = trial_tasks(frame)
    done = frame[frame["status"] == "completed"]
    out = {}
    for task in TASKS:
        metrics = list(DELTA_M_METRICS[task])
        mine = done[tasks.loc[done.index] == (task,)]
        if mine.empty or not set(metrics) <= set(mine):
            continue
        variant = str(mine["variant"].iloc[0])
        rows = mine[mine["variant"] == variant]
        values = rows[metrics].apply(pd.to_numeric, errors="coerce").set_axis(rows["seed"].to_numpy())
        out[task] = (variant, values.dropna())
    return out


def _relative(trial: pd.Series, task: str, reference: dict[str, tuple[str, pd.DataFrame]]) -> tuple[float, bool]:
    """The task's mean relative change of the trial against its single-task twin (same seed) or, without one, the
    single-task mean; and whether it was paired."""
    st = reference[task][1]
    paired = trial["seed"] in st.index
    base = st.loc[trial["seed"]] if paired else st.mean()
    terms = [(-1.0 if lower_is_better(m) else 1.0) * (float(trial[m]) - float(base[m])) / float(base[m])
             for m in DELTA_M_METRICS[task]]
    return float(np.mean(terms)), paired


def delta_m(frame: pd.DataFrame, reference: dict[str, tuple[str, pd.DataFrame]],
            reference_frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per multi-task variant whose every task has a single-task reference: Δm % (mean, std, n, 95 % CI
    over seeds) and whether seeds were paired. A row whose training setup differs from the single-task trials'
    (another encoder, scale, lr...; `reference_frame` holds them, default `frame`) is refused: `refused` says why."""
    empty = pd.DataFrame(columns=["variant", "mean", "std", "n", "ci_low", "ci_high", "paired", "refused"])
    tasks = trial_tasks(frame)
    done = frame[(frame["status"] == "completed") & (tasks.map(len) > 1)
                 & tasks.map(lambda ts: set(ts) <= set(reference))]
    if done.empty:
        return empty
    singles = _single_task_trials(frame if reference_frame is None else reference_frame, reference)
    records = []
    for variant, trials in done.groupby("variant", sort=False):
        refused = setup_mismatch(trials, singles)
        if refused:
            records.append({"variant": variant, **summarize([]), "paired": False, "refused": refused})
            continue
        per_seed, paired = [], True
        for index, trial in trials.iterrows():
            terms = [_relative(trial, task, reference) for task in tasks.loc[index]]
            paired &= all(p for _, p in terms)
            per_seed.append(100.0 * float(np.mean([t for t, _ in terms])))
        records.append({"variant": variant, **summarize(per_seed), "paired": paired, "refused": ""})
    return pd.DataFrame(records)


def missing_tasks(frame: pd.DataFrame, reference: dict) -> list[str]:
    """The tasks of the frame's multi-task rows that have no single-task reference."""
    tasks = trial_tasks(frame)
    wanted = {t for ts in tasks[tasks.map(len) > 1] for t in ts}
    return [t for t in TASKS if t in wanted and t not in reference]


def delta_m_text(row: pd.Series) -> str:
    """`+3.1 [+1.2, +5.0]` (or the mean alone with one seed)."""
    if isinstance(row.get("refused"), str) and row["refused"]:
        return f"— (refused: the single-task baselines differ: {row['refused']})"
    if not row["n"]:
        return "—"
    if row["n"] < 2 or not np.isfinite(row["ci_low"]):
        return f"{row['mean']:+.2f} (n=1)"
    return f"{row['mean']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"


def delta_m_note(reference: dict[str, tuple[str, pd.Series]], source: str, dm: pd.DataFrame) -> str:
    """The footnote under a table with a Δm column."""
    names = ", ".join(f"{task}: '{variant}' (n={len(values)})" for task, (variant, values) in reference.items())
    pairing = "paired by seed" if not dm.empty and bool(dm["paired"].all()) else \
        "against the single-task mean where a seed has no single-task twin"
    normals = ("; normals: − for the mean and median angle, + for the shares within 11.25°, 22.5° and 30°, averaged "
               "within the task first (LibMTL)") if "normals" in reference else ""
    return (f"Δm % = mean over tasks of ±(M_mt − M_st) / M_st × 100 (+ for mIoU, − for SI-logRMSE{normals}; Maninis "
            f"et al. 2019, Vandenhende et al. 2021), single-task baselines from {source} ({names}), {pairing}; "
            "mean [95 % CI over seeds]. Positive: better than training each task alone.")
