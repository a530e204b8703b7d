"""One prefix of an S3-compatible bucket, through obstore (Python bindings of the Rust `object_store` crate).

obstore was chosen over fsspec + s3fs because the store's guarantees rest on conditional writes: obstore exposes
create-if-absent (`If-None-Match: *`) and compare-and-swap on the ETag (`If-Match`) as plain `put` modes, streams
multipart uploads from a file, signs URLs, and brings no aiobotocore stack. Credentials and the endpoint come from
the standard AWS variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
`AWS_REGION`, `AWS_ALLOW_HTTP`, ...) or the instance's role; no secret ever passes through the service's settings.

Errors are reduced to five kinds, with messages that name the key but never the endpoint or a credential:
`ObjectMissing`, `ObjectExists` (a create lost), `ObjectChanged` (a compare-and-swap lost), `ObjectMismatch` (not the
size or sha256 expected) and `StorageUnavailable` (the server cannot be reached or answered with an error: retried
by obstore first, then by the caller's policy).
"""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import AlreadyExistsError, BaseError, NotFoundError, PreconditionError
from obstore.store import S3Store

from learngene.formats.files import atomic_path

if TYPE_CHECKING:  # obstore's config TypedDicts exist in its stubs only
    from obstore.store import ClientConfig, RetryConfig, S3Config

log = logging.getLogger(__name__)

MULTIPART_CHUNK = 8 << 20  # S3 parts are at least 5 MiB; larger files go up in parts of this size


class StorageError(Exception):
    """Base of the object-storage errors."""


class StorageUnavailable(StorageError):
    """The object storage cannot be reached (or fails) right now: a retry later may succeed."""


class ObjectMissing(StorageError, FileNotFoundError):
    pass


class ObjectExists(StorageError):
    """A create-if-absent found the key taken."""


class ObjectChanged(StorageError):
    """A compare-and-swap found the object changed since it was read."""


