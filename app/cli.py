"""`python run_search.py SPEC [options]`: search/ validates and runs the spec; analysis/ prints its table and builds
its report at the end. The one place that wires the two together (they never import each other)."""

from __future__ import annotations

import pandas as pd

from search import cli
from search.reporting import Reporting


def _summary(frame: pd.DataFrame) -> str:
    from analysis.tables import compact_table, time_split

    return f"{compact_table(frame)}\n{time_split(frame)}"


def _report(uri: str) -> str:
    from analysis.report import build_report  # matplotlib and Tune's analysis: only once a run has ended

    return str(build_report(uri))


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, Reporting(summary=_summary, report=_report))
