"""Post-hoc ablations on checkpoints: each completed trial's best checkpoint evaluated under every test-time
augmentation setting, without retraining.

    python -m analysis.posthoc EXPERIMENT --tta off,flip,multiscale [--split val|test]

Writes EXPERIMENT/posthoc/ (`table.md`, `posthoc.parquet` with one row per trial and setting, `stats.csv`); the
report shows the table when it exists. Within each trained variant the settings are compared with the first one
(`off`), paired by seed - the same weights evaluated both ways - with Holm across settings, as in the main table.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd
import torch

from analysis.predict import trial_model
from analysis.tables import ablation_stats, display_table, stats_footnote
from core.results import ExperimentResults, load_results
from mtl.data.describe import dataset_info
from mtl.data.loading import build_data, make_loader
from mtl.engine import Runtime, evaluate

TTA_SETTINGS = ("off", "flip", "multiscale")
COLUMNS = ["multitask", "semseg_miou", "depth_silog"]


def evaluate_trials(res: ExperimentResults, settings: list[str], split: str = "val") -> pd.DataFrame:
    """One row per (completed trial, setting) with the metrics of its best checkpoint on `split`."""
    rows = []
    completed = res.frame[res.frame["status"] == "completed"]
    models = {t: trial_model(res, t) for t in completed["trial_id"]}
    missing = sorted(t for t, m in models.items() if m is None)
    if missing and len(missing) < len(models):
        # evaluating only the trials a policy kept (e.g. each row's best seed) would bias every comparison
        raise SystemExit(f"{res.uri}: {len(missing)} of {len(models)} completed trials kept no weights (the "
                         "checkpoint policy of the run; see checkpoints.json); post-hoc evaluation needs every "
                         "trial's: run the spec with `report: {posthoc_tta: [...]}` or `--checkpoints all`")
    for _, trial in completed.iterrows():
        loaded = models[trial["trial_id"]]
        if loaded is None:
            continue
        cfg, model = loaded
        data = build_data(cfg.replace(in_memory=False), with_test=split == "test")
        loader = make_loader(data.test if split == "test" else data.val, cfg.val_batch_size, cfg.seed, False, 0)
        rt = Runtime(torch.device("cpu"), data.unit, info=dataset_info(cfg.data))
        for tta in settings:
            metrics = evaluate(model, loader, rt, tta)
            rows.append({"trial_id": trial["trial_id"], "variant": trial["variant"], "seed": trial["seed"],
                         "tta": tta, "split": split, "status": "completed", **{k: metrics[k] for k in COLUMNS}})
    return pd.DataFrame(rows)


def posthoc_stats(frame: pd.DataFrame, settings: list[str]) -> pd.DataFrame:
    """Per trained variant: the settings as rows, Δ against the first setting (paired by seed, Holm)."""
    parts = []
    for variant, group in frame.groupby("variant", sort=False):
        stats_df = ablation_stats(group.assign(variant=group["tta"]), list(settings), settings[0], COLUMNS)
        parts.append(stats_df.assign(trained=variant))
    return pd.concat(parts, ignore_index=True)


def markdown(stats_df: pd.DataFrame, split: str) -> str:
    out = [f"# Post-hoc test-time augmentation ({split} split, best checkpoint of each trial)", ""]
    for variant, part in stats_df.groupby("trained", sort=False):
        out += [f"## trained: {variant}", "", display_table(part.drop(columns="trained")).to_markdown(index=False),
                ""]
    return "\n".join([*out, stats_footnote(stats_df), ""])


def run_posthoc(uri: str, settings: list[str], split: str = "val") -> Path:
    """Evaluate, tabulate and write EXPERIMENT/posthoc (S3 experiments: a local folder, also uploaded)."""
    res = load_results(uri)
    frame = evaluate_trials(res, settings, split)
    if frame.empty:
        raise SystemExit(f"{uri}: no completed trial with a checkpoint to evaluate")
    stats_df = posthoc_stats(frame, settings)
    out = Path(tempfile.mkdtemp(prefix="mtl-posthoc-")) if res.storage.is_s3 else Path(res.uri) / "posthoc"
    out.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out / "posthoc.parquet", index=False)
    stats_df.to_csv(out / "stats.csv", index=False)
    (out / "table.md").write_text(markdown(stats_df, split))
    if res.storage.is_s3:
        for f in out.iterdir():
            res.storage.write_bytes(f"{res.uri.removeprefix('s3://')}/posthoc/{f.name}", f.read_bytes())
    return out / "table.md"


def parser() -> argparse.ArgumentParser:
    """The command line (also what docs/reference.md shows and a test checks)."""
    p = argparse.ArgumentParser(prog="python -m analysis.posthoc",
                                description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("experiment", help="experiment directory or s3://bucket/prefix/name.")
    p.add_argument("--tta", default=",".join(TTA_SETTINGS), help="comma-separated settings; the first is the "
                   f"reference (allowed: {', '.join(TTA_SETTINGS)}).")
    p.add_argument("--split", default="val", choices=("val", "test"), help="the split to evaluate.")
    return p


def main(argv: list[str] | None = None) -> None:
    p = parser()
    a = p.parse_args(argv)
    settings = [s.strip() for s in a.tta.split(",") if s.strip()]
    bad = [s for s in settings if s not in TTA_SETTINGS]
    if bad or len(settings) < 2:
        p.error(f"--tta: need at least two of {', '.join(TTA_SETTINGS)}; got {a.tta!r}")
    print(run_posthoc(a.experiment, settings, a.split))


if __name__ == "__main__":
    main()
