"""Bounds on request bodies, their size and the time they take to arrive (pure ASGI, so it also stops a chunked
upload without a Content-Length).

The body is read here, up to the bound, before the application sees it: an application that reads the body itself
would turn an exception raised mid-read into its own 400 ("error parsing the body") instead of a 413.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.problems import KINDS, problem


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 30.0):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and (len(declared) > 19 or int(declared) > self.max_bytes):
            return await self._refuse(scope, receive, send)
        chunks, seen, more = [], 0, True
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        while more:
            try:
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except TimeoutError:
                detail = f"the request body did not arrive within {self.timeout_s:g} s"
                refusal = problem(scope, 408, detail, kind=KINDS["request-timeout"])
                return await refusal(scope, receive, send)
            if message["type"] != "http.request":  # the client went away
                return None
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                return await self._refuse(scope, receive, send)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:  # after the body: disconnect notices, as the server sends them
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = problem(scope, 413, f"the request body is larger than {self.max_bytes} bytes")
        await refusal(scope, receive, send)
