"""A small Python client of the HTTP API: submit, wait (with progress), download (sha256-verified), cancel.

from service.client import Client
client = Client("http://127.0.0.1:8000")
job = client.submit({"model": "vit_tiny_patch16_224", "overrides": {"depth": 4, ...}})
job = client.wait(job["id"], on_progress=print)
client.download(job["id"], "vit.safetensors")    # or client.download_folder(job["id"], "vit/") for timm's layout
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "cancelled"}


class ApiError(RuntimeError):
    """An error answer: `detail` is its message; `problem` the whole RFC 9457 problem (`type`, `title`, `errors`...)
    when the API sent one."""

    def __init__(self, status: int, detail: str, problem: dict[str, Any] | None = None):
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail, self.problem = status, detail, problem or {}

    @property
    def errors(self) -> list[dict[str, Any]]:
        """A refused request's fields: [{loc, msg, type}]."""
        return self.problem.get("errors") or []

    @classmethod
    def of(cls, response: httpx.Response) -> ApiError:
        try:
            problem = response.json()
        except ValueError:
            return cls(response.status_code, response.text)
        if not isinstance(problem, dict):
            return cls(response.status_code, response.text)
        return cls(response.status_code, str(problem.get("detail") or problem.get("title") or ""), problem)


class JobFailed(RuntimeError):
    def __init__(self, job: dict[str, Any]):
        error = job.get("error") or {}
        super().__init__(f"job {job['id']} {job['status']}: {error.get('type', '')} {error.get('message', '')}".strip())
        self.job = job


class Client:
    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 30.0):
        """`token`: the bearer token of this client (LEARNGENE_CLIENT_TOKENS) or, for admin calls, the admin one."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        response = self.http.request(method, url, **kwargs)
        if response.status_code >= 400:
            raise ApiError.of(response)
        return response.json()

    def submit(self, request: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /v1/initializations. A key is generated when none is given, so a retry of this call is safe."""
        key = idempotency_key or uuid.uuid4().hex
        for attempt in range(3):  # retry transport errors: the key makes a duplicate submission impossible
            try:
                return self._call("POST", "/v1/initializations", json=request, headers={"Idempotency-Key": key})
            except httpx.TransportError:
                if attempt == 2:
                    raise
                time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def condense(self, request: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return self._call("POST", "/v1/admin/condensations", json=request, headers=headers)

    def get(self, job_id: str, kind: str = "initializations") -> dict[str, Any]:
        return self._call("GET", self._job_path(job_id, kind))

    def cancel(self, job_id: str, kind: str = "initializations") -> dict[str, Any]:
        return self._call("DELETE", self._job_path(job_id, kind))

    def release(self, job_id: str) -> dict[str, Any]:
        """Release a succeeded initialization's checkpoint: its bytes leave your quota, its downloads answer 410."""
        return self._call("DELETE", f"{self._job_path(job_id, 'initializations')}/checkpoint")

    def job_pages(
        self,
        *,
        kinds: Sequence[str] = (),
        statuses: Sequence[str] = (),
        created_after: str | None = None,
        limit: int = 50,
    ) -> Iterator[dict[str, Any]]:
        """Pages of jobs (`items`, newest first, and `next`), following each page's `next` link to the last.
        Initializations alone (no `kinds`, or only "initialization") come from /v1/initializations, which a client
        token reads (its own jobs); any other kind from /v1/admin/jobs, with the admin token. `created_after`: an
        ISO 8601 time with a timezone."""
        every_kind = not set(kinds) <= {"initialization"}
        params: dict[str, Any] = {"limit": limit, "status": list(statuses)}
        if every_kind:
            params["kind"] = list(kinds)
        if created_after is not None:
            params["created_after"] = created_after
        page = self._call("GET", "/v1/admin/jobs" if every_kind else "/v1/initializations", params=params)
        while True:
            yield page
            if page["next"] is None:
                return
            page = self._call("GET", page["next"])  # absolute: the same filters and limit, and the cursor

    def jobs(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every job matching the filters of `job_pages`, newest first, fetched a page at a time as they are read."""
        for page in self.job_pages(**filters):
            yield from page["items"]

    def wait(
        self,
        job_id: str,
        *,
        kind: str = "initializations",
        poll_s: float = 0.5,
        timeout_s: float | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job ends; returns it when it succeeded, raises `JobFailed` otherwise."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.get(job_id, kind)
            if on_progress is not None:
                on_progress(job)
            if job["status"] in TERMINAL:
                if job["status"] != "succeeded":
                    raise JobFailed(job)
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout_s} s")
            time.sleep(poll_s)

    def download(self, job_id: str, path: str | Path) -> Path:
        """Stream the checkpoint to `path` (atomically) and check its sha256 against the job's ETag."""
        return self._fetch(f"/v1/initializations/{job_id}/checkpoint", Path(path), f"checkpoint of job {job_id}")

    def download_folder(self, job_id: str, folder: str | Path) -> Path:
        """Write the checkpoint as a timm / Hugging Face folder (model.safetensors, config.json, README.md), each
        file sha256-checked; `timm.create_model(f"local-dir:{folder}", pretrained=True)` then loads it."""
        folder = Path(folder)
        job = self.get(job_id)
        if job["status"] != "succeeded":
            raise ApiError(409, f"job {job_id} is {job['status']}, not succeeded")
        if not job["checkpoint"]["folder"]:
            message = "finished before checkpoints were stored as folders: only model.safetensors is stored"
            raise ApiError(404, f"job {job_id} {message} (`download`); submit the request again for the folder")
        for name in job["checkpoint"]["files"]:
            self._fetch(f"/v1/initializations/{job_id}/files/{name}", folder / name, f"{name} of job {job_id}")
        return folder

    def _fetch(self, url: str, path: Path, what: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        digest = hashlib.sha256()
        try:
            with self.http.stream("GET", url) as response:
                if response.status_code != 200:
                    response.read()
                    raise ApiError.of(response)
                expected = response.headers["ETag"].strip('"')
                with open(tmp, "wb") as f:
                    for chunk in response.iter_bytes(1 << 20):
                        digest.update(chunk)
                        f.write(chunk)
            if digest.hexdigest() != expected:
                raise RuntimeError(f"{what}: sha256 {digest.hexdigest()} != ETag {expected}")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def template_sets(self) -> list[dict[str, Any]]:
        """Every stored version, following the pages."""
        page = self._call("GET", "/v1/template-sets", params={"limit": 500})
        versions = page["items"]
        while page["next"] is not None:
            page = self._call("GET", page["next"])
            versions += page["items"]
        return versions

    def set_alias(self, name: str, alias: str, *, version: int | None = None, rollback: bool = False) -> dict[str, Any]:
        body = {"rollback": True} if rollback else {"version": version}
        return self._call("PUT", f"/v1/admin/template-sets/{name}/aliases/{alias}", json=body)

    @staticmethod
    def _job_path(job_id: str, kind: str) -> str:
        return f"/v1/admin/condensations/{job_id}" if kind == "condensations" else f"/v1/initializations/{job_id}"
