"""The course's submission archive for an experiment's best trial.

    python -m analysis.export EXPERIMENT --best [--to s3://bucket/prefix] [--out DIR]

The zip holds test-split predictions (semseg class ids, depth in 16-bit centimetres), the resolved
config, the weights of the best checkpoint, the training log and the final metrics. With `--to`
it is uploaded with boto3 (multipart, retried); the plain S3 link is printed and written next to the
results (`archive.json`). `--presign` also prints a presigned link - never stored: it embeds the
access key id.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import zipfile
from pathlib import Path

import torch
import yaml

from analysis.predict import trial_model
from core.results import ExperimentResults, load_results
from mtl.data.datasets import open_dataset
from mtl.data.depth_units import DepthUnit
from mtl.data.loading import dataset_root
from mtl.data.transforms import JointTransform
from mtl.engine import Runtime
from mtl.export import export_predictions

ARCHIVE_RECORD = "archive.json"
MULTIPART_CHUNK = 8 * 2**20


def best_trial(res: ExperimentResults) -> str:
    done = res.frame[res.frame["status"] == "completed"]
    if done.empty:
        raise SystemExit(f"{res.uri}: no completed trial to export")
    values = done[res.metric].astype(float)
    return str(done.loc[values.idxmax() if res.mode == "max" else values.idxmin(), "trial_id"])


def build_archive(res: ExperimentResults, trial_id: str, out: Path) -> Path:
    loaded = trial_model(res, trial_id)
    if loaded is None:
        raise SystemExit(f"{res.uri}: trial {trial_id} kept no checkpoint (the run's checkpoint policy, "
                         "checkpoints.json: run it with `--checkpoints rows`, `top` or `all` to keep best weights)")
    cfg, model = loaded
    row = res.frame[res.frame["trial_id"] == trial_id].iloc[0]
    root, stats = dataset_root(cfg)
    test = open_dataset(root, "test", JointTransform(train=False, multiple=1), limit=cfg.counts()["test"])
    rt = Runtime(torch.device("cpu"), DepthUnit.from_stats(cfg.depth_unit, stats))  # the trial's own unit
    name = f"{res.name}_{trial_id}"
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / name
        export_predictions(model, test, rt, staged / "predictions", cfg.tta, cfg.val_batch_size)
        (staged / "config.yaml").write_text(yaml.safe_dump(res.configs[trial_id], sort_keys=False))
        torch.save(model.state_dict(), staged / "model.pt")
        res.histories[trial_id].to_csv(staged / "training_log.csv", index=False)
        metrics = {k: (None if v != v else v) for k, v in row.items() if not str(k).startswith("config/")}
        (staged / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
        (staged / "README.txt").write_text(
            f"mtl-tune submission archive: experiment {res.name}, trial {trial_id} ({row['variant']}, seed "
            f"{row['seed']}).\npredictions/semseg/*.png: class ids (19 Cityscapes train ids); "
            "predictions/depth/*.png: 16-bit depth in centimetres (0 = invalid).\nmodel.pt: the state dict of "
            "the best checkpoint; config.yaml rebuilds the model (mtl.models.build_model).\n")
        out.mkdir(parents=True, exist_ok=True)
        archive = out / f"{name}.zip"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for f in sorted(staged.rglob("*")):
                if f.is_file():
                    z.write(f, f.relative_to(staged.parent))
    return archive


def upload(archive: Path, target: str) -> tuple[str, str, str]:
    """Multipart upload with retries; returns (s3 uri, plain https link, presigned link)."""
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    from core.storage import s3_client

    bucket, _, prefix = target.removeprefix("s3://").partition("/")
    key = f"{prefix.rstrip('/')}/{archive.name}" if prefix else archive.name
    client = s3_client(Config(retries={"max_attempts": 10, "mode": "adaptive"}))
    client.upload_file(str(archive), bucket, key, Config=TransferConfig(
        multipart_threshold=MULTIPART_CHUNK, multipart_chunksize=MULTIPART_CHUNK, max_concurrency=4))
    plain = f"{client.meta.endpoint_url.rstrip('/')}/{bucket}/{key}"
    presigned = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=7 * 86400)
    return f"s3://{bucket}/{key}", plain, presigned


def export_best(uri: str, to: str | None = None, out: str | None = None, presign: bool = False) -> dict:
    res = load_results(uri)
    trial_id = best_trial(res)
    archive = build_archive(res, trial_id, Path(out or tempfile.mkdtemp(prefix="mtl-export-")))
    record = {"trial_id": trial_id, "archive": str(archive), "bytes": archive.stat().st_size}
    if to:
        s3_uri, plain, presigned = upload(archive, to)
        record.update(s3=s3_uri, link=plain)
        if presign:
            print(f"presigned download link (valid 7 days, not stored anywhere): {presigned}")
    res.storage.write_text(f"{res.uri.removeprefix('s3://')}/{ARCHIVE_RECORD}", json.dumps(record, indent=2))
    return record


def parser() -> argparse.ArgumentParser:
    """The command line (also what docs/reference.md shows and a test checks)."""
    p = argparse.ArgumentParser(prog="python -m analysis.export",
                                description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("experiment", help="experiment directory or s3://bucket/prefix/name.")
    p.add_argument("--best", action="store_true", required=True, help="export the best completed trial.")
    p.add_argument("--to", help="s3://bucket/prefix to upload the archive to.")
    p.add_argument("--out", help="local directory for the archive (default: a temporary directory).")
    p.add_argument("--presign", action="store_true", help="also print a presigned download link (7 days).")
    return p


def main(argv: list[str] | None = None) -> None:
    p = parser()
    a = p.parse_args(argv)
    record = export_best(a.experiment, a.to, a.out, a.presign)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
