"""What a search costs as it grows: N short trials through `run_search.py`, for several N.

    python -m bench.search_overhead --trials 10,100,1000 --out DIR [--epochs 2] [--concurrency 2]

Each N is one random search over lr at the `smoke` profile (ResNet-18, 16 images of 32x64 a trial: ~2 s trials on
2 cores), run as its own `run_search.py` process with its own local Ray, then its report built by
`python -m analysis.report`. Per N it prints and writes (DIR/overhead.json, DIR/overhead.md): the command's wall
time, the share of the cores' time spent inside trials (the trials' own time as Tune counts it, summed, over
wall x cores), the per-trial overhead split, the driver's peak memory, the storage the experiment keeps and the
report's build time and peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml
from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]


def _spec(folder: Path, n: int, concurrency: int) -> Path:
    spec = {"name": f"overhead_{n}", "base": [str(REPO / "search" / "spaces" / "base.yaml")],
            "fixed": {"optimizer": "adam", "encoder": "resnet18"}, "space": {"lr": {"loguniform": [1.0e-4, 1.0e-2]}},
            "search": {"algorithm": "random", "num_samples": n, "max_concurrent": concurrency},
            "scheduler": {"type": "none"}}
    path = folder / f"overhead_{n}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _watched(cmd: list[str], log: Path) -> tuple[int, float, float]:
    """Run `cmd`; (exit code, wall seconds, peak RSS of that process in MiB, sampled every 0.2 s)."""
    import psutil

    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        watched, peak = psutil.Process(proc.pid), 0.0
        while proc.poll() is None:
            try:
                peak = max(peak, watched.memory_info().rss / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.2)
    return proc.returncode, time.perf_counter() - started, peak


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(n: int, folder: Path, epochs: int, concurrency: int, cores: int) -> dict:
    storage = folder / "storage"
    cmd = [sys.executable, "run_search.py", str(_spec(folder, n, concurrency)), "--profile", "smoke", "--storage",
           str(storage), "--no-dashboard", "--no-report", "--set", f"epochs={epochs}"]
    code, wall, peak = _watched(cmd, folder / f"search_{n}.log")
    if code != 0:
        raise SystemExit(f"N={n}: run_search.py exited {code}; see {folder / f'search_{n}.log'}")
    exp = storage / f"overhead_{n}"
    df = pd.read_parquet(exp / "results.parquet")
    record = json.loads((exp / "mtl_experiment.json").read_text())
    inside = float(df["train_time_s"].sum())
    part = {k: float(df[f"time_{k}_s"].mean()) for k in ("actor_start", "trainable_setup", "startup", "data",
                                                          "train", "eval", "checkpoint", "other")}
    # what the cores did for a trial besides its own time: start-up outside Tune's clock and Tune's bookkeeping
    slot = wall * min(concurrency, cores) / n
    part["tune_bookkeeping"] = max(slot - float(df["train_time_s"].mean()) - part["actor_start"], 0.0)
    report_code, report_s, report_peak = _watched([sys.executable, "-m", "analysis.report", str(exp)],
                                                   folder / f"report_{n}.log")
    return {"trials": n, "completed": int((df["status"] == "completed").sum()), "wall_s": round(wall, 1),
            "tune_loop_s": record.get("wall_s"), "trial_s_mean": round(inside / n, 2),
            "inside_share": round(inside / (wall * cores), 3), "per_trial_s": {k: round(v, 3) for k, v in part.items()},
            "driver_peak_mib": round(peak), "storage_mb": round(_du(exp) / 2**20, 1),
            "report_s": round(report_s, 1), "report_peak_mib": round(report_peak), "report_ok": report_code == 0}


def markdown(results: list[dict], cores: int) -> str:
    rows = [[r["trials"], r["wall_s"], r["trial_s_mean"], f"{100 * r['inside_share']:.0f} %",
             ", ".join(f"{k} {v:.2f}" for k, v in r["per_trial_s"].items()), r["driver_peak_mib"], r["storage_mb"],
             r["report_s"], r["report_peak_mib"]] for r in results]
    return tabulate(rows, tablefmt="github", headers=[
        "trials", "wall (s)", "trial (s)", f"cores' time in trials ({cores} cores)", "per trial (s)",
        "driver peak (MiB)", "storage (MB)", "report (s)", "report peak (MiB)"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.search_overhead",
                                description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--trials", default="10,100,1000", help="comma-separated trial counts")
    p.add_argument("--out", required=True, help="folder for overhead.json / overhead.md and the logs")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cores, results = os.cpu_count() or 1, []
    for n in (int(t) for t in a.trials.split(",")):
        with tempfile.TemporaryDirectory(prefix=f"overhead-{n}-") as tmp:  # checkpoints and all: deleted after
            results.append(measure(n, Path(tmp), a.epochs, a.concurrency, cores))
            for log in Path(tmp).glob("*.log"):
                log.replace(out / log.name)
        print(markdown(results[-1:], cores), flush=True)
    (out / "overhead.json").write_text(json.dumps({"cores": cores, "results": results}, indent=1))
    (out / "overhead.md").write_text(markdown(results, cores) + "\n")
    print(markdown(results, cores))


if __name__ == "__main__":
    main()
