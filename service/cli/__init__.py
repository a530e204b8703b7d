"""`learngene` command line: train an ancestor, condense it into a template set, initialize descendants, evaluate;
manage the template store (`learngene templates ...`); run the service (`serve`, `worker`) and talk to it
(`submit`, `job ...`).

Job commands print progress on stderr (tqdm) and a one-line JSON summary as the last line of stdout.
Exit status: 0 done; 2 a refused input, a failed job or an error answer from the API; 3 the API could not be reached.
"""

import logging

import typer

from learngene.version import __version__
from service.cli import remote, server, templates
from service.cli.deferred import Deferred, DeferredGroup

# The commands that run the method load torch and timm (their options' defaults come from CondenseConfig): they are
# imported only when one of them runs or shows its help, so that --help, --version and the rest start without torch.
DEFERRED = [
    Deferred(
        "train", "service.cli.local:train", "Train a timm ViT classifier from scratch (an ancestor, or a baseline)."
    ),
    Deferred(
        "condense",
        "service.cli.local:condense",
        "Condense an ancestor into a template set; rerunning the command resumes it, or returns what it published.",
    ),
    Deferred(
        "init",
        "service.cli.local:init",
        "Initialize a ViT of the requested size and write it as a timm / Hugging Face folder (or a .safetensors file).",
    ),
    Deferred(
        "evaluate",
        "service.cli.local:evaluate",
        "Top-1 accuracy of a checkpoint, rebuilt from the spec and normalization in its own header.",
    ),
]


class Commands(DeferredGroup):
    deferred = DEFERRED


app = typer.Typer(cls=Commands, no_args_is_help=True, help=__doc__)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"learngene {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging, including each HTTP request"),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version"),
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:  # one INFO line per HTTP request (the job commands poll): noise unless asked for
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)


for command in (server.serve, server.worker, remote.submit, remote.verify, remote.lineage):
    app.command()(command)
app.add_typer(templates.app, name="templates")
app.add_typer(remote.app, name="job")
