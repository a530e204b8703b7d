"""Sending webhooks (`jobs.webhooks`): one attempt (`attempt`), and the `Deliverer` that sends every due delivery, in
each Celery worker's main process (and in the API of the embedded mode, which is its own worker).

An attempt is a POST of the delivery's payload, signed by `standardwebhooks` with the subscription's secret, to the
destination checked just before (`jobs.webhooks.destinations`), without redirects or proxies from the environment.
A 2xx delivers it; anything else (another status, a timeout, a refused connection or destination) is a failure, and
the retry schedule says when it is tried again.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from standardwebhooks.webhooks import Webhook

from jobs.model import TRANSIENT_ERRORS
from jobs.settings import Settings
from jobs.webhooks.destinations import DestinationRefused, resolve
from jobs.webhooks.model import Attempt, Delivery, Subscription, after_attempt
from jobs.webhooks.store import WebhookStore
from learngene import __version__

log = logging.getLogger(__name__)


def signed_headers(subscription: Subscription, delivery: Delivery, now: float) -> dict[str, str]:
    moment = dt.datetime.fromtimestamp(now, dt.timezone.utc)
    return {
        "webhook-id": delivery.id,
        "webhook-timestamp": str(int(now)),
        "webhook-signature": Webhook(subscription.secret).sign(delivery.id, moment, delivery.payload),
        "content-type": "application/json",
        "user-agent": f"learngene-webhooks/{__version__}",
    }


def attempt(subscription: Subscription, delivery: Delivery, settings: Settings) -> Attempt:
    """One POST; what came of it (never raises for the receiver's or the network's faults)."""
    started = time.time()
    status, error = None, None
    try:
        target = resolve(subscription.url, settings.webhook_allowed_hosts)
        headers = {**signed_headers(subscription, delivery, time.time()), "host": target.host}
        with httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False) as http:
            response = http.post(
                target.url,
                content=delivery.payload.encode(),
                headers=headers,
                extensions={"sni_hostname": target.server_name},
            )
        status = response.status_code
        if not 200 <= status < 300:
            error = f"answered {status}"
    except DestinationRefused as e:
        error = f"destination refused: {e}"
    except httpx.TimeoutException:
        error = f"no answer within {settings.webhook_timeout_s:g} s"
    except httpx.HTTPError as e:
        error = f"{type(e).__name__}: could not be sent"
    return Attempt(at=started, status_code=status, error=error, duration_s=round(time.time() - started, 3))


def deliver(webhooks: WebhookStore, delivery: Delivery, settings: Settings) -> Delivery:
    """Attempt one claimed delivery and store what became of it."""
    subscription = webhooks.subscription(delivery.subscription)
    if subscription is None:  # unsubscribed (or its job expired) since the event: nothing to send it to
        tried = Attempt(at=time.time(), error="the subscription no longer exists", duration_s=0.0)
        update = {"attempts": [*delivery.attempts, tried], "status": "failed", "next_attempt_at": None}
        after = delivery.model_copy(update=update)
    else:
        tried = attempt(subscription, delivery, settings)
        schedule = settings.webhook_retry_schedule_s
        after = after_attempt(delivery, tried, schedule, settings.webhook_retry_jitter, random.random())
    webhooks.save(after)
    outcome = after.status if after.status != "pending" else f"retry in {after.next_attempt_at - time.time():.1f} s"
    log.info("webhook %s (%s) to %s: %s, %s", delivery.id, delivery.type, delivery.subscription, tried.error or
             tried.status_code, outcome)  # fmt: skip
    return after


class Deliverer(threading.Thread):
    """Claims due deliveries every `webhook_poll_s` seconds and sends them on up to `webhook_senders` threads."""

    def __init__(self, webhooks: WebhookStore, settings: Settings) -> None:
        super().__init__(name="learngene-webhooks", daemon=True)
        self.webhooks, self.settings = webhooks, settings
        self._stop_event = threading.Event()
        self._senders = ThreadPoolExecutor(settings.webhook_senders, thread_name_prefix="learngene-webhook")
        self._busy = threading.Semaphore(settings.webhook_senders)

    def run(self) -> None:
        while not self._stop_event.wait(self.settings.webhook_poll_s):
            try:
                self.send_due()
            except TRANSIENT_ERRORS:
                log.warning("webhooks: Redis unreachable, will retry")
            except Exception:  # the deliverer must outlive any single bad delivery
                log.exception("webhooks: unexpected error")

    def send_due(self) -> None:
        free = 0
        while self._busy.acquire(blocking=False):
            free += 1
        claimed = self.webhooks.claim(time.time(), self.settings.webhook_lease_s, free) if free else []
        for _ in range(free - len(claimed)):
            self._busy.release()
        for delivery in claimed:
            self._senders.submit(self._send, delivery)

    def _send(self, delivery: Delivery) -> None:
        try:
            deliver(self.webhooks, delivery, self.settings)
        except Exception:  # left due: its lease runs out and it is sent again
            log.exception("webhooks: delivery %s failed unexpectedly", delivery.id)
        finally:
            self._busy.release()

    def stop(self) -> None:
        self._stop_event.set()
        self._senders.shutdown(wait=False, cancel_futures=True)
