"""Target architectures: a timm VisionTransformer name plus overrides, resolved to the numbers the method needs.

A `ViTSpec` is what a client asks for. `ViTSpec.resolve()` builds the model on the meta device (no memory, no
weights) and reads back what timm actually constructs, so defaults of the named model and the overrides are
combined exactly as `timm.create_model(name, pretrained=False, **overrides)` combines them.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any, Literal, cast

import timm
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from timm.layers import Mlp
from timm.layers.attention import Attention
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from learngene.errors import SpecError, UserError
from learngene.families import family_name, read_family

# The names of timm's ViT families; which of their features are served is `learngene.families`' table.
VIT_PREFIXES = ("vit_", "deit", "eva", "flexivit_")


def check_model_name(name: str) -> str:
    """A timm model name of the ViT families, or `UserError` (what timm builds for it is checked by `resolve`)."""
    if not timm.is_model(name):
        raise UserError(f"model={name!r} is not a timm model name")
    if not name.startswith(VIT_PREFIXES):
        raise UserError(f"model={name!r} is not of the ViT families ({', '.join(p + '*' for p in VIT_PREFIXES)})")
    return name


class ViTSpec(BaseModel):
    """A timm ViT/DeiT model name and the overrides passed to `timm.create_model`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model: str = Field(description="timm model name of the VisionTransformer family, e.g. 'vit_tiny_patch16_224'")
    depth: int | None = Field(default=None, ge=1)
    embed_dim: int | None = Field(default=None, ge=1)
    num_heads: int | None = Field(default=None, ge=1)
    mlp_ratio: float | None = Field(default=None, gt=0)
    num_classes: int | None = Field(default=None, ge=0)
    img_size: int | None = Field(default=None, ge=1)
    patch_size: int | None = Field(default=None, ge=1)
    in_chans: int | None = Field(default=None, ge=1)
    class_token: bool | None = None
    global_pool: Literal["token", "avg", "map"] | None = None
    qk_norm: bool | None = None

    _known_model = field_validator("model")(lambda cls, name: check_model_name(name))

    def overrides(self) -> dict[str, Any]:
        """The keyword arguments for `timm.create_model`, without the model name and unset fields."""
        return self.model_dump(exclude={"model"}, exclude_none=True)

    def build(self, **extra: Any) -> VisionTransformer:
        """The timm model, randomly initialized by timm's own rules."""
        # `model` names a VisionTransformer or an Eva (typed as the former: the attributes used are common to both;
        # `resolve` refuses any other class timm builds).
        return cast(VisionTransformer, timm.create_model(self.model, pretrained=False, **self.overrides(), **extra))

    def resolve(self) -> Architecture:
        return _resolve(self)


class Architecture(BaseModel):
    """What timm builds for a spec: every number the templates, inheritance and export depend on."""

    model_config = ConfigDict(frozen=True)

    model: str
    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden: int
    num_classes: int
    img_size: tuple[int, int]
    patch_size: tuple[int, int]
    in_chans: int
    num_prefix_tokens: int
    pos_embed_prefix: int  # prefix tokens that carry a position embedding (0 for no_embed_class models)
    global_pool: str
    qkv_bias: bool
    # The family (`learngene.families`); the defaults are the plain DeiT block's, so that an architecture recorded
    # before these fields existed reads as what it was.
    proj_bias: bool = True
    mlp_bias: bool = True
    layer_scale: bool = False
    mlp_gates: int = 1  # 2: a GLU MLP (fc1 holds value and gate, 2 x mlp_hidden rows)
    act: str = "GELU"
    attn_pool: bool = False
    norm_pre: bool = False
    reg_tokens: int = 0
    # The Eva class and its features (`learngene.families.block_layout` maps its names onto the plain block's).
    block: Literal["vit", "eva"] = "vit"
    qkv_layout: Literal["fused", "qv_bias", "separate"] = "fused"
    k_bias: bool = True  # with qkv biases: whether k has one (EVA's has not)
    mlp_layout: Literal["packed", "separate"] = "packed"  # separate: SwiGLU's fc1_g and fc1_x
    attn_norm: bool = False  # a LayerNorm over the attention output (scale_norm)
    mlp_norm: bool = False  # a LayerNorm over the MLP's hidden layer (scale_mlp)
    rope: str | None = None  # the rotary position embedding (`learngene.families.ROPES`), None without
    pos_embed: bool = True  # False: no absolute position embedding (DINOv3: RoPE only)
    qk_norm: bool = False  # a LayerNorm over the head dimension of q and of k (attn.q_norm, attn.k_norm)

    @property
    def family(self) -> str:
        return family_name(self.model_dump())

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def grid_size(self) -> tuple[int, int]:
        return (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])


