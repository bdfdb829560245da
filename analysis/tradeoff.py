"""The trade-off between the objectives of an experiment: the front table (each objective's mean with its CI, on the
front or dominated - by which row, at what Holm-adjusted p), the hypervolume with a CI over seeds, and the figure
every multi-task paper draws: objective against objective, each seed a small point, each row's mean with its CI,
the front through the non-dominated rows, dominated rows greyed. Reads saved results only (stats.pareto tests)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.tables import LABELS
from mtl.metrics import WORST_VALUES
from stats import pareto
from stats.inference import ALPHA
from stats.pareto import (
    Dominance,
    attainment_surface,
    dominance_table,
    hypervolume,
    hypervolume_over_seeds,
    mean_ci,
    nondominated,
)


def reference_point(objectives: dict[str, str], declared: dict[str, float] | None) -> list[float] | None:
    """The hypervolume's reference point, objective by objective (declared first); None when one is unknown."""
    return pareto.reference_point(objectives, declared, WORST_VALUES)


@dataclass
class TradeOff:
    objectives: dict[str, str]
    table: pd.DataFrame  # one line per row, for the report
    dominance: Dominance
    hv: dict[str, float]  # mean hypervolume over seeds with its CI (NaN without seeds to pair)
    reference: list[float] | None
    note: str


def _cell(ci: dict[str, float], digits: int = 2) -> str:
    if not math.isfinite(ci["mean"]):
        return "—"
    if not math.isfinite(ci["ci_low"]):
        return f"{ci['mean']:.{digits}f}"
    return f"{ci['mean']:.{digits}f} [{ci['ci_low']:.{digits}f}, {ci['ci_high']:.{digits}f}]"


def tradeoff(frame: pd.DataFrame, rows: list[str], objectives: dict[str, str],
             declared_reference: dict[str, float] | None = None, alpha: float = ALPHA) -> TradeOff:
    """The trade-off of `rows` (completed trials of `frame`) on `objectives`."""
    done = frame[(frame["status"] == "completed") & frame["variant"].isin(rows)]
    # a row without every objective (a single-task baseline) has no point in this space
    scored = done[list(objectives)].apply(pd.to_numeric, errors="coerce").notna().all(axis=1)
    done = done[scored]
    rows = [r for r in rows if (done["variant"] == r).any()]
    dom = dominance_table(done, rows, objectives, alpha)
    lines = []
    for row in rows:
        part = done[done["variant"] == row]
        line = {"Variant": row, "n": len(part)}
        for m, direction in objectives.items():
            line[f"{LABELS.get(m, m)} ({direction})"] = _cell(mean_ci(pd.to_numeric(part[m], errors="coerce")))
        verdict = dom.table.loc[row]
        if verdict["dominated_by"]:
            line["front"] = f"dominated by {verdict['dominated_by']} (p Holm {verdict['p_holm']:.2g})"
        else:
            line["front"] = "on the front" if verdict["on_front"] else "behind the front, within noise"
        lines.append(line)
    reference = reference_point(objectives, declared_reference)
    seeds = done["seed"].nunique()
    hv = hypervolume_over_seeds(done, rows, objectives, reference) if reference and seeds > 1 else \
        {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    return TradeOff(objectives, pd.DataFrame(lines), dom, hv, reference, _note(dom, hv, reference, objectives, seeds))


def _note(dom: Dominance, hv: dict, reference: list[float] | None, objectives: dict[str, str], seeds: int) -> str:
    names = ", ".join(f"{LABELS.get(m, m)} ({d})" for m, d in objectives.items())
    pairs = len(dom.pairs)
    claimed = dom.table[dom.table["dominated_by"] != ""]
    text = (f"Trade-off on {names}. A row is dominated when another is better on every objective: an "
            f"intersection-union test (one one-sided paired t per objective on the seeds both rows share; p = the "
            f"largest), Holm across all {pairs} pairs of rows, family-wise α = {dom.alpha:g}. ")
    if claimed.empty:
        text += ("No dominance is resolved: every row is in the statistically non-dominated set "
                 f"({len(dom.table)} rows) at these seeds.")
    else:
        text += (f"Statistically non-dominated: {', '.join(dom.nondominated)}; dominated: "
                 + "; ".join(f"{r} by {d} (p Holm {p:.2g})" for r, d, p in
                             zip(claimed.index, claimed["dominated_by"], claimed["p_holm"], strict=True)) + ".")
    if reference is not None and math.isfinite(hv["mean"]):
        ref = ", ".join(f"{LABELS.get(m, m)} {v:g}" for m, v in zip(objectives, reference, strict=True))
        text += (f" Hypervolume of each seed's front up to ({ref}): {hv['mean']:.1f} "
                 f"[{hv['ci_low']:.1f}, {hv['ci_high']:.1f}] over {hv['n']} seeds.")
    elif seeds < 2:
        text += " One seed: no interval and no test."
    return text


def sampled_front(frame: pd.DataFrame, objectives: dict[str, str], reference: list[float] | None) -> str:
    """For sampled searches (Optuna, random): the front of all completed trials and its hypervolume."""
    done = frame[frame["status"] == "completed"]
    values = done[list(objectives)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    on = nondominated(values, list(objectives.values()))
    text = f"Front of all {len(done)} completed trials: {int(on.sum())} non-dominated"
    if reference is not None:
        text += f", hypervolume {hypervolume(values, list(objectives.values()), reference):.1f}"
    return text + "."


def figure(frame: pd.DataFrame, result: TradeOff, path: Path) -> Path | None:
    """Objective against objective (pairwise panels for three or more)."""
    names = list(result.objectives)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    if not pairs or result.table.empty:
        return None
    done = frame[frame["status"] == "completed"]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.6 * len(pairs), 4.6), squeeze=False)
    for ax, (x, y) in zip(axes[0], pairs, strict=True):
        _panel(ax, done, result, x, y)
    return _save(fig, path)


