"""docs/reference/settings.md from the pydantic-settings class `jobs.settings.Settings`: every field, nested
models included, with its environment variable, type, default, bounds and description."""

from __future__ import annotations

import ast
import inspect
import json
import re
import textwrap
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scripts.docgen.markdown import banner, code, escape_plain, md, paragraphs, slug, symbolic, table


def _type_name(annotation: Any) -> str:
    """A field's type as markdown, with no pipe (a pipe ends a table cell on GitHub, even inside a code span)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(code(value) for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return code("None")
    text = re.sub(r"\b(?:typing|pathlib|pydantic\.types|[a-z_]+(?:\.[a-z_]+)*)\.", "", _annotation_text(annotation))
    return code(text) + (" (JSON)" if origin in (list, dict, set, tuple) else "")


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
        return code(str(value).lower())
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
        return code(text) + (f" ({human})" if human else "")
    if isinstance(value, Path):
        return code(symbolic(str(value)))
    if isinstance(value, str):
        return code(symbolic(value)) if value else code('""') + " (empty)"
    if isinstance(value, (list, dict)):
        return code(symbolic(json.dumps(value, default=str)))
    return code(symbolic(str(value)))


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
                out.append(f"{escape_plain(word)} {bound}" + (f" ({size})" if size else ""))
        pattern = getattr(item, "pattern", None)
        if pattern:
            out.append("matches " + code(pattern))
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
            out.append("#" * (level + 1) + " " + md(comment[0].upper() + comment[1:]) + "\n")
        elif comment:
            out.append(md(comment) + "\n")
        rows = []
        for name in names:
            if name in seen:
                continue
            seen.add(name)
            field = model.model_fields[name]
            env = _env_names(name, field, prefix)
            meaning = md(field.description or "")
            if _is_model(field.annotation):
                nested_prefix = env[0] + delimiter
                nested.append((nested_prefix, field.annotation))
                anchor = slug(nested_prefix + "*")
                meaning = (meaning + " " if meaning else "") + (
                    f"one variable per field, {code(nested_prefix + '<FIELD>')} ([below](#{anchor})), or the whole "
                    "object as JSON"
                )
            if "SecretStr" in repr(field.annotation):
                meaning = (meaning + " " if meaning else "") + "(a secret: never logged or shown)"
            rows.append(
                [
                    ", ".join(code(e) for e in env),
                    _type_name(field.annotation),
                    _default(field, name),
                    _bounds(field),
                    meaning,
                ]
            )
        if rows:
            out.append(table(header, rows))
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
        banner("jobs/settings.py"),
        paragraphs(module.__doc__),
        f"`{model.__module__}.{model.__name__}` reads each field from the environment variable "
        f"{code(prefix + '<FIELD>')} ({case})"
        + (f", or from a {code(env_file)} file in the working directory" if env_file else "")
        + f"; the fields of a nested model from {code(prefix + '<FIELD>' + delimiter + '<SUBFIELD>')}. Lists, "
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
            out.append(f"## {code(model.__name__)}\n")
        else:
            out.append(f"## {code(model_prefix + '*')}\n")
            out.append(paragraphs(section_model.__doc__) or "")
        text, nested = _settings_section(section_model, model_prefix, delimiter, level + 1)
        out.append(text)
        queue += [(p, m, level) for p, m in nested]
        first = False
    out += _client_section()
    return "\n".join(part for part in out if part).rstrip() + "\n"


def _client_section() -> list[str]:
    """The client's own settings (`service.client_settings`): what a machine without the server reads."""
    from service import client_settings as module

    model = module.ClientSettings
    text, _ = _settings_section(model, model.model_config.get("env_prefix", ""), "__", 2)
    return [f"## {code(model.__name__)}: the client's\n", paragraphs(module.__doc__), text]
