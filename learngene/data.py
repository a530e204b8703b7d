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

import dataclasses
import functools
import gzip
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from learngene.template_set import Normalization

Format = Literal["idx", "imagefolder", "bundle"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


class DataRefError(ValueError):
    """A data reference that cannot be used. `reason` is 'invalid', 'not_found' or 'forbidden'."""

    def __init__(self, uri: str, message: str, reason: str = "invalid"):
        super().__init__(f"data reference {uri!r}: {message}")
        self.uri = uri
        self.reason = reason


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
) -> ImageData:
    """Read the data behind `uri`, choose a seeded subset of `max_samples`, resize to `img_size` x `in_chans`."""
    ref = DataRef.parse(uri)
    path = _resolve_inside(uri, ref.path, allowed_roots)
    fmt = ref.format or _infer_format(uri, path)
    if max_samples is not None and max_samples < 1:
        raise DataRefError(uri, f"max_samples={max_samples} must be >= 1")
    if in_chans not in (1, 3):
        raise DataRefError(uri, f"images convert to 1 or 3 channels; the model takes in_chans={in_chans}")
    if fmt == "idx":
        images, labels = _read_idx(uri, path, ref.split, allowed_roots, lambda n: _subset(n, max_samples, seed))
    elif fmt == "bundle":
        images, labels = _read_bundle(uri, path)
        index = _subset(len(images), max_samples, seed)
        images, labels = images[index], None if labels is None else labels[index]
    else:
        images, labels = _read_imagefolder(uri, path, img_size, in_chans, max_samples, seed, allowed_roots)
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
    path = _resolve_inside(uri, Path(rest if sep else uri), allowed_roots)
    if not path.is_file():
        raise DataRefError(uri, f"{path} is not a file", "not_found")
    return path


def check_data_ref(uri: str, allowed_roots: Sequence[str | Path] | None = None) -> Path:
    """Cheap validation without reading any data: the reference parses, exists, lies under the roots, and names a
    format this module reads (a .pkl or .pt, say, is refused here, before any job is accepted)."""
    ref = DataRef.parse(uri)
    path = _resolve_inside(uri, ref.path, allowed_roots)
    fmt = ref.format or _infer_format(uri, path)
    if fmt == "bundle" and (not path.is_file() or path.suffix not in (".safetensors", ".npz")):
        raise DataRefError(uri, f"a bundle must be a .safetensors or .npz file, got {path.name}")
    if fmt in ("idx", "imagefolder") and not path.is_dir():
        raise DataRefError(uri, f"{path.name} is not a folder")
    return path


def _resolve_inside(uri: str, path: Path, roots: Sequence[str | Path] | None) -> Path:
    try:
        real = path.expanduser().resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise DataRefError(uri, f"{path} does not exist", "not_found") from None
    except (OSError, RuntimeError) as exc:  # symlink loops, permission problems
        raise DataRefError(uri, f"{path} cannot be resolved ({exc})", "not_found") from None
    if roots is not None:
        resolved_roots = [Path(r).expanduser().resolve() for r in roots]
        if not any(real == r or real.is_relative_to(r) for r in resolved_roots):
            allowed = ", ".join(str(r) for r in resolved_roots) or "none configured"
            raise DataRefError(uri, f"{path} is outside the allowed data roots ({allowed})", "forbidden")
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


def _read_idx_file(uri: str, path: Path, magic: int) -> np.ndarray:
    """The decoded array, read-only; decoded once per process while the file is unchanged (jobs reuse data sets)."""
    st = path.stat()
    try:
        return _decode_idx(path, magic, st.st_mtime_ns, st.st_size)
    except ValueError as exc:
        raise DataRefError(uri, f"{path.name} {exc}") from None


@functools.lru_cache(maxsize=4)
def _decode_idx(path: Path, magic: int, mtime_ns: int, size: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"cannot be read ({exc})") from None
    if len(raw) < 8 or int.from_bytes(raw[:4], "big") != magic:
        raise ValueError(f"is not an IDX file with magic {magic}")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"holds {body.size} bytes, its header promises {int(np.prod(dims))}")
    array = body.reshape(dims)
    array.flags.writeable = False
    return array


