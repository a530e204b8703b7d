"""Job records in Redis (Celery mode). A transition of `jobs.transitions` is applied in one optimistic transaction:
WATCH the job's hash, read it, decide, then MULTI/EXEC the changes with their index effects (status counts, the
running set, the client's active set, the TTL); if anything wrote the hash in between, EXEC fails and the decision is
made again on the new record. So an API cancelling a job and a worker claiming it cannot both win, and the record
and its indexes move together.

Keys (prefix `P`, default "learngene"): see `jobs.store`.
"""

from __future__ import annotations

import enum
import heapq
import json
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import redis
from pydantic import BaseModel

from jobs.model import STATUSES, Job, JobKind, JobStatus
from jobs.settings import Settings
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
from jobs.transitions import Move, index_effects
from jobs.webhooks.store import RedisWebhookStore

# A client made with decode_responses=True: str in and out, where redis' annotations say bytes | str.
Client = Any
Pipeline = Any

# Ids read from a kind's index per round trip while a list is filtered.
INDEX_CHUNK = 200
# The fields of `Job` fixed at creation, kept as one JSON document; every other field is a hash field of its own name.
# A field added later (request_id) is simply absent from older records' documents: it takes its default.
IMMUTABLE = {"id", "kind", "request", "template_set", "warnings", "created_at", "idempotency_key", "request_id"}


