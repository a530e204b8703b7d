"""Readers of the array formats (IDX, .npz, safetensors bundles), within decode limits: headers first, then only the
chosen rows, chunk by chunk, asking `should_stop` between chunks. Image files (ImageFolder trees, WebDataset shards)
are read one at a time by `learngene.data.sources`."""

from __future__ import annotations

import contextlib
import gzip
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from learngene.control import StopFn, check_stop
from learngene.data.refs import resolve_inside
from learngene.errors import DataRefError

# The decoders PIL may choose from, by content: never format detection over every plugin (a PostScript file named
# .png would reach Ghostscript wherever it is installed).
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "PPM")  # PPM reads .pgm too
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


class ByteStream(Protocol):
    """What the array readers need of a file: a binary file, a gzip stream or a member of a zip archive."""

    def read(self, size: int = ..., /) -> bytes: ...


@dataclass(frozen=True)
class DecodeLimits:
    """What reading one reference may cost, checked from headers before anything is allocated."""

    decoded_bytes: int = 1 << 30  # what one IDX, .npz or safetensors file may decode to
    image_pixels: int = 4096 * 4096  # width x height of one image file
    image_aspect: float = 16.0  # its longer side over its shorter one: resizing a 1 x 100000 strip costs 100000 x


DEFAULT_LIMITS = DecodeLimits()


@dataclass(frozen=True)
class DataAccess:
    """What reading a reference may touch and spend, and whom it asks whether to go on: the folders its paths must
    resolve under (none: anywhere), the decode limits, and a cancellation check asked between chunks and files."""

    allowed_roots: Sequence[str | Path] | None = None
    limits: DecodeLimits = DEFAULT_LIMITS
    should_stop: StopFn | None = None


UNRESTRICTED = DataAccess()  # a library caller's own files; the service always passes its roots and limits


IDX_PARTS = (("images-idx3", 2051), ("labels-idx1", 2049))
CHUNK_BYTES = 16 << 20  # how much of a file is decoded at a time


def idx_file(uri: str, folder: Path, split: str, part: str, roots: Sequence[str | Path] | None) -> Path:
    prefix = "train" if split == "train" else "t10k"
    candidates = [folder / "raw" / f"{prefix}-{part}-ubyte{ext}" for ext in (".gz", "")]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise DataRefError(uri, f"no raw/{candidates[1].name}[.gz] in it")
    return resolve_inside(uri, path, roots)


@dataclass(frozen=True)
class ArrayHeader:
    """What a file's header promises: rows of `row_shape` items of `dtype`, `offset` bytes into the stream."""

    rows: int
    row_shape: tuple[int, ...]
    dtype: np.dtype
    offset: int

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_bytes


