"""Data references on object storage, and the local copy a worker reads them from.

    s3://bucket/dir/calibration.safetensors | .npz    a bundle
    s3://bucket/dir/train/                            an ImageFolder tree (class folders of images)
    s3://bucket/dir/train-{000000..000127}.tar        WebDataset shards (learngene.data.refs.shard_names)

A reference must lie under one of the data roots that are URL prefixes (`LEARNGENE_DATA_ROOTS` may mix folders and
`s3://bucket/prefix/`); a missing object and one outside the roots get the same answer, so no answer tells a client
what the bucket holds. The API checks a reference from listings and object sizes only. A worker mirrors the objects
into a local cache entry (named by the objects' keys and ETags, so a changed object is fetched again; bounded by
`LEARNGENE_DATA_CACHE_BYTES`, least recently used first) and reads that copy with the local readers, which apply
the same decode limits as to any local file. Ancestor checkpoints stay local (or on a shared mount).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jobs.settings import Settings
from learngene.control import Stopped
from learngene.data import DataAccess, check_data_ref, label_classes
from learngene.data.readers import IMAGE_SUFFIXES
from learngene.data.refs import UNAVAILABLE, shard_names
from learngene.data.sources import sample_indices
from learngene.errors import DataRefError
from learngene.train.loop import StopFn
from storage.cache import cached_entry
from storage.objects import Bucket, ObjectInfo, is_url, parse_s3_url

BUNDLE_SUFFIXES = (".safetensors", ".npz")
# Shard sets up to this many are checked by one HEAD request per shard; larger ones from a listing of the folder
# that holds them (a thousand keys per request), not tens of thousands of requests in series.
MAX_HEAD_REQUESTS = 32


def _check_key(uri: str, key: str) -> None:
    if not key or any(part in ("", ".", "..") for part in key.rstrip("/").split("/")) or "\\" in key:
        raise DataRefError(uri, "names no object, or has empty, '.' or '..' path segments")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise DataRefError(uri, "has a control character in its key")


@dataclass(frozen=True)
class RemoteData:
    uri: str
    bucket: str
    key: str  # the key, prefix (ImageFolder, ending in '/') or shard pattern
    format: str  # bundle | imagefolder | wds

    @classmethod
    def parse(cls, uri: str, roots: Sequence[str]) -> RemoteData:
        try:
            bucket, _ = parse_s3_url(uri)
        except ValueError as exc:
            raise DataRefError(uri, str(exc)) from None
        key = uri.removeprefix(f"s3://{bucket}/") if uri.startswith(f"s3://{bucket}/") else ""
        _check_key(uri, key)
        if "::" in key:  # a second pattern would be a key anywhere in the bucket, past the root checked below
            raise DataRefError(uri, "joins shard patterns with '::'; give one pattern per reference on object storage")
        if not any(uri.startswith(root if root.endswith("/") else f"{root}/") for root in roots):
            raise DataRefError(uri, UNAVAILABLE, "unavailable")
        if key.endswith(BUNDLE_SUFFIXES):
            fmt = "bundle"
        elif key.endswith(".tar"):
            fmt = "wds"
        elif key.endswith("/"):
            fmt = "imagefolder"
        else:
            raise DataRefError(uri, "expected a .safetensors or .npz bundle, .tar shards, or a prefix ending in '/'")
        return cls(uri, bucket, key, fmt)

    def objects(self) -> list[ObjectInfo]:
        """The objects the reference names, from a listing or HEAD requests: no content is read."""
        bucket = Bucket(f"s3://{self.bucket}")
        found: list[ObjectInfo | None]
        if self.format == "imagefolder":
            found = [i for i in bucket.list(self.key) if Path(i.key).suffix.lower() in IMAGE_SUFFIXES]
        elif self.format == "bundle":
            found = [bucket.head(self.key)]
        else:
            keys = shard_names(self.uri, self.key)
            for key in keys:  # a brace may stand for an empty or '..' segment
                _check_key(self.uri, key)
            if len(keys) <= MAX_HEAD_REQUESTS:
                found = [bucket.head(k) for k in keys]
            else:  # one level of each folder that holds shards, a thousand keys a request: never the whole bucket
                listed: dict[str, ObjectInfo] = {}
                for folder in sorted({k.rpartition("/")[0] for k in keys}):
                    listed.update((i.key, i) for i in bucket.objects_in(folder))
                found = [listed.get(k) for k in keys]
        present = [info for info in found if info is not None]
        if not present or len(present) < len(found):
            raise DataRefError(self.uri, UNAVAILABLE, "unavailable")
        return present

    def local_uri(self, folder: Path) -> str:
        """The reference as a local one, for a mirror of its objects in `folder` (same relative layout)."""
        path = folder / self.key
        if self.format == "imagefolder":
            return f"imagefolder://{path}"
        return f"wds://{path}" if self.format == "wds" else str(path)


def check(uri: str, roots: Sequence[str], *, max_file_bytes: int, max_total_bytes: int) -> list[ObjectInfo]:
    """What the API checks: the reference parses, lies under a root, its objects exist, a bundle is within the
    decode limit (an .npz, being compressed, is checked again from its header once a worker has it), and the whole
    fits the workers' data cache."""
    ref = RemoteData.parse(uri, roots)
    objects = ref.objects()
    if ref.format == "bundle" and ref.key.endswith(".safetensors") and objects[0].size > max_file_bytes:
        raise DataRefError(uri, f"the bundle has {objects[0].size} bytes, over the limit of {max_file_bytes}")
    total = sum(info.size for info in objects)
    if total > max_total_bytes:
        raise DataRefError(uri, f"{len(objects)} objects of {total} bytes exceed the data cache ({max_total_bytes})")
    return objects