class ObjectMismatch(StorageError):
    """An object's size or sha256 is not the one expected of it."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the bucket prefix
    size: int
    etag: str
    modified: dt.datetime


def is_url(location: str | os.PathLike) -> bool:
    return str(location).startswith("s3://")


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ('bucket', 'some/prefix'). Credentials in the URL are refused: they would
    end up in settings dumps and logs."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.hostname:
        raise ValueError(f"expected s3://bucket[/prefix], got {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("an s3:// URL names a bucket and prefix only: credentials come from the AWS_* environment")
    bucket = parts.netloc
    if not 3 <= len(bucket) <= 63:
        raise ValueError(f"bucket name {bucket!r} must be 3-63 characters")
    return bucket, parts.path.strip("/")


class Bucket:
    """Objects under one `s3://bucket/prefix`; keys are relative to the prefix."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float = 5,
        timeout_s: float = 120,
        retries: int = 3,
        sign_endpoint: str | None = None,
    ):
        """`sign_endpoint`: the endpoint presigned URLs name (the store as clients reach it, e.g. a public host
        name), where it differs from the one this process reaches it by (AWS_ENDPOINT_URL)."""
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        timeouts: ClientConfig = {
            "connect_timeout": dt.timedelta(seconds=connect_timeout_s),
            "timeout": dt.timedelta(seconds=timeout_s),
        }
        retry: RetryConfig = {
            "max_retries": retries,
            "retry_timeout": dt.timedelta(seconds=max(10.0, 3 * connect_timeout_s)),
            "backoff": {
                "init_backoff": dt.timedelta(milliseconds=100),
                "max_backoff": dt.timedelta(seconds=2),
                "base": 2,
            },
        }
        self._store = self._s3(endpoint, timeouts, retry)
        # Signing is done here, offline, for whatever host the URL names: a store of its own for that host.
        self._signer = self._s3(sign_endpoint, timeouts, retry) if sign_endpoint else self._store

    def _s3(self, endpoint: str | None, timeouts: ClientConfig, retry: RetryConfig) -> S3Store:
        config: S3Config | None = {"endpoint": endpoint} if endpoint else None
        return S3Store(
            self.bucket,
            prefix=self.prefix or None,
            # Path-style requests: what MinIO, SeaweedFS and Ceph expect behind a custom endpoint.
            virtual_hosted_style_request=endpoint is None,
            client_options={"allow_http": bool(endpoint and endpoint.startswith("http://")), **timeouts},
            retry_config=retry,
            config=config,  # merged with the keyword options, as `endpoint=...` would be
        )

    def __repr__(self) -> str:
        return f"Bucket({self.url!r})"

    # --- reading ---------------------------------------------------------------------------------------------

    def head(self, key: str) -> ObjectInfo | None:
        try:
            meta = self._call(key, obstore.head, self._store, key)
        except ObjectMissing:
            return None
        return _info(meta)

    def get(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and ETag."""
        result = self._call(key, obstore.get, self._store, key)
        return bytes(self._call(key, result.bytes)), result.meta["e_tag"] or ""

    def stream(self, key: str, start: int = 0, end: int | None = None, chunk: int = 1 << 20) -> Iterator[bytes]:
        """Bytes [start, end) of the object, in chunks, without holding it in memory."""
        options: dict = {"range": (start, end) if end is not None else {"offset": start}} if start or end else {}
        result = self._call(key, obstore.get, self._store, key, options=options)
        stream = result.stream(min_chunk_size=chunk)
        while True:
            try:
                piece = self._call(key, next, stream)
            except StopIteration:
                return
            yield bytes(piece)

    def download(self, key: str, dest: Path, *, sha256: str | None = None, max_bytes: int | None = None) -> int:
        """Write the object to `dest` (atomically: whole or not at all), checking its size against `max_bytes`
        before reading and its sha256 after; returns the number of bytes."""
        info = self.head(key)
        if info is None:
            raise ObjectMissing(f"object {key} does not exist")
        if max_bytes is not None and info.size > max_bytes:
            raise ObjectMismatch(f"object {key} has {info.size} bytes, over the limit of {max_bytes}")
        digest, size = hashlib.sha256(), 0
        with atomic_path(dest) as tmp, open(tmp, "wb") as f:
            for piece in self.stream(key):
                size += len(piece)
                if max_bytes is not None and size > max_bytes:  # it grew since the HEAD
                    raise ObjectMismatch(f"object {key} is over the limit of {max_bytes} bytes")
                digest.update(piece)
                f.write(piece)
            if sha256 is not None and digest.hexdigest() != sha256:
                raise ObjectMismatch(f"object {key} does not match its recorded sha256")
        return size

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        stream = obstore.list(self._store, prefix=prefix or None, chunk_size=1000)
        return [_info(meta) for chunk in self._call(prefix, list, stream) for meta in chunk]

    def objects_in(self, folder: str) -> builtins.list[ObjectInfo]:
        """The objects directly in `folder` (one level, as S3's delimiter listing gives them)."""
        prefix = f"{folder.rstrip('/')}/" if folder else ""
        result = self._call(prefix, obstore.list_with_delimiter, self._store, prefix or None)
        return [_info(meta) for meta in result["objects"]]

    def folders(self, prefix: str = "") -> builtins.list[str]:
        """The names one level below `prefix` (S3's common prefixes)."""
        prefix = f"{prefix.rstrip('/')}/" if prefix else ""
        result = self._call(prefix, obstore.list_with_delimiter, self._store, prefix or None)
        return sorted(p.rstrip("/").rpartition("/")[2] for p in result["common_prefixes"])

    def sign(self, key: str, seconds: int) -> str:
        """A presigned GET URL valid for `seconds`."""
        return self._call(key, obstore.sign, self._signer, "GET", key, dt.timedelta(seconds=seconds))

    # --- writing ---------------------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, *, create: bool = False, if_match: str | None = None) -> str:
        """Write a small object; `create`: only if the key is free (else ObjectExists); `if_match`: only if its
        ETag is still this one (else ObjectChanged). Returns the new ETag."""
        mode = "create" if create else {"e_tag": if_match} if if_match is not None else "overwrite"
        result = self._call(key, obstore.put, self._store, key, data, mode=mode, use_multipart=False)
        return result["e_tag"] or ""

    def upload(self, key: str, path: Path) -> None:
        """Upload a file, in parts when large. Parts stay invisible until the upload completes, so a writer killed
        midway leaves no object, only parts that the bucket's lifecycle rule (or `abort`) removes."""
        large = path.stat().st_size > MULTIPART_CHUNK
        self._call(
            key,
            obstore.put,
            self._store,
            key,
            path,
            use_multipart=large,
            chunk_size=MULTIPART_CHUNK,
            max_concurrency=4,
        )

    def delete(self, key: str) -> None:
        self._call(key, obstore.delete, self._store, key)

    def problem(self) -> str | None:
        """Why the bucket cannot be used right now, or None (a listing, which also fails for a missing bucket)."""
        try:
            self.list(".ready")
        except StorageError as exc:
            return str(exc)
        return None

    def _call(self, key: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (FileNotFoundError, NotFoundError):
            raise ObjectMissing(f"object {key} does not exist") from None
        except AlreadyExistsError:
            raise ObjectExists(f"object {key} already exists") from None
        except PreconditionError:
            raise ObjectChanged(f"object {key} changed since it was read") from None
        except BaseError as exc:
            # The full text names the endpoint and the request: for the operator's log only.
            log.warning("object storage %s: %s failed: %s", self.url, key, str(exc).splitlines()[0])
            raise StorageUnavailable("object storage is unavailable; retry later") from None


def _info(meta) -> ObjectInfo:
    return ObjectInfo(key=meta["path"], size=meta["size"], etag=meta["e_tag"] or "", modified=meta["last_modified"])
