"""A deadline for a request's headers, which uvicorn does not have: its HTTP/1.1 protocol (h11) with a timer that
runs while a connection waits for a request's headers (from the connection, or from its last response) and stops
once they are complete. A client that dribbles its headers (slowloris) holds a connection for at most
`LEARNGENE_HEADER_TIMEOUT_S`, then gets a 408 and the connection is closed, as nginx's `client_header_timeout` does.
`learngene serve` hands the class to uvicorn as its `http` protocol."""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.h11_impl import H11Protocol

from jobs.settings import get_settings

log = logging.getLogger(__name__)

TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class HeaderTimeoutH11(H11Protocol):
    _headers_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:  # a request's headers are in
            self._stop_waiting()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():  # kept alive: the next request's headers have the same deadline
            self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        self._stop_waiting()
        self._headers_deadline = self.loop.call_later(get_settings().header_timeout_s, self._headers_late)

    def _stop_waiting(self) -> None:
        if self._headers_deadline is not None:
            self._headers_deadline.cancel()
            self._headers_deadline = None

    def _headers_late(self) -> None:
        self._headers_deadline = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        log.info("headers not complete within %g s; closing the connection", get_settings().header_timeout_s)
        self.transport.write(TIMED_OUT)
        self.transport.close()