def _check_overrides(spec: ViTSpec) -> None:
    """Inconsistencies timm would only report as an assertion deep inside a constructor."""
    if spec.embed_dim is not None or spec.num_heads is not None:
        probe = _resolve_cached(ViTSpec(model=spec.model))
        dim = spec.embed_dim or probe.embed_dim
        heads = spec.num_heads or probe.num_heads
        if dim % heads:
            field = "num_heads" if spec.num_heads is not None else "embed_dim"
            raise SpecError(field, f"embed_dim={dim} is not divisible by num_heads={heads}")
    if (
        spec.class_token is False
        and (spec.global_pool or _resolve_cached(ViTSpec(model=spec.model)).global_pool) == "token"
    ):
        raise SpecError(
            "global_pool", "class_token=false needs global_pool='avg' (token pooling reads the class token)"
        )
    if spec.img_size is not None or spec.patch_size is not None:
        probe = _resolve_cached(ViTSpec(model=spec.model))
        img = spec.img_size or probe.img_size[0]
        patch = spec.patch_size or probe.patch_size[0]
        if img % patch:
            field = "img_size" if spec.img_size is not None else "patch_size"
            raise SpecError(field, f"img_size={img} is not a multiple of patch_size={patch}")


def _build_uninitialized(spec: ViTSpec) -> nn.Module:
    """The model without timm's weight init, which is nine tenths of building one on the meta device and computes
    nothing there. Only timm's VisionTransformer takes `weight_init`; any other class is built as it is (and
    refused by `read_family`)."""
    try:
        return spec.build(weight_init="skip")
    except TypeError as exc:
        if "weight_init" not in str(exc):
            raise
        return spec.build()


@functools.lru_cache(maxsize=512)
def _resolve_cached(spec: ViTSpec) -> Architecture:
    try:
        with torch.device("meta"):
            built = _build_uninitialized(spec)
    except (AssertionError, ValueError, TypeError, RuntimeError, ArithmeticError) as exc:
        raise SpecError("model", f"timm cannot build {spec.model!r} with {spec.overrides()}: {exc}") from exc
    family = read_family(spec.model, built)
    model = cast(VisionTransformer, built)  # what read_family let through: a VisionTransformer or an Eva, alike here
    block = cast(Block, model.blocks[0])
    attn, mlp = cast(Attention, block.attn), cast(Mlp, block.mlp)  # or Eva's; these attributes are common
    pos_embed_prefix = 0 if model.no_embed_class else model.num_prefix_tokens
    return Architecture(
        model=spec.model,
        embed_dim=model.embed_dim,
        depth=len(model.blocks),
        num_heads=attn.num_heads,
        mlp_hidden=cast(nn.Linear, mlp.fc2).in_features,  # the hidden layer (a GLU's fc1 has twice its rows)
        num_classes=model.num_classes,
        img_size=tuple(model.patch_embed.img_size),
        patch_size=tuple(model.patch_embed.patch_size),
        in_chans=model.patch_embed.proj.in_channels,
        num_prefix_tokens=model.num_prefix_tokens,
        pos_embed_prefix=pos_embed_prefix,
        global_pool=model.global_pool,
        **family,
    )


def _resolve(spec: ViTSpec) -> Architecture:
    _check_overrides(spec)
    return _resolve_cached(spec)


def build_fresh(spec: ViTSpec, seed: int) -> VisionTransformer:
    """timm's initialization for a descendant, from a seed stream of its own: with `torch.manual_seed(seed)` a
    descendant of the auxiliary size would redraw exactly the auxiliary model's initial head (condensation seeds
    the same global generator), and a "new" head would still fit the trained body."""
    stream = int.from_bytes(hashlib.sha256(f"learngene-descendant:{seed}".encode()).digest()[:8], "big")
    torch.manual_seed(stream)
    return spec.build()
