"""Template-set folders: round trip, integrity checks, and the bundled demo set."""

from __future__ import annotations

import json

import pytest
import torch

from learngene import TemplateSet, inherit
from learngene.errors import IntegrityError
from learngene.formats.template_set import BUILTIN_TEMPLATE_SETS, MANIFEST, TENSORS
from tests.support.models import random_template_set, tiny_spec


def test_round_trip_preserves_everything(tmp_path):
    ts = random_template_set(tiny_spec())
    ts.metrics["aux_accuracy"] = 0.5
    ts.save(tmp_path / "set")
    back = TemplateSet.load(tmp_path / "set")
    assert back.config == ts.config and back.lineage == ts.lineage and back.metrics == ts.metrics and back.ref == ts.ref
    for group in ("templates", "scalers", "free"):
        a, b = getattr(ts, group), getattr(back, group)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    manifest = json.loads((tmp_path / "set" / MANIFEST).read_text())
    assert manifest["schema_version"] == 1 and manifest["method"] == "wave"
    assert manifest["files"][TENSORS]["bytes"] == (tmp_path / "set" / TENSORS).stat().st_size


def test_modified_truncated_or_missing_files_are_refused(tmp_path):
    folder = random_template_set(tiny_spec()).save(tmp_path / "set")
    tensors = folder / TENSORS
    original = tensors.read_bytes()
    flipped = bytearray(original)
    flipped[-10] ^= 0x01
    tensors.write_bytes(bytes(flipped))
    with pytest.raises(IntegrityError, match="sha256 does not match"):
        TemplateSet.load(folder)
    tensors.write_bytes(original[:-100])
    with pytest.raises(IntegrityError, match="truncated"):
        TemplateSet.load(folder)
    tensors.unlink()
    with pytest.raises(IntegrityError, match="file missing"):
        TemplateSet.load(folder)
    (folder / MANIFEST).unlink()
    with pytest.raises(IntegrityError, match="manifest missing"):
        TemplateSet.load(folder)


def test_demo_template_set_is_small_condensed_and_usable():
    folder = BUILTIN_TEMPLATE_SETS["demo"]
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size < 3_000_000
    demo = TemplateSet.load(folder)
    metrics = demo.metrics
    assert metrics["ancestor_accuracy"] > 0.85 and metrics["aux_accuracy"] > 0.8  # FashionMNIST test split
    assert demo.lineage.ancestor_sha256 and demo.lineage.data_digest
    model = inherit(demo, tiny_spec(embed_dim=128, num_heads=2, depth=4)).materialize()
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
