"""Random-access image sources: the data behind a reference, read one image at a time, never decoded whole.

Every format is a map-style source (index -> image, label), so one sampler serves them all: batches are a pure
function of (seed, step) (`learngene.data.loader`), which gives exact mid-epoch resume and the same global batches
for one process and for N.

    MemorySource  images already in memory (an `ImageData`)
    IdxSource     torchvision's raw IDX files, memory-mapped (gzipped files are decompressed once, within limits)
    BundleSource  a .safetensors or .npz bundle (small by nature: in memory, within the decode limits)
    FolderSource  an ImageFolder tree: the file list in memory, each image opened when it is drawn
    ShardSource   WebDataset tar shards: each shard's member offsets indexed once (tar headers only), each sample
                  read by seeking to it; samples are grouped by WebDataset's own key rule, the label is `.cls`

Digests identify what was read without reading every pixel of a large set: an IDX or bundle file's digest is the
sha256 of its bytes; a folder's is the sha256 of its sorted (relative path, byte size, label) list; a shard set's
is the sha256 of each shard's (name, byte size) and its sample keys. A changed image of the same size in a folder
is therefore not noticed; a changed IDX file or bundle is.
"""

from __future__ import annotations

import abc
import functools
import gzip
import hashlib
import io
import struct
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from webdataset.tariterators import base_plus_ext

from learngene.control import StopFn, check_stop
from learngene.data.images import ImageData, channel_stats
from learngene.data.readers import (
    DEFAULT_LIMITS,
    IDX_PARTS,
    IMAGE_FORMATS,
    IMAGE_SUFFIXES,
    UNRESTRICTED,
    DataAccess,
    DecodeLimits,
    Reader,
    idx_file,
)
from learngene.data.refs import DataRef, infer_format, resolve_inside, shard_names
from learngene.errors import DataRefError
from learngene.formats.files import sha256_file
from learngene.formats.template_set import Normalization

SHARD_IMAGE_EXTENSIONS = {suffix.lstrip(".") for suffix in IMAGE_SUFFIXES}


class ImageSource(abc.ABC):
    """Images (as PIL images in their own mode) by index, and their integer labels, which every source holds in
    memory (`_labels`, -1 where it has none), so that nothing about labels ever reads an image."""

    uri: str
    _labels: np.ndarray  # int64, one per image
    # Decoded images held in this process: reading one is a copy, so evaluation reads them here rather than through
    # loader worker processes (which would cost a fork and a pickle per batch for nothing).
    in_memory: bool = False

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def image(self, index: int) -> Image.Image: ...

    @abc.abstractmethod
    def digest(self) -> str: ...

    @functools.cached_property
    def labelled(self) -> bool:  # asked for every batch: computed once
        return bool(len(self._labels)) and int(self._labels.min()) >= 0

    def label(self, index: int) -> int:
        return int(self._labels[index])

    def max_label(self) -> int:
        return int(self._labels.max()) if len(self._labels) else -1


def _label_array(labels: torch.Tensor | None, count: int) -> np.ndarray:
    return labels.numpy().astype(np.int64) if labels is not None else np.full(count, -1, dtype=np.int64)


def open_source(uri: str, access: DataAccess = UNRESTRICTED) -> ImageSource:
    """The source behind `uri` (the same references as `load_images`, plus `wds://` shard patterns). Listing a
    large ImageFolder or indexing many shards asks `access.should_stop` as it goes."""
    allowed_roots, limits, should_stop = access.allowed_roots, access.limits, access.should_stop
    ref = DataRef.parse(uri)
    if ref.format == "wds":
        return ShardSource(uri, ref.shards(), allowed_roots, limits, should_stop)
    path = resolve_inside(uri, ref.path, allowed_roots)
    fmt = ref.format or infer_format(uri, path)
    if fmt == "idx":
        return IdxSource(uri, path, ref.split, allowed_roots, limits)
    if fmt == "bundle":
        return BundleSource(uri, path, limits)
    return FolderSource(uri, path, allowed_roots, limits, should_stop)


