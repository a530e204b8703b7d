"""The Celery app's reliability settings, read back from the application `create_celery` builds (building it
connects to nothing)."""

from __future__ import annotations

from jobs.dispatch import TASKS
from jobs.settings import Settings
from tests.support.harness import TEST_REDIS_URL
from workers.celery_app import create_celery


def test_long_gpu_jobs_are_acknowledged_late_routed_apart_and_time_limited():
    settings = Settings(
        redis_url=TEST_REDIS_URL,
        inherit_soft_time_limit_s=100,
        inherit_time_limit_s=120,
        condense_soft_time_limit_s=7000,
        condense_time_limit_s=7200,
        worker_max_tasks_per_child=7,
    )
    app = create_celery(settings)
    c = app.conf
    assert c.task_acks_late and c.task_reject_on_worker_lost and c.worker_prefetch_multiplier == 1
    assert c.broker_transport_options["visibility_timeout"] > 7200  # never redelivered within its time limit
    assert c.task_routes == {"learngene.initialize": {"queue": "inherit"}, "learngene.condense": {"queue": "condense"},
                             "learngene.card": {"queue": "condense"}}  # fmt: skip
    assert {name: c.task_annotations[name] for name in TASKS.values()} == {
        "learngene.initialize": {"soft_time_limit": 100, "time_limit": 120},
        "learngene.condense": {"soft_time_limit": 7000, "time_limit": 7200},
        "learngene.card": {"soft_time_limit": 7000, "time_limit": 7200},
    }
    assert c.worker_max_tasks_per_child == 7 and c.worker_max_memory_per_child > 0
    assert c.worker_soft_shutdown_timeout > 0
    assert c.task_ignore_result  # the job record is the service's own, not Celery's result backend
    assert set(TASKS.values()) <= set(app.tasks)  # every job task is registered
