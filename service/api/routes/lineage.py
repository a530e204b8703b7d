"""GET /v1/lineage/{sha256}: where an artifact came from and what came of it (`jobs.lineage`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, status
from starlette.concurrency import run_in_threadpool

from jobs.lineage import lineage
from service.api.deps import ClientDep, JobsDep, StoreDep, current_client
from service.api.schemas import LineageView

router = APIRouter(tags=["template sets"], dependencies=[Depends(current_client)])
Sha256 = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="64 lowercase hexadecimal digits")]


@router.get("/v1/lineage/{sha256}", response_model=LineageView)
async def get_lineage(sha256: Sha256, store: StoreDep, jobs: JobsDep, client: ClientDep) -> LineageView:
    """The graph around an artifact, found by its sha256: an ancestor's weights, a template-set version's manifest
    digest, or a checkpoint's weights (or any file of its folder). It names the ancestor, the template-set
    versions condensed from it (method, data as sent, license, base_model) and the initializations inherited from
    them (job, checkpoint, method, calibration data digest); with client tokens, your own initializations only."""
    graph = await run_in_threadpool(lineage, sha256, store, jobs, client)
    if graph is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no artifact with sha256 {sha256} is known to this service")
    return LineageView(**graph)