def _read_idx(
    uri: str, folder: Path, split: str, roots: Sequence[str | Path] | None, index_of: Callable[[int], Tensor]
) -> tuple[Tensor, Tensor]:
    prefix = "train" if split == "train" else "t10k"
    found = {}
    for part, magic in (("images-idx3", 2051), ("labels-idx1", 2049)):
        candidates = [folder / "raw" / f"{prefix}-{part}-ubyte{ext}" for ext in (".gz", "")]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise DataRefError(uri, f"no {candidates[0].name} in {folder / 'raw'}", "not_found")
        found[part] = _read_idx_file(uri, _resolve_inside(uri, path, roots), magic)
    images, labels = found["images-idx3"], found["labels-idx1"]
    if len(images) != len(labels):
        raise DataRefError(uri, f"{len(images)} images but {len(labels)} labels")
    index = index_of(len(images)).numpy()  # copy only the chosen subset out of the cached arrays
    return torch.from_numpy(images[index]).unsqueeze(1), torch.from_numpy(labels[index].astype(np.int64))


def _read_bundle(uri: str, path: Path) -> tuple[Tensor, Tensor | None]:
    if path.suffix == ".safetensors":
        try:
            tensors = load_file(path)
        except (SafetensorError, OSError, ValueError) as exc:
            raise DataRefError(uri, f"{path.name} is not a readable safetensors file ({exc})") from None
    elif path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                tensors = {k: torch.from_numpy(np.ascontiguousarray(npz[k])) for k in npz.files}
        except (ValueError, OSError, EOFError) as exc:  # object arrays refuse to load without pickle
            raise DataRefError(uri, f"{path.name} is not a readable .npz of plain arrays ({exc})") from None
    else:
        raise DataRefError(uri, f"a bundle must be .safetensors or .npz, got {path.suffix or 'no suffix'}")
    if "images" not in tensors:
        raise DataRefError(uri, f"no 'images' tensor (found {sorted(tensors)})")
    images, labels = tensors["images"], tensors.get("labels")
    images = _to_nchw_uint8(uri, images)
    if labels is not None:
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.dim() != 1:
            raise DataRefError(uri, f"'labels' must be a 1-D integer tensor, got {labels.dtype} {tuple(labels.shape)}")
        if len(labels) != len(images):
            raise DataRefError(uri, f"{len(images)} images but {len(labels)} labels")
        if len(labels) and int(labels.min()) < 0:
            raise DataRefError(uri, "labels must be >= 0")
        labels = labels.long()
    return images, labels


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


def _read_imagefolder(
    uri: str,
    folder: Path,
    img_size: tuple[int, int],
    in_chans: int,
    max_samples: int | None,
    seed: int,
    roots: Sequence[str | Path] | None,
) -> tuple[Tensor, Tensor]:
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import v2

    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataRefError(uri, f"{folder} has no class sub-folders")
    samples = [
        (f, label)
        for label, name in enumerate(classes)
        for f in sorted((folder / name).rglob("*"))
        if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
    ]
    if not samples:
        raise DataRefError(uri, f"{folder} has no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    index = _subset(len(samples), max_samples, seed)
    # Shorter side to the target size, then a centre crop: timm's evaluation transform with crop_pct 1.
    transform = v2.Compose([v2.PILToTensor(), v2.Resize(min(img_size), antialias=True), v2.CenterCrop(img_size)])
    images, labels = [], []
    for i in index.tolist():
        path, label = samples[i]
        path = _resolve_inside(uri, path, roots)  # a symlinked file must not lead outside the roots
        try:
            with Image.open(path) as im:
                im = im.convert("L" if in_chans == 1 else "RGB")
                images.append(transform(im))
        except (UnidentifiedImageError, OSError) as exc:
            raise DataRefError(uri, f"{path.name} is not a readable image ({exc})") from None
        labels.append(label)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


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
