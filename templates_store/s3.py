"""The template store on S3-compatible object storage, with the local store's guarantees.

Layout under `s3://bucket/prefix`:

    .objects/<sha256>                      content-addressed files, uploaded before any manifest names them
    <name>/versions/<version>/manifest.json the version itself: created with If-None-Match: *, the commit point
    <name>/versions/<version>/cards/card-<rev>-<sha256>.json  its quality cards, each created with If-None-Match: *
    <name>/versions/<version>/signatures/<manifest sha256>.sig its signature (storage.signing), put before the commit
    <name>/retired/<version>               a deleted version's number, never reused
    <name>/aliases.json                    alias -> version and history
    <name>/.lock                           a lease (conditional create) serializing alias and delete operations

A version is visible whole or not at all: its files are uploaded first and its manifest, created last, is the only
thing that makes it exist. Two racing publishers both try `versions/<n>`; the create is conditional, so one wins and
the other tries n + 1 (a signature is keyed by the manifest it signs, so the loser's never replaces the winner's).
Reads go through a local cache keyed by the manifest's sha256 (`folder`): each file is downloaded once, checked
against the manifest, and evicted least recently used past `cache_bytes`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from learngene.errors import IntegrityError
from learngene.formats.files import sha256_file
from learngene.formats.template_set import MANIFEST, Manifest, parse_manifest
from storage.cache import cached_entry
from storage.objects import Bucket, ObjectChanged, ObjectExists, ObjectMismatch, ObjectMissing
from storage.signing import SIGNATURE
from templates_store.backend import ALIASES, CARDS, StorageBackend, card_file, card_revisions
from templates_store.refs import ConflictError, NotFoundError, StoreError, check_name, is_number

OBJECTS = ".objects"
SIGNATURES = "signatures"
LOCK_TTL_S = 30.0  # a lock holder that died is replaced after this long; every operation under it takes milliseconds


class S3Backend(StorageBackend):
    def __init__(
        self,
        bucket: Bucket,
        cache_dir: str | Path,
        *,
        cache_bytes: int = 10 << 30,
        orphan_grace_s: float = 3600.0,
    ):
        self.bucket = bucket
        self.cache_dir = Path(cache_dir).expanduser()
        self.cache_bytes = cache_bytes
        # gc leaves unreferenced objects younger than this: they may belong to a publisher about to commit.
        self.orphan_grace_s = orphan_grace_s

    def __repr__(self) -> str:
        return f"S3Backend({self.bucket.url!r})"

    @staticmethod
    def _manifest_key(name: str, version: int) -> str:
        return f"{check_name(name)}/versions/{version}/{MANIFEST}"

    # --- reading ---------------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return [n for n in self.bucket.folders() if not n.startswith(".") and self.versions(n)]

    def versions(self, name: str) -> list[int]:
        # From the manifests' keys, not from "folders": a filer-backed server (SeaweedFS) keeps empty ones.
        keys = (info.key.split("/") for info in self.bucket.list(f"{check_name(name)}/versions/"))
        return sorted(int(k[2]) for k in keys if len(k) == 4 and is_number(k[2]) and k[3] == MANIFEST)

    def _retired(self, name: str) -> list[int]:
        keys = (info.key.rpartition("/")[2] for info in self.bucket.list(f"{name}/retired/"))
        return [int(k) for k in keys if is_number(k)]

    def manifest(self, name: str, version: int) -> bytes:
        try:
            return self.bucket.get(self._manifest_key(name, version))[0]
        except ObjectMissing:
            raise NotFoundError(f"template set {name}@{version} does not exist") from None

    def folder(self, name: str, version: int, manifest: Manifest, digest: str) -> Path:
        """The version's files in the local cache: downloaded once per manifest digest, each checked against its
        sha256 and size on the way in (the reader checks them again)."""

        def download(entry: Path) -> None:
            target = entry / name / str(version)  # `name/version/file` is how integrity errors name a file
            target.mkdir(parents=True)
            for file, expected in manifest.files.items():
                try:
                    self.bucket.download(
                        f"{OBJECTS}/{expected.sha256}", target / file, sha256=expected.sha256, max_bytes=expected.bytes
                    )
                except ObjectMissing:
                    raise IntegrityError(f"{name}/{version}/{file}: file missing") from None
                except ObjectMismatch:
                    message = "sha256 does not match the manifest (modified or corrupt)"
                    raise IntegrityError(f"{name}/{version}/{file}: {message}") from None
            (target / MANIFEST).write_text(manifest.model_dump_json())

        entry = cached_entry(self.cache_dir, digest[:32], download, max_bytes=self.cache_bytes)
        return entry / name / str(version)

    @staticmethod
    def _signature_key(name: str, version: int, digest: str) -> str:
        return f"{check_name(name)}/versions/{version}/{SIGNATURES}/{digest}.sig"

    def signature(self, name: str, version: int, digest: str) -> bytes | None:
        try:
            return self.bucket.get(self._signature_key(name, version, digest))[0]
        except ObjectMissing:
            return None

    def _cards_prefix(self, name: str, version: int) -> str:
        return f"{check_name(name)}/versions/{version}/{CARDS}/"

    def cards(self, name: str, version: int) -> list[tuple[int, str]]:
        keys = (info.key.rpartition("/")[2] for info in self.bucket.list(self._cards_prefix(name, version)))
        return card_revisions(keys)

    def read_card(self, name: str, version: int, revision: int, sha256: str) -> bytes:
        try:
            return self.bucket.get(self._cards_prefix(name, version) + card_file(revision, sha256))[0]
        except ObjectMissing:
            raise NotFoundError(f"template set {name}@{version} has no card revision {revision}") from None

    def write_card(self, name: str, version: int, revision: int, sha256: str, data: bytes) -> None:
        self.manifest(name, version)  # NotFoundError for a missing version
        if any(r == revision for r, _ in self.cards(name, version)):
            raise ConflictError(f"template set {name}@{version} already has card revision {revision}")
        try:
            self.bucket.put(self._cards_prefix(name, version) + card_file(revision, sha256), data, create=True)
        except ObjectExists:
            raise ConflictError(f"template set {name}@{version} already has card revision {revision}") from None

    def forget(self, digest: str) -> bool:
        entry = self.cache_dir / digest[:32]
        if not entry.is_dir():
            return False
        shutil.rmtree(entry, ignore_errors=True)
        return True

    # --- writing ---------------------------------------------------------------------------------------------

    def publish(self, name: str, stage: Callable[[Path], None], finalize: Callable[[Path, int], None]) -> int:
        check_name(name)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache_dir, prefix=".publish-") as tmp:
            staging = Path(tmp)
            stage(staging)
            for path in sorted(staging.iterdir()):
                # Always uploaded, even when present: the fresh date keeps `gc` from taking it before the commit.
                self.bucket.upload(f"{OBJECTS}/{sha256_file(path)}", path)
            while True:
                version = max([0, *self.versions(name), *self._retired(name)]) + 1
                finalize(staging, version)
                manifest = (staging / MANIFEST).read_bytes()
                if (staging / SIGNATURE).is_file():  # before the commit: a version never shows up unsigned
                    key = self._signature_key(name, version, hashlib.sha256(manifest).hexdigest())
                    self.bucket.put(key, (staging / SIGNATURE).read_bytes())
                try:
                    self.bucket.put(self._manifest_key(name, version), manifest, create=True)
                except ObjectExists:
                    continue  # another publisher took this number
                return version

    def delete(self, name: str, version: int) -> None:
        self.manifest(name, version)  # NotFoundError for a missing version
        # Retired first, then the manifest goes: at every moment the number is in `versions` or `retired`, so a
        # publisher (which lists both) never hands it out again. The files stay for `gc`.
        self.bucket.put(f"{name}/retired/{version}", b"")
        self.bucket.delete(self._manifest_key(name, version))
        for info in self.bucket.list(f"{name}/versions/{version}/"):  # its cards and signatures go with it
            self.bucket.delete(info.key)

    def read_aliases(self, name: str) -> dict[str, Any]:
        try:
            return json.loads(self.bucket.get(f"{check_name(name)}/{ALIASES}")[0])
        except ObjectMissing:
            return {}

    def write_aliases(self, name: str, aliases: dict[str, Any]) -> None:
        self.bucket.put(f"{check_name(name)}/{ALIASES}", json.dumps(aliases, indent=2, sort_keys=True).encode())

    @contextlib.contextmanager
    def lock(self, name: str, timeout_s: float = 60.0) -> Iterator[None]:
        """A lease object taken by conditional create; a holder that died (its lease expired) is replaced by a
        compare-and-swap on the lease's ETag, so exactly one waiter takes it over."""
        key, token = f"{check_name(name)}/.lock", uuid.uuid4().hex
        deadline = time.monotonic() + timeout_s
        while True:
            lease = json.dumps({"owner": token, "host": socket.gethostname(), "expires": time.time() + LOCK_TTL_S})
            try:
                self.bucket.put(key, lease.encode(), create=True)
                break
            except ObjectExists:
                pass
            try:
                held, etag = self.bucket.get(key)
                if json.loads(held).get("expires", 0) < time.time():
                    self.bucket.put(key, lease.encode(), if_match=etag)
                    break
            except (ObjectMissing, ObjectChanged, ValueError):
                pass  # released or taken over meanwhile: try again
            if time.monotonic() > deadline:
                raise StoreError(f"template set {name!r} is locked by another operation; retry later")
            time.sleep(0.05 + 0.1 * (uuid.uuid4().int % 100) / 100)
        try:
            yield
        finally:
            with contextlib.suppress(ObjectMissing, ValueError):
                held, _ = self.bucket.get(key)
                if json.loads(held).get("owner") == token:
                    self.bucket.delete(key)

    def problem(self) -> str | None:
        return self.bucket.problem()

    def gc(self) -> list[str]:
        """Delete files no manifest names (left by publishers that died before committing, or by deleted versions)
        once they are older than `orphan_grace_s`; returns their URLs."""
        referenced: set[str] = set()
        removed = []
        cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=self.orphan_grace_s)
        for name in self.bucket.folders():
            if name.startswith("."):
                continue
            live: dict[int, str] = {}  # version -> the sha256 of its manifest
            for version in self.versions(name):
                try:
                    data = self.manifest(name, version)
                    manifest = parse_manifest(data, Path(name, str(version), MANIFEST))
                except (IntegrityError, NotFoundError):
                    continue
                live[version] = hashlib.sha256(data).hexdigest()
                referenced.update(entry.sha256 for entry in manifest.files.values())
            # Cards and signatures left by a deletion interrupted midway; signatures of a publisher that lost the
            # race for its number.
            for info in self.bucket.list(f"{name}/versions/"):
                parts = info.key.split("/")
                if len(parts) != 5 or parts[3] not in (CARDS, SIGNATURES) or not is_number(parts[2]):
                    continue
                digest = live.get(int(parts[2]))
                dead = digest is None or (parts[3] == SIGNATURES and parts[4] != f"{digest}.sig")
                if dead and info.modified <= cutoff:
                    self.bucket.delete(info.key)
                    removed.append(f"{self.bucket.url}/{info.key}")
        for info in self.bucket.list(f"{OBJECTS}/"):
            digest = info.key.rpartition("/")[2]
            if digest not in referenced and info.modified <= cutoff:
                self.bucket.delete(info.key)
                removed.append(f"{self.bucket.url}/{info.key}")
        return removed
