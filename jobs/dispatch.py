"""How an accepted job reaches a worker: the `Dispatcher` interface, the broker contract (task names and queues that
the API sends and the Celery workers consume: `workers.celery_app` implements the Celery side), and the embedded
in-process executor."""

from __future__ import annotations

import abc
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from jobs.job_processes import JobProcesses
from jobs.logs import log_context
from jobs.model import Job, JobKind
from jobs.runner import WorkerContext

log = logging.getLogger(__name__)

# One task per job kind; each queue gets workers of its own, so an hours-long condensation never holds up the short
# initializations. The task's only argument is the job id: everything else is in the job record.
# A card trains a dozen small models for minutes: it shares the condense queue's workers and time limits.
TASKS = {
    JobKind.initialization: "learngene.initialize",
    JobKind.condensation: "learngene.condense",
    JobKind.card: "learngene.card",
}
QUEUES = {JobKind.initialization: "inherit", JobKind.condensation: "condense", JobKind.card: "condense"}


class Dispatcher(abc.ABC):
    @abc.abstractmethod
    def submit(self, job: Job) -> None:
        """Hand the job to whatever runs it; may be called again for the same job (redelivery)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class EmbeddedDispatcher(Dispatcher):
    """Runs jobs beside the API, through the same `run_job` as the Celery workers, each in a process of its own
    (`jobs.job_processes`) so that a cancel or a deadline ends it within `stop_grace_s`; `threads` jobs at once.
    For a single machine and development: jobs do not survive a restart of the API.

    A job process that dies before recording an outcome (killed, out of memory) is run again, as a Celery worker
    lost would be; its attempts count, up to `max_attempts`."""

    def __init__(self, context: WorkerContext, threads: int = 1):
        self._jobs, self._runs = context.jobs, context.settings.max_attempts + 1  # the last claim records exhaustion
        self._processes = JobProcesses(context.settings, context.jobs)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="learngene-job")
        self._closed = threading.Event()

    def submit(self, job: Job) -> None:
        self._pool.submit(self._run, job.id)

    def _run(self, job_id: str) -> None:
        with log_context(job_id=job_id):
            try:
                for _ in range(self._runs):
                    if self._closed.is_set():  # the API is stopping: embedded jobs end with it
                        return
                    status = self._processes.run(job_id)
                    job = self._jobs.get(job_id)
                    if status == 0 or job is None or job.terminal:
                        return
                    log.warning(
                        "job %s: its process ended (exit %s) before the job did; running it again", job_id, status
                    )
            except Exception:  # keep the thread alive for the next one
                log.exception("embedded job %s could not be run", job_id)

    def close(self) -> None:
        self._closed.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._processes.close()
