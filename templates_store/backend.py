"""Where template-set versions live. `StorageBackend` is the whole interface the store needs; `LocalBackend`
implements it on a POSIX filesystem, `templates_store.s3.S3Backend` on S3-compatible object storage (`folder` as a
verified download cache, `publish` as uploads followed by a conditional create of the manifest).

Local layout:

    <root>/<name>/<version>/{manifest.json, tensors.safetensors}   committed versions (immutable)
    <root>/<name>/<version>/model.sig                              its signature (storage.signing), if signed
    <root>/<name>/<version>/cards/card-<rev>-<sha256>.json         its quality cards, one file per revision
    <root>/<name>/aliases.json                                     alias -> version and history
    <root>/<name>/.retired                                         version numbers never to be reused
    <root>/<name>/.lock                                            serializes alias and delete operations
    <root>/<name>/.staging-<id>/ (+ .lock beside it)               a publisher at work, or its leftovers
    <root>/<name>/.trash-<id>/                                     a version being deleted
"""

from __future__ import annotations

import abc
import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from learngene.errors import IntegrityError
from learngene.formats.files import fsync_dir, write_json_atomic
from learngene.formats.template_set import MANIFEST, Manifest
from storage.signing import SIGNATURE
from templates_store.refs import ConflictError, NotFoundError, check_name, is_number

ALIASES = "aliases.json"
RETIRED = ".retired"
CARDS = "cards"
# A card revision's file name carries its number (the newest is served) and the sha256 of its bytes (checked on read).
CARD_FILE = re.compile(r"card-(\d{6})-([0-9a-f]{64})\.json")


def card_file(revision: int, sha256: str) -> str:
    return f"card-{revision:06d}-{sha256}.json"


def card_revisions(names: Iterable[str]) -> list[tuple[int, str]]:
    found = (CARD_FILE.fullmatch(n) for n in names)
    return sorted((int(m[1]), m[2]) for m in found if m)


