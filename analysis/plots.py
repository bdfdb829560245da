"""Report figures (matplotlib, Agg): curves, bars, scatter, and example predictions from checkpoints."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from analysis.results import ExperimentResults
from analysis.tables import LABELS, summarize

CURVES = ("multitask", "semseg_miou", "depth_silog")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curves(res: ExperimentResults, rows: list[str], path: Path) -> Path:
    """Validation metrics vs epoch per variant: mean over seeds, 95 % CI band where n >= 2."""
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4.6 * len(CURVES), 3.6))
    for variant in rows:
        trials = res.frame[res.frame["variant"] == variant]
        histories = [res.histories[t] for t in trials["trial_id"] if t in res.histories]
        if not histories:
            continue
        for ax, metric in zip(axes, CURVES, strict=True):
            series = [h.set_index("epoch")[metric] for h in histories if metric in h]
            if not series:  # e.g. a trial that failed before its first epoch
                continue
            table = pd.concat(series, axis=1)
            summary = [summarize(table.loc[e].dropna()) for e in table.index]
            mean = np.array([s["mean"] for s in summary])
            line, = ax.plot(table.index, mean, marker="o", ms=3, label=variant)
            low, high = np.array([s["ci_low"] for s in summary]), np.array([s["ci_high"] for s in summary])
            ax.fill_between(table.index, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    for ax, metric in zip(axes, CURVES, strict=True):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        hint = " (lower is better)" if metric == "depth_silog" else ""
        ax.set(xlabel="epoch", title=f"val {LABELS[metric]}{hint}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def bars(stats_df: pd.DataFrame, path: Path) -> Path:
    """Final metrics per variant with 95 % CI error bars."""
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4.6 * len(CURVES), 3.6))
    for ax, metric in zip(axes, CURVES, strict=True):
        s = stats_df[stats_df["column"] == metric]
        err = (s["ci_high"] - s["mean"]).fillna(0).to_numpy()
        ax.bar(range(len(s)), s["mean"].fillna(0), yerr=err, capsize=4, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(s)), s["variant"], rotation=30, ha="right", fontsize=7)
        ax.set(title=LABELS[metric])
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def scatter(frame: pd.DataFrame, path: Path) -> Path:
    """Multitask against parameters and against train time, one point per trial."""
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8))
    for (ax, col, scale, label) in ((axes[0], "parameters", 1e-6, "parameters (M)"),
                                    (axes[1], "train_time_s", 1 / 60, "train time (min)")):
        for variant, group in frame.groupby("variant", sort=False):
            ax.scatter(pd.to_numeric(group[col], errors="coerce") * scale, group["multitask"], label=variant, s=25)
        ax.set(xlabel=label, ylabel="multitask")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def trends(frame: pd.DataFrame, fits: pd.DataFrame, path: Path) -> Path | None:
    """Each trial's metric against each ordered numeric axis, with the OLS fit and its 95 % CI in the legend."""
    from analysis.stats import numeric_axis

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
        xs = np.log10(x) if fit["log_x"] else x
        y = pd.to_numeric(part[fit["metric"]], errors="coerce").to_numpy()
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

