"""Data references: every format, resizing, seeded subsets, and clear refusals."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from learngene import Normalization, load_images
from learngene.control import Stopped
from learngene.data import DataAccess, DataRef, label_classes, open_source
from learngene.data.images import channel_stats, fit_images, images_per_chunk
from learngene.data.refs import shard_names
from learngene.errors import DataRefError
from tests.support.data import FMNIST, write_folder, write_shards

NORM = Normalization(mean=(0.5,), std=(0.5,))


def load(uri, **kw):
    return load_images(uri, **{"img_size": (28, 28), "in_chans": 1, "normalization": NORM, **kw})


def test_idx_reads_the_real_files():
    data = load(f"idx://{FMNIST}?split=test")
    assert data.images.shape == (10_000, 1, 28, 28) and data.images.dtype == torch.uint8
    assert data.labels.bincount().tolist() == [1000] * 10  # FashionMNIST's test split is balanced
    x, _ = data.batch(torch.arange(4))
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1  # (v/255 - 0.5) / 0.5


def test_max_samples_is_a_seeded_deterministic_subset():
    a = load(f"idx://{FMNIST}", max_samples=500, seed=1)
    b = load(f"idx://{FMNIST}", max_samples=500, seed=1)
    c = load(f"idx://{FMNIST}", max_samples=500, seed=2)
    assert len(a) == 500 and torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.digest() == b.digest() != c.digest()


def test_resizing_and_channels_follow_the_spec():
    data = load(f"idx://{FMNIST}?split=test", img_size=(32, 32), in_chans=3, max_samples=10)
    assert data.images.shape == (10, 3, 32, 32)
    assert torch.equal(data.images[:, 0], data.images[:, 2])  # grey replicated


def test_relative_paths_and_bare_paths_infer_the_format(monkeypatch):
    monkeypatch.chdir(FMNIST.parent)
    assert len(load("idx://FashionMNIST?split=test", max_samples=3)) == 3
    assert len(load(str(FMNIST), max_samples=3)) == 3


def test_safetensors_and_npz_bundles(tmp_path):
    images = torch.randint(0, 256, (20, 14, 14), dtype=torch.uint8)
    labels = torch.arange(20) % 5
    save_file({"images": images, "labels": labels}, tmp_path / "b.safetensors")
    np.savez(tmp_path / "b.npz", images=(images.float() / 255).numpy(), labels=labels.numpy())
    a = load(f"bundle://{tmp_path / 'b.safetensors'}", max_samples=8)
    b = load(str(tmp_path / "b.npz"), max_samples=8)
    assert a.images.shape == (8, 1, 28, 28) and torch.equal(a.labels, b.labels)
    assert (a.images.int() - b.images.int()).abs().max() <= 1
    save_file({"images": images}, tmp_path / "unlabelled.safetensors")
    assert load(str(tmp_path / "unlabelled.safetensors")).labels is None


def test_imagefolder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    data = load(f"imagefolder://{tmp_path}", img_size=(16, 16), in_chans=3)
    assert data.images.shape == (6, 3, 16, 16) and data.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_label_classes_are_counted_without_decoding_an_image(tmp_path):
    """What admission compares with a model's num_classes: the largest label + 1 of IDX and bundle labels, an
    ImageFolder's class folders; None for shards and for unlabelled bundles."""
    assert label_classes(f"idx://{FMNIST}") == label_classes(f"idx://{FMNIST}?split=test") == 10
    labels = torch.tensor([0, 3, 6, 2])
    images = torch.zeros(4, 8, 8, dtype=torch.uint8)
    save_file({"images": images, "labels": labels}, tmp_path / "b.safetensors")
    np.savez(tmp_path / "b.npz", images=images.numpy(), labels=labels.numpy().astype(np.int16))
    save_file({"images": images}, tmp_path / "unlabelled.safetensors")
    assert label_classes(str(tmp_path / "b.safetensors")) == label_classes(f"bundle://{tmp_path / 'b.npz'}") == 7
    assert label_classes(str(tmp_path / "unlabelled.safetensors")) is None
    rgb, classes = np.zeros((6, 8, 8, 3), dtype=np.uint8), np.array([0, 1, 2, 2, 1, 0])
    assert label_classes(f"imagefolder://{write_folder(tmp_path / 'folder', rgb, classes)}") == 3
    assert label_classes(write_shards(tmp_path / "shards", rgb, classes, shards=2)) is None
    with pytest.raises(DataRefError, match="does not exist"):
        label_classes(str(tmp_path / "b.safetensors"), DataAccess([tmp_path / "elsewhere"]))


