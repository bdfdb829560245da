"""Where the driver's memory goes as a search grows: one search in this process, profiled with tracemalloc.

    python -m bench.driver_memory --trials 500 --out DIR [--at 100]

The search is bench.search_overhead's (a random search over lr at the `smoke` profile, 1 epoch a trial), run through
`app.cli.main` in this process, so the driver's Python heap can be traced. A sampler thread records, every 2 s, the
finished trials (trial folders with a result), the process's RSS and the traced Python heap; when `--at` trials
have finished it takes a snapshot, and another when 95 % of them have (the search still running: after it, Tune
frees its trials). DIR/driver_memory.json holds the samples and the allocation sites that grew most between the
two snapshots (by source line, 8 frames), and DIR/driver_memory.md the summary: MiB per 100 trials of RSS and of
the Python heap while the search runs, what its end (reading every trial back) adds, and the top growth sites.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import psutil

from bench.search_overhead import _spec

SAMPLE_S = 2.0


def _finished(storage: Path, name: str) -> int:
    return sum(1 for _ in (storage / name).glob("*/result.json")) if (storage / name).is_dir() else 0


class Sampler(threading.Thread):
    def __init__(self, storage: Path, name: str, at: int) -> None:
        super().__init__(daemon=True)
        self.storage, self.name, self.at = storage, name, at
        self.samples: list[dict] = []
        self.first: tracemalloc.Snapshot | None = None
        self.second: tracemalloc.Snapshot | None = None
        self.total = 0
        self.done = threading.Event()

    def run(self) -> None:
        proc, started = psutil.Process(), time.monotonic()
        while not self.done.is_set():
            n = _finished(self.storage, self.name)
            heap, _ = tracemalloc.get_traced_memory()
            self.samples.append({"t_s": round(time.monotonic() - started, 1), "trials": n,
                                 "rss_mib": round(proc.memory_info().rss / 2**20, 1),
                                 "heap_mib": round(heap / 2**20, 1)})
            if self.first is None and n >= self.at:
                self.first = tracemalloc.take_snapshot()
            if self.second is None and n >= 0.95 * self.total:
                self.second = tracemalloc.take_snapshot()
            self.done.wait(SAMPLE_S)


def _slope(samples: list[dict], key: str, low: int) -> float:
    """MiB per 100 trials of `key` between the first sample at >= `low` trials and the last."""
    start = next((s for s in samples if s["trials"] >= low), None)
    end = samples[-1]
    if start is None or end["trials"] <= start["trials"]:
        return float("nan")
    return 100 * (end[key] - start[key]) / (end["trials"] - start["trials"])


def profile(trials: int, at: int, out: Path) -> dict:
    from app.cli import main as run_search

    work = Path(tempfile.mkdtemp(prefix="driver_memory_"))
    storage, name = work / "storage", f"overhead_{trials}"
    spec = _spec(work, trials, 2)
    tracemalloc.start(8)
    sampler = Sampler(storage, name, at)
    sampler.total = trials
    sampler.start()
    code = run_search([str(spec), "--profile", "smoke", "--storage", str(storage), "--no-dashboard", "--no-report",
                       "--wandb", "off", "--set", "epochs=1"])
    sampler.done.set()
    sampler.join()
    growth = []
    if sampler.first is not None and sampler.second is not None:
        for stat in sampler.second.compare_to(sampler.first, "traceback")[:15]:
            growth.append({"size_diff_kib": round(stat.size_diff / 1024, 1), "count_diff": stat.count_diff,
                           "where": [f"{f.filename.split('site-packages/')[-1]}:{f.lineno}"
                                     for f in stat.traceback][-8:]})
    running = [s for s in sampler.samples if s["trials"] < trials] or sampler.samples
    end = max(s["rss_mib"] for s in sampler.samples) - running[-1]["rss_mib"]
    result = {"trials": trials, "exit": code, "at": at, "samples": sampler.samples, "growth": growth,
              "rss_mib_per_100": round(_slope(running, "rss_mib", at), 2),
              "heap_mib_per_100": round(_slope(running, "heap_mib", at), 2), "end_rss_mib": round(end, 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "driver_memory.json").write_text(json.dumps(result, indent=1))
    lines = [f"{trials} trials (exit {code}); while it runs, from {at} trials on: RSS +{result['rss_mib_per_100']} MiB "
             f"per 100 trials, traced Python heap +{result['heap_mib_per_100']} MiB per 100 trials; its end adds "
             f"{result['end_rss_mib']} MiB of RSS", "",
             "| growth (KiB) | blocks | allocated at (innermost last) |", "|---|---|---|"]
    lines += [f"| {g['size_diff_kib']} | {g['count_diff']} | {' <- '.join(reversed(g['where'][-3:]))} |"
              for g in growth]
    (out / "driver_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.driver_memory",
                                description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--trials", type=int, default=500, help="trials in the search.")
    p.add_argument("--at", type=int, default=100, help="finished trials at the first snapshot.")
    p.add_argument("--out", required=True, help="the folder for driver_memory.json and .md.")
    a = p.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    profile(a.trials, a.at, Path(a.out))


if __name__ == "__main__":
    main()
