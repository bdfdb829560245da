"""Ablation tables: one row per variant, statistics over seeds, honest about noise and failures.

Per metric: mean, std, n and a 95 % confidence interval from the t-distribution over the seeds
that completed. The difference to the baseline row gets a paired t-test when every seed pairs up
and Welch's t-test otherwise (`stats.inference`), Holm–Bonferroni across the table's variants; an
adjusted p >= 0.05 is marked as within noise, with the seeds that would give 80 % power. Diverged,
errored and stopped-early trials are listed in the status column and never averaged in.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
from scipy import stats
from tabulate import tabulate

from core.record import ExperimentRecord
from stats.inference import compare, holm, seeds_needed
from stats.planning import seeds_for_power
from stats.sequential import pair_test

DEFAULT_COLUMNS = ("multitask", "semseg_miou", "depth_silog", "parameters", "peak_memory_mb", "train_time_s")
LABELS = {"multitask": "Multitask", "semseg_miou": "mIoU", "depth_silog": "SI-logRMSE", "depth_abs_rel": "AbsRel",
          "depth_rmse": "RMSE (m)", "depth_delta1": "δ<1.25 (%)", "parameters": "Params (M)",
          "peak_memory_mb": "Peak mem (MiB)", "train_time_s": "Train time (min)", "train_img_per_s": "img/s",
          "epochs_run": "Epochs", "cost": "Cost ($)", "normals_mean": "Normals mean (°)",
          "normals_median": "Normals median (°)", "normals_11": "<11.25° (%)", "normals_22": "<22.5° (%)",
          "normals_30": "<30° (%)"}
LOWER_IS_BETTER = {"depth_silog", "depth_abs_rel", "depth_rmse", "parameters", "peak_memory_mb", "train_time_s",
                   "cost", "normals_mean", "normals_median"}
TESTED = {"multitask", "semseg_miou", "depth_silog", "depth_abs_rel", "depth_rmse", "depth_delta1", "normals_mean",
          "normals_median", "normals_11", "normals_22", "normals_30"}  # get a Δ
NORMALS_COLUMNS = ("normals_mean", "normals_median", "normals_11")  # added after SI-log where trials learn normals
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


def status_text(statuses: list[str], errors: list | None = None) -> str:
    """"2/3 completed; 1 error (out of memory: ...)": counts per status, with the distinct error reasons."""
    counts = Counter(statuses)
    done = counts.pop("completed", 0)
    parts = [f"{done}/{len(statuses)} completed"] + [f"{n} {s}" for s, n in sorted(counts.items())]
    reasons = sorted({str(e)[:80] for s, e in zip(statuses, errors or [], strict=False) if s == "error" and e
                      and not (isinstance(e, float) and math.isnan(e))})
    if reasons:
        parts = [p + f" ({'; '.join(reasons)})" if p.endswith(" error") else p for p in parts]
    return "; ".join(parts)


def _values(trials: pd.DataFrame, col: str) -> pd.Series:
    """A column's finite values indexed by seed, scaled for display."""
    values = pd.to_numeric(trials[col], errors="coerce") * SCALE.get(col, 1.0)
    return pd.Series(values.to_numpy(), index=trials["seed"].to_numpy()).dropna()


def ablation_stats(frame: pd.DataFrame, rows: list[str], baseline: str, columns=DEFAULT_COLUMNS,
                   design: dict | None = None, margins: dict[str, float] | None = None) -> pd.DataFrame:
    """Long-form statistics: one row per (variant, column), with Δ, its CI, the test, raw and Holm-adjusted p
    and the seeds needed against the baseline. `design`: the record's adaptive seeds {first, max}: their seeds
    were added by looking at results, so every Δ gets the group-sequential test (repeated p and CI). `margins`:
    the spec's equivalence margins per metric: a Δ within noise can then be shown equivalent (TOST, Holm-adjusted
    across the table's variants like the Δ tests)."""
    completed = frame[frame["status"] == "completed"]
    base_trials = completed[completed["variant"] == baseline]
    records = []
    for variant in rows:
        trials = frame[frame["variant"] == variant]
        if trials.empty:
            continue
        mine = completed[completed["variant"] == variant]
        for col in columns:
            if col not in frame:
                continue
            values = _values(mine, col)
            errors = list(trials["error"]) if "error" in trials else None
            record = {"variant": variant, "status": status_text(list(trials["status"]), errors), "column": col,
                      **summarize(values), "baseline": variant == baseline}
            margin = (margins or {}).get(col)
            if col in TESTED and variant != baseline:
                record.update(pair_test(values, _values(base_trials, col), design, margin) if design or margin else
                              compare(values, _values(base_trials, col)))
                record["margin"] = margin
            records.append(record)
    out = pd.DataFrame(records)
    for col in ("test", "delta", "delta_ci_low", "delta_ci_high", "p_value", "seeds_needed", "margin",
                "p_equivalence"):
        if col not in out:
            out[col] = math.nan
    out["p_holm"] = out["p_equivalence_holm"] = math.nan
    for _, idx in out.groupby("column").groups.items():  # the family: one metric across the table's variants
        out.loc[idx, "p_holm"] = holm(out.loc[idx, "p_value"].tolist())
        out.loc[idx, "p_equivalence_holm"] = holm(pd.to_numeric(out.loc[idx, "p_equivalence"]).tolist())
        _seeds_at_holm_level(out, idx)
    out["within_noise"] = [bool(p >= ALPHA) if np.isfinite(p) else None for p in out["p_holm"]]
    return out