def test_pickled_npz_is_refused(tmp_path):
    np.savez(tmp_path / "evil.npz", images=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataRefError, match="plain arrays"):
        load(str(tmp_path / "evil.npz"))


@pytest.mark.parametrize(
    ("uri", "needle", "reason"),
    [
        ("idx:///no/such/folder", "does not exist or lies outside the allowed data roots", "unavailable"),
        ("ftp://host/data", "unknown scheme", "invalid"),
        (f"idx://{FMNIST}?split=validation", "split='validation'", "invalid"),
        (f"idx://{FMNIST}?colour=red", "unknown query parameters", "invalid"),
        ("", "empty", "invalid"),
    ],
)
def test_bad_references_say_why(uri, needle, reason):
    with pytest.raises(DataRefError) as info:
        load(uri)
    assert needle in str(info.value) and info.value.reason == reason


def test_allowed_roots_and_symlink_escapes(tmp_path):
    inside = tmp_path / "inside"
    inside.mkdir()
    save_file({"images": torch.zeros(2, 8, 8, dtype=torch.uint8)}, tmp_path / "secret.safetensors")
    os.symlink(tmp_path / "secret.safetensors", inside / "link.safetensors")
    with pytest.raises(DataRefError, match="outside the allowed data roots") as outside:
        load(f"idx://{FMNIST}", access=DataAccess([inside]))
    with pytest.raises(DataRefError) as missing:
        load(f"idx://{inside}/missing", access=DataAccess([inside]))
    # No existence oracle: outside the roots and missing read the same, and neither names a server path.
    assert outside.value.reason == missing.value.reason == "unavailable"
    assert str(outside.value).replace(f"idx://{FMNIST}", "U") == str(missing.value).replace(
        f"idx://{inside}/missing", "U"
    )
    assert str(inside) not in str(outside.value)
    with pytest.raises(DataRefError, match="outside the allowed data roots"):
        load(str(inside / "link.safetensors"), access=DataAccess([inside]))
    with pytest.raises(DataRefError, match=r"has a '\.\.' segment") as climbed:
        load(f"{inside}/../secret.safetensors", access=DataAccess([inside]))
    assert climbed.value.reason == "invalid"  # refused from the text: the same whether the file exists or not
    for relative in ("secret.safetensors", "~/secret.safetensors"):
        with pytest.raises(DataRefError, match="is not an absolute path"):
            load(relative, access=DataAccess([inside]))
    assert len(load(str(tmp_path / "secret.safetensors"), access=DataAccess([tmp_path]))) == 2