class Reader:
    """Reads one reference's files within its limits: headers first, then only the chosen rows, chunk by chunk."""

    def __init__(self, uri: str, limits: DecodeLimits, should_stop: StopFn | None = None):
        self.uri, self.limits, self.should_stop = uri, limits, should_stop

    def fail(self, message: str) -> DataRefError:
        return DataRefError(self.uri, message)

    def checked(self, name: str, header: ArrayHeader) -> ArrayHeader:
        if header.nbytes > self.limits.decoded_bytes:
            raise self.fail(
                f"{name} decodes to {header.nbytes:,} bytes, over the limit of {self.limits.decoded_bytes:,}"
            )
        return header

    def rows(self, stream: ByteStream, header: ArrayHeader, index: np.ndarray, name: str) -> np.ndarray:
        """The rows `index` (sorted) of the array that follows the header in `stream`, read in chunks."""
        out = np.empty((len(index), *header.row_shape), dtype=header.dtype)
        per_chunk = max(1, CHUNK_BYTES // max(header.row_bytes, 1))
        kept = 0
        for start in range(0, header.rows, per_chunk):
            check_stop(self.should_stop, f"while reading {name}")
            count = min(per_chunk, header.rows - start)
            raw = stream.read(count * header.row_bytes)
            if len(raw) != count * header.row_bytes:
                raise self.fail(f"{name} is truncated: its header promises {header.rows} rows")
            chunk = np.frombuffer(raw, dtype=header.dtype).reshape(count, *header.row_shape)
            hi = int(np.searchsorted(index, start + count))
            out[kept:hi] = chunk[index[kept:hi] - start]
            kept = hi
            if kept == len(index):  # the rest of the file is not needed
                break
        return out

    # --- IDX (torchvision's raw MNIST layout), plain or gzipped ------------------------------------------------

    def idx_header(self, path: Path, magic: int) -> ArrayHeader:
        try:
            with _open_idx(path) as f:
                head = f.read(4)
                if len(head) < 4 or int.from_bytes(head, "big") != magic:
                    raise self.fail(f"{path.name} is not an IDX file with magic {magic}")
                dims = [int.from_bytes(f.read(4), "big") for _ in range(head[3])]
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise self.fail(f"{path.name} cannot be read ({type(exc).__name__})") from None
        if not dims:
            raise self.fail(f"{path.name} has no dimensions")
        header = self.checked(path.name, ArrayHeader(dims[0], tuple(dims[1:]), np.dtype(np.uint8), 4 + 4 * len(dims)))
        if path.suffix != ".gz" and path.stat().st_size != header.offset + header.nbytes:
            raise self.fail(
                f"{path.name} holds {path.stat().st_size} bytes, its header promises {header.offset + header.nbytes}"
            )
        return header

    def idx(
        self, folder: Path, split: str, roots: Sequence[str | Path] | None, choose: Callable[[int], Tensor]
    ) -> tuple[Tensor, Tensor]:
        paths = {part: idx_file(self.uri, folder, split, part, roots) for part, _ in IDX_PARTS}
        headers = {part: self.idx_header(paths[part], magic) for part, magic in IDX_PARTS}
        images, labels = headers["images-idx3"], headers["labels-idx1"]
        if images.rows != labels.rows:
            raise self.fail(f"{images.rows} images but {labels.rows} labels")
        index = choose(images.rows).numpy()
        arrays = {}
        for part, header in headers.items():
            try:
                with _open_idx(paths[part]) as f:
                    f.read(header.offset)
                    arrays[part] = self.rows(f, header, index, paths[part].name)
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                raise self.fail(f"{paths[part].name} cannot be read ({type(exc).__name__})") from None
        return (
            torch.from_numpy(arrays["images-idx3"]).unsqueeze(1),
            torch.from_numpy(arrays["labels-idx1"].astype(np.int64)),
        )

    # --- bundles: .npz (never unpickled) and safetensors ---------------------------------------------------------

    def bundle_headers(self, path: Path) -> dict[str, ArrayHeader]:
        """The `images` (and `labels`) headers of a bundle, checked against the limits; nothing decoded."""
        if path.suffix == ".npz":
            with self._npz(path) as npz:
                headers = {name: self.checked(f"{name} of {path.name}", self._npy_header(npz, name, path))
                           for name in ("images", "labels") if f"{name}.npy" in npz.namelist()}  # fmt: skip
        elif path.suffix == ".safetensors":
            headers = {}
            try:
                with safe_open(str(path), framework="pt") as f:
                    for name in ("images", "labels"):
                        if name in f.keys():  # noqa: SIM118 - safe_open is no mapping
                            sliced = f.get_slice(name)
                            shape, dtype = tuple(sliced.get_shape()), SAFETENSORS_DTYPES.get(sliced.get_dtype())
                            if dtype is None or not shape:
                                raise self.fail(f"{name!r} of {path.name} is a {sliced.get_dtype()} {shape} tensor")
                            header = ArrayHeader(shape[0], shape[1:], np.dtype(dtype), 0)
                            headers[name] = self.checked(f"{name} of {path.name}", header)
            except (SafetensorError, OSError) as exc:
                raise self.fail(f"{path.name} is not a readable safetensors file ({type(exc).__name__})") from None
        else:
            raise self.fail(f"a bundle must be .safetensors or .npz, got {path.suffix or 'no suffix'}")
        if "images" not in headers:
            raise self.fail("no 'images' tensor in the bundle")
        if "labels" in headers and headers["labels"].rows != headers["images"].rows:
            raise self.fail(f"{headers['images'].rows} images but {headers['labels'].rows} labels")
        return headers

    def bundle(self, path: Path, choose: Callable[[int], Tensor]) -> tuple[Tensor, Tensor | None]:
        headers = self.bundle_headers(path)
        index = choose(headers["images"].rows).numpy()
        arrays = {}
        if path.suffix == ".npz":
            with self._npz(path) as npz:
                for name, header in headers.items():
                    with npz.open(f"{name}.npy") as f:
                        f.read(header.offset)
                        arrays[name] = torch.from_numpy(self.rows(f, header, index, f"{name} of {path.name}"))
        else:
            with safe_open(str(path), framework="pt") as f:
                for name in headers:
                    sliced, rows = f.get_slice(name), []
                    for i, row in enumerate(index.tolist()):  # memory-mapped: only the chosen rows are touched
                        if i % 256 == 0:
                            check_stop(self.should_stop, f"while reading {name} of {path.name}")
                        rows.append(sliced[row : row + 1])
                    arrays[name] = torch.cat(rows)
        images, labels = _to_nchw_uint8(self.uri, arrays["images"]), arrays.get("labels")
        if labels is not None:
            if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.dim() != 1:
                raise self.fail(f"'labels' must be a 1-D integer tensor, got {labels.dtype} {tuple(labels.shape)}")
            if len(labels) and int(labels.min()) < 0:
                raise self.fail("labels must be >= 0")
            labels = labels.long()
        return images, labels

    # --- labels alone (admission: the classes a model must have) -----------------------------------------------

    def label_span(self, path: Path, fmt: str, split: str, roots: Sequence[str | Path] | None) -> int | None:
        """The largest label + 1 of an IDX folder or a bundle, streamed a chunk at a time without an image (nothing
        is kept but the running maximum); None for a bundle without labels. Labels must be 1-D non-negative integers."""
        try:
            if fmt == "idx":
                file = idx_file(self.uri, path, split, "labels-idx1", roots)
                header = self.idx_header(file, dict(IDX_PARTS)["labels-idx1"])
                if header.row_shape:
                    raise self.fail(f"{file.name} holds rows of {header.row_shape}, not one label per image")
                with _open_idx(file) as f:
                    f.read(header.offset)
                    return self._stream_span(f, header, file.name)
            headers = self.bundle_headers(path)
            if "labels" not in headers:
                return None
            header = headers["labels"]
            if header.dtype.kind not in "iu" or header.row_shape:
                raise self.fail(f"'labels' must be a 1-D integer array, got {header.dtype} rows of {header.row_shape}")
            if path.suffix == ".npz":
                with self._npz(path) as npz, npz.open("labels.npy") as f:
                    f.read(header.offset)
                    return self._stream_span(f, header, f"labels of {path.name}")
            with safe_open(str(path), framework="pt") as st:
                sliced, top = st.get_slice("labels"), -1
                step = max(1, CHUNK_BYTES // header.dtype.itemsize)
                for start in range(0, header.rows, step):
                    chunk = sliced[start : start + step]
                    if len(chunk) and int(chunk.min()) < 0:
                        raise self.fail("labels must be >= 0")
                    top = max(top, int(chunk.max()) if len(chunk) else -1)
                return top + 1 if top >= 0 else None
        except DataRefError:
            raise
        except (
            OSError,
            EOFError,
            gzip.BadGzipFile,
            zlib.error,
            zipfile.BadZipFile,
            SafetensorError,
            ValueError,
        ) as exc:
            raise self.fail(f"its labels cannot be read ({type(exc).__name__})") from None

    def _stream_span(self, stream: ByteStream, header: ArrayHeader, name: str) -> int | None:
        top, per_chunk = -1, max(1, CHUNK_BYTES // header.dtype.itemsize)
        for start in range(0, header.rows, per_chunk):
            count = min(per_chunk, header.rows - start)
            raw = stream.read(count * header.dtype.itemsize)
            if len(raw) != count * header.dtype.itemsize:
                raise self.fail(f"{name} is truncated: its header promises {header.rows} rows")
            chunk = np.frombuffer(raw, dtype=header.dtype)
            if chunk.min() < 0:
                raise self.fail("labels must be >= 0")
            top = max(top, int(chunk.max()))
        return top + 1 if top >= 0 else None

    @contextlib.contextmanager
    def _npz(self, path: Path) -> Iterator[zipfile.ZipFile]:
        try:
            with zipfile.ZipFile(path) as npz:
                yield npz
        except DataRefError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise self.fail(f"{path.name} is not a readable .npz of plain arrays ({type(exc).__name__})") from None

    def _npy_header(self, npz: zipfile.ZipFile, name: str, path: Path) -> ArrayHeader:
        """The array header of one .npz member, read from its first bytes; object (pickled) arrays are refused."""
        with npz.open(f"{name}.npy") as f:
            try:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(f, max_header_size=10_000)
            except ValueError as exc:
                raise self.fail(f"{path.name} is not a readable .npz of plain arrays ({exc})") from None
            offset = f.tell()
        if dtype.hasobject or not shape or (fortran and len(shape) > 1):
            raise self.fail(f"{path.name} is not a readable .npz of plain arrays ({name}: {dtype} {shape})")
        header = ArrayHeader(int(shape[0]), tuple(int(d) for d in shape[1:]), dtype, offset)
        if npz.getinfo(f"{name}.npy").file_size != offset + header.nbytes:
            raise self.fail(f"{path.name} is not a readable .npz of plain arrays ({name} is not the size it declares)")
        return header


# Item sizes of safetensors dtypes, for the size check (bf16 is counted as the 2-byte float16; torch reads it).
SAFETENSORS_DTYPES = {"U8": np.uint8, "I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64,
                      "F16": np.float16, "BF16": np.float16, "F32": np.float32, "F64": np.float64,
                      "BOOL": np.bool_}  # fmt: skip


def _open_idx(path: Path) -> gzip.GzipFile | BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _to_nchw_uint8(uri: str, images: Tensor) -> Tensor:
    if images.dim() == 3:
        images = images.unsqueeze(1)
    elif images.dim() == 4 and images.shape[1] not in (1, 3) and images.shape[-1] in (1, 3):
        images = images.permute(0, 3, 1, 2)
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise DataRefError(
            uri, f"'images' must be (N,H,W), (N,C,H,W) or (N,H,W,C) with C 1 or 3, got {tuple(images.shape)}"
        )
    if images.dtype == torch.uint8:
        return images.contiguous()
    if not images.dtype.is_floating_point:
        raise DataRefError(uri, f"'images' must be uint8 or float in [0, 1], got {images.dtype}")
    if images.numel() and (not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1):
        raise DataRefError(uri, "float 'images' must be finite and in [0, 1]")
    return images.float().mul(255).round().to(torch.uint8).contiguous()
