"""Report figures (matplotlib, Agg): curves, paired Δs, scatter, trends, and example predictions from checkpoints."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from analysis.tables import LABELS
from core.results import ExperimentResults

CURVES = ("multitask", "semseg_miou", "depth_silog")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curves(res: ExperimentResults, rows: list[str], path: Path) -> Path:
    """Validation metrics vs epoch per variant: each seed a thin line, their mean a bold one. (A t-interval band
    over 2 seeds is ±12.7 sd wide: it would hide what the paired Δs resolve.)"""
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4.6 * len(CURVES), 3.6))
    for variant in rows:
        trials = res.frame[res.frame["variant"] == variant]
        histories = [res.histories[t] for t in trials["trial_id"] if t in res.histories]
        for ax, metric in zip(axes, CURVES, strict=True):
            series = [h.set_index("epoch")[metric] for h in histories if metric in h]
            if not series:  # e.g. a trial that failed before its first epoch
                continue
            table = pd.concat(series, axis=1)
            line, = ax.plot(table.index, table.mean(axis=1), marker="o", ms=3, lw=1.8, label=variant)
            if table.shape[1] > 1:
                ax.plot(table.index, table.to_numpy(), color=line.get_color(), lw=0.6, alpha=0.45)
    for ax, metric in zip(axes, CURVES, strict=True):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        hint = " (lower is better)" if metric == "depth_silog" else ""
        ax.set(xlabel="epoch", title=f"val {LABELS[metric]}{hint}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def deltas(stats_df: pd.DataFrame, path: Path) -> Path | None:
    """Δ against the baseline with its 95 % CI per variant and metric - the quantity the verdicts test - with the
    resolved ones (Holm-adjusted p < 0.05) filled and those within noise hollow."""
    tested = stats_df[~stats_df["baseline"].astype(bool) & np.isfinite(pd.to_numeric(stats_df["delta"]))]
    metrics = [m for m in CURVES if (tested["column"] == m).any()]
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 0.5 + 0.45 * tested["variant"].nunique()),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        s = tested[tested["column"] == metric].reset_index(drop=True)
        y = np.arange(len(s))[::-1]
        low = (s["delta"] - s["delta_ci_low"]).fillna(0).to_numpy()
        high = (s["delta_ci_high"] - s["delta"]).fillna(0).to_numpy()
        resolved = (pd.to_numeric(s["p_holm"]) < 0.05).to_numpy()
        ax.errorbar(s["delta"], y, xerr=[low, high], fmt="none", ecolor="tab:blue", capsize=3)
        ax.scatter(s["delta"][resolved], y[resolved], color="tab:blue", zorder=3, label="resolved (Holm)")
        ax.scatter(s["delta"][~resolved], y[~resolved], facecolors="white", edgecolors="tab:blue", zorder=3,
                   label="within noise")
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(y, s["variant"], fontsize=7)
        hint = " (lower is better)" if metric == "depth_silog" else ""
        ax.set(title=f"Δ {LABELS[metric]} vs baseline{hint}", xlabel="paired Δ [95 % CI]")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def scatter(frame: pd.DataFrame, path: Path) -> Path | None:
    """Multitask against parameters and against train time, one point per trial; an axis that does not vary
    (every row the same model) is left out, and with it the figure when neither varies."""
    panels = []
    for col, scale, label in (("parameters", 1e-6, "parameters (M)"), ("train_time_s", 1 / 60, "train time (min)")):
        values = pd.to_numeric(frame[col], errors="coerce") * scale
        if values.nunique() > 1 and values.max() - values.min() > 0.02 * abs(values.mean()):
            panels.append((col, scale, label))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.8), squeeze=False)
    for ax, (col, scale, label) in zip(axes[0], panels, strict=True):
        for variant, group in frame.groupby("variant", sort=False):
            ax.scatter(pd.to_numeric(group[col], errors="coerce") * scale, group["multitask"], label=variant, s=25)
        ax.set(xlabel=label, ylabel="multitask")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def trends(frame: pd.DataFrame, fits: pd.DataFrame, path: Path) -> Path | None:
    """Each trial's metric against each ordered numeric axis, with the OLS fit and its 95 % CI in the legend."""
    from stats.inference import numeric_axis

    if fits.empty or "slope" not in fits:
        return None
    panels = fits.dropna(subset=["slope"])
    if panels.empty:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.5), squeeze=False)
    done = frame[frame["status"] == "completed"]
    for ax, (_, fit) in zip(axes[0], panels.iterrows(), strict=True):
        part = done
        for cond in filter(None, fit["group"].split(", ")):
            key, value = cond.split("=", 1)
            part = part[part[f"config/{key}"].astype(str) == value]
        x = np.asarray(numeric_axis(part[f"config/{fit['axis'].removesuffix('[0]')}"].tolist()), float)
        y = pd.to_numeric(part[fit["metric"]], errors="coerce").to_numpy()
        if fit["log_x"]:  # x <= 0 was left out of the fit (and has no place on a log axis)
            x, y = x[x > 0], y[x > 0]
        xs = np.log10(x) if fit["log_x"] else x
        ax.scatter(x, y, s=18, alpha=0.7)
        grid = np.linspace(xs.min(), xs.max(), 20)
        line = np.nanmean(y) + fit["slope"] * (grid - xs.mean())  # the fit through the centroid
        ax.plot(10**grid if fit["log_x"] else grid, line, color="tab:red",
                label=f"slope {fit['slope']:+.2f} [{fit['ci_low']:+.2f}, {fit['ci_high']:+.2f}]")
        if fit["log_x"]:
            ax.set_xscale("log")
        title = LABELS.get(fit["metric"], fit["metric"]) + (f" ({fit['group']})" if fit["group"] else "")
        ax.set(xlabel=fit["axis"] + (" (log10 axis)" if fit["log_x"] else ""), title=title)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def predictions(res: ExperimentResults, rows: list[str], path: Path, images: int = 2) -> Path | None:
    """RGB | GT semseg | predicted semseg | GT depth | predicted depth for the best trial of each variant,
    from its best checkpoint on the first validation images."""
    from analysis.predict import best_trial_predictions

    panels = [(variant, p) for variant in rows for p in best_trial_predictions(res, variant, images)]
    if not panels:
        return None
    titles = ("RGB", "GT semseg", "pred semseg", "GT depth", "pred depth")
    fig, axes = plt.subplots(len(panels), 5, figsize=(13, 1.55 * len(panels) + 0.5), squeeze=False)
    for r, (variant, images5) in enumerate(panels):
        for c, img in enumerate(images5):
            ax = axes[r][c]
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
        axes[r][0].set_ylabel(variant if len(variant) < 24 else variant[:22] + "…", fontsize=7)
    return _save(fig, path)

