"""Each task_weighting method's training step against fixed weights: a time ratio, measured in one run.

    python -m bench.aggregators [--profile smoke|cpu] [--architectures joint,branched] [--threads 1]
                                [--rounds 5] [--steps 3] --out DIR

One process builds each method's model (the profile's shapes, the course's part-1 architecture by default) and
times `--steps` training steps (`mtl.engine.train_step`: forward, the method's backward, the optimiser) per round;
rounds interleave the methods so drift in the machine's speed hits them alike. The median over rounds, and its
ratio to `fixed` of the same architecture, go to DIR/aggregators.json and .md. Gradient-aggregation methods pay a
backward pass per task through the shared part (TorchJD's Jacobian) plus their own solve; loss-weighting methods
(uncertainty, DWA, RLW's weights aside) cost what fixed weights cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from mtl.aggregation import METHODS, PAPERS
from mtl.config import TrialConfig
from mtl.data.depth_units import DepthUnit
from mtl.engine import Runtime, random_targets, train_step
from mtl.losses import TaskWeighting
from mtl.models import build_model
from mtl.optim import build_optimizer
from mtl.profiles import PROFILES

LOSS_WEIGHTING = ("fixed", "uncertainty", "dwa")


def _stepper(method: str, architecture: str, profile: str):
    """A closure running one training step of `method` on fixed random data (built once)."""
    cfg = TrialConfig.from_dict({**PROFILES[profile], "architecture": architecture, "task_weighting": method,
                                 "pretrained": False})
    torch.manual_seed(0)
    model = build_model(cfg)
    weighting = TaskWeighting(method, (0.5, 0.5), tasks=cfg.tasks)
    opt = build_optimizer(cfg, model, weighting)
    rt = Runtime(torch.device("cpu"), DepthUnit("standardized", 50.0, 50.0))
    b, (h, w) = cfg.batch_size, cfg.crop
    x, targets = torch.randn(b, 3, h, w), random_targets(cfg.tasks, b, h, w, torch.device("cpu"))

    def step() -> None:
        model.train()
        train_step(model, x, targets, opt, weighting, rt)

    step()  # warm-up: first-call allocations, the solver's set-up
    return step


def measure(methods: list[str], architecture: str, profile: str, rounds: int, steps: int) -> dict[str, float]:
    """Median ms per step of each method over interleaved rounds."""
    steppers = {m: _stepper(m, architecture, profile) for m in methods}
    times: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(rounds):
        for m, step in steppers.items():
            tick = time.perf_counter()
            for _ in range(steps):
                step()
            times[m].append((time.perf_counter() - tick) / steps * 1000)
    return {m: statistics.median(v) for m, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.aggregators",
                                description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--profile", default="smoke", choices=sorted(PROFILES))
    p.add_argument("--architectures", default="joint,branched")
    p.add_argument("--threads", type=int, default=1, help="torch threads: a trial's own count (cpus_per_trial)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    methods = [*LOSS_WEIGHTING, *METHODS]
    lines = []
    for arch in a.architectures.split(","):
        ms = measure(methods, arch, a.profile, a.rounds, a.steps)
        lines += [{"architecture": arch, "method": m, "paper": PAPERS.get(m, ""), "step_ms": round(v, 1),
                   "ratio_vs_fixed": round(v / ms["fixed"], 2), "extra": METHODS[m].extra if m in METHODS else None}
                  for m, v in ms.items()]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(lines)
    meta = {"profile": a.profile, "threads": a.threads, "rounds": a.rounds, "steps": a.steps,
            "torch": torch.__version__,
            "command": "python -m bench.aggregators " + " ".join(sys.argv[1:] if argv is None else argv)}
    (out / "aggregators.json").write_text(json.dumps({"meta": meta, "rows": lines}, indent=1))
    (out / "aggregators.md").write_text(f"{meta}\n\n{table.to_markdown(index=False)}\n")
    print(table.pivot(index="method", columns="architecture", values="ratio_vs_fixed").to_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
