"""The session fixtures every tier shares (a pytest plugin: tests/conftest.py registers it).

Under pytest-xdist each worker is a process with sessions of its own; what is expensive to make and the same for
all of them (the trained ancestor, its condensation) is made once, by whichever worker asks first, under a file
lock in the run's shared temporary folder, and loaded by the others."""

from __future__ import annotations

import dataclasses
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file

from learngene import CondenseConfig, Normalization, TemplateSet, condense, load_images
from learngene.data import channel_stats
from learngene.train.loop import LoopConfig, OptimConfig, Runtime, train_classifier
from tests.support.data import FMNIST
from tests.support.models import tiny_spec
from tests.support.s3server import BUCKET, S3Server

T = TypeVar("T")


@pytest.fixture(scope="session", autouse=True)
def isolated_settings(tmp_path_factory):
    """Every test, and every CLI subprocess it starts, uses a store and work folder of its own."""
    base = tmp_path_factory.mktemp("learngene-home")
    os.environ["LEARNGENE_STORE"] = str(base / "store")
    os.environ["LEARNGENE_WORK_DIR"] = str(base / "work")
    os.environ.pop("LEARNGENE_DATA_ROOTS", None)
    return base


def made_once(tmp_path_factory, worker_id: str, name: str, make: Callable[[], T], save, load) -> T:
    """`make()` once per test run: the first xdist worker to ask makes and saves it (`save(value, folder)`), the
    others `load(folder)` it. Without xdist there is nothing to share."""
    if worker_id == "master":
        return make()
    folder = tmp_path_factory.getbasetemp().parent / f"made-once-{name}"  # the run's folder, shared by its workers
    with FileLock(f"{folder}.lock"):
        if (folder / "done").is_file():
            return load(folder)
        folder.mkdir(exist_ok=True)
        value = make()
        save(value, folder)
        (folder / "done").touch()
        return value


@pytest.fixture(scope="session")
def fmnist_train():
    """6,000 real FashionMNIST training images with their own normalization."""
    data = load_images(
        f"idx://{FMNIST}",
        img_size=(28, 28),
        in_chans=1,
        normalization=Normalization(mean=(0.5,), std=(0.5,)),
        max_samples=6000,
    )
    return dataclasses.replace(data, normalization=channel_stats(data.images))


@pytest.fixture(scope="session")
def fmnist_test(fmnist_train):
    return load_images(
        f"idx://{FMNIST}?split=test",
        img_size=(28, 28),
        in_chans=1,
        normalization=fmnist_train.normalization,
        max_samples=2000,
    )


ANCESTOR_SPEC = tiny_spec(embed_dim=64, num_heads=2, depth=2)


@pytest.fixture(scope="session")
def ancestor(fmnist_train, tmp_path_factory, worker_id):
    """A small ViT trained for a few hundred steps: a real, if modest, ancestor (well above chance)."""

    def train() -> torch.nn.Module:
        torch.manual_seed(0)
        model = ANCESTOR_SPEC.build()
        loop = LoopConfig(total_steps=500, batch_size=64, optim=OptimConfig(lr=2e-3, warmup_steps=30), seed=0)
        train_classifier(model, fmnist_train, loop, device=torch.device("cpu"))
        return model

    def save(model: torch.nn.Module, folder: Path) -> None:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "ancestor.safetensors")

    def load(folder: Path) -> torch.nn.Module:
        model = ANCESTOR_SPEC.build()
        model.load_state_dict(load_file(folder / "ancestor.safetensors"), strict=True)
        return model

    return made_once(tmp_path_factory, worker_id, "ancestor", train, save, load).eval()


@pytest.fixture(scope="session")
def condensed(ancestor, fmnist_train, fmnist_test, tmp_path_factory, worker_id) -> TemplateSet:
    def make() -> TemplateSet:
        config = CondenseConfig(
            recipe="plain",
            aux=tiny_spec(depth=2),
            steps=300,
            batch_size=64,
            optim=OptimConfig(lr=2e-3, warmup_steps=20),
        )
        condensed = condense(ancestor, fmnist_train, config, eval_data=fmnist_test, runtime=Runtime(device="cpu"))
        condensed.name = "tiny"
        return condensed

    return made_once(
        tmp_path_factory,
        worker_id,
        "condensed",
        make,
        lambda ts, folder: ts.save(folder / "set"),
        lambda folder: TemplateSet.load(folder / "set"),
    )


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One real S3 server (SeaweedFS) for the session; its AWS_* variables are set for this process and every
    process it starts, as an operator would set them."""
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    os.environ.update(server.env)
    yield server
    server.stop()


@pytest.fixture
def s3_url(s3_server, request) -> str:
    """A prefix of its own in the test bucket, for one test."""
    return f"s3://{BUCKET}/{re.sub(r'[^a-z0-9]+', '-', request.node.name.lower())[:40]}-{uuid.uuid4().hex[:8]}"