@dataclass(frozen=True)
class Sample:
    """The images a job will read of a reference: `max_samples` of them, chosen by `seed`."""

    max_samples: int | None
    seed: int


def read_by_sample(ref: RemoteData, objects: list[ObjectInfo], sample: Sample) -> tuple[list[ObjectInfo], list[str]]:
    """Of an ImageFolder's images, those a read of `sample` takes, and every class folder. The local reader orders
    images by class folder, then path (`learngene.data.sources.FolderSource`), and numbers classes in the order of
    their names: a copy of the chosen images in every class folder (empty ones too) reads as the same images with
    the same labels as the whole would."""
    images = []
    for info in objects:
        relative = info.key[len(ref.key) :]
        label, slash, _ = relative.partition("/")
        if slash and not label.startswith("."):  # what the reader takes: images inside a class folder
            images.append((label, relative, info))
    images.sort(key=lambda entry: (entry[0], entry[1]))
    chosen = sample_indices(len(images), sample.max_samples, sample.seed).tolist()
    return [images[i][2] for i in chosen], sorted({label for label, _, _ in images})


def mirror(
    uri: str, roots: Sequence[str], cache: Path, *, max_file_bytes: int, max_total_bytes: int,
    should_stop: StopFn | None = None, sample: Sample | None = None,
) -> tuple[str, Path]:  # fmt: skip
    """Copy the objects of `uri` into a local cache entry (once per set of objects); returns the local reference
    and the entry's folder (the root the local readers are confined to). With `sample`, an ImageFolder is copied as
    far as a read of that sample takes it: `max_samples` images, not the whole prefix (bundles are one object;
    WebDataset shards are copied whole, since how many images a shard holds is known only from its contents)."""
    ref = RemoteData.parse(uri, roots)
    objects = check(uri, roots, max_file_bytes=max_file_bytes, max_total_bytes=max_total_bytes)
    classes: list[str] = []
    if sample is not None and ref.format == "imagefolder":
        objects, classes = read_by_sample(ref, objects, sample)
    # Named by the objects (bucket, keys, ETags) and class folders, not by the URL's spelling: two references to the
    # same objects share one copy, and a changed object is fetched again.
    listing = [ref.bucket, *(f"{o.key} {o.etag} {o.size}" for o in sorted(objects, key=lambda o: o.key)),
               *(f"class {name}" for name in classes)]  # fmt: skip
    name = hashlib.sha256("\n".join(listing).encode()).hexdigest()
    bucket = Bucket(f"s3://{ref.bucket}")

    def download(folder: Path) -> None:
        for label in classes:
            (folder / ref.key / label).mkdir(parents=True, exist_ok=True)
        for info in objects:
            if should_stop is not None and should_stop():
                raise Stopped("stopped while copying the data")
            target = folder / info.key
            target.parent.mkdir(parents=True, exist_ok=True)
            bucket.download(info.key, target, max_bytes=info.size)

    entry = cached_entry(cache, name[:32], download, max_bytes=max_total_bytes)
    return ref.local_uri(entry), entry


def check_data(uri: str, settings: Settings, num_classes: int | None = None) -> None:
    """Admission of any data reference: local ones from their headers, object-storage ones from listings. With
    `num_classes` (the head that trains on it), local labels past it are refused now, where the data tells them
    cheaply (`label_classes`): a job would fail on its first batch. Object-storage data is counted by the job."""
    if is_url(uri):
        check(
            uri,
            settings.object_roots,
            max_file_bytes=settings.limits.decoded_bytes,
            max_total_bytes=settings.data_cache_bytes,
        )
        return
    access = DataAccess(settings.folder_roots, settings.limits.decode())
    check_data_ref(uri, access)
    if num_classes is not None and (classes := label_classes(uri, access)) is not None and classes > num_classes:
        raise DataRefError(
            uri,
            f"its labels span {classes} classes (0-{classes - 1}), more than the model's {num_classes} outputs: "
            f"set overrides.num_classes to {classes} or more, or name data of {num_classes} classes",
        )


def localize(
    uri: str, settings: Settings, should_stop: StopFn | None = None, sample: Sample | None = None
) -> tuple[str, list[Path]]:
    """A reference the local readers can open, and the roots to confine them to: a local reference as it is, an
    object-storage one mirrored into `LEARNGENE_WORK_DIR/data-cache` (as far as `sample` reads, when given)."""
    if not is_url(uri):
        return uri, settings.folder_roots
    local, entry = mirror(
        uri,
        settings.object_roots,
        settings.work_dir / "data-cache",
        max_file_bytes=settings.limits.decoded_bytes,
        max_total_bytes=settings.data_cache_bytes,
        should_stop=should_stop,
        sample=sample,
    )
    return local, [*settings.folder_roots, entry]
