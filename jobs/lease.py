"""A running job's lease and its reporter: how the job learns it must stop, and how its progress gets out.

The lease is renewed from a background thread; a worker presumed dead (frozen, killed) loses it to another, and
everything it would publish is checked against it first (`Lease.confirm`). The reporter writes throttled progress
and answers "stop?" (cancelled, lease lost, deadline passed) between training steps.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from jobs.model import TRANSIENT_ERRORS, JobKind, JobProgress
from jobs.phases import PLANS, Phase, metric, typical_durations, whole_eta
from jobs.store import JobStore
from learngene.train.loop import Progress

log = logging.getLogger(__name__)


class Reporter:
    """Progress into the job record (throttled) and cancellation out of it; a lost lease or the job's time limit
    stops the job too. A Redis that is briefly unreachable does not fail the job: progress is skipped, it goes on.

    `should_stop` is polled between training steps and between chunks of data being read, so a cancel, a lease
    taken over by another worker, or the deadline takes effect within about `poll_s`."""

    def __init__(
        self,
        jobs: JobStore,
        job_id: str,
        lease: Lease | None = None,
        *,
        kind: JobKind = JobKind.initialization,
        time_limit_s: float | None = None,
        min_interval_s: float = 0.5,
        poll_s: float = 0.25,
    ):
        self.jobs, self.job_id, self.lease, self.kind = jobs, job_id, lease, kind
        self.min_interval_s, self.poll_s = min_interval_s, poll_s
        self.deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
        self.time_limit_s = time_limit_s
        self._last = 0.0
        self._polled, self._cancelled = -float("inf"), False
        self.current: Phase = PLANS[kind][0]
        self._phase_started = time.monotonic()
        self._typical: dict[Phase, float] | None = None  # read once, at the first report
        self._reported: JobProgress | None = None

    def typical(self) -> dict[Phase, float]:
        if self._typical is None:
            try:
                self._typical = typical_durations(self.jobs.metrics.histograms(), self.kind)
            except TRANSIENT_ERRORS:
                return {}
        return self._typical

    def phase(self, phase: Phase | None) -> None:
        """Enter `phase` (None: the job's work is done): the one before it is timed, and the record says so."""
        now = time.monotonic()
        if phase != self.current:  # a card job starts in its only phase: nothing ended yet
            with contextlib.suppress(*TRANSIENT_ERRORS):
                self.jobs.metrics.observe(metric(self.kind, self.current), now - self._phase_started)
        if phase is None:
            return
        self.current, self._phase_started = phase, now
        eta = whole_eta(self.kind, phase, None, self.typical())
        # Until the new phase counts steps of its own, the record keeps the last counts (a finished fit's 200/200
        # while its checkpoint is exported), marked with the phase it is in now.
        since = self._reported or JobProgress(step=0, total_steps=0)
        update = since.model_copy(update={"phase": phase, "eta_s": eta, "phase_eta_s": None, "updated_at": time.time()})
        self._reported = update
        with contextlib.suppress(*TRANSIENT_ERRORS):
            self.jobs.set_progress(self.job_id, update)
        self._last = now

    def progress(self, p: Progress) -> None:
        now = time.monotonic()
        if now - self._last >= self.min_interval_s or p.step == p.total_steps:
            self._last = now
            update = JobProgress(
                phase=self.current,
                step=p.step,
                total_steps=p.total_steps,
                loss=p.loss,
                accuracy=p.accuracy,
                images_per_s=p.images_per_s,
                eta_s=whole_eta(self.kind, self.current, p.eta_s, self.typical()),
                phase_eta_s=p.eta_s,
            )
            self._reported = update
            with contextlib.suppress(*TRANSIENT_ERRORS):
                self.jobs.set_progress(self.job_id, update)

    def confirm_lease(self) -> None:
        if self.lease is not None:
            self.lease.confirm()

    @property
    def timed_out(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def should_stop(self) -> bool:
        if self.timed_out or (self.lease is not None and not self.lease.valid()):
            return True
        now = time.monotonic()
        if now - self._polled >= self.poll_s:
            self._polled = now
            with contextlib.suppress(*TRANSIENT_ERRORS):
                self._cancelled = self.jobs.cancel_requested(self.job_id)
        return self._cancelled


class StopWatchdog:
    """Ends the job's process when the job was told to stop (cancelled, past its deadline, its lease lost) and has
    not come back to a stop check within `grace_s`: a training step that runs for minutes, a read that hangs. Stop
    checks are only polled between steps and chunks; this thread looks on its own. `on_stuck` records the outcome,
    then the process exits (`os._exit`: nothing of the stuck job runs on), and what runs jobs starts another (Celery
    replaces its pool process and requeues the message, whose redelivery finds the job ended; the embedded executor
    starts a process per job). Only for a job in a process of its own."""

    def __init__(self, reporter: Reporter, grace_s: float, on_stuck: Callable[[], object], *, poll_s: float = 0.25):
        self.reporter, self.grace_s, self.on_stuck, self.poll_s = reporter, grace_s, on_stuck, poll_s
        self._done = threading.Event()
        context = contextvars.copy_context()  # its log lines carry the job's ids
        self._thread = threading.Thread(
            target=context.run, args=(self._watch,), daemon=True, name=f"stop-watchdog-{reporter.job_id[:8]}"
        )

    def __enter__(self) -> StopWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        told = None
        while not self._done.wait(self.poll_s):
            if not self.reporter.should_stop():
                told = None
                continue
            told = told if told is not None else time.monotonic()
            if time.monotonic() - told < self.grace_s:
                continue
            log.error(
                "job %s did not stop within %.3g s of being told to: ending its process (pid %d)",
                self.reporter.job_id,
                self.grace_s,
                os.getpid(),
            )
            try:
                self.on_stuck()
            except Exception:
                log.exception("job %s: recording its stop failed; its lease will lapse", self.reporter.job_id)
            finally:
                logging.shutdown()  # the line above reaches its handler before the process goes
                os._exit(EXIT_STUCK)


# The exit status of a process ended by its StopWatchdog (EX_TEMPFAIL: a supervisor may start another).
EXIT_STUCK = 75


class LeaseLost(Exception):
    """Another worker holds the job now (this one was presumed dead, e.g. frozen): it must not publish anything."""


class Lease:
    """Renews a job's lease from a background thread while the job runs. If another worker has taken the job over
    (this one was presumed dead), `lost` turns True and the job stops at its next step.

    A process that was frozen (SIGSTOP, a paused VM) wakes up with its renewal thread asleep: `valid()` notices a
    lease older than its term from the clock and asks the store at once, and `confirm()` asks before every
    externally visible write (a checkpoint, a cached result, a published set)."""

    def __init__(self, jobs: JobStore, job_id: str, owner: str, lease_s: float):
        self.jobs, self.job_id, self.owner, self.lease_s = jobs, job_id, owner, lease_s
        self.lost = False
        self._renewed = time.monotonic()
        self._stop = threading.Event()
        context = contextvars.copy_context()  # its log lines carry the job's ids (jobs.logs) too
        self._thread = threading.Thread(
            target=context.run, args=(self._renew,), name=f"lease-{job_id[:8]}", daemon=True
        )

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _heartbeat(self) -> bool:
        renewed_at = time.monotonic()
        if self.jobs.heartbeat(self.job_id, self.owner, self.lease_s):
            self._renewed = renewed_at
        else:
            self.lost = True
        return not self.lost

    def valid(self) -> bool:
        if self.lost:
            return False
        if time.monotonic() - self._renewed > self.lease_s * 0.9:  # the renewals stopped for a while: ask now
            with contextlib.suppress(*TRANSIENT_ERRORS):
                return self._heartbeat()
        return True

    def confirm(self) -> None:
        """Raise `LeaseLost` unless this worker still holds the lease (checked against the store, now)."""
        if self.lost or not self._heartbeat():
            raise LeaseLost(f"job {self.job_id}: the lease moved to another worker")

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                if not self._heartbeat():
                    return
            except TRANSIENT_ERRORS:
                log.warning("job %s: cannot renew its lease (Redis unreachable); retrying", self.job_id)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_dead(owner: str | None) -> bool:
    """True when the lease holder was a process on this host that no longer runs (a killed pool process)."""
    if not owner or ":" not in owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    stat = Path(f"/proc/{pid}/stat")  # a killed child stays a zombie until its parent reaps it
    return stat.is_file() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z"
