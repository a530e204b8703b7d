"""Every command of `learngene`, given a typical mistake, fails in one line on stderr (`error: ...`) with a non-zero
exit status that says whose fault it is (2: the input's or the API's answer; 3: no API answered), never a traceback
and never exit 1 (a fault of the CLI itself). Run through `service.cli.main`, the console script's entry point, in
this process (the method's commands would each take seconds to import torch in a fresh one); a new command without
a case here fails the coverage check."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import typer

from service.cli import app, main


def leaves(group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from leaves(command, (*path, name))
        else:
            yield (*path, name)


@pytest.fixture(scope="module")
def dead_url() -> Iterator[str]:
    """A port held and never listened on: connections are refused, and no other process takes it."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{bound.getsockname()[1]}"


def cases(tmp: str, dead: str) -> dict[tuple[str, ...], list[str]]:
    model = ["--model", "vit_tiny_patch16_224"]
    return {
        ("train",): ["train", *model, "--data", f"idx://{tmp}/none", "--out", f"{tmp}/a.safetensors", "--steps", "x"],
        ("condense",): ["condense", "--ancestor", f"{tmp}/none.safetensors", "--data", "idx:///none",
                        "--aux-model", "vit_tiny_patch16_224", "--out", f"{tmp}/set"],
        ("init",): ["init", *model, "--set", "depth:4", "--out", f"{tmp}/vit"],
        ("evaluate",): ["evaluate", f"{tmp}/none.safetensors", "--data", "idx:///none"],
        ("serve",): ["serve", "--workers", "2"],  # embedded mode keeps its jobs in one process
        ("worker",): ["worker", "--concurrency", "many"],
        ("submit",): ["submit", *model, "--set", "depth:4", "--url", dead],
        ("verify",): ["verify", f"{tmp}/none"],
        ("lineage",): ["lineage", "0" * 64, "--url", dead],
        ("templates", "list"): ["templates", "list", "--url", dead],
        ("templates", "show"): ["templates", "show", "nosuch@1"],
        ("templates", "publish"): ["templates", "publish", f"{tmp}/none"],
        ("templates", "promote"): ["templates", "promote", "nosuch", "1", "prod"],
        ("templates", "rollback"): ["templates", "rollback", "nosuch", "prod"],
        ("templates", "verify"): ["templates", "verify", "nosuch@1"],
        ("templates", "delete"): ["templates", "delete", "nosuch@1"],
        ("templates", "gc"): ["templates", "gc", "everything"],
        ("templates", "card"): ["templates", "card", "../nosuch"],
        ("templates", "recommend"): ["templates", "recommend", "--depth", "4"],
        ("job", "list"): ["job", "list", "--limit", "0"],
        ("job", "status"): ["job", "status", "some-job", "--url", dead],
        ("job", "wait"): ["job", "wait"],
        ("job", "logs"): ["job", "logs", "some-job", "--url", dead],
        ("job", "cancel"): ["job", "cancel", "some-job", "--url", "not a url"],
        ("job", "release"): ["job", "release", "some-job", "--url", dead],
        ("job", "download"): ["job", "download", "some-job", "--url", dead],
        ("admin", "condense"): ["admin", "condense", "--name", "x", "--url", dead],
    }  # fmt: skip


def test_every_command_has_a_case():
    assert set(leaves(typer.main.get_command(app))) == set(cases("/tmp", "http://x"))


def test_every_command_fails_in_one_line(tmp_path, dead_url, capsys, monkeypatch):
    monkeypatch.delenv("LEARNGENE_REDIS_URL", raising=False)
    for command, argv in cases(str(tmp_path), dead_url).items():
        with pytest.raises(SystemExit) as exit:
            main(argv)
        err = capsys.readouterr().err
        assert exit.value.code in (2, 3), f"{command}: exit {exit.value.code}: {err}"
        assert err.startswith("error: ") and err.count("\n") == 1, f"{command}: {err}"
        assert str(tmp_path.parent) not in err.replace(str(tmp_path), "") and "Traceback" not in err
