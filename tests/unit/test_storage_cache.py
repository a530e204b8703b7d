"""The local caches of object-storage content: whole entries or none, least recently used evicted, leftovers gone."""

from __future__ import annotations

import os
import time

import pytest

from storage.cache import cached_entry


def fill_with(size: int):
    def fill(folder):
        (folder / "data").write_bytes(b"x" * size)

    return fill


def test_entries_are_whole_reused_and_evicted_least_recently_used(tmp_path):
    calls = []

    def counted(folder):
        calls.append(folder)
        (folder / "data").write_bytes(b"x" * 100)

    a = cached_entry(tmp_path, "a", counted, max_bytes=250)
    assert cached_entry(tmp_path, "a", counted, max_bytes=250) == a and len(calls) == 1  # filled once
    os.utime(a, (time.time() - 60, time.time() - 60))
    cached_entry(tmp_path, "b", fill_with(100), max_bytes=250)
    cached_entry(tmp_path, "a", counted, max_bytes=250)  # used again: now the most recent
    cached_entry(tmp_path, "c", fill_with(100), max_bytes=250)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c"]


def test_a_failed_fill_leaves_nothing_and_stale_leftovers_are_removed(tmp_path):
    def broken(folder):
        (folder / "half").write_bytes(b"x")
        raise OSError("connection reset")

    with pytest.raises(OSError, match="connection reset"):
        cached_entry(tmp_path, "a", broken, max_bytes=1000)
    assert list(tmp_path.iterdir()) == []
    stale, fresh = tmp_path / ".filling-dead", tmp_path / ".publish-live"
    stale.mkdir()
    fresh.mkdir()
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    cached_entry(tmp_path, "b", fill_with(10), max_bytes=1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".publish-live", "b"]