def test_corrupt_and_inconsistent_files(tmp_path):
    raw = tmp_path / "Broken" / "raw"
    raw.mkdir(parents=True)
    good = gzip.decompress((FMNIST / "raw" / "t10k-images-idx3-ubyte.gz").read_bytes())
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(good[: len(good) // 2]))
    (raw / "train-labels-idx1-ubyte.gz").write_bytes((FMNIST / "raw" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(DataRefError, match="header promises"):
        load(f"idx://{tmp_path / 'Broken'}")
    (tmp_path / "trunc.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(DataRefError, match="not a readable safetensors"):
        load(str(tmp_path / "trunc.safetensors"))
    save_file(
        {"images": torch.zeros(3, 8, 8, dtype=torch.uint8), "labels": torch.tensor([0, 1, 12])},
        tmp_path / "l.safetensors",
    )
    with pytest.raises(DataRefError, match="labels go up to 12 but the model has num_classes=10"):
        load(str(tmp_path / "l.safetensors"), num_classes=10)
    save_file({"pixels": torch.zeros(3, 8, 8)}, tmp_path / "p.safetensors")
    with pytest.raises(DataRefError, match="no 'images' tensor"):
        load(str(tmp_path / "p.safetensors"))


def test_parse_keeps_paths_verbatim():
    assert DataRef.parse("idx://../shared/data/MNIST?split=test").path.as_posix() == "../shared/data/MNIST"
    assert DataRef.parse("idx:///abs/MNIST").path.as_posix() == "/abs/MNIST"
    assert DataRef.parse("/abs/x.npz").format is None


def test_shard_patterns_are_counted_before_a_name_is_made():
    assert shard_names("u", "/d/train-{000..002}.tar::/e/x-{a,b}-{9..10}.tar") == [
        "/d/train-000.tar", "/d/train-001.tar", "/d/train-002.tar",
        "/e/x-a-9.tar", "/e/x-a-10.tar", "/e/x-b-9.tar", "/e/x-b-10.tar",
    ]  # fmt: skip
    assert shard_names("u", "/d/{3..1}.tar") == ["/d/3.tar", "/d/2.tar", "/d/1.tar"]
    assert shard_names("u", "/d/{0..10}.tar")[:2] == ["/d/0.tar", "/d/1.tar"]  # a bare 0 pads nothing (bash)
    assert shard_names("u", "/d/{00..10}.tar")[:2] == ["/d/00.tar", "/d/01.tar"]
    with pytest.raises(DataRefError, match="more than 4,096"):
        shard_names("u", "/d/" + "a" * 5000 + "{0..9}.tar")  # 100,000 names of 5 KB each would be 500 MB
    assert shard_names("u", "/d/$WDS_HOME.tar") == ["/d/$WDS_HOME.tar"]  # no environment variable is read
    with pytest.raises(DataRefError, match="names 1,000,000,000,000,000,000 shards, more than 100,000"):
        shard_names("u", "/d/{0..999999999999999999}.tar")  # refused from the count: a range is never listed
    assert len(shard_names("u", "/d/{0..9}{0..9}{0..9}{0..9}{0..9}.tar")) == 100_000
    with pytest.raises(DataRefError, match="more than 100,000"):
        shard_names("u", "/d/{0..9}{0..9}{0..9}{0..9}{0..9}.tar::/e/{0,1}.tar")
    for pattern, why in (
        ("{a..z}", "neither a range"),
        ("{0..\uff11}", "neither a range"),
        ("{{0,1},2}", "nested"),
        ("{0..9", "unbalanced"),
        ("0..9}", "unbalanced"),
    ):
        with pytest.raises(DataRefError, match=why):
            shard_names("u", f"/d/{pattern}.tar")


def test_images_become_floats_a_bounded_chunk_at_a_time():
    """The calibration limit counts uint8 images; converting them to float32 all at once would take 4x that (16 GiB
    at the 4 GiB limit): chunks hold at most FLOAT_CHUNK_BYTES of floats, and the result does not depend on them."""
    assert images_per_chunk((3, 1024, 1024), 4) == 5  # 64 MiB / 12 MiB
    assert images_per_chunk((3, 8192, 8192), 4) == 1  # one image over the budget is still read, alone
    assert images_per_chunk((1, 28, 28), 8) == (64 << 20) // (28 * 28 * 8)
    images = torch.randint(0, 256, (37, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    whole = fit_images(images, (28, 28), 1)
    one_by_one = fit_images(images, (28, 28), 1, budget=1)
    assert whole.shape == (37, 1, 28, 28) and torch.equal(whole, one_by_one)
    assert channel_stats(images, budget=1) == channel_stats(images)


def test_listing_a_folder_and_indexing_shards_stop_when_asked(tmp_path):
    """A million-file ImageFolder takes minutes to list: a cancelled job stops while it is listed, not after."""
    images = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    write_folder(tmp_path / "folder", images[..., 0], np.array([0, 1, 0, 1]))
    shards = write_shards(tmp_path / "shards", images, np.array([0, 1, 0, 1]), shards=2)
    for uri, where in (
        (f"imagefolder://{tmp_path}/folder", "listing the image folder"),
        (shards, "indexing the shards"),
    ):
        assert len(open_source(uri, DataAccess(should_stop=lambda: False))) == 4
        with pytest.raises(Stopped, match=where):
            open_source(uri, DataAccess(should_stop=lambda: True))


def test_damaged_or_odd_labels_are_refused_in_one_message(tmp_path):
    """What admission's class count meets in hostile files: a DataRefError naming the reference, never a crash."""
    images = torch.zeros(4, 8, 8, dtype=torch.uint8)
    save_file({"images": images, "labels": torch.tensor([0.5, 1.0, 2.0, 3.0])}, tmp_path / "float.safetensors")
    save_file({"images": images, "labels": torch.zeros(4, 2, dtype=torch.int64)}, tmp_path / "wide.safetensors")
    save_file({"images": images, "labels": torch.tensor([0, -1, 2, 3])}, tmp_path / "negative.safetensors")
    save_file({"images": images, "labels": torch.zeros(4, dtype=torch.bfloat16)}, tmp_path / "bf16.safetensors")
    folder = tmp_path / "idx" / "raw"
    folder.mkdir(parents=True)
    (folder / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (4).to_bytes(4, "big") * 3 + bytes(64))
    claim = b"\x00\x00\x08\x01" + (1 << 30).to_bytes(4, "big")  # a billion labels promised, four given
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(claim + bytes(4))
    for name in ("float.safetensors", "wide.safetensors", "negative.safetensors", "bf16.safetensors"):
        with pytest.raises(DataRefError, match="labels"):
            label_classes(str(tmp_path / name))
    with pytest.raises(DataRefError, match=r"truncated|decodes to"):
        label_classes(f"idx://{tmp_path / 'idx'}")
