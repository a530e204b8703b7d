"""The web UI at /ui: pages for people, rendered by Jinja2 (autoescaped: every value is text, never markup).

A page is a shell that anyone may load (layout, navigation, forms); what it shows comes in parts (/ui/parts/...),
HTML fragments that htmx fetches with the token the tab keeps in its session storage, as a bearer header: a part
is guarded by the same dependency as the JSON route it mirrors, and builds its content with that route's own
functions. No cookie is set, so a page can make no request on a visitor's behalf (no CSRF surface), and the
Content-Security-Policy admits only the scripts and styles shipped in this package.
"""

from __future__ import annotations

import base64
import json
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import Scope

from jobs.model import Job, JobKind, JobStatus
from jobs.store import JobQuery
from learngene.quality.card import CardDomain
from service.api.deps import JobsDep, SettingsDep, StoreDep, current_client, require_admin
from service.api.openapi import CONDENSATION
from service.api.routes import admin, template_sets
from service.api.routes.jobs import job_list, job_view, list_filters
from service.api.schemas import JobList, TemplateSetQuery
from service.ui.snippets import DEFAULT_MODEL, OVERRIDES, form_request, snippets, timm_snippet

STATIC = "/ui/static"
# No inline script or style, nothing from another origin; plots come inline as data: URLs, downloads as blob: URLs.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
KIND_ROUTES = admin.ROUTES  # a job's kind -> the name of its JSON routes
PAGE_SIZE = 50

templates = Jinja2Templates(directory=str(files("service.ui") / "templates"))
templates.env.filters["json"] = lambda value: json.dumps(value, indent=2, sort_keys=True)


class Assets(StaticFiles):
    """The UI's scripts and styles, with the UI's security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update({k: v for k, v in HEADERS.items() if k != "Cache-Control"})
        return response


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context |= {"static": STATIC}
    return templates.TemplateResponse(request, name, context, status_code=status_code, headers=HEADERS)


home = APIRouter(include_in_schema=False)
pages = APIRouter(prefix="/ui", include_in_schema=False)
parts = APIRouter(prefix="/ui/parts", include_in_schema=False, dependencies=[Depends(current_client)])
admin_parts = APIRouter(prefix="/ui/parts/admin", include_in_schema=False, dependencies=[Depends(require_admin)])


# -------------------------------------------------------------------------------------------------------- pages
@pages.get("", response_class=HTMLResponse)
def catalogue_page(request: Request) -> HTMLResponse:
    return render(request, "catalogue.html", title="Template sets")


@pages.get("/template-sets/{ref}", response_class=HTMLResponse)
def version_page(request: Request, ref: str) -> HTMLResponse:
    return render(request, "version.html", title=ref, ref=ref)


@pages.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, every: bool = False) -> HTMLResponse:
    """`every`: every client's jobs of every kind (the admin list); else the caller's own initializations."""
    return render(request, "jobs.html", title="Jobs", every=every, kinds=list(JobKind), statuses=list(JobStatus))


@pages.get("/jobs/{kind}/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, kind: JobKind, job_id: str, every: bool = False) -> HTMLResponse:
    """A client follows its own initialization on its events stream; an admin, any job (an initialization of any
    client by polling: its stream is the client's route)."""
    as_admin = every or kind != JobKind.initialization
    part = f"/ui/parts/admin/jobs/{job_id}" if as_admin else f"/ui/parts/jobs/{job_id}"
    events = None
    if not (as_admin and kind == JobKind.initialization):
        prefix = "/v1" if kind == JobKind.initialization else "/v1/admin"
        events = f"{prefix}/{KIND_ROUTES[kind]}/{job_id}/events"
    return render(request, "job.html", title=f"Job {job_id}", part=part, events=events, job_id=job_id)


@pages.get("/new", response_class=HTMLResponse)
def new_page(request: Request, template_set: str = "demo@prod") -> HTMLResponse:
    return render(
        request, "new.html", title="New initialization", overrides=OVERRIDES, template_set=template_set,
        model=DEFAULT_MODEL,
    )  # fmt: skip


@pages.get("/admin", response_class=HTMLResponse)
def admin_page(request: Request) -> HTMLResponse:
    return render(request, "admin.html", title="Admin", condensation=json.dumps(CONDENSATION, indent=2))


# -------------------------------------------------------------------------------------------------------- parts
def cursor_of(next_url: str | None) -> str | None:
    """The cursor of a JSON list's `next` link: the part's own "more" link carries it."""
    return None if next_url is None else parse_qs(urlsplit(next_url).query)["cursor"][0]


@parts.get("/catalogue", response_class=HTMLResponse)
def catalogue_part(
    request: Request, store: StoreDep, query: Annotated[TemplateSetQuery, Query()], cursor: str | None = None
) -> HTMLResponse:
    found = template_sets.list_template_sets(request, store, query, limit=PAGE_SIZE, cursor=cursor)
    filters = query.model_dump(exclude_none=True)
    return render(request, "parts/catalogue.html", versions=found.items, more=cursor_of(found.next), filters=filters)


@parts.get("/template-sets/{ref}", response_class=HTMLResponse)
def version_part(request: Request, ref: str, store: StoreDep, settings: SettingsDep) -> HTMLResponse:
    view = template_sets.get_template_set(ref, store)
    resolved = store.resolve(view.ref)
    card = store.card(resolved)
    plot = None
    if card is not None:
        plot = "data:image/png;base64," + base64.b64encode(template_sets.card_plot(card.model_dump_json())).decode()
    manifest = store.manifest(resolved)
    domain = CardDomain.of(manifest.config, manifest.lineage)
    example = {
        "model": DEFAULT_MODEL,
        "template_set": view.ref,
        "overrides": {"img_size": domain.img_size[0], "patch_size": domain.patch_size[0],
                      "in_chans": domain.in_chans, "num_classes": domain.num_classes},
    }  # fmt: skip
    calls = snippets(example, base(request), token=bool(settings.client_tokens))
    return render(
        request, "parts/version.html", view=view, card=card, plot=plot, domain=domain,
        aliases=store.aliases(resolved.name), snippets=calls,
    )  # fmt: skip


@parts.get("/request", response_class=HTMLResponse)
def request_part(request: Request, settings: SettingsDep) -> HTMLResponse:
    """The new-initialization form's fields as the request they make, its problems, and the calls that send it."""
    built, problems = form_request(request.query_params)
    calls = snippets(built, base(request), token=bool(settings.client_tokens))
    return render(request, "parts/request.html", built=built, problems=problems, snippets=calls)


@parts.get("/jobs", response_class=HTMLResponse)
def jobs_part(
    request: Request,
    jobs: JobsDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    cursor: str | None = None,
    client: str | None = Depends(current_client),
) -> HTMLResponse:
    statuses = [status_] if status_ else None
    query = JobQuery(kinds=frozenset({JobKind.initialization}), statuses=frozenset(statuses or []) or None,
                     client=client)  # fmt: skip
    found = job_list(
        request, jobs, query, limit=PAGE_SIZE, cursor=cursor, list_route="initializations.list",
        filters=list_filters(statuses, None), view_route=KIND_ROUTES.__getitem__,
    )  # fmt: skip
    return jobs_table(request, found, every=False)


@admin_parts.get("/jobs", response_class=HTMLResponse)
def every_job_part(
    request: Request,
    jobs: JobsDep,
    kind: JobKind | None = None,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    cursor: str | None = None,
) -> HTMLResponse:
    found = admin.list_all_jobs(
        request, jobs, limit=PAGE_SIZE, cursor=cursor, kinds=[kind] if kind else None,
        statuses=[status_] if status_ else None, created_after=None,
    )  # fmt: skip
    return jobs_table(request, found, every=True)


def jobs_table(request: Request, found: JobList, *, every: bool) -> HTMLResponse:
    return render(request, "parts/jobs.html", jobs=found.items, more=cursor_of(found.next), every=every)


@parts.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_part(
    request: Request, job_id: str, jobs: JobsDep, settings: SettingsDep, client: str | None = Depends(current_client)
) -> HTMLResponse:
    job = jobs.get(job_id)
    if job is None or job.kind != JobKind.initialization or (client is not None and job.client != client):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"initialization job {job_id!r} does not exist")
    return job_detail(request, job, jobs, token=bool(settings.client_tokens))


