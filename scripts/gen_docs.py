"""Write the documentation site's generated pages from their sources, so that they cannot drift from the code:

- docs/reference/settings.md from the pydantic-settings class `jobs.settings.Settings` (every field, nested models
  included: its environment variable, type, default, bounds and description);
- docs/reference/cli.md from the typer application `service.cli:app` (every command and group, walked through click:
  usage, help, arguments and options);
- docs/architecture.md, a copy of ARCHITECTURE.md (mkdocs reads only docs/; ARCHITECTURE.md stays the one source).

    python scripts/gen_docs.py           # rewrite the pages that changed
    python scripts/gen_docs.py --check   # exit 1 naming the stale pages, write nothing (tests/unit/test_docs.py, CI)

The output is deterministic: declaration order, no timestamps, and defaults that depend on the machine (the user's
data and cache folders) written symbolically; a page that would still name this machine's home folder or checkout is
refused.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import re
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: the project's packages come from the checkout
    sys.path.insert(0, str(ROOT))

SETTINGS_PAGE = "docs/reference/settings.md"
CLI_PAGE = "docs/reference/cli.md"
ARCHITECTURE_PAGE = "docs/architecture.md"
FAMILIES_PAGE = "docs/reference/families.md"
REGENERATE = "python scripts/gen_docs.py"


def _banner(source: str) -> str:
    return f"<!-- Generated from {source} by scripts/gen_docs.py: do not edit, run `{REGENERATE}`. -->\n"


# ---------------------------------------------------------------------------------------------------- markdown


def _code(text: object) -> str:
    """`text` as a code span (longer fences when the text holds backticks)."""
    text = str(text)
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _escape_plain(text: str) -> str:
    """Markdown-escape prose (outside code spans): the characters that would make emphasis, HTML or table cells."""
    text = text.replace("\\", "\\\\")
    for char in "*_|[]":
        text = text.replace(char, "\\" + char)
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _md(text: str) -> str:
    """Prose from a docstring or help text, its code spans kept as they are and the rest escaped."""
    parts = re.split(r"(`+[^`]*?`+)", text)
    return "".join(part if part.startswith("`") else _escape_plain(part) for part in parts)


def _slug(heading: str) -> str:
    """The anchor of a heading, as Python-Markdown's toc (mkdocs) and GitHub both make it."""
    text = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _cell(text: str) -> str:
    """A table cell, on one line (its text already escaped: no bare pipe)."""
    return " ".join(text.split()) or " "


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _paragraphs(text: str | None) -> str:
    """A docstring as markdown paragraphs."""
    return _md(inspect.cleandoc(text)).strip() + "\n" if text and text.strip() else ""


# ---------------------------------------------------------------------------------------------------- machine


def _machine_paths() -> list[tuple[str, str]]:
    """(this machine's value, its symbol) for the folders defaults are made of, the longest first."""
    import platformdirs

    pairs = [
        (str(Path(platformdirs.user_data_dir("learngene"))), "<user data dir>"),
        (str(Path(platformdirs.user_cache_dir("learngene"))), "<user cache dir>"),
        (str(Path.home()), "~"),
    ]
    return sorted(pairs, key=lambda pair: -len(pair[0]))


def _symbolic(text: str) -> str:
    for value, symbol in _machine_paths():
        text = text.replace(value, symbol)
    return text


def _refuse_machine_specific(name: str, text: str) -> None:
    for value in {str(Path.home()), str(ROOT)}:
        if len(value) > 1 and value in text:
            raise SystemExit(f"{name} would name a folder of this machine ({value}): render that default symbolically")


# ---------------------------------------------------------------------------------------------------- settings


