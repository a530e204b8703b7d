"""Endpoints every job kind shares: read one, list (a page at a time), cancel, and (initializations) download the
checkpoint."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import PurePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import AwareDatetime, BeforeValidator
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from jobs.job_events import EventId, job_events
from jobs.model import Job, JobKind, JobStatus
from jobs.phases import shown_phase
from jobs.store import JobQuery, JobStore, Position
from learngene.formats.pretrained import FOLDER_FILES, WEIGHTS
from service.api.deps import JobsDep, ServicesDep, SettingsDep, current_client
from service.api.downloads import etag_matches, file_response, stored_members, tar_response
from service.api.pages import Cursor, Limit, decode_cursor, encode_cursor, invalid, next_link
from service.api.schemas import CheckpointView, FileView, JobList, JobView, Links, NotifyView, Timings
from storage.signing import SIGNATURE

SIGNED_FOLDER = (*FOLDER_FILES, SIGNATURE)  # a checkpoint folder's files, its signature last
NDJSON = "application/x-ndjson"
EVENT_STREAM = "text/event-stream"
LOG_HEADERS = {
    "Log-Next": {"description": "the position after the last line: the next `since`", "schema": {"type": "integer"}},
    "Job-Status": {"description": "the job's status when the lines were read", "schema": {"type": "string"}},
}

DOWNLOAD_CODES = (206, 304, 307, 409, 410, 416)  # partial, not modified, presigned redirect, not done, gone, range
FILE_CODES = (*DOWNLOAD_CODES, 404)  # and a name that is not one of the folder's files
BEFORE_FOLDERS = (
    "it finished before checkpoints were stored as timm / Hugging Face folders and has only model.safetensors "
    "(also at /checkpoint); submit the same request again to get the folder"
)
JOB_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")  # what a cursor may name (ids are uuid4 hex)

Statuses = Annotated[
    list[JobStatus] | None,
    Query(alias="status", description="only jobs in one of these statuses; repeat for several (?status=a&status=b)"),
]
ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def iso_only(value: Any) -> Any:
    """pydantic would also take a number of seconds (or milliseconds) since 1970 for a time; here only ISO 8601 is
    meant, so a bare number is refused rather than guessed at."""
    if not (isinstance(value, str) and ISO_DATE.match(value)):
        raise ValueError("expected an ISO 8601 date and time with a timezone, like 2026-12-02T10:38:33Z")
    return value


CreatedAfter = Annotated[
    Annotated[AwareDatetime, BeforeValidator(iso_only)] | None,
    Query(description="only jobs created strictly after this time: ISO 8601 with a timezone (2026-12-02T10:38:33Z)"),
]


def stored_files(job: Job) -> dict[str, dict]:
    """The checkpoint folder's files (name -> sha256, bytes) a succeeded job stored. A job that finished before
    checkpoints came as folders has only its weights; its config.json and README.md were never made."""
    result = job.result or {}
    if "files" in result:
        return result["files"]
    checkpoint = result["checkpoint"]
    return {WEIGHTS: {"sha256": checkpoint["sha256"], "bytes": checkpoint["bytes"]}}


def folder_etag(job: Job, files: dict[str, dict]) -> str:
    """The tar's bytes follow from the job id, its finish time and the files' contents: so does its tag."""
    key = json.dumps([job.id, int(job.finished_at or 0), files], sort_keys=True)
    return f'"{hashlib.sha256(key.encode()).hexdigest()}"'


def job_view(job: Job, request: Request, route_name: str) -> JobView:
    base = str(request.url_for(f"{route_name}.get", job_id=job.id))
    checkpoint = None
    links = Links(self=base, cancel=base)
    if job.kind == JobKind.initialization:
        links.checkpoint = str(request.url_for(f"{route_name}.checkpoint", job_id=job.id))
        links.folder = str(request.url_for(f"{route_name}.folder", job_id=job.id))
        if job.status == JobStatus.succeeded and job.result:
            c = job.result["checkpoint"]
            files = {
                name: FileView(**entry, download=str(request.url_for(f"{route_name}.file", job_id=job.id, name=name)))
                for name, entry in stored_files(job).items()
            }
            checkpoint = CheckpointView(
                sha256=c["sha256"],
                bytes=c["bytes"],
                parameters=c["parameters"],
                download=links.checkpoint,
                files=files,
                folder=links.folder if "files" in job.result else None,
            )
    end = job.finished_at
    timings = Timings(
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=end,
        queued_s=(job.started_at - job.created_at) if job.started_at else None,
        running_s=(end - job.started_at) if end and job.started_at else None,
    )
    # The checkpoint is shown as `checkpoint` (with its download links); its path on the worker stays internal.
    result = None if job.result is None else {k: v for k, v in job.result.items() if k not in ("checkpoint", "files")}
    progress = None if job.progress is None else job.progress.model_dump()  # its `updated_at` shown as a time
    return JobView(
        id=job.id,
        kind=job.kind,
        status=job.status,
        phase=shown_phase(job.kind, job.status.value, job.progress.phase if job.progress else None),
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        template_set=job.template_set,
        warnings=job.warnings,
        request=job.request,
        progress=progress,
        timings=timings,
        result=result,
        checkpoint=checkpoint,
        error=job.error,
        links=links,
    )


def job_list(
    request: Request,
    jobs: JobStore,
    query: JobQuery,
    *,
    limit: int,
    cursor: str | None,
    list_route: str,
    filters: dict[str, Any],
    view_route: Callable[[JobKind], str],
) -> JobList:
    """One page of jobs, newest first, and the link to the next (the same filters and limit) while there is one."""
    page = jobs.page(query, limit, job_position(cursor))
    after = None if page.next is None else encode_cursor(page.next.created_at, page.next.id)
    return JobList(
        items=[job_view(job, request, view_route(job.kind)) for job in page.jobs],
        next=next_link(request, list_route, {**filters, "limit": limit}, after),
    )


def job_position(cursor: str | None) -> Position | None:
    if cursor is None:
        return None
    created_at, job_id = decode_cursor(cursor, (float, str))
    if not JOB_ID.fullmatch(job_id):
        raise invalid("cursor", "not a cursor of this list: pass the `next` link's cursor unchanged")
    return Position(created_at, job_id)


def list_filters(statuses: list[JobStatus] | None, created_after: AwareDatetime | None) -> dict[str, Any]:
    """The filters as the query parameters of a `next` link."""
    return {
        "status": [s.value for s in statuses] if statuses else None,
        "created_after": created_after.isoformat() if created_after else None,
    }


def accepted(job: Job, created: bool, request: Request, response: Response, route_name: str) -> JobView:
    """The answer to a submission: 202 with a Location header, or 200 for an idempotent replay."""
    view = job_view(job, request, route_name)
    if created and job.request.get("notify"):  # its webhook's secret, this once
        own = request.app.state.services.jobs.webhooks.job_subscription(job.id)
        if own is not None:
            view.notify = NotifyView(subscription=own.id, url=own.url, events=own.events, secret=own.secret)
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

    def succeeded(jobs: JobStore, job_id: str, client: str | None) -> Job:
        job = load(jobs, job_id, client)
        if job.status != JobStatus.succeeded:
            raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} is {job.status.value}, not succeeded")
        if (job.result or {}).get("released_at") is not None:
            raise HTTPException(status.HTTP_410_GONE, f"job {job_id}'s checkpoint was released by its client")
        return job

    @router.get("", name=f"{route_name}.list", response_model=JobList)
    def list_jobs(
        request: Request,
        jobs: JobsDep,
        limit: Limit = 50,
        cursor: Cursor = None,
        statuses: Statuses = None,
        created_after: CreatedAfter = None,
        client: str | None = owner,
    ) -> JobList:
        """Jobs newest first, a page at a time: follow `next` (null on the last page) for the rest."""
        query = JobQuery(
            kinds=frozenset({kind}),
            statuses=frozenset(statuses) if statuses else None,
            client=client,
            created_after=created_after.timestamp() if created_after else None,
        )
        return job_list(
            request,
            jobs,
            query,
            limit=limit,
            cursor=cursor,
            list_route=f"{route_name}.list",
            filters=list_filters(statuses, created_after),
            view_route=lambda _: route_name,
        )

    @router.get("/{job_id}", name=f"{route_name}.get", response_model=JobView)
    def get_job(job_id: str, request: Request, jobs: JobsDep, client: str | None = owner) -> JobView:
        return job_view(load(jobs, job_id, client), request, route_name)

    @router.delete("/{job_id}", name=f"{route_name}.cancel", response_model=JobView)
    def cancel_job(job_id: str, request: Request, jobs: JobsDep, client: str | None = owner) -> JobView:
        """Cancel: a queued job never starts; a running one stops at its next step. Finished jobs are unchanged."""
        load(jobs, job_id, client)
        return job_view(jobs.request_cancel(job_id), request, route_name)

    @router.get(
        "/{job_id}/events",
        name=f"{route_name}.events",
        response_class=Response,
        responses={200: {"content": {EVENT_STREAM: {}}, "description": "Server-Sent Events until the job ends"}},
    )
    async def job_events_stream(
        job_id: str,
        request: Request,
        jobs: JobsDep,
        settings: SettingsDep,
        last_event_id: Annotated[str | None, Header(description="resume after this event (the last `id` seen)")] = None,
        client: str | None = owner,
    ) -> Response:
        """The job as it goes, as Server-Sent Events: `status` (with the phase), `warning`, `progress` (phase, the
        phase's step and total, the whole job's ETA) and, last, `end` (the job as GET shows it), then the stream
        closes. Reconnecting with `Last-Event-ID` resumes after that event."""
        first = await run_in_threadpool(load, jobs, job_id, client)  # a 404 before any stream

        async def stream() -> AsyncIterator[dict[str, str]]:
            after, job = EventId.parse(last_event_id), first
            while True:
                for event in job_events(job):
                    if after is not None and event.id <= after:
                        continue
                    data = (
                        job_view(job, request, route_name).model_dump(mode="json")
                        if event.event == "end"
                        else event.data
                    )
                    yield {"id": str(event.id), "event": event.event, "data": json.dumps(data)}
                    after = event.id
                if job.terminal:
                    return
                await asyncio.sleep(settings.events_poll_s)
                job = await run_in_threadpool(jobs.get, job_id) or job  # an expired record: the last one seen

        return EventSourceResponse(stream(), ping=settings.events_ping_s, headers={"Cache-Control": "no-store"})

    @router.get(
        "/{job_id}/logs",
        name=f"{route_name}.logs",
        response_class=Response,
        responses={200: {"content": {NDJSON: {}}, "headers": LOG_HEADERS}},
    )
    def job_logs(
        job_id: str,
        jobs: JobsDep,
        since: Annotated[int, Query(ge=0, description="the position to read from: the last answer's Log-Next")] = 0,
        client: str | None = owner,
    ) -> Response:
        """The job's own log lines (JSON lines with its request and job ids), from position `since`: the last
        `LEARNGENE_JOB_LOG_LINES` are kept, as long as the record. To follow a running job, ask again with the
        answer's `Log-Next` until `Job-Status` is terminal and no line comes."""
        job = load(jobs, job_id, client)
        lines, end = jobs.logs.read(job_id, since)
        body = "".join(f"{line}\n" for line in lines)
        headers = {"Log-Next": str(end), "Job-Status": job.status.value, "Cache-Control": "no-store"}
        return Response(body, media_type=NDJSON, headers=headers)

    if kind == JobKind.initialization:

        def download(
            job_id: str,
            request: Request,
            services: ServicesDep,
            if_none_match: Annotated[str | None, Header()] = None,
            range_: Annotated[str | None, Header(alias="Range")] = None,
            client: str | None = owner,
        ) -> Response:
            """The timm safetensors checkpoint; `ETag` is its sha256, `Range` requests are honoured."""
            sha256 = succeeded(services.jobs, job_id, client).result["checkpoint"]["sha256"]
            return file_response(
                services.artifacts,
                sha256,
                filename=f"{job_id}.safetensors",
                method=request.method,
                if_none_match=if_none_match,
                range_header=range_,
                presign_s=services.settings.artifacts_presign_s,
            )

        for method, name in (("GET", "checkpoint"), ("HEAD", "checkpoint_head")):  # one operation id each
            router.add_api_route(
                "/{job_id}/checkpoint",
                download,
                methods=[method],
                name=f"{route_name}.{name}",
                response_class=FileResponse,
                responses={200: {"content": {"application/octet-stream": {}}}, **{code: {} for code in DOWNLOAD_CODES}},
            )

        @router.delete("/{job_id}/checkpoint", name=f"{route_name}.release", response_model=JobView)
        def release_checkpoint(job_id: str, request: Request, jobs: JobsDep, client: str | None = owner) -> JobView:
            """Release a succeeded job's checkpoint (all its files) once you have it: it no longer counts against
            your quota, its downloads answer 410, and the retention sweep removes each file no other kept job
            names. Releasing again changes nothing."""
            load(jobs, job_id, client)
            outcome, job = jobs.release_files(job_id)
            if outcome == "not_succeeded":
                raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} is {job.status.value}, not succeeded")
            return job_view(job, request, route_name)

        def download_file(
            job_id: str,
            name: Annotated[str, Path(description=f"one of {', '.join(SIGNED_FOLDER)}")],
            request: Request,
            services: ServicesDep,
            if_none_match: Annotated[str | None, Header()] = None,
            range_: Annotated[str | None, Header(alias="Range")] = None,
            client: str | None = owner,
        ) -> Response:
            """One file of the checkpoint as a timm / Hugging Face folder: `model.safetensors` (the same bytes as
            `/checkpoint`), `config.json` (timm's), `README.md` (the model card), `model.sig` (the service's
            signature of the other three: GET /v1/signing-key). `ETag` is its sha256."""
            if name not in SIGNED_FOLDER:
                raise HTTPException(  # the name is not echoed back: it may be anything
                    status.HTTP_404_NOT_FOUND, f"no such file: a checkpoint folder holds {', '.join(SIGNED_FOLDER)}"
                )
            job = succeeded(services.jobs, job_id, client)
            files = stored_files(job)
            if name not in files:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} has no {name}: {BEFORE_FOLDERS}")
            return file_response(
                services.artifacts,
                files[name]["sha256"],
                filename=name,
                method=request.method,
                if_none_match=if_none_match,
                range_header=range_,
                presign_s=services.settings.artifacts_presign_s,
                suffix=PurePath(name).suffix,
            )

        for method, operation in (("GET", "file"), ("HEAD", "file_head")):
            router.add_api_route(
                "/{job_id}/files/{name}",
                download_file,
                methods=[method],
                name=f"{route_name}.{operation}",
                response_class=FileResponse,
                responses={
                    200: {"content": {"application/octet-stream": {}, "application/json": {}, "text/markdown": {}}},
                    **{code: {} for code in FILE_CODES},
                },
            )

        @router.get(
            "/{job_id}/files.tar",
            name=f"{route_name}.folder",
            response_class=StreamingResponse,
            responses={200: {"content": {"application/x-tar": {}}}, **{code: {} for code in (304, 404, 409, 410)}},
        )
        def download_folder(
            job_id: str,
            services: ServicesDep,
            if_none_match: Annotated[str | None, Header()] = None,
            client: str | None = owner,
        ) -> Response:
            """The checkpoint folder as one uncompressed tar: `<id>/model.safetensors`, `<id>/config.json`,
            `<id>/README.md`, ready for `timm.create_model("local-dir:<id>", pretrained=True)`."""
            job = succeeded(services.jobs, job_id, client)
            if "files" not in job.result:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} has no folder: {BEFORE_FOLDERS}")
            files = job.result["files"]
            etag = folder_etag(job, files)
            if if_none_match is not None and etag_matches(if_none_match, etag):
                return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
            members = stored_members(services.artifacts, files)
            return tar_response(members, top=job.id, mtime=int(job.finished_at or 0), etag=etag)

    return router
