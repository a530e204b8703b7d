"""The Celery adapter: the application (`create_celery`; `workers.main` builds the worker's), its tasks, the
dispatcher the API sends with, and the reaper every worker's main process runs.

Settings for long GPU jobs that must not be lost:
- late acknowledgement, and rejection (requeue) when the process running a task dies: a SIGKILLed or OOM-killed
  job is delivered again; the job record counts attempts and fails the job past `max_attempts`;
- prefetch of one: a worker holds no job it is not running;
- a visibility timeout longer than the longest job, so Redis never redelivers a job that is still running;
- soft and hard time limits per queue; recycling of worker processes after N jobs or M KiB of memory;
- a soft shutdown on SIGTERM (with REMAP_SIGTERM=SIGQUIT): running jobs get `worker_soft_shutdown_s` to finish,
  then are requeued;
- no CUDA in the parent: the device is chosen inside the task, in the forked child.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from celery import Celery, bootsteps
from celery.signals import (
    celeryd_after_setup,
    celeryd_init,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_ready,
)
from kombu import Queue

from jobs.dispatch import QUEUES, TASKS, Dispatcher
from jobs.logs import configure_logging, log_context, resolve_format
from jobs.model import Job, JobKind
from jobs.reaper import Reaper
from jobs.redis_store import RedisJobStore
from jobs.runner import WorkerContext, run_job
from jobs.settings import Settings, get_settings
from jobs.storage import artifacts, template_store
from workers.heartbeat import beat
from workers.webhooks import Deliverer

log = logging.getLogger(__name__)
# The message header that carries the submitting request's id to the worker (the job id is the task's argument).
REQUEST_ID_HEADER = "learngene_request_id"


def create_celery(settings: Settings) -> Celery:
    """The Celery application for `settings`, with the job tasks registered. Building it connects to nothing: the
    API uses it only to send, the worker (`workers.main`) to consume."""
    if not settings.redis_url:
        raise RuntimeError("LEARNGENE_REDIS_URL is not set: the Celery workers need Redis")
    app = Celery("learngene", broker=settings.redis_url)
    limits = {
        JobKind.initialization: (settings.inherit_soft_time_limit_s, settings.inherit_time_limit_s),
        JobKind.condensation: (settings.condense_soft_time_limit_s, settings.condense_time_limit_s),
        JobKind.card: (settings.condense_soft_time_limit_s, settings.condense_time_limit_s),
    }
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # job records live in the service's own Redis keys
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(name) for name in sorted(set(QUEUES.values()))],
        task_default_queue=QUEUES[JobKind.initialization],
        task_routes={TASKS[kind]: {"queue": queue} for kind, queue in QUEUES.items()},
        task_annotations={
            TASKS[kind]: {"soft_time_limit": soft, "time_limit": hard} for kind, (soft, hard) in limits.items()
        },
        worker_max_tasks_per_child=settings.worker_max_tasks_per_child,
        worker_max_memory_per_child=settings.worker_max_memory_per_child_kb,
        worker_soft_shutdown_timeout=settings.worker_soft_shutdown_s,
        worker_enable_soft_shutdown_on_idle=True,
        worker_send_task_events=True,  # for flower
        broker_connection_retry=True,
        broker_connection_max_retries=None,  # a worker waits out a Redis restart instead of exiting
        # Publishing fails fast when Redis is down, so the API can answer 503 instead of hanging.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1},
    )
    for name in TASKS.values():
        app.task(name=name)(run_task)
    if settings.worker_heartbeat_file is not None:
        app.steps["worker"].add(heartbeat_step(settings.worker_heartbeat_file, settings.worker_heartbeat_interval_s))
    return app


def heartbeat_step(path: Path, interval_s: float) -> type[bootsteps.StartStopStep]:
    """A worker bootstep that touches `path` (`workers.heartbeat`) every `interval_s` seconds from the worker's main
    process, on the worker's own timer: it beats while that process's event loop turns, whatever its pool children
    are doing. The file is removed when the worker stops."""

    class Heartbeat(bootsteps.StartStopStep):
        requires = ("celery.worker.components:Timer",)

        def __init__(self, worker: object, **kwargs: object) -> None:
            super().__init__(worker, **kwargs)
            self.timer_entry = None

        def start(self, worker: Any) -> None:  # celery.worker.WorkController
            beat(path)
            self.timer_entry = worker.timer.call_repeatedly(interval_s, beat, (path,), priority=10)

        def stop(self, worker: Any) -> None:
            if self.timer_entry is not None:
                self.timer_entry.cancel()
            path.unlink(missing_ok=True)

    return Heartbeat


def run_task(job_id: str) -> None:
    """Every job task: run the job the message names, in this (forked) worker process."""
    run_job(job_id, worker_context())


@lru_cache(maxsize=1)
def worker_context() -> WorkerContext:
    """Built on first use inside the worker process: Redis connections and caches are never shared across a fork.
    In a prefork pool process a job that does not stop when told to ends its process (Celery starts another); in
    the main process of a solo or threads pool it must not."""
    settings = get_settings()
    jobs = RedisJobStore.from_settings(settings)
    return WorkerContext(
        settings=settings,
        jobs=jobs,
        store=template_store(settings),
        artifacts=artifacts(settings),
        own_process=_pool_process.is_set(),
    )


_pool_process = threading.Event()


@worker_process_init.connect
def mark_pool_process(**_: object) -> None:
    """Sent in each prefork pool process only, after the fork."""
    _pool_process.set()


class CeleryDispatcher(Dispatcher):
    """Sends a job to the Celery workers: the task of its kind, on that kind's queue."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    def submit(self, job: Job) -> None:
        headers = {REQUEST_ID_HEADER: job.request_id} if job.request_id else None
        self._app.send_task(TASKS[job.kind], args=[job.id], queue=QUEUES[job.kind], headers=headers)


