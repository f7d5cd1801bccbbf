"""One place that turns a data URI into what each library needs.

A URI is a local path (`/data/shards`, `./out`), `file:///data/shards`, or `s3://bucket/prefix`.
S3 endpoint and credentials come from the standard AWS variables (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_DEFAULT_REGION`/`AWS_REGION`).
boto3 reads `AWS_ENDPOINT_URL` by itself; pyarrow does not, so `pyarrow_fs` passes it as
`endpoint_override` (docs/platform.md "Ray Data and webdataset").

Storage blips (a restarted S3 server, a network hiccup) do not fail a run: every boto3 call here retries
connection errors and 5xx answers with backoff for OUTAGE_LIMIT_S seconds, then raises StorageError saying
so; the pyarrow filesystem (Ray Data's shard reads, Ray Train's checkpoint uploads) retries each request
PYARROW_RETRY_ATTEMPTS times, in every process it is shipped to (`RetryingS3FileSystem`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

# Variables that must reach Ray workers so that they see the same object store as the driver.
AWS_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_PROFILE",
)


# How long S3 may stay unreachable before a boto3 call gives up, in seconds.
OUTAGE_LIMIT_S = 120.0
# Attempts of pyarrow's AWS "standard" retry strategy per S3 request: 12 waited 133 s against an unreachable
# endpoint here (8: 48-65 s, 3: 2 s); Ray Data retries a failed shard read again on top (10 times, <= 32 s apart).
PYARROW_RETRY_ATTEMPTS = 12

log = logging.getLogger("stylegan3.storage")


class StorageError(RuntimeError):
    """A URI that cannot be read or written, with the reason and what to do."""


def _transient(exc: BaseException) -> bool:
    """True for errors that a later attempt can cure: no connection, a dropped or timed-out connection, a 5xx
    answer or throttling. False for everything else (missing keys, bad credentials, client errors)."""
    from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, HTTPClientError

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (BotoConnectionError, HTTPClientError)):
            return True
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return status >= 500 or err.get("Code") in ("SlowDown", "ServiceUnavailable", "InternalError",
                                                         "RequestTimeout", "Throttling")
        exc = exc.__cause__ or exc.__context__
    return False


def retrying(what: str, fn, limit_s: float | None = None):
    """`fn()`, retried with exponential backoff (0.5 s doubling to 10 s) while it fails with a transient S3
    error (`_transient`), for at most `limit_s` (default OUTAGE_LIMIT_S) seconds; then StorageError."""
    limit_s = OUTAGE_LIMIT_S if limit_s is None else limit_s
    start = time.monotonic()
    delay, attempt = 0.5, 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not _transient(exc):
                raise
            waited = time.monotonic() - start
            if waited + delay > limit_s:
                raise StorageError(
                    f"S3 at {endpoint_url() or 'AWS'} was unreachable for {waited:.0f} s while {what} (the limit is "
                    f"{limit_s:g} s): {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                ) from exc
            attempt += 1
            if attempt == 1:
                log.warning("S3 unreachable while %s (%s); retrying for up to %g s", what, type(exc).__name__,
                            limit_s)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


@dataclass(frozen=True)
class Location:
    """A parsed URI. For `file`, `path` is absolute; for `s3`, `bucket` and `key` (no leading '/')."""

    scheme: str  # "file" or "s3"
    path: str = ""
    bucket: str = ""
    key: str = ""

    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"

    def uri(self) -> str:
        if self.is_s3:
            return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"
        return self.path


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a local file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse(uri: str | os.PathLike) -> Location:
    """Parse a local path, `file://` URI or `s3://bucket/prefix` into a `Location`."""
    text = os.fspath(uri)
    if text.startswith("s3://"):
        parsed = urlparse(text)
        if not parsed.netloc:
            raise StorageError(f"{text!r} names no bucket: write s3://BUCKET/PREFIX")
        return Location("s3", bucket=parsed.netloc, key=parsed.path.lstrip("/").rstrip("/"))
    if text.startswith("file://"):
        text = urlparse(text).path
    elif "://" in text:
        raise StorageError(f"{text!r}: unsupported URI scheme; use a local path, file://… or s3://bucket/prefix")
    return Location("file", path=str(Path(text).expanduser().resolve()))


def is_s3(uri: str | os.PathLike) -> bool:
    return os.fspath(uri).startswith("s3://")


def join(uri: str | os.PathLike, *parts: str) -> str:
    """Append path parts to a URI (`join("s3://b/p", "x.tar") == "s3://b/p/x.tar"`)."""
    loc = parse(uri)
    if loc.is_s3:
        key = "/".join([loc.key, *parts]).strip("/") if loc.key else "/".join(parts).strip("/")
        return f"s3://{loc.bucket}/{key}"
    return str(Path(loc.path, *parts))


def endpoint_url() -> str | None:
    """The S3 endpoint from the environment (`AWS_ENDPOINT_URL_S3` wins over `AWS_ENDPOINT_URL`)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def aws_env() -> dict[str, str]:
    """The AWS variables that are set here, to forward to Ray workers (`runtime_env={"env_vars": ...}`)."""
    return {k: os.environ[k] for k in AWS_VARIABLES if os.environ.get(k)}


