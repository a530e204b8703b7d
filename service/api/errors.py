"""Domain errors that reach the HTTP layer, as status codes with a message (never a bare 500 for bad input)."""

from __future__ import annotations

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobs.admission import DataUnavailable, FieldError, IdempotencyConflict, Overloaded
from learngene import IntegrityError
from storage.objects import StorageUnavailable
from templates_store import ConflictError, NotFoundError, RefError


def _handler(code: int, loc: tuple[str, ...] | None = None):
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        detail = [{"loc": list(loc), "msg": str(exc), "type": "value_error"}] if loc else str(exc)
        return JSONResponse({"detail": detail}, status_code=code)

    return handle


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each field. The offending input is never echoed back: it may be huge, hostile, or a NaN that
    JSON cannot even carry (FastAPI's own handler would fail on it with a 500)."""
    errors = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "invalid")), "type": str(e.get("type", "value_error"))}
        for e in exc.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _field_error(request: Request, exc: FieldError) -> JSONResponse:
    errors = [{"loc": list(loc), "msg": msg, "type": "value_error"} for loc, msg in exc.errors]
    return JSONResponse({"detail": errors}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _overloaded(request: Request, exc: Overloaded) -> JSONResponse:
    return JSONResponse(
        {"detail": str(exc)}, status_code=status.HTTP_429_TOO_MANY_REQUESTS,
        headers={"Retry-After": str(exc.retry_after_s)},
    )  # fmt: skip


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    """Redis (job records, broker) unreachable: nothing was accepted; the client may retry shortly."""
    return JSONResponse(
        {"detail": "the job store is unreachable; nothing was accepted, retry shortly"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "5"},
    )  # fmt: skip


async def _storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """Object storage unreachable (the template store, checkpoints): nothing was accepted or changed; retry shortly."""
    return JSONResponse(
        {"detail": "object storage is unreachable; nothing was accepted, retry shortly"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "5"},
    )  # fmt: skip


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(FieldError, _field_error)
    app.add_exception_handler(DataUnavailable, _handler(status.HTTP_400_BAD_REQUEST))
    app.add_exception_handler(Overloaded, _overloaded)
    for error in (RedisConnectionError, RedisTimeoutError, KombuOperationalError):
        app.add_exception_handler(error, _unavailable)
    app.add_exception_handler(StorageUnavailable, _storage_unavailable)
    app.add_exception_handler(NotFoundError, _handler(status.HTTP_404_NOT_FOUND))
    app.add_exception_handler(ConflictError, _handler(status.HTTP_409_CONFLICT))
    app.add_exception_handler(RefError, _handler(status.HTTP_422_UNPROCESSABLE_CONTENT, ("path", "ref")))
    app.add_exception_handler(
        IdempotencyConflict, _handler(status.HTTP_422_UNPROCESSABLE_CONTENT, ("header", "Idempotency-Key"))
    )
    # A stored file that fails its checksum: the store's state, not the server, is at fault (messages name files by
    # their place in the store, never by a server path).
    app.add_exception_handler(IntegrityError, _handler(status.HTTP_409_CONFLICT))
