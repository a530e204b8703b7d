"""Data references: URIs parsed, paths resolved (symlinks followed) and confined to the allowed roots.

A missing file and one outside the roots get the same answer, so that no answer tells a client whether a server
file exists; messages name the reference as the client wrote it, never a resolved server path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs

Format = Literal["idx", "imagefolder", "bundle", "wds"]


class DataRefError(ValueError):
    """A data reference that cannot be used. `reason` is 'invalid' or 'unavailable' (missing, or outside the roots:
    the two are told apart by nobody, so a client cannot probe the server's files). Messages name the reference as
    the client wrote it, never a resolved server path."""

    def __init__(self, uri: str, message: str, reason: str = "invalid"):
        super().__init__(f"data reference {uri!r}: {message}")
        self.uri = uri
        self.reason = reason


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
        params = {k: v[-1] for k, v in parse_qs(query, strict_parsing=bool(query)).items()} if query else {}
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
    the roots get the same answer, so the answer says nothing about the server's files."""
    try:
        real = path.expanduser().resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a symlink loop, no permission
        raise DataRefError(uri, UNAVAILABLE, "unavailable") from None
    if roots is not None:
        resolved_roots = [Path(r).expanduser().resolve() for r in roots]
        if not any(real == r or real.is_relative_to(r) for r in resolved_roots):
            raise DataRefError(uri, UNAVAILABLE, "unavailable")
    return real


def infer_format(uri: str, path: Path) -> Format:
    """The format of a bare path or file:// URI, from what is there."""
    if path.is_file():
        if path.suffix in (".safetensors", ".npz"):
            return "bundle"
        raise DataRefError(uri, f"cannot tell the format of {path.name}; expected .safetensors or .npz")
    if (path / "raw").is_dir() and any((path / "raw").glob("*-images-idx3-ubyte*")):
        return "idx"
    return "imagefolder"
