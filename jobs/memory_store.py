"""In-process job records for the embedded executor: the transitions of `jobs.transitions`, applied under one lock."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

from jobs.model import STATUSES, Job, JobStatus
from jobs.store import (
    IdempotencyKeys,
    JobLogs,
    JobPage,
    JobQuery,
    JobStore,
    Metrics,
    Position,
    ResultCache,
    bucket_fields,
)
from jobs.transitions import Move
from jobs.webhooks.store import MemoryWebhookStore


class MemoryIdempotencyKeys(IdempotencyKeys):
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._keys: dict[str, tuple[str, str, float]] = {}
        self._lock = threading.Lock()

    def remember(self, key: str, job_id: str, request_hash: str) -> tuple[str, str] | None:
        with self._lock:
            now = time.time()
            known = self._keys.get(key)
            if known and known[2] > now:
                return known[0], known[1]
            self._keys[key] = (job_id, request_hash, now + self.ttl_s)
            return None

    def forget(self, key: str, job_id: str) -> None:
        with self._lock:
            if key in self._keys and self._keys[key][0] == job_id:
                del self._keys[key]


class MemoryResultCache(ResultCache):
    def __init__(self) -> None:
        self._results: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._results.get(key)

    def put(self, key: str, result: dict[str, Any]) -> None:
        with self._lock:
            self._results[key] = result


class MemoryMetrics(Metrics):
    def __init__(self) -> None:
        self._hist: dict[str, dict[str, float]] = {}
        self._counters: dict[str, int] = {}
        self._lock = threading.Lock()

    def observe(self, name: str, value: float) -> None:
        with self._lock:
            hist = self._hist.setdefault(name, {})
            for field in bucket_fields(value):
                hist[field] = hist.get(field, 0) + 1
            hist["sum"] = hist.get("sum", 0.0) + value
            hist["count"] = hist.get("count", 0) + 1

    def histograms(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {k: dict(v) for k, v in self._hist.items()}

    def incr(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + amount

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)


class MemoryJobLogs(JobLogs):
    def __init__(self, max_lines: int) -> None:
        super().__init__(max_lines)
        self._lines: dict[str, collections.deque[str]] = {}
        self._appended: dict[str, int] = {}
        self._lock = threading.Lock()

    def append(self, job_id: str, line: str) -> None:
        with self._lock:
            self._lines.setdefault(job_id, collections.deque(maxlen=self.max_lines)).append(line[: self.MAX_LINE])
            self._appended[job_id] = self._appended.get(job_id, 0) + 1

    def read(self, job_id: str, start: int = 0) -> tuple[list[str], int]:
        with self._lock:
            lines, end = list(self._lines.get(job_id, ())), self._appended.get(job_id, 0)
        first = end - len(lines)
        return lines[max(start - first, 0) :], end


class MemoryJobStore(JobStore):
    """In-process records for the embedded executor: same semantics, no durability across restarts."""

    def __init__(self, idempotency_ttl_s: float = 86400.0, log_lines: int = 2000, webhooks_kept: int = 1000) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.RLock()
        self.keys = MemoryIdempotencyKeys(idempotency_ttl_s)
        self.results = MemoryResultCache()
        self.metrics = MemoryMetrics()
        self.logs = MemoryJobLogs(log_lines)
        self.webhooks = MemoryWebhookStore(webhooks_kept)

    def create(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.id] = job.model_copy(deep=True)

    def mark_dispatched(self, job_id: str) -> None:
        with self._lock:
            if job_id in self._jobs:
                self._jobs[job_id].dispatched = True

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return job.model_copy(deep=True) if job else None

    def page(self, query: JobQuery, limit: int = 50, after: Position | None = None) -> JobPage:
        with self._lock:
            found = sorted(
                (j for j in self._jobs.values() if query.matches(j) and (after is None or Position.of(j) < after)),
                key=Position.of,
                reverse=True,
            )[: limit + 1]
            shown = [j.model_copy(deep=True) for j in found[:limit]]
        return JobPage(jobs=shown, next=Position.of(shown[-1]) if len(found) > limit else None)

    def _apply(self, job_id: str, decide: Callable[[Job | None], Move]) -> tuple[Move, Job | None]:
        with self._lock:
            job = self._jobs.get(job_id)
            move = decide(job)
            if job is None:
                return move, None
            for name, value in move.changes.items():
                setattr(job, name, value)
            return move, job.model_copy(deep=True)

    def cancel_requested(self, job_id: str) -> bool:
        with self._lock:
            job = self._jobs.get(job_id)
            return bool(job and job.cancel_requested)

    def due_for_redelivery(self, now: float, undispatched_grace_s: float) -> list[str]:
        with self._lock:
            return [
                j.id
                for j in self._jobs.values()
                if (j.status == JobStatus.running and (j.lease_until or 0) < now)
                or (j.status == JobStatus.queued and not j.dispatched and now - j.created_at > undispatched_grace_s)
            ]

    def active(self, client: str) -> int:
        with self._lock:
            return sum(1 for j in self._jobs.values() if j.client == client and not j.terminal)

    def counts(self, kind):
        with self._lock:
            out = dict.fromkeys(STATUSES, 0)
            for job in self._jobs.values():
                if job.kind == kind:
                    out[job.status.value] += 1
            return out

    def ping(self) -> bool:
        return True
