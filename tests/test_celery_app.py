"""The Celery app's reliability settings, read back from the app a worker builds (in a process of its own, since
the module builds the app from the environment at import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO
from tests.harness import TEST_REDIS_URL

DUMP = """
import json
from workers.celery_app import CONDENSE, INITIALIZE, app
c = app.conf
print(json.dumps({
    "acks_late": c.task_acks_late, "reject_on_worker_lost": c.task_reject_on_worker_lost,
    "prefetch": c.worker_prefetch_multiplier, "visibility_timeout": c.broker_transport_options["visibility_timeout"],
    "routes": c.task_routes, "limits": {k: c.task_annotations[k] for k in (INITIALIZE, CONDENSE)},
    "max_tasks_per_child": c.worker_max_tasks_per_child, "max_memory_per_child": c.worker_max_memory_per_child,
    "soft_shutdown": c.worker_soft_shutdown_timeout, "ignore_result": c.task_ignore_result,
}))
"""


def test_long_gpu_jobs_are_acknowledged_late_routed_apart_and_time_limited():
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNGENE_")}
    env.update(LEARNGENE_REDIS_URL=TEST_REDIS_URL, LEARNGENE_INHERIT_SOFT_TIME_LIMIT_S="100",
               LEARNGENE_INHERIT_TIME_LIMIT_S="120", LEARNGENE_CONDENSE_SOFT_TIME_LIMIT_S="7000",
               LEARNGENE_CONDENSE_TIME_LIMIT_S="7200", LEARNGENE_WORKER_MAX_TASKS_PER_CHILD="7")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", DUMP], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    conf = json.loads(run.stdout)
    assert conf["acks_late"] and conf["reject_on_worker_lost"] and conf["prefetch"] == 1
    assert conf["visibility_timeout"] > 7200  # Redis never redelivers a job that is still within its time limit
    assert conf["routes"] == {"learngene.initialize": {"queue": "inherit"}, "learngene.condense": {"queue": "condense"}}
    assert conf["limits"] == {
        "learngene.initialize": {"soft_time_limit": 100, "time_limit": 120},
        "learngene.condense": {"soft_time_limit": 7000, "time_limit": 7200},
    }
    assert conf["max_tasks_per_child"] == 7 and conf["max_memory_per_child"] > 0 and conf["soft_shutdown"] > 0
    assert conf["ignore_result"]  # the job record is the service's own, not Celery's result backend
