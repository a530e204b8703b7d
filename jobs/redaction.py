"""What a job's failure may tell its client: the message with every server path it did not send itself redacted
(stores, caches, resolved symlinks), so that no path of the server leaks through an error."""

from __future__ import annotations

import re
from typing import Any

ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/[^\s'\"(),;]+")


def redact_paths(message: str, request: dict[str, Any]) -> str:
    """A job's error as its client may see it: absolute paths are kept only where they are, or lie under, a path
    the client sent itself (a shard pattern's names included); any other server path (a store, a cache, a resolved
    symlink) becomes `<server path>`."""
    sent = [_path_of(v) for v in _strings(request)]
    sent = [p for p in sent if p.startswith("/")]

    def keep(match: re.Match) -> str:
        path = match.group(0)
        bare = "/" + path.lstrip("/")  # 'wds:///data/x' is matched from its first slash
        return path if any(_under(bare, p) for p in sent) else "<server path>"

    return ABSOLUTE_PATH.sub(keep, message)


def _under(path: str, sent: str) -> bool:
    if sent.endswith("{"):  # a shard pattern: any name it may stand for, by the text before its first brace...
        folder = sent[:-1].rpartition("/")[0]
        return bool(folder) and path.startswith(sent[:-1])  # ...which must name a folder: '/{a,b}/x' keeps nothing
    return path == sent or path.startswith(sent.rstrip("/") + "/")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _path_of(uri: str) -> str:
    """The path a reference names (`idx://`, `wds://`, `file://`, `local-dir:` or bare), up to its query; a shard
    pattern up to and including its first brace."""
    _, sep, rest = uri.partition("://")
    path = (rest if sep else uri.removeprefix("local-dir:")).partition("?")[0]
    before, brace, _ = path.partition("{")
    return before + brace
