"""Image data named by a URI: calibration data for fitting, training data for condensation and ancestors.

Accepted references (relative paths are taken from the current directory):

    idx:///data/FashionMNIST[?split=train|test]   torchvision's raw layout: <path>/raw/{train,t10k}-*-ubyte[.gz]
    imagefolder:///data/flowers                   one sub-folder per class (torchvision ImageFolder)
    bundle:///data/calib.safetensors              a tensor bundle: `images` and optionally `labels`
    bundle:///data/calib.npz                      (the same as .npz; never unpickled)
    /data/anything                                a bare path: the format is inferred from what is there

Images are resized to the target size and channel count and kept as uint8; `ImageData.batch` normalizes them.
Paths are resolved (symlinks followed) and must lie under one of `allowed_roots` when roots are given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal
from urllib.parse import parse_qs

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import Tensor

from learngene.control import StopFn, check_stop
from learngene.template_set import Normalization

Format = Literal["idx", "imagefolder", "bundle"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


class DataRefError(ValueError):
    """A data reference that cannot be used. `reason` is 'invalid' or 'unavailable' (missing, or outside the roots:
    the two are told apart by nobody, so a client cannot probe the server's files). Messages name the reference as
    the client wrote it, never a resolved server path."""

    def __init__(self, uri: str, message: str, reason: str = "invalid"):
        super().__init__(f"data reference {uri!r}: {message}")
        self.uri = uri
        self.reason = reason


UNAVAILABLE = "does not exist or lies outside the allowed data roots"


@dataclass(frozen=True)
class DecodeLimits:
    """What reading one reference may cost, checked from headers before anything is allocated."""

    decoded_bytes: int = 1 << 30  # what one IDX, .npz or safetensors file may decode to
    image_pixels: int = 4096 * 4096  # width x height of one image file


DEFAULT_LIMITS = DecodeLimits()


def file_uri_path(uri: str, rest: str) -> str:
    """The path of a `file://` URI (RFC 8089): the host must be empty or `localhost`."""
    if rest.startswith("/"):
        return rest
    host, _, path = rest.partition("/")
    if host != "localhost":
        raise DataRefError(uri, f"file:// URIs name no host but localhost, got {host!r}")
    return "/" + path


@dataclass(frozen=True)
class DataRef:
    format: Format | None  # None: infer from the path
    path: Path
    split: str = "train"

    @classmethod
    def parse(cls, uri: str) -> DataRef:
        if not uri or "\x00" in uri:
            raise DataRefError(uri, "empty or contains a NUL byte")
        scheme, sep, rest = uri.partition("://")
        if not sep:
            scheme, rest = "", uri
        rest, _, query = rest.partition("?")
        params = {k: v[-1] for k, v in parse_qs(query, strict_parsing=bool(query)).items()} if query else {}
        formats: dict[str, Format | None] = {
            "idx": "idx",
            "imagefolder": "imagefolder",
            "bundle": "bundle",
            "file": None,
            "": None,
        }
        if scheme not in formats:
            raise DataRefError(uri, f"unknown scheme {scheme!r}; use idx://, imagefolder://, bundle:// or a path")
        if scheme == "file":
            rest = file_uri_path(uri, rest)
        unknown = set(params) - {"split"}
        if unknown:
            raise DataRefError(uri, f"unknown query parameters {sorted(unknown)}")
        split = params.get("split", "train")
        if split not in ("train", "test"):
            raise DataRefError(uri, f"split={split!r}; expected 'train' or 'test'")
        if not rest:
            raise DataRefError(uri, "no path")
        return cls(format=formats[scheme], path=Path(rest), split=split)


@dataclass
class ImageData:
    """Images as uint8 (N, C, H, W) with optional int64 labels, and the normalization applied per batch."""

    images: Tensor
    labels: Tensor | None
    normalization: Normalization
    uri: str = ""
    _digest: str | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __post_init__(self) -> None:
        c = self.images.shape[1]
        norm = self.normalization.for_channels(c)
        self._mean = torch.tensor(norm.mean).view(1, c, 1, 1)
        self._std = torch.tensor(norm.std).view(1, c, 1, 1)

    @property
    def num_classes(self) -> int | None:
        return None if self.labels is None else int(self.labels.max()) + 1

    def batch(self, index: Tensor, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor | None]:
        x = self.images[index].to(device, non_blocking=True).float().div_(255.0)
        x = (x - self._mean.to(device)) / self._std.to(device)
        y = None if self.labels is None else self.labels[index].to(device, non_blocking=True)
        return x, y

    def subset(self, index: Tensor) -> ImageData:
        labels = None if self.labels is None else self.labels[index]
        return ImageData(self.images[index], labels, self.normalization, self.uri)

    def digest(self) -> str:
        """sha256 of the exact images and labels used (shape included), for lineage and cache keys."""
        if self._digest is None:
            h = hashlib.sha256(str(tuple(self.images.shape)).encode())
            h.update(self.images.contiguous().numpy().tobytes())
            if self.labels is not None:
                h.update(self.labels.contiguous().numpy().tobytes())
            self._digest = h.hexdigest()
        return self._digest


def load_images(
    uri: str,
    *,
    img_size: tuple[int, int],
    in_chans: int,
    normalization: Normalization,
    max_samples: int | None = None,
    seed: int = 0,
    allowed_roots: Sequence[str | Path] | None = None,
    num_classes: int | None = None,
    limits: DecodeLimits = DEFAULT_LIMITS,
    should_stop: StopFn | None = None,
) -> ImageData:
    """Read the data behind `uri`, choose a seeded subset of `max_samples`, resize to `img_size` x `in_chans`.

    Sizes are checked against `limits` from the files' headers first; only the chosen samples are kept in memory
    (files are streamed in chunks), and `should_stop` is asked between chunks: a cancelled job stops within one."""
    ref = DataRef.parse(uri)
    path = _resolve_inside(uri, ref.path, allowed_roots)
    fmt = ref.format or _infer_format(uri, path)
    if max_samples is not None and max_samples < 1:
        raise DataRefError(uri, f"max_samples={max_samples} must be >= 1")
    if in_chans not in (1, 3):
        raise DataRefError(uri, f"images convert to 1 or 3 channels; the model takes in_chans={in_chans}")
    reader = Reader(uri, limits, should_stop)
    choose = lambda n: _subset(n, max_samples, seed)  # noqa: E731
    if fmt == "idx":
        images, labels = reader.idx(path, ref.split, allowed_roots, choose)
    elif fmt == "bundle":
        images, labels = reader.bundle(path, choose)
    else:
        images, labels = reader.imagefolder(path, img_size, in_chans, choose, allowed_roots)
    if len(images) == 0:
        raise DataRefError(uri, "contains no images")
    if labels is not None and num_classes is not None and int(labels.max()) >= num_classes:
        raise DataRefError(uri, f"labels go up to {int(labels.max())} but the model has num_classes={num_classes}")
    images = _fit_images(images, img_size, in_chans)
    return ImageData(images, labels, normalization, uri)


def resolve_file(uri: str, allowed_roots: Sequence[str | Path] | None = None) -> Path:
    """A file named by a bare path or `file://` URI, resolved and checked against the allowed roots."""
    scheme, sep, rest = uri.partition("://")
    if sep and scheme != "file":
        raise DataRefError(uri, f"expected a path or file:// URI, got scheme {scheme!r}")
    path = _resolve_inside(uri, Path(file_uri_path(uri, rest) if sep else uri), allowed_roots)
    if not path.is_file():
        raise DataRefError(uri, "is not a file")
    return path


def check_data_ref(
    uri: str, allowed_roots: Sequence[str | Path] | None = None, limits: DecodeLimits = DEFAULT_LIMITS
) -> Path:
    """Validation without decoding any data (what the API does before accepting a job): the reference parses,
    exists under the roots, names a format this module reads (a .pkl or .pt, say, is refused), and a bundle's or
    IDX file's header promises no more than `limits` allow."""
    ref = DataRef.parse(uri)
    path = _resolve_inside(uri, ref.path, allowed_roots)
    fmt = ref.format or _infer_format(uri, path)
    if fmt == "bundle" and (not path.is_file() or path.suffix not in (".safetensors", ".npz")):
        raise DataRefError(uri, f"a bundle must be a .safetensors or .npz file, got {path.name}")
    if fmt in ("idx", "imagefolder") and not path.is_dir():
        raise DataRefError(uri, f"{ref.path.name} is not a folder")
    reader = Reader(uri, limits)
    if fmt == "bundle":
        reader.bundle_headers(path)
    elif fmt == "idx":
        for part, magic in IDX_PARTS:
            reader.idx_header(_idx_file(uri, path, ref.split, part, allowed_roots), magic)
    return path


def _resolve_inside(uri: str, path: Path, roots: Sequence[str | Path] | None) -> Path:
    """The real path (symlinks followed), which must exist under one of `roots`. A missing file and one outside
    the roots get the same answer, so the answer says nothing about the server's files."""
    try:
        real = path.expanduser().resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a symlink loop, no permission
        raise DataRefError(uri, UNAVAILABLE, "unavailable") from None
    if roots is not None:
        resolved_roots = [Path(r).expanduser().resolve() for r in roots]
        if not any(real == r or real.is_relative_to(r) for r in resolved_roots):
            raise DataRefError(uri, UNAVAILABLE, "unavailable")
    return real


def _infer_format(uri: str, path: Path) -> Format:
    if path.is_file():
        if path.suffix in (".safetensors", ".npz"):
            return "bundle"
        raise DataRefError(uri, f"cannot tell the format of {path.name}; expected .safetensors or .npz")
    if (path / "raw").is_dir() and any((path / "raw").glob("*-images-idx3-ubyte*")):
        return "idx"
    return "imagefolder"


def _subset(n: int, max_samples: int | None, seed: int) -> Tensor:
    if max_samples is None or max_samples >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:max_samples].sort().values


