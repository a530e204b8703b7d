"""The job state machine, written once: each transition is a pure function from a job record to a `Move`.

A job moves queued -> running -> succeeded | failed | cancelled. A transition reads the record as it is and answers
an outcome and the fields to change; it never writes. Each store applies a move atomically in its own way (the
memory store under its lock, the Redis store in a WATCH/MULTI transaction that re-runs the function if the record
changed meanwhile), and keeps its indexes (status counts, the running set, a client's active set) from the status
change alone (`index_effects`). So the two stores cannot drift: there is one set of rules, and
`tests/service/test_job_stores.py` runs the same scenarios against both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobs.model import REDELIVERY, TERMINAL, Job, JobError, JobProgress, JobStatus


@dataclass(frozen=True)
class Move:
    outcome: str
    changes: dict[str, Any] = field(default_factory=dict)  # Job field -> new value

    @property
    def ends(self) -> bool:
        """The move takes the job to a terminal status (its durations are recorded then)."""
        status = self.changes.get("status")
        return status is not None and JobStatus(status).value in TERMINAL


def exhausted_error(max_attempts: int) -> JobError:
    return JobError(
        type="AttemptsExhausted",
        message=f"gave up after {max_attempts} attempts: the job was interrupted every time (worker lost or killed)",
    )


def claim(job: Job | None, *, now: float, owner: str, lease_s: float, takeover: bool) -> Move:
    """Start (or restart) a job under a lease: outcome claimed | busy | cancelled | exhausted | terminal | missing."""
    if job is None:
        return Move("missing")
    if job.terminal:
        return Move("terminal")
    if job.cancel_requested:
        return Move("cancelled", {"status": JobStatus.cancelled, "finished_at": now})
    held = job.lease_owner not in (None, owner, REDELIVERY) and (job.lease_until or 0) > now
    if job.status == JobStatus.running and held and not takeover:
        return Move("busy")
    attempts = job.attempts + 1
    if attempts > job.max_attempts:
        error = exhausted_error(job.max_attempts)
        return Move("exhausted", {"attempts": attempts, "status": JobStatus.failed, "finished_at": now, "error": error})
    changes: dict[str, Any] = {"attempts": attempts, "lease_owner": owner, "lease_until": now + lease_s}
    if job.status == JobStatus.queued:
        changes |= {"status": JobStatus.running, "started_at": now}
    return Move("claimed", changes)


def heartbeat(job: Job | None, *, now: float, owner: str, lease_s: float) -> Move:
    if job is None or job.status != JobStatus.running or job.lease_owner != owner:
        return Move("lost")
    return Move("renewed", {"lease_until": now + lease_s})


def report_progress(job: Job | None, *, progress: JobProgress) -> Move:
    if job is None or job.status != JobStatus.running:
        return Move("ignored")
    return Move("updated", {"progress": progress})


def request_cancel(job: Job | None, *, now: float) -> Move:
    """A queued job is cancelled at once; a running one is flagged and stops at its next step."""
    if job is None:
        return Move("missing")
    if job.terminal:
        return Move("terminal")
    if job.status == JobStatus.queued:
        return Move("cancelled", {"cancel_requested": True, "status": JobStatus.cancelled, "finished_at": now})
    return Move("flagged", {"cancel_requested": True})


def finish(
    job: Job | None, *, now: float, status: JobStatus, result: dict | None, error: JobError | None, owner: str | None
) -> Move:
    """To a terminal status; with `owner`, only while that owner holds the lease."""
    if job is None or job.terminal or (owner is not None and job.lease_owner != owner):
        return Move("refused")
    return Move("finished", {"status": JobStatus(status), "finished_at": now, "result": result, "error": error})


def release_files(job: Job | None, *, now: float) -> Move:
    """A succeeded job's client is done with its files: they stop counting against its quota, downloads answer 410,
    and the retention sweep removes each file no other job still names. Releasing twice changes nothing."""
    if job is None:
        return Move("missing")
    if job.status != JobStatus.succeeded or not job.result:
        return Move("not_succeeded")
    if job.result.get("released_at") is not None:
        return Move("released")
    return Move("released", {"result": {**job.result, "released_at": now}})


def take_redelivery(job: Job | None, *, now: float, grace_s: float) -> Move:
    """Reserve one redelivery (one reaper wins): a running job whose lease ran out gets `grace_s` to be claimed by
    whoever receives it; a queued job never handed to the broker is marked handed."""
    if job is None or job.terminal:
        return Move("refused")
    if job.status == JobStatus.running:
        if (job.lease_until or 0) >= now:
            return Move("refused")
        return Move("reserved", {"lease_owner": REDELIVERY, "lease_until": now + grace_s, "dispatched": True})
    if job.dispatched:
        return Move("refused")
    return Move("reserved", {"dispatched": True})


def index_effects(before: JobStatus, after: JobStatus) -> dict[str, bool]:
    """What a status change does to a store's indexes: the running set (what the reaper watches) and the client's
    active set (per-token quotas); the status counts follow `before` -> `after`."""
    return {
        "enter_running": after == JobStatus.running and before != JobStatus.running,
        "leave_running": before == JobStatus.running and after != JobStatus.running,
        "ended": after.value in TERMINAL and before.value not in TERMINAL,  # leaves the active set, gets its TTL
    }
