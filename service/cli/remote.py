"""Client commands against a running API: `learngene submit`, `learngene job list|status|wait|cancel|release|
download`."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from jobs.model import JobKind, JobStatus
from service.cli.common import (
    CALIBRATION_SAMPLES,
    FIT,
    OUT_HELP,
    EvalData,
    FitBatch,
    FitLr,
    FitSteps,
    JsonOption,
    MaxSamples,
    Noise,
    Seed,
    SetOption,
    bar_on_stderr,
    emit,
    fail,
    is_folder,
    show_warnings,
)
from service.client import ApiError, Client, JobFailed

app = typer.Typer(no_args_is_help=True, help="Inspect and control jobs of a running API.")
UrlOption = Annotated[str | None, typer.Option("--url", help="API base URL (default: LEARNGENE_API_URL)")]
API_UNREACHABLE = 3  # exit status when no answer came from the API (2: it answered with an error, or the job failed)


def _wait(client: Client, job_id: str) -> dict[str, Any]:
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

        return client.wait(job_id, on_progress=show)


def _client(url: str | None) -> Client:
    from jobs.settings import get_settings  # loads torch (via the data limits): not for --help (start-up time)

    settings = get_settings()
    token = settings.api_token.get_secret_value() if settings.api_token else None
    return Client(url or settings.api_url, token=token)


def _run(action: Callable[[], Any]) -> None:
    """Run `action` against the API and print its result; any failure is one line on stderr, never a traceback."""
    emit(_answer(action))


def _answer(action: Callable[[], Any]) -> Any:
    """What `action` got from the API; any failure is one line on stderr, never a traceback."""
    try:
        return action()
    except httpx.TransportError as exc:
        raise fail(f"cannot reach the API at {_origin(exc)} ({_reason(exc)})", API_UNREACHABLE) from None
    except ApiError as exc:
        quoted = f" (request id {exc.request_id})" if exc.request_id else ""  # what the API's log lines carry
        raise fail(f"the API answered {exc.status}: {_detail(exc)}{quoted}") from None
    except (JobFailed, TimeoutError, OSError) as exc:
        raise fail(str(exc)) from None


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


def submit(
    model: Annotated[str, typer.Option(help="timm model name of the descendant")],
    set_: SetOption = None,
    templates: Annotated[str, typer.Option(help="template set reference")] = "demo@prod",
    method: Annotated[str, typer.Option(help="wave, tleg, sws or a baseline (see `learngene init --help`)")] = "wave",
    calibration: Annotated[str | None, typer.Option(help="calibration data reference, as the workers see it")] = None,
    max_samples: MaxSamples = CALIBRATION_SAMPLES,
    eval_data: EvalData = None,
    steps: FitSteps = None,
    lr: FitLr = FIT.lr,
    batch_size: FitBatch = FIT.batch_size,
    seed: Seed = FIT.seed,
    noise: Noise = FIT.noise,
    wait: Annotated[bool, typer.Option(help="wait for the job, with a progress bar")] = False,
    out: Annotated[
        Path | None, typer.Option(help="download the checkpoint here, as for `job download` (implies --wait)")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Submit an initialization job to the API; prints the job as JSON."""
    from learngene.spec import parse_overrides  # loads timm: imported by the command, not by --help (start-up time)

    request = {
        "model": model,
        "method": method,
        "overrides": parse_overrides(set_ or []),
        "template_set": templates,
        "calibration": {"uri": calibration, "max_samples": max_samples, "eval_uri": eval_data} if calibration else None,
        "fit": {"lr": lr, "batch_size": batch_size, "seed": seed, "noise": noise}
        | ({} if steps is None else {"steps": steps}),  # unset: the service's default for the data given
    }

    def action() -> dict[str, Any]:
        with _client(url) as client:
            job = client.submit(request)
            show_warnings(job["warnings"])  # known at acceptance
            if wait or out:
                job = _wait(client, job["id"])
                known = {c["code"] for c in job["warnings"]}  # shown already; the run adds what the data showed
                show_warnings([c for c in (job.get("result") or {}).get("warnings", []) if c["code"] not in known])
            if out:
                job["downloaded_to"] = str(_download(client, job["id"], out))
            return job

    _run(action)


console = Console(width=None if sys.stdout.isatty() else 160)  # piped output: no truncated columns
MAX_PAGE = 500  # the API's largest page


