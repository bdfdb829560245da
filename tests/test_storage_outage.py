"""The S3 endpoint goes away for 30 s in the middle of a search and comes back on the same port: the search
completes, or ends with the resume command printed and `--resume` completes it; no finished trial is lost.

moto keeps its data in memory, so the outage is a TCP proxy on 127.0.0.1 in front of it that stops listening
(connections refused, open ones cut) and starts again on the same port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import boto3
import pandas as pd
import pytest
import ray
from conftest import AWS_TEST_ENV, REPO, _free_port, write_spec

pytestmark = pytest.mark.slow
BUCKET = "mtl-tune-outage"
OUTAGE_S = 30


class Proxy:
    """A TCP forwarder 127.0.0.1:port -> target that can go away and come back on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, _free_port()
        self.listener: socket.socket | None = None
        self.open: list[socket.socket] = []

    def start(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(64)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def stop(self) -> None:
        self.listener.close()
        for s in self.open:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            upstream = socket.create_connection(self.target)
            self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def flaky_s3(moto_endpoint, monkeypatch):
    host, port = moto_endpoint.removeprefix("http://").split(":")
    proxy = Proxy((host, int(port)))
    proxy.start()
    env = {**AWS_TEST_ENV, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-east-2"})
    if ray.is_initialized():
        ray.shutdown()
    # workers inherit the endpoint
    ctx = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield proxy, ctx.address_info["gcs_address"], env
    ray.shutdown()
    proxy.stop()


def _checkpoints(s3, prefix: str, variant: str) -> int:
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
            for o in page.get("Contents", [])]
    # epochs checkpointed so far: the newest index + 1 (the checkpoint policy deletes superseded folders)
    indices = {int(k.split("/checkpoint_")[1][:6]) for k in keys if f"_{variant}_s0/checkpoint_" in k}
    return max(indices) + 1 if indices else 0


def _driver(spec, storage: str, address: str, env: dict, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(REPO / "run_search.py"), str(spec), "--profile", "smoke", "--storage", storage,
           "--no-dashboard", "--no-report", "--address", address, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env={**os.environ, **env})


def test_storage_outage_mid_search_loses_no_finished_trial(flaky_s3, tmp_path):
    proxy, address, env = flaky_s3
    s3 = boto3.client("s3")
    spec = write_spec(tmp_path, """
fixed: {optimizer: adam, lr: 1.0e-3}
variants:
  - {name: short, epochs: 2, baseline: true}
  - {name: long, epochs: 10}
""", name="outage")
    storage, prefix = f"s3://{BUCKET}/exp", "exp/outage/"
    proc = _driver(spec, storage, address, env)
    deadline = time.monotonic() + 240
    while not (_checkpoints(s3, prefix, "short") == 2 and _checkpoints(s3, prefix, "long") >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.5)
    proxy.stop()  # the endpoint goes away: refused connections, open ones cut
    time.sleep(OUTAGE_S)
    proxy.start()  # and comes back on the same port
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0 or "--resume" in out.splitlines()[-1]:
        assert "--resume" in out, out  # it says how to continue
        resumed = _driver(spec, storage, address, env, "--resume")
        out, _ = resumed.communicate(timeout=600)
        assert resumed.returncode == 0, out
    results = _read_results(s3)
    status = dict(zip(results["variant"], results["status"], strict=True))
    assert status == {"short": "completed", "long": "completed"}, out
    short = next(k["Key"] for k in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]
                 if "_short_s0/result.json" in k["Key"])
    lines = s3.get_object(Bucket=BUCKET, Key=short)["Body"].read().decode().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # the finished trial: kept, not run again


def _read_results(s3) -> pd.DataFrame:
    import io

    body = s3.get_object(Bucket=BUCKET, Key="exp/outage/results.parquet")["Body"].read()
    return pd.read_parquet(io.BytesIO(body))
