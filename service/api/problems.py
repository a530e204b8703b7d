"""RFC 9457 problem details: the one shape of every 4xx and 5xx answer (`application/problem+json`).

`type` is a relative URI, `/problems/<kind>`, one per kind of problem: resolved against the API's own address it
names a document this API serves (GET /problems/<kind>), so it is dereferenceable wherever the service is deployed
and without a domain of ours. A status without a kind of its own (a framework's rare 4xx) is `about:blank`, whose
`title` is the status phrase, as RFC 9457 section 4.2.1 defines. `detail` is the message for this occurrence,
`instance` the request's path; refusals of fields add `errors[]` (`loc`, `msg`, `type`), as FastAPI's 422 did.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import quote

from pydantic import BaseModel, Field
from starlette.responses import JSONResponse
from starlette.types import Scope

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "/problems/"
BLANK = "about:blank"


@dataclass(frozen=True)
class Kind:
    name: str
    status: int
    title: str
    description: str

    @property
    def type(self) -> str:
        return TYPE_PREFIX + self.name


def _kinds(*kinds: tuple[str, int, str, str]) -> dict[str, Kind]:
    return {k[0]: Kind(*k) for k in kinds}


KINDS = _kinds(
    ("bad-request", 400, "Bad Request", "The request could not be read as sent."),
    ("data-unavailable", 400, "Data unavailable",
     "A data or checkpoint reference does not exist or lies outside the allowed data roots (one answer for both)."),
    ("unauthorized", 401, "Unauthorized", "No bearer token: send 'Authorization: Bearer <token>'."),
    ("forbidden", 403, "Forbidden", "The bearer token is not valid here, or the endpoints are disabled."),
    ("not-found", 404, "Not Found", "No such job, template set, file or route."),
    ("method-not-allowed", 405, "Method Not Allowed", "The path exists; the method does not (see the Allow header)."),
    ("conflict", 409, "Conflict",
     "The resource's state does not allow this now: a job that has not succeeded, a version that already exists."),
    ("damaged", 409, "Stored data damaged",
     "A stored file failed its checksum or a version cannot be read: the store, not the request, is at fault."),
    ("gone", 410, "Gone", "The job finished, but its checkpoint file is no longer stored."),
    ("request-timeout", 408, "Request Timeout",
     "The request body did not arrive within LEARNGENE_BODY_TIMEOUT_S of its headers."),
    ("content-too-large", 413, "Content Too Large", "The request body is larger than LEARNGENE_MAX_REQUEST_BYTES."),
    ("range-not-satisfiable", 416, "Range Not Satisfiable",
     "The Range does not overlap the file (Content-Range gives its size)."),
    ("invalid-request", 422, "Invalid request",
     "Fields of the request are out of bounds or inconsistent: `errors` names each one (`loc`) and says why (`msg`)."),
    ("overloaded", 429, "Too Many Requests",
     "The queue is full or the client is at its quota: nothing was accepted; retry after Retry-After seconds."),
    ("job-store-unavailable", 503, "Job store unavailable",
     "Redis (job records, broker) is unreachable: nothing was accepted; retry after Retry-After seconds."),
    ("storage-unavailable", 503, "Object storage unavailable",
     "The template or checkpoint storage is unreachable: nothing was accepted or changed; retry after Retry-After."),
    ("internal-error", 500, "Internal Server Error", "An unexpected failure; the server's log has the details."),
)  # fmt: skip

# The kind of an HTTP exception by its status (raised by the routes, the dependencies and the router itself)
BY_STATUS = {k.status: k for k in reversed(KINDS.values())}  # the first kind listed for a status wins


class FieldProblem(BaseModel):
    loc: list[str | int] = Field(description="where: `body`, `path`, `query` or `header`, then the field's path")
    msg: str
    type: str = Field(description="the kind of refusal, e.g. `value_error`, `missing`, `less_than_equal`")


class ProblemDetails(BaseModel):
    """RFC 9457 problem details (`application/problem+json`), the body of every 4xx and 5xx answer."""

    type: str = Field(
        description="the kind of problem: `/problems/<kind>`, relative to the API (GET it for its description), "
        "or `about:blank` when only the status says what went wrong",
        examples=["/problems/not-found"],
    )
    title: str = Field(description="a short summary of the kind, the same for every occurrence")
    status: int = Field(ge=400, le=599, description="the HTTP status code")
    detail: str = Field(description="what went wrong this time")
    instance: str = Field(description="the request's path", examples=["/v1/initializations/0f3e"])


class ValidationProblem(ProblemDetails):
    """A refused request: `errors` names each field (`loc`) and why (`msg`); the input itself is never echoed."""

    errors: list[FieldProblem]


class ProblemType(BaseModel):
    """What a problem `type` means."""

    type: str
    title: str
    status: int
    description: str


def instance(scope: Scope) -> str:
    """The request's path as a URI reference: percent-encoded, so that nothing the client sent comes back raw."""
    return quote(scope.get("path", "/"), safe="/:@!$&'()*+,;=-._~")


def problem(
    scope: Scope,
    status: int,
    detail: str,
    *,
    kind: Kind | None = None,
    errors: list[dict] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The problem+json response for a status (its kind by default) and this occurrence's detail."""
    kind = kind or BY_STATUS.get(status)
    if kind is not None and kind.status == status:
        type_, title = kind.type, kind.title
    else:
        type_, title = BLANK, HTTPStatus(status).phrase
    body: dict = {"type": type_, "title": title, "status": status, "detail": detail, "instance": instance(scope)}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)
