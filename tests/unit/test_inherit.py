"""Inheritance: exact function preservation at k x width, and strict timm compatibility for a matrix of sizes."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from learngene.formats.checkpoint import export_checkpoint
from learngene.layers.templates import DEFAULT_COUNTS, SLOTS
from learngene.methods.wave.inherit import (
    inherit,
)
from tests.support.models import aux_logits, random_template_set, tiny_spec

AUX = tiny_spec(embed_dim=32, num_heads=2, depth=3)


# Only the four matrix kinds templated: the norms and biases are stored as the auxiliary model's own values.
MATRICES_ONLY = {kind: (count if SLOTS[kind].is_matrix else 0) for kind, count in DEFAULT_COUNTS.items()}


@pytest.fixture(scope="module")
def template_set():
    return random_template_set(AUX)


@pytest.fixture(scope="module")
def partly_templated():
    return random_template_set(AUX, seed=3, template_counts=MATRICES_ONLY)


@pytest.fixture(scope="module")
def images():
    return torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("which", ["all kinds templated", "matrices only"])
def test_noise_free_descendants_reproduce_the_auxiliary_logits(template_set, partly_templated, images, k, which):
    template_set = template_set if which == "all kinds templated" else partly_templated
    reference = aux_logits(template_set, images)
    assert reference.std(0).mean() > 0.01  # logits depend on the input: 100x the tolerance below
    descendant = inherit(template_set, tiny_spec(embed_dim=32 * k, num_heads=2 * k, depth=3), noise=0.0).eval()
    with torch.no_grad():
        generated = descendant(images)
        materialized = descendant.materialize().eval()(images)
    assert (generated - reference).abs().max() < 1e-4
    assert (materialized - reference).abs().max() < 1e-4


def test_auxiliary_size_reproduces_the_stored_scalers_and_free_parameters(template_set):
    d = inherit(template_set, AUX, noise=0.0)
    for kind, scalers in template_set.scalers.items():
        assert torch.equal(d.weight_scalers.tensors[kind].detach(), scalers)
    state = d.vit.state_dict()
    for name, value in template_set.free.items():
        assert torch.equal(state[name], value), name


def test_noise_is_seeded_and_small(template_set):
    a = inherit(template_set, AUX, noise=1e-3, seed=5)
    b = inherit(template_set, AUX, noise=1e-3, seed=5)
    c = inherit(template_set, AUX, noise=1e-3, seed=6)
    qkv = template_set.scalers["qkv"]
    assert torch.equal(a.weight_scalers.tensors["qkv"], b.weight_scalers.tensors["qkv"])
    assert not torch.equal(a.weight_scalers.tensors["qkv"], c.weight_scalers.tensors["qkv"])
    delta = a.weight_scalers.tensors["qkv"].detach() - qkv
    assert 0 < delta.abs().max() < 1e-2 and abs(delta.std().item() - 1e-3) < 5e-4


def test_depth_changes_interpolate_the_auxiliary_layers(template_set):
    deeper = inherit(template_set, tiny_spec(embed_dim=32, num_heads=2, depth=5), noise=0.0)
    s, t = template_set.scalers["fc1"], deeper.weight_scalers.tensors["fc1"].detach()
    assert torch.equal(t[0], s[0]) and torch.equal(t[4], s[2])
    torch.testing.assert_close(t[1], 0.5 * (s[0] + s[1]))
    torch.testing.assert_close(t[2], s[1])


def test_templates_are_shared_and_frozen(template_set):
    d = inherit(template_set, tiny_spec(embed_dim=64, num_heads=4, depth=4))
    assert all(not p.requires_grad for p in d.templates.parameters())
    assert all(p.requires_grad for p in d.weight_scalers.parameters())
    for kind, t in template_set.templates.items():
        assert torch.equal(d.templates.tensors[kind], t)
    assert set(d.weight_scalers.tensors) == {kind for kind, slot in SLOTS.items() if slot.present(d.arch)}


MATRIX = [
    *[dict(depth=d, embed_dim=32 * k, num_heads=2 * k) for d in (1, 2, 3, 4, 6) for k in (1, 2, 3)],
    dict(depth=4, embed_dim=64, num_heads=2, num_classes=7),
    dict(depth=2, embed_dim=96, num_heads=3, num_classes=0),
    dict(depth=3, embed_dim=64, num_heads=2, img_size=56, patch_size=7),
    dict(depth=3, embed_dim=64, num_heads=2, img_size=32, patch_size=8, in_chans=3),
    dict(depth=2, embed_dim=32, num_heads=1, class_token=False, global_pool="avg"),
]


@pytest.mark.parametrize("overrides", MATRIX, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_every_checkpoint_loads_strictly_into_timm(template_set, tmp_path, overrides):
    spec = tiny_spec(**overrides)
    info = export_checkpoint(inherit(template_set, spec, seed=1), tmp_path / "ckpt.safetensors", spec=spec)
    state = load_file(info.path)
    model = spec.build()
    reference = model.state_dict()
    assert state.keys() == reference.keys()
    assert all(state[k].shape == reference[k].shape and state[k].dtype == reference[k].dtype for k in state)
    model.load_state_dict(state, strict=True)
    arch = spec.resolve()
    out = model.eval()(torch.randn(2, arch.in_chans, *arch.img_size))
    assert out.shape == (2, arch.num_classes or arch.embed_dim) and torch.isfinite(out).all()


def test_untemplated_kinds_follow_the_scaler_rules(partly_templated, tmp_path):
    """Norms and biases stored as plain values are interpolated along depth and grouped for width like scalers."""
    spec = tiny_spec(embed_dim=64, num_heads=4, depth=5)
    d = inherit(partly_templated, spec, noise=0.0)
    free, state = partly_templated.free, d.vit.state_dict()
    middle = 0.5 * (free["blocks.0.norm1.weight"] + free["blocks.1.norm1.weight"])  # layer 1 of 5 sits at 0.5 of 3
    torch.testing.assert_close(state["blocks.1.norm1.weight"], middle.repeat(2))
    qkv = free["blocks.2.attn.qkv.bias"].reshape(3, 1, 32)  # q, k and v each repeated in place
    torch.testing.assert_close(state["blocks.4.attn.qkv.bias"], qkv.expand(3, 2, 32).reshape(-1))
    hidden = free["blocks.0.mlp.fc1.bias"].reshape(4, 1, 32)  # every hidden tile its own group
    torch.testing.assert_close(state["blocks.0.mlp.fc1.bias"], hidden.expand(4, 2, 32).reshape(-1))
    assert not any(name.startswith("blocks.") for name in d.provenance["fresh_parameters"])
    info = export_checkpoint(d, tmp_path / "partly.safetensors", spec=spec)
    spec.build().load_state_dict(load_file(info.path), strict=True)


def test_new_class_count_gets_a_fresh_head_and_everything_else_is_inherited(template_set):
    d = inherit(template_set, tiny_spec(embed_dim=32, num_heads=2, depth=3, num_classes=4))
    assert d.provenance["fresh_parameters"] == ["head.weight", "head.bias"]
    assert torch.equal(d.vit.pos_embed.detach(), template_set.free["pos_embed"])


def test_other_image_and_patch_size_resample_embeddings(template_set, images):
    same = inherit(template_set, AUX, noise=0.0).eval()
    spec = tiny_spec(embed_dim=32, num_heads=2, depth=3, img_size=56, patch_size=14)
    resized = inherit(template_set, spec, noise=0.0).eval()
    assert resized.vit.pos_embed.shape == same.vit.pos_embed.shape  # same 4x4 grid
    # FlexiViT resampling keeps the patch tokens of a 2x-upsampled image close to the original ones
    big = torch.nn.functional.interpolate(images, scale_factor=2, mode="nearest")
    with torch.no_grad():
        a, b = same.vit.patch_embed(images), resized.vit.patch_embed(big)
    assert torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1)).min() > 0.95  # unrelated: ~0
