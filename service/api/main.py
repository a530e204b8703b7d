"""The FastAPI application: `uvicorn --factory service.api.main:create_app` (or `learngene serve`).

With LEARNGENE_REDIS_URL set, jobs go to Celery workers and job records live in Redis; without it, the same task
code runs in background threads of this process (the embedded mode: one command, no other services).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from jobs.dispatch import EmbeddedDispatcher
from jobs.memory_store import MemoryJobStore
from jobs.reaper import Reaper
from jobs.redis_store import RedisJobStore
from jobs.retention import Sweeper
from jobs.runner import WorkerContext
from jobs.services import Services
from jobs.settings import Settings, get_settings
from jobs.storage import artifacts, template_store
from learngene import __version__
from service.api import error_docs, errors, openapi
from service.api.limits import BodyLimit
from service.api.metrics import build_registry
from service.api.public_url import PublicUrl
from service.api.request_ids import RequestIds, wrap_outermost
from service.api.routes import (
    admin,
    health,
    initializations,
    lineage,
    problems,
    signing,
    template_sets,
    webhooks,
)
from service.ui import routes as ui
from storage.objects import StorageUnavailable
from storage.signing import public_key_pem
from workers.celery_app import CeleryDispatcher, create_celery
from workers.webhooks import Deliverer

log = logging.getLogger(__name__)


def build_services(settings: Settings) -> Services:
    """Redis records and Celery workers when `redis_url` is set; else in-memory records and the embedded executor."""
    store, checkpoints = template_store(settings), artifacts(settings)
    if settings.redis_url:
        jobs = RedisJobStore.from_settings(settings)
        return Services(settings, jobs, store, checkpoints, CeleryDispatcher(create_celery(settings)))
    memory = MemoryJobStore(
        idempotency_ttl_s=settings.idempotency_ttl_s,
        log_lines=settings.job_log_lines,
        webhooks_kept=settings.webhook_deliveries_kept,
    )
    context = WorkerContext(settings=settings, jobs=memory, store=store, artifacts=checkpoints)
    dispatcher = EmbeddedDispatcher(context, threads=settings.embedded_workers)
    return Services(settings, memory, store, checkpoints, dispatcher)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    services = build_services(settings)
    jobs, store, checkpoints, dispatcher = services.jobs, services.store, services.artifacts, services.dispatcher
    registry, http_metrics = build_registry(jobs)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        public_key_pem(settings.signing_key)  # generated at first start when absent (the embedded default)
        try:
            store.resolve("demo")  # publishes the bundled demo template set on first start
        except StorageUnavailable:  # /readyz says so; the set is published on first use once the storage is back
            log.warning("the template store is unreachable at start; the demo set will be published on first use")
        mode = f"celery via {settings.redis_url.split('@')[-1]}" if settings.redis_url else "embedded executor"
        reaper = Reaper(jobs, dispatcher, settings) if settings.redis_url else None  # embedded jobs die with us
        if reaper is not None:
            reaper.start()
        # Webhooks are sent from the workers' side: by the Celery workers, or by this process when it is the worker.
        deliverer = None if settings.redis_url else Deliverer(jobs.webhooks, settings)
        if deliverer is not None:
            deliverer.start()
        sweeper = Sweeper(
            jobs, checkpoints, interval_s=settings.artifacts_sweep_interval_s, grace_s=settings.artifacts_sweep_grace_s
        )
        sweeper.start()
        log.info("learngene API %s ready (%s), store %s", __version__, mode, settings.store)
        yield
        if reaper is not None:
            reaper.stop()
        if deliverer is not None:
            deliverer.stop()
        sweeper.stop()
        dispatcher.close()

    app = FastAPI(
        title="learngene",
        version=__version__,
        summary="Initialized Vision Transformer checkpoints of any size, inherited from condensed learngenes.",
        lifespan=lifespan,
        generate_unique_id_function=openapi.operation_id,
        openapi_tags=openapi.TAGS,
        docs_url=None,  # served by openapi.install from bundled assets, not a CDN
        redoc_url=None,
    )
    app.state.services, app.state.registry = services, registry
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes, timeout_s=settings.body_timeout_s)
    wrap_outermost(app, RequestIds, http_metrics)  # around Starlette's error middleware: its 500s too
    if settings.public_url:
        wrap_outermost(app, lambda inner: PublicUrl(inner, settings.public_url))
    errors.install(app)
    for module in (initializations, template_sets, lineage, admin, webhooks, health, problems, signing):
        app.include_router(module.router)
    error_docs.document(app)  # the problems each operation can answer, read off the generated document
    openapi.install(app, settings)  # then operation ids' examples, security alternatives, binary bodies
    ui.install(app)  # pages for people at /ui, out of the OpenAPI document
    return app
