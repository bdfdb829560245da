"""Adaptive seeds inside a real Tune search (smoke profile, local Ray): a planted effect stops at `first`, an
interrupted driver resumes the same design, and an extension adds seeds to saved results without rerunning."""

from __future__ import annotations

import json
import signal
import time

import pandas as pd
from conftest import start_driver, write_spec

from analysis.report import build_report
from app.cli import main
from core.saved import copy_artifacts

# train_loss: a model at lr 1e-7 barely moves, one at 3e-3 trains; the gap is large and steady across seeds
PLANTED = """
fixed: {{optimizer: adam, lr: 3.0e-3}}
metric: train_loss
variants:
  - {{name: trained, baseline: true}}
  - {{name: frozen, lr: 1.0e-7}}
  - {{name: same, lr: 3.1e-3}}
seeds: {{first: 3, max: {max}}}
"""


def _run(spec, storage, *extra) -> int:
    return main([str(spec), "--profile", "smoke", "--storage", str(storage), "--no-dashboard", "--no-report", *extra])


def _looks(exp_dir) -> dict:
    return json.loads((exp_dir / "seed_looks.json").read_text())


def test_planted_effect_stops_at_first_then_extension_adds_seeds_from_saved_results(ray_local, tmp_path):
    spec = write_spec(tmp_path, PLANTED.format(max=4), name="planted")
    assert _run(spec, tmp_path / "results", "--compare", "frozen vs trained") == 0
    exp_dir = tmp_path / "results" / "planted"
    looks = _looks(exp_dir)
    final = looks["looks"][-1]["comparisons"]["frozen vs trained"]
    assert final["decision"] == "resolved" and final["seeds"] == 3  # settled at the first look
    df = pd.read_parquet(exp_dir / "results.parquet")
    assert len(df) == 6 and set(df["variant"]) == {"frozen", "trained"}  # `same` is in no comparison: never run
    record = json.loads((exp_dir / "mtl_experiment.json").read_text())
    assert record["adaptive"]["first"] == 3 and record["comparisons"] == [["frozen", "trained"]]
    build_report(str(exp_dir), str(tmp_path / "report"), formats=("md",))
    table = (tmp_path / "report" / "table.md").read_text()
    assert "group-sequential paired t (looks 3..4)" in table and "repeated p-value" in table
    _extend(spec, tmp_path, exp_dir)


def test_interrupted_adaptive_search_resumes_the_same_design(ray_local, tmp_path):
    spec = write_spec(tmp_path, PLANTED.format(max=5), name="adaptive_resume")
    storage, exp_dir = tmp_path / "results", tmp_path / "results" / "adaptive_resume"
    proc = start_driver(spec, storage, ray_local)
    deadline = time.monotonic() + 240
    while not (exp_dir / "seed_looks.json").is_file() or len(list(exp_dir.glob("*/result.json"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else "slow"
        time.sleep(0.3)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    first_look = _looks(exp_dir)["looks"][0]
    assert _run(spec, storage, "--resume") == 0
    looks = _looks(exp_dir)
    assert looks["looks"][0] == first_look and looks["stopped"] == "settled"  # the same design, continued
    df = pd.read_parquet(exp_dir / "results.parquet")
    cells = list(zip(df["variant"], df["seed"], strict=True))
    assert len(cells) == len(set(cells)) and set(df["status"]) == {"completed"}
    final = looks["looks"][-1]["comparisons"]
    assert all(c["decision"] for c in final.values()) and max(c["seeds"] for c in final.values()) <= 5
    # the same command with another design is refused before Ray starts
    assert _run(spec, storage, "--resume", "--seeds", "first=3,max=6") == 2




def _extend(spec, tmp_path, exp_dir) -> None:
    saved = copy_artifacts(str(exp_dir), tmp_path / "committed")  # results only: no Tune state, no checkpoints
    assert not list(saved.glob("*/checkpoint_*"))
    extend = ["--seeds", "first=3,max=4", "--extend", str(saved)]
    assert _run(spec, tmp_path / "results", *extend) == 2  # the extension is a new experiment: not the same folder
    assert _run(spec, tmp_path / "more", *extend, "--set", "weight_decay=0.1") == 2  # another design: no pairs
    assert _run(spec, tmp_path / "more", *extend, "--compare", "same vs trained") == 0
    out = tmp_path / "more" / "planted"
    df = pd.read_parquet(out / "results.parquet")
    old = df[df["extended_from"].notna()]
    assert len(old) == 6 and set(old["seed"]) == {0, 1, 2}  # every saved trial, none rerun
    new = df[df["extended_from"].isna()]
    assert {(v, s) for v, s in zip(new["variant"], new["seed"], strict=True)} - {("same", 3), ("trained", 3)} == \
        {("same", 0), ("same", 1), ("same", 2)}  # `same` first gets the first seeds; only then a look
    looks = _looks(out)
    assert looks["prior_trials"] == 6 and looks["looks"][0]["reason"].startswith("first round")
    record = json.loads((out / "mtl_experiment.json").read_text())
    assert record["extends"]["trials"] == 6 and record["extends"]["uri"] == str(saved)
