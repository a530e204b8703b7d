"""The `learngene` command, as a user or a container runs it (a fresh process) and in this process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from tests.support.data import REPO
from tests.support.scale import PROCESS_TIMEOUT_S


def learngene(*args: str, **env: str) -> subprocess.CompletedProcess:
    """The real command in a fresh process. The timeout only stops a hung command: CPU-bound commands on a busy
    machine take what they take (tests.support.scale)."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=PROCESS_TIMEOUT_S,
    )


def cli(*args: str):
    """The same command in this process: quick for the many small store commands (no torch/timm start-up)."""
    from service.cli import app  # the CLI's own module: imported where a test runs it, as the CLI defers imports

    result = CliRunner().invoke(app, list(args))
    result.returncode = result.exit_code
    return result


def last_json(run) -> dict:
    return json.loads(run.stdout.strip().splitlines()[-1])
