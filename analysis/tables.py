"""Ablation tables: one row per variant, statistics over seeds, honest about noise and failures.

Per metric: mean, std, n and a 95 % confidence interval from the t-distribution over the seeds
that completed. With >= 2 seeds on both sides, the difference to the baseline row gets a Welch
t-test; p >= 0.05 is marked as within noise. Diverged, errored and stopped-early trials are listed
in the status column and never averaged in.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
from scipy import stats
from tabulate import tabulate

DEFAULT_COLUMNS = ("multitask", "semseg_miou", "depth_silog", "parameters", "peak_memory_mb", "train_time_s")
LABELS = {"multitask": "Multitask", "semseg_miou": "mIoU", "depth_silog": "SI-logRMSE", "depth_abs_rel": "AbsRel",
          "depth_rmse": "RMSE (m)", "depth_delta1": "δ<1.25 (%)", "parameters": "Params (M)",
          "peak_memory_mb": "Peak mem (MiB)", "train_time_s": "Train time (min)", "train_img_per_s": "img/s",
          "epochs_run": "Epochs", "cost": "Cost ($)"}
LOWER_IS_BETTER = {"depth_silog", "depth_abs_rel", "depth_rmse", "parameters", "peak_memory_mb", "train_time_s",
                   "cost"}
TESTED = {"multitask", "semseg_miou", "depth_silog", "depth_abs_rel", "depth_rmse", "depth_delta1"}  # get a Δ
SCALE = {"parameters": 1e-6, "train_time_s": 1 / 60}
ALPHA = 0.05


def summarize(values) -> dict[str, float]:
    """mean, std (ddof 1), n and the 95 % t-interval of the mean."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0, "ci_low": math.nan, "ci_high": math.nan}
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "std": math.nan, "n": 1, "ci_low": math.nan, "ci_high": math.nan}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1) * std / math.sqrt(n))
    return {"mean": mean, "std": std, "n": n, "ci_low": mean - half, "ci_high": mean + half}


def welch(a, b) -> float:
    """Two-sided p-value of Welch's t-test; nan with fewer than 2 values on a side. Without any variance
    the test is undefined: equal constants count as no difference (1), different ones as certain (0)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if a.std() == 0 and b.std() == 0:
        return 1.0 if a[0] == b[0] else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def status_text(statuses: list[str]) -> str:
    counts = Counter(statuses)
    done = counts.pop("completed", 0)
    parts = [f"{done}/{len(statuses)} completed"] + [f"{n} {s}" for s, n in sorted(counts.items())]
    return "; ".join(parts)


def ablation_stats(frame: pd.DataFrame, rows: list[str], baseline: str, columns=DEFAULT_COLUMNS) -> pd.DataFrame:
    """Long-form statistics: one row per (variant, column), with delta / p-value against the baseline."""
    completed = frame[frame["status"] == "completed"]
    records = []
    for variant in rows:
        trials = frame[frame["variant"] == variant]
        if trials.empty:
            continue
        mine = completed[completed["variant"] == variant]
        for col in columns:
            if col not in frame:
                continue
            values = pd.to_numeric(mine[col], errors="coerce").dropna() * SCALE.get(col, 1.0)
            base = pd.to_numeric(completed[completed["variant"] == baseline][col], errors="coerce").dropna() \
                * SCALE.get(col, 1.0)
            s = summarize(values)
            delta = s["mean"] - float(base.mean()) if len(base) and col in TESTED and variant != baseline else math.nan
            p = welch(values, base) if col in TESTED and variant != baseline else math.nan
            records.append({"variant": variant, "status": status_text(list(trials["status"])), "column": col, **s,
                            "delta": delta, "p_value": p, "within_noise": bool(p >= ALPHA) if np.isfinite(p) else None,
                            "baseline": variant == baseline})
    return pd.DataFrame(records)


def best_mask(stats_df: pd.DataFrame) -> set[tuple[str, str]]:
    """(variant, column) cells holding the best mean of their column."""
    best = set()
    for col, group in stats_df.groupby("column"):
        means = group.dropna(subset=["mean"])
        if means.empty or means["mean"].nunique() < 2:
            continue
        target = means["mean"].min() if col in LOWER_IS_BETTER else means["mean"].max()
        best |= {(v, col) for v in means.loc[means["mean"] == target, "variant"]}
    return best


def _cell(r: pd.Series, digits: int) -> str:
    if not r["n"]:
        return "—"
    text = f"{r['mean']:.{digits}f}"
    if r["n"] >= 2 and r["std"] > 0:  # a constant (e.g. the parameter count) needs no interval
        text += f" ± {r['std']:.{digits}f} [{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}]"
    return text


def _delta(r: pd.Series) -> str:
    if r["baseline"]:
        return "baseline"
    if not np.isfinite(r["delta"]):
        return ""
    sign = f"{r['delta']:+.2f}"
    if r["within_noise"] is None:
        return sign + " (n<2)"
    if r["within_noise"]:
        return sign + " (within noise)"
    return sign + (" (p<0.001)" if r["p_value"] < 0.001 else f" (p={r['p_value']:.3f})")


def display_table(stats_df: pd.DataFrame, bold=lambda s: f"**{s}**") -> pd.DataFrame:
    """Wide, formatted: Variant | n | Status | <metric> | Δ <metric> | ...; best cells through `bold`."""
    best = best_mask(stats_df)
    out = []
    for variant, group in stats_df.groupby("variant", sort=False):
        first = group.iloc[0]
        row = {"Variant": variant + (" (baseline)" if first["baseline"] else ""), "Status": first["status"]}
        for _, r in group.iterrows():
            label = LABELS.get(r["column"], r["column"])
            cell = _cell(r, 2 if r["column"] not in ("peak_memory_mb",) else 0)
            row[label] = bold(cell) if (variant, r["column"]) in best else cell
            if r["column"] in TESTED:
                row[f"Δ {label}"] = _delta(r)
        out.append(row)
    return pd.DataFrame(out)


def wandb_sheet(frame: pd.DataFrame, ablated: list[str]) -> pd.DataFrame:
    """The CSV students hand in: run name, config columns, metrics, a notes column."""
    config_cols = [f"config/{k}" for k in ablated if f"config/{k}" in frame] + \
        sorted(c for c in frame if c.startswith("config/") and c[7:] not in ablated)
    sheet = pd.DataFrame({"Name": frame["variant"] + " s" + frame["seed"].astype(str), "State": frame["status"]})
    for c in config_cols:
        sheet[c[len("config/"):]] = frame[c]
    for m in ("multitask", "semseg_miou", "depth_silog", "depth_abs_rel", "depth_rmse", "depth_delta1", "epochs_run",
              "train_time_s"):
        sheet[m] = frame.get(m)
    sheet["Notes"] = frame["error"].fillna("") if "error" in frame else ""
    return sheet


def compact_table(frame: pd.DataFrame) -> str:
    """The few lines `run_search.py` prints at the end (the report has the real tables)."""
    def num(v):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"

    rows = [[r["variant"], r["seed"], r["status"], num(r.get("multitask")), num(r.get("semseg_miou")),
             num(r.get("depth_silog")), r["epochs_run"]] for _, r in frame.iterrows()]
    return tabulate(rows, headers=["variant", "seed", "status", "multitask", "mIoU", "SI-log", "epochs"])
