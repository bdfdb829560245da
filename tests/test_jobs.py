"""Searches as Ray Jobs, the documented way to run on a `ray up` cluster, on a local `ray start --head` bound to
127.0.0.1: `ray job submit`, status and logs through the Jobs API, `ray job stop` mid-search, `--resume` as a job."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import REPO, _free_port, checkpointed, trial_dir, write_spec

pytestmark = pytest.mark.slow

SPEC = """
fixed: {optimizer: adam, lr: 1.0e-3}
variants:
  - {name: short, epochs: 2, baseline: true}
  - {name: long, epochs: 24}
"""


def _ray(env: dict, *args: str, check: bool = True) -> str:
    out = subprocess.run([shutil.which("ray") or "ray", *args], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 or not check, out.stdout + out.stderr
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    home = tmp_path_factory.mktemp("jobs-home")
    # the loopback flag run_search.py sets for local runs (`ray start` honours it too), and token authentication
    # as cluster/aws.yaml sets it up: a token generated first, RAY_AUTH_MODE=token
    env = {**os.environ, "HOME": str(home), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    _ray(env, "get-auth-token", "--generate")
    token = (home / ".ray" / "auth_token").read_text().strip()
    port = _free_port()
    _ray(env, "start", "--head", f"--port={_free_port()}", "--num-cpus=2", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={port}", "--disable-usage-stats")
    yield {"env": env, "address": f"http://127.0.0.1:{port}", "token": token}
    _ray(env, "stop", "--force", check=False)


def _submit(head, *argv: str) -> str:
    """`ray job submit --address … --working-dir . --no-wait -- python run_search.py … --address auto`."""
    out = _ray(head["env"], "job", "submit", "--address", head["address"], "--working-dir", str(REPO), "--no-wait",
               "--", sys.executable, "run_search.py", *argv, "--address", "auto")
    job_id = next(w for line in out.splitlines() for w in line.replace("'", " ").split() if w.startswith("raysubmit_"))
    return job_id


def _wait(condition, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_search_as_a_ray_job_stops_and_resumes(head, tmp_path):
    import urllib.error
    import urllib.request

    from ray.job_submission import JobStatus, JobSubmissionClient

    with pytest.raises(urllib.error.HTTPError):  # token authentication is on
        urllib.request.urlopen(f"{head['address']}/api/jobs/", timeout=10)
    client = JobSubmissionClient(head["address"], headers={"Authorization": f"Bearer {head['token']}"})
    spec = write_spec(tmp_path, SPEC, name="job")
    argv = (str(spec), "--profile", "smoke", "--storage", str(tmp_path / "results"), "--no-report")
    first = _submit(head, *argv)
    exp_dir = tmp_path / "results" / "job"
    _wait(lambda: (d := trial_dir(exp_dir, "long")) is not None and checkpointed(d) >= 3, "the long trial")
    assert client.get_job_status(first) == JobStatus.RUNNING
    assert any(j.submission_id == first for j in client.list_jobs())  # what the dashboard's Jobs tab lists
    logs = client.get_job_logs(first)
    assert "profile: smoke" in logs and "experiment:" in logs and head["token"] not in logs

    _ray(head["env"], "job", "stop", "--address", head["address"], first)  # like Ctrl-C: SIGTERM, state saved
    _wait(lambda: client.get_job_status(first).is_terminal(), "the job to stop", timeout=60)
    assert client.get_job_status(first) == JobStatus.STOPPED
    short = trial_dir(exp_dir, "short")
    assert [json.loads(line)["epoch"] for line in (short / "result.json").read_text().splitlines()] == [1, 2]

    second = _submit(head, *argv, "--resume")
    _wait(lambda: client.get_job_status(second).is_terminal(), "the resumed job")
    assert client.get_job_status(second) == JobStatus.SUCCEEDED, client.get_job_logs(second)
    df = pd.read_parquet(exp_dir / "results.parquet").set_index("variant")
    assert (df["status"] == "completed").all() and df.loc["long", "epochs_run"] == 24
    # the finished trial was kept, not run again
    assert [json.loads(line)["epoch"] for line in (short / "result.json").read_text().splitlines()] == [1, 2]