class StorageBackend(abc.ABC):
    @abc.abstractmethod
    def names(self) -> list[str]: ...

    @abc.abstractmethod
    def versions(self, name: str) -> list[int]:
        """Committed versions of `name`, ascending; [] when the name has none."""

    @abc.abstractmethod
    def manifest(self, name: str, version: int) -> bytes:
        """The version's manifest as stored: NotFoundError if the version does not exist, IntegrityError if it
        exists without a readable manifest."""

    @abc.abstractmethod
    def folder(self, name: str, version: int, manifest: Manifest, digest: str) -> Path:
        """A local folder holding the files `manifest` lists (whose sha256 is `digest`), for reading."""

    @abc.abstractmethod
    def publish(self, name: str, stage: Callable[[Path], None], finalize: Callable[[Path, int], None]) -> int:
        """Make a new version visible all at once, or not at all; returns its number.

        `stage(folder)` writes the version's data files; `finalize(folder, version)` writes its manifest once the
        version number is known (it may be called again with a higher number if another publisher won the race),
        and its signature (`model.sig`, over the manifest and the data files) when the store signs."""

    @abc.abstractmethod
    def signature(self, name: str, version: int, digest: str) -> bytes | None:
        """The signature published with the version whose manifest has sha256 `digest`; None if it has none."""

    @abc.abstractmethod
    def delete(self, name: str, version: int) -> None: ...

    @abc.abstractmethod
    def read_aliases(self, name: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    def write_aliases(self, name: str, aliases: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Exclusive, cross-process lock on one name's mutable state (aliases, deletions, first publication)."""

    @abc.abstractmethod
    def cards(self, name: str, version: int) -> list[tuple[int, str]]:
        """The version's card revisions as (revision, sha256), oldest first; [] when it has none."""

    @abc.abstractmethod
    def read_card(self, name: str, version: int, revision: int, sha256: str) -> bytes:
        """One card revision's bytes as stored (the caller checks them against `sha256`)."""

    @abc.abstractmethod
    def write_card(self, name: str, version: int, revision: int, sha256: str, data: bytes) -> None:
        """Add a card revision, never replacing one: ConflictError if that revision exists. Called under
        `lock(name)`, so revision numbers are handed out one at a time."""

    def forget(self, digest: str) -> bool:
        """Drop a local copy of the version with manifest `digest`, so that the next `folder` fetches it afresh;
        True if there was one. Backends that read in place keep none."""
        return False

    @abc.abstractmethod
    def gc(self) -> list[str]:
        """Remove what dead publishers and interrupted deletions left behind; returns what was removed."""

    @abc.abstractmethod
    def problem(self) -> str | None:
        """Why the storage cannot be read and written right now (for readiness checks), or None."""


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    fsync_dir(folder)


@contextlib.contextmanager
def _flock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive flock on `path` (created if needed); yields False if non-blocking and already held.
    The kernel releases it when the holder dies, which is how leftovers of killed publishers are recognized."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


class LocalBackend(StorageBackend):
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    def _dir(self, name: str) -> Path:
        return self.root / check_name(name)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        folders = (p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        return sorted(p.name for p in folders if self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        d = self._dir(name)
        if not d.is_dir():
            return []
        return sorted(int(p.name) for p in d.iterdir() if is_number(p.name) and p.is_dir())

    def _retired(self, name: str) -> list[int]:
        path = self._dir(name) / RETIRED
        return json.loads(path.read_text()) if path.is_file() else []

    def _version_dir(self, name: str, version: int) -> Path:
        path = self._dir(name) / str(version)
        if not path.is_dir():
            raise NotFoundError(f"template set {name}@{version} does not exist")
        return path

    def manifest(self, name: str, version: int) -> bytes:
        path = self._version_dir(name, version) / MANIFEST
        if not path.is_file():
            raise IntegrityError(f"{name}@{version}: manifest missing")
        return path.read_bytes()

    def folder(self, name: str, version: int, manifest: Manifest | None = None, digest: str | None = None) -> Path:
        return self._version_dir(name, version)  # the files are read in place (and checked by the reader)

    def signature(self, name: str, version: int, digest: str) -> bytes | None:
        path = self._version_dir(name, version) / SIGNATURE  # renamed into place with the manifest it signs
        return path.read_bytes() if path.is_file() else None

    def publish(self, name: str, stage: Callable[[Path], None], finalize: Callable[[Path, int], None]) -> int:
        base = self._dir(name)
        base.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        staging = base / f".staging-{token}"
        # The lock beside the staging folder is held for the publisher's whole life: `gc` removes only staging
        # folders whose lock it can take, i.e. whose publisher has died.
        with _flock(base / f".staging-{token}.lock"):
            try:
                staging.mkdir()
                stage(staging)
                while True:
                    version = max([0, *self.versions(name), *self._retired(name)]) + 1
                    finalize(staging, version)
                    _fsync_tree(staging)
                    try:
                        os.rename(staging, base / str(version))  # fails if another publisher took this number
                    except OSError as exc:
                        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                            continue
                        raise
                    fsync_dir(base)
                    return version
            finally:
                shutil.rmtree(staging, ignore_errors=True)
                (base / f".staging-{token}.lock").unlink(missing_ok=True)

    def cards(self, name: str, version: int) -> list[tuple[int, str]]:
        folder = self._dir(name) / str(version) / CARDS  # a deleted version has none
        return card_revisions(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def read_card(self, name: str, version: int, revision: int, sha256: str) -> bytes:
        path = self._version_dir(name, version) / CARDS / card_file(revision, sha256)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"template set {name}@{version} has no card revision {revision}") from None

    def write_card(self, name: str, version: int, revision: int, sha256: str, data: bytes) -> None:
        folder = self._version_dir(name, version) / CARDS
        folder.mkdir(exist_ok=True)
        if any(r == revision for r, _ in self.cards(name, version)):
            raise ConflictError(f"template set {name}@{version} already has card revision {revision}")
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".card-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            try:
                os.link(tmp, folder / card_file(revision, sha256))  # unlike a rename, never replaces a file
            except FileExistsError:
                raise ConflictError(f"template set {name}@{version} already has card revision {revision}") from None
            fsync_dir(folder)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def delete(self, name: str, version: int) -> None:
        base = self._dir(name)
        source = self._version_dir(name, version)
        trash = base / f".trash-{uuid.uuid4().hex}"
        write_json_atomic(base / RETIRED, sorted({*self._retired(name), version}))
        os.rename(source, trash)  # the version disappears atomically; the files go after
        fsync_dir(base)
        shutil.rmtree(trash, ignore_errors=True)

    def read_aliases(self, name: str) -> dict[str, Any]:
        path = self._dir(name) / ALIASES
        return json.loads(path.read_text()) if path.is_file() else {}

    def write_aliases(self, name: str, aliases: dict[str, Any]) -> None:
        write_json_atomic(self._dir(name) / ALIASES, aliases)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        base = self._dir(name)
        base.mkdir(parents=True, exist_ok=True)
        with _flock(base / ".lock"):
            yield

    def problem(self) -> str | None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"{self.root}: {exc.strerror}"
        if not os.access(self.root, os.R_OK | os.W_OK | os.X_OK):
            return f"{self.root} is not readable and writable"
        return None

    @staticmethod
    def _stale(path: Path, seconds: float = 3600) -> bool:
        """Temporary files carry no lock; one untouched for an hour belongs to no live writer."""
        try:
            return time.time() - path.stat().st_mtime > seconds
        except FileNotFoundError:
            return False

    def gc(self) -> list[str]:
        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        for base in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for path in sorted(base.iterdir()):
                if path.name.startswith(".trash-") and path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(str(path))
                elif path.name.startswith(".staging-") and path.suffix == ".lock":
                    with _flock(path, blocking=False) as acquired:
                        if not acquired:
                            continue  # a live publisher
                        staging = path.with_suffix("")
                        if staging.exists():
                            shutil.rmtree(staging, ignore_errors=True)
                            removed.append(str(staging))
                        path.unlink(missing_ok=True)
                elif path.name.startswith(".staging-") and path.is_dir() and not Path(f"{path}.lock").exists():
                    shutil.rmtree(path, ignore_errors=True)  # its lock file is gone: the publisher is too
                    removed.append(str(path))
                elif path.name.startswith(".") and path.name.endswith(".tmp") and self._stale(path):
                    path.unlink(missing_ok=True)  # an atomic write that never reached its rename
                    removed.append(str(path))
        return removed
