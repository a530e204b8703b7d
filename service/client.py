"""A small Python client of the HTTP API: submit, wait (with progress), download (sha256-verified), cancel.

from service.client import Client
client = Client("http://127.0.0.1:8000")
job = client.submit({"model": "vit_tiny_patch16_224", "overrides": {"depth": 4, ...}})
job = client.wait(job["id"], on_progress=print)
client.download(job["id"], "vit.safetensors")    # or client.download_folder(job["id"], "vit/") for timm's layout
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import httpx_sse

from service.client_settings import ClientSettings


class JobStatus(str, enum.Enum):
    """A job's status as the API reports it (the server's own is jobs.model.JobStatus; a test keeps them equal)."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class JobKind(str, enum.Enum):
    initialization = "initialization"
    condensation = "condensation"
    card = "card"


TERMINAL = {JobStatus.succeeded.value, JobStatus.failed.value, JobStatus.cancelled.value}
# An event stream sends a comment line every LEARNGENE_EVENTS_PING_S (15 s): a minute without a byte is a dead one.
EVENT_TIMEOUT = httpx.Timeout(30.0, read=60.0)
# Every answer carries one (service/api/request_ids.py). Written here: the client imports nothing of the server.
REQUEST_ID_HEADER = "X-Request-ID"


class ApiError(RuntimeError):
    """An error answer (huggingface_hub's errors are the model): `status`; `detail`, its message; `problem`, the whole
    RFC 9457 problem (`type`, `title`, `errors`...) when the API sent one; `request_id`, the `X-Request-ID` the API
    answered with, which its log lines carry (quote it when you report a problem). The subclass says what to do."""

    def __init__(
        self,
        status: int,
        detail: str,
        problem: dict[str, Any] | None = None,
        *,
        request_id: str | None = None,
        path: str | None = None,
    ):
        super().__init__(f"HTTP {status}: {detail}" + (f" (request id {request_id})" if request_id else ""))
        self.status, self.detail, self.problem, self.request_id = status, detail, problem or {}, request_id
        self.path = path  # of the request answered (/v1/admin/... needs the admin token)

    @property
    def errors(self) -> list[dict[str, Any]]:
        """A refused request's fields: [{loc, msg, type}]."""
        return self.problem.get("errors") or []

    @staticmethod
    def of(response: httpx.Response) -> ApiError:
        """The error of an answer of status 400 or more, of the class its status calls for."""
        status = response.status_code
        kind = _ERROR_OF_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
        try:
            problem = response.json()
        except ValueError:
            problem = None
        problem = problem if isinstance(problem, dict) else None
        detail = str(problem.get("detail") or problem.get("title") or "") if problem else response.text
        extra = {"retry_after": _seconds(response.headers.get("Retry-After"))} if kind is Overloaded else {}
        request_id = response.headers.get(REQUEST_ID_HEADER)
        return kind(status, detail, problem, request_id=request_id, path=response.request.url.path, **extra)


class Refused(ApiError):
    """400 or 422: the request is wrong; `errors` names each refused field. Sending it again will not help."""


class Unauthorized(ApiError):
    """401 or 403: no token, a wrong one, or one that may not do this (admin calls need the admin token)."""


class NotFound(ApiError):
    """404, or 410 for a checkpoint released or swept by retention."""


class Conflict(ApiError):
    """409 or 412: an idempotency key reused with another body, a version or alias that changed meanwhile."""


class Overloaded(ApiError):
    """429: over a rate, the queue's depth or a byte quota; `retry_after` is the API's advice in seconds."""

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class ServerError(ApiError):
    """5xx: the server failed. Its log lines under `request_id` say why."""


class Unavailable(ServerError):
    """502, 503 or 504: the API, Redis or object storage is away for now; retry later."""


_ERROR_OF_STATUS: dict[int, type[ApiError]] = {
    400: Refused, 422: Refused, 401: Unauthorized, 403: Unauthorized, 404: NotFound, 410: NotFound,
    409: Conflict, 412: Conflict, 429: Overloaded, 502: Unavailable, 503: Unavailable, 504: Unavailable,
}  # fmt: skip


