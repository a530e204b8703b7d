"""How long checkpoints are kept, and how many bytes of them one client may hold.

A stored file (`storage.artifacts`) is kept while a job record names it in its result and has not released it. Job
records are kept `job_ttl_s` after they end, so a checkpoint lives that long after the last job that produced or
reused it, or less once every job naming it was released by its client (`DELETE .../checkpoint`). The sweep removes
each stored file that no kept, unreleased record names and that is older than `artifacts_sweep_grace_s` (a file
being published, whose job has not yet recorded its success, is younger). The API runs it every
`artifacts_sweep_interval_s` (`Sweeper`); sweeps of several API replicas may overlap: each removes only files no
record names, so they agree.

A client's usage is the bytes of the distinct files its kept, unreleased succeeded jobs name. A submission that
would take it past `client_max_artifact_bytes` (its checkpoint estimated from the architecture) is refused, with the
usage and the quota named, until the client releases checkpoints or their records expire.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePath

from jobs.model import TRANSIENT_ERRORS, Job, JobKind, JobStatus
from jobs.store import JobQuery, JobStore
from storage.artifacts import Artifacts
from storage.objects import StorageUnavailable

log = logging.getLogger(__name__)

FileKey = tuple[str, str]  # (sha256, suffix)
SUCCEEDED = JobQuery(kinds=frozenset({JobKind.initialization}), statuses=frozenset({JobStatus.succeeded}))


def held_files(job: Job) -> dict[FileKey, int]:
    """The stored files a succeeded, unreleased job names, with their sizes."""
    result = job.result or {}
    if job.status != JobStatus.succeeded or result.get("released_at") is not None:
        return {}
    files = result.get("files") or {}
    return {(entry["sha256"], PurePath(name).suffix): int(entry["bytes"]) for name, entry in files.items()}


def _succeeded(jobs: JobStore, query: JobQuery) -> Iterator[Job]:
    after = None
    while True:
        page = jobs.page(query, limit=500, after=after)
        yield from page.jobs
        if page.next is None:
            return
        after = page.next


def usage_bytes(jobs: JobStore, client: str | None) -> int:
    """The bytes of the distinct files a client's kept, unreleased jobs name."""
    query = JobQuery(kinds=SUCCEEDED.kinds, statuses=SUCCEEDED.statuses, client=client)
    held: dict[FileKey, int] = {}
    for job in _succeeded(jobs, query):
        held.update(held_files(job))
    return sum(held.values())


def referenced(jobs: JobStore) -> set[FileKey]:
    return {key for job in _succeeded(jobs, SUCCEEDED) for key in held_files(job)}


@dataclass(frozen=True)
class Swept:
    kept: int
    removed: int
    freed_bytes: int


def sweep(jobs: JobStore, artifacts: Artifacts, *, grace_s: float, now: float | None = None) -> Swept:
    """Remove the stored files no kept, unreleased job names, once older than `grace_s`. The files are listed
    before the records are read: a job that reuses a file and records it meanwhile is seen."""
    now = time.time() if now is None else now
    stored = list(artifacts.files())
    named = referenced(jobs)
    removed = freed = 0
    for file in stored:
        if (file.sha256, file.suffix) in named or now - file.modified < grace_s:
            continue
        artifacts.remove(file.sha256, file.suffix)
        removed, freed = removed + 1, freed + file.bytes
    if removed:
        log.info(
            "retention: removed %d unreferenced checkpoint files (%d bytes), kept %d",
            removed,
            freed,
            len(stored) - removed,
        )
        jobs.metrics.incr("artifacts_removed", removed)
    return Swept(kept=len(stored) - removed, removed=removed, freed_bytes=freed)


class Sweeper(threading.Thread):
    """`sweep` every `interval_s` seconds until stopped; an unreachable Redis or object store is waited out."""

    def __init__(self, jobs: JobStore, artifacts: Artifacts, *, interval_s: float, grace_s: float):
        super().__init__(name="learngene-retention", daemon=True)
        self.jobs, self.artifacts, self.interval_s, self.grace_s = jobs, artifacts, interval_s, grace_s
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            try:
                sweep(self.jobs, self.artifacts, grace_s=self.grace_s)
            except (*TRANSIENT_ERRORS, StorageUnavailable):
                log.warning("retention: Redis or object storage unreachable, will retry")
            except Exception:  # the sweep must outlive any odd record or file
                log.exception("retention: unexpected error")

    def stop(self) -> None:
        self._stop_event.set()
