"""Data references: URIs parsed, paths resolved (symlinks followed) and confined to the allowed roots.

A missing file and one outside the roots get the same answer, so that no answer tells a client whether a server
file exists; messages name the reference as the client wrote it, never a resolved server path.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl

from learngene.errors import DataRefError

Format = Literal["idx", "imagefolder", "bundle", "wds"]


UNAVAILABLE = "does not exist or lies outside the allowed data roots"


def file_uri_path(uri: str, rest: str) -> str:
    """The path of a `file://` URI (RFC 8089): the host must be empty or `localhost`."""
    if rest.startswith("/"):
        return rest
    host, _, path = rest.partition("/")
    if host != "localhost":
        raise DataRefError(uri, f"file:// URIs name no host but localhost, got {host!r}")
    return "/" + path


@dataclass(frozen=True)
class DataRef:
    format: Format | None  # None: infer from the path
    path: Path
    split: str = "train"

    @classmethod
    def parse(cls, uri: str) -> DataRef:
        if not uri or "\x00" in uri:
            raise DataRefError(uri, "empty or contains a NUL byte")
        scheme, sep, rest = uri.partition("://")
        if not sep:
            scheme, rest = "", uri
        rest, _, query = rest.partition("?")
        pairs = parse_qsl(query, strict_parsing=True) if query else []
        params = dict(pairs)
        if len(params) < len(pairs):
            raise DataRefError(uri, "names a query parameter twice")
        formats: dict[str, Format | None] = {
            "idx": "idx",
            "imagefolder": "imagefolder",
            "bundle": "bundle",
            "wds": "wds",
            "file": None,
            "": None,
        }
        if scheme not in formats:
            known = "idx://, imagefolder://, bundle://, wds://"
            raise DataRefError(uri, f"unknown scheme {scheme!r}; use {known} or a path")
        if scheme == "file":
            rest = file_uri_path(uri, rest)
        unknown = set(params) - {"split"}
        if unknown:
            raise DataRefError(uri, f"unknown query parameters {sorted(unknown)}")
        split = params.get("split", "train")
        if split not in ("train", "test"):
            raise DataRefError(uri, f"split={split!r}; expected 'train' or 'test'")
        if not rest:
            raise DataRefError(uri, "no path")
        return cls(format=formats[scheme], path=Path(rest), split=split)

    def shards(self) -> str:
        """A `wds://` reference's shard pattern, e.g. /data/train-{000000..000127}.tar (brace-expanded by the
        WebDataset library)."""
        return str(self.path)


def resolve_file(uri: str, allowed_roots: Sequence[str | Path] | None = None) -> Path:
    """A file named by a bare path or `file://` URI, resolved and checked against the allowed roots."""
    scheme, sep, rest = uri.partition("://")
    if sep and scheme != "file":
        raise DataRefError(uri, f"expected a path or file:// URI, got scheme {scheme!r}")
    path = resolve_inside(uri, Path(file_uri_path(uri, rest) if sep else uri), allowed_roots)
    if not path.is_file():
        raise DataRefError(uri, "is not a file")
    return path


def resolve_inside(uri: str, path: Path, roots: Sequence[str | Path] | None) -> Path:
    """The real path (symlinks followed), which must exist under one of `roots`. A missing file and one outside
    the roots get the same answer, so the answer says nothing about the server's files.

    Where roots confine the reference, a `..` segment is refused from the text: the OS applies `..` only once the
    component before it was looked up, so `<root>/../../etc/x/../..<root>` would answer differently as /etc/x
    exists or not. So are `~` (it would look up the server's users) and relative paths (the server's working
    directory is no data root)."""
    if roots is not None:
        if ".." in path.parts:
            raise DataRefError(uri, "has a '..' segment; name the file by its path under a data root")
        if not path.is_absolute():
            raise DataRefError(uri, "is not an absolute path; name the file by its path under a data root")
    try:
        real = (path if roots is not None else path.expanduser()).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a symlink loop, no permission
        raise DataRefError(uri, UNAVAILABLE, "unavailable") from None
    if roots is not None:
        resolved_roots = [Path(r).expanduser().resolve() for r in roots]
        if not any(real.is_relative_to(r) for r in resolved_roots):
            raise DataRefError(uri, UNAVAILABLE, "unavailable")
    return real


# WebDataset's shard patterns, a subset of bash's braces (the one practice uses): `{000..127}` ranges of ASCII
# digits and `{a,b,c}` lists, not nested; `::` separates patterns. The count is known before any name is made,
# so a short pattern that names more shards than memory holds is refused from its text.
MAX_SHARDS = 100_000
MAX_PATTERN_CHARS = 4096  # PATH_MAX
_BRACES = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"([0-9]{1,18})\.\.([0-9]{1,18})")


def shard_names(uri: str, pattern: str, limit: int = MAX_SHARDS) -> list[str]:
    """The names a shard pattern stands for, in order; refused past `limit` names before one is made. Unlike
    WebDataset's `expand_urls`, no environment variable is substituted into a client's pattern."""
    if len(pattern) > MAX_PATTERN_CHARS:  # 100,000 names each as long as the pattern: the names' bytes matter too
        raise DataRefError(uri, f"the shard pattern has {len(pattern):,} characters, more than {MAX_PATTERN_CHARS:,}")
    parts = [_pattern_choices(uri, part) for part in pattern.split("::")]
    count = sum(_count(choices) for choices in parts)
    if count > limit:
        raise DataRefError(uri, f"names {count:,} shards, more than {limit:,}")
    return ["".join(name) for choices in parts for name in itertools.product(*(list(c) for c in choices))]


def _count(choices: list[Sequence[str]]) -> int:
    count = 1
    for choice in choices:
        count *= len(choice)
    return count


def _pattern_choices(uri: str, pattern: str) -> list[Sequence[str]]:
    """A pattern as a product of choices: literal text is a choice of one; ranges stay lazy until counted."""
    choices: list[Sequence[str]] = []
    position = 0
    for group in _BRACES.finditer(pattern):
        choices.append([pattern[position : group.start()]])
        body, position = group[1], group.end()
        if numbers := _RANGE.fullmatch(body):
            first, last = numbers[1], numbers[2]
            # bash's rule (and braceexpand's): a bound written with a leading zero pads; a bare 0 does not
            padded = any(len(bound) > 1 and bound[0] == "0" for bound in (first, last))
            width = max(len(first), len(last)) if padded else 0
            step = 1 if int(last) >= int(first) else -1
            choices.append(_Formatted(range(int(first), int(last) + step, step), width))
        elif "," in body:
            choices.append(body.split(","))
        else:
            raise DataRefError(
                uri, f"the shard pattern's {{{body}}} is neither a range like {{000..127}} nor a list like {{a,b}}"
            )
    choices.append([pattern[position:]])
    if any("{" in text or "}" in text for choice in choices if isinstance(choice, list) for text in choice):
        raise DataRefError(uri, "the shard pattern has nested or unbalanced braces")
    return choices


@dataclass(frozen=True)
class _Formatted(Sequence[str]):
    """A range of shard numbers as zero-padded text, without making the text of a range that is refused."""

    numbers: range
    width: int

    def __len__(self) -> int:
        return len(self.numbers)

    def __getitem__(self, index):  # Sequence's protocol; iteration goes through it
        return f"{self.numbers[index]:0{self.width}d}"


def infer_format(uri: str, path: Path) -> Format:
    """The format of a bare path or file:// URI, from what is there."""
    if path.is_file():
        if path.suffix in (".safetensors", ".npz"):
            return "bundle"
        raise DataRefError(uri, f"cannot tell the format of {path.name}; expected .safetensors or .npz")
    if (path / "raw").is_dir() and any((path / "raw").glob("*-images-idx3-ubyte*")):
        return "idx"
    return "imagefolder"
