"""Endpoints every job kind shares: read one, list, cancel, and (initializations) download the checkpoint."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response, status
from fastapi.responses import FileResponse

from jobs.model import Job, JobKind, JobStatus
from jobs.store import JobStore
from service.api.deps import ArtifactsDep, JobsDep, SettingsDep, current_client
from service.api.downloads import checkpoint_response
from service.api.schemas import CheckpointView, JobList, JobView, Links, Timings

DOWNLOAD_CODES = (206, 304, 307, 409, 410, 416)  # partial, not modified, presigned redirect, not done, gone, range


def job_view(job: Job, request: Request, route_name: str) -> JobView:
    base = str(request.url_for(f"{route_name}.get", job_id=job.id))
    checkpoint = None
    links = Links(self=base, cancel=base)
    if job.kind == JobKind.initialization:
        links.checkpoint = str(request.url_for(f"{route_name}.checkpoint", job_id=job.id))
        if job.status == JobStatus.succeeded and job.result:
            c = job.result["checkpoint"]
            checkpoint = CheckpointView(
                sha256=c["sha256"], bytes=c["bytes"], parameters=c["parameters"], download=links.checkpoint
            )
    end = job.finished_at
    timings = Timings(
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=end,
        queued_s=(job.started_at - job.created_at) if job.started_at else None,
        running_s=(end - job.started_at) if end and job.started_at else None,
    )
    # The checkpoint is shown as `checkpoint` (with its download link); its path on the worker stays internal.
    result = None if job.result is None else {k: v for k, v in job.result.items() if k != "checkpoint"}
    return JobView(
        id=job.id, kind=job.kind, status=job.status, attempts=job.attempts, max_attempts=job.max_attempts,
        template_set=job.template_set, warnings=job.warnings, request=job.request, progress=job.progress,
        timings=timings, result=result, checkpoint=checkpoint, error=job.error, links=links,
    )  # fmt: skip


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 If-None-Match: `*` matches any existing representation; otherwise a list of (weak) entity tags."""
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def accepted(job: Job, created: bool, request: Request, response: Response, route_name: str) -> JobView:
    """The answer to a submission: 202 with a Location header, or 200 for an idempotent replay."""
    view = job_view(job, request, route_name)
    response.headers["Location"] = view.links.self
    response.status_code = status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK
    return view


def no_client() -> None:
    """Admin job routes: the admin token is checked by the router; jobs belong to no client."""


def job_routes(kind: JobKind, route_name: str) -> APIRouter:
    """GET /, GET /{id}, DELETE /{id} (and GET /{id}/checkpoint for initializations) for one job kind.

    With client tokens configured, a client sees only its own initialization jobs (another's answer 404)."""
    router = APIRouter()
    owner = Depends(current_client if kind == JobKind.initialization else no_client)

    def load(jobs: JobStore, job_id: str, client: str | None) -> Job:
        job = jobs.get(job_id)
        if job is None or job.kind != kind or (client is not None and job.client != client):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"{kind.value} job {job_id!r} does not exist")
        return job

    @router.get("", name=f"{route_name}.list", response_model=JobList)
    def list_jobs(request: Request, jobs: JobsDep, limit: int = 50, client: str | None = owner) -> JobList:
        found = jobs.list(kind, min(max(limit, 1), 500))
        mine = [j for j in found if client is None or j.client == client]
        return JobList(items=[job_view(j, request, route_name) for j in mine])

    @router.get("/{job_id}", name=f"{route_name}.get", response_model=JobView)
    def get_job(job_id: str, request: Request, jobs: JobsDep, client: str | None = owner) -> JobView:
        return job_view(load(jobs, job_id, client), request, route_name)

    @router.delete("/{job_id}", name=f"{route_name}.cancel", response_model=JobView)
    def cancel_job(job_id: str, request: Request, jobs: JobsDep, client: str | None = owner) -> JobView:
        """Cancel: a queued job never starts; a running one stops at its next step. Finished jobs are unchanged."""
        load(jobs, job_id, client)
        return job_view(jobs.request_cancel(job_id), request, route_name)

    if kind == JobKind.initialization:

        def download(
            job_id: str,
            request: Request,
            jobs: JobsDep,
            artifacts: ArtifactsDep,
            settings: SettingsDep,
            if_none_match: Annotated[str | None, Header()] = None,
            range_: Annotated[str | None, Header(alias="Range")] = None,
            client: str | None = owner,
        ) -> Response:
            """The timm safetensors checkpoint; `ETag` is its sha256, `Range` requests are honoured."""
            job = load(jobs, job_id, client)
            if job.status != JobStatus.succeeded:
                raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} is {job.status.value}, not succeeded")
            checkpoint = job.result["checkpoint"]
            etag = f'"{checkpoint["sha256"]}"'
            if if_none_match is not None and etag_matches(if_none_match, etag):
                return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
            return checkpoint_response(
                artifacts, checkpoint["sha256"], etag=etag, filename=f"{job_id}.safetensors", method=request.method,
                range_header=range_, presign_s=settings.artifacts_presign_s,
            )  # fmt: skip

        for method, name in (("GET", "checkpoint"), ("HEAD", "checkpoint_head")):  # one operation id each
            router.add_api_route(
                "/{job_id}/checkpoint", download, methods=[method], name=f"{route_name}.{name}",
                response_class=FileResponse,
                responses={200: {"content": {"application/octet-stream": {}}}, **{code: {} for code in DOWNLOAD_CODES}},
            )  # fmt: skip

    return router
