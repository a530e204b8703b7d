"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import ServicesDep
from service.api.schemas import Health

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(services: ServicesDep) -> Response:
    """Redis (or the embedded job store) answers, the template store and the checkpoint store can be used."""
    checks = {
        "jobs": "ok" if services.jobs.ping() else "unreachable",
        "store": services.store.backend.problem() or "ok",
        "artifacts": services.artifacts.problem() or "ok",
    }
    ready = all(v == "ok" for v in checks.values())
    body = Health(status="ready" if ready else "not ready", checks=checks).model_dump()
    return JSONResponse(body, status_code=200 if ready else 503, headers=None if ready else {"Retry-After": "5"})


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
