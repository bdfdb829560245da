"""The course's findings, checked against our experiments: docs/findings.md.

    python -m analysis.findings EXPERIMENT_DIR... [--out docs/findings.md] [--copy docs/findings]
                                [--intro FILE] [--outro FILE]

Each EXPERIMENT_DIR (local or s3://) needs only its saved artifacts (`core.saved`), so the folders
under docs/findings/ rebuild the page as well as the original runs do. One row per course finding: the course's
claim, our Δ with its 95 % CI and paired p (Holm-adjusted across the page), and a verdict - reproduced,
contradicted, or unresolved (with the seeds that would resolve it) - plus the run's command and wall time.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.asha_study import asha_study, study_markdown
from analysis.findings_page import delta_m_section, footnote, looks_markdown, markdown_table, runs_markdown
from core.saved import SavedExperiment, copy_artifacts, read_saved
from stats.inference import ALPHA, axis_trends, holm, seeds_needed
from stats.planning import seeds_for_power
from stats.sequential import pair_test

NOT_OFFLINE = "needs the torchvision ImageNet weights, which this offline machine does not have"
SCRATCH_NOTE = "from scratch (--set pretrained=false)"


@dataclass(frozen=True)
class Finding:
    claim: str  # the course's words (field notes)
    experiment: str
    variant: str  # Δ = metric(variant) - metric(baseline)
    baseline: str
    expect: int = 1  # the sign of Δ multitask the course saw; 0: "no difference"
    kind: str = "effect"  # effect | same | diverges | posthoc
    missing: str | None = None  # why the experiment may have no results (shown when it has none)
    setup: str = ""  # how this comparison departs from the course's, said on its row
    fallback: Finding | None = None  # the comparison used when `experiment` has no results
    trend_axis: str | None = None  # test the slope along this ablated axis (all rows) instead of one pair
    margin_post_hoc: str = ""  # why the spec's equivalence margin counts as set after the data (then not settled)


FINDINGS = (
    Finding("Adam 1e-4 beats SGD 0.01", "optimizer_lr", "optimizer=adam, lr=0.0001", "optimizer=sgd, lr=0.01"),
    Finding("Adam at 1e-1 or more diverges (or scores 0)", "optimizer_lr", "optimizer=adam, lr=0.1",
            "optimizer=adam, lr=0.0001", expect=-1, kind="diverges"),
    Finding("Bigger batch × epochs is better (37.8 → 48.2)", "batch_epochs", "batch_size=16, epochs=64",
            "batch_size=4, epochs=16"),
    Finding("Task weights are flat (differences ~1 point; best near 0.6 / 0.4)", "task_weights",
            "seg 0.8 / depth 0.2", "seg 0.2 / depth 0.8", expect=0, kind="same", trend_axis="loss_weights"),
    Finding("ImageNet pretraining: +4 multitask", "pretrained_dilation", "ImageNet-pretrained", "from scratch",
            missing=NOT_OFFLINE),
    # the course measured dilation on a pretrained encoder; without weights, ablations/dilation.yaml asks the
    # nearby question from scratch and the row says so
    Finding("Dilation (F, F, T): +11 multitask", "pretrained_dilation", "pretrained + dilation (F, F, T)",
            "ImageNet-pretrained", missing=NOT_OFFLINE,
            fallback=Finding("Dilation (F, F, T): +11 multitask", "dilation", "dilation (F, F, T)", "no dilation",
                             setup="both encoders untrained (the course's were ImageNet-pretrained)")),
    Finding("ASPP + skip: +8 multitask", "aspp_skip", "ASPP + skip", "neither"),
    Finding("Branched beats joint: +1.4 (at +20 % parameters, +40 % time)", "architecture", "branched", "joint"),
    Finding("Distilled ≈ branched", "architecture", "distilled", "branched", expect=0, kind="same",
            margin_post_hoc="its ±1 margin entered ablations/architecture.yaml after the 3-seed result was committed"),
    Finding("SE + ResNet-50: +0.6", "se", "ResNet-50 + SE", "ResNet-34"),
    Finding("L1 beats L2 for depth: +1.6", "depth_loss", "L1", "L2"),
    Finding("berHu beats L2 for depth: +1.7", "depth_loss", "berHu", "L2"),
    Finding("Depth unit: standardised > log", "depth_unit", "standardized", "log"),
    Finding("Depth unit: log > min-max", "depth_unit", "log", "min-max"),
    Finding("Multi-scale TTA with averaged depth hurts: −3", "tta", "multiscale", "off", expect=-1, kind="posthoc"),
)
METRICS = ("multitask", "semseg_miou", "depth_silog")


def _by_seed(frame: pd.DataFrame, metric: str) -> pd.Series:
    return pd.Series(pd.to_numeric(frame[metric], errors="coerce").to_numpy(), index=frame["seed"].to_numpy())


def _pair(f: Finding, exp: SavedExperiment) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The completed trials (or post-hoc rows) of the finding's two sides."""
    if f.kind == "posthoc":
        ph = exp.posthoc if exp.posthoc is not None else pd.DataFrame(columns=["tta", "status"])
        return ph[ph["tta"] == f.variant], ph[ph["tta"] == f.baseline]
    return exp.completed(f.variant), exp.completed(f.baseline)