def _panel(ax, done: pd.DataFrame, result: TradeOff, x: str, y: str) -> None:
    table = result.dominance.table
    dominated = set(table.index[table["dominated_by"] != ""])
    colours = plt.get_cmap("tab10")
    for i, row in enumerate(table.index):
        part = done[done["variant"] == row]
        xs, ys = (pd.to_numeric(part[c], errors="coerce") for c in (x, y))
        colour = "0.6" if row in dominated else colours(i % 10)
        ax.scatter(xs, ys, s=10, color=colour, alpha=0.45)
        cx, cy = mean_ci(xs), mean_ci(ys)
        err = [[_half(cx)], [_half(cy)]]
        ax.errorbar(cx["mean"], cy["mean"], xerr=err[0], yerr=err[1], fmt="o", ms=6, capsize=3, color=colour,
                    label=row + (" (dominated)" if row in dominated else ""))
    means = table[[x, y]].to_numpy(dtype=float)
    on = nondominated(means, [result.objectives[x], result.objectives[y]])
    front = means[on & np.array([r not in dominated for r in table.index])]
    front = front[np.argsort(front[:, 0])]
    ax.plot(front[:, 0], front[:, 1], color="k", lw=1, ls="--", alpha=0.6, label="front (non-dominated rows)")
    surface = attainment_surface(done, list(table.index), {x: result.objectives[x], y: result.objectives[y]})
    if surface is not None:
        ax.plot(surface[:, 0], surface[:, 1], color="tab:gray", lw=1, ls=":",
                label=f"median attainment surface ({done['seed'].nunique()} seeds)")
    ax.set(xlabel=f"{LABELS.get(x, x)} ({'higher' if result.objectives[x] == 'max' else 'lower'} is better)",
           ylabel=f"{LABELS.get(y, y)} ({'higher' if result.objectives[y] == 'max' else 'lower'} is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _half(ci: dict[str, float]) -> float:
    return (ci["ci_high"] - ci["mean"]) if math.isfinite(ci["ci_high"]) else 0.0


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@dataclass
class Section:
    """What a report shows of the trade-off: the front table (None for a sampled search), its note, the figure."""

    table: pd.DataFrame | None
    note: str
    figure: Path | None


def report_section(frame: pd.DataFrame, rows: list[str], objectives: dict[str, str] | None,
                   declared_reference: dict[str, float] | None, sampled: bool, out: Path) -> Section | None:
    """The report's trade-off section for an experiment with objectives; None without them."""
    if not objectives:
        return None
    if sampled:  # each trial is its own row of one seed: the front of all trials, no test
        reference = reference_point(objectives, declared_reference)
        result = tradeoff(frame.assign(seed=0), rows, objectives, declared_reference)
        return Section(None, sampled_front(frame, objectives, reference), figure(frame, result, out / "tradeoff.png"))
    result = tradeoff(frame, rows, objectives, declared_reference)
    return Section(result.table, result.note, figure(frame, result, out / "tradeoff.png"))