# Logging. Celery's own set-up is replaced by `jobs.logs` (a `setup_logging` receiver turns it off), so the worker's
# lines, Celery's included, are JSON or text like the API's.


@setup_logging.connect
def use_learngene_logging(loglevel: int | str | None = None, logfile: str | None = None, **_: object) -> None:
    """Runs in the worker's main process and again in each pool process."""
    configure_logging(get_settings().log_format, loglevel or "INFO", filename=logfile or None)


@celeryd_init.connect
def early_logging_and_no_text_banner(sender: str | None = None, instance: object = None, options=None, **_) -> None:
    """Logging from the start: Celery's start-up checks warn (running as root, say) before `setup_logging`. And
    Celery prints its banner as text on stdout: with JSON logs it becomes one log line instead."""
    options = options or {}
    use_learngene_logging(options.get("loglevel"), options.get("logfile"))
    if instance is not None and resolve_format(get_settings().log_format) == "json":
        instance.quiet = True


@celeryd_after_setup.connect
def banner_as_a_line(sender: str | None = None, instance: object = None, **_: object) -> None:
    if getattr(instance, "quiet", False) and resolve_format(get_settings().log_format) == "json":
        with contextlib.suppress(Exception):  # best effort, as Celery's own banner
            log.info("%s starting\n%s", sender, instance.startup_info(artlines=False))


_task_log_contexts: dict[str, contextlib.ExitStack] = {}


@task_prerun.connect
def enter_job_context(task_id: str | None = None, task: object = None, args: tuple = (), **_: object) -> None:
    """Celery's own lines about the task (started, succeeded in N s) carry the job's ids too."""
    if task_id is None or not args:
        return
    stack = contextlib.ExitStack()
    request_id = getattr(getattr(task, "request", None), REQUEST_ID_HEADER, None)
    stack.enter_context(log_context(job_id=str(args[0]), request_id=request_id))
    _task_log_contexts[task_id] = stack


@task_postrun.connect
def leave_job_context(task_id: str | None = None, **_: object) -> None:
    stack = _task_log_contexts.pop(task_id, None) if task_id is not None else None
    if stack is not None:
        stack.close()


@worker_ready.connect
def start_reaper(sender: object = None, **_: object) -> None:
    """The worker's main process redelivers jobs of workers that died (see jobs.reaper) and sends the webhooks'
    deliveries (workers.webhooks), over a Redis client of the main process's own: the pool processes build theirs
    after the fork (`worker_context`)."""
    settings = get_settings()
    app = getattr(sender, "app", None) or create_celery(settings)
    jobs = RedisJobStore.from_settings(settings)
    Reaper(jobs, CeleryDispatcher(app), settings).start()
    Deliverer(jobs.webhooks, settings).start()
