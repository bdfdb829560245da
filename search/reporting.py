"""The end of a run, as search/ sees it: hooks that analysis/ fills (wired in app.cli). No Ray import here: the
command line builds it before Ray's loopback mode is chosen."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Reporting:
    """What the end of a run prints and builds. analysis/ supplies both (app.cli wires it): search/ never imports
    analysis/. Without it a run still writes results.parquet and the record, and prints where they are."""

    summary: Callable[[pd.DataFrame], str] | None = None  # the compact table and time split, printed at the end
    report: Callable[[str], str] | None = None  # experiment folder -> the report it built
