"""Target specs: what timm builds, and errors that name the field."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from learngene import ViTSpec, check_compatible
from learngene.cost import estimate
from learngene.errors import SpecError
from tests.support.models import TINY, random_template_set, tiny_spec


@settings(max_examples=25, deadline=None)
@given(
    heads=st.integers(1, 4),
    head_dim=st.sampled_from([8, 16, 32]),
    depth=st.integers(1, 14),
    grid=st.integers(1, 6),
    patch=st.sampled_from([2, 4, 7, 16]),
    classes=st.integers(0, 50),
    chans=st.sampled_from([1, 3, 4]),
    mlp=st.sampled_from([1.0, 2.0, 4.0]),
    token=st.booleans(),
)
def test_resolve_reports_what_timm_builds(heads, head_dim, depth, grid, patch, classes, chans, mlp, token):
    spec = ViTSpec(
        model="vit_small_patch16_224",
        embed_dim=heads * head_dim,
        num_heads=heads,
        depth=depth,
        img_size=grid * patch,
        patch_size=patch,
        num_classes=classes,
        in_chans=chans,
        mlp_ratio=mlp,
        class_token=token,
        global_pool="token" if token else "avg",
    )
    arch = spec.resolve()
    model = spec.build()
    assert (arch.embed_dim, arch.depth, arch.num_heads) == (heads * head_dim, depth, heads)
    assert arch.mlp_hidden == model.blocks[0].mlp.fc1.out_features == int(heads * head_dim * mlp)
    assert arch.grid_size == (grid, grid) and arch.in_chans == chans and arch.num_classes == classes
    assert arch.num_prefix_tokens == (1 if token else 0)
    assert model.pos_embed.shape == (1, grid * grid + arch.pos_embed_prefix, heads * head_dim)


def test_defaults_come_from_the_timm_name():
    arch = ViTSpec(model="deit_small_patch16_224").resolve()
    assert (arch.embed_dim, arch.depth, arch.num_heads, arch.mlp_hidden) == (384, 12, 6, 1536)
    assert arch.img_size == (224, 224) and arch.patch_size == (16, 16) and arch.num_classes == 1000


@pytest.mark.parametrize(
    ("kwargs", "field", "needle"),
    [
        ({"model": "resnet50"}, "model", "not of the ViT families"),
        ({"model": "vit_does_not_exist"}, "model", "not a timm model name"),
        ({"model": "vit_tiny_patch16_224", "depth": 0}, "depth", "greater than or equal to 1"),
        ({"model": "vit_tiny_patch16_224", "global_pool": "max"}, "global_pool", "Input should be"),
        ({"model": "vit_tiny_patch16_224", "colour": "blue"}, "colour", "Extra inputs"),
    ],
)
def test_invalid_specs_name_the_field(kwargs, field, needle):
    with pytest.raises(ValidationError) as info:
        ViTSpec(**kwargs)
    error = info.value.errors()[0]
    assert error["loc"] == (field,)
    assert needle in error["msg"]


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"embed_dim": 97, "num_heads": 2}, "num_heads", "embed_dim=97 is not divisible by num_heads=2"),
        ({"embed_dim": 97}, "embed_dim", "embed_dim=97 is not divisible by num_heads=3"),
    ],
)
def test_template_set_limits_name_the_field(overrides, field, message):
    ts = random_template_set(tiny_spec())
    spec = ViTSpec(model="vit_tiny_patch16_224", **{**TINY, **overrides})  # vit_tiny's own 3 heads unless given
    with pytest.raises(SpecError) as info:
        check_compatible(ts.config, spec)
    assert info.value.field == field and message in str(info.value)


@pytest.mark.parametrize(("embed_dim", "num_heads", "mlp_ratio"), [(48, 1, 4.0), (200, 2, 4.0), (64, 2, 2.0)])
def test_any_width_timm_builds_is_served(embed_dim, num_heads, mlp_ratio):
    ts = random_template_set(tiny_spec(embed_dim=32), template_size=16)
    spec = tiny_spec(embed_dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio)
    assert check_compatible(ts.config, spec).embed_dim == embed_dim


# One of each served family (learngene.families).
FAMILY_NAMES = (
    "vit_small_patch14_reg4_dinov2", "vit_base_patch16_siglip_224", "vit_base_patch16_clip_quickgelu_224",
    "vit_medium_patch16_gap_256", "vit_giant_patch14_dinov2", "deit3_small_patch16_224",
)  # fmt: skip


@pytest.mark.parametrize(
    "spec",
    [
        ViTSpec(model="vit_tiny_patch16_224"),
        ViTSpec(model="vit_base_patch16_224"),
        ViTSpec(model="vit_small_patch16_224", mlp_ratio=3.0, class_token=False, global_pool="avg"),
        tiny_spec(depth=2, embed_dim=64, num_heads=1),
        *(ViTSpec(model=name, depth=2) for name in FAMILY_NAMES),
    ],
    ids=str,
)
def test_the_cost_estimate_counts_what_timm_builds(spec):
    """Limits are checked from `estimate` before any model is built: its counts are those of the built model."""
    cost = estimate(spec)
    with torch.device("meta"):
        model = spec.build()
    assert cost.parameters == sum(p.numel() for p in model.parameters())
    assert cost.tokens == model.patch_embed.num_patches + model.num_prefix_tokens
    if spec == ViTSpec(model="vit_base_patch16_224"):
        assert cost.forward_flops == pytest.approx(2 * 17.56e9, rel=0.01)  # timm's 17.6 GMACs for ViT-B/16
        assert cost.step_flops(1024) == pytest.approx(3 * 1024 * cost.forward_flops)


def test_a_request_over_the_limits_is_refused_before_any_model_of_its_size_is_built():
    """The largest request the field limits allow (64 blocks of width 4096) would take seconds to build even on
    the meta device: its cost is estimated from its numbers and refused, and only the bare name is ever built."""
    from jobs.limits import FieldError, check_cost
    from jobs.settings import Limits
    from learngene.spec import _resolve_cached

    huge = ViTSpec(model="vit_tiny_patch16_224", depth=64, embed_dim=4096, num_heads=64)
    ViTSpec(model="vit_tiny_patch16_224").resolve()  # the bare name: resolved once, cached
    before = _resolve_cached.cache_info()
    with pytest.raises(FieldError) as refused:
        check_cost(Limits(), huge, batch_size=32)
    assert refused.value.errors[0][0] == ("body", "overrides")
    assert (
        "about 12,896,375,784 parameters" in refused.value.errors[0][1]
        and "the limit is 1,000,000,000" in refused.value.errors[0][1]
    )
    after = _resolve_cached.cache_info()
    assert (after.misses, after.currsize) == (before.misses, before.currsize)  # nothing new was built
    with pytest.raises(FieldError) as too_long:
        check_cost(Limits(), ViTSpec(model="vit_tiny_patch16_224", img_size=1024, patch_size=2), batch_size=1)
    assert too_long.value.errors[0][0] == ("body", "overrides", "patch_size")
    assert "262,145 tokens per image" in too_long.value.errors[0][1]
