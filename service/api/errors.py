"""Every error that reaches the HTTP layer, as an RFC 9457 problem (service/api/problems.py): domain errors by their
kind, HTTP exceptions (the routes', the dependencies', the router's own 404 and 405) by their status, refused fields
as a 422 naming each field, and anything unexpected as a 500 that says nothing of the server (never a bare 500 for
bad input, never a traceback or a path)."""

from __future__ import annotations

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException

from jobs.admission import DataUnavailable, IdempotencyConflict
from jobs.limits import FieldError, Overloaded
from learngene.errors import IntegrityError
from service.api.problems import KINDS, problem
from storage.objects import StorageUnavailable
from templates_store import BrokenVersion, ConflictError, NotFoundError, RefError

RETRY_SOON = {"Retry-After": "5"}
MAX_LISTED = 3  # fields named in `detail`
# What a refusal may echo: 80,000 unknown keys, or a 900 KB reference named in a message, would otherwise come back
# several times their size.
MAX_ERRORS = 20  # entries of `errors`; `detail` says how many there were
MAX_TEXT = 300  # characters of any message or field name


def _short(text: str) -> str:
    return text if len(text) <= MAX_TEXT else f"{text[: MAX_TEXT - 40]}... ({len(text):,} characters)"


def invalid(request: Request, errors: list[dict]) -> JSONResponse:
    """422 with `errors[]`; `detail` names the first fields, so that a one-line reader (the CLI) still says which."""
    shown = [{**e, "loc": [_short(p) if isinstance(p, str) else p for p in e["loc"]], "msg": _short(e["msg"])}
             for e in errors[:MAX_ERRORS]]  # fmt: skip
    named = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in shown[:MAX_LISTED])
    more = f" (and {len(errors) - MAX_LISTED} more)" if len(errors) > MAX_LISTED else ""
    detail = f"invalid request: {named}{more}" if errors else "invalid request"
    return problem(
        request.scope, status.HTTP_422_UNPROCESSABLE_CONTENT, detail, kind=KINDS["invalid-request"], errors=shown
    )


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each field. The offending input is never echoed back: it may be huge, hostile, or a NaN that
    JSON cannot even carry (FastAPI's own handler would fail on it with a 500)."""
    errors = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "invalid")), "type": str(e.get("type", "value_error"))}
        for e in exc.errors()
    ]
    return invalid(request, errors)


async def _field_error(request: Request, exc: FieldError) -> JSONResponse:
    return invalid(request, [{"loc": list(loc), "msg": msg, "type": "value_error"} for loc, msg in exc.errors])


def _located(*loc: str):
    """A domain error about one field (a template-set reference, the Idempotency-Key header): a 422 naming it."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return invalid(request, [{"loc": list(loc), "msg": str(exc), "type": "value_error"}])

    return handle


def _of_kind(kind: str, headers: dict[str, str] | None = None):
    """A domain error whose message is the problem's detail."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return problem(request.scope, KINDS[kind].status, _short(str(exc)), kind=KINDS[kind], headers=headers)

    return handle


async def _http(request: Request, exc: HTTPException) -> JSONResponse:
    """The routes' and the framework's HTTP errors; their headers (WWW-Authenticate, Allow, Content-Range) are kept."""
    return problem(request.scope, exc.status_code, str(exc.detail), headers=exc.headers)


async def _overloaded(request: Request, exc: Overloaded) -> JSONResponse:
    return problem(
        request.scope, status.HTTP_429_TOO_MANY_REQUESTS, str(exc), headers={"Retry-After": str(exc.retry_after_s)}
    )


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    """Redis (job records, broker) unreachable: nothing was accepted; the client may retry shortly."""
    return problem(
        request.scope,
        status.HTTP_503_SERVICE_UNAVAILABLE,
        "the job store is unreachable; nothing was accepted, retry shortly",
        kind=KINDS["job-store-unavailable"],
        headers=RETRY_SOON,
    )


async def _storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """Object storage unreachable (the template store, checkpoints): nothing was accepted or changed; retry shortly."""
    return problem(
        request.scope,
        status.HTTP_503_SERVICE_UNAVAILABLE,
        "object storage is unreachable; nothing was accepted, retry shortly",
        kind=KINDS["storage-unavailable"],
        headers=RETRY_SOON,
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    """Anything else: a 500 problem that names nothing of the server (its message may hold paths or secrets). The
    server still logs the traceback: Starlette re-raises the exception after this answer is sent."""
    return problem(
        request.scope,
        status.HTTP_500_INTERNAL_SERVER_ERROR,
        "the server failed unexpectedly; nothing about it is said here, its log has the details",
        kind=KINDS["internal-error"],
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(FieldError, _field_error)
    app.add_exception_handler(DataUnavailable, _of_kind("data-unavailable"))
    app.add_exception_handler(Overloaded, _overloaded)
    for error in (RedisConnectionError, RedisTimeoutError, KombuOperationalError):
        app.add_exception_handler(error, _unavailable)
    app.add_exception_handler(StorageUnavailable, _storage_unavailable)
    app.add_exception_handler(NotFoundError, _of_kind("not-found"))
    app.add_exception_handler(ConflictError, _of_kind("conflict"))
    app.add_exception_handler(RefError, _located("path", "ref"))
    app.add_exception_handler(IdempotencyConflict, _located("header", "Idempotency-Key"))
    # A stored file that fails its checksum, a version folder that cannot be used: the store's state, not the server,
    # is at fault (messages name files by their place in the store, never by a server path).
    app.add_exception_handler(IntegrityError, _of_kind("damaged"))
    app.add_exception_handler(BrokenVersion, _of_kind("damaged"))
    app.add_exception_handler(Exception, _unexpected)
