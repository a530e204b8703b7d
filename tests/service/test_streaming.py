"""Streaming data: ImageFolder trees and WebDataset shards of 64 px RGB images (written here from FashionMNIST),
read lazily by DataLoader workers; the DeiT recipe's transforms and Mixup; exact mid-epoch resume; memory that does
not grow with the data set (tests/service/test_streaming_memory.py, beside this module on another test worker)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from learngene import CondenseConfig, condense, read_metadata
from learngene.data import DataAccess, open_source
from learngene.data.loader import StepBatches, Stream, step_batches
from learngene.data.transforms import Augment, eval_transform, train_transform
from learngene.errors import DataRefError
from learngene.train.loop import Hooks, OptimConfig, Runtime, Stopped
from tests.support.data import RGB64_NORM, RGB64_SHAPE, RGB64_SIZE, fmnist_rgb64, write_folder, write_shards
from tests.support.models import tiny_spec
from tests.support.scale import PROCESS_TIMEOUT_S

SIZE, NORM = RGB64_SIZE, RGB64_NORM


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """2,000 and 8,000 images as ImageFolder trees, and the 2,000 as four WebDataset shards."""
    root = tmp_path_factory.mktemp("streaming")
    images, labels = fmnist_rgb64(8000)
    return {
        "small": write_folder(root / "folder-2k", images[:2000], labels[:2000]),
        "large": write_folder(root / "folder-8k", images, labels),
        "shards": write_shards(root / "shards", images[:2000], labels[:2000], shards=4),
        "arrays": (images[:2000], labels[:2000]),
    }


def test_folders_and_shards_are_read_image_by_image_with_the_same_pixels(datasets):
    folder = open_source(f"imagefolder://{datasets['small']}")
    shards = open_source(datasets["shards"])
    images, labels = datasets["arrays"]
    assert len(folder) == len(shards) == 2000 and folder.labelled and shards.labelled
    by_key = {int(Path(name).stem): i for i, (name, _) in enumerate(folder._samples)}
    for i in (0, 17, 1999):  # shards keep the writing order; the folder sorts by class, then name
        assert np.array_equal(np.asarray(shards.image(i)), images[i]) and shards.label(i) == labels[i]
        assert np.array_equal(np.asarray(folder.image(by_key[i])), images[i]) and folder.label(by_key[i]) == labels[i]
    # Digests come from file lists and sizes (folders) and shard sizes and keys (shards), not from the pixels.
    assert folder.digest() == open_source(str(datasets["small"])).digest() != shards.digest()


def test_shard_references_are_confined_and_checked(datasets, tmp_path):
    root = Path(datasets["shards"][len("wds://") :]).parent
    with pytest.raises(DataRefError, match="outside the allowed data roots"):
        open_source(datasets["shards"], DataAccess([tmp_path]))
    with pytest.raises(DataRefError, match="outside the allowed data roots"):  # one shard of the range is missing
        open_source(f"wds://{root}/train-{{0000..0004}}.tar")
    (tmp_path / "broken-0.tar").write_bytes(b"not a tar file" * 100)
    with pytest.raises(DataRefError, match="not a readable tar file"):
        open_source(f"wds://{tmp_path}/broken-{{0..0}}.tar")


def test_deit_transforms_and_mixup_change_the_batches_deterministically(datasets):
    source = open_source(datasets["shards"])
    steps = lambda: StepBatches(len(source), 8, seed=3, start_step=5, total_steps=6)  # noqa: E731
    deit = Stream(source, train_transform(Augment(), (SIZE, SIZE), 3, NORM), workers=0)
    plain = Stream(source, eval_transform((SIZE, SIZE), 3, NORM), workers=0)
    x, y = next(step_batches(deit, steps(), torch.device("cpu")))
    again, _ = next(step_batches(Stream(deit.source, deit.transform, workers=2), steps(), torch.device("cpu")))
    reference, y_plain = next(step_batches(plain, steps(), torch.device("cpu")))
    assert x.shape == reference.shape == (8, 3, SIZE, SIZE) and torch.equal(y, y_plain)
    assert torch.equal(x, again)  # augmentation is seeded per draw: the same in any worker process
    assert (x - reference).abs().mean() > 0.1  # RandAugment, crops and erasing did change the images
    mixed, targets = Augment().mixer(10)(x.clone(), y.clone())
    assert targets.shape == (8, 10) and torch.allclose(targets.sum(1), torch.ones(8))
    assert targets.max() < 1 and (targets > 0.2).sum(1).min() >= 1  # smoothed, and mixed where lambda < 1
    assert not torch.equal(mixed, x)


def test_condensation_streams_from_shards_and_resumes_mid_epoch_exactly(ancestor64, datasets, tmp_path):
    config = CondenseConfig(
        aux=tiny_spec(**RGB64_SHAPE, embed_dim=64, num_heads=2, depth=2),
        steps=6,
        batch_size=16,
        optim=OptimConfig(lr=1e-3, warmup_steps=1),
    )  # the DeiT recipe
    source = open_source(datasets["shards"])
    whole = condense(ancestor64, source, config, normalization=NORM, runtime=Runtime(workers=2, device="cpu"))
    state = tmp_path / "state"
    calls = {"n": 0}

    def stop_after_four_steps() -> bool:
        calls["n"] += 1
        return calls["n"] > 4

    with pytest.raises(Stopped):
        condense(
            ancestor64,
            source,
            config,
            normalization=NORM,
            runtime=Runtime(workers=0, device="cpu"),
            hooks=Hooks(checkpoint_dir=state, checkpoint_every=2, should_stop=stop_after_four_steps),
        )
    assert json.loads((state / "train_state.json").read_text())["step"] == 2  # mid-epoch: 125 steps make one
    resumed = condense(
        ancestor64,
        source,
        config,
        normalization=NORM,
        runtime=Runtime(workers=1, device="cpu"),
        hooks=Hooks(checkpoint_dir=state),
    )
    for key, tensor in whole.tensors().items():
        torch.testing.assert_close(resumed.tensors()[key], tensor, rtol=1e-5, atol=1e-6, msg=key)
    assert whole.lineage.data_digest == source.digest() and whole.lineage.data_uri == datasets["shards"]
    assert whole.lineage.condensation["augment"]["transform"] == "deit"


@pytest.fixture(scope="module")
def ancestor64():
    torch.manual_seed(0)
    return tiny_spec(**RGB64_SHAPE, embed_dim=64, num_heads=2, depth=2).build().eval()


@pytest.mark.parametrize("kind", ["folder", "shards"])
def test_learngene_train_streams_from_folders_and_shards(datasets, tmp_path, kind):
    data = f"imagefolder://{datasets['small']}" if kind == "folder" else datasets["shards"]
    spec = tiny_spec(**RGB64_SHAPE, embed_dim=32, num_heads=1, depth=1)
    out = tmp_path / "model.safetensors"
    sets = [a for k, v in spec.overrides().items() for a in ("--set", f"{k}={v}")]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "train",
            "--model",
            spec.model,
            *sets,
            "--data",
            data,
            "--steps",
            "4",
            "--batch-size",
            "16",
            "--warmup",
            "1",
            "--recipe",
            "deit",
            "--workers",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    train = json.loads(run.stdout.strip().splitlines()[-1])["checkpoint"]
    assert train["bytes"] > 0 and out.is_file()
    recorded = read_metadata(out)["train"]
    assert recorded["data_uri"] == data and recorded["augment"]["transform"] == "deit"
    assert recorded["data_digest"] == open_source(data).digest()
