"""The workers' liveness check (the images' HEALTHCHECK): a real Celery worker process touches its heartbeat file on
its timer, and `python -m workers.heartbeat` tells a fresh file (exit 0) from a stale or missing one (exit 1), here
by freezing the worker with SIGSTOP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from jobs.settings import Settings
from tests.support.harness import (
    REPO,
    TEST_REDIS_URL,
    flush_test_redis,
    free_port,
    kill_group,
    service_env,
    start_redis,
    start_worker,
)
from workers.celery_app import create_celery

INTERVAL_S = 0.5
MAX_AGE_S = 3.0


def check(heartbeat: Path, max_age_s: float = MAX_AGE_S) -> subprocess.CompletedProcess:
    """The images' health check command, run as Docker runs it (the file named by the environment)."""
    env = {**os.environ, "LEARNGENE_WORKER_HEARTBEAT_FILE": str(heartbeat)}
    argv = [sys.executable, "-m", "workers.heartbeat", "--max-age", str(max_age_s)]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=30)


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


def test_heartbeat_of_a_real_worker(tmp_path):
    flush_test_redis()
    heartbeat = tmp_path / "worker.heartbeat"
    env = service_env(
        tmp_path,
        redis_url=TEST_REDIS_URL,
        data_roots=[tmp_path],
        LEARNGENE_WORKER_HEARTBEAT_FILE=str(heartbeat),
        LEARNGENE_WORKER_HEARTBEAT_INTERVAL_S=str(INTERVAL_S),
    )
    assert check(heartbeat).returncode == 1  # no worker, no file: unhealthy
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        assert heartbeat.exists(), worker.tail()
        # Refreshed on the timer: the modification time moves on, several times.
        mtimes: set[int] = set()

        def beats_seen() -> int:
            mtimes.add(heartbeat.stat().st_mtime_ns)
            return len(mtimes)

        wait_until(lambda: beats_seen() >= 4, timeout=10 * INTERVAL_S + 5, what="three more heartbeats")
        fresh = check(heartbeat)
        assert fresh.returncode == 0, fresh.stdout + fresh.stderr
        assert fresh.stdout.startswith("healthy")

        # A frozen main process beats no more: within max-age (plus the check's own start-up) the check fails.
        os.kill(worker.popen.pid, signal.SIGSTOP)
        try:
            stopped_at = heartbeat.stat().st_mtime_ns
            wait_until(lambda: check(heartbeat).returncode == 1, timeout=MAX_AGE_S + 10, what="stale heartbeat")
            assert heartbeat.stat().st_mtime_ns == stopped_at  # nothing touched it while the worker was stopped
            stale = check(heartbeat)
            assert stale.returncode == 1 and stale.stdout.startswith("unhealthy: last heartbeat"), stale.stdout
        finally:
            os.kill(worker.popen.pid, signal.SIGCONT)
        # Resumed, it beats again and is healthy within one interval or so.
        wait_until(lambda: check(heartbeat).returncode == 0, timeout=10, what="healthy again after SIGCONT")
    finally:
        worker.stop()
    assert worker.popen.returncode is not None
    assert not heartbeat.exists()  # a worker that stopped leaves no heartbeat behind
    gone = check(heartbeat)
    assert gone.returncode == 1 and "no heartbeat" in gone.stdout


def test_no_heartbeat_while_the_broker_is_unreachable(tmp_path):
    """The beats stop while the worker cannot reach Redis (its main loop sits in the consumer's reconnect), and come
    back once Redis does: unhealthy means "not consuming", as `celery inspect ping` would say, without the ping."""
    port = free_port()
    redis_proc, redis_url = start_redis(tmp_path / "redis", port)
    heartbeat = tmp_path / "worker.heartbeat"
    env = service_env(
        tmp_path,
        redis_url=redis_url,
        data_roots=[tmp_path],
        LEARNGENE_WORKER_HEARTBEAT_FILE=str(heartbeat),
        LEARNGENE_WORKER_HEARTBEAT_INTERVAL_S=str(INTERVAL_S),
    )
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        wait_until(lambda: check(heartbeat, 2).returncode == 0, timeout=10, what="healthy")
        kill_group(redis_proc)
        wait_until(lambda: check(heartbeat, 2).returncode == 1, timeout=20, what="stale with Redis down")
        redis_proc, _ = start_redis(tmp_path / "redis", port)
        wait_until(lambda: check(heartbeat, 2).returncode == 0, timeout=30, what="healthy again with Redis back")
    finally:
        worker.stop()
        kill_group(redis_proc)


def test_no_heartbeat_step_unless_a_file_is_configured(tmp_path):
    def step_names(settings: Settings) -> set[str]:
        return {step.__name__ for step in create_celery(settings).steps["worker"]}

    assert "Heartbeat" not in step_names(Settings(redis_url=TEST_REDIS_URL))
    assert "Heartbeat" in step_names(Settings(redis_url=TEST_REDIS_URL, worker_heartbeat_file=tmp_path / "hb"))


def test_check_needs_a_file_to_read(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LEARNGENE_WORKER_HEARTBEAT_FILE"}
    result = subprocess.run(
        [sys.executable, "-m", "workers.heartbeat"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and "LEARNGENE_WORKER_HEARTBEAT_FILE" in result.stderr
