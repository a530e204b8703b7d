"""Markdown for the generated pages: code spans, escaped prose, tables, the banner that marks a page generated,
and defaults of this machine written symbolically."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

REGENERATE = "python scripts/gen_docs.py"


def banner(source: str) -> str:
    return f"<!-- Generated from {source} by scripts/gen_docs.py: do not edit, run `{REGENERATE}`. -->\n"


# ---------------------------------------------------------------------------------------------------- markdown


def code(text: object) -> str:
    """`text` as a code span (longer fences when the text holds backticks)."""
    text = str(text)
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def escape_plain(text: str) -> str:
    """Markdown-escape prose (outside code spans): the characters that would make emphasis, HTML or table cells."""
    text = text.replace("\\", "\\\\")
    for char in "*_|[]":
        text = text.replace(char, "\\" + char)
    return text.replace("<", "&lt;").replace(">", "&gt;")


def md(text: str) -> str:
    """Prose from a docstring or help text, its code spans kept as they are and the rest escaped."""
    parts = re.split(r"(`+[^`]*?`+)", text)
    return "".join(part if part.startswith("`") else escape_plain(part) for part in parts)


def slug(heading: str) -> str:
    """The anchor of a heading, as Python-Markdown's toc (mkdocs) and GitHub both make it."""
    text = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def cell(text: str) -> str:
    """A table cell, on one line (its text already escaped: no bare pipe)."""
    return " ".join(text.split()) or " "


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(text) for text in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def paragraphs(text: str | None) -> str:
    """A docstring as markdown paragraphs."""
    return md(inspect.cleandoc(text)).strip() + "\n" if text and text.strip() else ""


# ---------------------------------------------------------------------------------------------------- machine


def machine_paths() -> list[tuple[str, str]]:
    """(this machine's value, its symbol) for the folders defaults are made of, the longest first."""
    import platformdirs

    pairs = [
        (str(Path(platformdirs.user_data_dir("learngene"))), "<user data dir>"),
        (str(Path(platformdirs.user_cache_dir("learngene"))), "<user cache dir>"),
        (str(Path.home()), "~"),
    ]
    return sorted(pairs, key=lambda pair: -len(pair[0]))


def symbolic(text: str) -> str:
    for value, symbol in machine_paths():
        text = text.replace(value, symbol)
    return text
