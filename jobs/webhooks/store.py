"""Subscriptions and deliveries, kept beside the job records (a role of `jobs.store.JobStore`: `jobs.webhooks`).

An event is written down as one delivery per subscriber before anything is sent (an outbox), so an event survives
the process that emitted it. A sender `claim`s due deliveries under a lease (their next attempt moved to the lease's
end): a sender killed mid-attempt leaves its deliveries due again once the lease runs out, and another sends them,
with the same webhook-id. At least once, never lost; a receiver deduplicates by webhook-id.

Redis keys (prefix `P`):
    P:wh:sub:<id>        a subscription (JSON); a request's own one expires with its job's record
    P:wh:subs            set: the deployment's subscription ids
    P:wh:jobsub:<job>    the id of the subscription a job's request made (`notify`)
    P:wh:dlv:<sub>:<msg> a delivery (JSON), expiring with the job records
    P:wh:due             sorted set: pending deliveries ("<sub>:<msg>") by their next attempt's time
    P:wh:log:<sub>       sorted set: a subscription's deliveries by creation time, the last `kept` of them
"""

from __future__ import annotations

import abc
import threading
import time
from typing import Any

from jobs.webhooks.model import Delivery, EventType, Subscription, event_payload, new_id, rescheduled


class WebhookStore(abc.ABC):
    def __init__(self, kept: int) -> None:
        self.kept = kept  # deliveries listed per subscription

    @abc.abstractmethod
    def subscribe(self, subscription: Subscription, ttl_s: int | None = None) -> None: ...

    @abc.abstractmethod
    def subscription(self, subscription_id: str) -> Subscription | None: ...

    @abc.abstractmethod
    def subscriptions(self) -> list[Subscription]:
        """The deployment's subscriptions (not those of single requests), oldest first."""

    @abc.abstractmethod
    def job_subscription(self, job_id: str) -> Subscription | None: ...

    @abc.abstractmethod
    def unsubscribe(self, subscription_id: str) -> bool:
        """Remove a deployment subscription; its pending deliveries fail at their next attempt."""

    @abc.abstractmethod
    def save(self, delivery: Delivery) -> None:
        """Store a delivery: due at `next_attempt_at` while pending, off the due list once delivered or failed."""

    @abc.abstractmethod
    def claim(self, now: float, lease_s: float, limit: int) -> list[Delivery]:
        """Up to `limit` due deliveries, each leased to the caller until `now + lease_s`."""

    @abc.abstractmethod
    def delivery(self, subscription_id: str, delivery_id: str) -> Delivery | None: ...

    @abc.abstractmethod
    def deliveries(self, subscription_id: str) -> list[Delivery]:
        """A subscription's kept deliveries, newest first."""

    def emit(self, event: EventType, data: dict[str, Any], job_id: str | None = None) -> list[Delivery]:
        """Record one delivery of the event per subscriber: every deployment subscription to `event` and the
        emitting job's own (`notify`). All share one webhook-id and one payload."""
        now = time.time()
        subscribers = [s for s in self.subscriptions() if event in s.events]
        if job_id is not None and (own := self.job_subscription(job_id)) is not None and event in own.events:
            subscribers.append(own)
        if not subscribers:
            return []
        message, payload = new_id("msg"), event_payload(event, data, now)
        out = [
            Delivery(id=message, subscription=s.id, type=event, payload=payload, created_at=now, next_attempt_at=now)
            for s in subscribers
        ]
        for delivery in out:
            self.save(delivery)
        return out

    def redeliver(self, subscription_id: str, delivery_id: str) -> Delivery | None:
        """Send a kept delivery again now (the same webhook-id and payload), whatever became of it."""
        found = self.delivery(subscription_id, delivery_id)
        if found is None:
            return None
        again = rescheduled(found, time.time())
        self.save(again)
        return again


class MemoryWebhookStore(WebhookStore):
    def __init__(self, kept: int = 1000) -> None:
        super().__init__(kept)
        self._subs: dict[str, Subscription] = {}
        self._deliveries: dict[str, Delivery] = {}  # by key, in creation order
        self._due: dict[str, float] = {}
        self._lock = threading.Lock()

    def subscribe(self, subscription: Subscription, ttl_s: int | None = None) -> None:
        with self._lock:
            self._subs[subscription.id] = subscription

    def subscription(self, subscription_id: str) -> Subscription | None:
        with self._lock:
            return self._subs.get(subscription_id)

    def subscriptions(self) -> list[Subscription]:
        with self._lock:
            return [s for s in self._subs.values() if s.job_id is None]

    def job_subscription(self, job_id: str) -> Subscription | None:
        with self._lock:
            return next((s for s in self._subs.values() if s.job_id == job_id), None)

    def unsubscribe(self, subscription_id: str) -> bool:
        with self._lock:
            found = self._subs.get(subscription_id)
            if found is None or found.job_id is not None:
                return False
            del self._subs[subscription_id]
            return True

    def save(self, delivery: Delivery) -> None:
        with self._lock:
            self._deliveries[delivery.key] = delivery
            if delivery.status == "pending" and delivery.next_attempt_at is not None:
                self._due[delivery.key] = delivery.next_attempt_at
            else:
                self._due.pop(delivery.key, None)
            mine = [k for k, d in self._deliveries.items() if d.subscription == delivery.subscription]
            for old in mine[: max(len(mine) - self.kept, 0)]:
                del self._deliveries[old]

    def claim(self, now: float, lease_s: float, limit: int) -> list[Delivery]:
        with self._lock:
            keys = sorted((at, k) for k, at in self._due.items() if at <= now)[:limit]
            for _, key in keys:
                self._due[key] = now + lease_s
            return [self._deliveries[k] for _, k in keys if k in self._deliveries]

    def delivery(self, subscription_id: str, delivery_id: str) -> Delivery | None:
        with self._lock:
            return self._deliveries.get(f"{subscription_id}:{delivery_id}")

    def deliveries(self, subscription_id: str) -> list[Delivery]:
        with self._lock:
            return [d for d in reversed(self._deliveries.values()) if d.subscription == subscription_id]