def _seeds_at_holm_level(out: pd.DataFrame, idx) -> None:
    """Seeds needed at the level the verdict uses: a Holm family of m needs raw p < alpha / m at its first step,
    so 80 % power there is what settles a row whatever the others do."""
    family = int(np.isfinite(pd.to_numeric(out.loc[idx, "p_value"], errors="coerce")).sum())
    if "effect_size" not in out or family == 0:
        return
    for i in idx:
        effect, test = out.at[i, "effect_size"], out.at[i, "test"]
        first = out.at[i, "design_first"] if "design_first" in out else math.nan
        if isinstance(test, str) and np.isfinite(first):  # a row of an adaptive design: its own first look
            if out.at[i, "column"] == "multitask":  # simulated (seconds a row): for the headline metric only
                need = seeds_for_power(effect, int(first), ALPHA / family)
                out.at[i, "seeds_needed"] = need if need is not None else math.inf
        elif isinstance(test, str) and np.isfinite(effect):
            out.at[i, "seeds_needed"] = seeds_needed(effect, test.startswith("paired"), ALPHA / family)


def _sequential_tests(tested: pd.DataFrame) -> set[str]:
    """The labels of the tests run under an adaptive design (rows that carry a design's first look)."""
    if "design_first" not in tested:
        return set()
    first = pd.to_numeric(tested["design_first"], errors="coerce")
    return {t for t in tested.loc[first.notna(), "test"] if isinstance(t, str)}


def stats_footnote(stats_df: pd.DataFrame) -> str:
    """The footnote: which test each Δ used, and the correction."""
    tested = stats_df[np.isfinite(pd.to_numeric(stats_df["p_value"], errors="coerce"))] \
        if "p_value" in stats_df else stats_df.iloc[0:0]  # a test that could not run (no values) says nothing
    used = sorted(t for t in tested.get("test", pd.Series(dtype=object)).dropna().unique() if isinstance(t, str))
    if not used:
        return "No Δ could be tested (fewer than 2 completed seeds on a side)."
    names = {"paired t": "paired t-test on the per-seed differences of the seeds both sides have",
             "Welch t": "Welch's t-test (fewer than 2 seeds in common)"}
    names.update({t: f"the {t} of the adaptive-seeds design, fixed before the first trial: repeated p-value and "
                     "repeated 95 % CI, valid whatever decided when to stop adding seeds; seeds needed simulated "
                     "under the design" for t in _sequential_tests(tested)})
    dropped = sorted({f"{r['variant']} ({r['dropped_seeds']})" for _, r in tested.iterrows()
                      if isinstance(r.get("dropped_seeds"), str) and r["dropped_seeds"]})
    undefined = stats_df["test"].astype(str).str.contains("undefined").any() if "test" in stats_df else False
    return ("Δ against the baseline: " + "; ".join(names.get(t, t) for t in used) +
            (f"; seeds without a pair left out: {', '.join(dropped)}" if dropped else "") +
            (". Differences without variance leave the test undefined (no p)" if undefined else "") +
            f". p is Holm–Bonferroni-adjusted across the table's variants per metric (raw p in stats.csv); "
            f"adjusted p ≥ {ALPHA}: within noise, with the seeds that would give 80 % power at the observed effect "
            "at the level Holm's first step needs (0.05 / the number of tested variants).")


