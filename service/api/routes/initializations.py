"""POST /v1/initializations and the job endpoints under it."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response, status

from jobs.admission import submit_initialization
from jobs.contracts import InitializationRequest
from jobs.model import JobKind
from service.api.deps import ClientDep, IdempotencyKey, ServicesDep, current_client
from service.api.routes.jobs import accepted, job_routes
from service.api.schemas import JobView

ROUTE = "initializations"
PREFIX = "/v1/initializations"
router = APIRouter(tags=["initializations"], dependencies=[Depends(current_client)])


@router.post(
    PREFIX,
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobView,
    responses={200: {"description": "idempotent replay: the job an earlier request with this key created"}},
)
def create_initialization(
    body: InitializationRequest,
    request: Request,
    response: Response,
    services: ServicesDep,
    client: ClientDep,
    idempotency_key: IdempotencyKey = None,
) -> JobView:
    """Accept an initialization job: inherit from the template set, fit the scalers, export a timm checkpoint."""
    job, created = submit_initialization(body, services, idempotency_key=idempotency_key, client=client)
    return accepted(job, created, request, response, ROUTE)


router.include_router(job_routes(JobKind.initialization, ROUTE), prefix=PREFIX)