def check_credentials(uri: str | os.PathLike) -> None:
    """Fail with one clear sentence if `uri` is on S3 and no credentials are configured."""
    if not is_s3(uri):
        return
    import boto3

    if boto3.session.Session().get_credentials() is None:
        raise StorageError(
            f"{os.fspath(uri)} is on S3 but no AWS credentials were found: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for a non-AWS server such as SeaweedFS or MinIO)"
        )


def boto3_client():
    """A boto3 S3 client for the configured endpoint (path-style addressing, which local servers need)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url(),
        region_name=os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1",
        # A few quick retries here; `retrying` rides out longer outages.
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"},
                      connect_timeout=10, read_timeout=60),
    )


def _make_retrying_s3(kwargs: dict, attempts: int):
    return _retrying_s3_class()(attempts, **kwargs)


@functools.lru_cache(maxsize=None)
def _retrying_s3_class():
    """The class of `pyarrow_fs`'s S3 filesystems (made on first use: pyarrow is imported only when needed)."""
    import pyarrow.fs as pafs

    class RetryingS3FileSystem(pafs.S3FileSystem):
        """pyarrow's S3FileSystem with `attempts` of the AWS standard retry strategy per request. pyarrow drops
        the retry strategy when it pickles a filesystem (Ray ships it to every read task and Train worker), so
        this class pickles as its constructor arguments."""

        def __init__(self, attempts: int, **kwargs):
            super().__init__(retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=attempts), **kwargs)
            self._sg3_args = (dict(kwargs), attempts)

        def __reduce__(self):
            return _make_retrying_s3, self._sg3_args

    return RetryingS3FileSystem


def pyarrow_fs(uri: str | os.PathLike, retry_attempts: int = PYARROW_RETRY_ATTEMPTS):
    """Return `(filesystem, path)` for pyarrow (and Ray Data's `filesystem=`, Ray Train's `storage_filesystem`)
    for this URI. On S3 every request is retried `retry_attempts` times (see PYARROW_RETRY_ATTEMPTS), also in
    the processes the filesystem is pickled to."""
    import pyarrow.fs as pafs

    loc = parse(uri)
    if not loc.is_s3:
        return pafs.LocalFileSystem(), loc.path
    endpoint = endpoint_url()
    kwargs = {
        "access_key": os.environ.get("AWS_ACCESS_KEY_ID"),
        "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY"),
        "session_token": os.environ.get("AWS_SESSION_TOKEN"),
        "region": os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1",
    }
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
        kwargs["force_virtual_addressing"] = False
    fs = _retrying_s3_class()(retry_attempts, **{k: v for k, v in kwargs.items() if v is not None})
    return fs, f"{loc.bucket}/{loc.key}".rstrip("/")


