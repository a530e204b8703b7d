"""Commands whose module is imported when they are used: listed by `--help` from a one-line summary, loaded (with
all their module imports) when they run, show their own help or complete their options.

The standard remedy for a slow `--help` in click applications (click's "lazily loading subcommands"), here for
typer: the group resolves a listed name to the real typer command on first use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import typer
from typer.core import TyperCommand, TyperGroup

if TYPE_CHECKING:
    from typer import _click  # the click typer builds on (vendored by recent typer versions)


@dataclass(frozen=True)
class Deferred:
    name: str
    target: str  # "package.module:function"
    summary: str  # the first sentence of the function's docstring (tests/service/test_cli_startup.py checks they agree)

    def load(self) -> _click.Command:
        module, _, function = self.target.partition(":")
        single = typer.Typer()
        single.command(self.name)(getattr(importlib.import_module(module), function))
        return typer.main.get_command(single)


class Placeholder(TyperCommand):
    """What `--help` lists for a deferred command before it is loaded."""

    def __init__(self, deferred: Deferred):
        super().__init__(name=deferred.name, help=deferred.summary, short_help=deferred.summary)
        self.deferred = deferred


class DeferredGroup(TyperGroup):
    deferred: ClassVar[list[Deferred]] = []

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.commands = {**{d.name: Placeholder(d) for d in self.deferred}, **self.commands}  # listed first

    def resolve_command(
        self, ctx: _click.Context, args: list[str]
    ) -> tuple[str | None, _click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if isinstance(command, Placeholder):
            command = self.commands[command.name] = command.deferred.load()
        return name, command, rest
