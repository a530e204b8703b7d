"""Job records: the service's own source of truth for every accepted job (Celery's result backend is not).

A job moves queued -> running -> succeeded | failed | cancelled. Transitions are atomic (Lua scripts in Redis, a lock
in memory), so an API cancelling a job and a worker claiming it cannot both win. The same `JobStore` interface has
two implementations: `RedisJobStore` (Celery mode) and `MemoryJobStore` (the embedded executor).

A worker that claims a job holds a lease on it (owner, expiry) and renews it while it works. A second delivery of
the same job finds the lease held and leaves the job alone; when a worker dies, its lease runs out and the reaper
(`workers.reaper`) delivers the job again. Only the lease holder can finish a job, so a worker presumed dead that
comes back cannot overwrite the result of the one that took over.

Redis keys (prefix `P`, default "learngene"):
    P:job:<id>        hash: doc (immutable JSON), status, attempts, started_at, finished_at, progress, result,
                      error, cancel, lease_owner, lease_until, dispatched, client
    P:jobs:<kind>     sorted set of job ids by creation time
    P:running         set of the ids of running jobs (what the reaper looks at)
    P:undispatched    sorted set of accepted jobs not yet handed to the broker, by creation time
    P:active:<client> set of a client's queued and running jobs (per-token quotas)
    P:counts:<kind>   hash: status -> number of jobs in that status
    P:idem:<key>      the job id an Idempotency-Key created (and the request hash), with a TTL
    P:cache:<key>     the result of a finished initialization, reused by identical requests
    P:hist:<name>     hash: histogram buckets, sum and count of a duration or rate
    P:counter:<name>  integer counters (cache hits)
"""

from __future__ import annotations

import abc
import enum
import json
import threading
import time
import uuid
from typing import Any

from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
# Errors of an unreachable Redis: a worker rides them out instead of failing its job.
TRANSIENT_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)
REDELIVERY = "redelivery"  # lease owner while a reaper's redelivery is on its way: free to claim, not to re-send
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
# Histogram buckets (seconds for durations, steps/s for rates): wide enough for CPU tests and GPU condensations.
BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600)


class JobKind(str, enum.Enum):
    initialization = "initialization"
    condensation = "condensation"


class JobStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class JobProgress(BaseModel):
    step: int
    total_steps: int
    loss: float | None = None
    accuracy: float | None = None
    images_per_s: float | None = None
    eta_s: float | None = None
    updated_at: float = Field(default_factory=time.time)


class JobError(BaseModel):
    type: str
    message: str


class Job(BaseModel):
    id: str
    kind: JobKind
    status: JobStatus = JobStatus.queued
    request: dict[str, Any]
    template_set: dict[str, Any] | None = None  # the resolved (name, version, digest) the job was accepted with
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    max_attempts: int = 3
    progress: JobProgress | None = None
    result: dict[str, Any] | None = None
    error: JobError | None = None
    cancel_requested: bool = False
    idempotency_key: str | None = None
    client: str | None = None  # the client token's name (never the token) when client tokens are configured
    lease_owner: str | None = None
    lease_until: float | None = None

    @classmethod
    def new(cls, kind: JobKind, request: dict[str, Any], **fields: Any) -> Job:
        return cls(id=uuid.uuid4().hex, kind=kind, request=request, **fields)

    @property
    def terminal(self) -> bool:
        return self.status.value in TERMINAL


class Claim(BaseModel):
    """What a worker learns when it tries to start a job."""

    outcome: str  # claimed | busy (another live worker holds it) | cancelled | exhausted | terminal | missing
    job: Job | None = None


