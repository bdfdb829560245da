"""Where experiments live: a local directory or `s3://bucket/prefix`, both through pyarrow.fs.

S3-compatible stores: the endpoint comes from the standard AWS variables (`AWS_ENDPOINT_URL_S3`
or `AWS_ENDPOINT_URL`), credentials and region from the usual AWS chain - never from a file of ours.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

STORAGE_SCHEMES = ("s3", "file")  # plus plain local paths


def s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def s3_client(config=None):
    """boto3's S3 client; endpoint (S3-compatible stores), region and credentials from the environment."""
    import boto3

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-2"
    # a fresh session: the default one caches credentials from its first use
    return boto3.session.Session().client("s3", endpoint_url=s3_endpoint(), region_name=region, config=config)


@dataclass(frozen=True)
class Storage:
    """A filesystem and the experiments root inside it."""

    fs: pafs.FileSystem
    root: str  # "bucket/prefix" on S3, an absolute path locally
    uri: str

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")

    def experiment(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def write_bytes(self, path: str, data: bytes) -> None:
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        with self.fs.open_output_stream(path) as f:
            f.write(data)

    def write_text(self, path: str, text: str) -> None:
        self.write_bytes(path, text.encode())

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def read_text(self, path: str) -> str:
        return self.read_bytes(path).decode()

    def display(self, path: str) -> str:
        return f"s3://{path}" if self.is_s3 else path


def s3_filesystem() -> pafs.S3FileSystem:
    kwargs = {"region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-2",
              "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=5)}
    endpoint = s3_endpoint()
    if endpoint:
        url = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs.update(endpoint_override=url.netloc, scheme=url.scheme)
    return pafs.S3FileSystem(**kwargs)


def open_storage(uri: str) -> Storage:
    if uri.startswith("s3://"):
        return Storage(s3_filesystem(), uri[len("s3://"):].rstrip("/"), uri)
    path = str(Path(uri.removeprefix("file://")).expanduser().resolve())
    return Storage(pafs.LocalFileSystem(), path, path)


def split_experiment_uri(uri: str) -> tuple[Storage, str]:
    """`results/task_weights` or `s3://bucket/prefix/task_weights` -> (storage of the parent, name)."""
    parent, name = uri.rstrip("/").rsplit("/", 1) if "/" in uri.rstrip("/") else (".", uri)
    return open_storage(parent), name


def checkpoint_folders(fs: pafs.FileSystem, trial_root: str) -> list[pafs.FileInfo]:
    """The `checkpoint_NNNNNN` folders Tune wrote under a trial's folder (none when it is not there)."""
    try:
        listing = fs.get_file_info(pafs.FileSelector(trial_root, allow_not_found=True))
    except OSError:
        return []
    return [i for i in listing if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_")]


def tree_bytes(fs: pafs.FileSystem, path: str) -> int:
    """Bytes under `path` (a file or a folder, local or S3); 0 when it is not there."""
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            return int(info.size or 0)
        if info.type != pafs.FileType.Directory:
            return 0
        return sum(int(f.size or 0) for f in fs.get_file_info(pafs.FileSelector(path, recursive=True))
                   if f.type == pafs.FileType.File)
    except OSError:
        return 0


def free_bytes(fs: pafs.FileSystem, path: str) -> int | None:
    """Free space of the file system that holds `path`; None for object stores (S3 reports no free space)."""
    if not isinstance(fs, pafs.LocalFileSystem):
        return None
    probe = path
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe.rstrip("/"))
    return shutil.disk_usage(probe or "/").free


_FULL = re.compile(r"no space left|disk quota|quota ?exceeded|insufficient ?storage|ENOSPC|EDQUOT", re.I)


def is_storage_full(error: BaseException) -> bool:
    """A write that failed for lack of space: ENOSPC / EDQUOT locally, a quota or 'insufficient storage' answer
    from an object store (pyarrow wraps those in OSError with the service's message)."""
    for _ in range(8):  # the exception and what caused it
        if error is None:
            return False
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if _FULL.search(str(error)):
            return True
        error = error.__cause__ or error.__context__
    return False


def megabytes(n: float) -> str:
    return f"{n / 2**20:,.0f} MB" if n < 2**30 else f"{n / 2**30:,.2f} GB"
