"""Job records for the list tests, written straight into a job store (no job runs)."""

from __future__ import annotations

from jobs.model import Job, JobKind, JobStatus
from jobs.store import JobStore


def stored_jobs(jobs: JobStore, count: int, start: float = 1_700_000_000.0) -> list[Job]:
    """`count` records written straight into the store (no job runs): three kinds, every status, two clients, and
    creation times shared by runs of up to 7 jobs, so that the id has to break ties (also across index chunks)."""
    kinds, statuses, clients = list(JobKind), list(JobStatus), ["alpha", "beta", None]
    made = []
    for i in range(count):
        job = Job.new(
            kinds[i % 3],
            {"model": "m", "i": i},
            status=statuses[i % 5],
            client=clients[i % 4 % 3],
            created_at=start + (i // 7) * 0.25,
            dispatched=True,
        )
        jobs.create(job)
        made.append(job)
    return made
