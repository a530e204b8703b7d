"""What a webhook is: the event types, a subscription, one event's delivery to one subscriber and its attempts, and
the retry rule, written once and pure (no clock, no randomness of its own, no I/O).

A delivery follows the Standard Webhooks specification: its `webhook-id` (`Delivery.id`) and its payload bytes are
fixed when the event is emitted and are the same on every attempt; each attempt is signed afresh with the time it is
sent (`webhook-timestamp`), so a receiver that checks the timestamp's age accepts a late retry too.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

EventType = Literal[
    "job.succeeded", "job.failed", "job.cancelled", "template_set.published", "alias.moved", "card.ready"
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]
JOB_END_EVENTS = {"succeeded": "job.succeeded", "failed": "job.failed", "cancelled": "job.cancelled"}
DeliveryStatus = Literal["pending", "delivered", "failed"]


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class Subscription(BaseModel):
    """Where events go. A deployment's subscriptions (`POST /v1/admin/webhooks`) hear every job; one made by a
    request's `notify` hears only that job (`job_id`) and ends with its record."""

    id: str
    url: str
    events: list[EventType]
    secret: str
    created_at: float
    job_id: str | None = None


class Attempt(BaseModel):
    at: float
    status_code: int | None = Field(default=None, description="the receiver's answer; null when none came")
    error: str | None = Field(default=None, description="why the attempt failed, when it did")
    duration_s: float


class Delivery(BaseModel):
    id: str = Field(description="the webhook-id header: one per event, the same on every attempt")
    subscription: str
    type: EventType
    payload: str = Field(description="the exact bytes signed and sent")
    created_at: float
    status: DeliveryStatus = "pending"
    attempts: list[Attempt] = Field(default_factory=list)
    failures: int = Field(default=0, description="failed attempts since it was last scheduled (indexes the retries)")
    next_attempt_at: float | None = None

    @property
    def key(self) -> str:
        return f"{self.subscription}:{self.id}"


def event_payload(event: EventType, data: dict[str, Any], now: float) -> str:
    """`{"type", "timestamp", "data"}`, the Standard Webhooks payload, serialized once."""
    moment = dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat(timespec="milliseconds")
    return json.dumps({"type": event, "timestamp": moment, "data": data}, sort_keys=True, separators=(",", ":"))


def after_attempt(
    delivery: Delivery, attempt: Attempt, schedule_s: Sequence[float], jitter: float, draw: float
) -> Delivery:
    """The delivery after one attempt: delivered on a 2xx; else retried after `schedule_s[failures - 1]` seconds,
    spread by +-`jitter` (a fraction; `draw` in [0, 1) picks where), and failed once the schedule is spent."""
    attempts = [*delivery.attempts, attempt]
    if attempt.status_code is not None and 200 <= attempt.status_code < 300:
        return delivery.model_copy(update={"attempts": attempts, "status": "delivered", "next_attempt_at": None})
    failures = delivery.failures + 1
    if failures > len(schedule_s):
        update = {"attempts": attempts, "failures": failures, "status": "failed", "next_attempt_at": None}
        return delivery.model_copy(update=update)
    delay = schedule_s[failures - 1] * (1 + jitter * (2 * draw - 1))
    update = {"attempts": attempts, "failures": failures, "status": "pending", "next_attempt_at": attempt.at + delay}
    return delivery.model_copy(update=update)


def rescheduled(delivery: Delivery, now: float) -> Delivery:
    """A manual redelivery: due now, with the whole retry schedule ahead of it again; its attempts are kept."""
    return delivery.model_copy(update={"status": "pending", "failures": 0, "next_attempt_at": now})
