"""Job records in Redis (Celery mode): every transition is one Lua script (`jobs/lua/`), so an API cancelling a job
and a worker claiming it cannot both win, and the record, the status counts and the running set move together.

Keys (prefix `P`, default "learngene"): see `jobs.store`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import redis

from jobs.model import STATUSES, Claim, Job, JobKind, JobProgress, JobStatus
from jobs.settings import Settings
from jobs.store import JobStore, bucket_fields, exhausted_error

LUA = Path(__file__).parent / "lua"
# Scripts that end a job start with the shared `terminate` function.
_ENDING = {"claim", "cancel", "finish"}
SCRIPTS = {
    name: ((LUA / "terminate.lua").read_text() if name in _ENDING else "") + (LUA / f"{name}.lua").read_text()
    for name in ("claim", "heartbeat", "cancel", "finish", "progress", "take_redelivery", "forget_key")
}


class RedisJobStore(JobStore):
    def __init__(self, client, prefix: str = "learngene", job_ttl_s: int = 30 * 86400, idempotency_ttl_s: int = 86400):
        self.r = client
        self.p = prefix
        self.job_ttl_s = job_ttl_s
        self.idempotency_ttl_s = idempotency_ttl_s
        self._scripts = {name: client.register_script(source) for name, source in SCRIPTS.items()}

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisJobStore:
        return cls.from_url(
            settings.redis_url, prefix=settings.redis_prefix, job_ttl_s=settings.job_ttl_s,
            idempotency_ttl_s=settings.idempotency_ttl_s,
        )  # fmt: skip

    @classmethod
    def from_url(cls, url: str, **kwargs) -> RedisJobStore:
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
        error = exhausted_error(int(self.r.hget(self._job(job_id), "max_attempts") or 1)).model_dump_json()
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
        return bool(self._scripts["take_redelivery"](keys=keys, args=[job_id, now, grace_s]))

    def active(self, client: str) -> int:
        return int(self.r.scard(f"{self.p}:active:{client}"))

    def remember_idempotency_key(self, key, job_id, request_hash):
        name = f"{self.p}:idem:{key}"
        if self.r.set(name, json.dumps([job_id, request_hash]), nx=True, ex=self.idempotency_ttl_s):
            return None
        known = self.r.get(name)
        return tuple(json.loads(known)) if known else self.remember_idempotency_key(key, job_id, request_hash)

    def forget_idempotency_key(self, key, job_id):
        self._scripts["forget_key"](keys=[f"{self.p}:idem:{key}"], args=[job_id])

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
        for field in bucket_fields(value):
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