@admin_parts.get("/jobs/{job_id}", response_class=HTMLResponse)
def any_job_part(request: Request, job_id: str, jobs: JobsDep, settings: SettingsDep) -> HTMLResponse:
    job = jobs.get(job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id!r} does not exist")
    return job_detail(request, job, jobs, token=bool(settings.client_tokens))


LOG_LINES_SHOWN = 200


def job_detail(request: Request, job: Job, jobs: JobsDep, *, token: bool) -> HTMLResponse:
    view = job_view(job, request, KIND_ROUTES[job.kind])
    lines, _ = jobs.logs.read(job.id, 0)
    logs = []
    for line in lines[-LOG_LINES_SHOWN:]:
        try:
            record = json.loads(line)
        except ValueError:
            record = {"message": line}
        logs.append(record if isinstance(record, dict) else {"message": line})
    timm = timm_snippet(base(request), job.id, token=token) if view.checkpoint else None
    return render(request, "parts/job.html", job=view, terminal=job.terminal, logs=logs, timm=timm)


def base(request: Request) -> str:
    """The address clients reach the service at (LEARNGENE_PUBLIC_URL when set: service.api.public_url)."""
    return str(request.base_url).rstrip("/")


@home.get("/")
def front_page(request: Request) -> RedirectResponse:
    """A person who opens the bare address lands on the catalogue (the API reference is at /docs)."""
    return RedirectResponse(f"{request.scope.get('root_path', '')}/ui", status_code=307)


def install(app: FastAPI) -> None:
    """The pages, their parts and their assets."""
    app.mount(STATIC, Assets(directory=str(files("service.ui") / "static")), name="ui-static")
    for router in (home, pages, parts, admin_parts):
        app.include_router(router)
