"""docs/reference.md: every command's options as its `--help` prints them, made from the parsers themselves.

    python -m app.reference [--write docs/reference.md]

`tests/test_docs.py` rebuilds the page and fails when the committed one differs, so a renamed flag or a new
option cannot leave the reference behind.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path


def _parsers() -> list[tuple[str, Callable[[], argparse.ArgumentParser]]]:
    from analysis import export, findings, frontier, posthoc, report
    from search import cli

    return [("python run_search.py", cli.parser), ("python -m analysis.report", report.parser),
            ("python -m analysis.findings", findings.parser), ("python -m analysis.posthoc", posthoc.parser),
            ("python -m analysis.export", export.parser), ("python -m analysis.frontier", frontier.parser)]


def parsers() -> dict[str, argparse.ArgumentParser]:
    """Command (as the docs write it) -> its argparse parser."""
    return {command: make() for command, make in _parsers()}


def reference() -> str:
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal width: fixed, so the page is the same anywhere
    try:
        parts = ["# Command reference", "",
                 "Every option of the commands, as `--help` prints them (made by `python -m app.reference "
                 "--write docs/reference.md`; a test checks that this page matches the parsers).", ""]
        for command, p in parsers().items():
            parts += [f"## `{command}`", "", "```text", p.format_help().rstrip(), "```", ""]
        return "\n".join(parts)
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m app.reference", description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--write", metavar="FILE", help="write the page there (default: print it)")
    a = p.parse_args(argv)
    if a.write:
        Path(a.write).write_text(reference())
        print(f"reference: {a.write}")
    else:
        print(reference())


if __name__ == "__main__":
    main()
