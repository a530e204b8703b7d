"""The command line starts without torch: `--help`, `--version`, completion and the client commands' help import
neither torch nor timm (checked in fresh processes, by what they imported: never by a timing; the timings are in
bench/cli_startup.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from learngene.version import __version__
from tests.support.data import REPO
from tests.support.scale import PROCESS_TIMEOUT_S

# Runs the command line as `python -m service.cli ARGS` does, then reports which heavy modules it imported.
PROBE = """
import runpy, sys
try:
    runpy.run_module("service.cli", run_name="__main__", alter_sys=True)
except SystemExit as exit:
    code = exit.code
print("LOADED", ",".join(m for m in ("torch", "timm") if m in sys.modules) or "-", code)
"""


def probe(*args: str, **env: str) -> tuple[list[str], str]:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=PROCESS_TIMEOUT_S,
    )
    line = next(line for line in run.stdout.splitlines() if line.startswith("LOADED "))
    _, loaded, code = line.split(" ", 2)
    assert code in ("0", "None"), run.stdout + run.stderr
    return [] if loaded == "-" else loaded.split(","), run.stdout


def test_version_prints_the_package_version():
    run = subprocess.run([sys.executable, "-m", "service.cli", "--version"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout == f"learngene {__version__}\n"


@pytest.mark.parametrize(
    "args", [["--help"], ["--version"], ["submit", "--help"], ["job", "status", "--help"], ["templates", "--help"]]
)
def test_help_and_version_import_neither_torch_nor_timm(args):
    loaded, stdout = probe(*args)
    assert loaded == [], f"learngene {' '.join(args)} imported {loaded}"
    assert ("condense" in stdout) if args == ["--help"] else True  # the deferred commands are listed


def test_the_commands_that_run_the_method_load_it_when_asked():
    loaded, stdout = probe("condense", "--help")
    assert loaded == ["torch", "timm"] and "--ancestor-model" in stdout and "1000" in stdout  # CondenseConfig.steps


def test_completion_offers_commands_and_the_options_of_deferred_commands():
    def complete(words: str) -> list[str]:
        env = {**os.environ, "_LEARNGENE_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - 1)}  # fmt: skip
        code = "from service.cli import app; app(prog_name='learngene')"
        run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env)
        assert run.returncode == 0, run.stderr
        return run.stdout.split()

    assert complete("learngene con") == ["condense"]
    assert complete("learngene condense --ancestor-") == ["--ancestor-model", "--ancestor-set"]


def test_each_deferred_summary_is_the_start_of_its_command_help():
    from service.cli import DEFERRED

    for deferred in DEFERRED:
        command = deferred.load()
        assert " ".join(command.help.split()).startswith(deferred.summary), deferred.name
