"""Training batches streamed from a source through `torch.utils.data.DataLoader` workers.

Which images a step sees is a pure function of (seed, step): `StepBatches` yields, for each step from `start_step`,
the indices `batch_indices(n, global_batch, step, seed)` (consecutive slices of seeded per-epoch permutations),
and each rank of a distributed run takes its contiguous share. The random augmentation of each drawn image is
seeded by (seed, its draw number), in whichever worker process decodes it. So a resumed run sees exactly the images
(and augmentations) an uninterrupted one would have, mid-epoch included, and N processes see together what one
process sees with the same global batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import multiprocessing
import os
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from learngene.data.images import ImageData
from learngene.data.sources import ImageSource
from learngene.data.transforms import Transform
from learngene.errors import UserError

Draw = tuple[int, int]  # (image index, draw number)


def default_workers() -> int:
    """DataLoader worker processes: one core is left to the training step, at most 8. None in a daemonic process
    (a Celery prefork pool process may not have children): there the training process decodes, and a condensation
    that needs decoding workers runs under torchrun (`learngene.train.launch`), whose ranks may have them."""
    if multiprocessing.current_process().daemon:
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> Tensor:
    """Indices of batch `step`: consecutive slices of per-epoch permutations, a pure function of its inputs."""
    start, parts, need = step * batch_size, [], batch_size
    while need:
        epoch, offset = divmod(start, n)
        part = _epoch_permutation(n, seed, epoch)[offset : offset + need]
        parts.append(part)
        start, need = start + len(part), need - len(part)
    return torch.cat(parts)


@functools.lru_cache(maxsize=4)
def _epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


class StepBatches(Sampler[list[Draw]]):
    """This rank's share of the global batch of every step in [start_step, total_steps)."""

    def __init__(
        self, n: int, global_batch: int, seed: int, start_step: int, total_steps: int, rank: int = 0, world: int = 1
    ):
        if global_batch % world:
            raise UserError(f"the global batch {global_batch} does not split over {world} processes")
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.start_step, self.total_steps, self.rank, self.world = start_step, total_steps, rank, world

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def __iter__(self) -> Iterator[list[Draw]]:
        share = self.global_batch // self.world
        for step in range(self.start_step, self.total_steps):
            first = self.rank * share
            index = batch_indices(self.n, self.global_batch, step, self.seed)[first : first + share]
            draws = range(step * self.global_batch + first, step * self.global_batch + first + share)
            yield list(zip(index.tolist(), draws, strict=True))


class DrawnImages(Dataset):
    """A source seen through a transform; item (index, draw) is that image transformed under the seed of its draw."""

    def __init__(self, source: ImageSource, transform: Transform, seed: int):
        self.source, self.transform, self.seed = source, transform, seed  # the Stream's seed: augmentation draws

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: Draw) -> tuple[Tensor, int]:
        index, draw = item
        with seeded(self.seed * 1_000_003 + draw), self.source.image(index) as image:
            x = self.transform(image)
        return x, self.source.label(index)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Python's, numpy's and torch's CPU generators seeded for one draw (timm's transforms use all three), then
    restored."""
    state, numpy_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    with torch.random.fork_rng(devices=[]):
        # The CPU generator alone: `torch.manual_seed` also queues a seed for every accelerator backend, and on a
        # build with CUDA where CUDA is not initialized that records a stack trace, about 1 ms per image.
        torch.random.default_generator.manual_seed(seed)
        yield
    random.setstate(state)
    np.random.set_state(numpy_state)


def train_loader(
    source: ImageSource,
    transform: Transform,
    batches: StepBatches,
    *,
    workers: int | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    workers = default_workers() if workers is None else workers
    return DataLoader(
        DrawnImages(source, transform, batches.seed),
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
    )


class Listed(Sampler[list[Draw]]):
    """Fixed indices in order, in batches (evaluation: no augmentation, so the draw number is unused)."""

    def __init__(self, index: list[int], batch_size: int):
        self.index, self.batch_size = index, batch_size

    def __len__(self) -> int:
        return -(-len(self.index) // self.batch_size)

    def __iter__(self) -> Iterator[list[Draw]]:
        for start in range(0, len(self.index), self.batch_size):
            yield [(i, 0) for i in self.index[start : start + self.batch_size]]


def eval_loader(
    source: ImageSource, transform: Transform, index: list[int], *, batch_size: int = 256, workers: int | None = None
) -> DataLoader:
    workers = default_workers() if workers is None else workers
    return DataLoader(DrawnImages(source, transform, 0), batch_sampler=Listed(index, batch_size), num_workers=workers)


Batch = tuple[Tensor, Tensor | None]


@dataclasses.dataclass(frozen=True)
class Stream:
    """Training data read lazily: a source, the training transform, and how many worker processes decode it."""

    source: ImageSource
    transform: Transform
    workers: int | None = None

    def __len__(self) -> int:
        return len(self.source)

    @property
    def uri(self) -> str:
        return self.source.uri


def step_batches(data: ImageData | Stream, steps: StepBatches, device: torch.device) -> Iterator[Batch]:
    """The batches `steps` names, on `device`: gathered from memory (`ImageData`) or decoded by loader workers."""
    if isinstance(data, ImageData):
        for draws in steps:
            yield data.batch(torch.tensor([index for index, _ in draws]), device)
        return
    loader = train_loader(data.source, data.transform, steps, workers=data.workers, pin_memory=device.type == "cuda")
    for x, y in loader:
        yield x.to(device, non_blocking=True), (y.to(device, non_blocking=True) if data.source.labelled else None)


def ordered_batches(data: ImageData | Stream, batch_size: int, device: torch.device) -> Iterator[Batch]:
    """Every image once, in order (evaluation), on `device`."""
    if isinstance(data, ImageData):
        for start in range(0, len(data), batch_size):
            yield data.batch(torch.arange(start, min(start + batch_size, len(data))), device)
        return
    loader = eval_loader(
        data.source, data.transform, list(range(len(data))), batch_size=batch_size, workers=data.workers
    )
    for x, y in loader:
        yield x.to(device, non_blocking=True), (y.to(device, non_blocking=True) if data.source.labelled else None)
