"""The template store's contract (tests.support.store_contract) on a real S3 server (SeaweedFS), what only S3
has (a publisher dying before its commit, the verified disk cache, the lease lock, location checks), and racing
publisher processes on both backends."""

from __future__ import annotations

import json
import threading
import time

import pytest

from learngene.formats.template_set import MANIFEST, TENSORS
from storage.objects import Bucket
from templates_store import NotFoundError, StoreError, TemplateStore
from templates_store.s3 import OBJECTS
from tests.support.models import random_template_set, tiny_spec
from tests.support.store_contract import (  # noqa: F401 - collected here: the contract's tests
    flip,
    open_store,
    racing_publishers_get_distinct_whole_versions,
    test_a_signing_store_signs_every_version_it_publishes,
    test_a_tampered_file_is_refused,
    test_aliases_move_roll_back_and_protect_their_targets,
    test_cards_are_immutable_checksummed_revisions,
    test_concurrent_alias_moves_lose_no_update,
    test_gc_removes_only_what_no_version_uses,
    test_publish_load_verify_list,
)


@pytest.fixture
def location(s3_url) -> str:
    return s3_url


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_racing_publishers_get_distinct_whole_versions(backend, request, tmp_path):
    where = request.getfixturevalue("s3_url") if backend == "s3" else str(tmp_path / "store")
    racing_publishers_get_distinct_whole_versions(open_store(where, tmp_path / "cache"), tmp_path)


def test_s3_publisher_dying_before_its_commit_leaves_nothing_visible(s3_url, tmp_path, monkeypatch):
    store = open_store(s3_url, tmp_path / "cache")
    bucket_put = Bucket.put

    def die_at_the_manifest(self, key, data, **kwargs):
        if key.endswith(MANIFEST):
            raise KeyboardInterrupt  # the process is killed between its uploads and its commit
        return bucket_put(self, key, data, **kwargs)

    monkeypatch.setattr(Bucket, "put", die_at_the_manifest)
    with pytest.raises(KeyboardInterrupt):
        store.publish(random_template_set(tiny_spec()), "crash")
    monkeypatch.setattr(Bucket, "put", bucket_put)
    assert len(store.backend.bucket.list(f"{OBJECTS}/")) == 1  # its tensors went up...
    assert store.list("crash") == [] and store.backend.names() == []  # ...but no version exists
    with pytest.raises(NotFoundError):
        store.resolve("crash")
    assert store.gc() == []  # within the grace period: it could be a live publisher's
    store.backend.orphan_grace_s = 0.0
    assert len(store.gc()) == 1 and store.backend.bucket.list(f"{OBJECTS}/") == []
    assert str(store.publish(random_template_set(tiny_spec()), "crash")) == "crash@1"


def test_s3_reads_go_through_a_bounded_verified_cache(s3_url, tmp_path):
    writer = open_store(s3_url, tmp_path / "writer")
    refs = [writer.publish(random_template_set(tiny_spec(), seed=i), "c") for i in range(3)]
    one = sum(f.bytes for f in writer.manifest(refs[0]).files.values())
    cache = tmp_path / "worker"
    reader = open_store(s3_url, cache, cache_bytes=int(2.5 * one))  # room for two (and their manifests)
    for ref in refs:
        reader.load(ref)
    entries = sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))
    assert len(entries) == 2 and refs[0].digest[:32] not in entries  # the least recently used went
    # A cached file damaged on the worker's disk is caught on the next load by a fresh process, which fetches the
    # version again from S3 rather than failing every job that uses it.
    tensors = cache / refs[2].digest[:32] / "c" / "3" / TENSORS
    good = tensors.read_bytes()
    tensors.write_bytes(flip(good))
    fresh = open_store(s3_url, cache)
    assert fresh.load(refs[2]).version == 3 and tensors.read_bytes() == good


def test_s3_lock_waits_for_a_holder_and_takes_over_a_dead_one(s3_url, tmp_path):
    backend = open_store(s3_url, tmp_path / "cache").backend
    order: list[str] = []

    def second() -> None:
        with backend.lock("l"):
            order.append("second")

    with backend.lock("l"):
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.5)
        order.append("first")
    waiter.join(30)
    assert order == ["first", "second"]
    # A holder that died: its lease has expired, the next caller replaces it at once.
    dead = json.dumps({"owner": "dead", "expires": time.time() - 1}).encode()
    backend.bucket.put("l/.lock", dead)
    started = time.monotonic()
    with backend.lock("l"):
        assert json.loads(backend.bucket.get("l/.lock")[0])["owner"] != "dead"
    assert time.monotonic() - started < 5
    assert backend.bucket.head("l/.lock") is None  # released


def test_s3_locations_are_checked():
    for bad in ("s3://ab/x", "s3://user:secret@bucket/x", "s3://bucket/x?versionId=1"):
        with pytest.raises(StoreError) as info:
            TemplateStore.open(bad)
        assert "secret" not in str(info.value)
