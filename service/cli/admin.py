"""`learngene admin ...`: the admin endpoints of a running API, with LEARNGENE_ADMIN_TOKEN (a condensation job;
the alias moves are `learngene templates promote|rollback --url`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from service.cli.calls import UrlOption, connect, run_call, wait_with_bar
from service.cli.common import BodyOption, parse_overrides, read_body, refuse_request_options, show_warnings

app = typer.Typer(no_args_is_help=True, help=__doc__)


@app.command()
def condense(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="template-set name to publish under (or give -f)")] = None,
    ancestor_model: Annotated[str | None, typer.Option(help="timm name of the ancestor")] = None,
    ancestor: Annotated[str | None, typer.Option(help="the ancestor's weights, as the workers see them")] = None,
    ancestor_set: Annotated[list[str] | None, typer.Option(help="ancestor override key=value (repeatable)")] = None,
    aux_model: Annotated[str, typer.Option(help="timm name of the auxiliary model (its width: the templates')")] = (
        "vit_tiny_patch16_224"
    ),
    aux_set: Annotated[list[str] | None, typer.Option(help="auxiliary override key=value (repeatable)")] = None,
    data: Annotated[str | None, typer.Option(help="training data reference, as the workers see it")] = None,
    max_samples: Annotated[int | None, typer.Option(help="seeded subset of the training data")] = None,
    eval_data: Annotated[str | None, typer.Option(help="held-out labelled data for the recorded accuracies")] = None,
    method: Annotated[str, typer.Option(help="the learngene: wave, tleg or sws")] = "wave",
    training: Annotated[
        list[str] | None, typer.Option(help="training key=value (steps=2000, lr=0.0005, recipe=plain; repeatable)")
    ] = None,
    promote: Annotated[str | None, typer.Option(help="alias to point at the new version")] = None,
    promote_if: Annotated[str, typer.Option(help="card: only when the quality card passes; always")] = "card",
    nproc: Annotated[int | None, typer.Option(help="processes (GPUs) on the worker")] = None,
    body: BodyOption = None,
    wait: Annotated[bool, typer.Option(help="wait for the job, with a progress bar of its phases")] = False,
    url: UrlOption = None,
) -> None:
    """Start a condensation job on the API (admin): the template set is published when it succeeds; prints the
    job as JSON."""
    if body is not None:
        refuse_request_options(ctx, keep={"body", "wait", "url"})
        request = read_body(body)
    else:
        missing = [flag for flag, value in (("--name", name), ("--ancestor-model", ancestor_model),
                   ("--ancestor", ancestor), ("--data", data)) if value is None]  # fmt: skip
        if missing:
            raise typer.BadParameter(f"{', '.join(missing)} needed (or the whole request with -f REQUEST.json)")
        request = {
            "name": name,
            "method": method,
            "ancestor": {
                "model": ancestor_model,
                "overrides": parse_overrides(ancestor_set or [], "--ancestor-set"),
                "checkpoint": ancestor,
            },
            "aux": {"model": aux_model, "overrides": parse_overrides(aux_set or [], "--aux-set")},
            "data": {"uri": data, "max_samples": max_samples},
            "eval_data": eval_data,
            "training": parse_overrides(training or [], "--training"),  # unset: the service's defaults
            "promote": promote,
            "promote_if": promote_if,
            "nproc": nproc,
        }

    def action() -> dict[str, Any]:
        with connect(url, admin=True) as client:
            job = client.condense(request)
            show_warnings(job["warnings"])
            return wait_with_bar(client, job["id"], kind="condensations") if wait else job

    run_call(action)
