"""The findings page's Markdown: the verdict table, its footnote, the runs, the seeds the adaptive design added,
and Δm (analysis/findings.py decides the verdicts)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.delta_m import TASK_METRICS, delta_m, delta_m_note, delta_m_text, single_task_reference
from core.saved import SavedExperiment, shown_command
from stats.inference import ALPHA
from stats.page import PAGE_DESIGN


def _delta(r: dict, prefix: str = "") -> str:
    d, lo, hi = (r.get(f"{prefix}{k}", math.nan) for k in ("delta", "delta_ci_low", "delta_ci_high"))
    if not isinstance(d, float) or not np.isfinite(d):
        return "—"
    text = f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]" if np.isfinite(lo) else f"{d:+.2f}"
    ph = r.get(f"{prefix}p_holm", math.nan)
    if prefix and isinstance(ph, float) and np.isfinite(ph):  # the same page-wide standard as multitask's
        text += " resolved" if ph < ALPHA else ""
    return text


def _p(r: dict) -> str:
    p, ph = r.get("p_value", math.nan), r.get("p_holm", math.nan)
    if not np.isfinite(p):
        return "—"
    text = f"{p:.2g} ({ph:.2g})"
    pe, peh = r.get("p_equivalence", math.nan), r.get("p_equivalence_holm", math.nan)
    if isinstance(pe, float) and np.isfinite(pe):  # the test behind an equivalence verdict is shown too
        text += f"; TOST {pe:.2g} ({peh:.2g})"
    return text


def _extra(r: dict) -> str:
    parts = [f"the {r['trend']}: {r['trend_slope']:+.2f} multitask [{r['trend_ci_low']:+.2f}, "
             f"{r['trend_ci_high']:+.2f}] (OLS over {int(r['n_trend'])} trials, seed blocks; descriptive, not in "
             "the family)"] if isinstance(r.get("trend"), str) else []
    if isinstance(r.get("setup"), str) and r["setup"]:
        parts.append(r["setup"])
    if "diverged" in r and np.isfinite(r.get("diverged", math.nan)):
        parts.append(f"{int(r['diverged'])}/{int(r['trials'])} diverged")
    if np.isfinite(r.get("parameters_ratio", math.nan)):
        parts.append(f"params ×{r['parameters_ratio']:.2f}, time ×{r['train_time_s_ratio']:.2f}")
    return "; ".join(parts)


def markdown_table(table: pd.DataFrame) -> str:
    rows = [{"Course finding": r["claim"], "Experiment: ours vs reference": f"{r['experiment']}: {r['comparison']}",
             "n": f"{int(r['n_variant'])} / {int(r['n_baseline'])}" + (" adaptive" if r.get("design") else "")
             if np.isfinite(r.get("n_variant", math.nan)) else "—",
             "Δ multitask [simultaneous 95 % CI]": _delta(r), "p (Holm)": _p(r), "Δ mIoU": _delta(r, "semseg_miou_"),
             "Δ SI-log": _delta(r, "depth_silog_"), "Also": _extra(r), "Verdict": r["verdict"]}
            for r in table.to_dict("records")]
    return pd.DataFrame(rows).to_markdown(index=False)


def runs_markdown(experiments: dict[str, SavedExperiment]) -> str:
    lines = ["| Experiment | Trials | Seeds | Wall time | Command |", "|---|---|---|---|---|"]
    for name, exp in sorted(experiments.items()):
        wall, extends = exp.record.wall_s, exp.record.extends
        seeds = f"{exp.frame['seed'].nunique()} (adaptive, up to {exp.record.adaptive['max']})" \
            if exp.record.adaptive else str(len(exp.record.seeds))
        command = f"`{exp.command()}`"
        if extends:  # the first run's command and time, then the extension's
            first = shown_command(extends.argv or [])
            command = f"`{first}`, then extended: {command}"
            wall = f"{_minutes(extends.wall_s)} + {_minutes(wall)}"
        lines.append(f"| {name} | {len(exp.frame)} | {seeds} | {wall if extends else _minutes(wall)} | {command} |")
    return "\n".join(lines)


def delta_m_section(experiments: dict[str, SavedExperiment]) -> list[str]:
    """Δm of every multi-task row of an experiment that has single-task rows (ablations/single_task.yaml)."""
    out = []
    for name, exp in sorted(experiments.items()):
        reference = single_task_reference(exp.frame)
        dm = delta_m(exp.frame, reference)
        if dm.empty:
            continue
        rows = [{"Experiment": name, "Multi-task row": r["variant"], "n": int(r["n"]),
                 "Δm % [95 % CI]": delta_m_text(r),
                 **{f"{t} single-task": f"{v[TASK_METRICS[t][0]].mean():.2f} ({TASK_METRICS[t][0]})"
                    for t, (_, v) in reference.items()}}
                for _, r in dm.iterrows()]
        out += [pd.DataFrame(rows).to_markdown(index=False), delta_m_note(reference, name, dm)]
    return ["## Multi-task against single-task baselines (Δm)", *out] if out else []


def footnote(table: pd.DataFrame) -> str:
    family = int(table["family"].iloc[0]) if "family" in table and len(table) else 0
    equivalence = int(table["family_equivalence"].iloc[0]) if "family_equivalence" in table and len(table) else 0
    diverges = int(table["test"].astype(str).str.startswith("exact").sum()) if "test" in table else 0
    return ("Δ = ours − reference, mean over seeds of the paired (same-seed) difference on the seeds both sides "
            "have. **One design for every row** (stats/page.py): each difference is tested by the group-sequential "
            "paired t of the design its seeds were chosen by — looks at every seed count from `first` to `max`, "
            f"O'Brien–Fleming shape; a row never extended had one look of the page's design (first "
            f"{PAGE_DESIGN.first}, max {PAGE_DESIGN.max}) and gets that look's repeated p-value, not a fixed-n "
            "t-test, so no row's test depends on its data. p: raw repeated p (Holm–Bonferroni-adjusted). "
            f"**The Holm family is {family} tests**: {family - equivalence - diverges} differences on multitask"
            + (f", {equivalence} equivalence test(s) (TOST within a margin, for '≈' and 'flat' claims)"
               if equivalence else "")
            + (f" and {diverges} exact binomial test(s) of a 'diverges' count against 'half of the runs fail'"
               if diverges else "")
            + ". **The verdicts together keep a family-wise error ≤ 0.05**, the extension of unsettled rows "
            "included (simulated for the whole procedure: tests/test_page.py, bench/page_error.py). Intervals are "
            f"simultaneous: repeated intervals at 0.05 / {family} (Bonferroni), so an interval that excludes 0 always "
            "goes with a resolved row, and a course magnitude outside it reads 'direction reproduced, smaller (larger) "
            "than the course's'; those size statements rest on the intervals covering every row's Δ together (≥ 95 %), "
            "so verdicts and size statements together run at ≤ 0.10. "
            "Δ mIoU and Δ SI-log are two more families by the same rule, each at 0.05 (*resolved* marks); the page's "
            "claims all together run at ≤ 0.15 (at this scale Δ SI-log is −Δ multitask, so in practice ≤ 0.10). "
            "'Unresolved' gives the seeds that reach 80 % power at the observed effect at Holm's first-step level "
            f"(0.05 / {family}), simulated under the sequential design with its futility stop. That estimate is "
            "optimistic: an effect measured on a few seeds is inflated when it looks promising (at 3 seeds this "
            "page predicted 5, 5, 6 and 5 seeds for four rows that then needed 8, 7, 8 and 8). "
            + verdict_counts(table))


def verdict_counts(table: pd.DataFrame) -> str:
    """The page's tally, from its verdicts (the one place these counts come from)."""
    counts = table["category"].value_counts()
    order = ["reproduced", "direction reproduced", "contradicted", "unresolved", "not run"]
    return "Verdicts: " + ", ".join(f"{int(counts.get(k, 0))} {k}" for k in order) + "."


