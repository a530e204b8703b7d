"""Shared fixtures: tiny ViT specs, real FashionMNIST data, and a session-wide trained ancestor + condensation."""

from __future__ import annotations

import dataclasses
import os
import re
import uuid
from pathlib import Path

import pytest
import torch

from learngene import CondenseConfig, Normalization, TemplateSet, ViTSpec, condense, load_images
from learngene.condense import build_auxiliary
from learngene.data import channel_stats
from learngene.training import OptimConfig, train_classifier
from tests.s3server import BUCKET, S3Server

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FMNIST = SHARED_DATA / "FashionMNIST"
TINY = dict(img_size=28, patch_size=7, in_chans=1, num_classes=10)


@pytest.fixture(scope="session", autouse=True)
def isolated_settings(tmp_path_factory):
    """Every test, and every CLI subprocess it starts, uses a store and work folder of its own."""
    base = tmp_path_factory.mktemp("learngene-home")
    os.environ["LEARNGENE_STORE"] = str(base / "store")
    os.environ["LEARNGENE_WORK_DIR"] = str(base / "work")
    os.environ.pop("LEARNGENE_DATA_ROOTS", None)
    return base


def tiny_spec(**overrides) -> ViTSpec:
    return ViTSpec(model="vit_tiny_patch16_224", **{**TINY, "embed_dim": 32, "num_heads": 1, "depth": 3, **overrides})


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


@pytest.fixture(scope="session")
def ancestor(fmnist_train):
    """A small ViT trained for a few hundred steps: a real, if modest, ancestor (well above chance)."""
    torch.manual_seed(0)
    model = tiny_spec(embed_dim=64, num_heads=2, depth=2).build()
    train_classifier(
        model,
        fmnist_train,
        steps=500,
        batch_size=64,
        cfg=OptimConfig(lr=2e-3, warmup_steps=30),
        device=torch.device("cpu"),
    )
    return model.eval()


@pytest.fixture(scope="session")
def condensed(ancestor, fmnist_train, fmnist_test) -> TemplateSet:
    config = CondenseConfig(
        recipe="plain", aux=tiny_spec(depth=2), steps=300, batch_size=64, optim=OptimConfig(lr=2e-3, warmup_steps=20)
    )
    return condense(ancestor, fmnist_train, config, name="tiny", eval_data=fmnist_test, device="cpu")


def random_template_set(spec: ViTSpec, seed: int = 0, jitter: float = 0.3, **config_kw) -> TemplateSet:
    """An untrained but non-trivial template set: random templates, scalers and free parameters."""
    torch.manual_seed(seed)
    config = CondenseConfig(recipe="plain", aux=spec, steps=1, **config_kw)
    aux = build_auxiliary(config, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for p in aux.parameters():
            p.add_(jitter * torch.randn_like(p) * p.std().clamp_min(0.05))
    return TemplateSet.from_auxiliary(aux, name="random", normalization=Normalization(mean=(0.5,), std=(0.25,)))


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
