"""The template store's contract, run against both backends: the local filesystem and a real S3 server (SeaweedFS).

Publish, racing publishers, aliases, tampering, gc: what a caller may rely on whichever backend holds the store.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import threading
import time

import pytest

from learngene import IntegrityError
from learngene.template_set import MANIFEST, TENSORS
from storage.objects import Bucket
from templates_store import ConflictError, NotFoundError, StoreError, TemplateStore
from templates_store.s3 import OBJECTS, S3Backend
from tests.conftest import random_template_set, tiny_spec


@pytest.fixture(params=["local", "s3"])
def location(request, tmp_path) -> str:
    return request.getfixturevalue("s3_url") if request.param == "s3" else str(tmp_path / "store")


def open_store(location: str, cache_dir, **kwargs) -> TemplateStore:
    """A store as a fresh process would open it (its own cache folder: nothing shared but the location)."""
    return TemplateStore.open(location, cache_dir=cache_dir, builtins={}, **kwargs)


@pytest.fixture
def store(location, tmp_path) -> TemplateStore:
    return open_store(location, tmp_path / "cache")


def tamper(store: TemplateStore, name: str, version: int, file: str, change) -> None:
    """Rewrite one stored file in place, behind the store's back."""
    backend = store.backend
    if isinstance(backend, S3Backend):
        key = f"{name}/versions/{version}/{MANIFEST}"
        if file != MANIFEST:
            key = f"{OBJECTS}/{json.loads(backend.manifest(name, version))['files'][file]['sha256']}"
        data, _ = backend.bucket.get(key)
        backend.bucket.put(key, change(data))
    else:
        path = backend.folder(name, version) / file
        path.write_bytes(change(path.read_bytes()))


def flip(data: bytes) -> bytes:
    out = bytearray(data)
    out[len(out) // 2] ^= 0x40
    return bytes(out)


def test_publish_load_verify_list(store, tmp_path):
    template_set = random_template_set(tiny_spec())
    ref = store.publish(template_set, "p")
    assert str(ref) == "p@1" and len(ref.digest) == 64
    other = open_store(store_location(store), tmp_path / "other-cache")  # another host: nothing local in common
    assert other.resolve("p") == ref
    loaded = other.load(ref)
    assert loaded.version == 1 and set(loaded.templates) == set(template_set.templates)
    assert all((loaded.templates[k] == template_set.templates[k]).all() for k in template_set.templates)
    assert other.verify("p@1") == ref
    [info] = other.list("p")
    assert (info.version, info.digest, info.method) == (1, ref.digest, template_set.config.method)
    assert other.backend.names() == ["p"] and other.problems() == []


def store_location(store: TemplateStore) -> str:
    backend = store.backend
    return backend.bucket.url if isinstance(backend, S3Backend) else str(backend.root)


def _publish_in_child(location: str, cache_dir: str, env: dict, barrier, queue) -> None:
    os.environ.update(env)
    store = open_store(location, cache_dir)
    template_set = random_template_set(tiny_spec(), seed=os.getpid() % 1000)
    barrier.wait()
    queue.put(str(store.publish(template_set, "race")))


def test_racing_publishers_get_distinct_whole_versions(store, tmp_path):
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(3), ctx.Queue()
    aws = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    where = store_location(store)
    children = [
        ctx.Process(target=_publish_in_child, args=(where, str(tmp_path / f"c{i}"), aws, barrier, queue))
        for i in range(3)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
        assert child.exitcode == 0
    assert sorted(queue.get(timeout=5) for _ in children) == ["race@1", "race@2", "race@3"]
    for version in (1, 2, 3):
        resolved = store.verify(f"race@{version}")
        assert store.manifest(resolved).version == version and store.load(resolved).version == version
    if not isinstance(store.backend, S3Backend):  # no staging folder is left behind
        assert not [p for p in (store.backend.root / "race").iterdir() if p.name.startswith(".staging")]


def test_aliases_move_roll_back_and_protect_their_targets(store):
    template_set = random_template_set(tiny_spec())
    for _ in range(3):
        store.publish(template_set, "m")
    store.promote("m", 1, "prod")
    pinned = store.resolve("m@prod")
    store.promote("m", 3, "prod")
    assert store.resolve("m@prod").version == 3 and store.load(pinned).version == 1
    assert store.rollback("m", "prod").version == 1
    with pytest.raises(ConflictError, match="no earlier version"):
        store.rollback("m", "prod")
    with pytest.raises(ConflictError, match="target of alias"):
        store.delete("m@1")
    store.delete("m@3")
    assert [v.version for v in store.list("m")] == [1, 2]
    with pytest.raises(NotFoundError):
        store.resolve("m@3")
    assert str(store.publish(template_set, "m")) == "m@4"  # a deleted number is never handed out again
    store.promote("m", 2, "prod")
    store.promote("m", 4, "prod")
    store.delete("m@2")
    assert store.rollback("m", "prod").version == 1  # skips the deleted version
    assert store.aliases("m")["prod"].history == [1]


def test_concurrent_alias_moves_lose_no_update(store):
    """Eight threads each move their own alias five times: every alias ends where its thread left it, with its
    whole history (the read-modify-write of the alias record is serialized by the lock)."""
    store.publish(random_template_set(tiny_spec()), "a")
    store.publish(random_template_set(tiny_spec()), "a")
    errors: list[BaseException] = []

    def mover(i: int) -> None:
        try:
            for step in range(5):
                store.promote("a", 1 + (i + step) % 2, f"alias-{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=mover, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    aliases = store.aliases("a")
    assert sorted(aliases) == [f"alias-{i}" for i in range(8)]
    for i in range(8):
        assert aliases[f"alias-{i}"].version == 1 + (i + 4) % 2
        assert len(aliases[f"alias-{i}"].history) == 5


@pytest.mark.parametrize("file", [TENSORS, MANIFEST])
def test_a_tampered_file_is_refused(store, tmp_path, file):
    ref = store.publish(random_template_set(tiny_spec()), "t")
    tamper(store, "t", 1, file, flip)
    cold = open_store(store_location(store), tmp_path / "cold-cache")
    expected = r"t/1/tensors\.safetensors: sha256 does not match" if file == TENSORS else "manifest differs"
    with pytest.raises(IntegrityError, match=expected):
        cold.load(ref)


def test_gc_removes_only_what_no_version_uses(location, tmp_path):
    store = open_store(location, tmp_path / "cache")
    if isinstance(store.backend, S3Backend):
        store.backend.orphan_grace_s = 0.0
    first = store.publish(random_template_set(tiny_spec(), seed=1), "g")
    second = store.publish(random_template_set(tiny_spec(), seed=2), "g")
    store.delete(str(first))
    removed = store.gc()
    if isinstance(store.backend, S3Backend):
        sha = json.loads(store.backend.manifest("g", 2))["files"][TENSORS]["sha256"]
        assert len(removed) == 1 and removed[0].startswith(f"{store.backend.bucket.url}/{OBJECTS}/")
        assert [i.key for i in store.backend.bucket.list(f"{OBJECTS}/")] == [f"{OBJECTS}/{sha}"]
    assert open_store(location, tmp_path / "cold").verify("g@2") == second


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
