"""Local disk caches of what lives in object storage (template sets, mirrored datasets): one folder per entry,
published by a rename once whole, touched on use, and evicted least recently used past a byte budget."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def cached_entry(cache: Path, name: str, fill: Callable[[Path], None], *, max_bytes: int) -> Path:
    """The entry `cache/name`, filled by `fill(folder)` the first time (into a hidden folder renamed into place, so
    a reader never sees half an entry, and two processes filling it at once keep one), then the oldest entries
    beyond `max_bytes` removed. Readers holding an evicted file open keep it until they close it."""
    entry = cache / name
    if entry.is_dir():
        os.utime(entry)  # most recently used
        return entry
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=".filling-"))
    try:
        fill(staging)
        with contextlib.suppress(OSError):  # another process filled the same entry meanwhile: keep theirs
            os.rename(staging, entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    evict(cache, max_bytes, keep=entry)
    return entry


def evict(cache: Path, max_bytes: int, keep: Path, stale_s: float = 3600) -> None:
    for leftover in [*cache.glob(".filling-*"), *cache.glob(".publish-*")]:  # of processes killed midway
        with contextlib.suppress(OSError):
            if time.time() - leftover.stat().st_mtime > stale_s:
                shutil.rmtree(leftover, ignore_errors=True)
    entries = [p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")]
    sizes = {p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in entries}
    total = sum(sizes.values())
    for path in sorted(entries, key=lambda p: p.stat().st_mtime):  # least recently used first
        if total <= max_bytes:
            break
        if path != keep:
            shutil.rmtree(path, ignore_errors=True)
            total -= sizes[path]
