"""An experiment directory (local or s3://) -> one tidy DataFrame, through Ray Tune's ExperimentAnalysis.

A row per trial: variant, seed, status (`completed`, `stopped early at epoch k`, `diverged`, `error`,
or `running, epoch k` while a search is still going), final and best-epoch metrics, epochs, train
time, img/s, parameters, peak memory, cost, and the resolved config as `config/<field>` columns.
Per-epoch histories are kept for curves. Reads saved artifacts only.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow.fs as pafs
import yaml
from ray.tune import ExperimentAnalysis

from core.layout import CHECKPOINT_MANIFEST, EXTENDED_FILE, RECORD_FILE, RESULTS_FILE, TRIAL_CONFIG_FILE
from core.perclass import unpacked
from core.record import ExperimentRecord, parse_record
from core.storage import Storage, megabytes, split_experiment_uri, tree_bytes

METRICS = ("multitask", "semseg_miou", "depth_silog", "depth_abs_rel", "depth_rmse", "depth_delta1", "train_loss")
# a third task's metrics: columns of the experiments that train it only (the course's tables stay as they were)
TASK_METRICS = ("normals_mean", "normals_median", "normals_11", "normals_22", "normals_30")
TIME_PARTS = ("startup", "data", "train", "eval", "checkpoint", "other")  # `time_<part>_s` of mtl.train
SETUP_PARTS = ("actor_start", "trainable_setup", "data_setup")  # before mtl.train's clock / inside its start-up
_TEXT_FIELDS = ("pretrained", "crop_size")  # unions (bool | path, int | [h, w]): one type per parquet column
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML was built with it


@dataclass
class ExperimentResults:
    uri: str
    record: ExperimentRecord
    frame: pd.DataFrame
    histories: dict[str, pd.DataFrame] = field(default_factory=dict)  # trial_id -> per-epoch metrics
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # trial_id -> resolved TrialConfig
    partial: bool = False
    storage: Storage | None = None
    analysis: ExperimentAnalysis | None = None

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def metric(self) -> str:
        return self.record.metric

    @property
    def mode(self) -> str:
        return self.record.mode

    def tune_analysis(self) -> ExperimentAnalysis:
        """Tune's view of the experiment (loaded on first use: ~45 ms a trial, the slowest part of a big report)."""
        if self.analysis is None:
            self.analysis = ExperimentAnalysis(self.uri.removeprefix("s3://"), storage_filesystem=self.storage.fs)
        return self.analysis

    @functools.cached_property
    def kept_checkpoints(self) -> dict[str, str] | None:
        """trial_id -> the checkpoint folder it kept, by the checkpoint policy's manifest; None without one."""
        try:
            manifest = json.loads(self.storage.read_text(f"{self.uri.removeprefix('s3://')}/{CHECKPOINT_MANIFEST}"))
        except (OSError, ValueError):
            return None
        return {t: e["path"] for t, e in manifest.get("kept", {}).items()}


def trial_status(trial_state: str, last: dict[str, Any], planned_epochs: int) -> str:
    if trial_state == "ERROR":
        return "error"
    epoch = int(last.get("epoch") or 0)
    if trial_state != "TERMINATED":
        return f"running, epoch {epoch}"
    if last.get("status") in ("completed", "diverged", "error"):
        return last["status"]
    return "completed" if epoch >= planned_epochs else f"stopped early at epoch {epoch}"


def _best(history: pd.DataFrame | None, metric: str, mode: str) -> dict[str, Any]:
    if history is None or history.empty or metric not in history:
        return {}
    values = pd.to_numeric(history[metric], errors="coerce")[::-1]  # on ties, the latest epoch wins
    if values.isna().all():
        return {}
    best = history.loc[values.idxmax() if mode == "max" else values.idxmin()]
    return {"best_epoch": int(best.get("epoch", 0)),
            **{f"best_{k}": best.get(k) for k in (*METRICS, *TASK_METRICS) if k in best}}


def _column(history: pd.DataFrame | None, name: str, how: str) -> float | None:
    if history is None or name not in history:
        return None
    values = pd.to_numeric(history[name], errors="coerce")
    return float(getattr(values, how)()) if values.notna().any() else None


def _plain(key: str, value: Any) -> Any:
    """Parquet wants one type per column: lists and union-typed fields become their YAML-ish text."""
    if isinstance(value, list):
        return "[" + ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in value) + "]"
    if key in _TEXT_FIELDS:
        return str(value).lower() if isinstance(value, bool) else str(value)
    return value


