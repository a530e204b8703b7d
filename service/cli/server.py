"""`learngene serve` (the HTTP API) and `learngene worker` (a Celery worker)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from service.client_settings import DEFAULT_PORT


def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port", envvar="LEARNGENE_PORT")] = DEFAULT_PORT,
    workers: Annotated[int, typer.Option(help="API processes (Celery mode only; embedded mode runs one)")] = 1,
    data_root: Annotated[
        list[Path] | None,
        typer.Option(help="a folder clients may name data under, besides LEARNGENE_DATA_ROOTS (repeatable)"),
    ] = None,
) -> None:
    """Run the HTTP API. Without LEARNGENE_REDIS_URL jobs run in this process (embedded mode)."""
    import uvicorn

    from jobs.logs import logging_config
    from jobs.settings import get_settings  # loads torch: imported by the command, not by --help (start-up time)
    from service.api.header_timeout import HeaderTimeoutH11

    settings = get_settings()
    if workers > 1 and not settings.redis_url:
        raise typer.BadParameter(
            "the embedded executor keeps jobs in memory: use one process, or set LEARNGENE_REDIS_URL"
        )
    if data_root:  # through the environment, so that every API process (and its embedded jobs) sees the same
        roots = [*settings.data_roots, *(str(p.expanduser().resolve()) for p in data_root)]
        os.environ["LEARNGENE_DATA_ROOTS"] = json.dumps(roots)
        get_settings.cache_clear()
    uvicorn.run(
        "service.api.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        log_config=logging_config(settings.log_format),  # JSON or text lines, with request ids (jobs.logs)
        # X-Forwarded-* only from the configured proxies (uvicorn trusts 127.0.0.1 unless told otherwise)
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
        http=HeaderTimeoutH11,  # h11, with a deadline for a request's headers (LEARNGENE_HEADER_TIMEOUT_S)
    )


def worker(
    queues: Annotated[str, typer.Option(help="comma-separated queues: inherit (short jobs), condense (long jobs)")] = (
        "inherit,condense"
    ),
    concurrency: Annotated[int, typer.Option(help="jobs at a time (one per GPU)")] = 1,
    loglevel: str = "INFO",
) -> None:
    """Run a Celery worker for the jobs queued by the API (needs LEARNGENE_REDIS_URL)."""
    from workers.main import app  # builds the Celery application: only this command needs it

    app.worker_main(["worker", "-Q", queues, "--concurrency", str(concurrency), "--loglevel", loglevel])
