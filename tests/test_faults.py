"""Faults inside a search: a trial that runs out of memory is an error and the search goes on."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import ray
from conftest import write_spec

from analysis.report import build_report
from app.cli import main

pytestmark = pytest.mark.slow


def test_out_of_memory_trial_is_an_error_and_the_search_goes_on(tmp_path):
    if ray.is_initialized():
        ray.shutdown()
    tests = str(Path(__file__).parent)
    path = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path},
                          "worker_process_setup_hook": "faultinject.oom_in_greedy_trials"})
    try:
        spec = write_spec(tmp_path, """
fixed: {optimizer: adam, lr: 1.0e-3}
variants:
  - {name: lean, baseline: true}
  - {name: greedy, decoder_channels: 64}
""", name="oom")
        assert main([str(spec), "--profile", "smoke", "--storage", str(tmp_path / "r"), "--no-dashboard"]) == 0
    finally:
        ray.shutdown()
    df = pd.read_parquet(tmp_path / "r" / "oom" / "results.parquet").set_index("variant")
    assert df.loc["lean", "status"] == "completed" and df.loc["greedy", "status"] == "error"
    assert df.loc["greedy", "error"].startswith("out of memory: injected by tests/faultinject.py")
    assert build_report(str(tmp_path / "r" / "oom"))
    table = (tmp_path / "r" / "oom" / "report" / "table.md").read_text()
    assert "0/1 completed; 1 error (out of memory: injected by tests/faultinject.py" in table