def trial_row(trial, config: dict[str, Any], history: pd.DataFrame | None, record: ExperimentRecord) -> dict:
    last = dict(trial.last_result or {})
    price = record.spec.get("trial_price_per_hour")
    row: dict[str, Any] = {
        "trial_id": trial.trial_id,
        "trial_dir": str(trial.path).rstrip("/").rsplit("/", 1)[-1],
        "variant": config.get("variant", trial.config.get("variant")),
        "seed": config.get("seed", trial.config.get("seed")),
        "status": trial_status(trial.status, last, int(config.get("epochs", 0))),
        "error": last.get("error_reason") or _error(trial),
        "epochs_run": int(last.get("epoch") or 0),
        "epochs_planned": config.get("epochs"),
        **{k: last.get(k) for k in METRICS},
        **{k: last[k] for k in TASK_METRICS if k in last},
        **unpacked(last),
        **_best(history, record.metric, record.mode),
        "train_time_s": last.get("time_total_s"),
        "train_img_per_s": _column(history, "train_img_per_s", "mean"),
        "train_step_ms": _column(history, "train_step_ms", "mean"),
        "parameters": last.get("parameters"),
        "peak_memory_mb": _column(history, "peak_memory_mb", "max"),
        **{f"time_{p}_s": last.get(f"time_{p}_s") for p in (*TIME_PARTS, *SETUP_PARTS, "wall")},
    }
    row["cost"] = round((row["train_time_s"] or 0) / 3600 * price, 4) if price is not None else None
    row.update({f"config/{k}": _plain(k, v) for k, v in config.items() if k != "variant"})
    return row


def _error(trial) -> str | None:
    if trial.status != "ERROR":
        return None
    try:
        text = str(trial.get_error() or "error")
    except Exception:  # the error file may not have been synced yet
        text = "error"
    return text.strip().splitlines()[-1][:500] if text.strip() else "error"


def _trial_config(storage: Storage, trial) -> dict[str, Any] | None:
    path = f"{str(trial.path).rstrip('/')}/{TRIAL_CONFIG_FILE}"
    if not storage.exists(path):
        return None  # never started
    return yaml.load(storage.read_text(path), Loader=_YAML_LOADER)  # libyaml's: 10 000 of them at a search's end


def _rebuilt_config(trial, record: ExperimentRecord) -> dict[str, Any] | None:
    """A trial that reported results but whose trial_config.yaml never reached the storage (on a cluster, a
    trial retried on another node after its first node died can finish before its files are synced): its config
    is rebuilt from the record as the trainable resolved it, so its results are not dropped."""
    if not trial.last_result:
        return None  # never started
    from mtl.config import TrialConfig

    overrides = next((r.overrides for r in record.rows if r.name == trial.config.get("variant")), None)
    if overrides is None:
        return None
    sampled = {k: v for k, v in trial.config.items() if k not in ("variant", "seed")}
    values = {**record.defaults, **overrides, **sampled, "seed": trial.config.get("seed")}
    return {"variant": trial.config.get("variant"), **TrialConfig.from_dict(values).to_flat()}


def _clean_history(history: pd.DataFrame) -> pd.DataFrame:
    # a trial stopped for a full storage reported one row without an epoch of its own: not part of its curve
    history = history[history["status"] != "storage_full"] if "status" in history else history
    # an epoch reported twice (a trial resumed from a checkpoint a killed driver's snapshot did not know): the last
    return history.drop_duplicates("epoch", keep="last") if "epoch" in history else history


def _finished_frame(storage: Storage, path: str, record: ExperimentRecord) -> pd.DataFrame | None:
    """results.parquet when the driver wrote it at the end of the latest run (nothing of Tune's is newer)."""
    if not record.finished or record.interrupted:
        return None
    infos = storage.fs.get_file_info(pafs.FileSelector(path))
    saved = next((i.mtime for i in infos if i.base_name == RESULTS_FILE), None)
    states = [i.mtime for i in infos if i.base_name.startswith("experiment_state")]
    if saved is None or not states or saved < max(states):
        return None
    return pd.read_parquet(io.BytesIO(storage.read_bytes(f"{path}/{RESULTS_FILE}")))


def _load_finished(storage: Storage, path: str, record: ExperimentRecord, frame: pd.DataFrame) -> ExperimentResults:
    """A finished experiment from its saved per-trial files, without unpickling Tune's state of every trial."""
    histories, configs = {}, {}
    own = frame[frame["extended_from"].isna()] if "extended_from" in frame else frame
    for trial_id, folder in zip(own["trial_id"], own["trial_dir"], strict=True):
        base = f"{path}/{folder}"
        if storage.exists(f"{base}/{TRIAL_CONFIG_FILE}"):  # see _rebuilt_config: the frame has the config columns
            configs[trial_id] = yaml.load(storage.read_text(f"{base}/{TRIAL_CONFIG_FILE}"), Loader=_YAML_LOADER)
        if storage.exists(f"{base}/progress.csv"):
            histories[trial_id] = _clean_history(pd.read_csv(io.BytesIO(storage.read_bytes(f"{base}/progress.csv"))))
    return ExperimentResults(storage.display(path), record, frame, histories, configs, False, storage)


