"""Real processes for the service tests: Celery workers, API servers and redis-servers, on this xdist worker's own
Redis database, with waits stretched by the test patience (tests.support.scale)."""

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
from urllib.parse import urlsplit, urlunsplit

import httpx
import redis

from tests.support.scale import patient

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "test-admin-token"
# Every xdist worker (gw0, gw1, ...) gets a database of its own, counted up from the base (8 unless
# LEARNGENE_TEST_REDIS_URL names another): its Celery queues, job records and flushes touch nobody else's.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


def _worker_database(base_url: str, worker: str) -> str:
    parts = urlsplit(base_url)
    database = int(parts.path.strip("/") or 0) + int(worker.removeprefix("gw"))
    if database > 15:
        raise RuntimeError(f"xdist worker {worker} would use Redis database {database}: run fewer workers (-n)")
    return urlunsplit(parts._replace(path=f"/{database}"))


TEST_REDIS_URL = _worker_database(os.environ.get("LEARNGENE_TEST_REDIS_URL", "redis://127.0.0.1:6379/8"), XDIST_WORKER)
# Threads of each test process that trains (this one, and every server it starts): the cores shared by the xdist
# workers, so that parallel processes do not oversubscribe them.
TORCH_THREADS = max(1, (os.cpu_count() or 1) // XDIST_WORKERS)
THREAD_ENV = {"OMP_NUM_THREADS": str(TORCH_THREADS), "MKL_NUM_THREADS": str(TORCH_THREADS)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_size(log: Path) -> int:
    """Where the lines of a server about to start will begin in its (appended) log."""
    return log.stat().st_size if log.exists() else 0


def lost_port_race(log: Path, since: int = 0) -> bool:
    """The server logging from byte `since` on could not bind: another process took its port between `free_port()`
    and its bind."""
    if not log.exists():
        return False
    with open(log, "rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace").lower()
    return "address already in use" in text or "[errno 98]" in text


def flush_test_redis() -> None:
    redis.Redis.from_url(TEST_REDIS_URL).flushdb()


def service_env(home: Path, *, redis_url: str | None, data_roots: list[Path], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNGENE_")}
    env.update(
        LEARNGENE_STORE=str(home / "store"),
        LEARNGENE_ARTIFACTS=str(home / "artifacts"),
        LEARNGENE_WORK_DIR=str(home / "work"),
        LEARNGENE_SIGNING_KEY=str(home / "signing-key.pem"),
        LEARNGENE_DATA_ROOTS="[" + ",".join(f'"{p}"' for p in data_roots) + "]",
        LEARNGENE_ADMIN_TOKEN=ADMIN_TOKEN,
        # The quality card every condensation measures after publishing: a token budget, so that the tests of other
        # things stay quick (tests/service/test_cards.py checks the card itself).
        LEARNGENE_CARD_FIT_STEPS="3",
        LEARNGENE_CARD_TRAIN_SAMPLES="64",
        LEARNGENE_CARD_EVAL_SAMPLES="64",
        # A job waiting out an outage the test made retries every 2 s at most: it goes on soon after the outage.
        LEARNGENE_RETRY_BACKOFF_MAX_S="2",
        # A job told to stop that does not reach a stop check is ended with its process after 2 s.
        LEARNGENE_STOP_GRACE_S="2",
        PYTHONUNBUFFERED="1",
        **THREAD_ENV,
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
    deadline = time.monotonic() + patient(timeout)
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{name} exited:\n{proc.tail()}")
        if log.exists() and " ready." in log.read_text(errors="replace"):
            return proc
        time.sleep(0.3)
    proc.stop()
    raise TimeoutError(f"{name} not ready after {patient(timeout)} s:\n{proc.tail()}")


def start_api(
    env: dict[str, str], log: Path, timeout: float = 90, args: tuple[str, ...] = (), *, port_from_env: bool = False
) -> Process:
    """`learngene serve` on a free port, once it answers /readyz; on another port if it lost the one it was given
    to another process. `port_from_env`: the port is given as LEARNGENE_PORT, not --port."""
    for _ in range(5):
        port, since = free_port(), log_size(log)
        argv = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", *args]
        if port_from_env:
            env = {**env, "LEARNGENE_PORT": str(port)}
        else:
            argv += ["--port", str(port)]
        proc = Process("api", _spawn("api", argv, env, log), log, url=f"http://127.0.0.1:{port}", env=env)
        if _until_ready(proc, patient(timeout), since):
            return proc
    raise RuntimeError(f"api lost five port races in a row:\n{proc.tail()}")


def _until_ready(proc: Process, timeout: float, since: int) -> bool:
    """True once the API answers /readyz; False if it lost its port (its lines start at `since`); raises if it
    failed otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            if lost_port_race(proc.log, since):
                return False
            raise RuntimeError(f"api exited:\n{proc.tail()}")
        try:
            if httpx.get(f"{proc.url}/readyz", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.stop()
    raise TimeoutError(f"api not ready after {timeout} s:\n{proc.tail()}")


def wait_for(client: httpx.Client, url: str, done, timeout: float = 120, poll: float = 0.2, **kw) -> dict:
    """Poll `url` until `done(job)` holds; past `timeout` (stretched by the test patience) the job is hung."""
    deadline = time.monotonic() + patient(timeout)
    while True:
        job = client.get(url, **kw).json()
        if done(job):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}: still {job.get('status')} after {patient(timeout)} s: {job}")
        time.sleep(poll)


def finished(job: dict) -> bool:
    return job["status"] in ("succeeded", "failed", "cancelled")


def start_redis(directory: Path, port: int | None = None, durable: bool = True) -> tuple[subprocess.Popen, str]:
    """A redis-server of the test's own; `durable`: with append-only persistence (fsync always), for restart tests.
    `port` restarts one on the port it had; without it, a free port, and another one if that was taken meanwhile."""
    for _ in range(1 if port else 5):
        chosen = port or free_port()
        started = _redis_server(directory, chosen, durable)
        if started is not None:
            return started
    raise RuntimeError(f"redis-server did not start:\n{(directory / 'redis.log').read_text(errors='replace')[-2000:]}")


def _redis_server(directory: Path, port: int, durable: bool) -> tuple[subprocess.Popen, str] | None:
    directory.mkdir(parents=True, exist_ok=True)
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), *persistence,
            "--save", "", "--daemonize", "no", "--logfile", str(directory / "redis.log")]  # fmt: skip
    proc = subprocess.Popen(argv, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + patient(20)
    while time.monotonic() < deadline:
        if proc.poll() is not None:  # it could not bind: the port was taken
            return None
        try:  # the server answering is this process, not one that holds the port already
            if redis.Redis.from_url(url).info("server")["process_id"] == proc.pid:
                return proc, url
        except redis.exceptions.ConnectionError:
            pass
        time.sleep(0.1)
    kill_group(proc)
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
