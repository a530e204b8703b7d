"""The template store's contract: what a caller may rely on whichever backend holds the store (publish, racing
publishers, aliases, tampering, gc, cards). Its tests are written once, here, and collected by one module per backend:
tests/unit/test_store_contract.py (a local folder) and tests/service/test_store_contract.py (a real S3 server), each
of which defines the `location` fixture its backend is reached by."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import threading

import pytest

from learngene.errors import IntegrityError
from learngene.fit_settings import FitSettings
from learngene.formats.template_set import MANIFEST, TENSORS
from learngene.quality.card import CardDomain, CardRow, QualityCard
from storage.signing import SIGNATURE, SignatureInvalid, public_key_pem, verify_folder
from templates_store import ConflictError, NotFoundError, TemplateStore
from templates_store.s3 import OBJECTS, S3Backend
from tests.support.models import random_template_set, tiny_spec

CONTRACT = [
    "test_publish_load_verify_list",
    "test_aliases_move_roll_back_and_protect_their_targets",
    "test_concurrent_alias_moves_lose_no_update",
    "test_a_tampered_file_is_refused",
    "test_gc_removes_only_what_no_version_uses",
    "test_cards_are_immutable_checksummed_revisions",
    "test_a_signing_store_signs_every_version_it_publishes",
]


def open_store(location: str, cache_dir, **kwargs) -> TemplateStore:
    """A store as a fresh process would open it (its own cache folder: nothing shared but the location)."""
    return TemplateStore.open(location, cache_dir=cache_dir, builtins={}, **kwargs)


@pytest.fixture
def store(location, tmp_path) -> TemplateStore:
    """The store at the module's `location`."""
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


def store_location(store: TemplateStore) -> str:
    backend = store.backend
    return backend.bucket.url if isinstance(backend, S3Backend) else str(backend.root)


def hand_card(ref, accuracy: float = 0.5) -> QualityCard:
    """A card with made-up numbers, for the storage tests (measuring is tested over the service below)."""
    rows = [CardRow(depth=d, embed_dim=w, num_heads=w // 32, params=1000 * d * w, accuracy=accuracy + d / 100,
                    baseline_accuracy=0.3, fit_steps=5, seconds=0.1) for w in (32, 64) for d in (1, 2, 4)]  # fmt: skip
    domain = CardDomain(img_size=(28, 28), in_chans=1, patch_size=(7, 7), num_classes=10, mean=(0.5,), std=(0.25,))
    return QualityCard(
        template_set=str(ref),
        digest=ref.digest,
        domain=domain,
        rows=rows,
        fit=FitSettings(steps=5),
        train_samples=64,
        eval_samples=64,
        held_out="a test",
    )


def _publish_in_child(location: str, cache_dir: str, env: dict, barrier, queue) -> None:
    os.environ.update(env)
    store = open_store(location, cache_dir)
    template_set = random_template_set(tiny_spec(), seed=os.getpid() % 1000)
    barrier.wait()
    queue.put(str(store.publish(template_set, "race")))


def racing_publishers_get_distinct_whole_versions(store: TemplateStore, tmp_path) -> None:
    """Three processes publish at once (a service test on either backend: it spawns processes)."""
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


# --- the contract's tests ---------------------------------------------------------------------------------------


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