def _pil(image: torch.Tensor) -> Image.Image:
    """A uint8 (C, H, W) tensor as a PIL image, grey or RGB."""
    array = image.permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0], mode="L") if array.shape[-1] == 1 else Image.fromarray(array, "RGB")


# What PIL's decoders raise on hostile bytes (UnidentifiedImageError is an OSError).
DECODE_ERRORS = (
    OSError,
    ValueError,
    OverflowError,
    MemoryError,
    EOFError,
    SyntaxError,
    struct.error,
    Image.DecompressionBombError,
)


def _decoded(uri: str, name: str, data: bytes | Path, limits: DecodeLimits) -> Image.Image:
    """One image file decoded, by one of IMAGE_FORMATS, its size and shape checked from the header first."""
    try:
        image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data, formats=IMAGE_FORMATS)
    except DECODE_ERRORS as exc:
        raise DataRefError(uri, f"{name} is not a readable image ({type(exc).__name__})") from None
    width, height = image.size
    if width * height > limits.image_pixels:
        raise DataRefError(uri, f"{name} has {width} x {height} pixels, over the limit of {limits.image_pixels:,}")
    if max(width, height) > limits.image_aspect * max(min(width, height), 1):
        raise DataRefError(
            uri, f"{name} is {width} x {height} pixels, an aspect ratio over the limit of {limits.image_aspect:g}"
        )
    try:
        image.load()
    except DECODE_ERRORS as exc:
        raise DataRefError(uri, f"{name} is not a readable image ({type(exc).__name__})") from None
    return image


class MemorySource(ImageSource):
    """Images already decoded (an `ImageData`: uint8 tensors at the model's size) as a source."""

    in_memory = True

    def __init__(self, data: ImageData):
        self.uri, self._data, self._labels = data.uri, data, _label_array(data.labels, len(data))

    def __len__(self) -> int:
        return len(self._data)

    def image(self, index: int) -> Image.Image:
        return _pil(self._data.images[index])

    def digest(self) -> str:
        return self._data.digest()


class SubsetSource(ImageSource):
    """Some images of another source, in the given order."""

    def __init__(self, source: ImageSource, index: list[int], uri: str | None = None):
        self.uri, self._source, self._index = uri or source.uri, source, index
        self.in_memory = source.in_memory
        self._labels = source._labels[np.asarray(index, dtype=np.int64)]

    def __len__(self) -> int:
        return len(self._index)

    def image(self, index: int) -> Image.Image:
        return self._source.image(self._index[index])

    def digest(self) -> str:
        return hashlib.sha256(f"{self._source.digest()}:{self._index}".encode()).hexdigest()


class IdxSource(ImageSource):
    def __init__(self, uri: str, folder: Path, split: str, roots, limits: DecodeLimits):
        self.uri = uri
        reader = Reader(uri, limits)
        paths = {part: idx_file(uri, folder, split, part, roots) for part, _ in IDX_PARTS}
        headers = {part: reader.idx_header(paths[part], magic) for part, magic in IDX_PARTS}
        images, labels = headers["images-idx3"], headers["labels-idx1"]
        if images.rows != labels.rows:
            raise DataRefError(uri, f"{images.rows} images but {labels.rows} labels")
        self._paths, self._header = paths, images
        self._labels = self._array(paths["labels-idx1"], labels).astype(np.int64)
        # A plain file is mapped lazily, by each DataLoader worker itself; a gzipped one has no random access and is
        # decompressed once, here, so that forked workers share it instead of each decompressing it again.
        gzipped = paths["images-idx3"].suffix == ".gz"
        self._images: np.ndarray | None = self._array(paths["images-idx3"], images) if gzipped else None

    @staticmethod
    def _array(path: Path, header) -> np.ndarray:
        shape = (header.rows, *header.row_shape)
        if path.suffix == ".gz":  # no random access into gzip: decompressed once (the header passed the limits)
            with gzip.open(path, "rb") as f:
                f.read(header.offset)
                return np.frombuffer(f.read(header.nbytes), dtype=np.uint8).reshape(shape)
        return np.memmap(path, dtype=np.uint8, mode="r", offset=header.offset, shape=shape)

    def __len__(self) -> int:
        return self._header.rows

    def image(self, index: int) -> Image.Image:
        if self._images is None:
            self._images = self._array(self._paths["images-idx3"], self._header)
        return Image.fromarray(np.asarray(self._images[index]), mode="L")

    def digest(self) -> str:
        h = hashlib.sha256()
        for part, _ in IDX_PARTS:
            h.update(sha256_file(self._paths[part]).encode())
        return h.hexdigest()

    def __getstate__(self) -> dict:  # a memory map is not sent to a spawned worker: it maps the file again
        return {**self.__dict__, "_images": None} if isinstance(self._images, np.memmap) else self.__dict__