def measure(f: Finding, exp: SavedExperiment | None) -> dict:
    """Δ multitask (with CI, paired p, seeds needed) and Δ mIoU / Δ SI-log for one finding."""
    row = {"claim": f.claim, "experiment": f.experiment, "comparison": f"{f.variant} vs {f.baseline}"}
    if exp is None:
        return {**row, "note": f.missing or "no results for this experiment yet"}
    scratch = exp.record.set.get("pretrained") is False
    row["setup"] = "; ".join(s for s in (f.setup, SCRATCH_NOTE if scratch else "") if s)
    mine, base = _pair(f, exp)
    row.update({f"n_{side}": len(x) for side, x in (("variant", mine), ("baseline", base))})
    design = exp.record.adaptive  # seeds added by the adaptive design: its group-sequential test
    margins = exp.record.design.margins
    row["design"] = f"{design['first']}..{design['max']}" if design else ""
    for metric in METRICS:
        margin = margins.get(metric) if f.kind == "same" else None
        c = pair_test(_by_seed(mine, metric), _by_seed(base, metric), design, margin) if len(mine) and len(base) \
            else {}
        if margin:
            row["margin"] = margin
        prefix = "" if metric == "multitask" else f"{metric}_"
        row.update({f"{prefix}{k}": v for k, v in c.items()})
    if f.trend_axis:  # the row's test is the OLS slope over every row and seed (seed blocks)
        fit = axis_trends(exp.frame, [f.trend_axis], ["multitask"]).iloc[0]
        row.update({"trend": f"slope per unit of {fit['axis']}", "delta": fit["slope"], "delta_ci_low": fit["ci_low"],
                    "delta_ci_high": fit["ci_high"], "p_value": fit["p_value"], "n_trend": int(fit["n"])})
    if f.kind == "diverges":
        # trials that trained to the end or diverged; errored or out-of-memory ones say nothing about the claim
        trials = exp.frame[(exp.frame["variant"] == f.variant) & exp.frame["status"].isin(["completed", "diverged"])]
        row["diverged"] = int((trials["status"] == "diverged").sum())
        row["trials"] = len(trials)
        done = trials[trials["status"] == "completed"]
        row["zero"] = int((pd.to_numeric(done["multitask"], errors="coerce") <= 0.5).sum())
    if f.experiment == "architecture" and len(mine) and len(base):
        for col in ("parameters", "train_time_s"):
            row[f"{col}_ratio"] = float(pd.to_numeric(mine[col]).mean() / pd.to_numeric(base[col]).mean())
    return row


def verdict(f: Finding, r: dict) -> str:
    if isinstance(r.get("note"), str):
        return f"not run: {r['note']}"
    if f.kind == "diverges":
        if not r.get("trials"):
            return f"not run: no completed or diverged trial of {f.variant!r} in {f.experiment}"
        failed = r["diverged"] + r["zero"]
        # a count of trials, not a test: the verdict says its n
        return f"reproduced ({int(failed)}/{int(r['trials'])} seeds diverged or scored 0)" \
            if failed == r["trials"] else f"contradicted ({int(r['trials'] - failed)}/{int(r['trials'])} seeds trained)"
    counts = {k: r.get(k) if isinstance(r.get(k), (int, float)) and r.get(k) == r.get(k) else 0
              for k in ("n_variant", "n_baseline")}
    if not counts["n_variant"] or not counts["n_baseline"]:
        missing = f.variant if not counts["n_variant"] else f.baseline
        return f"not run: no completed trial of {missing!r} in {f.experiment}"
    p, delta = r.get("p_holm", math.nan), r.get("delta", math.nan)
    if not np.isfinite(p):
        return "unresolved (fewer than 2 seeds on a side)"
    resolved = p < ALPHA
    if f.kind == "same":
        margin = r.get("margin", math.nan)
        if resolved:
            return "contradicted (a difference is resolved)"
        if np.isfinite(r.get("p_equivalence_holm", math.nan)) and r["p_equivalence_holm"] < ALPHA:
            if f.margin_post_hoc:  # a margin chosen after seeing the data can be chosen to fit it: not settled
                return (f"unresolved: equivalent within ±{margin:g} (TOST), but the margin is post hoc "
                        f"({f.margin_post_hoc}); a run on fresh seeds with the margin fixed would settle it")
            return f"reproduced: equivalent within ±{margin:g} (TOST)"
        return "unresolved: no difference resolved (consistent; " + \
            (f"equivalence within ±{margin:g} not shown)" if np.isfinite(margin) else "no margin declared)")
    if resolved:
        return "reproduced" if np.sign(delta) == f.expect else "contradicted"
    need = r.get("seeds_needed", math.nan)
    if not np.isfinite(need):
        return "unresolved (more than 40 seeds for 80 % power)" if r.get("design") else "unresolved (no effect seen)"
    # a finished sequential design is not extended (--extend refuses another max): a new study on fresh seeds is
    how = f" in a new study on fresh seeds, designed 3..{int(need)}" if r.get("design") else ""
    return f"unresolved (~{int(need)} seeds for 80 % power{how})"


