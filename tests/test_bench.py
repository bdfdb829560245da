"""The GPU benchmark's CPU smoke path: every measurement runs end to end at tiny sizes and is written out."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

from bench.gpu import PEAK_BF16_TFLOPS, peak_tflops

pytestmark = pytest.mark.slow


def test_gpu_bench_smoke_path_writes_every_table(tmp_path):
    cmd = [sys.executable, "-m", "bench.gpu", "--smoke", "--out", str(tmp_path), "--seconds", "0.2", "--slice", "0.5",
           "--packing", "1,2", "--data-batches", "4"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert result["device"] == "cpu" and result["peak_bf16_tflops"] is None
    assert list(result["ladder"]) == ["fp32 eager", "+ bf16 autocast", "+ channels_last"]  # no compile on CPU smoke
    assert set(result["architectures"]) == {"joint", "branched", "distilled"}
    flops = {a: r["gflop_per_img"] for a, r in result["architectures"].items()}
    assert flops["joint"] < flops["branched"] < flops["distilled"]
    assert all(r["img_s"] > 0 for r in result["ladder"].values())
    assert [p["trials"] for p in result["packing"]] == [1, 2] and all(p["img_s"] > 0 for p in result["packing"])
    assert result["data"]["gpu_path"] > 0 and result["data"]["png_loader"] > 0
    assert result["course_trial"]["projected_min"] > 0
    tune = result["tune_trial"]  # a real Tune trial (Ray started) against the bare loop
    assert tune["img_s"] > 0 and tune["ratio"] == tune["img_s"] / tune["bare_img_s"]
    md = (tmp_path / "gpu.md").read_text()
    assert "one optimisation at a time" in md and "aggregate MFU" in md and "Course-scale joint trial" in md
    assert "A real Tune trial" in md


def test_peak_table_matches_device_names():
    import torch

    assert peak_tflops(torch.device("cpu")) == ("cpu", None)
    names = dict(PEAK_BF16_TFLOPS)
    assert names["H200"] == names["H100"] > names["H100 PCIe"] > names["A100"]


def test_dry_run_budget_uses_the_measured_packing(tmp_path):
    from search.dryrun import parallel_speed

    bench = tmp_path / "gpu.json"
    bench.write_text(json.dumps({"packing": [{"trials": 1, "img_s": 1000.0}, {"trials": 2, "img_s": 1500.0},
                                             {"trials": 4, "img_s": 1800.0}]}))
    speed, how = parallel_speed(8, 0.25, str(bench))  # 8 trials, 4 per GPU: 2 GPUs at 1.8x each
    assert speed == pytest.approx(3.6) and "measured packing" in how
    assert parallel_speed(8, 0.25, None)[0] == 8 and "not measured" in parallel_speed(8, 0.25, None)[1]
    assert parallel_speed(3, 1.0, str(bench)) == (3.0, "")


def test_search_overhead_bench_measures_a_tiny_search(tmp_path):
    cmd = [sys.executable, "-m", "bench.search_overhead", "--trials", "3", "--out", str(tmp_path), "--epochs", "1"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "overhead.json").read_text())["results"][0]
    assert result["trials"] == result["completed"] == 3 and 0 < result["inside_share"] <= 1
    assert {"actor_start", "trainable_setup", "data", "checkpoint", "tune_bookkeeping"} <= set(result["per_trial_s"])
    assert result["driver_peak_mib"] > 0 and result["report_ok"] and result["storage_mb"] > 0
    assert "cores' time in trials" in (tmp_path / "overhead.md").read_text()


def test_tradeoff_bench_compares_pareto_asha_with_the_grid(tmp_path):
    spec = tmp_path / "two_rows.yaml"
    spec.write_text(f"name: two_rows\nbase: [{REPO / 'search' / 'spaces' / 'base.yaml'}]\n"
                    "fixed: {optimizer: adam, lr: 1.0e-3}\nvariants:\n"
                    "  - {name: seg, loss_weights: [0.8, 0.2], baseline: true}\n"
                    "  - {name: depth, loss_weights: [0.2, 0.8]}\n  - {name: both, loss_weights: [0.5, 0.5]}\n")
    cmd = [sys.executable, "-m", "bench.tradeoff", "asha", "--spec", str(spec), "--seeds", "2", "--epochs", "2",
           "--out", str(tmp_path / "out")]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "tradeoff_asha_rf2.json").read_text())
    assert result["grid"]["trial_epochs"] == 3 * 2 * 2 and result["pareto_asha"]["trial_epochs"] <= 12
    assert 0 < result["epoch_share"] <= 1 and result["grid"]["hypervolume"]["n"] == 2
