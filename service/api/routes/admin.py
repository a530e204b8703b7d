"""Admin endpoints (bearer token): condensation and card jobs, alias promotion/rollback."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from jobs.admission import located, submit_card, submit_condensation
from jobs.contracts import CardRequest, CondensationRequest
from jobs.model import JobKind
from jobs.store import JobQuery
from jobs.webhooks.events import alias_moved
from service.api.deps import IdempotencyKey, JobsDep, ServicesDep, StoreDep, require_admin
from service.api.pages import Cursor, Limit
from service.api.routes import initializations
from service.api.routes.jobs import CreatedAfter, Statuses, accepted, job_list, job_routes, list_filters
from service.api.schemas import AliasUpdate, AliasView, JobList, JobView
from templates_store.refs import check_alias, check_name

ROUTE = "condensations"
CARDS = "cards"
router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@router.post("/condensations", status_code=status.HTTP_202_ACCEPTED, response_model=JobView)
def create_condensation(
    body: CondensationRequest,
    request: Request,
    response: Response,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> JobView:
    """Start a condensation job; on success its template set is published (and optionally promoted)."""
    job, created = submit_condensation(body, services, idempotency_key=idempotency_key)
    return accepted(job, created, request, response, ROUTE)


router.include_router(job_routes(JobKind.condensation, ROUTE), prefix="/condensations")


@router.post("/template-sets/{ref}/card", status_code=status.HTTP_202_ACCEPTED, response_model=JobView)
def create_card(
    ref: str,
    request: Request,
    response: Response,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> JobView:
    """Measure the version's quality card again (a job on the condense queue); it is stored as a new revision, the
    earlier ones are kept. Poll the job at the Location header."""
    job, created = submit_card(CardRequest(template_set=ref), services, idempotency_key=idempotency_key)
    return accepted(job, created, request, response, CARDS)


router.include_router(job_routes(JobKind.card, CARDS), prefix="/cards")
ROUTES = {JobKind.initialization: initializations.ROUTE, JobKind.condensation: ROUTE, JobKind.card: CARDS}
Kinds = Annotated[
    list[JobKind] | None, Query(alias="kind", description="only jobs of these kinds; repeat for several (all if none)")
]


@router.get("/jobs", name="jobs.list", response_model=JobList)
def list_all_jobs(
    request: Request,
    jobs: JobsDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    kinds: Kinds = None,
    statuses: Statuses = None,
    created_after: CreatedAfter = None,
) -> JobList:
    """Jobs of every kind (initializations of every client, condensations, cards) newest first, a page at a time:
    follow `next` (null on the last page). Each job links to its own kind's endpoints."""
    query = JobQuery(
        kinds=frozenset(kinds or JobKind),
        statuses=frozenset(statuses) if statuses else None,
        created_after=created_after.timestamp() if created_after else None,
    )
    filters = {"kind": [k.value for k in kinds] if kinds else None, **list_filters(statuses, created_after)}
    return job_list(
        request,
        jobs,
        query,
        limit=limit,
        cursor=cursor,
        list_route="jobs.list",
        filters=filters,
        view_route=ROUTES.__getitem__,
    )


@router.put("/template-sets/{name}/aliases/{alias}", response_model=AliasView)
def set_alias(name: str, alias: str, body: AliasUpdate, store: StoreDep, jobs: JobsDep) -> AliasView:
    """Promote (`{"version": N}`) or roll back (`{"rollback": true}`) an alias; either sends `alias.moved`."""
    with located("path", "name"):
        check_name(name)
    with located("path", "alias"):
        check_alias(alias)
    record = store.rollback(name, alias) if body.rollback else store.promote(name, body.version, alias)
    alias_moved(jobs.webhooks, name, alias, record)
    return AliasView(name=name, alias=alias, **record.model_dump())
