"""Making subscriptions: a deployment's (`POST /v1/admin/webhooks`) and a request's own (`notify`), each to a
destination checked first (a 422 naming the field when it is refused)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from jobs.limits import FieldError
from jobs.settings import Settings
from jobs.webhooks.destinations import DestinationRefused, resolve
from jobs.webhooks.model import EventType, Subscription, new_id, new_secret
from jobs.webhooks.store import WebhookStore


def check_destination(url: str, settings: Settings, loc: tuple[str, ...]) -> None:
    try:
        resolve(url, settings.webhook_allowed_hosts)
    except DestinationRefused as e:
        raise FieldError([(loc, f"the webhook URL {e}")]) from None


def subscribe(
    webhooks: WebhookStore,
    settings: Settings,
    url: str,
    events: Sequence[EventType],
    *,
    job_id: str | None = None,
    loc: tuple[str, ...] = ("body", "url"),
) -> Subscription:
    """A new subscription with a fresh secret; a job's own ends with the job's record."""
    check_destination(url, settings, loc)
    subscription = Subscription(
        id=new_id("wh"),
        url=url,
        events=list(dict.fromkeys(events)),
        secret=new_secret(),
        created_at=time.time(),
        job_id=job_id,
    )
    webhooks.subscribe(subscription, ttl_s=settings.job_ttl_s if job_id else None)
    return subscription
