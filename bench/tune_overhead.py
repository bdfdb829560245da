"""Training throughput inside a Ray Tune trial vs the same `mtl.train` run outside it.

    python -m bench.tune_overhead [--profile cpu] [--threads 2] [--set train_images=2000 --set epochs=3]

Both runs use the same profile, config, data and thread count; epoch 1 (warm-up) is left out of
the averages. Prints img/s side by side and the ratio inside/outside (goal: >= 0.95). On a GPU machine,
`--profile full --set train_images=2000 --set epochs=3` compares a course-scale trial's steps in a few minutes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from tabulate import tabulate

from mtl.config import TrialConfig, parse_overrides
from mtl.profiles import PROFILES
from mtl.train import train

OVERRIDES = {"optimizer": "adam", "lr": 1e-4}


def _spec(tmp: Path, threads: int) -> Path:
    import yaml

    spec = tmp / "overhead.yaml"
    fixed = {**OVERRIDES, "cpu_threads": threads}
    spec.write_text(yaml.safe_dump({"name": "tune_overhead", "fixed": fixed, "resources": {"cpus": threads}}))
    return spec


def outside(cfg: TrialConfig) -> list[float]:
    history: list[float] = []
    train(cfg, lambda m, _p: history.append(m["train_img_per_s"]))
    return history[1:]


def inside(profile: str, threads: int, tmp: Path, sets: list[str]) -> list[float]:
    import pandas as pd

    from app.cli import main

    extra = [w for s in sets for w in ("--set", s)]
    code = main([str(_spec(tmp, threads)), "--storage", str(tmp / "results"), "--no-dashboard", "--no-report",
                 "--profile", profile, *extra])
    if code != 0:
        raise SystemExit(f"the Tune run failed with exit code {code}")
    progress = next((tmp / "results" / "tune_overhead").glob("*/progress.csv"))
    return list(pd.read_csv(progress)["train_img_per_s"])[1:]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.tune_overhead",
                                description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (both runs)")
    a = p.parse_args(argv)
    cfg = TrialConfig.from_dict({**PROFILES[a.profile], **OVERRIDES, "cpu_threads": a.threads,
                                 **parse_overrides(a.set)})
    with tempfile.TemporaryDirectory() as tmp:
        out = statistics.mean(outside(cfg))
        ins = statistics.mean(inside(a.profile, a.threads, Path(tmp), a.set))
    print(tabulate([[a.profile, a.threads, f"{out:.2f}", f"{ins:.2f}", f"{ins / out:.3f}"]],
                   headers=["profile", "threads", "outside img/s", "inside Tune img/s", "ratio inside/outside"]))


if __name__ == "__main__":
    main()
