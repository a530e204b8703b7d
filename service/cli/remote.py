"""Client commands against a running API: `learngene submit`, `learngene job status|wait|cancel|download`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from tqdm import tqdm

from jobs.settings import get_settings
from learngene.spec import parse_overrides
from service.cli.common import (
    CALIBRATION_SAMPLES,
    FIT,
    OUT_HELP,
    FitBatch,
    FitLr,
    FitSteps,
    MaxSamples,
    Noise,
    Seed,
    SetOption,
    emit,
    fail,
    is_folder,
)
from service.client import ApiError, Client, JobFailed

app = typer.Typer(no_args_is_help=True, help="Inspect and control jobs of a running API.")
UrlOption = Annotated[str | None, typer.Option("--url", help="API base URL (default: LEARNGENE_API_URL)")]


def _client(url: str | None) -> Client:
    settings = get_settings()
    token = settings.api_token.get_secret_value() if settings.api_token else None
    return Client(url or settings.api_url, token=token)


def _wait(client: Client, job_id: str) -> dict[str, Any]:
    with tqdm(desc="job", unit="step", file=sys.stderr, dynamic_ncols=True) as bar:

        def show(job: dict[str, Any]) -> None:
            p = job.get("progress")
            if p:
                bar.total = p["total_steps"]
                bar.update(p["step"] - bar.n)
                bar.set_postfix({"loss": f"{p['loss']:.4f}" if p.get("loss") is not None else "-"})
            bar.set_description(job["status"])

        return client.wait(job_id, on_progress=show)


def _run(action) -> None:
    try:
        emit(action())
    except (ApiError, JobFailed, TimeoutError, OSError) as exc:
        raise fail(str(exc)) from None


def submit(
    model: Annotated[str, typer.Option(help="timm model name of the descendant")],
    set_: SetOption = None,
    templates: Annotated[str, typer.Option(help="template set reference")] = "demo@prod",
    method: Annotated[str, typer.Option(help="wave, tleg, sws or a baseline (see `learngene init --help`)")] = "wave",
    calibration: Annotated[str | None, typer.Option(help="calibration data reference, as the workers see it")] = None,
    max_samples: MaxSamples = CALIBRATION_SAMPLES,
    steps: FitSteps = FIT.steps,
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
    request = {
        "model": model,
        "method": method,
        "overrides": parse_overrides(set_ or []),
        "template_set": templates,
        "calibration": {"uri": calibration, "max_samples": max_samples} if calibration else None,
        "fit": {"steps": steps, "lr": lr, "batch_size": batch_size, "seed": seed, "noise": noise},
    }

    def action() -> dict[str, Any]:
        with _client(url) as client:
            job = client.submit(request)
            if wait or out:
                job = _wait(client, job["id"])
            if out:
                job["downloaded_to"] = str(_download(client, job["id"], out))
            return job

    _run(action)


@app.command()
def status(job_id: str, url: UrlOption = None) -> None:
    """Print a job."""
    _run(lambda: _client(url).get(job_id))


@app.command("wait")
def wait_cmd(job_id: str, url: UrlOption = None) -> None:
    """Wait for a job to end, showing its progress."""
    _run(lambda: _wait(_client(url), job_id))


@app.command()
def cancel(job_id: str, url: UrlOption = None) -> None:
    """Cancel a job (a running one stops at its next step)."""
    _run(lambda: _client(url).cancel(job_id))


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
