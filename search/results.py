"""`results.parquet`: one row per trial - flat resolved config, final and best metrics, status."""

from __future__ import annotations

import io
import math
from typing import Any

import pandas as pd
from tabulate import tabulate

from search.trials import Experiment

FINAL = ("multitask", "semseg_miou", "depth_silog", "depth_abs_rel", "depth_rmse", "depth_delta1", "train_loss")


def trial_status(last: dict[str, Any], error: Exception | None, planned_epochs: int) -> str:
    """completed | diverged | error | stopped early at epoch k (a scheduler or an interrupt ended it)."""
    if error is not None:
        return "error"
    status = last.get("status")
    if status in ("completed", "diverged"):
        return status
    epoch = int(last.get("epoch") or 0)
    if epoch >= planned_epochs:
        return "completed"
    return f"stopped early at epoch {epoch}"


def _best(history: pd.DataFrame, metric: str, mode: str) -> dict[str, Any]:
    if history is None or history.empty or metric not in history:
        return {}
    values = pd.to_numeric(history[metric], errors="coerce")
    if values.isna().all():
        return {}
    i = values.idxmax() if mode == "max" else values.idxmin()
    best = history.loc[i]
    return {"best_epoch": int(best.get("epoch", 0)), **{f"best_{k}": best.get(k) for k in FINAL if k in best}}


def trial_row(exp: Experiment, result, price: float | None) -> dict[str, Any]:
    config = result.config or {}
    cfg = exp.trial_config(config)
    last = dict(result.metrics or {})
    history = result.metrics_dataframe
    row: dict[str, Any] = {
        "trial_id": last.get("trial_id") or str(result.path).rstrip("/").rsplit("/", 1)[-1].split("_")[0],
        "trial_dir": str(result.path).rstrip("/").rsplit("/", 1)[-1],
        "variant": config.get("variant"),
        "seed": cfg.seed,
        "status": trial_status(last, result.error, cfg.epochs),
        "error": None if result.error is None else str(result.error).strip().splitlines()[-1][:500],
        "epochs_run": int(last.get("epoch") or 0),
        "epochs_planned": cfg.epochs,
    }
    row.update({k: last.get(k) for k in FINAL})
    row.update(_best(history, exp.metric, exp.mode))
    row["train_time_s"] = last.get("time_total_s")
    row["train_img_per_s"] = (float(pd.to_numeric(history["train_img_per_s"], errors="coerce").mean())
                              if history is not None and "train_img_per_s" in history else None)
    row["parameters"] = last.get("parameters")
    row["peak_memory_mb"] = (float(pd.to_numeric(history["peak_memory_mb"], errors="coerce").max())
                             if history is not None and "peak_memory_mb" in history else None)
    hours = (row["train_time_s"] or 0) / 3600
    row["cost"] = round(hours * price, 4) if price is not None else None
    row.update({f"config/{k}": _plain(k, v) for k, v in cfg.to_flat().items()})
    return row


_TEXT_FIELDS = ("pretrained", "crop_size")  # unions (bool | path, int | [h, w]): one type per parquet column


def _plain(key: str, value: Any) -> Any:
    """Parquet needs one type per column: lists and union-typed fields become their YAML-ish text."""
    if isinstance(value, list):
        return "[" + ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in value) + "]"
    if key in _TEXT_FIELDS:
        return str(value).lower() if isinstance(value, bool) else str(value)
    return value


def results_frame(exp: Experiment, result_grid) -> pd.DataFrame:
    price = exp.spec.trial_price_per_hour
    started = [result_grid[i] for i in range(len(result_grid)) if (result_grid[i].config or {}).get("variant")]
    rows = [trial_row(exp, r, price) for r in started]  # never-started trials of an interrupted run: none yet
    df = pd.DataFrame(rows)
    order = {r.name: i for i, r in enumerate(exp.rows)}
    if not df.empty:
        df = df.sort_values(["variant", "seed"], key=lambda s: s.map(order) if s.name == "variant" else s)
    return df.reset_index(drop=True)


def parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def compact_table(df: pd.DataFrame) -> str:
    def num(v):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"

    rows = [[r["variant"], r["seed"], r["status"], num(r.get("multitask")), num(r.get("semseg_miou")),
             num(r.get("depth_silog")), r["epochs_run"]] for _, r in df.iterrows()]
    return tabulate(rows, headers=["variant", "seed", "status", "multitask", "mIoU", "SI-log", "epochs"])
