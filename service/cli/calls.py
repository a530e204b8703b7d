"""How a command talks to the API: the `--url` option, a client with the right token, and every failure of a call
as one line on stderr (exit 3: no answer came; 2: the API answered with an error, or the job failed)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import typer

from service.cli.common import bar_on_stderr, emit, fail
from service.client import ApiError, Client, JobFailed
from service.client_settings import TOKEN_VARIABLE, ClientSettings

UrlOption = Annotated[
    str | None, typer.Option("--url", help="the API's base URL (default: LEARNGENE_URL, else http://127.0.0.1:8000)")
]
API_UNREACHABLE = 3  # exit status when no answer came from the API (2: it answered with an error, or the job failed)


def connect(url: str | None, *, admin: bool = False) -> Client:
    """A client of `--url` (else LEARNGENE_URL) with the token of the call: LEARNGENE_ADMIN_TOKEN for `admin`."""
    settings = ClientSettings()
    given = url or settings.base_url
    try:
        parsed = httpx.URL(given)
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        where = "--url" if url else "LEARNGENE_URL"
        raise fail(f"{where}: {given!r} is not an http:// or https:// URL (http://127.0.0.1:8000, for example)")
    return Client(given, token=settings.token(admin=admin))


def run_call(action: Callable[[], Any]) -> None:
    """Run `action` against the API and print its result; any failure is one line on stderr, never a traceback."""
    emit(answer(action))


def answer(action: Callable[[], Any]) -> Any:
    """What `action` got from the API; any failure is one line on stderr, never a traceback."""
    try:
        return action()
    except httpx.TransportError as exc:
        raise fail(f"cannot reach the API at {_origin(exc)} ({_reason(exc)})", API_UNREACHABLE) from None
    except ApiError as exc:
        quoted = f" (request id {exc.request_id})" if exc.request_id else ""  # what the API's log lines carry
        raise fail(f"the API answered {exc.status}: {_detail(exc)}{_token_hint(exc)}{quoted}") from None
    except (JobFailed, TimeoutError, OSError) as exc:
        raise fail(str(exc)) from None


def _token_hint(error: ApiError) -> str:
    """Where the token of a refused call comes from, when the refusal is about the token."""
    if error.status not in (401, 403) or "disabled" in str(error.detail):  # 403 of an unset admin token: server side
        return ""
    variable = TOKEN_VARIABLE["/admin/" in (error.path or "")]
    return f" (the CLI sends the token in {variable}: set it, or check its value)"


def _origin(exc: httpx.TransportError) -> str:
    try:
        url = exc.request.url
    except RuntimeError:  # raised before a request was built
        return "the configured URL"
    return f"{url.scheme}://{url.netloc.decode()}"


def _reason(exc: httpx.TransportError) -> str:
    """'connection refused', 'timed out', ...: the cause without errno numbers or exception names."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return re.sub(r"^\[Errno -?\d+\] ", "", str(exc)).lower() or type(exc).__name__


def _detail(error: ApiError) -> str:
    """The server's message on one line: the problem's detail, or every refused field (`loc: msg; ...`)."""
    fields = [
        f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg', '')}" for e in error.errors if isinstance(e, dict)
    ]
    return " ".join(("; ".join(fields) if fields else str(error.detail)).split())


def wait_with_bar(client: Client, job_id: str, kind: str = "initializations") -> dict[str, Any]:
    """Wait for a job, showing its phase, steps, loss and ETA on a progress bar (stderr)."""
    with bar_on_stderr("job", "step") as bar:

        def show(job: dict[str, Any]) -> None:
            p = job.get("progress")
            if p:
                bar.total = p["total_steps"]
                bar.update(p["step"] - bar.n)
                eta = p.get("eta_s")
                bar.set_postfix(
                    {
                        "loss": f"{p['loss']:.4f}" if p.get("loss") is not None else "-",
                        "job eta": f"{eta:.0f} s" if eta is not None else "-",
                    }
                )
            phase = job.get("phase")
            bar.set_description(f"{job['status']} ({phase})" if phase else job["status"])

        return client.wait(job_id, kind=kind, on_progress=show)