def test_cards_are_immutable_checksummed_revisions(store):
    ref = store.publish(random_template_set(tiny_spec(depth=2)), "carded")
    assert store.card(ref) is None and store.list("carded")[0].card is None
    assert store.list("carded")[0].domain.img_size == (28, 28)

    assert store.put_card(ref, hand_card(ref, 0.5)) == 1
    [(revision, sha256)] = store.card_revisions(ref)
    first = store.backend.read_card("carded", 1, revision, sha256)
    assert store.card(ref).best.accuracy == pytest.approx(0.54)

    assert store.put_card(ref, hand_card(ref, 0.6)) == 2  # a refresh adds a revision; the newest is served
    assert store.card("carded@1").worst.accuracy == pytest.approx(0.61)
    assert store.backend.read_card("carded", 1, revision, sha256) == first  # the first card's bytes, unchanged
    assert store.read_card(ref, 1).best.accuracy == pytest.approx(0.54)
    [info] = store.list("carded")
    assert (info.card.revision, info.card.best_accuracy, info.card.worst_accuracy) == (2, 0.64, 0.61)

    other = ref.model_copy(update={"digest": "0" * 64})
    with pytest.raises(ValueError, match="not of carded@1"):
        store.put_card(ref, hand_card(other))

    store.backend.orphan_grace_s = 0  # S3: nothing is young enough to be spared
    store.gc()
    assert store.card(ref).worst.accuracy == pytest.approx(0.61)  # gc keeps the cards of live versions

    latest, latest_sha = store.card_revisions(ref)[-1]
    key = f"carded/versions/1/cards/card-{latest:06d}-{latest_sha}.json"
    if isinstance(store.backend, S3Backend):
        store.backend.bucket.put(key, flip(store.backend.bucket.get(key)[0]))
    else:
        path = store.backend.root / "carded" / "1" / "cards" / key.rpartition("/")[2]
        path.write_bytes(flip(path.read_bytes()))
    with pytest.raises(IntegrityError, match="sha256 does not match"):
        store.card(ref)
    assert store.list("carded")[0].card is None  # a damaged card is not shown, the version still is

    store.delete("carded@1")  # its cards go with it
    with pytest.raises(NotFoundError):
        store.card_revisions("carded@1")
    second = store.publish(random_template_set(tiny_spec(depth=2)), "carded")
    assert second.version == 2 and store.card(second) is None and store.backend.cards("carded", 1) == []


def test_a_signing_store_signs_every_version_it_publishes(location, tmp_path):
    key = tmp_path / "key.pem"
    signing = open_store(location, tmp_path / "cache", signing_key=key)
    first = signing.publish(random_template_set(tiny_spec(), seed=1), "signed")
    second = signing.publish(random_template_set(tiny_spec(), seed=2), "signed")
    signing.put_card(first, hand_card(first))  # a card added later is no file of the signed version
    other = open_store(location, tmp_path / "other-cache")  # another host, reading: it needs no key
    for ref in (first, second):
        version = other.files(str(ref))
        assert (
            version.ref == ref and list(version.paths) == [TENSORS] and sorted(version.blobs) == [MANIFEST, SIGNATURE]
        )
        folder = tmp_path / "download" / str(ref.version)
        folder.mkdir(parents=True)
        for name, path in version.paths.items():
            shutil.copyfile(path, folder / name)
        for name, data in version.blobs.items():
            (folder / name).write_bytes(data)
        verify_folder(folder, public_key_pem(key))
        assert json.loads((folder / MANIFEST).read_bytes())["version"] == ref.version
    (folder / TENSORS).write_bytes(flip((folder / TENSORS).read_bytes()))
    with pytest.raises(SignatureInvalid, match=TENSORS):
        verify_folder(folder, public_key_pem(key))
    with pytest.raises(SignatureInvalid):  # signed, but not by this key
        verify_folder(tmp_path / "download" / "1", public_key_pem(tmp_path / "foreign.pem"))

    unsigned = other.publish(random_template_set(tiny_spec(), seed=3), "plain")
    assert list(other.files(str(unsigned)).blobs) == [MANIFEST]  # no signature

    signing.delete(str(first))
    if isinstance(signing.backend, S3Backend):  # a publisher that lost the race for number 2 left its signature
        signing.backend.bucket.put(f"signed/versions/2/signatures/{'0' * 64}.sig", b"a loser's")
        signing.backend.orphan_grace_s = 0.0
        removed = signing.gc()
        assert {r.rpartition("/")[2] for r in removed} >= {f"{'0' * 64}.sig"}
        left = [i.key for i in signing.backend.bucket.list("signed/versions/")]
        assert not any(k.startswith("signed/versions/1/") for k in left)
        assert f"signed/versions/2/signatures/{second.digest}.sig" in left
    cold = open_store(location, tmp_path / "cold").files("signed@2")
    assert cold.blobs[SIGNATURE] == other.files("signed@2").blobs[SIGNATURE]