def trend_lines(fits: pd.DataFrame) -> list[str]:
    """One sentence per fitted trend: slope per unit of the axis (per decade on a log axis), CI, p, verdict."""
    lines = []
    for _, f in fits.iterrows():
        label = LABELS.get(f["metric"], f["metric"]) + (f" ({f['group']})" if f["group"] else "")
        if not np.isfinite(f["slope"]) or not np.isfinite(f["ci_low"]):
            lines.append(f"{label} vs {f['axis']}: too few completed trials for a trend (n={f['n']}).")
            continue
        unit = "per decade" if f["log_x"] else "per unit"
        verdict = "resolved" if f["ci_low"] > 0 or f["ci_high"] < 0 else "unresolved (the CI includes 0)"
        lines.append(f"{label} vs {f['axis']}: slope {f['slope']:+.2f} {unit} [95 % CI {f['ci_low']:+.2f}, "
                     f"{f['ci_high']:+.2f}], p={f['p_value']:.2g}, n={f['n']} trials ({f['model']}): {verdict}.")
    return lines


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
    if "undefined" in str(r.get("test")):
        return sign + " (no variance: test undefined)"
    if r["within_noise"] is None:
        return sign + " (n<2)"
    if np.isfinite(r["delta_ci_low"]) and r["delta_ci_low"] != r["delta_ci_high"]:
        sign += f" [{r['delta_ci_low']:+.2f}, {r['delta_ci_high']:+.2f}]"
    if r["within_noise"]:
        margin, p_eq = r.get("margin", math.nan), r.get("p_equivalence_holm", math.nan)
        if np.isfinite(p_eq) and p_eq < ALPHA:
            return sign + f" (equivalent within ±{margin:g}: TOST p_adj={p_eq:.3f})"
        need = r["seeds_needed"]
        hint = f"; ~{int(need)} seeds for 80 % power" if np.isfinite(need) else "; no effect to power"
        if np.isfinite(margin):
            hint += f"; equivalence within ±{margin:g} not shown"
        return sign + f" (within noise, p_adj={r['p_holm']:.2f}{hint})"
    return sign + (" (p_adj<0.001)" if r["p_holm"] < 0.001 else f" (p_adj={r['p_holm']:.3f})")


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


def time_split(frame: pd.DataFrame) -> str:
    """Where the trials' time went (mean over trials that report it): start-up, data, train steps, eval,
    checkpoints, other, as seconds and shares of the trial's own wall time; Tune's trial time beside it."""
    from core.results import TIME_PARTS

    cols = [f"time_{p}_s" for p in TIME_PARTS]
    done = frame.dropna(subset=[c for c in (*cols, "time_wall_s") if c in frame]) if "time_wall_s" in frame \
        else frame.iloc[0:0]
    if done.empty:
        return "time split: not reported by these trials"
    wall = done["time_wall_s"].mean()
    parts = ", ".join(f"{p} {done[c].mean():.1f} s ({done[c].mean() / wall:.0%})"
                      for p, c in zip(TIME_PARTS, cols, strict=True))
    steps = (done["time_train_s"] + done["time_eval_s"]).sum() / done["time_wall_s"].sum()
    tune = pd.to_numeric(done.get("train_time_s"), errors="coerce").mean()
    return (f"time split per trial (mean of {len(done)}): {parts}; {steps:.0%} in train and eval steps; "
            f"trial wall {wall:.1f} s in mtl.train, {tune:.1f} s as Tune counts it")


def step_costs(frame: pd.DataFrame) -> str:
    """The training step of each task_weighting method in the experiment (mean of its trials' `train_step_ms`)
    against fixed weights (or the cheapest): what a gradient-aggregation method's extra backward passes cost."""
    if "train_step_ms" not in frame or "config/task_weighting" not in frame:
        return ""
    by = pd.to_numeric(frame["train_step_ms"], errors="coerce").groupby(frame["config/task_weighting"]).mean()
    by = by.dropna().sort_values()
    if len(by) < 2:
        return ""
    base = "fixed" if "fixed" in by else by.index[0]
    parts = ", ".join(f"{m} {v:.0f} ms ({v / by[base]:.1f}x)" for m, v in by.items())
    return f"training step by task_weighting (mean over trials, against {base}): {parts}"


def compact_table(frame: pd.DataFrame) -> str:
    """The few lines `run_search.py` prints at the end (the report has the real tables)."""
    def num(v):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"

    normals = "normals_mean" in frame and pd.to_numeric(frame["normals_mean"], errors="coerce").notna().any()
    rows = [[r["variant"], r["seed"], r["status"], num(r.get("multitask")), num(r.get("semseg_miou")),
             num(r.get("depth_silog")), *([num(r.get("normals_mean"))] if normals else []), r["epochs_run"]]
            for _, r in frame.iterrows()]
    return tabulate(rows, headers=["variant", "seed", "status", "multitask", "mIoU", "SI-log",
                                   *(["normals °"] if normals else []), "epochs"])


def estimate_line(record: ExperimentRecord) -> str:
    """The dry-run model's estimate of the search's wall time, made as it started, against the measured time."""
    est, wall = record.estimate_s, record.wall_s
    if not wall:
        return f"Estimated wall time: {est / 60:.1f} min ({record.estimate_how or ''}); the run has not ended." \
            if est is not None else ""
    runs = record.wall_s_runs or [wall]
    measured = f"Wall time: {wall / 60:.1f} min measured" + (f" over {len(runs)} driver runs" if len(runs) > 1 else "")
    if est is None:
        return f"{measured} (no estimate: {record.estimate_how or 'recorded by an older version'})."
    return (f"{measured}, {est / 60:.1f} min estimated as it started by the --dry-run model "
            f"({record.estimate_how}): {100 * (est - wall) / wall:+.0f} %.")
