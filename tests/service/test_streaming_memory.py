"""Condensation memory does not grow with the data set: `learngene condense` over ImageFolders of 2,000 and 8,000
64 px RGB images (written here from FashionMNIST) peaks at the same RSS. A module of its own, beside
tests/service/test_streaming.py on another test worker: its four condensations are the longest part of streaming."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from learngene.formats.checkpoint import export_checkpoint
from tests.support.data import RGB64_NORM, RGB64_SHAPE, fmnist_rgb64, write_folder
from tests.support.models import tiny_spec
from tests.support.scale import PROCESS_TIMEOUT_S


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("streaming-memory")
    images, labels = fmnist_rgb64(8000)
    return {"small": write_folder(root / "folder-2k", images[:2000], labels[:2000]),
            "large": write_folder(root / "folder-8k", images, labels)}  # fmt: skip


def peak_rss_mib(args: list[str]) -> float:
    """Peak RSS of the largest process of one `learngene` command (its own, or a loader worker's)."""
    probe = (
        "import resource, subprocess, sys; run = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "sys.stderr.write(run.stderr); sys.exit(run.returncode) if run.returncode else "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    learngene = str(Path(sys.executable).parent / "learngene")
    # Two malloc arenas, as many as the command has busy threads: more (glibc's default is 8 per core) add their own
    # slack to a peak, whichever threads happened to allocate at once, which is noise here, not data.
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    done = subprocess.run(
        [sys.executable, "-c", probe, learngene, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=PROCESS_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return int(done.stdout.split()[-1]) / 1024


def test_memory_does_not_grow_with_the_number_of_images(folders, tmp_path):
    ancestor = tmp_path / "ancestor.safetensors"
    spec = tiny_spec(**RGB64_SHAPE, embed_dim=64, num_heads=2, depth=2)
    torch.manual_seed(0)
    export_checkpoint(spec.build().eval(), ancestor, spec=spec, metadata={"normalization": RGB64_NORM.model_dump()})
    sets = [f"{k}={v}" for k, v in spec.overrides().items()]
    rss = {}
    for size in ("small", "large"):  # the lower of two fresh runs: a peak only ever errs upwards (seen: +39 MiB once)
        rss[size] = min(
            peak_rss_mib(
                [
                    "condense",
                    "--ancestor-model",
                    spec.model,
                    "--ancestor",
                    str(ancestor),
                    *[a for s in sets for a in ("--ancestor-set", s)],
                    "--aux-model",
                    spec.model,
                    *[a for s in sets for a in ("--aux-set", s)],
                    "--data",
                    f"imagefolder://{folders[size]}",
                    "--steps",
                    "3",
                    "--batch-size",
                    "16",
                    "--workers",
                    "1",
                    "--out",
                    str(tmp_path / f"set-{size}-{run}"),
                    "--checkpoint-dir",
                    str(tmp_path / f"state-{size}-{run}"),
                ]
            )
            for run in range(2)
        )
    # Decoding every image would add 8,000 x 3 x 64 x 64 bytes (94 MiB) to the 8k run and 23 MiB to the 2k one: a
    # difference of 70 MiB on a base of about 1.2 GiB (torch and timm), so the bound is on the difference itself, at
    # half of it (seen with four test workers on two cores: 18 MiB once, besides the file list's few MiB).
    assert rss["large"] - rss["small"] < 35, rss
