"""Service stacks started once per xdist worker and shared by every test module that talks to a service without
putting its processes under test (a pytest plugin: tests/conftest.py registers it). Kills, restarts, outages,
start-up behaviour, log contents, memory bounds and settings of a test's own keep stacks of their own.

Tests on one xdist worker run one after another, so a shared stack serves one test at a time, but it still holds
the jobs, files and counters of the tests before: a test asserts on its own jobs (by id), writes its files under a
folder of its own (`Stack.folder`) and reads counters as differences."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.data import SHARED_DATA
from tests.support.harness import Process, kill_group, service_env, start_api, start_redis, start_worker

# The client tokens of the guarded stack: one per test module that needs a tenant of its own.
STACK_CLIENTS = {name: f"{name}-token-{index:02d}-0123456789" for index, name in enumerate(("alpha", "beta", "gamma"))}


@dataclass
class Stack:
    url: str
    home: Path
    data_root: Path  # one of the stack's data roots, writable by the tests
    env: dict[str, str]
    api: Process
    redis_url: str | None = None
    processes: list[Process] = field(default_factory=list)

    def folder(self, request: pytest.FixtureRequest) -> Path:
        """A folder of the calling test module's own inside the stack's data roots."""
        name = re.sub(r"[^a-zA-Z0-9_]+", "-", request.node.nodeid.split("::")[0])
        path = self.data_root / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def _started(home: Path, env: dict[str, str], *, worker: bool, redis_url: str | None = None) -> Stack:
    processes: list[Process] = []
    try:
        if worker:
            processes.append(start_worker(env, home / "worker.log"))
        api = start_api(env, home / "api.log")
    except Exception:
        for proc in processes:
            proc.stop()
        raise
    return Stack(api.url, home, home / "data", env, api, redis_url, [*processes, api])


def _stopped(stack: Stack) -> None:
    for proc in reversed(stack.processes):
        proc.stop()


# The test's own webhook receivers listen on loopback, which a deployment refuses unless it lists it.
LOOPBACK_WEBHOOKS = {"LEARNGENE_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]', "LEARNGENE_WEBHOOK_POLL_S": "0.2"}


@pytest.fixture(scope="session")
def embedded_stack(tmp_path_factory) -> Iterator[Stack]:
    """An embedded API (jobs run in its process) with one executor thread, as the Celery stack has one worker
    process: tests that queue behind a busy worker see the same on both."""
    home = tmp_path_factory.mktemp("embedded-stack")
    (home / "data").mkdir()
    env = service_env(
        home,
        redis_url=None,
        data_roots=[SHARED_DATA, home / "data"],
        LEARNGENE_EMBEDDED_WORKERS="1",
        LEARNGENE_EVENTS_PING_S="1",  # every event stream read here meets keep-alive comments
        **LOOPBACK_WEBHOOKS,
    )
    stack = _started(home, env, worker=False)
    yield stack
    _stopped(stack)


@pytest.fixture(scope="session")
def celery_stack(tmp_path_factory) -> Iterator[Stack]:
    """An API and one Celery worker on a redis-server of the stack's own: a module that flushes this xdist
    worker's test database (tests.support.harness.flush_test_redis) cannot take the shared queues away."""
    home = tmp_path_factory.mktemp("celery-stack")
    (home / "data").mkdir()
    redis_proc, redis_url = start_redis(home / "redis", durable=False)
    env = service_env(home, redis_url=redis_url, data_roots=[SHARED_DATA, home / "data"], **LOOPBACK_WEBHOOKS)
    try:
        stack = _started(home, env, worker=True, redis_url=redis_url)
    except Exception:
        kill_group(redis_proc)
        raise
    yield stack
    _stopped(stack)
    kill_group(redis_proc)


@pytest.fixture(scope="session")
def guarded_stack(tmp_path_factory) -> Iterator[Stack]:
    """An embedded API that requires a client token (STACK_CLIENTS) on every job and template-set route."""
    home = tmp_path_factory.mktemp("guarded-stack")
    (home / "data").mkdir()
    env = service_env(
        home, redis_url=None, data_roots=[SHARED_DATA, home / "data"], LEARNGENE_CLIENT_TOKENS=json.dumps(STACK_CLIENTS)
    )
    stack = _started(home, env, worker=False)
    yield stack
    _stopped(stack)