def load_results(uri: str) -> ExperimentResults:
    """Everything the tables and plots need, from an experiment directory or s3:// URI."""
    storage, name = split_experiment_uri(uri)
    path = storage.experiment(name)
    if not storage.exists(f"{path}/{RECORD_FILE}"):
        raise FileNotFoundError(f"{storage.display(path)}: not an mtl-tune experiment (no {RECORD_FILE})")
    record = parse_record(storage.read_text(f"{path}/{RECORD_FILE}"))
    finished = _finished_frame(storage, path, record)
    if finished is not None and not finished.empty:
        return _load_finished(storage, path, record, finished)
    ea = ExperimentAnalysis(path, storage_filesystem=storage.fs)
    histories = {t: _clean_history(h) for t, h in ea.trial_dataframes.items()}
    frame, configs, unfinished = _trial_rows(storage, path, record, ea.trials, histories)
    # an adaptive design stops when its comparisons are settled: fewer trials than its maximum is not partial
    partial = bool(unfinished) or (record.adaptive is None and len(ea.trials) < record.trial_count)
    return ExperimentResults(storage.display(path), record, frame, histories, configs, partial, storage, ea)


def results_of_run(storage: Storage, path: str, trials: Sequence, histories: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The results table of a search that has just ended, from what its driver holds: Tune's trial objects and
    their per-epoch metrics (trial_id -> DataFrame, as Tune's ResultGrid read them). Reading both back from the
    storage again (load_results) cost ~26 s of the 83 s after Tune's loop at 10 000 trials."""
    record = parse_record(storage.read_text(f"{path}/{RECORD_FILE}"))
    cleaned = {t: _clean_history(h) for t, h in histories.items()}
    return _trial_rows(storage, path, record, trials, cleaned)[0]


def _trial_rows(storage: Storage, path: str, record: ExperimentRecord, trials: Sequence,
                histories: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict[str, dict[str, Any]], int]:
    """(one row per trial that started, sorted as the design lists its rows; the trials' configs; how many trials
    are unfinished)."""
    rows, configs, unfinished = [], {}, 0
    for trial in sorted(trials, key=lambda t: t.trial_id):  # the columns' order: not that of Tune's list
        config = _trial_config(storage, trial) or _rebuilt_config(trial, record)
        unfinished += trial.status not in ("TERMINATED", "ERROR")
        if config is not None:
            configs[trial.trial_id] = config
            rows.append(trial_row(trial, config, histories.get(trial.trial_id), record))
    frame = pd.DataFrame(rows)
    if not frame.empty:
        order = {name: i for i, name in enumerate(record.row_names)}
        frame = frame.sort_values(["variant", "seed", "trial_id"],
                                  key=lambda s: s.map(order) if s.name == "variant" else s).reset_index(drop=True)
    return with_extended(storage, path, frame), configs, unfinished


def with_extended(storage: Storage, path: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The trials of the experiment this one extends (`--extend`: their per-trial results, marked by
    `extended_from`), then this experiment's own; a (row, seed) this run retried keeps the new trial."""
    if not storage.exists(f"{path}/{EXTENDED_FILE}"):
        return frame
    prior = pd.read_parquet(io.BytesIO(storage.read_bytes(f"{path}/{EXTENDED_FILE}")))
    if not frame.empty:
        ran = set(zip(frame["variant"], frame["seed"], strict=True))
        prior = prior[[(v, s) not in ran for v, s in zip(prior["variant"], prior["seed"], strict=True)]]
    return pd.concat([prior, frame], ignore_index=True) if not frame.empty else prior.reset_index(drop=True)


def parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()




def storage_use(res: ExperimentResults) -> str:
    """One line: what the experiment keeps in storage, by the checkpoint policy's manifest, and its size."""
    path = res.uri.removeprefix("s3://")
    total = tree_bytes(res.storage.fs, path)
    try:
        manifest = json.loads(res.storage.read_text(f"{path}/{CHECKPOINT_MANIFEST}"))
    except (OSError, ValueError):
        return f"Storage: {megabytes(total)} in {res.uri} (no checkpoint policy recorded: an older experiment)."
    kept = manifest.get("kept", {})
    what = "best weights" if manifest.get("state") == "weights" else "full state and best weights"
    rule = manifest.get("keep") + (f" {manifest['limit']}" if manifest.get("keep") == "top" else "")
    names = ", ".join(f"{e['variant']} s{e['seed']}" for e in kept.values()) or "none"
    if len(kept) > 8:
        names = f"{len(kept)} trials"
    return (f"Storage: {len(kept)} finished trial(s) keep their {what} ({megabytes(manifest.get('kept_bytes', 0))}; "
            f"checkpoint policy keep={rule}: {names}); "
            f"{megabytes(manifest.get('freed_bytes', 0))} of checkpoints deleted as trials finished; "
            f"{megabytes(total)} in {res.uri} in all.")
