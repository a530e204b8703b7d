"""BENCHMARKS.md is written by several scripts: `learngene_benchmark.py` writes the file, and every other script
owns one section at its end, between `<!-- begin NAME -->` and `<!-- end NAME -->`, replaced on each of its runs and
kept when the main report is rewritten."""

from __future__ import annotations

import re
from pathlib import Path

MARK = re.compile(r"<!-- begin (?P<name>[\w-]+) -->.*?<!-- end (?P=name) -->\n?", re.S)


def owned_sections(path: Path) -> str:
    """The sections other scripts own in `path` (to append after a rewritten main report)."""
    return "".join(m.group(0) for m in MARK.finditer(path.read_text())) if path.is_file() else ""


def replace_section(path: Path, name: str, body: str) -> None:
    """Put `body` in the section `name` of `path` (appended the first time)."""
    block = f"<!-- begin {name} -->\n{body.rstrip()}\n<!-- end {name} -->\n"
    text = path.read_text() if path.is_file() else ""
    pattern = re.compile(rf"<!-- begin {name} -->.*?<!-- end {name} -->\n?", re.S)
    path.write_text(pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block)
