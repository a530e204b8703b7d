"""`learngene` command line: train an ancestor, condense it into a template set, initialize descendants, evaluate;
manage the template store (`learngene templates ...`); run the service (`serve`, `worker`) and talk to it
(`submit`, `job ...`).

Job commands print progress on stderr (tqdm) and a one-line JSON summary as the last line of stdout.
Exit status: 0 done; 2 a refused input, a failed job or an error answer from the API; 3 the API could not be reached;
1 a fault of the CLI itself. Every failure is one line on stderr (`main`); `--verbose` adds the traceback of a fault.
"""

import logging
import sys

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # typer's own (vendored) click

from learngene.version import __version__
from service.cli import admin, remote, server, templates
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


app = typer.Typer(cls=Commands, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"learngene {__version__}")
        raise typer.Exit()


@app.callback()
def options(
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
app.add_typer(admin.app, name="admin")


# Top-level packages of each extra (pyproject.toml): a command that needs one names the extra to install.
EXTRAS = {
    "method": "torch torchvision timm safetensors numpy PIL platformdirs webdataset obstore matplotlib yaml "
    "pythonjsonlogger",
    "verify": "model_signing cryptography OpenSSL",
    "service": "fastapi starlette uvicorn prometheus_client sse_starlette fastapi_offline",
    "worker": "celery kombu redis standardwebhooks",
}
EXTRA_OF = {module: extra for extra, modules in EXTRAS.items() for module in modules.split()}
# The commands whose extra includes the method's: whichever package is found missing first, they need all of it.
EXTRA_OF_COMMAND = {"serve": "service", "worker": "worker"}


def main(argv: list[str] | None = None) -> None:
    """The `learngene` command: the typer application, with every failure reported as one line on stderr."""
    argv = sys.argv[1:] if argv is None else argv
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="learngene", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # `learngene`, `learngene job`: the help is the answer
        exc.show()
        code = exc.exit_code
    except UsageError as exc:  # a bad option or argument: the message, and where the help is
        where = f"learngene {exc.ctx.command_path.partition(' ')[2]}".strip() if exc.ctx else "learngene"
        code = _fail(f"{exc.format_message()} (see `{where} --help`)", exc.exit_code)
    except ClickException as exc:
        code = _fail(exc.format_message(), exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        code = _fail("interrupted", 130)
    except Exception as exc:
        missing = (exc.name or "").partition(".")[0] if isinstance(exc, ModuleNotFoundError) else ""
        if missing in EXTRA_OF:  # the light install running a command of an extra
            command_name = next((arg for arg in argv if not arg.startswith("-")), "")
            extra = EXTRA_OF_COMMAND.get(command_name, EXTRA_OF[missing])
            code = _fail(f"this command needs the {extra} extra ({missing} is not installed): "
                         f"pip install 'learngene[{extra}]'")  # fmt: skip
        elif {"-v", "--verbose"} & set(argv):
            raise
        else:  # a fault of the CLI, not of the input: one line; the traceback with --verbose
            code = _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --verbose for the traceback)", 1)
    sys.exit(code or 0)


def _fail(message: str, code: int = 2) -> int:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    return code
