"""Faults inside a search: a trial that runs out of memory is an error and the search goes on."""

from __future__ import annotations

import pandas as pd
import pytest
import ray
from conftest import write_spec

from analysis.report import build_report
from app.cli import main
from search.trainable import SIMULATE_OOM_ENV

pytestmark = pytest.mark.slow


def test_out_of_memory_trial_is_an_error_and_the_search_goes_on(tmp_path, monkeypatch):
    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.setenv(SIMULATE_OOM_ENV, "greedy")  # Ray's workers inherit it from this process
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
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
    assert df.loc["greedy", "error"].startswith("out of memory: simulated by")
    assert build_report(str(tmp_path / "r" / "oom"))
    table = (tmp_path / "r" / "oom" / "report" / "table.md").read_text()
    assert "0/1 completed; 1 error (out of memory: simulated by MTL_TUNE_SIMULATE_OOM" in table