def findings_table(experiments: dict[str, SavedExperiment]) -> pd.DataFrame:
    findings = [_resolve(f, experiments) for f in FINDINGS]
    frame = pd.DataFrame([measure(f, experiments.get(f.experiment)) for f in findings])
    # the family: rows whose verdict rests on their p ("diverges" rows are judged on their trials' status), plus
    # the equivalence (TOST) test of each "≈" row with a declared margin
    tested = [p if f.kind != "diverges" else math.nan
              for f, p in zip(findings, _column(frame, "p_value"), strict=True)]
    equivalence = _column(frame, "p_equivalence").tolist()
    adjusted = holm(tested + equivalence)
    frame["p_holm"], frame["p_equivalence_holm"] = adjusted[:len(frame)], adjusted[len(frame):]
    family = int(np.isfinite(np.asarray(tested + equivalence, float)).sum())
    frame["family"] = family
    frame["family_equivalence"] = int(np.isfinite(np.asarray(equivalence, float)).sum())
    # one standard for every claim on the page: Δ mIoU and Δ SI-log are Holm-adjusted across the same rows
    in_family = np.isfinite(np.asarray(tested, float))
    for prefix in ("semseg_miou_", "depth_silog_"):
        raw = frame.get(f"{prefix}p_value", pd.Series(math.nan, index=frame.index)).to_numpy(float)
        frame[f"{prefix}p_holm"] = holm(np.where(in_family, raw, math.nan))
    # the seeds a row needs are those that reach 80 % power at Holm's first-step level, alpha / family
    if "effect_size" in frame and family:
        firsts = _column(frame, "design_first")
        frame["seeds_needed"] = [_seeds_needed(e, t, f, ALPHA / family) for e, t, f in zip(
            frame["effect_size"], frame["test"], firsts, strict=True)]
    frame["verdict"] = [verdict(f, r) for f, r in zip(findings, frame.to_dict("records"), strict=True)]
    return frame


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame else pd.Series(math.nan, index=frame.index)


def _seeds_needed(effect: float, test, first: float, level: float) -> float:
    """Seeds for 80 % power at the observed effect and Holm's first-step level: the fixed-n paired t's, or for a
    row of an adaptive design (`first`: its design's first look) the smallest `max` of a sequential design with the
    same first look that reaches it, simulated."""
    if not isinstance(test, str) or not np.isfinite(effect):
        return math.nan
    if np.isfinite(first):
        need = seeds_for_power(effect, int(first), level)
        return float(need) if need is not None else math.inf
    return seeds_needed(effect, test.startswith("paired"), level)


def _resolve(f: Finding, experiments: dict[str, SavedExperiment]) -> Finding:
    """The finding's own comparison, or its fallback when only the fallback's experiment has results."""
    if f.fallback is not None and f.experiment not in experiments and f.fallback.experiment in experiments:
        return f.fallback
    return f


def build_page(uris: list[str], intro: str = "", outro: str = "") -> str:
    experiments = {}
    for uri in uris:
        exp = read_saved(uri)
        experiments[exp.name] = exp
    table = findings_table(experiments)
    study = asha_study(list(experiments.values()))
    parts = [intro or "# Findings", "## The course's findings at CPU scale", markdown_table(table),
             footnote(table),
             "## Runs", runs_markdown(experiments)]
    parts += looks_markdown(experiments)
    parts += delta_m_section(experiments)
    if study is not None:
        parts += ["## ASHA efficiency study", study_markdown(study)]
    return "\n\n".join([*parts, *([outro] if outro else [])]) + "\n"


def parser() -> argparse.ArgumentParser:
    """The command line (also what docs/reference.md shows and a test checks)."""
    p = argparse.ArgumentParser(prog="python -m analysis.findings", description=__doc__.split("\n")[0])
    p.add_argument("experiments", nargs="+", help="experiment folders (local or s3://), e.g. docs/findings/*")
    p.add_argument("--out", default="docs/findings.md", help="the page to write")
    p.add_argument("--intro", help="a Markdown file placed above the tables (setup, explanations)")
    p.add_argument("--outro", help="a Markdown file placed below them (explanations of the verdicts)")
    p.add_argument("--copy", metavar="DIR", help="also copy each experiment's small artifacts into DIR/<name>/")
    return p


def main(argv: list[str] | None = None) -> None:
    p = parser()
    a = p.parse_args(argv)
    if a.copy:
        for uri in a.experiments:
            print(f"copied: {copy_artifacts(uri, a.copy)}")
    try:
        intro, outro = (Path(f).read_text().strip() if f else "" for f in (a.intro, a.outro))
        page = build_page(a.experiments, intro, outro)
    except OSError as e:  # a folder without results, a missing intro file: one line, exit 2
        p.error(str(e))
    Path(a.out).write_text(page)
    print(f"findings: {a.out}")


if __name__ == "__main__":
    main()
