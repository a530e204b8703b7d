"""docs/reference/cli.md from the typer application `service.cli:app`: every command and group, walked through
click, with its usage, help, arguments and options."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from scripts.docgen.markdown import banner, code, md, paragraphs, slug, symbolic, table


def _click() -> Any:
    try:
        from typer import _click as click  # recent typer vendors the click it builds on
    except ImportError:  # pragma: no cover - typer with click as a dependency
        import click
    return click


def _param_type(param: Any, click: Any) -> str:
    kind = param.type
    if getattr(param, "is_flag", False):
        return "flag"
    if getattr(kind, "choices", None):
        text = "one of " + ", ".join(code(choice) for choice in kind.choices)
    else:
        text = code(kind.name.removesuffix(" range"))  # as typer's --help names it: str, int, float, path
        describe = getattr(kind, "_describe_range", None)
        if callable(describe):
            text += ", " + code(describe())
    return text + (" (repeatable)" if getattr(param, "multiple", False) else "")


def _param_default(param: Any) -> str:
    if param.required:
        return "required"
    if isinstance(getattr(param, "show_default", None), str):
        return md(param.show_default)
    default = param.default
    if callable(default):
        return "computed"
    if getattr(param, "is_flag", False):
        if param.secondary_opts:
            return code(param.opts[0] if default else param.secondary_opts[0])
        return "on" if default else "off" if default is not None else ""
    if default is None or default == () or default == []:
        return ""
    if isinstance(default, (list, tuple)):
        return ", ".join(code(symbolic(str(d))) for d in default)
    if isinstance(default, bool):
        return code(str(default).lower())
    return code(symbolic(str(default.value if hasattr(default, "value") else default)))


def _param_names(param: Any) -> str:
    if param.param_type_name == "argument":
        return code(param.human_readable_name.upper())
    names = [*param.opts] + ([" / ".join(param.secondary_opts)] if param.secondary_opts else [])
    return ", ".join(code(name) for name in names)


def _is_group(command: Any) -> bool:
    return callable(getattr(command, "list_commands", None))


def _walk(command: Any, ctx: Any, click: Any) -> Iterator[tuple[Any, Any]]:
    yield command, ctx
    if not _is_group(command):
        return
    for name in command.list_commands(ctx):
        # resolve_command, not get_command: the group's own way to a command (it loads the deferred ones)
        _, sub, _ = command.resolve_command(ctx, [name])
        if sub is None or sub.hidden:
            continue
        yield from _walk(sub, click.Context(sub, info_name=name, parent=ctx), click)


def _command_section(command: Any, ctx: Any, click: Any) -> str:
    path = ctx.command_path
    level = "##" if path.count(" ") <= 1 else "###"  # the program and its commands; a group's commands below it
    out = [f"{level} {code(path)}\n"]
    usage = " ".join([path, *command.collect_usage_pieces(ctx)])
    out.append(f"```\n{usage}\n```\n")
    if command.help:
        out.append(paragraphs(command.help))
    params = [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]
    arguments = [p for p in params if p.param_type_name == "argument"]
    options = [p for p in params if p.param_type_name != "argument"]
    for title, group in (("Arguments", arguments), ("Options", options)):
        if not group:
            continue
        rows = []
        for param in group:
            meaning = md(getattr(param, "help", None) or "")
            envvar = getattr(param, "envvar", None)
            if envvar:
                names = [envvar] if isinstance(envvar, str) else list(envvar)
                meaning += " (environment: " + ", ".join(code(name) for name in names) + ")"
            rows.append([_param_names(param), _param_type(param, click), _param_default(param), meaning])
        out.append(f"**{title}**\n")
        out.append(table(["name" if title == "Arguments" else "option", "type", "default", "meaning"], rows))
    if _is_group(command):
        rows = []
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            summary = sub.get_short_help_str(limit=300)
            rows.append([f"[{code(path + ' ' + name)}](#{slug(path + ' ' + name)})", md(summary)])
        out.append("**Commands**\n")
        out.append(table(["command", "what"], rows))
    return "\n".join(out)


def cli_page() -> str:
    import typer

    from service.cli import app

    click = _click()
    root = typer.main.get_command(app)
    ctx = click.Context(root, info_name="learngene")
    out = [
        "# CLI reference\n",
        banner("the typer application service.cli:app"),
        "Every command of `learngene` (the `[project.scripts]` entry point `service.cli:app`), with its arguments and "
        "options as `--help` shows them. [Command line](../command-line.md) shows how they fit together.\n",
    ]
    out += [_command_section(command, context, click) for command, context in _walk(root, ctx, click)]
    return "\n".join(out).rstrip() + "\n"