def exists(uri: str | os.PathLike) -> bool:
    loc = parse(uri)
    if not loc.is_s3:
        return Path(loc.path).exists()
    from botocore.exceptions import ClientError

    def head() -> bool:
        try:
            boto3_client().head_object(Bucket=loc.bucket, Key=loc.key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    return retrying(f"looking for {loc.uri()}", head)


def read_bytes(uri: str | os.PathLike) -> bytes:
    loc = parse(uri)
    if not loc.is_s3:
        return Path(loc.path).read_bytes()
    return retrying(f"reading {loc.uri()}",
                    lambda: boto3_client().get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read())


def write_bytes(uri: str | os.PathLike, data: bytes) -> None:
    """Write `data` at `uri`. Local writes go through a temporary file and a rename, so a reader never sees
    half a file."""
    loc = parse(uri)
    if loc.is_s3:
        retrying(f"writing {loc.uri()}", lambda: boto3_client().put_object(Bucket=loc.bucket, Key=loc.key, Body=data))
        return
    path = Path(loc.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def upload_file(local_path: str | os.PathLike, uri: str | os.PathLike) -> None:
    """Copy a local file to `uri` (multipart above 64 MiB on S3)."""
    loc = parse(uri)
    if loc.is_s3:
        from boto3.s3.transfer import TransferConfig

        retrying(f"uploading {loc.uri()}", lambda: boto3_client().upload_file(
            os.fspath(local_path), loc.bucket, loc.key,
            Config=TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=16 << 20),
        ))
        return
    dest = Path(loc.path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.copyfile(local_path, tmp)
    os.replace(tmp, dest)


def download_file(uri: str | os.PathLike, local_path: str | os.PathLike) -> None:
    loc = parse(uri)
    Path(local_path).parent.mkdir(parents=True, exist_ok=True)
    if loc.is_s3:
        retrying(f"downloading {loc.uri()}",
                 lambda: boto3_client().download_file(loc.bucket, loc.key, os.fspath(local_path)))
    else:
        shutil.copyfile(loc.path, local_path)


def list_uris(prefix: str | os.PathLike, suffix: str | None = None) -> list[str]:
    """All object/file URIs under `prefix` (recursive), sorted, optionally ending with `suffix`."""
    loc = parse(prefix)
    out: list[str] = []
    if loc.is_s3:
        key_prefix = f"{loc.key}/" if loc.key else ""

        def listing() -> list[str]:
            paginator = boto3_client().get_paginator("list_objects_v2")
            return [f"s3://{loc.bucket}/{obj['Key']}" for page in paginator.paginate(Bucket=loc.bucket, Prefix=key_prefix)
                    for obj in page.get("Contents", [])]

        out = retrying(f"listing {loc.uri()}", listing)
    else:
        root = Path(loc.path)
        if root.is_dir():
            out = [str(p) for p in root.rglob("*") if p.is_file()]
    if suffix is not None:
        out = [u for u in out if u.endswith(suffix)]
    return sorted(out)


def delete(uri: str | os.PathLike) -> None:
    """Delete one object/file; a missing one is not an error."""
    loc = parse(uri)
    if loc.is_s3:
        retrying(f"deleting {loc.uri()}", lambda: boto3_client().delete_object(Bucket=loc.bucket, Key=loc.key))
    else:
        Path(loc.path).unlink(missing_ok=True)


def ensure_bucket(uri: str | os.PathLike) -> None:
    """Create the bucket of an `s3://` URI if it does not exist (no-op for local paths)."""
    loc = parse(uri)
    if not loc.is_s3:
        return
    from botocore.exceptions import ClientError

    def ensure() -> None:
        client = boto3_client()
        try:
            client.head_bucket(Bucket=loc.bucket)
        except ClientError as exc:
            if _transient(exc):
                raise
            client.create_bucket(Bucket=loc.bucket)

    retrying(f"creating the bucket of {loc.uri()}", ensure)
