"""Check the experiment storage before any trial starts: a clear error instead of a failed trial."""

from __future__ import annotations

from core.storage import Storage, s3_client
from search.spec import SpecError


def check_storage(storage: Storage) -> None:
    """An S3 storage's bucket must exist and be reachable with the credentials at hand."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    bucket = storage.root.split("/", 1)[0]
    try:
        s3_client().head_bucket(Bucket=bucket)
    except NoCredentialsError:
        raise SpecError(f"--storage {storage.uri}: no AWS credentials found (environment, ~/.aws or an instance "
                        "profile)") from None
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "?")
        what = {"404": "does not exist", "NoSuchBucket": "does not exist", "403": "is not accessible with these "
                "credentials", "AccessDenied": "is not accessible with these credentials"}.get(code, f"failed ({code})")
        raise SpecError(f"--storage {storage.uri}: bucket {bucket!r} {what}") from None
    except BotoCoreError as e:
        raise SpecError(f"--storage {storage.uri}: cannot reach S3 ({e})") from None
