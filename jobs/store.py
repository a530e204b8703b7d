"""Job stores: the service's own source of truth for every accepted job (Celery's result backend is not).

A job moves queued -> running -> succeeded | failed | cancelled by the transitions of `jobs.transitions`, written
once. A store only applies them atomically (`_apply`: a lock in memory, a WATCH/MULTI transaction in Redis), so an API
cancelling a job and a worker claiming it cannot both win. Two implementations: `RedisJobStore` (Celery mode) and
`MemoryJobStore` (the embedded executor).

A worker that claims a job holds a lease on it (owner, expiry) and renews it while it works. A second delivery of
the same job finds the lease held and leaves the job alone; when a worker dies, its lease runs out and the reaper
(`jobs.reaper`) delivers the job again. Only the lease holder can finish a job, so a worker presumed dead that
comes back cannot overwrite the result of the one that took over.

Redis keys (prefix `P`, default "learngene"):
    P:job:<id>        hash: doc (immutable JSON) and the mutable fields of `Job` under their own names (status,
                      attempts, max_attempts, started_at, finished_at, progress, result, error,
                      cancel_requested, lease_owner, lease_until, dispatched, client)
    P:jobs:<kind>     sorted set of job ids by creation time (ties ordered by id: the order of `JobStore.page`)
    P:running         set of the ids of running jobs (what the reaper looks at)
    P:undispatched    sorted set of accepted jobs not yet handed to the broker, by creation time
    P:active:<client> set of a client's queued and running jobs (per-token quotas)
    P:counts:<kind>   hash: status -> number of jobs in that status
    P:idem:<key>      the job id an Idempotency-Key created (and the request hash), with a TTL
    P:cache:<key>     the result of a finished initialization, reused by identical requests
    P:hist:<name>     hash: histogram buckets, sum and count of a duration or rate
    P:counter:<name>  integer counters (cache hits)
    P:log:<id>        list: the job's own log lines (JSON), the last `JobLogs.max_lines`; P:logn:<id> how many
                      were ever appended (a line's position), both expiring with the job's record
    P:wh:...          webhook subscriptions and deliveries (`jobs.webhooks.store`)
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobs import transitions
from jobs.model import BUCKETS, Claim, Job, JobError, JobKind, JobProgress, JobStatus
from jobs.transitions import Move
from jobs.webhooks.events import job_ended
from jobs.webhooks.store import WebhookStore


@dataclass(frozen=True, order=True)
class Position:
    """A job's place in a list, newest first: (created_at, id), the id breaking ties between equal times. A page
    resumes strictly after the last position it showed, so jobs created meanwhile (newer: they go before it) neither
    shift nor repeat the rest, as an offset would."""

    created_at: float
    id: str

    @classmethod
    def of(cls, job: Job) -> Position:
        return cls(job.created_at, job.id)


@dataclass(frozen=True)
class JobQuery:
    """Which jobs a list shows: of these kinds, in one of these statuses (any when None), of this client (any when
    None), created strictly after `created_after` (epoch seconds, as stored)."""

    kinds: frozenset[JobKind]
    statuses: frozenset[JobStatus] | None = None
    client: str | None = None
    created_after: float | None = None

    def matches(self, job: Job) -> bool:
        return (
            job.kind in self.kinds
            and (self.statuses is None or job.status in self.statuses)
            and (self.client is None or job.client == self.client)
            and (self.created_after is None or job.created_at > self.created_after)
        )


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    next: Position | None  # where the next page starts (after the last job shown); None on the last page


class IdempotencyKeys(abc.ABC):
    """Idempotency-Key -> (job id, request hash), each kept for a TTL: a retried submission finds its job."""

    @abc.abstractmethod
    def remember(self, key: str, job_id: str, request_hash: str) -> tuple[str, str] | None:
        """Store key -> (job_id, request_hash) unless the key is known; returns the known pair, or None if stored."""

    @abc.abstractmethod
    def forget(self, key: str, job_id: str) -> None:
        """Drop the key, but only while it still names `job_id` (a concurrent holder keeps it)."""


class ResultCache(abc.ABC):
    """Finished initializations' results by request key, reused by identical requests."""

    @abc.abstractmethod
    def get(self, key: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def put(self, key: str, result: dict[str, Any]) -> None: ...


class Metrics(abc.ABC):
    """Cross-process histograms and counters, which every API process's /metrics reports alike."""

    @abc.abstractmethod
    def observe(self, name: str, value: float) -> None:
        """Add a sample to the histogram `name`."""

    @abc.abstractmethod
    def histograms(self) -> dict[str, dict[str, float]]: ...

    @abc.abstractmethod
    def incr(self, name: str, amount: int = 1) -> None: ...

    @abc.abstractmethod
    def counters(self) -> dict[str, int]: ...


class JobLogs(abc.ABC):
    """Each job's own log lines (JSON lines, `jobs.job_log`), kept as long as its record and bounded: the last
    `max_lines` of them, each at most `MAX_LINE` characters. A line's position counts from the job's first line,
    so a reader that follows asks for what it lacks and never sees a line twice."""

    MAX_LINE = 4096

    def __init__(self, max_lines: int) -> None:
        self.max_lines = max_lines

    @abc.abstractmethod
    def append(self, job_id: str, line: str) -> None: ...

    @abc.abstractmethod
    def read(self, job_id: str, start: int = 0) -> tuple[list[str], int]:
        """The kept lines from position `start` on, and the position after the last one."""


class JobStore(abc.ABC):
    """Job records and their leases. The other roles kept beside them, over the same connection: `keys`
    (idempotency keys), `results` (the result cache), `metrics`, `logs` (each job's own log lines), `webhooks`
    (subscriptions and the deliveries of every event)."""

    keys: IdempotencyKeys
    results: ResultCache
    metrics: Metrics
    logs: JobLogs
    webhooks: WebhookStore

    @abc.abstractmethod
    def create(self, job: Job) -> None:
        """Record an accepted job (queued, not yet dispatched)."""

    @abc.abstractmethod
    def mark_dispatched(self, job_id: str) -> None:
        """The broker has the job: the reaper no longer needs to send it."""

    @abc.abstractmethod
    def get(self, job_id: str) -> Job | None: ...

    @abc.abstractmethod
    def page(self, query: JobQuery, limit: int = 50, after: Position | None = None) -> JobPage:
        """Up to `limit` jobs matching `query`, newest first, strictly after `after`. The filter is applied while
        reading, so every page but the last is full."""

    @abc.abstractmethod
    def _apply(self, job_id: str, decide: Callable[[Job | None], Move]) -> tuple[Move, Job | None]:
        """Atomically read the record, decide a move with `decide`, write its changes and their index effects;
        returns the move and the record after it (None if the job does not exist)."""

    def claim(self, job_id: str, owner: str, lease_s: float, takeover: bool = False) -> Claim:
        """Start (or restart) a job under a lease. Counts the attempt and fails the job past `max_attempts`;
        answers 'busy' while another owner's lease runs, unless `takeover` (its owner is known to be dead)."""
        move, job = self._move(
            job_id, transitions.claim, now=time.time(), owner=owner, lease_s=lease_s, takeover=takeover
        )
        return Claim(outcome=move.outcome, job=job)

    def heartbeat(self, job_id: str, owner: str, lease_s: float) -> bool:
        """Extend the lease; False if `owner` no longer holds it."""
        return (
            self._move(job_id, transitions.heartbeat, now=time.time(), owner=owner, lease_s=lease_s)[0].outcome
            == "renewed"
        )

    def set_progress(self, job_id: str, progress: JobProgress) -> None:
        self._move(job_id, transitions.report_progress, progress=progress)

    @abc.abstractmethod
    def cancel_requested(self, job_id: str) -> bool: ...

    def request_cancel(self, job_id: str) -> Job | None:
        """A queued job is cancelled at once (it will never start); a running one is flagged and stops at its next
        step. Returns the job after the change, None if it does not exist."""
        return self._move(job_id, transitions.request_cancel, now=time.time())[1]

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        result: dict[str, Any] | None = None,
        error: JobError | None = None,
        owner: str | None = None,
    ) -> bool:
        """Move a job to a terminal status; with `owner`, only while it holds the lease. False if not moved."""
        move, _ = self._move(
            job_id, transitions.finish, now=time.time(), status=status, result=result, error=error, owner=owner
        )
        return move.outcome == "finished"

    def release_files(self, job_id: str) -> tuple[str, Job | None]:
        """`jobs.transitions.release_files`: its outcome (released | not_succeeded | missing) and the job after it."""
        move, job = self._move(job_id, transitions.release_files, now=time.time())
        return move.outcome, job

    def take_redelivery(self, job_id: str, now: float, grace_s: float) -> bool:
        """Atomically reserve a redelivery (one reaper wins); the job gets `grace_s` to be claimed again."""
        return self._move(job_id, transitions.take_redelivery, now=now, grace_s=grace_s)[0].outcome == "reserved"

    def _move(self, job_id: str, transition: Callable[..., Move], **arguments: Any) -> tuple[Move, Job | None]:
        """Apply one transition; a move that ends the job records its durations and emits its event, whichever
        process made it (a worker finishing, an API cancelling a queued job)."""
        move, job = self._apply(job_id, lambda record: transition(record, **arguments))
        if move.ends and job is not None:
            self.record_finish(job)
            job_ended(self.webhooks, job)
        return move, job

    @abc.abstractmethod
    def due_for_redelivery(self, now: float, undispatched_grace_s: float) -> list[str]:
        """Running jobs whose lease has run out, and accepted jobs never handed to the broker."""

    @abc.abstractmethod
    def active(self, client: str) -> int:
        """Queued and running jobs of one client."""

    @abc.abstractmethod
    def counts(self, kind: JobKind) -> dict[str, int]: ...

    @abc.abstractmethod
    def ping(self) -> bool: ...

    def record_finish(self, job: Job) -> None:
        """Durations of a job that just ended."""
        if job.started_at is not None:
            self.metrics.observe(f"queue_wait_seconds:{job.kind.value}", job.started_at - job.created_at)
            if job.finished_at is not None:
                self.metrics.observe(f"job_duration_seconds:{job.kind.value}", job.finished_at - job.started_at)


def bucket_fields(value: float) -> list[str]:
    return [f"le_{b:g}" for b in BUCKETS if value <= b] + ["le_+Inf"]
