"""The template store: atomic concurrent publication, crash leftovers, integrity, aliases, pinning, caching."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from learngene.errors import IntegrityError, NonFiniteWeights
from learngene.formats.template_set import MANIFEST, TENSORS
from templates_store import BrokenVersion, ConflictError, NotFoundError, RefError, StoreError, TemplateStore, parse_ref
from tests.support.data import REPO
from tests.support.models import random_template_set, tiny_spec
from tests.support.scale import PROCESS_TIMEOUT_S


@pytest.fixture
def store(tmp_path):
    return TemplateStore.local(tmp_path / "store")


@pytest.fixture(scope="module")
def template_set():
    return random_template_set(tiny_spec())


KILLED_PUBLISHER = """
import os, sys, time
from templates_store import TemplateStore, backend
from tests.support.models import random_template_set, tiny_spec
from tests.support.scale import PROCESS_TIMEOUT_S

def stall(*args):  # stop between writing the tensors and the rename that makes the version visible
    print("staged", flush=True)
    time.sleep(600)

backend.os.rename = stall
TemplateStore.local(sys.argv[1]).publish(random_template_set(tiny_spec()), "crash")
"""


def test_killed_publisher_leaves_no_version_and_gc_cleans_up(tmp_path, template_set):
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_PUBLISHER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "staged"
    staging = [p for p in (tmp_path / "crash").iterdir() if p.name.startswith(".staging") and p.is_dir()]
    assert len(staging) == 1 and (staging[0] / TENSORS).stat().st_size > 0 and (staging[0] / MANIFEST).exists()
    store = TemplateStore.local(tmp_path)
    assert store.gc() == []  # the publisher is alive: its staging folder is not touched
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    assert store.list("crash") == []
    with pytest.raises(NotFoundError):
        store.resolve("crash")
    removed = store.gc()
    assert removed == [str(staging[0])]
    assert sorted(p.name for p in (tmp_path / "crash").iterdir()) == []
    assert str(store.publish(template_set, "crash")) == "crash@1"


def test_flipped_byte_truncation_and_missing_entry_are_refused(store, template_set):
    ref = store.publish(template_set, "t")
    folder = store.backend.folder("t", ref.version)
    tensors = folder / TENSORS
    original = tensors.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x40
    tensors.write_bytes(bytes(flipped))
    with pytest.raises(IntegrityError, match=r"tensors\.safetensors: sha256 does not match"):
        store.verify(ref)
    with pytest.raises(IntegrityError, match="sha256 does not match"):
        store.load(ref)
    tensors.write_bytes(original[:-1])
    with pytest.raises(IntegrityError, match=r"tensors\.safetensors: .* bytes, manifest says .* \(truncated\?\)"):
        store.load(ref)
    tensors.write_bytes(original)
    assert store.load(ref).name == "t"

    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest["files"][TENSORS]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    fresh = store.resolve("t@1")
    with pytest.raises(IntegrityError, match=r"no checksum recorded for tensors\.safetensors"):
        store.load(fresh)
    assert store.load(ref).version == 1  # verified before the edit, served from memory
    cold = TemplateStore.local(store.backend.root)
    with pytest.raises(IntegrityError, match="t@1: manifest differs from the one it was resolved to"):
        cold.load(ref)  # a pinned reference notices that the manifest changed


def test_repeated_loads_come_from_the_cache(store, template_set):
    ref = store.publish(template_set, "c")
    first = store.load("c")
    assert (store.loads, store.hits) == (1, 0)
    assert store.load("c@1") is first and store.load(ref) is first
    assert (store.loads, store.hits) == (1, 2)
    other = TemplateStore.local(store.backend.root)  # a new store object reads (and checks) the files itself
    assert other.load(ref) is not first and other.loads == 1


def test_demo_is_published_on_first_use(store):
    assert store.backend.names() == []
    resolved = store.resolve("demo@prod")
    assert str(resolved) == "demo@1"
    assert store.load(resolved).metrics["aux_accuracy"] > 0.8
    assert store.resolve("demo") == resolved and len(store.list()) == 1


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        (lambda s: [v.version for v in s.list()], [1]),
        (lambda s: list(s.aliases("demo")), ["prod"]),
        (lambda s: s.promote("demo", 1, "staging").version, 1),
        (lambda s: s.delete("demo@1"), "ConflictError: demo@1 is the target of alias(es) prod"),  # no deadlock
    ],
    ids=["list", "aliases", "promote", "delete"],
)
def test_every_operation_on_a_fresh_store_sees_the_demo(tmp_path, operation, expected):
    store = TemplateStore.local(tmp_path / "fresh")
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(operation(store))
        except ConflictError as exc:
            outcome.append(f"ConflictError: {exc}")

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the operation hangs (a lock taken twice?)"
    assert outcome and str(outcome[0]).startswith(str(expected))
    assert store.backend.versions("demo") == [1]


def test_manifest_entries_name_files_inside_the_version(store, template_set):
    folder = store.backend.folder("p", store.publish(template_set, "p").version)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"]["../../../etc/hostname"] = manifest["files"][TENSORS]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BrokenVersion, match="plain names inside the folder"):
        store.load("p@1")


def test_store_location_picks_the_backend(tmp_path):
    assert TemplateStore.open(f"file://{tmp_path}/a").backend.root == tmp_path / "a"
    assert TemplateStore.open(tmp_path / "b").backend.root == tmp_path / "b"
    assert TemplateStore.open("s3://bucket/templates").backend.bucket.url == "s3://bucket/templates"
    with pytest.raises(StoreError, match="no storage backend for gs://"):
        TemplateStore.open("gs://bucket/templates")


@pytest.mark.parametrize("ref", ["", "UPPER", "../etc", "a/b", "x@", "x@0", "x@-1", "x@..", "n" * 65, "x@a b"])
def test_odd_references_are_refused(ref):
    with pytest.raises(RefError):
        parse_ref(ref)


def test_reference_forms():
    assert parse_ref("demo") == ("demo", "latest")
    assert parse_ref("demo@3") == ("demo", 3)
    assert parse_ref("demo@prod") == ("demo", "prod")


def test_alias_names_are_checked(store, template_set):
    store.publish(template_set, "a")
    for bad in ("7", "latest", "Prod"):
        with pytest.raises(RefError):
            store.promote("a", 1, bad)
    with pytest.raises(NotFoundError, match="no alias 'prod'"):
        store.resolve("a@prod")
    with pytest.raises(RefError, match="explicit version"):
        store.delete("a")


def test_gc_removes_interrupted_deletions_and_old_temporaries(store, template_set):
    store.publish(template_set, "g")
    base = store.backend.root / "g"
    (base / ".trash-dead").mkdir()
    (base / ".trash-dead" / "x").write_text("x")
    stale = base / ".aliases.json.123.tmp"
    stale.write_text("{}")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fresh = base / ".aliases.json.456.tmp"
    fresh.write_text("{}")
    assert sorted(store.gc()) == sorted([str(base / ".trash-dead"), str(stale)])
    assert fresh.exists()


def test_what_is_loaded_is_what_was_verified(store, template_set):
    """The tensor file is read once; those bytes are hashed and deserialized. Rewriting the file in place afterwards
    (same size, mtime put back) cannot change a loaded set, and the next cold load detects the change."""
    ref = store.publish(template_set, "v")
    loaded = store.load(ref)
    before = {k: v.clone() for k, v in loaded.templates.items()}
    tensors = store.backend.folder("v", 1) / TENSORS
    st = tensors.stat()
    data = bytearray(tensors.read_bytes())
    data[-8:] = b"\x7f" * 8  # the last float of the last tensor
    with open(tensors, "r+b") as f:  # in place: same inode, same size
        f.write(data)
    os.utime(tensors, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert all(torch.equal(loaded.templates[k], before[k]) for k in before)
    with pytest.raises(IntegrityError, match=r"v/1/tensors\.safetensors: sha256 does not match"):
        TemplateStore.local(store.backend.root).load(ref)


@pytest.mark.parametrize(
    ("tamper", "needle"),
    [
        (lambda ts: ts.templates.pop(next(iter(ts.templates))), "is missing"),
        (lambda ts: ts.free.update(extra=torch.zeros(3)), "'free.extra' is not part of a wave set"),
        (lambda ts: ts.scalers.update({k: v[:1] for k, v in list(ts.scalers.items())[:1]}), "has shape"),
        (lambda ts: ts.free.update({k: v.long() for k, v in list(ts.free.items())[:1]}), "not a floating dtype"),
        (lambda ts: next(iter(ts.scalers.values())).fill_(float("nan")), "NaN or Inf"),
    ],
    ids=["missing", "extra", "shape", "dtype", "nan"],
)
def test_publish_refuses_a_crafted_set_naming_the_tensor(store, tamper, needle):
    crafted = random_template_set(tiny_spec())
    tamper(crafted)
    with pytest.raises((IntegrityError, NonFiniteWeights), match=needle):
        store.publish(crafted, "crafted")
    assert store.backend.versions("crafted") == [] and store.list() == [v for v in store.list() if v.name != "crafted"]


def test_broken_versions_are_skipped_reported_and_refused(store, template_set):
    store.publish(template_set, "b")
    store.publish(template_set, "b")
    (store.backend.root / "b" / "3").mkdir()  # an empty version folder (copied by hand, say)
    (store.backend.folder("b", 2) / MANIFEST).write_text("{not json")
    assert [v.version for v in store.list("b")] == [1]
    assert store.resolve("b").version == 1  # latest: the highest whole version
    with pytest.raises(BrokenVersion, match="b@2 is damaged"):
        store.resolve("b@2")
    problems = store.problems()
    assert [p.split(":")[0] for p in problems] == ["b@2", "b@3"] and str(store.backend.root) not in " ".join(problems)
    env = {**os.environ, "LEARNGENE_STORE": str(store.backend.root)}
    gc = subprocess.run(
        [sys.executable, "-m", "service.cli", "templates", "gc", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
    )
    assert gc.returncode == 0, gc.stderr
    assert json.loads(gc.stdout.splitlines()[-1])["damaged"] == problems
    assert (store.backend.root / "b" / "3").is_dir()  # reported, not deleted


def test_alias_operations_on_an_unknown_name_create_nothing(store, template_set):
    store.publish(template_set, "known")
    for operation in (
        lambda: store.promote("ghost", 1, "prod"),
        lambda: store.rollback("ghost", "prod"),
        lambda: store.delete("ghost@1"),
    ):
        with pytest.raises(NotFoundError, match="'ghost' does not exist"):
            operation()
    assert not (store.backend.root / "ghost").exists()
