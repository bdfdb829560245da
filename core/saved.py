"""An experiment's small saved artifacts - `mtl_experiment.json`, `results.parquet`, the post-hoc table - read
from a folder, local or s3://, without Tune's state or checkpoints (what docs/findings/ keeps, and all that
`analysis.findings` needs). `copy_artifacts` writes the same files into another folder."""

from __future__ import annotations

import io
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from core.layout import ARTIFACTS, LOOKS_FILE, POSTHOC_FILE, RECORD_FILE, RESULTS_FILE
from core.record import ExperimentRecord, parse_record
from core.storage import split_experiment_uri


@dataclass
class SavedExperiment:
    uri: str
    record: ExperimentRecord
    frame: pd.DataFrame  # one row per trial (results.parquet)
    posthoc: pd.DataFrame | None  # one row per (trial, setting), when `analysis.posthoc` ran
    looks: dict[str, Any] | None = None  # seed_looks.json of an adaptive-seeds design

    @property
    def name(self) -> str:
        return self.record.name

    def command(self) -> str:
        """The command that ran, as a reader would type it: the storage folder of the machine it ran on becomes
        the placeholder STORAGE."""
        return shown_command(self.record.argv or ["run_search.py", self.record.spec_path or "?"])

    def completed(self, variant: str) -> pd.DataFrame:
        f = self.frame
        return f[(f["variant"] == variant) & (f["status"] == "completed")]


def shown_command(argv: list) -> str:
    """`python ARGV` with the value of --storage replaced by STORAGE (a machine's own folder means nothing to a
    reader, and may name a user)."""
    out, hide = [], False
    for a in (str(x) for x in argv):
        if hide:
            out.append("STORAGE")
        elif a.startswith("--storage="):
            out.append("--storage=STORAGE")
        else:
            out.append(a)
        hide = a == "--storage"
    return "python " + shlex.join(out)


def _read(storage, path: str) -> bytes | None:
    return storage.read_bytes(path) if storage.exists(path) else None


def read_saved(uri: str) -> SavedExperiment:
    """The saved artifacts of the experiment at `uri`; a clear error when it has no results yet."""
    storage, name = split_experiment_uri(uri)
    base = storage.experiment(name)
    record, results = _read(storage, f"{base}/{RECORD_FILE}"), _read(storage, f"{base}/{RESULTS_FILE}")
    if record is None or results is None:
        raise FileNotFoundError(f"{uri}: needs {RECORD_FILE} and {RESULTS_FILE} (written when a run ends)")
    posthoc, looks = _read(storage, f"{base}/{POSTHOC_FILE}"), _read(storage, f"{base}/{LOOKS_FILE}")
    return SavedExperiment(uri, parse_record(record), pd.read_parquet(io.BytesIO(results)),
                           pd.read_parquet(io.BytesIO(posthoc)) if posthoc else None,
                           json.loads(looks) if looks else None)


def copy_artifacts(uri: str, dest: str | Path) -> Path:
    """Copy an experiment's small artifacts (never checkpoints) into dest/<name>/; returns that folder."""
    storage, name = split_experiment_uri(uri)
    base = storage.experiment(name)
    out = Path(dest) / name
    for rel in ARTIFACTS:
        data = _read(storage, f"{base}/{rel}")
        if data is not None:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(data)
    return out
