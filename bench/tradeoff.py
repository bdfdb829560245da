"""Multi-objective searches against their baselines, on the hypervolume of the front they find (mIoU, SI-log).

    python -m bench.tradeoff sampler --trials 40 --repeats 3 --out DIR
    python -m bench.tradeoff asha --spec ablations/task_weights.yaml --seeds 2 --epochs 8 --out DIR

`sampler`: a multi-objective Optuna search (NSGA-II through Tune) against random search, each `--trials` trials
at the smoke profile over lr and the task weights, repeated `--repeats` times with different sampler seeds: the
hypervolume of each search's front of completed trials (mtl.metrics.WORST_VALUES as reference), mean and 95 %
t-interval over the repeats.

`asha`: a ready spec's full grid against the same grid under Pareto ASHA (rows ranked by non-dominated sorting on
their seed means), both at the smoke profile with `--epochs`: the share of trial-epochs ASHA spent, and each seed's
front hypervolume of the rows' final results (completed and stopped rows alike: what a user would read), mean
and 95 % interval over seeds for both. Everything runs through `run_search.py`; results go to DIR/tradeoff_*.json
and .md; checkpoints are deleted with the temporary storage.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from mtl.metrics import WORST_VALUES
from stats.pareto import hypervolume, mean_ci

REPO = Path(__file__).resolve().parents[1]
OBJECTIVES = {"semseg_miou": "max", "depth_silog": "min"}
REFERENCE = [WORST_VALUES[m] for m in OBJECTIVES]


def _run(spec: dict, folder: Path, *extra: str) -> pd.DataFrame:
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))  # row names follow the order of the grid keys
    cmd = [sys.executable, "run_search.py", str(path), "--profile", "smoke", "--storage", str(folder / "r"),
           "--no-dashboard", "--no-report", *extra]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return pd.read_parquet(folder / "r" / spec["name"] / "results.parquet")


def _front_hv(frame: pd.DataFrame) -> float:
    done = frame[frame["status"] == "completed"]
    return hypervolume(done[list(OBJECTIVES)].to_numpy(dtype=float), list(OBJECTIVES.values()), REFERENCE)


def sampler(trials: int, repeats: int, epochs: int) -> dict:
    base = {"base": [str(REPO / "search" / "spaces" / "base.yaml")], "fixed": {"optimizer": "adam"},
            "space": {"lr": {"loguniform": [1.0e-4, 1.0e-2]}, "loss_weights": {"choice": [
                [0.2, 0.8], [0.35, 0.65], [0.5, 0.5], [0.65, 0.35], [0.8, 0.2]]}},
            "scheduler": {"type": "none"}, "objectives": OBJECTIVES}
    hv: dict[str, list[float]] = {"optuna": [], "random": []}
    for r in range(repeats):
        for algorithm in hv:
            spec = {**base, "name": f"{algorithm}_{r}", "fixed": {**base["fixed"], "seed": r},
                    "search": {"algorithm": algorithm, "num_samples": trials, "max_concurrent": 2}}
            with tempfile.TemporaryDirectory(prefix="bench-tradeoff-") as tmp:
                hv[algorithm].append(_front_hv(_run(spec, Path(tmp), "--set", f"epochs={epochs}")))
            print(f"repeat {r}: {algorithm} hypervolume {hv[algorithm][-1]:.1f}", flush=True)
    return {"trials": trials, "repeats": repeats, "epochs": epochs, "per_repeat": hv,
            "summary": {k: mean_ci(v) for k, v in hv.items()}}


def asha(spec_path: str, seeds: int, epochs: int, reduction_factor: float = 2) -> dict:
    spec = yaml.safe_load(Path(spec_path).read_text())
    spec["base"] = [str((Path(spec_path).parent / b).resolve()) for b in spec.get("base", [])]
    spec["objectives"] = OBJECTIVES
    out = {}
    for name, scheduler in (("grid", {"type": "none"}), ("pareto_asha", {"type": "asha", "grace_period": 1,
                                                                         "reduction_factor": reduction_factor})):
        with tempfile.TemporaryDirectory(prefix="bench-tradeoff-") as tmp:
            frame = _run({**spec, "name": f"{spec['name']}_{name}", "scheduler": scheduler}, Path(tmp),
                         "--seeds", str(seeds), "--set", f"epochs={epochs}")
        per_seed = [hypervolume(part[list(OBJECTIVES)].to_numpy(dtype=float), list(OBJECTIVES.values()), REFERENCE)
                    for _, part in frame.groupby("seed")]
        out[name] = {"trial_epochs": int(frame["epochs_run"].sum()), "trials": len(frame),
                     "hypervolume": mean_ci(per_seed), "per_seed": per_seed}
        print(f"{name}: {out[name]['trial_epochs']} trial-epochs, hypervolume {out[name]['hypervolume']}", flush=True)
    out["epoch_share"] = round(out["pareto_asha"]["trial_epochs"] / out["grid"]["trial_epochs"], 3)
    return {"spec": spec_path, "seeds": seeds, "epochs": epochs, "reduction_factor": reduction_factor, **out}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.tradeoff", description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("what", choices=("sampler", "asha"), help="which comparison to run")
    p.add_argument("--out", required=True, help="folder for tradeoff_<what>.json")
    p.add_argument("--trials", type=int, default=40, help="sampler: trials per search")
    p.add_argument("--repeats", type=int, default=3, help="sampler: searches per algorithm")
    p.add_argument("--spec", default=str(REPO / "ablations" / "task_weights.yaml"), help="asha: the ready spec")
    p.add_argument("--seeds", type=int, default=2, help="asha: seeds per row")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (sampler 2, asha 8)")
    p.add_argument("--reduction-factor", type=float, default=2, help="asha: Pareto ASHA's reduction factor")
    a = p.parse_args(argv)
    result = sampler(a.trials, a.repeats, a.epochs or 2) if a.what == "sampler" else \
        asha(a.spec, a.seeds, a.epochs or 8, a.reduction_factor)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"tradeoff_{a.what}" + ("" if a.what == "sampler" else f"_rf{a.reduction_factor:g}")
    (out / f"{name}.json").write_text(json.dumps(result, indent=1, default=float))
    print(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
