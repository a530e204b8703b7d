"""Paths and real data: FashionMNIST from ../shared/data, and the larger layouts (ImageFolder trees, WebDataset
shards of 64 px RGB) that tests write from it into temporary folders."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from learngene import Normalization, load_images

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
FMNIST = SHARED_DATA / "FashionMNIST"

RGB64_SIZE = 64
RGB64_NORM = Normalization(mean=(0.29, 0.29, 0.29), std=(0.35, 0.35, 0.35))
RGB64_SHAPE = dict(img_size=RGB64_SIZE, patch_size=16, in_chans=3, num_classes=10)  # a model's overrides for them


def fmnist_rgb64(count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` FashionMNIST images as 64 px RGB (N, H, W, 3) uint8 arrays, and their labels."""
    data = load_images(
        f"idx://{FMNIST}", img_size=(RGB64_SIZE, RGB64_SIZE), in_chans=3, normalization=RGB64_NORM, max_samples=count
    )
    return data.images.permute(0, 2, 3, 1).numpy(), data.labels.numpy()


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """An ImageFolder tree of PNGs (class<label>/<index>.png)."""
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (root / f"class{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / f"class{label}" / f"{i:05d}.png", compress_level=1)
    return root


def write_shards(root: Path, images: np.ndarray, labels: np.ndarray, shards: int) -> str:
    """WebDataset tar shards of PNGs and class labels; returns their brace-expanded `wds://` reference."""
    root.mkdir(parents=True)
    per_shard = -(-len(images) // shards)
    for shard in range(shards):
        with wds.TarWriter(str(root / f"train-{shard:04d}.tar")) as sink:
            for i in range(shard * per_shard, min((shard + 1) * per_shard, len(images))):
                sink.write({"__key__": f"sample{i:06d}", "png": Image.fromarray(images[i]), "cls": int(labels[i])})
    return f"wds://{root}/train-{{0000..{shards - 1:04d}}}.tar"


def write_idx_subset(folder: Path, train: int, test: int) -> Path:
    """The first `train` and `test` FashionMNIST images and labels in torchvision's raw layout (uncompressed): real
    data, small enough that a command's evaluation over the test split takes a moment."""
    raw = folder / "raw"
    raw.mkdir(parents=True)
    for split, count in (("train", train), ("t10k", test)):
        for part in ("images-idx3", "labels-idx1"):
            with gzip.open(FMNIST / "raw" / f"{split}-{part}-ubyte.gz", "rb") as f:
                magic = f.read(4)
                dims = list(struct.unpack(f">{magic[3]}I", f.read(4 * magic[3])))
                row = int(np.prod(dims[1:], dtype=np.int64))
                dims[0] = min(count, dims[0])
                body = f.read(dims[0] * row)
            (raw / f"{split}-{part}-ubyte").write_bytes(magic + struct.pack(f">{len(dims)}I", *dims) + body)
    return folder
