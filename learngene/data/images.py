"""Decoded images in memory: uint8 tensors normalized per batch, resized to a model's input, and their statistics."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from learngene.formats.template_set import Normalization


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


# Images are converted to floating point a chunk at a time, a chunk holding at most this many bytes of floats: the
# uint8 images (what the calibration limit counts) stay the largest thing in memory.
FLOAT_CHUNK_BYTES = 64 << 20


def images_per_chunk(image_shape: Sequence[int], element_bytes: int, budget: int = FLOAT_CHUNK_BYTES) -> int:
    """How many images of `image_shape` (C, H, W) fit the float budget at `element_bytes` per value (at least 1)."""
    return max(1, budget // (math.prod(image_shape) * element_bytes))


def fit_images(images: Tensor, img_size: tuple[int, int], in_chans: int, budget: int = FLOAT_CHUNK_BYTES) -> Tensor:
    """uint8 (N, C0, H0, W0) -> uint8 (N, in_chans, *img_size): grey<->RGB conversion and antialiased resize."""
    if images.shape[1] == in_chans and tuple(images.shape[2:]) == tuple(img_size):
        return images
    out = torch.empty((images.shape[0], in_chans, *img_size), dtype=torch.uint8)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # ITU-R 601, as PIL's convert("L")
    largest = (max(images.shape[1], in_chans), max(images.shape[2], img_size[0]), max(images.shape[3], img_size[1]))
    chunk = images_per_chunk(largest, 4, budget)
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].float()
        if x.shape[1] != in_chans:
            x = (x * luma).sum(1, keepdim=True) if in_chans == 1 else x.expand(-1, in_chans, -1, -1)
        if tuple(x.shape[2:]) != tuple(img_size):
            x = F.interpolate(x, size=img_size, mode="bilinear", antialias=True, align_corners=False)
        out[start : start + chunk] = x.round().clamp_(0, 255).to(torch.uint8)
    return out


def channel_stats(images: Tensor, budget: int = FLOAT_CHUNK_BYTES) -> Normalization:
    """Per-channel mean and std of uint8 images in [0, 1] units: the normalization a new model is trained with."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    chunk = images_per_chunk(images.shape[1:], 8, budget)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].double().div(255.0)
        total += x.sum(dim=(0, 2, 3))
        squares += x.pow(2).sum(dim=(0, 2, 3))
    count = images.numel() / images.shape[1]
    mean = total / count
    std = (squares / count - mean**2).clamp_min(1e-12).sqrt()
    return Normalization(mean=tuple(round(v, 4) for v in mean.tolist()), std=tuple(round(v, 4) for v in std.tolist()))