class JobStore(abc.ABC):
    """Job records, leases, idempotency keys, the result cache and cross-process metrics."""

    @abc.abstractmethod
    def create(self, job: Job) -> None:
        """Record an accepted job (queued, not yet dispatched)."""

    @abc.abstractmethod
    def mark_dispatched(self, job_id: str) -> None:
        """The broker has the job: the reaper no longer needs to send it."""

    @abc.abstractmethod
    def get(self, job_id: str) -> Job | None: ...

    @abc.abstractmethod
    def list(self, kind: JobKind, limit: int = 50) -> list[Job]: ...

    @abc.abstractmethod
    def claim(self, job_id: str, owner: str, lease_s: float, takeover: bool = False) -> Claim:
        """Start (or restart) a job under a lease. Counts the attempt and fails the job past `max_attempts`;
        answers 'busy' while another owner's lease runs, unless `takeover` (its owner is known to be dead)."""

    @abc.abstractmethod
    def heartbeat(self, job_id: str, owner: str, lease_s: float) -> bool:
        """Extend the lease; False if `owner` no longer holds it."""

    @abc.abstractmethod
    def set_progress(self, job_id: str, progress: JobProgress) -> None: ...

    @abc.abstractmethod
    def cancel_requested(self, job_id: str) -> bool: ...

    @abc.abstractmethod
    def request_cancel(self, job_id: str) -> Job | None:
        """A queued job is cancelled at once (it will never start); a running one is flagged and stops at its next
        step. Returns the job after the change, None if it does not exist."""

    @abc.abstractmethod
    def finish(
        self,
        job_id: str,
        status: JobStatus,
        result: dict[str, Any] | None = None,
        error: JobError | None = None,
        owner: str | None = None,
    ) -> bool:
        """Move a job to a terminal status; with `owner`, only while it holds the lease. False if not moved."""

    @abc.abstractmethod
    def due_for_redelivery(self, now: float, undispatched_grace_s: float) -> list[str]:
        """Running jobs whose lease has run out, and accepted jobs never handed to the broker."""

    @abc.abstractmethod
    def take_redelivery(self, job_id: str, now: float, grace_s: float) -> bool:
        """Atomically reserve a redelivery (one reaper wins); the job gets `grace_s` to be claimed again."""

    @abc.abstractmethod
    def active(self, client: str) -> int:
        """Queued and running jobs of one client."""

    @abc.abstractmethod
    def remember_idempotency_key(self, key: str, job_id: str, request_hash: str) -> tuple[str, str] | None:
        """Store key -> (job_id, request_hash) unless the key is known; returns the known pair, or None if stored."""

    @abc.abstractmethod
    def forget_idempotency_key(self, key: str, job_id: str) -> None:
        """Drop the key, but only while it still names `job_id` (a concurrent holder keeps it)."""

    @abc.abstractmethod
    def cached_result(self, key: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def cache_result(self, key: str, result: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def counts(self, kind: JobKind) -> dict[str, int]: ...

    @abc.abstractmethod
    def observe(self, name: str, value: float) -> None:
        """Add a sample to the cross-process histogram `name`."""

    @abc.abstractmethod
    def histograms(self) -> dict[str, dict[str, float]]: ...

    @abc.abstractmethod
    def incr(self, name: str, amount: int = 1) -> None: ...

    @abc.abstractmethod
    def counters(self) -> dict[str, int]: ...

    @abc.abstractmethod
    def ping(self) -> bool: ...

    def record_finish(self, job: Job) -> None:
        """Durations of a job that just finished (called by `finish` implementations)."""
        if job.started_at is not None:
            self.observe(f"queue_wait_seconds:{job.kind.value}", job.started_at - job.created_at)
            if job.finished_at is not None:
                self.observe(f"job_duration_seconds:{job.kind.value}", job.finished_at - job.started_at)


def _bucket_fields(value: float) -> list[str]:
    return [f"le_{b:g}" for b in BUCKETS if value <= b] + ["le_+Inf"]


def _exhausted_error(max_attempts: int) -> JobError:
    return JobError(
        type="AttemptsExhausted",
        message=f"gave up after {max_attempts} attempts: the job was interrupted every time (worker lost or killed)",
    )


# ---------------------------------------------------------------------------------------------------------------


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
                job.status, job.finished_at, job.error = JobStatus.failed, now, _exhausted_error(job.max_attempts)
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
            for field in _bucket_fields(value):
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


# ---------------------------------------------------------------------------------------------------------------

# All scripts: KEYS[1] the job hash. Terminal moves also update KEYS[2] (counts), KEYS[3] (running set) and
# KEYS[4] (the client's active set); the job id is ARGV[1].
_TERMINATE = """
local function terminate(to, fields)
  local from = redis.call('HGET', KEYS[1], 'status')
  redis.call('HSET', KEYS[1], 'status', to, unpack(fields))
  redis.call('HINCRBY', KEYS[2], from, -1)
  redis.call('HINCRBY', KEYS[2], to, 1)
  redis.call('SREM', KEYS[3], ARGV[1])
  redis.call('SREM', KEYS[4], ARGV[1])
end
"""

# ARGV: id, now, owner, lease seconds, takeover ('1'/'0'), exhausted-error JSON, ttl seconds
_CLAIM = (
    _TERMINATE
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then return 'terminal' end
local now = tonumber(ARGV[2])
if redis.call('HGET', KEYS[1], 'cancel') == '1' then
  terminate('cancelled', {'finished_at', ARGV[2]})
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7]))
  return 'cancelled'
