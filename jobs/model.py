"""Job records as the service sees them: kinds, statuses, progress, errors, and one job's whole record.

A job moves queued -> running -> succeeded | failed | cancelled, by the transitions in `jobs.transitions`.
"""

from __future__ import annotations

import enum
import time
import uuid
from typing import Any

from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Errors of an unreachable Redis: a worker rides them out instead of failing its job.
TRANSIENT_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)
# Lease owner while a reaper's redelivery is on its way: free to claim, not to re-send.
REDELIVERY = "redelivery"
# Histogram buckets (seconds for durations, steps/s for rates): wide enough for CPU tests and GPU condensations.
BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600)


class JobKind(str, enum.Enum):
    initialization = "initialization"
    condensation = "condensation"
    card = "card"  # a template set's quality card (re)measured


class JobStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


STATUSES = tuple(status.value for status in JobStatus)
TERMINAL = frozenset({JobStatus.succeeded.value, JobStatus.failed.value, JobStatus.cancelled.value})


class JobProgress(BaseModel):
    phase: str | None = Field(default=None, description="what the job is doing (jobs.phases); null in old records")
    step: int = Field(
        description="of the phase's own steps; a phase without steps (exporting, publishing) shows the last counts"
    )
    total_steps: int
    loss: float | None = None
    accuracy: float | None = None
    images_per_s: float | None = None
    eta_s: float | None = Field(default=None, description="seconds the whole job has left (jobs.phases.whole_eta)")
    phase_eta_s: float | None = Field(default=None, description="seconds the current phase's steps have left")
    updated_at: float = Field(default_factory=time.time)


class JobError(BaseModel):
    type: str
    message: str


class Job(BaseModel):
    id: str
    kind: JobKind
    status: JobStatus = JobStatus.queued
    request: dict[str, Any]
    template_set: dict[str, Any] | None = None  # the resolved (name, version, digest) the job was accepted with
    # caveats known at acceptance (learngene.quality.caveats)
    warnings: list[dict[str, Any]] = Field(default_factory=list)
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    max_attempts: int = 3
    progress: JobProgress | None = None
    result: dict[str, Any] | None = None
    error: JobError | None = None
    cancel_requested: bool = False
    dispatched: bool = False  # handed to the broker (or reserved for a redelivery): the reaper need not send it
    idempotency_key: str | None = None
    client: str | None = None  # the client token's name (never the token) when client tokens are configured
    request_id: str | None = None  # the X-Request-ID of the submission: the job's log lines carry it (jobs.logs)
    lease_owner: str | None = None
    lease_until: float | None = None

    @classmethod
    def new(cls, kind: JobKind, request: dict[str, Any], **fields: Any) -> Job:
        return cls(id=uuid.uuid4().hex, kind=kind, request=request, **fields)

    @property
    def terminal(self) -> bool:
        return self.status.value in TERMINAL


class Claim(BaseModel):
    """What a worker learns when it tries to start a job."""

    outcome: str  # claimed | busy (another live worker holds it) | cancelled | exhausted | terminal | missing
    job: Job | None = None
