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

from torch import Tensor

from learngene.data.images import ImageData, channel_stats, fit_images
from learngene.data.readers import DEFAULT_LIMITS, IDX_PARTS, UNRESTRICTED, DataAccess, DecodeLimits, Reader, idx_file
from learngene.data.refs import UNAVAILABLE, DataRef, file_uri_path, infer_format, resolve_file, resolve_inside
from learngene.data.sources import ImageSource, decode_images, open_source, sample_indices, shard_paths
from learngene.errors import DataRefError
from learngene.formats.template_set import Normalization

__all__ = [
    "DEFAULT_LIMITS",
    "UNAVAILABLE",
    "UNRESTRICTED",
    "DataAccess",
    "DataRef",
    "DecodeLimits",
    "ImageData",
    "ImageSource",
    "channel_stats",
    "check_data_ref",
    "file_uri_path",
    "label_classes",
    "load_images",
    "open_source",
    "resolve_file",
    "sample_indices",
]


def load_images(
    uri: str,
    *,
    img_size: tuple[int, int],
    in_chans: int,
    normalization: Normalization,
    max_samples: int | None = None,
    seed: int = 0,
    num_classes: int | None = None,
    access: DataAccess = UNRESTRICTED,
) -> ImageData:
    """Read the data behind `uri`, choose a seeded subset of `max_samples`, resize to `img_size` x `in_chans`.

    Sizes are checked against `access.limits` from the files' headers first; only the chosen samples are kept in
    memory (files are streamed in chunks), and `access.should_stop` is asked between chunks: a cancelled job stops
    within one."""
    allowed_roots = access.allowed_roots
    ref = DataRef.parse(uri)
    path = None if ref.format == "wds" else resolve_inside(uri, ref.path, allowed_roots)
    fmt = ref.format if path is None else ref.format or infer_format(uri, path)  # no path: a wds:// reference
    if max_samples is not None and max_samples < 1:
        raise DataRefError(uri, f"max_samples={max_samples} must be >= 1")
    if in_chans not in (1, 3):
        raise DataRefError(uri, f"images convert to 1 or 3 channels; the model takes in_chans={in_chans}")
    reader = Reader(uri, access.limits, access.should_stop)
    choose = lambda n: sample_indices(n, max_samples, seed)  # noqa: E731
    labels: Tensor | None
    if fmt == "idx":
        assert path is not None  # only a wds:// reference has none
        images, labels = reader.idx(path, ref.split, allowed_roots, choose)
    elif fmt == "bundle":
        assert path is not None
        images, labels = reader.bundle(path, choose)
    else:
        source = open_source(uri, access)
        images, labels = decode_images(source, choose(len(source)), img_size, in_chans, access.should_stop)
    if len(images) == 0:
        raise DataRefError(uri, "contains no images")
    if labels is not None and num_classes is not None and int(labels.max()) >= num_classes:
        raise DataRefError(uri, f"labels go up to {int(labels.max())} but the model has num_classes={num_classes}")
    images = fit_images(images, img_size, in_chans)
    return ImageData(images, labels, normalization, uri)


def check_data_ref(uri: str, access: DataAccess = UNRESTRICTED) -> None:
    """Validation without decoding any data (what the API does before accepting a job): the reference parses,
    exists under the roots, names a format this module reads (a .pkl or .pt, say, is refused), and a bundle's or
    IDX file's header promises no more than `limits` allow."""
    allowed_roots = access.allowed_roots
    ref = DataRef.parse(uri)
    if ref.format == "wds":
        shard_paths(uri, ref.shards(), allowed_roots)
        return
    path = resolve_inside(uri, ref.path, allowed_roots)
    fmt = ref.format or infer_format(uri, path)
    if fmt == "bundle" and (not path.is_file() or path.suffix not in (".safetensors", ".npz")):
        raise DataRefError(uri, f"a bundle must be a .safetensors or .npz file, got {path.name}")
    if fmt in ("idx", "imagefolder") and not path.is_dir():
        raise DataRefError(uri, f"{ref.path.name} is not a folder")
    reader = Reader(uri, access.limits)
    if fmt == "bundle":
        reader.bundle_headers(path)
    elif fmt == "idx":
        for part, magic in IDX_PARTS:
            reader.idx_header(idx_file(uri, path, ref.split, part, allowed_roots), magic)


def label_classes(uri: str, access: DataAccess = UNRESTRICTED) -> int | None:
    """How many classes the labels of `uri` span (its largest label + 1), found without decoding an image: an
    ImageFolder's class folders, an IDX labels file or a bundle's `labels` (read whole: a few bytes per image).
    None where it cannot be told cheaply: WebDataset shards (their `.cls` entries lie among the images) and a
    bundle without labels."""
    ref = DataRef.parse(uri)
    if ref.format == "wds":
        return None
    path = resolve_inside(uri, ref.path, access.allowed_roots)
    fmt = ref.format or infer_format(uri, path)
    if fmt == "imagefolder":
        try:
            return sum(1 for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))  # as the reader counts
        except OSError as exc:
            raise DataRefError(uri, f"cannot be listed ({type(exc).__name__})") from None
    return Reader(uri, access.limits).label_span(path, fmt, ref.split, access.allowed_roots)