@app.command("list")
def list_(
    status_: Annotated[
        list[JobStatus] | None, typer.Option("--status", help="only jobs in this status (repeat for several)")
    ] = None,
    kind: Annotated[
        list[JobKind] | None,
        typer.Option(
            help="only jobs of this kind (repeat for several); kinds other than initialization need the "
            "admin token (default: initializations only)"
        ),
    ] = None,
    created_after: Annotated[
        str | None, typer.Option(help="only jobs created after this ISO 8601 time, with a timezone (2026-12-02T10:00Z)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="show at most this many jobs (the newest)")] = 50,
    all_: Annotated[
        bool, typer.Option("--all", help="show every matching job, however many (overrides --limit)")
    ] = False,
    json_: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """List jobs, newest first, following the API's pages."""
    filters = {"kinds": [k.value for k in kind or []], "statuses": [s.value for s in status_ or []],
               "created_after": created_after}  # fmt: skip

    def action() -> tuple[list[dict[str, Any]], bool]:
        """The jobs to show, and whether more match."""
        shown: list[dict[str, Any]] = []
        with _client(url) as client:
            for page in client.job_pages(**filters, limit=MAX_PAGE if all_ else min(limit, MAX_PAGE)):
                shown += page["items"]
                if not all_ and len(shown) >= limit:
                    return shown[:limit], len(shown) > limit or page["next"] is not None
        return shown, False

    jobs, more = _answer(action)
    if more:
        typer.echo(f"the newest {limit} are shown; more match (--limit N or --all)", err=True)
    if json_:
        return emit(jobs)
    table = Table("id", "kind", "status", "phase", "created", "finished", "progress", "attempts")
    for job in jobs:
        p, t = job.get("progress"), job["timings"]
        table.add_row(
            job["id"],
            job["kind"],
            job["status"],
            job.get("phase") or "-",
            t["created_at"],
            t["finished_at"] or "-",
            f"{p['step']}/{p['total_steps']}" if p else "-",
            f"{job['attempts']}/{job['max_attempts']}",
        )
    console.print(table)


@app.command()
def status(job_id: str, url: UrlOption = None) -> None:
    """Print a job (its warnings first, on stderr)."""
    _run(lambda: _warned(_client(url).get(job_id)))


@app.command("wait")
def wait_cmd(job_id: str, url: UrlOption = None) -> None:
    """Wait for a job to end, showing its progress (and its warnings, on stderr)."""
    _run(lambda: _warned(_wait(_client(url), job_id)))


def _warned(job: dict[str, Any]) -> dict[str, Any]:
    """Show the job's warnings: those of its result once it has one (they include the ones known at acceptance)."""
    show_warnings((job.get("result") or {}).get("warnings") or job.get("warnings") or [])
    return job


@app.command()
def logs(
    job_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing lines until the job ends")] = False,
    kind: Annotated[str, typer.Option(help="initializations or condensations")] = "initializations",
    json_: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """Print the job's own log lines (a failed job's last one says why): time, level, message; --json: as stored."""
    client = _client(url)

    def show(line: dict[str, Any]) -> None:
        typer.echo(json.dumps(line) if json_ else f"{line.get('timestamp')} {line.get('level')} {line.get('message')}")

    def run() -> None:
        for line in client.follow_logs(job_id, kind) if follow else client.logs(job_id, kind)[0]:
            show(line)

    _answer(run)


@app.command()
def cancel(job_id: str, url: UrlOption = None) -> None:
    """Cancel a job (a running one stops at its next step, or within LEARNGENE_STOP_GRACE_S)."""
    _run(lambda: _client(url).cancel(job_id))


@app.command()
def release(job_id: str, url: UrlOption = None) -> None:
    """Release a finished job's checkpoint once downloaded: its bytes leave your quota, its files may be removed."""
    _run(lambda: _client(url).release(job_id))


def _download(client: Client, job_id: str, out: Path) -> Path:
    return client.download_folder(job_id, out) if is_folder(out) else client.download(job_id, out)


@app.command()
def download(
    job_id: str,
    out: Annotated[Path, typer.Option(help=OUT_HELP)],
    url: UrlOption = None,
):
    """Download a finished job's checkpoint, verifying the sha256 of each file."""
    _run(lambda: {"job": job_id, "path": str(_download(_client(url), job_id, out))})


def lineage(
    sha256: Annotated[str, typer.Argument(help="of an ancestor's weights, a template-set manifest or a checkpoint")],
    url: UrlOption = None,
):
    """Print where an artifact came from and what came of it: ancestor -> template-set versions -> descendants."""
    _run(lambda: _client(url).lineage(sha256))


def verify(
    folder: Annotated[
        Path,
        typer.Argument(
            help="a checkpoint folder or a template-set version (download --out DIR/, or a files.tar unpacked)"
        ),
    ],
    key: Annotated[
        Path | None, typer.Option(help="the service's public key (PEM); default: the API's /v1/signing-key")
    ] = None,
    url: UrlOption = None,
):
    """Check a checkpoint folder or template-set version against its model.sig: exit 0 only when every file is the
    one the service signed."""
    from storage.signing import SignatureInvalid  # model-signing loads in half a second: only for this command

    if not folder.is_dir():
        raise fail(f"{folder} is not a folder")
    public_key = key.read_bytes() if key is not None else None
    client = Client("http://unused") if key is not None else _client(url)  # no API call when the key is given
    try:
        files = _answer(lambda: client.verify(folder, public_key))
    except SignatureInvalid as exc:
        raise fail(str(exc)) from None
    emit({"folder": str(folder), "verified": True, "files": files})