IDX_PARTS = (("images-idx3", 2051), ("labels-idx1", 2049))
CHUNK_BYTES = 16 << 20  # how much of a file is decoded at a time


def _idx_file(uri: str, folder: Path, split: str, part: str, roots: Sequence[str | Path] | None) -> Path:
    prefix = "train" if split == "train" else "t10k"
    candidates = [folder / "raw" / f"{prefix}-{part}-ubyte{ext}" for ext in (".gz", "")]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise DataRefError(uri, f"no raw/{candidates[1].name}[.gz] in it")
    return _resolve_inside(uri, path, roots)


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

    def rows(self, stream: BinaryIO, header: ArrayHeader, index: np.ndarray, name: str) -> np.ndarray:
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
            raise self.fail(f"{path.name} holds {path.stat().st_size} bytes, its header promises "
                            f"{header.offset + header.nbytes}")  # fmt: skip
        return header

    def idx(
        self, folder: Path, split: str, roots: Sequence[str | Path] | None, choose: Callable[[int], Tensor]
    ) -> tuple[Tensor, Tensor]:
        paths = {part: _idx_file(self.uri, folder, split, part, roots) for part, _ in IDX_PARTS}
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

    # --- ImageFolder --------------------------------------------------------------------------------------------

    def imagefolder(
        self,
        folder: Path,
        img_size: tuple[int, int],
        in_chans: int,
        choose: Callable[[int], Tensor],
        roots: Sequence[str | Path] | None,
    ) -> tuple[Tensor, Tensor]:
        from PIL import Image, UnidentifiedImageError
        from torchvision.transforms import v2

        classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            raise self.fail("has no class sub-folders")
        samples = [
            (f, label)
            for label, name in enumerate(classes)
            for f in sorted((folder / name).rglob("*"))
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
        ]
        if not samples:
            raise self.fail(f"has no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        # Shorter side to the target size, then a centre crop: timm's evaluation transform with crop_pct 1.
        transform = v2.Compose([v2.PILToTensor(), v2.Resize(min(img_size), antialias=True), v2.CenterCrop(img_size)])
        images, labels = [], []
        for i in choose(len(samples)).tolist():
            check_stop(self.should_stop, "while reading images")
            path, label = samples[i]
            name = path.relative_to(folder)
            path = _resolve_inside(self.uri, path, roots)  # a symlinked file must not lead outside the roots
            try:
                with Image.open(path) as im:
                    if im.width * im.height > self.limits.image_pixels:  # known from the header, before decoding
                        raise self.fail(f"{name} has {im.width} x {im.height} pixels, over the limit of "
                                        f"{self.limits.image_pixels:,}")  # fmt: skip
                    images.append(transform(im.convert("L" if in_chans == 1 else "RGB")))
            except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
                raise self.fail(f"{name} is not a readable image ({type(exc).__name__})") from None
            labels.append(label)
        return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


# Item sizes of safetensors dtypes, for the size check (bf16 is counted as the 2-byte float16; torch reads it).
SAFETENSORS_DTYPES = {"U8": np.uint8, "I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64,
                      "F16": np.float16, "BF16": np.float16, "F32": np.float32, "F64": np.float64,
                      "BOOL": np.bool_}  # fmt: skip


def _open_idx(path: Path) -> BinaryIO:
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


def _fit_images(images: Tensor, img_size: tuple[int, int], in_chans: int, chunk: int = 4096) -> Tensor:
    """uint8 (N, C0, H0, W0) -> uint8 (N, in_chans, *img_size): grey<->RGB conversion and antialiased resize."""
    if images.shape[1] == in_chans and tuple(images.shape[2:]) == tuple(img_size):
        return images
    out = torch.empty((images.shape[0], in_chans, *img_size), dtype=torch.uint8)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # ITU-R 601, as PIL's convert("L")
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].float()
        if x.shape[1] != in_chans:
            x = (x * luma).sum(1, keepdim=True) if in_chans == 1 else x.expand(-1, in_chans, -1, -1)
        if tuple(x.shape[2:]) != tuple(img_size):
            x = F.interpolate(x, size=img_size, mode="bilinear", antialias=True, align_corners=False)
        out[start : start + chunk] = x.round().clamp_(0, 255).to(torch.uint8)
    return out


def channel_stats(images: Tensor, chunk: int = 8192) -> Normalization:
    """Per-channel mean and std of uint8 images in [0, 1] units: the normalization a new model is trained with."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].double().div(255.0)
        total += x.sum(dim=(0, 2, 3))
        squares += x.pow(2).sum(dim=(0, 2, 3))
    count = images.numel() / images.shape[1]
    mean = total / count
    std = (squares / count - mean**2).clamp_min(1e-12).sqrt()
    return Normalization(mean=tuple(round(v, 4) for v in mean.tolist()), std=tuple(round(v, 4) for v in std.tolist()))