def _seconds(header: str | None) -> float | None:
    try:
        return float(header) if header else None
    except ValueError:  # an HTTP date, which this API never sends
        return None


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

    @classmethod
    def from_env(cls, url: str | None = None, *, admin: bool = False) -> Client:
        """A client of `url` or LEARNGENE_URL, sending LEARNGENE_API_TOKEN (LEARNGENE_ADMIN_TOKEN with `admin`)."""
        settings = ClientSettings()
        return cls(url or settings.base_url, token=settings.token(admin=admin))

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

    def events(
        self, job_id: str, kind: str = "initializations", *, last_event_id: str | None = None, retries: int = 5
    ) -> Iterator[dict[str, Any]]:
        """The job's Server-Sent Events as they come (each `{"id", "event", "data"}`: status, warning, progress,
        and last `end`, whose data is the finished job). A dropped connection is resumed after the last event
        seen (`Last-Event-ID`), up to `retries` times in a row."""
        url, dropped = f"{self._job_path(job_id, kind)}/events", 0
        while True:
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            try:
                with httpx_sse.connect_sse(self.http, "GET", url, headers=headers, timeout=EVENT_TIMEOUT) as source:
                    if source.response.status_code != 200:
                        source.response.read()
                        raise ApiError.of(source.response)
                    for sse in source.iter_sse():
                        if not sse.data:  # a keep-alive comment: the SSE spec dispatches nothing, httpx-sse does
                            continue
                        dropped, last_event_id = 0, sse.id or last_event_id
                        yield {"id": sse.id, "event": sse.event, "data": sse.json()}
                        if sse.event == "end":
                            return
            except httpx.TransportError:
                pass
            dropped += 1  # closed before its end (the API restarted, a proxy cut it): resume
            if dropped > retries:
                raise ConnectionError(f"the event stream of job {job_id} dropped {dropped} times in a row")
            time.sleep(min(0.5 * 2**dropped, 8))

    def download(self, job_id: str, path: str | Path) -> Path:
        """Stream the checkpoint to `path` (atomically) and check its sha256 against the job's ETag."""
        return self._fetch(f"/v1/initializations/{job_id}/checkpoint", Path(path), f"checkpoint of job {job_id}")

    def download_folder(self, job_id: str, folder: str | Path) -> Path:
        """Write the checkpoint as a timm / Hugging Face folder (model.safetensors, config.json, README.md and the
        service's signature model.sig: `verify`), each file sha256-checked;
        `timm.create_model(f"local-dir:{folder}", pretrained=True)` then loads it."""
        folder = Path(folder)
        job = self.get(job_id)
        if job["status"] != "succeeded":
            raise Conflict(409, f"job {job_id} is {job['status']}, not succeeded")
        if not job["checkpoint"]["folder"]:
            message = "finished before checkpoints were stored as folders: only model.safetensors is stored"
            raise NotFound(404, f"job {job_id} {message} (`download`); submit the request again for the folder")
        for name in job["checkpoint"]["files"]:
            self._fetch(f"/v1/initializations/{job_id}/files/{name}", folder / name, f"{name} of job {job_id}")
        return folder

    def logs(self, job_id: str, kind: str = "initializations", since: int = 0) -> tuple[list[dict[str, Any]], int, str]:
        """The job's own log lines from position `since` (each a dict: timestamp, level, logger, message,
        request_id, job_id), the position to ask from next, and the job's status when they were read."""
        response = self.http.get(f"{self._job_path(job_id, kind)}/logs", params={"since": since})
        if response.status_code != 200:
            raise ApiError.of(response)
        lines = [json.loads(line) for line in response.text.splitlines() if line]
        return lines, int(response.headers["Log-Next"]), response.headers["Job-Status"]

    def follow_logs(
        self, job_id: str, kind: str = "initializations", *, poll_s: float = 1.0
    ) -> Iterator[dict[str, Any]]:
        """Every log line of the job, as it comes, until the job has ended and its last line is read."""
        since = 0
        while True:
            lines, since, status = self.logs(job_id, kind, since)
            yield from lines
            if status in TERMINAL and not lines:
                return
            if not lines:
                time.sleep(poll_s)

    def lineage(self, sha256: str) -> dict[str, Any]:
        """The graph around an artifact by its sha256 (ancestor weights, template-set manifest or checkpoint)."""
        return self._call("GET", f"/v1/lineage/{sha256}")

    def signing_key(self) -> bytes:
        """The service's public signing key (PEM): what its checkpoint folders' `model.sig` is checked against."""
        response = self.http.get("/v1/signing-key")
        if response.status_code != 200:
            raise ApiError.of(response)
        return response.content

    def verify(self, folder: str | Path, public_key: bytes | None = None) -> list[str]:
        """Check a downloaded checkpoint folder or template-set version against its `model.sig` and the service's
        key (fetched when not given); the files it vouches for. Raises `SignatureInvalid` for a changed, missing
        or extra file, or a signature by another key."""
        # Imported here: OpenSSF model-signing loads in about half a second, which a client that never verifies
        # should not pay.
        from storage.signing import SIGNATURE, verify_folder

        folder = Path(folder)
        verify_folder(folder, public_key if public_key is not None else self.signing_key())
        return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != SIGNATURE)

    def _fetch(self, url: str, path: Path, what: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        try:
            expected, sha256 = self._stream_to(url, tmp)
            if sha256 != expected:
                raise RuntimeError(f"{what}: sha256 {sha256} != ETag {expected}")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def _stream_to(self, url: str, path: Path) -> tuple[str, str]:
        """GET `url` into `path`, a chunk at a time; the response's ETag and the sha256 of what was written."""
        digest = hashlib.sha256()
        with self.http.stream("GET", url) as response:
            if response.status_code != 200:
                response.read()
                raise ApiError.of(response)
            with open(path, "wb") as f:
                for chunk in response.iter_bytes(1 << 20):
                    digest.update(chunk)
                    f.write(chunk)
            return response.headers["ETag"].strip('"'), digest.hexdigest()

    def template_sets(self, **query: Any) -> list[dict[str, Any]]:
        """Every stored version, following the pages. `query`: `name`; `img_size`, `in_chans`, `num_classes` (only
        the sets condensed for that domain); `depth` and `embed_dim` (ranked by their card's prediction at that size,
        the best first, each with the `prediction` and the card row it used)."""
        params = {key: value for key, value in query.items() if value is not None} | {"limit": 500}
        page = self._call("GET", "/v1/template-sets", params=params)
        versions = page["items"]
        while page["next"] is not None:
            page = self._call("GET", page["next"])
            versions += page["items"]
        return versions

    def template_set(self, ref: str) -> dict[str, Any]:
        """One version (`name`, `name@N` or `name@alias`): `ref`, `digest`, `aliases` and its `manifest`."""
        return self._call("GET", f"/v1/template-sets/{ref}")

    def card(self, ref: str) -> dict[str, Any]:
        """The version's current quality card: held-out accuracy by size, next to timm's initialization."""
        return self._call("GET", f"/v1/template-sets/{ref}/card")

    def card_files(self, ref: str) -> dict[str, bytes]:
        """The card as files: README.md (the model card) and card.png (its plot)."""
        files = {}
        for name in ("README.md", "card.png"):
            response = self.http.get(f"/v1/template-sets/{ref}/{name}")
            if response.status_code != 200:
                raise ApiError.of(response)
            files[name] = response.content
        return files

    def refresh_card(self, ref: str, *, idempotency_key: str | None = None) -> dict[str, Any]:
        """Measure the version's card again (an admin job; wait for it with `wait(id, kind="cards")`)."""
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return self._call("POST", f"/v1/admin/template-sets/{ref}/card", headers=headers)

    def download_template_set(self, ref: str, folder: str | Path) -> Path:
        """Write the template-set version `ref` (`name@N` or `name@alias`) into `folder`: its manifest.json (whose
        sha256 is checked against the ETag), the files it names and the service's signature model.sig (`verify`)."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.") as scratch:
            archive = Path(scratch) / "files.tar"
            expected, _ = self._stream_to(f"/v1/template-sets/{ref}/files.tar", archive)  # ETag: the manifest's
            with tarfile.open(archive) as tar:
                tar.extractall(scratch, filter="data")  # no links, no paths outside, no device files
            unpacked = next(p for p in Path(scratch).iterdir() if p.is_dir())
            if hashlib.sha256((unpacked / "manifest.json").read_bytes()).hexdigest() != expected:
                raise RuntimeError(f"template set {ref}: manifest.json does not match the ETag {expected}")
            folder.mkdir(exist_ok=True)
            for file in unpacked.iterdir():
                os.replace(file, folder / file.name)
        return folder

    def set_alias(self, name: str, alias: str, *, version: int | None = None, rollback: bool = False) -> dict[str, Any]:
        body = {"rollback": True} if rollback else {"version": version}
        return self._call("PUT", f"/v1/admin/template-sets/{name}/aliases/{alias}", json=body)

    @staticmethod
    def _job_path(job_id: str, kind: str) -> str:
        """`kind`: initializations, condensations or cards (the last two are admin routes)."""
        return f"/v1/initializations/{job_id}" if kind == "initializations" else f"/v1/admin/{kind}/{job_id}"
