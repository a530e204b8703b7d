"""A job's life as a sequence of events (`GET .../{id}/events`, Server-Sent Events), read off its record.

Every event has an id that orders it and survives a reconnection: the millisecond it happened (from the record's
own times) and its place among that moment's events. A client that reconnects with `Last-Event-ID` gets only what
came after. Progress is the record's latest (a reader that polls sees the newest report, not every one); the
final `end` event comes last, then the stream closes. Pure: the route polls the store and sends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from jobs.model import Job
from jobs.phases import shown_phase

EVENT_ID = re.compile(r"([0-9]{1,15})-([0-9]{1,4})")
# A moment's events in this order: its status, then its warnings, then progress, then the end.
STATUS, WARNING, PROGRESS, END = 0, 1, 5000, 9999


@dataclass(frozen=True, order=True)
class EventId:
    ms: int
    n: int

    def __str__(self) -> str:
        return f"{self.ms}-{self.n}"

    @classmethod
    def parse(cls, text: str | None) -> EventId | None:
        """A Last-Event-ID this service sent; None (start from the beginning) for anything else."""
        match = EVENT_ID.fullmatch(text.strip()) if text else None
        return cls(int(match[1]), int(match[2])) if match else None


@dataclass(frozen=True)
class JobEvent:
    id: EventId
    event: str  # status | warning | progress | end
    data: dict[str, Any]


def _ms(epoch_s: float) -> int:
    return int(epoch_s * 1000)


def job_events(job: Job) -> list[JobEvent]:
    """Everything the record shows happened, in order."""
    created = _ms(job.created_at)
    out = [JobEvent(EventId(created, STATUS), "status", {"status": "queued", "phase": "queued"})]
    known = []
    for i, warning in enumerate(job.warnings):
        out.append(JobEvent(EventId(created, WARNING + i), "warning", warning))
        known.append(warning)
    if job.started_at is not None:
        phase = shown_phase(job.kind, "running", None)
        out.append(JobEvent(EventId(_ms(job.started_at), STATUS), "status", {"status": "running", "phase": phase}))
    if job.progress is not None:
        progress = job.progress.model_dump()
        out.append(JobEvent(EventId(_ms(job.progress.updated_at), PROGRESS), "progress", progress))
    if job.terminal:
        ended = _ms(job.finished_at or job.created_at)
        out.append(JobEvent(EventId(ended, STATUS), "status", {"status": job.status.value, "phase": None}))
        later = [w for w in (job.result or {}).get("warnings", []) if w not in known]
        out += [JobEvent(EventId(ended, WARNING + i), "warning", w) for i, w in enumerate(later)]
        end = {"status": job.status.value, "error": job.error.model_dump() if job.error else None}
        out.append(JobEvent(EventId(ended, END), "end", end))
    return sorted(out, key=lambda e: e.id)
