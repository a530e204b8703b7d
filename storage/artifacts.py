"""Where finished checkpoints live, each named by its sha256 (`<sha256>.safetensors`): a local folder, or a prefix of
an S3-compatible bucket that the API and the workers share without sharing a disk.

A checkpoint is published whole or not at all: locally by a rename, on S3 by an upload that becomes visible only
when it completes (large files go up in parts, which S3 keeps invisible until the last one is in). The name is the
content's hash, so a redelivered job that publishes again lands on the same object.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator
from pathlib import Path

from storage.objects import Bucket, is_url

SUFFIX = ".safetensors"


def checkpoint_key(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a sha256: {sha256!r}")
    return f"{sha256}{SUFFIX}"


class Artifacts(abc.ABC):
    """Checkpoints addressed by their sha256 alone: a job record needs no path, and any host finds the file."""

    @abc.abstractmethod
    def publish(self, path: Path, sha256: str) -> None:
        """Make the finished file at `path` the checkpoint `sha256` (the file is consumed)."""

    @abc.abstractmethod
    def size(self, sha256: str) -> int | None:
        """The stored checkpoint's size in bytes, or None when it is not (or no longer) stored."""

    @abc.abstractmethod
    def problem(self) -> str | None:
        """Why checkpoints cannot be stored right now (for readiness checks), or None."""


class LocalArtifacts(Artifacts):
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    def path(self, sha256: str) -> Path:
        return self.root / checkpoint_key(sha256)

    def publish(self, path: Path, sha256: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.replace(path, self.path(sha256))

    def size(self, sha256: str) -> int | None:
        path = self.path(sha256)
        return path.stat().st_size if path.is_file() else None

    def problem(self) -> str | None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"the checkpoint folder cannot be created ({exc.strerror})"
        return None if os.access(self.root, os.W_OK) else "the checkpoint folder is not writable"


class S3Artifacts(Artifacts):
    def __init__(self, bucket: Bucket):
        self.bucket = bucket

    def publish(self, path: Path, sha256: str) -> None:
        self.bucket.upload(checkpoint_key(sha256), path)
        path.unlink(missing_ok=True)

    def size(self, sha256: str) -> int | None:
        info = self.bucket.head(checkpoint_key(sha256))
        return None if info is None else info.size

    def stream(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        return self.bucket.stream(checkpoint_key(sha256), start, end)

    def sign(self, sha256: str, seconds: int) -> str:
        return self.bucket.sign(checkpoint_key(sha256), seconds)

    def problem(self) -> str | None:
        return self.bucket.problem()


def open_artifacts(location: str | Path) -> Artifacts:
    """A path or `file://` URL: a local folder; `s3://bucket/prefix`: object storage."""
    text = str(location)
    if is_url(text):
        return S3Artifacts(Bucket(text))
    return LocalArtifacts(text.removeprefix("file://"))
