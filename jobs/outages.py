"""Riding out outages inside a job: Redis (before the job is claimed) and object storage (while it runs)."""

from __future__ import annotations

import logging
import time

from jobs.lease import Reporter
from jobs.model import TRANSIENT_ERRORS
from jobs.settings import Settings
from learngene.control import Stopped
from storage.objects import StorageUnavailable

log = logging.getLogger(__name__)


def until_redis_answers(call, what: str, settings: Settings):
    """Retry `call` through a Redis outage (backoff capped at `retry_backoff_max_s`). Before its claim a delivered
    job exists only as this message: giving up here would drop it, so the worker waits, as it could not take new
    work anyway."""
    delay = min(0.5, settings.retry_backoff_max_s)
    while True:
        try:
            return call()
        except TRANSIENT_ERRORS:
            log.warning("%s: Redis unreachable, retrying in %.1f s", what, delay)
            time.sleep(delay)
            delay = min(settings.retry_backoff_max_s, delay * 2)


def through_outages(call, reporter: Reporter, settings: Settings, what: str):
    """Retry `call` while object storage is unreachable, with backoff capped at `retry_backoff_max_s`, for up to
    `storage_outage_s`; a cancel, a lost lease or the job's deadline ends the wait (`Stopped`). Past the bound the
    job fails with `StorageUnavailable`: recorded, with its reason, rather than held forever."""
    deadline = time.monotonic() + settings.storage_outage_s
    delay = min(0.5, settings.retry_backoff_max_s)
    while True:
        try:
            return call()
        except StorageUnavailable:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("job %s: %s: object storage is unavailable; retrying in %.1f s", reporter.job_id, what, delay)
        wake = time.monotonic() + delay
        while time.monotonic() < wake:
            if reporter.should_stop():
                raise Stopped(f"stopped while waiting for object storage ({what})")
            time.sleep(min(0.25, max(0.0, wake - time.monotonic())))
        delay = min(settings.retry_backoff_max_s, delay * 2)
