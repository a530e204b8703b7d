"""Request ids (`X-Request-ID`): taken from the request when it is a plain token, made otherwise; answered in the
response header of every answer; on every log line of the request (uvicorn's access line included) and, through
the job record, of the job it creates (`jobs.logs`).

Both this middleware and the HTTP metrics wrap the whole application, Starlette's ServerErrorMiddleware included:
`app.add_middleware` would place them inside it, where its 500 answers are never seen.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobs.logs import REQUEST_ID_HEADER, accepted_request_id, request_id_var

_HEADER = REQUEST_ID_HEADER.lower().encode("latin-1")


class RequestIds:
    """Pure ASGI middleware: the request id of each HTTP request, in the log context and the response header."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        sent = next((value for name, value in scope["headers"] if name == _HEADER), None)
        request_id = accepted_request_id(sent)

        async def with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        # Set, not reset: the server runs each request in a task of its own, and its lines after the application
        # returns (the traceback of an unhandled error) belong to this request too.
        request_id_var.set(request_id)
        await self.app(scope, receive, with_id)


def wrap_outermost(app: FastAPI, *middleware: Callable[[ASGIApp], ASGIApp]) -> None:
    """Wrap the application's whole middleware stack (built on its first request) in `middleware`, the first
    outermost."""
    build = app.build_middleware_stack

    def build_wrapped() -> ASGIApp:
        stack = build()
        for wrap in reversed(middleware):
            stack = wrap(stack)
        return stack

    app.build_middleware_stack = build_wrapped  # type: ignore[method-assign]