end
if status == 'running' and ARGV[5] ~= '1' then
  local owner = redis.call('HGET', KEYS[1], 'lease_owner')
  local lease = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
  if owner and owner ~= ARGV[3] and owner ~= '"""
    + REDELIVERY
    + """' and lease > now then return 'busy' end
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if attempts > tonumber(redis.call('HGET', KEYS[1], 'max_attempts')) then
  terminate('failed', {'finished_at', ARGV[2], 'error', ARGV[6]})
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7]))
  return 'exhausted'
end
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[2])
  redis.call('HINCRBY', KEYS[2], 'queued', -1)
  redis.call('HINCRBY', KEYS[2], 'running', 1)
end
redis.call('HSET', KEYS[1], 'lease_owner', ARGV[3], 'lease_until', tostring(now + tonumber(ARGV[4])))
redis.call('SADD', KEYS[3], ARGV[1])
return 'claimed'
"""
)

# ARGV: id, owner, lease until
_HEARTBEAT = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'lease_owner') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', ARGV[3])
return 1
"""

# ARGV: id, now, ttl seconds
_CANCEL = (
    _TERMINATE
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
if status == 'queued' or status == 'running' then redis.call('HSET', KEYS[1], 'cancel', '1') end
if status == 'queued' then
  terminate('cancelled', {'finished_at', ARGV[2]})
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
end
return 1
"""
)