# Atomically: the due deliveries (at most ARGV[3]), each leased until ARGV[2].
_CLAIM = """
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, key in ipairs(keys) do redis.call('ZADD', KEYS[1], ARGV[2], key) end
return keys
"""


class RedisWebhookStore(WebhookStore):
    def __init__(self, client: Any, prefix: str, ttl_s: int, kept: int = 1000) -> None:  # redis.Redis, str replies
        super().__init__(kept)
        self.r, self.p, self.ttl_s = client, f"{prefix}:wh", ttl_s
        self._claim = client.register_script(_CLAIM)

    def subscribe(self, subscription: Subscription, ttl_s: int | None = None) -> None:
        with self.r.pipeline(transaction=True) as pipe:
            pipe.set(f"{self.p}:sub:{subscription.id}", subscription.model_dump_json(), ex=ttl_s)
            if subscription.job_id is None:
                pipe.sadd(f"{self.p}:subs", subscription.id)
            else:
                pipe.set(f"{self.p}:jobsub:{subscription.job_id}", subscription.id, ex=ttl_s)
            pipe.execute()

    def subscription(self, subscription_id: str) -> Subscription | None:
        found = self.r.get(f"{self.p}:sub:{subscription_id}")
        return Subscription.model_validate_json(found) if found else None

    def subscriptions(self) -> list[Subscription]:
        ids = sorted(self.r.smembers(f"{self.p}:subs"))
        found = [Subscription.model_validate_json(v) for v in self.r.mget([f"{self.p}:sub:{i}" for i in ids]) if v]
        return sorted(found, key=lambda s: s.created_at) if ids else []

    def job_subscription(self, job_id: str) -> Subscription | None:
        found = self.r.get(f"{self.p}:jobsub:{job_id}")
        return self.subscription(found) if found else None

    def unsubscribe(self, subscription_id: str) -> bool:
        if not self.r.sismember(f"{self.p}:subs", subscription_id):
            return False
        with self.r.pipeline(transaction=True) as pipe:
            pipe.srem(f"{self.p}:subs", subscription_id).delete(f"{self.p}:sub:{subscription_id}").execute()
        return True

    def save(self, delivery: Delivery) -> None:
        log = f"{self.p}:log:{delivery.subscription}"
        with self.r.pipeline(transaction=True) as pipe:
            pipe.set(f"{self.p}:dlv:{delivery.key}", delivery.model_dump_json(), ex=self.ttl_s)
            if delivery.status == "pending" and delivery.next_attempt_at is not None:
                pipe.zadd(f"{self.p}:due", {delivery.key: delivery.next_attempt_at})
            else:
                pipe.zrem(f"{self.p}:due", delivery.key)
            pipe.zadd(log, {delivery.id: delivery.created_at}, nx=True).zremrangebyrank(log, 0, -self.kept - 1)
            pipe.expire(log, self.ttl_s).execute()

    def claim(self, now: float, lease_s: float, limit: int) -> list[Delivery]:
        keys = self._claim(keys=[f"{self.p}:due"], args=[now, now + lease_s, limit])
        if not keys:
            return []
        values = self.r.mget([f"{self.p}:dlv:{k}" for k in keys])
        if gone := [k for k, v in zip(keys, values, strict=True) if not v]:  # expired: nothing left to send
            self.r.zrem(f"{self.p}:due", *gone)
        return [Delivery.model_validate_json(v) for v in values if v]

    def delivery(self, subscription_id: str, delivery_id: str) -> Delivery | None:
        found = self.r.get(f"{self.p}:dlv:{subscription_id}:{delivery_id}")
        return Delivery.model_validate_json(found) if found else None

    def deliveries(self, subscription_id: str) -> list[Delivery]:
        ids = self.r.zrevrange(f"{self.p}:log:{subscription_id}", 0, -1)
        if not ids:
            return []
        values = self.r.mget([f"{self.p}:dlv:{subscription_id}:{i}" for i in ids])
        return [Delivery.model_validate_json(v) for v in values if v]
