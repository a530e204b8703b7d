"""The Celery application: `celery -A workers.celery_app worker -Q inherit,condense` (or `learngene worker`).

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

from functools import lru_cache

from celery import Celery
from celery.signals import worker_ready
from kombu import Queue

from workers.config import Settings, get_settings
from workers.jobs import RedisJobStore
from workers.tasks import WorkerContext, run_job

INITIALIZE, CONDENSE = "learngene.initialize", "learngene.condense"
QUEUES = {INITIALIZE: "inherit", CONDENSE: "condense"}


def create_celery(settings: Settings) -> Celery:
    if not settings.redis_url:
        raise RuntimeError("LEARNGENE_REDIS_URL is not set: the Celery workers need Redis")
    app = Celery("learngene", broker=settings.redis_url)
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
        task_default_queue="inherit",
        task_routes={name: {"queue": queue} for name, queue in QUEUES.items()},
        task_annotations={
            INITIALIZE: {
                "soft_time_limit": settings.inherit_soft_time_limit_s,
                "time_limit": settings.inherit_time_limit_s,
            },
            CONDENSE: {
                "soft_time_limit": settings.condense_soft_time_limit_s,
                "time_limit": settings.condense_time_limit_s,
            },
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
    return app


app = create_celery(get_settings())


@lru_cache(maxsize=1)
def worker_context() -> WorkerContext:
    """Built on first use inside the worker process: Redis connections and caches are never shared across a fork."""
    from templates_store import TemplateStore

    settings = get_settings()
    store = TemplateStore.open(settings.store, cache_size=settings.store_cache_size)
    return WorkerContext(settings=settings, jobs=job_store(settings), store=store)


def job_store(settings: Settings) -> RedisJobStore:
    return RedisJobStore.from_url(
        settings.redis_url,
        prefix=settings.redis_prefix,
        job_ttl_s=settings.job_ttl_s,
        idempotency_ttl_s=settings.idempotency_ttl_s,
    )


@worker_ready.connect
def start_reaper(**_: object) -> None:
    """The worker's main process redelivers jobs of workers that died (see workers.reaper). It gets a Redis client of
    its own: the pool processes build theirs after the fork (`worker_context`)."""
    from workers.dispatch import CeleryDispatcher
    from workers.reaper import Reaper

    Reaper(job_store(get_settings()), CeleryDispatcher(), get_settings()).start()


@app.task(name=INITIALIZE)
def initialize_task(job_id: str) -> None:
    run_job(job_id, worker_context())


@app.task(name=CONDENSE)
def condense_task(job_id: str) -> None:
    run_job(job_id, worker_context())