def _type_name(annotation: Any) -> str:
    """A field's type as markdown, with no pipe (a pipe ends a table cell on GitHub, even inside a code span)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(_code(value) for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return _code("None")
    text = re.sub(r"\b(?:typing|pathlib|pydantic\.types|[a-z_]+(?:\.[a-z_]+)*)\.", "", _annotation_text(annotation))
    return _code(text) + (" (JSON)" if origin in (list, dict, set, tuple) else "")


def _annotation_text(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return repr(annotation).replace("typing.", "")


def _is_model(annotation: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _size(value: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if value >= 1 << shift and value % (1 << shift) == 0:
            return f"{value >> shift} {unit}"
    return ""


def _duration(seconds: float) -> str:
    """30 d, 12 h 5 min: for defaults in seconds of a minute or more."""
    if seconds < 60 or seconds != int(seconds):
        return ""
    seconds, out = int(seconds), []
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= length:
            out.append(f"{seconds // length} {unit}")
            seconds %= length
    return " ".join(out)


def _value(value: Any, name: str) -> str:
    """A default as it would be written in the environment."""
    from pydantic import SecretStr

    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, bool):
        return _code(str(value).lower())
    if isinstance(value, (int, float)):
        if isinstance(value, float):
            text = repr(value)
            text = f"{value:.6g}" if "e" not in text and len(text) > 12 else text
        else:
            text = str(value)
        if "bytes" in name or name.endswith("_kb"):
            human = _size(value * 1024 if name.endswith("_kb") else value) if isinstance(value, int) else ""
        else:
            human = _duration(value) if name.endswith("_s") else ""
        return _code(text) + (f" ({human})" if human else "")
    if isinstance(value, Path):
        return _code(_symbolic(str(value)))
    if isinstance(value, str):
        return _code(_symbolic(value)) if value else _code('""') + " (empty)"
    if isinstance(value, (list, dict)):
        return _code(_symbolic(json.dumps(value, default=str)))
    return _code(_symbolic(str(value)))


def _default(field: Any, name: str) -> str:
    from pydantic_core import PydanticUndefined

    if field.default is not PydanticUndefined:
        return _value(field.default, name)
    if field.default_factory is not None:
        if _is_model(field.annotation):
            return "see below"
        if getattr(field, "default_factory_takes_data", False):  # made from the other fields' values
            return "computed"
        return _value(field.default_factory(), name)
    return "required"


def _bounds(field: Any) -> str:
    words = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "length ≥", "max_length": "length ≤"}
    out = []
    for item in field.metadata:
        for attribute, word in words.items():
            bound = getattr(item, attribute, None)
            if bound is not None:
                size = _size(bound) if isinstance(bound, int) and bound >= 1 << 20 else ""
                out.append(f"{_escape_plain(word)} {bound}" + (f" ({size})" if size else ""))
        pattern = getattr(item, "pattern", None)
        if pattern:
            out.append("matches " + _code(pattern))
    return ", ".join(out)


def _env_names(name: str, field: Any, prefix: str) -> list[str]:
    alias = field.validation_alias or field.alias
    if isinstance(alias, str):
        return [alias.upper()]
    if alias is not None and hasattr(alias, "choices"):  # AliasChoices
        return [choice.upper() for choice in alias.choices if isinstance(choice, str)]
    return [(prefix + name).upper()]


def _field_groups(model: type) -> Iterator[tuple[str | None, list[str]]]:
    """The model's fields in declaration order, grouped by the comment blocks above them in its source:
    (comment, field names)."""
    names = list(model.model_fields)
    try:
        source = textwrap.dedent(inspect.getsource(model))
    except (OSError, TypeError):
        yield None, names
        return
    lines = source.splitlines()
    body = ast.parse(source).body[0].body
    comment: str | None = None
    group: list[str] = []
    previous_end = body[0].lineno - 1 if body else 0
    for statement in body:
        between = [line.strip() for line in lines[previous_end : statement.lineno - 1]]
        block = [
            line.removeprefix("#").strip()
            for line in between
            if line.startswith("#") and not re.match(r"#\s*(fmt|noqa|type|pragma):", line)
        ]
        previous_end = statement.end_lineno or statement.lineno
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        if statement.target.id not in model.model_fields:
            continue
        if block:
            if group or comment:
                yield comment, group
            comment, group = " ".join(block), []
        group.append(statement.target.id)
    if group or comment:
        yield comment, group


def _settings_section(model: type, prefix: str, delimiter: str, level: int) -> tuple[str, list[tuple[str, type]]]:
    """The tables of one model; returns its markdown and the nested models still to document."""
    out: list[str] = []
    nested: list[tuple[str, type]] = []
    seen: set[str] = set()
    header = ["variable", "type", "default", "bounds", "meaning"]
    groups = list(_field_groups(model))
    missing = [name for name in model.model_fields if name not in {n for _, g in groups for n in g}]
    if missing:  # fields the source walk did not find (declared through a base class, say): listed at the end
        groups.append((None, missing))
    for comment, names in groups:
        if comment and len(comment) <= 40:
            out.append("#" * (level + 1) + " " + _md(comment[0].upper() + comment[1:]) + "\n")
        elif comment:
            out.append(_md(comment) + "\n")
        rows = []
        for name in names:
            if name in seen:
                continue
            seen.add(name)
            field = model.model_fields[name]
            env = _env_names(name, field, prefix)
            meaning = _md(field.description or "")
            if _is_model(field.annotation):
                nested_prefix = env[0] + delimiter
                nested.append((nested_prefix, field.annotation))
                anchor = _slug(nested_prefix + "*")
                meaning = (meaning + " " if meaning else "") + (
                    f"one variable per field, {_code(nested_prefix + '<FIELD>')} ([below](#{anchor})), or the whole "
                    "object as JSON"
                )
            if "SecretStr" in repr(field.annotation):
                meaning = (meaning + " " if meaning else "") + "(a secret: never logged or shown)"
            rows.append(
                [
                    ", ".join(_code(e) for e in env),
                    _type_name(field.annotation),
                    _default(field, name),
                    _bounds(field),
                    meaning,
                ]
            )
        if rows:
            out.append(_table(header, rows))
    return "\n".join(out), nested


def settings_page() -> str:
    from jobs import settings as module

    model = module.Settings
    config = model.model_config
    prefix = config.get("env_prefix", "")
    delimiter = config.get("env_nested_delimiter") or "__"
    env_file = config.get("env_file")
    if isinstance(env_file, (list, tuple)):
        env_file = ", ".join(str(name) for name in env_file)
    case = "case-sensitive" if config.get("case_sensitive") else "case-insensitive"
    out = [
        "# Settings reference\n",
        _banner("jobs/settings.py"),
        _paragraphs(module.__doc__),
        f"`{model.__module__}.{model.__name__}` reads each field from the environment variable "
        f"{_code(prefix + '<FIELD>')} ({case})"
        + (f", or from a {_code(env_file)} file in the working directory" if env_file else "")
        + f"; the fields of a nested model from {_code(prefix + '<FIELD>' + delimiter + '<SUBFIELD>')}. Lists, "
        "dicts and nested models may be given as JSON."
        + (" An entry of the file that is no setting is ignored." if config.get("extra") == "ignore" else "")
        + "\n",
        "Defaults that depend on the machine are written symbolically: `<user data dir>` is platformdirs' "
        '`user_data_dir("learngene")` (on Linux `$XDG_DATA_HOME/learngene`, by default `~/.local/share/learngene`), '
        '`<user cache dir>` its `user_cache_dir("learngene")` (on Linux `$XDG_CACHE_HOME/learngene`, by default '
        "`~/.cache/learngene`).\n",
        "How `s3://` locations are reached is not a setting: the S3 client reads the standard `AWS_ENDPOINT_URL`, "
        "`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` and `AWS_REGION` itself (unset: AWS, with "
        "the instance role). [Configuration](../configuration.md) explains the settings most deployments touch.\n",
    ]
    queue: list[tuple[str, type, int]] = [(prefix, model, 1)]
    first = True
    while queue:
        model_prefix, section_model, level = queue.pop(0)
        if first:
            out.append(f"## {_code(model.__name__)}\n")
        else:
            out.append(f"## {_code(model_prefix + '*')}\n")
            out.append(_paragraphs(section_model.__doc__) or "")
        text, nested = _settings_section(section_model, model_prefix, delimiter, level + 1)
        out.append(text)
        queue += [(p, m, level) for p, m in nested]
        first = False
    return "\n".join(part for part in out if part).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------------- CLI


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
        text = "one of " + ", ".join(_code(choice) for choice in kind.choices)
    else:
        text = _code(kind.name.removesuffix(" range"))  # as typer's --help names it: str, int, float, path
        describe = getattr(kind, "_describe_range", None)
        if callable(describe):
            text += ", " + _code(describe())
    return text + (" (repeatable)" if getattr(param, "multiple", False) else "")


def _param_default(param: Any) -> str:
    if param.required:
        return "required"
    if isinstance(getattr(param, "show_default", None), str):
        return _md(param.show_default)
    default = param.default
    if callable(default):
        return "computed"
    if getattr(param, "is_flag", False):
        if param.secondary_opts:
            return _code(param.opts[0] if default else param.secondary_opts[0])
        return "on" if default else "off" if default is not None else ""
    if default is None or default == () or default == []:
        return ""
    if isinstance(default, (list, tuple)):
        return ", ".join(_code(_symbolic(str(d))) for d in default)
    if isinstance(default, bool):
        return _code(str(default).lower())
    return _code(_symbolic(str(default.value if hasattr(default, "value") else default)))


def _param_names(param: Any) -> str:
    if param.param_type_name == "argument":
        return _code(param.human_readable_name.upper())
    names = [*param.opts] + ([" / ".join(param.secondary_opts)] if param.secondary_opts else [])
    return ", ".join(_code(name) for name in names)


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
    out = [f"{level} {_code(path)}\n"]
    usage = " ".join([path, *command.collect_usage_pieces(ctx)])
    out.append(f"```\n{usage}\n```\n")
    if command.help:
        out.append(_paragraphs(command.help))
    params = [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]
    arguments = [p for p in params if p.param_type_name == "argument"]
    options = [p for p in params if p.param_type_name != "argument"]
    for title, group in (("Arguments", arguments), ("Options", options)):
        if not group:
            continue
        rows = []
        for param in group:
            meaning = _md(getattr(param, "help", None) or "")
            envvar = getattr(param, "envvar", None)
            if envvar:
                names = [envvar] if isinstance(envvar, str) else list(envvar)
                meaning += " (environment: " + ", ".join(_code(name) for name in names) + ")"
            rows.append([_param_names(param), _param_type(param, click), _param_default(param), meaning])
        out.append(f"**{title}**\n")
        out.append(_table(["name" if title == "Arguments" else "option", "type", "default", "meaning"], rows))
    if _is_group(command):
        rows = []
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            summary = sub.get_short_help_str(limit=300)
            rows.append([f"[{_code(path + ' ' + name)}](#{_slug(path + ' ' + name)})", _md(summary)])
        out.append("**Commands**\n")
        out.append(_table(["command", "what"], rows))
    return "\n".join(out)


def cli_page() -> str:
    import typer

    from service.cli import app

    click = _click()
    root = typer.main.get_command(app)
    ctx = click.Context(root, info_name="learngene")
    out = [
        "# CLI reference\n",
        _banner("the typer application service.cli:app"),
        "Every command of `learngene` (the `[project.scripts]` entry point `service.cli:app`), with its arguments and "
        "options as `--help` shows them. [Command line](../command-line.md) shows how they fit together.\n",
    ]
    out += [_command_section(command, context, click) for command, context in _walk(root, ctx, click)]
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------------- architecture


def architecture_page() -> str:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    title, _, rest = text.partition("\n")
    return f"{title}\n\n{_banner('ARCHITECTURE.md')}{rest}"


# ---------------------------------------------------------------------------------------------------- families


def families_page() -> str:
    from learngene.families import FEATURES  # the table itself: the page cannot drift from it

    rows = [[f.name, f.timm, f.treatment, "yes" if f.served else "no"] for f in FEATURES.values()]
    return (
        f"# ViT families\n\n{_banner('learngene/families.py')}"
        "Every feature timm's ViT families have beyond the plain DeiT block, how the methods treat it, and whether "
        "it is served (`learngene.families.FEATURES`). A model name with a feature that is not served is refused "
        "with a 422 naming it. [Methods](../methods.md#families) gives the rules across families.\n\n"
        + _table(["feature", "in timm", "treatment", "served"], rows)
    )


# ---------------------------------------------------------------------------------------------------- main

PAGES: dict[str, Callable[[], str]] = {
    SETTINGS_PAGE: settings_page,
    CLI_PAGE: cli_page,
    ARCHITECTURE_PAGE: architecture_page,
    FAMILIES_PAGE: families_page,
}


def render() -> dict[str, str]:
    """Every generated page: path (relative to the repository) -> its text."""
    pages = {path: make() for path, make in PAGES.items()}
    for path, text in pages.items():
        _refuse_machine_specific(path, text)
    return pages


def stale(pages: dict[str, str] | None = None) -> list[str]:
    """The generated pages whose file differs from what the sources make now (or is missing)."""
    pages = render() if pages is None else pages
    return [path for path, text in pages.items() if _read(ROOT / path) != text]


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 naming the stale pages; write nothing")
    args = parser.parse_args(argv)
    pages = render()
    old = stale(pages)
    if args.check:
        if old:
            print(f"stale generated docs: {', '.join(old)}; run `{REGENERATE}`", file=sys.stderr)
            return 1
        print(f"generated docs up to date: {', '.join(pages)}")
        return 0
    for path in old:
        target = ROOT / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(pages[path])
        print(f"wrote {path}")
    if not old:
        print("generated docs up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
