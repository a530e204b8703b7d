"""What every command shares: error reporting, progress bars, JSON output, the configured store, and the options
whose defaults come from the models they fill.

The remote commands (submit, job ..., admin ...) import only this and `service.cli.calls`: nothing here loads the
method or a server (the import-linter contract on the light client); what the commands that work on this machine
share is in `service.cli.machine`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from tqdm import tqdm
from typer._click.core import ParameterSource  # typer's own (vendored) click

from learngene.fit_settings import Calibration, FitSettings

SetOption = Annotated[list[str] | None, typer.Option("--set", help="architecture override key=value (repeatable)")]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]

# Defaults come from the models the options fill, so a command and the request it makes cannot disagree.
FIT = FitSettings()
CALIBRATION_SAMPLES = Calibration.model_fields["max_samples"].default
Recipe = Annotated[str, typer.Option(help="deit: the paper's augmentation, Mixup/CutMix and lr scaling; plain: none")]
Workers = Annotated[int | None, typer.Option(help="DataLoader worker processes (default: the cores less one, max 8)")]
# The scaler-fitting options of `init` (on this machine) and `submit` (to the API).
MaxSamples = Annotated[int | None, typer.Option(help="seeded subset of the calibration data")]
EvalData = Annotated[
    str | None, typer.Option(help="held-out labelled data: the descendant's accuracy on it is reported")
]
FitSteps = Annotated[
    int | None,
    typer.Option(help=f"scaler-fitting steps (default {FIT.steps} with calibration data, else 0: pure inheritance)"),
]
FitLr = Annotated[float, typer.Option(help="scaler-fitting learning rate")]
FitBatch = Annotated[int, typer.Option(help="scaler-fitting batch size")]
Noise = Annotated[float, typer.Option(help="eps of the noise added to inherited scalers")]
Seed = Annotated[int, typer.Option(help="seed of the noise, the calibration subset and the batches")]
# Where a checkpoint goes (`init`, `job download`, `submit`): see `is_folder`.
OUT_HELP = "a folder for timm / Hugging Face (model.safetensors, config.json, README.md), or a .safetensors file"


# Tables on stdout: a terminal's width, or wide enough when piped that no column of a job or a set is folded.
console = Console(width=None if sys.stdout.isatty() else 240)


def parse_overrides(pairs: list[str], option: str = "--set") -> dict[str, Any]:
    """`["depth=4", "class_token=false", "mlp_ratio=4.0"]` -> typed dict (JSON literals, else strings)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise fail(f"{option}: expected key=value, got {pair!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


BodyOption = Annotated[
    Path | None, typer.Option("--file", "-f", help="the request's JSON body from this file ('-': standard input)")
]


def read_body(path: Path) -> dict[str, Any]:
    """A request body written by the user (`-f`): a JSON object, or one line of error."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as exc:
        raise fail(f"--file: cannot read {path} ({exc.strerror or exc})") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"--file: {path} is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(body, dict):
        raise fail(f"--file: {path} holds a JSON {type(body).__name__}, not an object")
    return body


def refuse_request_options(ctx: typer.Context, keep: set[str]) -> None:
    """With `-f`, the file is the whole request: an option that also describes it, given too, is refused."""
    given = [
        p.opts[0] for p in ctx.command.params
        if p.name not in keep and ctx.get_parameter_source(p.name) is not ParameterSource.DEFAULT
    ]  # fmt: skip
    if given:
        raise fail(f"{', '.join(given)}: the request comes from --file; give its fields there, not as options")


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def bar_on_stderr(desc: str, unit: str, total: int | None = None) -> tqdm:
    """The progress bar of every job command: on stderr, as stdout carries the JSON result."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)


def show_warnings(warnings: list[dict[str, Any]]) -> None:
    """A job's caveats (`learngene.quality.caveats`), one line each on stderr, before its JSON summary."""
    for caveat in warnings:
        typer.echo(f"warning: {caveat['message']}", err=True)


def emit(summary: Any) -> None:
    """The command's result as one JSON line on stdout (the last line, for scripts)."""
    typer.echo(json.dumps(summary, sort_keys=True, default=str))


def is_folder(out: Path) -> bool:
    """`--out` of a checkpoint: a `.safetensors` path is the weights alone; any other path is a timm / Hugging Face
    folder (model.safetensors, config.json, README.md)."""
    return out.suffix != ".safetensors"
