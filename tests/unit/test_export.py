"""Exported checkpoints: exactly a timm state dict, with provenance in the safetensors header."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import load_file

from learngene import export_checkpoint, inherit, read_metadata
from learngene.formats.checkpoint import load_model
from tests.support.models import random_template_set, tiny_spec


def test_checkpoint_is_a_timm_state_dict_with_metadata(tmp_path):
    ts = random_template_set(tiny_spec())
    spec = tiny_spec(embed_dim=64, num_heads=2, depth=5, num_classes=3)
    model = inherit(ts, spec, seed=2)
    info = export_checkpoint(model, tmp_path / "m.safetensors", spec=spec, metadata={"fit": {"steps": 0}})
    data = (tmp_path / "m.safetensors").read_bytes()
    assert info.sha256 == hashlib.sha256(data).hexdigest() and info.bytes == len(data)
    state = load_file(info.path)
    assert info.parameters == sum(t.numel() for t in state.values())
    for key, value in model.materialized_state().items():
        assert torch.equal(state[key], value)
    meta = read_metadata(info.path)
    assert meta["spec"]["embed_dim"] == 64 and meta["fit"] == {"steps": 0}
    assert meta["provenance"]["template_set"] == "random@1" and meta["provenance"]["width_factor"] == 2
    reloaded = load_model(spec.model, info.path, spec.overrides())
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(reloaded.eval()(x), model.eval()(x), rtol=1e-5, atol=1e-5)


def test_export_refuses_a_model_that_does_not_match_the_spec(tmp_path):
    model = tiny_spec(depth=2).build()
    with pytest.raises(ValueError, match="does not match"):
        export_checkpoint(model, tmp_path / "m.safetensors", spec=tiny_spec(depth=3))
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_only_safetensors_are_loaded(tmp_path):
    torch.save(tiny_spec().build().state_dict(), tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"only \.safetensors"):
        load_model("vit_tiny_patch16_224", tmp_path / "m.pt")
    (tmp_path / "m.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_model("vit_tiny_patch16_224", tmp_path / "m.safetensors")
