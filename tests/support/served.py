"""The real API served by uvicorn on a local port, in this process: real HTTP, with settings of the test's own and
no process start-up. For API tests that do not put the server process itself under test (tests.support.harness
starts real server processes for those)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import uvicorn
from fastapi import FastAPI

from jobs.settings import Settings
from service.api.main import create_app
from tests.support.harness import free_port, service_env
from tests.support.scale import patient


@dataclass
class Served:
    url: str
    app: FastAPI


def settings_for(home: Path, *, redis_url: str | None, data_roots: list[Path], **extra: str) -> Settings:
    """The settings a server process started with `service_env(...)` would read from its environment."""
    with mock.patch.dict(
        os.environ, service_env(home, redis_url=redis_url, data_roots=data_roots, **extra), clear=True
    ):
        return Settings()


@contextlib.contextmanager
def served(settings: Settings) -> Iterator[Served]:
    """`create_app(settings)` on a free port until the block ends; on another port if another process took the one
    it was given."""
    app = create_app(settings)
    for _ in range(5):
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)  # uvicorn exits the thread when it cannot bind
        thread.start()
        deadline = time.monotonic() + patient(60)
        while not server.started and thread.is_alive():
            if time.monotonic() > deadline:
                raise TimeoutError("the in-process API did not start")
            time.sleep(0.05)
        if server.started:
            break
    else:
        raise RuntimeError("the in-process API lost five port races in a row")
    try:
        yield Served(f"http://127.0.0.1:{server.config.port}", app)
    finally:
        server.should_exit = True
        thread.join(patient(30))
