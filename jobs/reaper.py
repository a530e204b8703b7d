"""Redelivery of jobs whose worker died, and of accepted jobs that never reached the broker.

A worker renews its job's lease every few seconds (`jobs.lease.Lease`). When a worker is killed outright (the
pool parent with it, so Celery cannot requeue the job itself), the lease lapses; the reaper then sends the job again
and the next claim counts another attempt. Accepted jobs whose dispatch did not happen (the API died between the
record and the broker) are sent too. Every API process and every worker runs one; `take_redelivery` lets exactly
one of them send each job.
"""

from __future__ import annotations

import logging
import threading
import time

from jobs.dispatch import Dispatcher
from jobs.logs import log_context
from jobs.model import TRANSIENT_ERRORS
from jobs.settings import Settings
from jobs.store import JobStore

log = logging.getLogger(__name__)


def reap(jobs: JobStore, dispatcher: Dispatcher, settings: Settings, now: float | None = None) -> list[str]:
    """Send every job that is due for redelivery and that this caller wins; returns their ids."""
    now = time.time() if now is None else now
    sent = []
    for job_id in jobs.due_for_redelivery(now, undispatched_grace_s=settings.lease_s):
        if not jobs.take_redelivery(job_id, now, settings.redelivery_grace_s):
            continue
        job = jobs.get(job_id)
        if job is None:
            continue
        with log_context(job_id=job_id, request_id=job.request_id):
            dispatcher.submit(job)
            sent.append(job_id)
            log.warning(
                "job %s redelivered (lease lapsed or never dispatched), attempt %d so far", job_id, job.attempts
            )
    return sent


class Reaper(threading.Thread):
    """`reap` every `settings.reaper_interval_s` seconds until stopped; an unreachable Redis is waited out."""

    def __init__(self, jobs: JobStore, dispatcher: Dispatcher, settings: Settings):
        super().__init__(name="learngene-reaper", daemon=True)
        self.jobs, self.dispatcher, self.settings = jobs, dispatcher, settings
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.settings.reaper_interval_s):
            try:
                reap(self.jobs, self.dispatcher, self.settings)
            except TRANSIENT_ERRORS:
                log.warning("reaper: Redis unreachable, will retry")
            except Exception:  # the reaper must outlive any single bad job
                log.exception("reaper: unexpected error")

    def stop(self) -> None:
        self._stop_event.set()
