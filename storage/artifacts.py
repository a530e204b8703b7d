"""Where finished checkpoints live, each file named by its sha256 and kind (`<sha256>.safetensors` for the weights,
`<sha256>.json` and `<sha256>.md` for a checkpoint folder's config.json and README.md): a local folder, or a prefix
of an S3-compatible bucket that the API and the workers share without sharing a disk.

A checkpoint is published whole or not at all: locally by a rename, on S3 by an upload that becomes visible only
when it completes (large files go up in parts, which S3 keeps invisible until the last one is in). The name is the
content's hash, so a redelivered job that publishes again lands on the same object.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from storage.objects import Bucket, is_url

SUFFIX = ".safetensors"
SUFFIXES = (SUFFIX, ".json", ".md", ".sig")  # the kinds of file stored: weights, config.json, README.md, model.sig


def artifact_key(sha256: str, suffix: str = SUFFIX) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a sha256: {sha256!r}")
    if suffix not in SUFFIXES:
        raise ValueError(f"not a stored kind of file: {suffix!r}")
    return f"{sha256}{suffix}"


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    suffix: str
    bytes: int
    modified: float  # epoch seconds


def _parsed(name: str, size: int, modified: float) -> StoredFile | None:
    """A stored file's entry, or None for anything else in the folder (a partial upload, a stranger's file)."""
    sha256, dot, rest = name.partition(".")
    try:
        artifact_key(sha256, dot + rest)
    except ValueError:
        return None
    return StoredFile(sha256, dot + rest, size, modified)


class Artifacts(abc.ABC):
    """Files addressed by their sha256 (and suffix) alone: a job record needs no path, and any host finds the file."""

    @abc.abstractmethod
    def publish(self, path: Path, sha256: str, suffix: str = SUFFIX) -> None:
        """Make the finished file at `path` the stored file `sha256` (the file is consumed)."""

    @abc.abstractmethod
    def size(self, sha256: str, suffix: str = SUFFIX) -> int | None:
        """The stored file's size in bytes, or None when it is not (or no longer) stored."""

    @abc.abstractmethod
    def stream(self, sha256: str, start: int = 0, end: int | None = None, suffix: str = SUFFIX) -> Iterator[bytes]:
        """Bytes [start, end) of the stored file, in chunks."""

    @abc.abstractmethod
    def problem(self) -> str | None:
        """Why checkpoints cannot be stored right now (for readiness checks), or None."""

    @abc.abstractmethod
    def files(self) -> Iterator[StoredFile]:
        """Every stored file (for the retention sweep, `jobs.retention`)."""

    @abc.abstractmethod
    def remove(self, sha256: str, suffix: str = SUFFIX) -> None:
        """Delete the stored file; a file already gone is no error."""


class LocalArtifacts(Artifacts):
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    def path(self, sha256: str, suffix: str = SUFFIX) -> Path:
        return self.root / artifact_key(sha256, suffix)

    def publish(self, path: Path, sha256: str, suffix: str = SUFFIX) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.replace(path, self.path(sha256, suffix))

    def size(self, sha256: str, suffix: str = SUFFIX) -> int | None:
        path = self.path(sha256, suffix)
        return path.stat().st_size if path.is_file() else None

    def stream(
        self, sha256: str, start: int = 0, end: int | None = None, suffix: str = SUFFIX, chunk: int = 1 << 20
    ) -> Iterator[bytes]:
        with open(self.path(sha256, suffix), "rb") as f:
            f.seek(start)
            left = None if end is None else end - start
            while left is None or left > 0:
                piece = f.read(chunk if left is None else min(chunk, left))
                if not piece:
                    return
                left = None if left is None else left - len(piece)
                yield piece

    def problem(self) -> str | None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"the checkpoint folder cannot be created ({exc.strerror})"
        return None if os.access(self.root, os.W_OK) else "the checkpoint folder is not writable"

    def files(self) -> Iterator[StoredFile]:
        if not self.root.is_dir():
            return
        with os.scandir(self.root) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    stat = entry.stat(follow_symlinks=False)
                    if (found := _parsed(entry.name, stat.st_size, stat.st_mtime)) is not None:
                        yield found

    def remove(self, sha256: str, suffix: str = SUFFIX) -> None:
        self.path(sha256, suffix).unlink(missing_ok=True)


class S3Artifacts(Artifacts):
    def __init__(self, bucket: Bucket):
        self.bucket = bucket

    def publish(self, path: Path, sha256: str, suffix: str = SUFFIX) -> None:
        self.bucket.upload(artifact_key(sha256, suffix), path)
        path.unlink(missing_ok=True)

    def size(self, sha256: str, suffix: str = SUFFIX) -> int | None:
        info = self.bucket.head(artifact_key(sha256, suffix))
        return None if info is None else info.size

    def stream(self, sha256: str, start: int = 0, end: int | None = None, suffix: str = SUFFIX) -> Iterator[bytes]:
        return self.bucket.stream(artifact_key(sha256, suffix), start, end)

    def sign(self, sha256: str, seconds: int, suffix: str = SUFFIX) -> str:
        return self.bucket.sign(artifact_key(sha256, suffix), seconds)

    def problem(self) -> str | None:
        return self.bucket.problem()

    def files(self) -> Iterator[StoredFile]:
        for info in self.bucket.objects_in(""):
            if (found := _parsed(info.key, info.size, info.modified.timestamp())) is not None:
                yield found

    def remove(self, sha256: str, suffix: str = SUFFIX) -> None:
        self.bucket.delete(artifact_key(sha256, suffix))


def open_artifacts(location: str | Path, *, sign_endpoint: str | None = None) -> Artifacts:
    """A path or `file://` URL: a local folder; `s3://bucket/prefix`: object storage (presigned URLs naming
    `sign_endpoint` when given)."""
    text = str(location)
    if is_url(text):
        return S3Artifacts(Bucket(text, sign_endpoint=sign_endpoint))
    return LocalArtifacts(text.removeprefix("file://"))