def looks_markdown(experiments: dict[str, SavedExperiment]) -> list[str]:
    """Every look of each adaptive design: seeds per comparison, repeated p, decision; and the compute it added."""
    out = []
    for name, exp in sorted(experiments.items()):
        if not exp.looks:
            continue
        rows = [_look_row(name, look, comparison, c) for look in exp.looks["looks"]
                for comparison, c in look["comparisons"].items()]
        out += [pd.DataFrame(rows).to_markdown(index=False), _design_line(name, exp)]
    return ["## Seeds added by the adaptive design", "Each look judges every comparison on the seeds both of its "
            "rows have; an open one gets one more seed on both rows, a settled one none.", *out] if out else []


def _look_row(name: str, look: dict, comparison: str, c: dict) -> dict:
    rows = comparison.split(" vs ")
    p = c.get("p_repeated")
    return {"Experiment": name, "Look": look["look"], "Comparison": comparison, "Seeds": c["seeds"],
            "Repeated p": f"{p:.2g}" if p is not None else "—",
            "Decision": c.get("decision") or ("first round" if not c["seeds"] else "one more seed"),
            "Trials queued": sum(1 for row, _ in look["added"] if row in rows)}


def _design_line(name: str, exp: SavedExperiment) -> str:
    design = exp.looks["design"]
    level = f"0.05 / {design['family']}" if design.get("family") else "Holm across its comparisons at 0.05"
    margin = design.get("equivalence_margin")
    added = int(exp.frame["extended_from"].isna().sum()) if "extended_from" in exp.frame else len(exp.frame)
    return (f"{name}: first {design['first']}, max {design['max']} seeds, settled at {level}"
            f"{f', equivalence margin ±{margin:g}' if margin else ''}; {added} trial(s) run in "
            f"{_minutes(exp.record.wall_s)}; {stop_text(exp.looks)}.")


def stop_text(looks: dict) -> str:
    """Why the design stopped, from its last look's decisions: a resolved, an equivalent, a futile and a
    max-reached comparison are different endings, and each is named."""
    if looks.get("stopped") == "budget":
        return "stopped: the budget was spent"
    last = looks["looks"][-1]["comparisons"] if looks.get("looks") else {}
    names = {"resolved": "resolved", "equivalent": "shown equivalent", "futile": "stopped for futility",
             "max": "at max seeds, unresolved"}
    counts = pd.Series([c.get("decision") or "open" for c in last.values()]).value_counts()
    parts = [f"{n} {names.get(d, d)}" for d, n in counts.items()]
    return "stopped: " + (", ".join(parts) if parts else str(looks.get("stopped")))


def _minutes(seconds: float | None) -> str:
    return f"{seconds / 60:.1f} min" if seconds else "—"


