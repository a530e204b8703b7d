"""What every command shares: error reporting, progress bars, JSON output, the configured store, and the options
whose defaults come from the models they fill.

`learngene --help` imports this module: nothing here loads torch until a command uses the store or the method."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from tqdm import tqdm

from learngene.fit_settings import Calibration, FitSettings

if TYPE_CHECKING:
    from learngene.train.loop import Progress
    from templates_store import TemplateStore

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


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn input and store errors into one readable line and exit status 2 (no traceback)."""
    # Imported when a command runs, not with the module: both load torch, which --help never needs (start-up time).
    from learngene.errors import LearngeneError
    from templates_store import StoreError

    try:
        yield
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "input"
        raise fail(f"{field}: {first['msg']}") from None
    except (LearngeneError, StoreError, OSError) as exc:  # the user's own inputs and files; a bug keeps its traceback
        raise fail(str(exc)) from None


def bar_on_stderr(desc: str, unit: str, total: int | None = None) -> tqdm:
    """The progress bar of every job command: on stderr, as stdout carries the JSON result."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)


@contextlib.contextmanager
def progress_bar(total: int, desc: str) -> Iterator[Any]:
    with bar_on_stderr(desc, "step", total) as bar:

        def update(p: Progress) -> None:
            bar.total = p.total_steps  # known once the data is open (a run given in epochs)
            bar.update(p.step - bar.n)
            post = {"loss": f"{p.loss:.4f}", "img/s": f"{p.images_per_s:.0f}"}
            if p.accuracy is not None:
                post["acc"] = f"{p.accuracy:.3f}"
            bar.set_postfix(post)

        yield update


def show_warnings(warnings: list[dict[str, Any]]) -> None:
    """A job's caveats (`learngene.quality.caveats`), one line each on stderr, before its JSON summary."""
    for caveat in warnings:
        typer.echo(f"warning: {caveat['message']}", err=True)


def emit(summary: Any) -> None:
    """The command's result as one JSON line on stdout (the last line, for scripts)."""
    typer.echo(json.dumps(summary, sort_keys=True, default=str))


@lru_cache
def get_store() -> TemplateStore:
    # Imported on first use: the store loads torch, which --help and the client commands never need (start-up time).
    from jobs.settings import get_settings
    from jobs.storage import template_store

    return template_store(get_settings())


def is_folder(out: Path) -> bool:
    """`--out` of a checkpoint: a `.safetensors` path is the weights alone; any other path is a timm / Hugging Face
    folder (model.safetensors, config.json, README.md)."""
    return out.suffix != ".safetensors"
