"""How an accepted job reaches a worker: Celery over Redis, or the embedded in-process executor."""

from __future__ import annotations

import abc
import logging
from concurrent.futures import ThreadPoolExecutor

from workers.jobs import Job, JobKind
from workers.tasks import WorkerContext, run_job

log = logging.getLogger(__name__)


class Dispatcher(abc.ABC):
    @abc.abstractmethod
    def submit(self, job: Job) -> None:
        """Hand the job to whatever runs it; may be called again for the same job (redelivery)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class CeleryDispatcher(Dispatcher):
    def __init__(self) -> None:
        from workers.celery_app import CONDENSE, INITIALIZE, app

        self._app = app
        self._tasks = {JobKind.initialization: INITIALIZE, JobKind.condensation: CONDENSE}

    def submit(self, job: Job) -> None:
        self._app.send_task(self._tasks[job.kind], args=[job.id])


class EmbeddedDispatcher(Dispatcher):
    """Runs jobs in background threads of the API process, through the same `run_job` as the Celery workers.
    For a single machine and development: jobs do not survive a restart of the process."""

    def __init__(self, context: WorkerContext, threads: int = 1):
        self._context = context
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="learngene-job")

    def submit(self, job: Job) -> None:
        self._pool.submit(self._run, job.id)

    def _run(self, job_id: str) -> None:
        try:
            run_job(job_id, self._context)
        except Exception:  # already recorded on the job; keep the thread alive for the next one
            log.exception("embedded job %s crashed", job_id)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
