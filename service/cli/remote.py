"""Client commands against a running API: `learngene submit`, `learngene job list|status|wait|cancel|release|
download`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Column, Table

from service.cli.calls import UrlOption, answer, connect, run_call, wait_with_bar
from service.cli.common import (
    CALIBRATION_SAMPLES,
    FIT,
    OUT_HELP,
    BodyOption,
    EvalData,
    FitBatch,
    FitLr,
    FitSteps,
    JsonOption,
    MaxSamples,
    Noise,
    Seed,
    SetOption,
    console,
    emit,
    fail,
    is_folder,
    parse_overrides,
    read_body,
    refuse_request_options,
    show_warnings,
)
from service.client import Client, JobKind, JobStatus

app = typer.Typer(no_args_is_help=True, help="Inspect and control jobs of a running API.")


def submit(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="timm model name of the descendant (or give -f)")] = None,
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
    body: BodyOption = None,
    url: UrlOption = None,
) -> None:
    """Submit an initialization job to the API; prints the job as JSON."""
    if body is not None:  # the whole request from the file: options that would also describe it are refused
        refuse_request_options(ctx, keep={"body", "wait", "out", "url"})
        return _submit(read_body(body), wait=wait, out=out, url=url)
    if model is None:
        raise fail("give --model (and the options of the request) or -f REQUEST.json")
    request = {
        "model": model,
        "method": method,
        "overrides": parse_overrides(set_ or []),
        "template_set": templates,
        "calibration": {"uri": calibration, "max_samples": max_samples, "eval_uri": eval_data} if calibration else None,
        "fit": {"lr": lr, "batch_size": batch_size, "seed": seed, "noise": noise}
        | ({} if steps is None else {"steps": steps}),  # unset: the service's default for the data given
    }
    _submit(request, wait=wait, out=out, url=url)


def _submit(request: dict[str, Any], *, wait: bool, out: Path | None, url: str | None) -> None:
    def action() -> dict[str, Any]:
        with connect(url) as client:
            job = client.submit(request)
            show_warnings(job["warnings"])  # known at acceptance
            if wait or out:
                job = wait_with_bar(client, job["id"])
                known = {c["code"] for c in job["warnings"]}  # shown already; the run adds what the data showed
                show_warnings([c for c in (job.get("result") or {}).get("warnings", []) if c["code"] not in known])
            if out:
                job["downloaded_to"] = str(_download(client, job["id"], out))
            return job

    run_call(action)


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
        with connect(url, admin=not set(filters["kinds"]) <= {"initialization"}) as client:
            for page in client.job_pages(**filters, limit=MAX_PAGE if all_ else min(limit, MAX_PAGE)):
                shown += page["items"]
                if not all_ and len(shown) >= limit:
                    return shown[:limit], len(shown) > limit or page["next"] is not None
        return shown, False

    jobs, more = answer(action)
    if more:
        typer.echo(f"the newest {limit} are shown; more match (--limit N or --all)", err=True)
    if json_:
        return emit(jobs)
    whole = {"no_wrap": True}  # ids and times are copied from the table: never folded (the other columns wrap)
    table = Table(
        Column("id", **whole), "kind", "status", "phase", "model", "size", "template set", Column("created", **whole),
        Column("finished", **whole), "progress", "attempts",
    )  # fmt: skip
    for job in jobs:
        p, t = job.get("progress"), job["timings"]
        table.add_row(
            job["id"],
            job["kind"],
            job["status"],
            job.get("phase") or "-",
            *_what(job),
            t["created_at"],
            t["finished_at"] or "-",
            f"{p['step']}/{p['total_steps']}" if p else "-",
            f"{job['attempts']}/{job['max_attempts']}",
        )
    console.print(table)


def _what(job: dict[str, Any]) -> tuple[str, str, str]:
    """A job's model, size (depth x width, as asked) and template set, for the table: an initialization's
    descendant, a condensation's ancestor and the set it publishes, a card's set."""
    request = job.get("request") or {}
    architecture = request.get("ancestor") or request  # a condensation: its ancestor
    overrides = architecture.get("overrides") or {}
    depth, width = overrides.get("depth"), overrides.get("embed_dim")
    size = f"{depth or '-'} x {width or '-'}" if depth or width else "default"
    resolved = job.get("template_set")
    name = (
        f"{resolved['name']}@{resolved['version']}" if resolved else request.get("template_set") or request.get("name")
    )
    return architecture.get("model") or "-", size if architecture.get("model") else "-", name or "-"


@app.command()
def status(job_id: str, url: UrlOption = None) -> None:
    """Print a job (its warnings first, on stderr)."""
    run_call(lambda: _warned(connect(url).get(job_id)))


@app.command("wait")
def wait_cmd(job_id: str, url: UrlOption = None) -> None:
    """Wait for a job to end, showing its progress (and its warnings, on stderr)."""
    run_call(lambda: _warned(wait_with_bar(connect(url), job_id)))


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
    client = connect(url, admin=kind != "initializations")

    def show(line: dict[str, Any]) -> None:
        typer.echo(json.dumps(line) if json_ else f"{line.get('timestamp')} {line.get('level')} {line.get('message')}")

    def run() -> None:
        for line in client.follow_logs(job_id, kind) if follow else client.logs(job_id, kind)[0]:
            show(line)

    answer(run)


@app.command()
def cancel(job_id: str, url: UrlOption = None) -> None:
    """Cancel a job (a running one stops at its next step, or within LEARNGENE_STOP_GRACE_S)."""
    run_call(lambda: connect(url).cancel(job_id))


@app.command()
def release(job_id: str, url: UrlOption = None) -> None:
    """Release a finished job's checkpoint once downloaded: its bytes leave your quota, its files may be removed."""
    run_call(lambda: connect(url).release(job_id))


def _download(client: Client, job_id: str, out: Path) -> Path:
    return client.download_folder(job_id, out) if is_folder(out) else client.download(job_id, out)


@app.command()
def download(
    job_id: str,
    out: Annotated[Path, typer.Option(help=OUT_HELP)],
    url: UrlOption = None,
):
    """Download a finished job's checkpoint, verifying the sha256 of each file."""
    run_call(lambda: {"job": job_id, "path": str(_download(connect(url), job_id, out))})


def lineage(
    sha256: Annotated[str, typer.Argument(help="of an ancestor's weights, a template-set manifest or a checkpoint")],
    url: UrlOption = None,
):
    """Print where an artifact came from and what came of it: ancestor -> template-set versions -> descendants."""
    run_call(lambda: connect(url).lineage(sha256))


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
    client = Client("http://unused") if key is not None else connect(url)  # no API call when the key is given
    try:
        files = answer(lambda: client.verify(folder, public_key))
    except SignatureInvalid as exc:
        raise fail(str(exc)) from None
    emit({"folder": str(folder), "verified": True, "files": files})