def encode(value: Any) -> str | None:
    """A Job field as a hash value; None deletes the field."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)


class RedisIdempotencyKeys(IdempotencyKeys):
    def __init__(self, client: Client, prefix: str, ttl_s: int):
        self.r, self.p, self.ttl_s = client, prefix, ttl_s

    def remember(self, key: str, job_id: str, request_hash: str) -> tuple[str, str] | None:
        name = f"{self.p}:idem:{key}"
        if self.r.set(name, json.dumps([job_id, request_hash]), nx=True, ex=self.ttl_s):
            return None
        known = self.r.get(name)
        if not known:  # expired between the two calls: try to take it again
            return self.remember(key, job_id, request_hash)
        known_id, known_hash = json.loads(known)
        return known_id, known_hash

    def forget(self, key: str, job_id: str) -> None:
        name = f"{self.p}:idem:{key}"

        def attempt(pipe: Pipeline) -> None:
            known = pipe.get(name)
            pipe.multi()
            if known and json.loads(known)[0] == job_id:
                pipe.delete(name)

        self.r.transaction(attempt, name)


class RedisResultCache(ResultCache):
    def __init__(self, client: Client, prefix: str, ttl_s: int):
        self.r, self.p, self.ttl_s = client, prefix, ttl_s

    def get(self, key: str) -> dict[str, Any] | None:
        value = self.r.get(f"{self.p}:cache:{key}")
        return json.loads(value) if value else None

    def put(self, key: str, result: dict[str, Any]) -> None:
        self.r.set(f"{self.p}:cache:{key}", json.dumps(result), ex=self.ttl_s)


class RedisJobLogs(JobLogs):
    def __init__(self, client: Client, prefix: str, ttl_s: int, max_lines: int):
        super().__init__(max_lines)
        self.r, self.p, self.ttl_s = client, prefix, ttl_s

    def append(self, job_id: str, line: str) -> None:
        lines, count = f"{self.p}:log:{job_id}", f"{self.p}:logn:{job_id}"
        with self.r.pipeline(transaction=True) as pipe:  # the list and its count move together
            pipe.rpush(lines, line[: self.MAX_LINE]).ltrim(lines, -self.max_lines, -1).incr(count)
            pipe.expire(lines, self.ttl_s).expire(count, self.ttl_s).execute()

    def read(self, job_id: str, start: int = 0) -> tuple[list[str], int]:
        with self.r.pipeline(transaction=True) as pipe:
            kept, count = pipe.lrange(f"{self.p}:log:{job_id}", 0, -1).get(f"{self.p}:logn:{job_id}").execute()
        end = int(count or 0)
        first = end - len(kept)
        return kept[max(start - first, 0) :], end


class RedisMetrics(Metrics):
    def __init__(self, client: Client, prefix: str):
        self.r, self.p = client, prefix

    def observe(self, name: str, value: float) -> None:
        pipe = self.r.pipeline(transaction=True)
        key = f"{self.p}:hist:{name}"
        for field in bucket_fields(value):
            pipe.hincrby(key, field, 1)
        pipe.hincrbyfloat(key, "sum", value)
        pipe.hincrby(key, "count", 1)
        pipe.execute()

    def histograms(self) -> dict[str, dict[str, float]]:
        prefix = f"{self.p}:hist:"
        return {
            key[len(prefix) :]: {f: float(v) for f, v in self.r.hgetall(key).items()}
            for key in self.r.scan_iter(match=f"{prefix}*", count=100)
        }

    def incr(self, name: str, amount: int = 1) -> None:
        self.r.incrby(f"{self.p}:counter:{name}", amount)

    def counters(self) -> dict[str, int]:
        prefix = f"{self.p}:counter:"
        keys = list(self.r.scan_iter(match=f"{prefix}*", count=100))
        values = self.r.mget(keys) if keys else []
        return {k[len(prefix) :]: int(v or 0) for k, v in zip(keys, values, strict=True)}


class RedisJobStore(JobStore):
    """The records and, over the same client and key prefix, the idempotency keys, result cache and metrics."""

    def __init__(
        self,
        client: Client,
        prefix: str = "learngene",
        job_ttl_s: int = 30 * 86400,
        idempotency_ttl_s: int = 86400,
        log_lines: int = 2000,
        webhooks_kept: int = 1000,
    ):
        self.r = client
        self.p = prefix
        self.job_ttl_s = job_ttl_s
        self.keys = RedisIdempotencyKeys(client, prefix, idempotency_ttl_s)
        self.results = RedisResultCache(client, prefix, job_ttl_s)
        self.metrics = RedisMetrics(client, prefix)
        self.logs = RedisJobLogs(client, prefix, job_ttl_s, log_lines)
        self.webhooks = RedisWebhookStore(client, prefix, job_ttl_s, webhooks_kept)

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisJobStore:
        if settings.redis_url is None:
            raise ValueError("a Redis job store needs LEARNGENE_REDIS_URL")
        return cls.from_url(
            settings.redis_url,
            prefix=settings.redis_prefix,
            job_ttl_s=settings.job_ttl_s,
            idempotency_ttl_s=settings.idempotency_ttl_s,
            log_lines=settings.job_log_lines,
            webhooks_kept=settings.webhook_deliveries_kept,
        )

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

    def create(self, job: Job) -> None:
        mutable = {name: encode(value) for name, value in job if name not in IMMUTABLE}
        fields = {"doc": job.model_dump_json(include=IMMUTABLE), **{k: v for k, v in mutable.items() if v is not None}}
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self._job(job.id), mapping=fields)
        pipe.zadd(self._index(job.kind), {job.id: job.created_at})
        pipe.zadd(f"{self.p}:undispatched", {job.id: job.created_at})
        pipe.hincrby(self._counts(job.kind), job.status.value, 1)
        if job.client:
            pipe.sadd(f"{self.p}:active:{job.client}", job.id)
        pipe.execute()

    def mark_dispatched(self, job_id: str) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self._job(job_id), "dispatched", "1")  # a transaction watching the job sees the change
        pipe.zrem(f"{self.p}:undispatched", job_id)
        pipe.execute()

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
            status=JobStatus(fields["status"]),
            attempts=int(fields.get("attempts", 0)),
            max_attempts=int(fields.get("max_attempts", 1)),
            started_at=number("started_at"),
            finished_at=number("finished_at"),
            progress=loads("progress"),
            result=loads("result"),
            error=loads("error"),
            cancel_requested=fields.get("cancel_requested") == "1",
            dispatched=fields.get("dispatched") == "1",
            client=fields.get("client") or None,
            lease_owner=fields.get("lease_owner") or None,
            lease_until=number("lease_until"),
        )

    def _index(self, kind: JobKind) -> str:
        return f"{self.p}:jobs:{kind.value}"

    def page(self, query: JobQuery, limit: int = 50, after: Position | None = None) -> JobPage:
        """Walks the kinds' creation-time indexes newest first (merged, when several kinds are asked for) from
        `after`, reading records in batches and keeping those that match, until the page is full or the indexes end.
        Status and client are fields of the records, so a selective filter reads more records, never fewer results."""
        streams = [self._positions(kind, after, query.created_after) for kind in sorted(query.kinds)]
        merged = heapq.merge(*streams, key=lambda entry: entry[0], reverse=True)
        found: list[Job] = []
        while len(found) <= limit:
            batch = list(islice(merged, min(max(limit + 1 - len(found), 16), INDEX_CHUNK)))
            if not batch:
                break
            pipe = self.r.pipeline(transaction=False)
            for _, job_id, _ in batch:
                pipe.hgetall(self._job(job_id))
            for (_, job_id, kind), fields in zip(batch, pipe.execute(), strict=True):
                job = self._parse(fields)
                if job is None:  # a record past its TTL: drop it from the index too
                    self.r.zrem(self._index(kind), job_id)
                elif query.matches(job):
                    found.append(job)
        shown = found[:limit]
        return JobPage(jobs=shown, next=Position.of(shown[-1]) if len(found) > limit else None)

    def _positions(
        self, kind: JobKind, after: Position | None, created_after: float | None
    ) -> Iterator[tuple[Position, str, JobKind]]:
        """(position, id, kind) of one kind's jobs, newest first, strictly after `after`, in chunks of the index.
        Each chunk starts at the score of the last one's end (not at an offset from the top), so jobs created while
        the list is read do not shift it; `same` skips the ids already seen at that very score."""
        high = "+inf" if after is None else repr(after.created_at)
        low = "-inf" if created_after is None else f"({created_after!r}"  # "(": strictly after
        same = 0
        while True:
            chunk = self.r.zrevrangebyscore(self._index(kind), high, low, start=same, num=INDEX_CHUNK, withscores=True)
            for job_id, score in chunk:
                position = Position(score, job_id)
                if after is None or position < after:
                    yield position, job_id, kind
            if len(chunk) < INDEX_CHUNK:
                return
            last = repr(chunk[-1][1])
            same = (same if last == high else 0) + sum(1 for _, score in chunk if repr(score) == last)
            high = last

    def _apply(self, job_id: str, decide: Callable[[Job | None], Move]) -> tuple[Move, Job | None]:
        key = self._job(job_id)

        def attempt(pipe: Pipeline) -> tuple[Move, Job | None]:
            job = self._parse(pipe.hgetall(key))  # under WATCH, executed at once
            move = decide(job)
            pipe.multi()
            if job is not None and move.changes:
                self._write(pipe, job, move.changes)
            return move, job

        move, job = self.r.transaction(attempt, key, value_from_callable=True)
        return move, (job.model_copy(update=move.changes) if job is not None else None)

    def _write(self, pipe: Pipeline, job: Job, changes: dict[str, Any]) -> None:
        key = self._job(job.id)
        encoded = {name: encode(value) for name, value in changes.items()}
        if written := {name: value for name, value in encoded.items() if value is not None}:
            pipe.hset(key, mapping=written)
        if dropped := [name for name, value in encoded.items() if value is None]:
            pipe.hdel(key, *dropped)
        if changes.get("dispatched"):
            pipe.zrem(f"{self.p}:undispatched", job.id)
        before, after = job.status, JobStatus(changes.get("status", job.status))
        if before == after:
            return
        pipe.hincrby(self._counts(job.kind), before.value, -1)
        pipe.hincrby(self._counts(job.kind), after.value, 1)
        effects = index_effects(before, after)
        if effects["enter_running"]:
            pipe.sadd(f"{self.p}:running", job.id)
        if effects["leave_running"]:
            pipe.srem(f"{self.p}:running", job.id)
        if effects["ended"]:
            pipe.srem(f"{self.p}:active:{job.client or '-'}", job.id)
            pipe.expire(key, self.job_ttl_s)

    def cancel_requested(self, job_id: str) -> bool:
        return self.r.hget(self._job(job_id), "cancel_requested") == "1"

    def due_for_redelivery(self, now: float, undispatched_grace_s: float) -> list[str]:
        running = list(self.r.smembers(f"{self.p}:running"))
        leases = self.r.hmget  # one round trip per job is fine: the running set is as large as the worker pool
        expired = [j for j in running if float(leases(self._job(j), "lease_until")[0] or 0) < now]
        stale = self.r.zrangebyscore(f"{self.p}:undispatched", 0, now - undispatched_grace_s)
        return [*expired, *stale]

    def active(self, client: str) -> int:
        return int(self.r.scard(f"{self.p}:active:{client}"))

    def counts(self, kind):
        raw = self.r.hgetall(self._counts(kind))
        return {status: max(0, int(raw.get(status, 0))) for status in STATUSES}

    def ping(self) -> bool:
        try:
            return bool(self.r.ping())
        except Exception:
            return False
