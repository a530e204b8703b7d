"""Ancestors as people have them: a timm local-dir folder (model.safetensors + config.json) and a model in the local
Hugging Face cache (hf-hub:, offline), read without --ancestor-model or --ancestor-set; never a pickle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from learngene.errors import DataRefError
from learngene.formats.ancestors import resolve_ancestor
from learngene.formats.checkpoint import export_checkpoint
from tests.support.data import FMNIST, write_idx_subset
from tests.support.models import tiny_spec
from tests.support.scale import PROCESS_TIMEOUT_S

SPEC = tiny_spec(embed_dim=64, num_heads=2, depth=2)
MEAN, STD = [0.2860], [0.3530]


@pytest.fixture(scope="module")
def local_dir(ancestor, tmp_path_factory) -> Path:
    """timm's layout, as `save_for_hf` writes it: the architecture and its arguments in config.json."""
    folder = tmp_path_factory.mktemp("local-dir") / "fmnist-vit"
    folder.mkdir()
    export_checkpoint(ancestor, folder / "model.safetensors", spec=SPEC)
    overrides = {k: v for k, v in SPEC.overrides().items() if k != "num_classes"}
    config = {"architecture": SPEC.model, "num_classes": 10, "model_args": overrides,
              "pretrained_cfg": {"mean": MEAN, "std": STD, "input_size": [1, 28, 28]}}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def hub_cache(root: Path, repo: str, files: Path) -> Path:
    """The layout huggingface_hub keeps: models--owner--name/{refs/main, snapshots/<commit>/...}."""
    entry = root / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(commit)
    shutil.copytree(files, entry / "snapshots" / commit)
    return root


def test_a_local_dir_names_its_architecture_overrides_and_normalization(local_dir):
    resolved = resolve_ancestor(str(local_dir))
    assert resolved.model == SPEC.model and resolved.checkpoint == (local_dir / "model.safetensors").resolve()
    assert resolved.overrides == SPEC.overrides() and resolved.normalization.mean == tuple(MEAN)
    assert resolve_ancestor(f"local-dir:{local_dir}", overrides={"depth": 3}).overrides["depth"] == 3  # given wins
    with pytest.raises(DataRefError, match="outside the allowed data roots"):
        resolve_ancestor(str(local_dir), allowed_roots=[local_dir.parent / "elsewhere"])


def test_only_safetensors_and_json_are_read(local_dir, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not read")
    (pickled / "config.json").write_text((local_dir / "config.json").read_text())
    with pytest.raises(DataRefError, match="does not exist"):  # model.safetensors is missing: the .bin is ignored
        resolve_ancestor(str(pickled))
    with pytest.raises(DataRefError, match=r"only \.safetensors"):
        resolve_ancestor(str(pickled / "pytorch_model.bin"), model=SPEC.model)
    (tmp_path / "bad").mkdir()
    shutil.copy(local_dir / "model.safetensors", tmp_path / "bad" / "model.safetensors")
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(DataRefError, match="not JSON"):
        resolve_ancestor(str(tmp_path / "bad"))


def condense_from(reference: str, out: Path, env: dict[str, str], data: Path = FMNIST) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "service.cli", "condense", "--ancestor", reference, "--aux-model", SPEC.model,
            *[a for k, v in tiny_spec(depth=2).overrides().items() for a in ("--aux-set", f"{k}={v}")],
            "--data", f"idx://{data}", "--steps", "3", "--batch-size", "16", "--recipe", "plain", "--workers", "0",
            "--out", str(out)]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=PROCESS_TIMEOUT_S)


def test_condense_takes_a_local_dir_and_a_cached_hub_model_offline(local_dir, tmp_path):
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache(tmp_path / "hf", "timm/fmnist-vit", local_dir)),
           "HF_HUB_OFFLINE": "1"}  # fmt: skip
    data = write_idx_subset(tmp_path / "FashionMNIST", train=1000, test=100)  # what 3 steps and a check need
    for number, reference in enumerate((str(local_dir), "hf-hub:timm/fmnist-vit")):
        out = tmp_path / f"set{number}"
        run = condense_from(reference, out, env, data)
        assert run.returncode == 0, run.stderr[-2000:]
        manifest = json.loads((out / "manifest.json").read_text())
        lineage = manifest["lineage"]
        assert lineage["ancestor_model"] == SPEC.model and lineage["ancestor_overrides"] == SPEC.overrides()
        assert manifest["config"]["normalization"]["mean"] == MEAN  # from the ancestor's pretrained_cfg
        assert lineage.get("base_model") == (None, "timm/fmnist-vit")[number]  # a hub id only when there is one
    missing = condense_from("hf-hub:timm/not-cached", tmp_path / "none", env)
    assert missing.returncode == 2 and "not in the local Hugging Face cache" in missing.stderr, missing.stderr


def test_a_bare_checkpoint_names_its_architecture_from_its_header_or_a_config_beside_it(ancestor, local_dir, tmp_path):
    exported = tmp_path / "exported.safetensors"
    export_checkpoint(ancestor, exported, spec=SPEC)  # the spec goes into the safetensors header
    resolved = resolve_ancestor(str(exported))
    assert (resolved.model, resolved.overrides, resolved.checkpoint) == (SPEC.model, SPEC.overrides(), exported)
    assert resolve_ancestor(str(exported), overrides={"depth": 3}).overrides == {**SPEC.overrides(), "depth": 3}

    plain = tmp_path / "plain" / "weights.safetensors"  # a state dict with no header of ours
    plain.parent.mkdir()
    save_file(load_file(exported), plain)
    with pytest.raises(DataRefError, match=r"names the architecture: give the timm model name \(--ancestor-model\)"):
        resolve_ancestor(str(plain))
    assert resolve_ancestor(str(plain), model=SPEC.model, overrides=SPEC.overrides()).overrides == SPEC.overrides()
    shutil.copy(local_dir / "config.json", plain.parent / "config.json")
    beside = resolve_ancestor(str(plain))
    assert (beside.model, beside.overrides, beside.normalization.mean) == (SPEC.model, SPEC.overrides(), tuple(MEAN))
    # Named explicitly, a bare file ignores the config.json beside it (it may describe another file there) ...
    named = resolve_ancestor(str(plain), model=SPEC.model, overrides=SPEC.overrides())
    assert named.normalization is None and named.overrides == SPEC.overrides()
    # ... and another model than the recorded one gets none of the recorded overrides.
    other = resolve_ancestor(str(exported), model="vit_small_patch16_224")
    assert (other.model, other.overrides) == ("vit_small_patch16_224", {})
