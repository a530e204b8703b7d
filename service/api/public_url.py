"""The API's own address as its clients reach it. Links, `Location` and `next` are built from the request's scheme,
host and root path; with `LEARNGENE_PUBLIC_URL` set those come from the setting, not from whatever `Host` a client
sent (pure ASGI, outermost, so every route and the access log see the same)."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send


class PublicUrl:
    def __init__(self, app: ASGIApp, url: str):
        parts = urlsplit(url)
        self.app = app
        self.scheme = parts.scheme
        self.host = parts.netloc.encode("latin-1")
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.root_path = parts.path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope["headers"] if k != b"host"] + [(b"host", self.host)]
            scope = {**scope, "scheme": self.scheme, "headers": headers, "root_path": self.root_path,
                     "server": (self.host.decode("latin-1").rsplit(":", 1)[0], self.port)}  # fmt: skip
        await self.app(scope, receive, send)
