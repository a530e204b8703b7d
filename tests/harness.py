"""Real processes for the service tests: a Celery worker and API servers, on a dedicated Redis database."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

REPO = Path(__file__).resolve().parents[1]
TEST_REDIS_URL = os.environ.get("LEARNGENE_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")  # dedicated test DB
ADMIN_TOKEN = "test-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flush_test_redis() -> None:
    redis.Redis.from_url(TEST_REDIS_URL).flushdb()


def service_env(home: Path, *, redis_url: str | None, data_roots: list[Path], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNGENE_")}
    env.update(
        LEARNGENE_STORE=str(home / "store"),
        LEARNGENE_ARTIFACTS=str(home / "artifacts"),
        LEARNGENE_WORK_DIR=str(home / "work"),
        LEARNGENE_DATA_ROOTS="[" + ",".join(f'"{p}"' for p in data_roots) + "]",
        LEARNGENE_ADMIN_TOKEN=ADMIN_TOKEN,
        # The quality card every condensation measures after publishing: a token budget, so that the tests of other
        # things stay quick (tests/test_cards.py checks the card itself).
        LEARNGENE_CARD_FIT_STEPS="3",
        LEARNGENE_CARD_TRAIN_SAMPLES="64",
        LEARNGENE_CARD_EVAL_SAMPLES="64",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    if redis_url:
        env["LEARNGENE_REDIS_URL"] = redis_url
    return env


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path
    url: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def stop(self, timeout: float = 30) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def _spawn(name: str, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    handle = open(log, "ab")  # noqa: SIM115 - the child owns it for its lifetime
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def start_worker(env: dict[str, str], log: Path, name: str = "worker", timeout: float = 90) -> Process:
    argv = [sys.executable, "-m", "celery", "-A", "workers.main", "worker", "-Q", "inherit,condense",
            "--concurrency", "1", "--loglevel", "INFO", "--hostname", f"{name}@%h",
            "--without-mingle", "--without-gossip"]  # fmt: skip
    proc = Process(name, _spawn(name, argv, env, log), log, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{name} exited:\n{proc.tail()}")
        if log.exists() and " ready." in log.read_text(errors="replace"):
            return proc
        time.sleep(0.3)
    proc.stop()
    raise TimeoutError(f"{name} not ready after {timeout} s:\n{proc.tail()}")


def start_api(env: dict[str, str], log: Path, timeout: float = 90, args: tuple[str, ...] = ()) -> Process:
    port = free_port()
    argv = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    proc = Process("api", _spawn("api", argv, env, log), log, url=f"http://127.0.0.1:{port}", env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"api exited:\n{proc.tail()}")
        try:
            if httpx.get(f"{proc.url}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.stop()
    raise TimeoutError(f"api not ready after {timeout} s:\n{proc.tail()}")


def wait_for(client: httpx.Client, url: str, done, timeout: float = 120, poll: float = 0.2, **kw) -> dict:
    """Poll `url` until `done(job)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(url, **kw).json()
        if done(job):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}: still {job.get('status')} after {timeout} s: {job}")
        time.sleep(poll)


def finished(job: dict) -> bool:
    return job["status"] in ("succeeded", "failed", "cancelled")


def start_redis(directory: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """A redis-server of the test's own with append-only persistence (fsync always), for restart tests."""
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
            "--logfile", str(directory / "redis.log")]  # fmt: skip
    proc = subprocess.Popen(argv, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if redis.Redis.from_url(url).ping():
                return proc, url
        except redis.exceptions.ConnectionError:
            time.sleep(0.1)
    raise TimeoutError(f"redis-server on port {port} did not start")


def kill_group(proc: Process | subprocess.Popen) -> None:
    """SIGKILL a process and everything it started (a worker with its pool): what an OOM killer or a pre-empted
    node does. Every process here is started in a session of its own."""
    popen = proc.popen if isinstance(proc, Process) else proc
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGKILL)
    popen.wait(10)


def lease_pid(job: dict, jobs_redis_url: str, prefix: str = "learngene") -> int:
    """The pid of the process holding a running job's lease (host:pid), read from the job record."""
    owner = redis.Redis.from_url(jobs_redis_url, decode_responses=True).hget(f"{prefix}:job:{job['id']}", "lease_owner")
    return int(owner.rpartition(":")[2])