# ARGV: id, status, now, result JSON, error JSON, ttl seconds, owner ('' for any)
_FINISH = (
    _TERMINATE
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'succeeded' or status == 'failed' or status == 'cancelled' then return 0 end
if ARGV[7] ~= '' and redis.call('HGET', KEYS[1], 'lease_owner') ~= ARGV[7] then return 0 end
terminate(ARGV[2], {'finished_at', ARGV[3], 'result', ARGV[4], 'error', ARGV[5]})
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
return 1
"""
)

# ARGV: id, progress JSON
_PROGRESS = """
if redis.call('HGET', KEYS[1], 'status') == 'running' then redis.call('HSET', KEYS[1], 'progress', ARGV[2]) end
return 1
"""

# KEYS[2]: undispatched set.  ARGV: id, now, grace seconds
_TAKE_REDELIVERY = (
    """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'running' then
  local lease = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
  if lease >= tonumber(ARGV[2]) then return 0 end
  redis.call('HSET', KEYS[1], 'lease_owner', '"""
    + REDELIVERY
    + """', 'lease_until', tostring(tonumber(ARGV[2]) + tonumber(ARGV[3])))
  return 1
end
if status == 'queued' then
  return redis.call('ZREM', KEYS[2], ARGV[1])
end
return 0
"""
)


# KEYS[1]: the idempotency key.  ARGV: the job id it must still name
_FORGET_KEY = """
local value = redis.call('GET', KEYS[1])
if value and cjson.decode(value)[1] == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


class RedisJobStore(JobStore):
    def __init__(self, client, prefix: str = "learngene", job_ttl_s: int = 30 * 86400, idempotency_ttl_s: int = 86400):
        self.r = client
        self.p = prefix
        self.job_ttl_s = job_ttl_s
        self.idempotency_ttl_s = idempotency_ttl_s
        self._scripts = {
            name: client.register_script(source)
            for name, source in (("claim", _CLAIM), ("heartbeat", _HEARTBEAT), ("cancel", _CANCEL),
                                 ("finish", _FINISH), ("progress", _PROGRESS), ("redeliver", _TAKE_REDELIVERY),
                                 ("forget", _FORGET_KEY))
        }  # fmt: skip

    @classmethod
    def from_url(cls, url: str, **kwargs) -> RedisJobStore:
        import redis

        client = redis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=3, socket_timeout=10, health_check_interval=30
        )
        return cls(client, **kwargs)

    def _job(self, job_id: str) -> str:
        return f"{self.p}:job:{job_id}"

    def _counts(self, kind: JobKind | str) -> str:
        return f"{self.p}:counts:{JobKind(kind).value}"

    def _keys(self, job_id: str) -> list[str] | None:
        """The keys a transition of this job touches, or None if the job does not exist."""
        doc, client = self.r.hmget(self._job(job_id), "doc", "client")
        if doc is None:
            return None
        kind = json.loads(doc)["kind"]
        return [self._job(job_id), self._counts(kind), f"{self.p}:running", f"{self.p}:active:{client or '-'}"]

    def create(self, job: Job) -> None:
        doc = job.model_dump_json(include={"id", "kind", "request", "template_set", "created_at", "idempotency_key"})
        pipe = self.r.pipeline(transaction=True)
        fields = {"doc": doc, "status": job.status.value, "attempts": job.attempts, "max_attempts": job.max_attempts,
                  "cancel": "0", "client": job.client or ""}  # fmt: skip
        pipe.hset(self._job(job.id), mapping=fields)
        pipe.zadd(f"{self.p}:jobs:{job.kind.value}", {job.id: job.created_at})
        pipe.zadd(f"{self.p}:undispatched", {job.id: job.created_at})
        pipe.hincrby(self._counts(job.kind), job.status.value, 1)
        if job.client:
            pipe.sadd(f"{self.p}:active:{job.client}", job.id)
        pipe.execute()

    def mark_dispatched(self, job_id: str) -> None:
        self.r.zrem(f"{self.p}:undispatched", job_id)

    def get(self, job_id: str) -> Job | None:
        return self._parse(self.r.hgetall(self._job(job_id)))

    @staticmethod
    def _parse(fields: dict[str, str]) -> Job | None:
        if not fields or "doc" not in fields:
            return None
        loads = lambda key: json.loads(fields[key]) if fields.get(key) not in (None, "", "null") else None  # noqa: E731
        number = lambda key: float(fields[key]) if fields.get(key) else None  # noqa: E731
        return Job(
            **json.loads(fields["doc"]),
            status=fields["status"],
            attempts=int(fields.get("attempts", 0)),
            max_attempts=int(fields.get("max_attempts", 1)),
            started_at=number("started_at"),
            finished_at=number("finished_at"),
            progress=loads("progress"),
            result=loads("result"),
            error=loads("error"),
            cancel_requested=fields.get("cancel") == "1",
            client=fields.get("client") or None,
            lease_owner=fields.get("lease_owner") or None,
            lease_until=number("lease_until"),
        )

    def list(self, kind: JobKind, limit: int = 50) -> list[Job]:
        ids = self.r.zrevrange(f"{self.p}:jobs:{kind.value}", 0, limit - 1)
        pipe = self.r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self._job(job_id))
        jobs = [self._parse(fields) for fields in pipe.execute()]
        expired = [job_id for job_id, job in zip(ids, jobs, strict=True) if job is None]
        if expired:  # records past their TTL: drop them from the index too
            self.r.zrem(f"{self.p}:jobs:{kind.value}", *expired)
        return [job for job in jobs if job is not None]

    def claim(self, job_id: str, owner: str, lease_s: float, takeover: bool = False) -> Claim:
        keys = self._keys(job_id)
        if keys is None:
            return Claim(outcome="missing")
        error = _exhausted_error(int(self.r.hget(self._job(job_id), "max_attempts") or 1)).model_dump_json()
        args = [job_id, time.time(), owner, lease_s, "1" if takeover else "0", error, self.job_ttl_s]
        outcome = self._scripts["claim"](keys=keys, args=args)
        job = self.get(job_id)
        if outcome in ("cancelled", "exhausted") and job is not None:
            self.record_finish(job)
        return Claim(outcome=outcome, job=job)

    def heartbeat(self, job_id: str, owner: str, lease_s: float) -> bool:
        return bool(self._scripts["heartbeat"](keys=[self._job(job_id)], args=[job_id, owner, time.time() + lease_s]))

    def set_progress(self, job_id: str, progress: JobProgress) -> None:
        self._scripts["progress"](keys=[self._job(job_id)], args=[job_id, progress.model_dump_json()])

    def cancel_requested(self, job_id: str) -> bool:
        return self.r.hget(self._job(job_id), "cancel") == "1"

    def request_cancel(self, job_id: str) -> Job | None:
        keys = self._keys(job_id)
        if keys is None:
            return None
        self._scripts["cancel"](keys=keys, args=[job_id, time.time(), self.job_ttl_s])
        return self.get(job_id)

    def finish(self, job_id, status, result=None, error=None, owner=None) -> bool:
        keys = self._keys(job_id)
        if keys is None:
            return False
        args = [job_id, JobStatus(status).value, time.time(), json.dumps(result),
                error.model_dump_json() if error else "null", self.job_ttl_s, owner or ""]  # fmt: skip
        done = bool(self._scripts["finish"](keys=keys, args=args))
        if done:
            self.record_finish(self.get(job_id))
        return done

    def due_for_redelivery(self, now: float, undispatched_grace_s: float) -> list[str]:
        running = list(self.r.smembers(f"{self.p}:running"))
        leases = self.r.hmget  # one round trip per job is fine: the running set is as large as the worker pool
        expired = [j for j in running if float(leases(self._job(j), "lease_until")[0] or 0) < now]
        stale = self.r.zrangebyscore(f"{self.p}:undispatched", 0, now - undispatched_grace_s)
        return [*expired, *stale]

    def take_redelivery(self, job_id: str, now: float, grace_s: float) -> bool:
        keys = [self._job(job_id), f"{self.p}:undispatched"]
        return bool(self._scripts["redeliver"](keys=keys, args=[job_id, now, grace_s]))

    def active(self, client: str) -> int:
        return int(self.r.scard(f"{self.p}:active:{client}"))

    def remember_idempotency_key(self, key, job_id, request_hash):
        name = f"{self.p}:idem:{key}"
        if self.r.set(name, json.dumps([job_id, request_hash]), nx=True, ex=self.idempotency_ttl_s):
            return None
        known = self.r.get(name)
        return tuple(json.loads(known)) if known else self.remember_idempotency_key(key, job_id, request_hash)

    def forget_idempotency_key(self, key, job_id):
        self._scripts["forget"](keys=[f"{self.p}:idem:{key}"], args=[job_id])

    def cached_result(self, key):
        value = self.r.get(f"{self.p}:cache:{key}")
        return json.loads(value) if value else None

    def cache_result(self, key, result):
        self.r.set(f"{self.p}:cache:{key}", json.dumps(result), ex=self.job_ttl_s)

    def counts(self, kind):
        raw = self.r.hgetall(self._counts(kind))
        return {status: max(0, int(raw.get(status, 0))) for status in STATUSES}

    def observe(self, name, value):
        pipe = self.r.pipeline(transaction=True)
        key = f"{self.p}:hist:{name}"
        for field in _bucket_fields(value):
            pipe.hincrby(key, field, 1)
        pipe.hincrbyfloat(key, "sum", value)
        pipe.hincrby(key, "count", 1)
        pipe.execute()

    def histograms(self):
        prefix = f"{self.p}:hist:"
        return {
            key[len(prefix) :]: {f: float(v) for f, v in self.r.hgetall(key).items()}
            for key in self.r.scan_iter(match=f"{prefix}*", count=100)
        }

    def incr(self, name, amount=1):
        self.r.incrby(f"{self.p}:counter:{name}", amount)

    def counters(self):
        prefix = f"{self.p}:counter:"
        keys = list(self.r.scan_iter(match=f"{prefix}*", count=100))
        values = self.r.mget(keys) if keys else []
        return {k[len(prefix) :]: int(v or 0) for k, v in zip(keys, values, strict=True)}

    def ping(self) -> bool:
        try:
            return bool(self.r.ping())
        except Exception:
            return False
