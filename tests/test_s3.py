"""S3 storage against a real endpoint on 127.0.0.1 (moto's server): a search stored in S3, the report
read back from it, the submission archive round trip, up-front storage errors, and no leaked secrets."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import boto3
import pytest
import ray
from conftest import AWS_TEST_ENV, write_spec

from analysis.export import export_best
from analysis.report import build_report
from app.cli import main

pytestmark = pytest.mark.slow
BUCKET = "mtl-tune-test"
FAKE_WANDB_KEY = "local-0123456789abcdef0123456789abcdef01234567"
SECRETS = (AWS_TEST_ENV["AWS_SECRET_ACCESS_KEY"], AWS_TEST_ENV["AWS_ACCESS_KEY_ID"], FAKE_WANDB_KEY)


@pytest.fixture(scope="module")
def s3(moto_endpoint):
    """Fake AWS and W&B credentials in the environment of this process and of the Ray workers it starts."""
    env = {**AWS_TEST_ENV, "AWS_ENDPOINT_URL": moto_endpoint, "WANDB_API_KEY": FAKE_WANDB_KEY}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    boto3.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-east-2"})
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield boto3.client("s3")
    ray.shutdown()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def experiment(s3, tmp_path_factory) -> tuple[str, Path]:
    tmp = tmp_path_factory.mktemp("s3")
    spec = write_spec(tmp, """
fixed: {optimizer: adam, lr: 1.0e-3, encoder: resnet18}
variants:
  - {name: balanced, baseline: true}
  - {name: depth heavy, loss_weights: [0.2, 0.8]}
""", name="s3_e2e")
    uri = f"s3://{BUCKET}/experiments"
    assert main([str(spec), "--profile", "smoke", "--storage", uri, "--no-dashboard", "--wandb", "offline"]) == 0
    return f"{uri}/s3_e2e", Path("/tmp") / "mtl-tune" / "s3_e2e" / "wandb"


def _keys(s3, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_search_state_results_and_checkpoints_live_in_s3(s3, experiment):
    keys = _keys(s3, "experiments/s3_e2e/")
    names = {k.rsplit("/", 1)[-1] for k in keys}
    assert {"mtl_experiment.json", "results.parquet", "tuner.pkl", "trial_config.yaml", "progress.csv",
            "state.pt", "report.html", "table.md"} <= names
    assert any(re.search(r"/checkpoint_000001/state\.pt$", k) for k in keys)
    assert sum(k.endswith("/trial_config.yaml") for k in keys) == 2
    # the checkpoint policy on S3: each row's one trial keeps its final checkpoint only (its best weights);
    # the epoch-1 full states were deleted from the bucket as the trials finished
    assert not any("/checkpoint_000000/" in k for k in keys)
    assert sum(k.endswith("/state.pt") for k in keys) == 2 and "checkpoints.json" in names


def test_report_reads_back_from_s3(experiment, tmp_path):
    uri, _ = experiment
    out = build_report(uri, str(tmp_path / "report"), formats=("md", "csv"))
    assert out.startswith(f"{uri}/report/")
    table = (tmp_path / "report" / "table.md").read_text()
    assert "balanced (baseline)" in table and "depth heavy" in table


def test_watch_on_s3_builds_every_round_in_one_local_folder(experiment, tmp_path, monkeypatch):
    import tempfile

    from analysis import report

    uri, _ = experiment
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(report, "_ended", lambda res, since: False)  # a search still running: round after round
    path = report.watch(uri, formats=("md", "csv"), every=0.01, max_rounds=3)
    folders = list(tmp_path.glob("mtl-report-s3_e2e-*"))
    assert len(folders) == 1 and f"(local copy: {folders[0]}/" in path  # not one folder a round
    names = {p.name for p in folders[0].iterdir()}
    assert {"table.md", "table.csv", "report.json"} <= names and "report.html" not in names


def test_findings_read_and_copy_an_s3_experiment(s3, experiment, tmp_path):
    from analysis.findings import main as findings_main
    from core.saved import copy_artifacts, read_saved

    uri, _ = experiment
    saved = read_saved(uri)
    assert saved.name == "s3_e2e" and len(saved.frame) == 2 and (saved.record.wall_s or 0) > 0
    local = copy_artifacts(uri, tmp_path / "docs")
    assert sorted(p.name for p in local.iterdir()) == ["mtl_experiment.json", "results.parquet"]  # no checkpoints
    findings_main([uri, "--out", str(tmp_path / "findings.md")])
    assert "| s3_e2e | 2 | 1 |" in (tmp_path / "findings.md").read_text()


def test_archive_uploads_multipart_and_downloads_byte_identical(s3, experiment, tmp_path):
    uri, _ = experiment
    record = export_best(uri, to=f"s3://{BUCKET}/archives", out=str(tmp_path / "local"))
    key = record["s3"].removeprefix(f"s3://{BUCKET}/")
    assert record["link"].endswith(f"/{BUCKET}/{key}")
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["ETag"].strip('"').rsplit("-", 1)[-1].isdigit() and "-" in head["ETag"]  # a multipart upload
    downloaded = tmp_path / "downloaded.zip"
    s3.download_file(BUCKET, key, str(downloaded))
    assert downloaded.read_bytes() == Path(record["archive"]).read_bytes()
    with zipfile.ZipFile(downloaded) as z:
        names = z.namelist()
    root = names[0].split("/")[0]
    assert {f"{root}/{n}" for n in ("config.yaml", "model.pt", "training_log.csv", "metrics.json", "README.txt")} \
        <= set(names)
    assert sum("/predictions/semseg/" in n for n in names) == sum("/predictions/depth/" in n for n in names) == 8
    assert "archive.json" in {k.rsplit("/", 1)[-1] for k in _keys(s3, "experiments/s3_e2e/")}


def test_secrets_appear_in_no_file(s3, experiment, tmp_path):
    uri, wandb_dir = experiment
    archive = export_best(uri, to=f"s3://{BUCKET}/archives", out=str(tmp_path / "a"))["archive"]
    build_report(uri, str(tmp_path / "report"))
    blobs = {f"s3://{BUCKET}/{k}": s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in _keys(s3, "")}
    for folder in (wandb_dir, tmp_path):
        blobs.update({str(p): p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()})
    with zipfile.ZipFile(archive) as z:
        blobs.update({f"{archive}!{n}": z.read(n) for n in z.namelist()})
    assert len(blobs) > 50 and any("wandb" in name for name in blobs)
    for name, data in blobs.items():
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret[:6]}... found in {name}"


def test_missing_bucket_and_missing_credentials_fail_up_front(s3, tmp_path, monkeypatch, capsys):
    spec = write_spec(tmp_path, "fixed: {epochs: 1}\n", name="nowhere")
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("no trial may start"))
    assert main([str(spec), "--profile", "smoke", "--storage", "s3://no-such-bucket/x", "--no-dashboard"]) == 2
    assert "bucket 'no-such-bucket' does not exist" in capsys.readouterr().err
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert main([str(spec), "--profile", "smoke", "--storage", f"s3://{BUCKET}/x", "--no-dashboard"]) == 2
    assert "no AWS credentials found" in capsys.readouterr().err
