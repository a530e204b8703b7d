"""`learngene` command line: train an ancestor, condense it into a template set, initialize descendants, evaluate;
manage the template store (`learngene templates ...`); run the service (`serve`, `worker`) and talk to it
(`submit`, `job ...`).

Job commands print progress on stderr (tqdm) and a one-line JSON summary as the last line of stdout.
"""

import logging

import typer

from service.cli import local, remote, server, templates

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging")) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


for command in (
    local.train,
    local.condense,
    local.init,
    local.evaluate,
    server.serve,
    server.worker,
    remote.submit,
):
    app.command()(command)
app.add_typer(templates.app, name="templates")
app.add_typer(remote.app, name="job")
