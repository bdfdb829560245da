"""Paired per-seed differences: the one place that decides which seeds pair, in which order, and what is dropped.

Variants that share a seed share their initialisation and data order, so the difference on that seed removes the
seed's shared part. Every test of the platform (the fixed-n paired t, the group-sequential test, TOST, the adaptive
Searcher's looks, `--plan-from`) reads its differences from here: seeds in ascending order (the order the
sequential design adds them), only seeds where both sides have a finite value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Paired:
    diffs: np.ndarray  # (n,) variant - reference, in ascending seed order
    seeds: tuple  # the n seeds both sides have
    dropped: tuple  # seeds only one side has (or where one side is not finite)

    @property
    def n(self) -> int:
        return len(self.diffs)

    def dropped_text(self) -> str:
        return ", ".join(str(s) for s in self.dropped)


def _finite(values: Mapping | pd.Series) -> dict:
    """seed -> value, for the values that are finite numbers."""
    if isinstance(values, pd.Series):
        try:
            numbers = values.to_numpy(dtype=float)
        except (TypeError, ValueError):
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        return {s: v for s, v in zip(values.index.tolist(), numbers.tolist(), strict=True) if math.isfinite(v)}
    out = {}
    for seed, value in values.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            out[seed] = v
    return out


def paired_differences(variant: Mapping | pd.Series, reference: Mapping | pd.Series) -> Paired:
    """variant - reference on the seeds both have a finite value for (both: seed -> value)."""
    for side in (variant, reference):
        if isinstance(side, pd.Series) and not side.index.is_unique:
            raise ValueError("paired_differences: a seed appears twice on one side")
    a, b = _finite(variant), _finite(reference)
    shared = sorted(set(a) & set(b))
    dropped = tuple(sorted(set(a) ^ set(b)))
    return Paired(np.array([a[s] - b[s] for s in shared], dtype=float), tuple(shared), dropped)


def frame_differences(frame: pd.DataFrame, row: str, reference: str, metric: str) -> Paired:
    """Paired differences of two rows of a results frame (one row per trial: `variant`, `seed`, the metric)."""
    def by_seed(name: str) -> pd.Series:
        part = frame[frame["variant"] == name]
        return pd.Series(pd.to_numeric(part[metric], errors="coerce").to_numpy(), index=part["seed"].to_numpy())

    return paired_differences(by_seed(row), by_seed(reference))
