"""The error answers of every operation in the OpenAPI document, in one place: each 4xx/5xx it can give, as a
`ProblemDetails` (or, for 422, `ValidationProblem`) under `application/problem+json`.

Most statuses follow from what the operation takes, read off the generated document itself (so operation ids,
security schemes and tags set elsewhere do not matter here): a bearer token -> 401, 403; a path parameter -> 404;
any parameter or body -> 422; a body -> 413, and 400 for bytes that are not JSON text; a /v1 operation (job records
in Redis, object storage) -> 503. What only an operation's code knows (a submission's 400 and 429, a download's 409,
410 and 416, a damaged version's 409) is in `RAISES`, keyed by method and path. A status an operation declares
itself (`responses=`) without a body of its own gets the problem content too.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI

from service.api.problems import KINDS, MEDIA_TYPE, FieldProblem, ProblemDetails, ProblemType, ValidationProblem

SUBMISSION = (400, 404, 409, 429)  # data unavailable, unknown template set, damaged version, queue full / quota
DOWNLOAD = (409, 410, 416)  # not succeeded, no longer stored, range outside the file
RAISES: dict[str, tuple[int, ...]] = {
    "POST /v1/initializations": SUBMISSION,
    "POST /v1/admin/condensations": SUBMISSION,
    "POST /v1/admin/template-sets/{ref}/card": SUBMISSION,
    "PUT /v1/admin/template-sets/{name}/aliases/{alias}": (409,),
    "GET /v1/template-sets/{ref}": (409,),
    "GET /v1/template-sets/{ref}/card": (409,),
    "GET /v1/template-sets/{ref}/card.png": (409,),
    "GET /v1/template-sets/{ref}/README.md": (409,),
    "GET /v1/initializations/{job_id}/checkpoint": DOWNLOAD,
    "HEAD /v1/initializations/{job_id}/checkpoint": DOWNLOAD,
    "GET /v1/initializations/{job_id}/files/{name}": DOWNLOAD,
    "HEAD /v1/initializations/{job_id}/files/{name}": DOWNLOAD,
    "GET /v1/initializations/{job_id}/files.tar": (409, 410),
    "DELETE /v1/initializations/{job_id}/checkpoint": (409,),  # not succeeded
    "GET /metrics": (503,),  # job counts come from the job store
}
STATUSES = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found", 409: "conflict",
            410: "gone", 413: "content-too-large", 416: "range-not-satisfiable", 422: "invalid-request",
            429: "overloaded"}  # fmt: skip
UNAVAILABLE = ("job-store-unavailable", "storage-unavailable")
REF = "#/components/schemas/"


def error_statuses(method: str, path: str, operation: dict[str, Any]) -> set[int]:
    parameters = operation.get("parameters", [])
    where = {p.get("in") for p in parameters}
    headers = {p.get("name", "").lower() for p in parameters if p.get("in") == "header"}
    codes = set(RAISES.get(f"{method.upper()} {path}", ()))
    if operation.get("security") or "authorization" in headers:
        codes |= {401, 403}
    if "path" in where:
        codes.add(404)
    if parameters or "requestBody" in operation:
        codes.add(422)
    if "requestBody" in operation:  # too large; or not even text (FastAPI cannot decode it: 400)
        codes |= {400, 413}
    if path.startswith("/v1/"):
        codes.add(503)
    declared = {int(code) for code in operation.get("responses", {}) if code.isdigit() and int(code) >= 400}
    return codes | declared


def problem_response(code: int) -> dict[str, Any]:
    schema = "ValidationProblem" if code == 422 else "ProblemDetails"
    if code == 503:
        description = " Or: ".join(KINDS[kind].description for kind in UNAVAILABLE)
    elif code in STATUSES:
        description = KINDS[STATUSES[code]].description
    else:
        description = HTTPStatus(code).phrase
    return {"description": description, "content": {MEDIA_TYPE: {"schema": {"$ref": REF + schema}}}}


def with_problems(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with every operation's error answers as problems, and FastAPI's own 422 schema gone."""
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for code in sorted(error_statuses(method, path, operation)):
                own = responses.get(str(code), {}).get("content")
                if own and code != 422:  # a body of its own (/readyz's Health); 422's is FastAPI's, replaced
                    continue
                responses[str(code)] = problem_response(code)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    for model in (ProblemDetails, ValidationProblem, FieldProblem, ProblemType):
        found = model.model_json_schema(ref_template=REF + "{model}", mode="serialization")
        schemas.update(found.pop("$defs", {}))
        schemas[model.__name__] = found
    return document


def document(app: FastAPI) -> None:
    """Make `app`'s OpenAPI document (built once, on first use) carry the problems of every operation."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = with_problems(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
