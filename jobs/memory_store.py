"""In-process job records for the embedded executor: the same transitions as Redis, under one lock."""

from __future__ import annotations

import threading
import time
from typing import Any

from jobs.model import REDELIVERY, STATUSES, Claim, Job, JobKind, JobProgress, JobStatus
from jobs.store import JobStore, bucket_fields, exhausted_error


class MemoryJobStore(JobStore):
    """In-process records for the embedded executor: same semantics, no durability across restarts."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._dispatched: set[str] = set()
        self._idem: dict[str, tuple[str, str, float]] = {}
        self._cache: dict[str, dict[str, Any]] = {}
        self._hist: dict[str, dict[str, float]] = {}
        self._counters: dict[str, int] = {}
        self._lock = threading.RLock()
        self.idempotency_ttl_s = 86400.0

    def create(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.id] = job.model_copy(deep=True)

    def mark_dispatched(self, job_id: str) -> None:
        with self._lock:
            self._dispatched.add(job_id)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return job.model_copy(deep=True) if job else None

    def list(self, kind: JobKind, limit: int = 50) -> list[Job]:
        with self._lock:
            jobs = sorted((j for j in self._jobs.values() if j.kind == kind), key=lambda j: j.created_at, reverse=True)
            return [j.model_copy(deep=True) for j in jobs[:limit]]

    def claim(self, job_id: str, owner: str, lease_s: float, takeover: bool = False) -> Claim:
        claim = self._claim(job_id, owner, lease_s, takeover)
        if claim.outcome in ("cancelled", "exhausted"):  # ended by this claim: its durations count, as in Redis
            self.record_finish(claim.job)
        return claim

    def _claim(self, job_id: str, owner: str, lease_s: float, takeover: bool) -> Claim:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return Claim(outcome="missing")
            if job.terminal:
                return Claim(outcome="terminal", job=job.model_copy(deep=True))
            now = time.time()
            if job.cancel_requested:
                job.status, job.finished_at = JobStatus.cancelled, now
                return Claim(outcome="cancelled", job=job.model_copy(deep=True))
            held = job.lease_owner not in (None, owner, REDELIVERY) and (job.lease_until or 0) > now
            if job.status == JobStatus.running and held and not takeover:
                return Claim(outcome="busy", job=job.model_copy(deep=True))
            job.attempts += 1
            if job.attempts > job.max_attempts:
                job.status, job.finished_at, job.error = JobStatus.failed, now, exhausted_error(job.max_attempts)
                return Claim(outcome="exhausted", job=job.model_copy(deep=True))
            if job.status == JobStatus.queued:
                job.status, job.started_at = JobStatus.running, now
            job.lease_owner, job.lease_until = owner, now + lease_s
            return Claim(outcome="claimed", job=job.model_copy(deep=True))

    def heartbeat(self, job_id: str, owner: str, lease_s: float) -> bool:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.status != JobStatus.running or job.lease_owner != owner:
                return False
            job.lease_until = time.time() + lease_s
            return True

    def set_progress(self, job_id: str, progress: JobProgress) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.status == JobStatus.running:
                job.progress = progress

    def cancel_requested(self, job_id: str) -> bool:
        with self._lock:
            job = self._jobs.get(job_id)
            return bool(job and job.cancel_requested)

    def request_cancel(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if not job.terminal:
                job.cancel_requested = True
                if job.status == JobStatus.queued:
                    job.status, job.finished_at = JobStatus.cancelled, time.time()
            return job.model_copy(deep=True)

    def finish(self, job_id, status, result=None, error=None, owner=None) -> bool:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.terminal or (owner is not None and job.lease_owner != owner):
                return False
            job.status, job.finished_at, job.result, job.error = status, time.time(), result, error
            finished = job.model_copy(deep=True)
        self.record_finish(finished)
        return True

    def due_for_redelivery(self, now: float, undispatched_grace_s: float) -> list[str]:
        with self._lock:
            return [
                j.id
                for j in self._jobs.values()
                if (j.status == JobStatus.running and (j.lease_until or 0) < now)
                or (
                    j.status == JobStatus.queued
                    and j.id not in self._dispatched
                    and now - j.created_at > undispatched_grace_s
                )
            ]

    def take_redelivery(self, job_id: str, now: float, grace_s: float) -> bool:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.terminal:
                return False
            if job.status == JobStatus.running:
                if (job.lease_until or 0) >= now:
                    return False
                job.lease_owner, job.lease_until = REDELIVERY, now + grace_s
            self._dispatched.add(job_id)
            return True

    def active(self, client: str) -> int:
        with self._lock:
            return sum(1 for j in self._jobs.values() if j.client == client and not j.terminal)

    def remember_idempotency_key(self, key, job_id, request_hash):
        with self._lock:
            now = time.time()
            known = self._idem.get(key)
            if known and known[2] > now:
                return known[0], known[1]
            self._idem[key] = (job_id, request_hash, now + self.idempotency_ttl_s)
            return None

    def forget_idempotency_key(self, key, job_id):
        with self._lock:
            if key in self._idem and self._idem[key][0] == job_id:
                del self._idem[key]

    def cached_result(self, key):
        with self._lock:
            return self._cache.get(key)

    def cache_result(self, key, result):
        with self._lock:
            self._cache[key] = result

    def counts(self, kind):
        with self._lock:
            out = dict.fromkeys(STATUSES, 0)
            for job in self._jobs.values():
                if job.kind == kind:
                    out[job.status.value] += 1
            return out

    def observe(self, name, value):
        with self._lock:
            hist = self._hist.setdefault(name, {})
            for field in bucket_fields(value):
                hist[field] = hist.get(field, 0) + 1
            hist["sum"] = hist.get("sum", 0.0) + value
            hist["count"] = hist.get("count", 0) + 1

    def histograms(self):
        with self._lock:
            return {k: dict(v) for k, v in self._hist.items()}

    def incr(self, name, amount=1):
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + amount

    def counters(self):
        with self._lock:
            return dict(self._counters)

    def ping(self) -> bool:
        return True
