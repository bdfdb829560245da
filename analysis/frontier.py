"""The frontier study page: do multi-task optimisers beat a tuned front of weighted sums? docs/frontier.md.

    python -m analysis.frontier EXPERIMENT [--out docs/frontier.md] [--copy docs/frontier] [--intro FILE]

EXPERIMENT (a folder or s3://) needs only its saved artifacts, so the copy under docs/frontier/ rebuilds the page as
the original run does. The spec's `report.frontier` declared the design before the runs: which variants are the
weighted-sum front, the key every variant tunes over the same values (the same budget), the seeds that tune, and
the equivalence margins. Each variant's value is chosen on the tuning seeds' validation results alone (the largest
hypervolume of its mean point); the verdicts use the other seeds only (stats.frontier).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.tables import LABELS
from analysis.tradeoff import reference_point
from core.saved import SavedExperiment, copy_artifacts, read_saved
from mtl.aggregation import PAPERS
from stats.frontier import Frontier, Values, best_row, frontier_verdicts
from stats.pareto import mean_ci


@dataclass(frozen=True)
class Tuned:
    rows: dict[str, str]  # declared variant -> the result row (variant | key=value) its tuning seeds chose
    values: dict[str, float]  # declared variant -> the chosen value of the tuned key
    frame: pd.DataFrame  # the comparison seeds' completed trials of the chosen rows, `variant` = declared name


def tune(saved: SavedExperiment) -> Tuned:
    """Each declared variant's tuned row, chosen on the tuning seeds only (`stats.frontier.best_row`: the choice
    the adaptive design made while it ran)."""
    spec, objectives = saved.record.spec, saved.record.objectives or {}
    design = spec["report"]["frontier"]
    key, tuning = design.get("tune", "lr"), set(design.get("tuning_seeds", [0]))
    ref = reference_point(objectives, spec["report"].get("reference_point"))
    done = saved.frame[saved.frame["status"] == "completed"]
    rows, values, parts = {}, {}, []
    for name in (v["name"] for v in spec["variants"]):
        mine = saved.frame[(saved.frame["variant"] == name) | saved.frame["variant"].str.startswith(f"{name} | ")]
        tuning_runs = mine[mine["seed"].isin(tuning)]
        if tuning_runs.empty:
            continue
        points = {row: [float(pd.to_numeric(part.loc[part["status"] == "completed", m]).mean()) for m in objectives]
                  for row, part in tuning_runs.groupby("variant", sort=False)}
        rows[name] = best_row(points, list(objectives.values()), ref)
        chosen = mine[mine["variant"] == rows[name]]
        values[name] = float(chosen[f"config/{key}"].iloc[0])
        parts.append(done[(done["variant"] == rows[name]) & ~done["seed"].isin(tuning)].assign(variant=name))
    return Tuned(rows, values, pd.concat(parts) if parts else done.iloc[:0])


def _values(frame: pd.DataFrame, names: list[str], objectives: dict[str, str]) -> Values:
    out = {}
    for name in names:
        part = frame[frame["variant"] == name]
        out[name] = {m: pd.Series(part[m].astype(float).to_numpy(), index=part["seed"].to_numpy()) for m in objectives}
    return out


def study(saved: SavedExperiment) -> tuple[Tuned, Frontier]:
    design = saved.record.spec["report"]["frontier"]
    objectives = saved.record.objectives or {}
    tuned = tune(saved)
    front = [f for f in design["front"] if f in tuned.rows]
    methods = [n for n in tuned.rows if n not in design["front"]]
    values = _values(tuned.frame, [*front, *methods], objectives)
    adaptive = saved.record.adaptive
    plan = (adaptive["first"], len(saved.record.seeds) - len(design.get("tuning_seeds", [0]))) if adaptive else None
    return tuned, frontier_verdicts(values, methods, front, objectives, design["margin"],
                                    design.get("alpha", 0.05), design=plan)


def table(saved: SavedExperiment, tuned: Tuned, result: Frontier) -> pd.DataFrame:
    objectives = saved.record.objectives or {}
    key = saved.record.spec["report"]["frontier"].get("tune", "lr")
    front = saved.record.spec["report"]["frontier"]["front"]
    step = tuned.frame.groupby("variant")["train_step_ms"].mean() if "train_step_ms" in tuned.frame else {}
    base_step = float(np.nanmean([step.get(f, math.nan) for f in front])) if len(step) else math.nan
    lines = []
    for name in tuned.rows:
        part = tuned.frame[tuned.frame["variant"] == name]
        method = str(part["config/task_weighting"].iloc[0]) if len(part) else ""
        line = {"row": name, "method": "weighted sum" if name in front else PAPERS.get(method, method),
                key: f"{tuned.values[name]:g}", "seeds": len(part)}
        for m in objectives:
            ci = mean_ci(part[m].astype(float).tolist())
            line[LABELS.get(m, m)] = f"{ci['mean']:.2f} [{ci['ci_low']:.2f}, {ci['ci_high']:.2f}]"
        ms = float(step.get(name, math.nan)) if len(step) else math.nan
        line["step (ms)"] = f"{ms:.0f} ({ms / base_step:.1f}x)" if math.isfinite(ms) else "—"
        line.update(_verdict_cells(result, name))
        lines.append(line)
    return pd.DataFrame(lines)


def _verdict_cells(result: Frontier, name: str) -> dict[str, str]:
    if name not in result.verdicts.index:
        return {"verdict": "front", "against (adj. p)": "", "seeds to settle": ""}
    v = result.verdicts.loc[name]
    p = f" (p = {v['p_adj']:.3g})" if math.isfinite(v["p_adj"]) else ""
    need = v["seeds_needed"]
    return {"verdict": f"**{v['verdict']}**", "against (adj. p)": f"{v['against']}{p}" if v["against"] else "",
            "seeds to settle": ("" if v["verdict"] != "unresolved" else
                                f"~{need:.0f}" if math.isfinite(need) and need <= 40 else "more than 40")}


def figure(saved: SavedExperiment, tuned: Tuned, result: Frontier, path: Path) -> Path:
    objectives = saved.record.objectives or {}
    x, y = list(objectives)[:2]
    front = saved.record.spec["report"]["frontier"]["front"]
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    colours = plt.get_cmap("tab20")
    means = {}
    for i, name in enumerate(tuned.rows):
        part = tuned.frame[tuned.frame["variant"] == name]
        xs, ys = part[x].astype(float), part[y].astype(float)
        cx, cy = mean_ci(xs.tolist()), mean_ci(ys.tolist())
        means[name] = (cx["mean"], cy["mean"])
        colour = "k" if name in front else colours(i % 20)
        ax.scatter(xs, ys, s=8, color=colour, alpha=0.35)
        ax.errorbar(cx["mean"], cy["mean"], xerr=_half(cx), yerr=_half(cy), fmt="s" if name in front else "o",
                    ms=5, capsize=2, color=colour, label=None if name in front else name)
        if name in front:
            ax.annotate(name, means[name], xytext=(4, -10), textcoords="offset points", fontsize=6)
    line = sorted(means[f] for f in front if f in means)
    ax.plot([p[0] for p in line], [p[1] for p in line], "k--", lw=1, label="tuned weighted sums (the front)")
    ax.set(xlabel=f"{LABELS.get(x, x)} ({'higher' if objectives[x] == 'max' else 'lower'} is better)",
           ylabel=f"{LABELS.get(y, y)} ({'higher' if objectives[y] == 'max' else 'lower'} is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _half(ci: dict[str, float]) -> float:
    return ci["ci_high"] - ci["mean"] if math.isfinite(ci["ci_high"]) else 0.0


def headline(result: Frontier) -> str:
    counts = result.verdicts["verdict"].value_counts().to_dict()
    text = ", ".join(f"{n} {v}" for v, n in counts.items())
    if counts.get("beats the front"):
        return (f"{text}. At this scale a method beats the tuned front: Kurin et al.'s and Xin et al.'s finding does "
                "not hold here.")
    if counts.get("unresolved"):
        return (f"{text}. No method beats the tuned front at the page's error level, but some comparisons are "
                "unresolved: Kurin et al.'s and Xin et al.'s finding is not contradicted, nor shown.")
    return f"{text}. No method beats the tuned front: Kurin et al.'s and Xin et al.'s finding holds at this scale."


def page(saved: SavedExperiment, tuned: Tuned, result: Frontier, figure_name: str, intro: str = "") -> str:
    design = saved.record.spec["report"]["frontier"]
    seeds = sorted(set(tuned.frame["seed"]))
    lines = [intro.rstrip(), "", f"**Headline.** {headline(result)}", "",
             f"![the tuned front and each method]({figure_name})", "",
             table(saved, tuned, result).to_markdown(index=False), "",
             f"Design, declared in the spec before the runs: every row tunes `{design.get('tune', 'lr')}` over the "
             f"same values (the same budget), chosen on seed(s) {design.get('tuning_seeds', [0])} by the largest "
             f"hypervolume of the mean point; the verdicts use seeds {seeds} only (paired). {_seeds_text(saved)} "
             "Equivalence margins: " + ", ".join(f"{LABELS.get(k, k)} ±{v}" for k, v in design["margin"].items()) +
             f". All {result.family} p-values of the page (each method × each weighted sum × dominates / dominated / "
             f"equivalent) are Holm-adjusted together: the page's family-wise error is at most {result.alpha}. "
             "Seeds to settle: per row, for 80 % power of the most promising test at Holm's first-step level, "
             "taking the observed effect as true: optimistic, since effects that look promising in a few seeds "
             "are inflated.", "",
             f"**Compute, planned against spent.** {compute(saved)}", ""]
    return "\n".join(lines)


def _seeds_text(saved: SavedExperiment) -> str:
    adaptive = saved.record.adaptive
    if not adaptive:
        return "Seeds: a fixed number per row (paired t-tests, one look)."
    return (f"Seeds: adaptive, {adaptive['first']} comparison seeds first, then one more for each method still "
            f"unresolved, up to {adaptive['max']} (group-sequential one-sided paired t-tests, O'Brien-Fleming "
            "shape, repeated p-values: valid whatever decided to add or stop seeds).")


def _ending(looks: dict) -> str:
    """How the adaptive design ended, from its last look: the methods it settled, those at max seeds."""
    last = (looks.get("looks") or [{}])[-1].get("verdicts") or {}
    if not last or str(looks.get("stopped", "")).startswith(("trial budget", "trial-hour budget")):
        return str(looks.get("stopped"))
    settled = [m for m, v in last.items() if v["verdict"] != "unresolved"]
    return (f"{len(settled)} method(s) with a verdict ({', '.join(settled) or 'none'}), "
            f"{len(last) - len(settled)} unresolved at the most comparison seeds")


def compute(saved: SavedExperiment) -> str:
    """Planned (the record written before the first trial) against spent (the saved results and looks)."""
    f, record = saved.frame, saved.record
    hours = pd.to_numeric(f["train_time_s"], errors="coerce").sum() / 3600
    planned = f"at most {record.trial_count} trials"
    if record.estimate_s:
        planned += f", about {record.estimate_s / 60:.0f} min of wall time estimated ({record.estimate_how})"
    spent = (f"{len(f)} trials ({int((f['status'] == 'completed').sum())} completed), {hours:.2f} trial-hours"
             + (f", {record.wall_s / 60:.0f} min wall time" if record.wall_s else ""))
    looks = saved.looks or {}
    stop = (f"; the design took {len(looks.get('looks', []))} looks and stopped: {_ending(looks)}" if looks else "")
    return (f"Planned: {planned}. Spent: {spent}{stop}. Profile {record.profile}; command: "
            f"`{saved.command()}`.")


def parser() -> argparse.ArgumentParser:
    """The command line (also what docs/reference.md shows and a test checks)."""
    p = argparse.ArgumentParser(prog="python -m analysis.frontier",
                                description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("experiment", help="the frontier study's experiment folder (local or s3://), e.g. "
                   "docs/frontier/frontier.")
    p.add_argument("--out", default="docs/frontier.md", help="the page (its figure goes beside it, .png).")
    p.add_argument("--copy", help="also copy the experiment's small artifacts here (never checkpoints).")
    p.add_argument("--intro", help="a markdown file to open the page with.")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    a = p.parse_args(argv)
    uri = str(copy_artifacts(a.experiment, a.copy)) if a.copy else a.experiment
    saved = read_saved(uri)
    if "frontier" not in (saved.record.spec.get("report") or {}) or not saved.record.spec["report"]["frontier"]:
        p.error(f"{a.experiment}: its spec declares no report.frontier")
    out = Path(a.out)
    tuned, result = study(saved)
    fig = figure(saved, tuned, result, out.with_suffix(".png"))
    intro = Path(a.intro).read_text() if a.intro else "# The frontier study\n"
    out.write_text(page(saved, tuned, result, fig.name, intro))
    print(f"wrote {out} and {fig}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