class BundleSource(ImageSource):
    in_memory = True  # a bundle is decoded whole, within the decode limits

    def __init__(self, uri: str, path: Path, limits: DecodeLimits):
        self.uri, self._path = uri, path
        self._images, labels = Reader(uri, limits).bundle(path, torch.arange)  # within the decode limits
        self._labels = _label_array(labels, len(self._images))

    def __len__(self) -> int:
        return len(self._images)

    def image(self, index: int) -> Image.Image:
        return _pil(self._images[index])

    def digest(self) -> str:
        return sha256_file(self._path)


class FolderSource(ImageSource):
    def __init__(self, uri: str, folder: Path, roots, limits: DecodeLimits, should_stop: StopFn | None = None):
        self.uri, self._folder, self._roots, self._limits = uri, folder, roots, limits
        classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            raise DataRefError(uri, "has no class sub-folders")
        self._samples = []
        for label, name in enumerate(classes):
            found = []
            for count, f in enumerate((folder / name).rglob("*")):  # a million files take a while to list
                if count % 1000 == 0:
                    check_stop(should_stop, "while listing the image folder")
                if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                    found.append(str(f.relative_to(folder)))
            self._samples += [(path, label) for path in sorted(found)]
        if not self._samples:
            raise DataRefError(uri, f"has no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self._labels = np.asarray([label for _, label in self._samples], dtype=np.int64)

    def __len__(self) -> int:
        return len(self._samples)

    def image(self, index: int) -> Image.Image:
        name = self._samples[index][0]
        path = resolve_inside(self.uri, self._folder / name, self._roots)  # a symlink must not lead outside
        return _decoded(self.uri, name, path, self._limits)

    def digest(self) -> str:
        h = hashlib.sha256()
        for name, label in self._samples:
            h.update(f"{name}\0{(self._folder / name).stat().st_size}\0{label}\n".encode())
        return h.hexdigest()


def shard_paths(uri: str, pattern: str, roots: Sequence[str | Path] | None) -> list[Path]:
    """The shards a brace pattern names (counted before they are named), each resolved inside the roots; no shard
    read."""
    names = shard_names(uri, pattern)
    paths = [resolve_inside(uri, Path(name), roots) for name in names]
    for path in paths:
        if not path.is_file() or path.suffix != ".tar":
            raise DataRefError(uri, f"shard {path.name} is not a .tar file")
    return paths


class ShardSource(ImageSource):
    def __init__(
        self, uri: str, pattern: str, roots, limits: DecodeLimits = DEFAULT_LIMITS, should_stop: StopFn | None = None
    ):
        self.uri, self._limits = uri, limits
        self._shards = shard_paths(uri, pattern, roots)
        self._samples: list[tuple[int, int, int, str]] = []  # shard, offset, size, key
        labels: list[int] = []
        for number, shard in enumerate(self._shards):
            check_stop(should_stop, "while indexing the shards")
            self._index(number, shard, labels)
        if not self._samples:
            raise DataRefError(uri, "holds no samples with an image member")
        if labels and len(labels) != len(self._samples):
            raise DataRefError(uri, f"{len(labels)} of its {len(self._samples)} samples have a .cls label")
        self._labels = np.asarray(labels or [-1] * len(self._samples), dtype=np.int64)

    def _index(self, number: int, shard: Path, labels: list[int]) -> None:
        """One pass over a shard's tar headers (contents are skipped, except the few bytes of each label)."""
        groups: dict[str, dict[str, tarfile.TarInfo]] = {}
        try:
            with tarfile.open(shard, "r:") as tar:  # uncompressed shards only: random access needs plain tar
                for member in tar:
                    if not member.isfile():
                        continue
                    key, ext = base_plus_ext(member.name)
                    if key is not None:
                        groups.setdefault(key, {})[ext.lower()] = member
                for key, members in groups.items():
                    image = next((m for ext, m in members.items() if ext in SHARD_IMAGE_EXTENSIONS), None)
                    if image is None:
                        continue
                    self._samples.append((number, image.offset_data, image.size, key))
                    if "cls" in members:
                        label = tar.extractfile(members["cls"])
                        assert label is not None  # a regular file (only those are grouped): never None
                        raw = label.read(32).decode(errors="replace").strip()
                        if not (raw.isascii() and raw.isdigit() and len(raw) <= 9):  # a class index, not 10^31
                            raise DataRefError(self.uri, f"{key}.cls of shard {number} is not a label >= 0")
                        labels.append(int(raw))
        except DataRefError:
            raise
        except (tarfile.TarError, OSError, ValueError, OverflowError, MemoryError, EOFError) as exc:  # hostile headers
            raise DataRefError(self.uri, f"shard {number} is not a readable tar file ({type(exc).__name__})") from None

    def __len__(self) -> int:
        return len(self._samples)

    def image(self, index: int) -> Image.Image:
        number, offset, size, key = self._samples[index]
        with open(self._shards[number], "rb") as f:
            f.seek(offset)
            data = f.read(size)
        return _decoded(self.uri, key, data, self._limits)

    def digest(self) -> str:
        h = hashlib.sha256()
        for number, shard in enumerate(self._shards):
            h.update(f"{shard.name}\0{shard.stat().st_size}\n".encode())
            h.update("\0".join(key for n, _, _, key in self._samples if n == number).encode())
        return h.hexdigest()


def decode_images(
    source: ImageSource, index: torch.Tensor, img_size: tuple[int, int], in_chans: int, should_stop: StopFn | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The images `index` of a source in memory, as uint8 at `img_size` x `in_chans` (shorter side to the target
    size, then a centre crop: timm's evaluation transform with crop_pct 1), and their labels."""
    from torchvision.transforms import v2  # torchvision is timm's dependency; imported here to keep startup light

    transform = v2.Compose([v2.PILToTensor(), v2.Resize(min(img_size), antialias=True), v2.CenterCrop(img_size)])
    images, labels = [], []
    for i in index.tolist():
        check_stop(should_stop, "while reading images")
        with source.image(i) as image:
            images.append(transform(image.convert("L" if in_chans == 1 else "RGB")))
        labels.append(source.label(i))
    return torch.stack(images), (torch.tensor(labels, dtype=torch.int64) if source.labelled else None)


STATS_SAMPLES = 2048  # images whose statistics stand for a streamed set's normalization


def sample_indices(n: int, max_samples: int | None, seed: int) -> torch.Tensor:
    """Which of `n` images a read of `max_samples` takes (ascending): every reader, and a worker copying only what
    will be read from object storage, choose by this one rule."""
    if max_samples is None or max_samples >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_samples].sort().values


def sample_source(source: ImageSource, max_samples: int | None, seed: int) -> ImageSource:
    """A seeded subset of `max_samples` images (the same rule as `load_images`), or the source itself."""
    if max_samples is None or max_samples >= len(source):
        return source
    return SubsetSource(source, sample_indices(len(source), max_samples, seed).tolist())


def source_stats(source: ImageSource, img_size: tuple[int, int], in_chans: int, *, seed: int = 0) -> Normalization:
    """Per-channel mean and std of a seeded sample of `STATS_SAMPLES` images at the model's input."""
    index = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed))[:STATS_SAMPLES]
    images, _ = decode_images(source, index, img_size, in_chans, None)
    return channel_stats(images)
