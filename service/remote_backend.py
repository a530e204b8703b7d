"""The `remote` backend of `learngene.create_model(..., url=...)` (entry point of `learngene.backends`): the service
at `url` builds the model through its client."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import httpx

from service.client import ApiError, Client


class RemoteBackend:
    """The service at `url` builds the model; its checkpoint folder is downloaded, each file's sha256 checked."""

    def __init__(self, url: str):
        self.url = url

    def initialize(self, request: dict[str, Any], folder: Path) -> None:
        with Client.from_env(self.url) as client:
            job_id = client.submit(request)["id"]
            try:
                client.wait(job_id)
            except BaseException:  # interrupted, or the wait gave up: the job is of no use to anyone now
                with contextlib.suppress(ApiError, httpx.TransportError):
                    client.cancel(job_id)
                raise
            client.download_folder(job_id, folder)
            client.release(job_id)  # downloaded: its bytes leave this client's quota

    def template_sets(self, **wanted: Any) -> list[dict[str, Any]]:
        with Client.from_env(self.url) as client:
            return client.template_sets(**wanted)
