"""The template store: immutable, checksummed versions of template sets, movable aliases, verified cached loads."""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path

import platformdirs
from pydantic import ValidationError

from learngene.errors import IntegrityError
from learngene.formats.template_set import (
    BUILTIN_TEMPLATE_SETS,
    CARD,
    MANIFEST,
    Manifest,
    TemplateSet,
    parse_manifest,
    verify_files,
)
from learngene.quality.card import CardDomain, QualityCard
from learngene.train.condense import check_template_set
from storage.objects import Bucket
from storage.signing import SIGNATURE, sign_folder
from templates_store.backend import LocalBackend, StorageBackend
from templates_store.refs import (
    LATEST,
    BrokenVersion,
    ConflictError,
    NotFoundError,
    RefError,
    ResolvedRef,
    StoreError,
    check_alias,
    check_name,
    parse_ref,
)
from templates_store.s3 import S3Backend
from templates_store.views import AliasRecord, VersionFiles, VersionInfo, card_summary


class TemplateStore:
    def __init__(
        self,
        backend: StorageBackend,
        *,
        cache_size: int = 8,
        builtins: Mapping[str, Path] = BUILTIN_TEMPLATE_SETS,
        signing_key: Path | None = None,
    ):
        self.backend = backend
        self.signing_key = signing_key  # every version published through this store is signed with it
        self.builtins = dict(builtins)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, TemplateSet] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # template sets read from storage (cache misses)
        self.hits = 0  # template sets served from the in-process cache

    @classmethod
    def local(cls, root: str | Path, **kwargs) -> TemplateStore:
        return cls(LocalBackend(root), **kwargs)

    @classmethod
    def open(
        cls, location: str | Path, *, cache_dir: str | Path | None = None, cache_bytes: int = 10 << 30, **kwargs
    ) -> TemplateStore:
        """The store at `location`, its backend chosen by the URL scheme: a path or `file://` is the local
        filesystem, `s3://bucket/prefix` S3-compatible object storage read through a local cache in `cache_dir`
        (bounded by `cache_bytes`)."""
        scheme, sep, rest = str(location).partition("://")
        if not sep:
            return cls.local(location, **kwargs)
        if scheme == "file":
            return cls.local(rest, **kwargs)
        if scheme == "s3":
            try:
                bucket = Bucket(str(location))
            except ValueError as exc:
                raise StoreError(str(exc)) from None
            cache = Path(cache_dir) if cache_dir else Path(platformdirs.user_cache_dir("learngene")) / "store"
            return cls(S3Backend(bucket, cache, cache_bytes=cache_bytes), **kwargs)
        raise StoreError(f"no storage backend for {scheme}:// locations; use a path, file:// or s3://")

    # --- reading -----------------------------------------------------------------------------------------------

    def resolve(self, ref: str) -> ResolvedRef:
        name, selector = parse_ref(ref)
        self._ensure_builtin(name)
        if selector == LATEST:  # the highest version that is whole; a broken one is reported by `problems`
            whole = (v for v in reversed(self.backend.versions(name)) if self._broken(name, v) is None)
            newest = next(whole, None)
            if newest is None:
                raise NotFoundError(f"template set {name!r} does not exist")
            version = newest
        elif isinstance(selector, int):
            version = selector
        else:
            record = self.backend.read_aliases(name).get(selector)
            if record is None:
                raise NotFoundError(f"template set {name!r} has no alias {selector!r}")
            version = record["version"]
        problem = None if selector == LATEST else self._broken(name, version)  # latest was checked above
        if problem is not None:
            raise BrokenVersion(f"template set {name}@{version} is damaged ({problem}); see `learngene templates gc`")
        digest = hashlib.sha256(self.backend.manifest(name, version)).hexdigest()
        return ResolvedRef(name=name, version=version, digest=digest)

    def manifest(self, ref: str | ResolvedRef) -> Manifest:
        resolved = self._resolved(ref)
        return _parse(resolved.name, resolved.version, self.backend.manifest(resolved.name, resolved.version))

    def load(self, ref: str | ResolvedRef) -> TemplateSet:
        """The template set, verified against its manifest; repeated loads are served from memory.

        A `ResolvedRef` loads exactly the version it was resolved to, or fails if that version changed."""
        resolved = self._resolved(ref)
        with self._lock:
            if resolved.digest in self._cache:
                self._cache.move_to_end(resolved.digest)
                self.hits += 1
                return self._cache[resolved.digest]
        manifest = self._checked_manifest(resolved)
        folder = self.backend.folder(resolved.name, resolved.version, manifest, resolved.digest)
        try:
            template_set = TemplateSet.load(folder, manifest=manifest)
        except IntegrityError:
            if not self.backend.forget(resolved.digest):
                raise
            # A local copy damaged on this host's disk: fetched again (and checked again) from the storage itself.
            folder = self.backend.folder(resolved.name, resolved.version, manifest, resolved.digest)
            template_set = TemplateSet.load(folder, manifest=manifest)
        check_template_set(template_set)  # published sets were checked; this catches one placed by hand
        with self._lock:
            self.loads += 1
            self._cache[resolved.digest] = template_set
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return template_set

    def verify(self, ref: str | ResolvedRef) -> ResolvedRef:
        """Re-hash every file of a version, ignoring any cached check."""
        resolved = self._resolved(ref)
        manifest = self._checked_manifest(resolved)
        verify_files(self.backend.folder(resolved.name, resolved.version, manifest, resolved.digest), manifest)
        return resolved

    def files(self, ref: str | ResolvedRef) -> VersionFiles:
        """The version as a folder of files to hand out: the files its manifest names (each re-hashed), the
        manifest's stored bytes and, for a version published signed, its `model.sig`."""
        resolved = self._resolved(ref)
        data = self._stored_manifest(resolved)
        manifest = _parse(resolved.name, resolved.version, data)
        folder = self.backend.folder(resolved.name, resolved.version, manifest, resolved.digest)
        verify_files(folder, manifest)
        blobs = {MANIFEST: data}
        signature = self.backend.signature(resolved.name, resolved.version, resolved.digest)
        if signature is not None:
            blobs[SIGNATURE] = signature
        paths = {file: folder / file for file in manifest.files}
        return VersionFiles(ref=resolved, manifest=manifest, paths=paths, blobs=blobs)

    def manifests(
        self, name: str | None = None, *, after: tuple[str, int] | None = None
    ) -> Iterator[tuple[ResolvedRef, Manifest]]:
        """Every usable version in (name, version) order, past `after`, with its manifest, each read once (read
        lazily: a caller that stops early reads no more). A damaged version is skipped (`problems` lists it)."""
        for builtin in [check_name(name)] if name else self.builtins:
            self._ensure_builtin(builtin)
        for n in [name] if name else sorted(self.backend.names()):
            if after is not None and n < after[0]:
                continue
            for version in self.backend.versions(n):
                if after is not None and (n, version) <= after:
                    continue
                try:
                    data = self.backend.manifest(n, version)
                    manifest = _parse(n, version, data)
                except (IntegrityError, NotFoundError):
                    continue  # listed by `problems` (or deleted meanwhile), never half-shown
                yield ResolvedRef(name=n, version=version, digest=hashlib.sha256(data).hexdigest()), manifest

    def list(
        self, name: str | None = None, *, after: tuple[str, int] | None = None, limit: int | None = None
    ) -> builtins.list[VersionInfo]:
        """Versions in (name, version) order; with `after`, those past it; with `limit`, at most that many (a page:
        only its manifests are read)."""
        out: builtins.list[VersionInfo] = []
        aliases: dict[str, dict[int, builtins.list[str]]] = {}  # name -> version -> its aliases, read once a name
        for resolved, m in self.manifests(name, after=after):
            if resolved.name not in aliases:
                targets: dict[int, builtins.list[str]] = {}
                for alias, record in sorted(self.backend.read_aliases(resolved.name).items()):
                    targets.setdefault(record["version"], []).append(alias)
                aliases[resolved.name] = targets
            card = None
            with contextlib.suppress(IntegrityError, NotFoundError):  # a damaged card: none shown, `card` says why
                card = self._current_card(resolved)
            out.append(
                VersionInfo(
                    name=resolved.name,
                    version=resolved.version,
                    digest=resolved.digest,
                    method=m.method,
                    created=m.created,
                    aliases=aliases[resolved.name].get(resolved.version, []),
                    metrics=m.metrics,
                    parameters=m.parameters,
                    bytes=sum(f.bytes for f in m.files.values()),
                    domain=CardDomain.of(m.config, m.lineage),
                    card=None if card is None else card_summary(*card),
                )
            )
            if limit is not None and len(out) >= limit:
                return out
        return out

    def card(self, ref: str | ResolvedRef) -> QualityCard | None:
        """The version's current quality card (its newest revision, checked against its recorded sha256), or None."""
        current = self._current_card(self._resolved(ref))
        return None if current is None else current[1]

    def card_revisions(self, ref: str | ResolvedRef) -> builtins.list[tuple[int, str]]:
        """Every card revision of the version as (revision, sha256), oldest first."""
        resolved = self._resolved(ref)
        return self.backend.cards(resolved.name, resolved.version)

    def read_card(self, ref: str | ResolvedRef, revision: int) -> QualityCard:
        resolved = self._resolved(ref)
        sha256 = dict(self.backend.cards(resolved.name, resolved.version)).get(revision)
        if sha256 is None:
            raise NotFoundError(f"{resolved} has no card revision {revision}")
        return self._read_card(resolved, revision, sha256)

    def put_card(self, ref: str | ResolvedRef, card: QualityCard) -> int:
        """Add `card` as the version's newest card revision (never replacing one); returns its revision number."""
        resolved = self._resolved(ref)
        if (card.template_set, card.digest) != (str(resolved), resolved.digest):
            raise ValueError(
                f"the card is of {card.template_set} (manifest {card.digest[:12]}), not of {resolved} "
                f"(manifest {resolved.digest[:12]})"
            )
        with self.backend.lock(resolved.name):
            self._checked_manifest(resolved)  # still the version the card was measured on (not deleted meanwhile)
            return self._add_card(resolved, card)

    def _add_card(self, resolved: ResolvedRef, card: QualityCard) -> int:
        """Write `card` as the next revision; the caller holds the set's lock."""
        data = card.model_dump_json(indent=2).encode() + b"\n"
        revision = max([0, *(r for r, _ in self.backend.cards(resolved.name, resolved.version))]) + 1
        self.backend.write_card(resolved.name, resolved.version, revision, hashlib.sha256(data).hexdigest(), data)
        return revision

    def problems(self) -> builtins.list[str]:
        """Versions that cannot be used (an empty folder, a missing or unreadable manifest), one line each."""
        found = []
        for name in self.backend.names():
            for version in self.backend.versions(name):
                problem = self._broken(name, version)
                if problem is not None:
                    found.append(f"{name}@{version}: {problem}")
        return found

    def aliases(self, name: str) -> dict[str, AliasRecord]:
        self._ensure_builtin(check_name(name))
        records = self.backend.read_aliases(name)
        return {alias: AliasRecord.model_validate(record) for alias, record in sorted(records.items())}

    # --- writing -----------------------------------------------------------------------------------------------

    def publish(self, template_set: TemplateSet, name: str | None = None) -> ResolvedRef:
        """Add a new immutable version of `name` (default: the set's own name); visible all at once or not at all."""
        name = check_name(name or template_set.name)
        check_template_set(template_set)  # before anything is staged: a crafted or diverged set is never visible
        return self.resolve(f"{name}@{self._publish(template_set, name)}")

    def promote(self, name: str, version: int, alias: str) -> AliasRecord:
        """Point `alias` at `version` (creating or moving it); the previous target is kept for `rollback`."""
        check_alias(alias)
        self._existing(name)
        with self.backend.lock(name):
            return self._set_alias(name, version, alias)

    def rollback(self, name: str, alias: str) -> AliasRecord:
        """Move `alias` back to its previous target that still exists."""
        check_alias(alias)
        self._existing(name)
        with self.backend.lock(name):
            aliases = self.backend.read_aliases(name)
            if alias not in aliases:
                raise NotFoundError(f"template set {name!r} has no alias {alias!r}")
            history = list(aliases[alias]["history"])
            existing = set(self.backend.versions(name))
            history.pop()
            while history and history[-1] not in existing:
                history.pop()
            if not history:
                raise ConflictError(f"alias {name}@{alias} has no earlier version to roll back to")
            aliases[alias] = {"version": history[-1], "history": history, "updated": _now()}
            self.backend.write_aliases(name, aliases)
            return AliasRecord.model_validate(aliases[alias])

    def delete(self, ref: str) -> ResolvedRef:
        """Delete one explicit version (`name@N`); refused while an alias points to it. Numbers are never reused."""
        name, selector = parse_ref(ref)
        if not isinstance(selector, int):
            raise RefError(f"delete needs an explicit version (name@N), got {ref!r}")
        self._existing(name)  # before the lock: it may take the same lock, and flock does not nest
        with self.backend.lock(name):
            resolved = self.resolve(ref)
            holders = sorted(a for a, r in self.backend.read_aliases(name).items() if r["version"] == selector)
            if holders:
                raise ConflictError(f"{ref} is the target of alias(es) {', '.join(holders)}; move them first")
            self.backend.delete(name, selector)
        with self._lock:
            self._cache.pop(resolved.digest, None)
        return resolved

    def gc(self) -> builtins.list[str]:
        return self.backend.gc()

    # --- internals ---------------------------------------------------------------------------------------------

    def _existing(self, name: str) -> None:
        """A name that has versions (a bundled one is published first); NotFoundError before anything is created."""
        self._ensure_builtin(check_name(name))
        if not self.backend.versions(name):
            raise NotFoundError(f"template set {name!r} does not exist")

    def _broken(self, name: str, version: int) -> str | None:
        try:
            _parse(name, version, self.backend.manifest(name, version))
        except IntegrityError as exc:
            return str(exc).partition(": ")[2] or str(exc)
        return None

    def _resolved(self, ref: str | ResolvedRef) -> ResolvedRef:
        return ref if isinstance(ref, ResolvedRef) else self.resolve(ref)

    def _publish(self, template_set: TemplateSet, name: str) -> int:
        template_set = template_set.model_copy(update={"name": name})
        files: dict = {}

        def stage(folder: Path) -> None:
            files.update(template_set.write_tensors(folder))

        def finalize(folder: Path, version: int) -> None:
            template_set.model_copy(update={"version": version}).write_manifest(folder, files)
            if self.signing_key is not None:  # over the manifest and the files it names, as they will be stored
                sign_folder(folder, self.signing_key)

        return self.backend.publish(name, stage, finalize)

    def _set_alias(self, name: str, version: int, alias: str) -> AliasRecord:
        self.backend.manifest(name, version)  # raises NotFoundError for a missing version
        aliases = self.backend.read_aliases(name)
        history = list(aliases.get(alias, {}).get("history", []))
        if not history or history[-1] != version:
            history.append(version)
        aliases[alias] = {"version": version, "history": history, "updated": _now()}
        self.backend.write_aliases(name, aliases)
        return AliasRecord.model_validate(aliases[alias])

    def _current_card(self, resolved: ResolvedRef) -> tuple[int, QualityCard] | None:
        revisions = self.backend.cards(resolved.name, resolved.version)
        if not revisions:
            return self._bundled_card(resolved)
        revision, sha256 = revisions[-1]
        return revision, self._read_card(resolved, revision, sha256)

    def _read_card(self, resolved: ResolvedRef, revision: int, sha256: str) -> QualityCard:
        """Only JSON is read back, and only bytes that match the sha256 recorded in the revision's name."""
        data = self.backend.read_card(resolved.name, resolved.version, revision, sha256)
        where = f"{resolved.name}/{resolved.version}/cards/{revision}"
        if hashlib.sha256(data).hexdigest() != sha256:
            raise IntegrityError(f"{where}: sha256 does not match the one recorded (modified or corrupt)")
        try:
            card = QualityCard.model_validate_json(data)
        except ValidationError as exc:
            raise IntegrityError(f"{where}: not a valid quality card ({exc.errors()[0]['msg']})") from None
        if card.digest != resolved.digest:
            raise IntegrityError(f"{where}: measured on another manifest ({card.digest[:12]})")
        return card

    def _bundled_card(self, resolved: ResolvedRef) -> tuple[int, QualityCard] | None:
        """A bundled set's card shipped with the package, when it was measured on exactly this manifest. Stored as
        revision 1 when the set is published (`_ensure_builtin`); a store that had the set before cards existed is
        answered from the package (revision 0: not stored), so that reading never writes."""
        folder = self.builtins.get(resolved.name)
        if folder is None or resolved.version != 1 or not (folder / CARD).is_file():
            return None
        try:
            card = QualityCard.model_validate_json((folder / CARD).read_bytes())
        except ValidationError as exc:
            message = exc.errors()[0]["msg"]
            raise IntegrityError(f"the bundled card of {resolved.name} is not valid ({message})") from None
        return (0, card) if card.digest == resolved.digest else None

    def _stored_manifest(self, resolved: ResolvedRef) -> bytes:
        data = self.backend.manifest(resolved.name, resolved.version)
        if hashlib.sha256(data).hexdigest() != resolved.digest:
            raise IntegrityError(f"{resolved}: manifest differs from the one it was resolved to")
        return data

    def _checked_manifest(self, resolved: ResolvedRef) -> Manifest:
        return _parse(resolved.name, resolved.version, self._stored_manifest(resolved))

    def _ensure_builtin(self, name: str) -> None:
        """Publish a bundled template set (e.g. `demo`) as version 1 with alias `prod` the first time it is used."""
        if name not in self.builtins or self.backend.versions(name):
            return
        with self.backend.lock(name):
            if self.backend.versions(name):
                return  # another process published it while we waited for the lock
            version = self._publish(TemplateSet.load(self.builtins[name]), name)
            self._set_alias(name, version, "prod")
            resolved = ResolvedRef(
                name=name, version=version, digest=hashlib.sha256(self.backend.manifest(name, version)).hexdigest()
            )
            bundled = self._bundled_card(resolved)
            if bundled is not None:
                self._add_card(resolved, bundled[1])


def _parse(name: str, version: int, data: bytes) -> Manifest:
    return parse_manifest(data, Path(name, str(version), MANIFEST))  # errors name `name/version/manifest.json`


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
