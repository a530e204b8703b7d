"""Inheritance: a descendant of any depth and of width k * D0, initialized from a template set (METHOD.md, Inheritance).

1. depth: scalers linearly interpolated along the auxiliary stack;
2. width: scalers padded group-wise with identity blocks (`templates.widen`), free vectors tiled k times, patch
   embedding output channels tiled, head input columns tiled and divided by k; then eps * N(0, 1) on every scaler;
   block parameters of kinds that are not templated follow the same depth and width rules from their stored values;
3. widths that are not multiples of D0 are rejected (METHOD.md (3) allows a sliced build; we do not guess);
4. a different class count gets a fresh timm head;
5. a different image or patch size resamples the position embedding (and the patch embedding) with timm.

With eps = 0 and head_dim unchanged, a descendant of the auxiliary depth computes exactly the auxiliary model's logits
at every width k * D0: each new head copies an old one and every hidden vector is [x; x; ...].
"""

from __future__ import annotations

import torch
from timm.layers import resample_abs_pos_embed, resample_patch_embed
from timm.models._manipulate import adapt_input_conv
from torch import Tensor

from learngene.spec import Architecture, SpecError, ViTSpec, build_fresh
from learngene.template_set import TemplateSet, TemplateSetConfig
from learngene.templated_vit import TemplatedViT
from learngene.templates import SLOTS, WeightScalers, WeightTemplates, deepen, resize_weights, widen

# Free parameters whose last axis is the residual width: tiled k times when widening.
_WIDTH_VECTORS = (
    "norm_pre.weight",
    "norm_pre.bias",
    "norm.weight",
    "norm.bias",
    "fc_norm.weight",
    "fc_norm.bias",
    "patch_embed.norm.weight",
    "patch_embed.norm.bias",
    "patch_embed.proj.bias",
)
# Final norms are interchangeable between token pooling (`norm`) and average pooling (`fc_norm`).
_NORM_ALIASES = {
    "fc_norm.weight": "norm.weight",
    "fc_norm.bias": "norm.bias",
    "norm.weight": "fc_norm.weight",
    "norm.bias": "fc_norm.bias",
}


def check_compatible(config: TemplateSetConfig, spec: ViTSpec) -> Architecture:
    """The descendant's architecture, or a `SpecError` naming the field this template set cannot produce."""
    src, dst = config.arch, spec.resolve()
    config.templates.check(dst)
    if dst.embed_dim % src.embed_dim:
        raise SpecError(
            "embed_dim",
            f"embed_dim={dst.embed_dim} is not a multiple of the template set's width {src.embed_dim}",
        )
    k = dst.embed_dim // src.embed_dim
    if dst.mlp_hidden != k * src.mlp_hidden:
        ratio = src.mlp_hidden / src.embed_dim
        raise SpecError("mlp_ratio", f"mlp_ratio={dst.mlp_hidden / dst.embed_dim:g}; this template set needs {ratio:g}")
    if not dst.qkv_bias and "qkv_bias" in config.templates.counts:
        raise SpecError("model", f"{dst.model} has no qkv bias, but this template set templates it")
    return dst


def inherit_scalers(
    template_set: TemplateSet, dst: Architecture, noise: float, generator: torch.Generator
) -> dict[str, Tensor]:
    """Depth interpolation, then group-wise identity padding, then eps * N(0, 1) (Eq. 7)."""
    k = dst.embed_dim // template_set.config.arch.embed_dim
    out = {}
    for kind, scalers in template_set.scalers.items():
        s = widen(deepen(scalers.float(), dst.depth), SLOTS[kind], k)
        if noise:
            s = s + noise * torch.randn(s.shape, generator=generator)
        out[kind] = s
    return out


def inherit_untemplated(template_set: TemplateSet, dst: Architecture) -> dict[str, Tensor]:
    """Block parameters of kinds the template set does not template (count 0), from the auxiliary model's own
    trained values: interpolated along depth and padded for width by the scalers' rules (METHOD.md, Inheritance
    1-2: "free vectors that are not templated: each D0-long group repeated k times"), so that function preservation
    holds for them too. Matrices follow the same rule; METHOD.md is silent there and this is [ours]."""
    config = template_set.config
    src, size = config.arch, config.templates.size
    k = dst.embed_dim // src.embed_dim
    out: dict[str, Tensor] = {}
    for kind, slot in SLOTS.items():
        layers = [template_set.free.get(f"blocks.{i}.{slot.param}") for i in range(src.depth)]
        if kind in config.templates.counts or any(t is None for t in layers):
            continue  # templated, or absent from the auxiliary model (no qkv bias)
        weights = resize_weights(torch.stack(layers).float(), slot, size, dst.depth, k)
        out.update({f"blocks.{j}.{slot.param}": w for j, w in enumerate(weights.unbind(0))})
    return out


def inherit_free(
    free: dict[str, Tensor], src: Architecture, dst: Architecture, defaults: dict[str, Tensor]
) -> tuple[dict[str, Tensor], list[str]]:
    """Map the auxiliary model's free parameters onto the descendant's non-block parameters.

    Returns the inherited tensors and the names left at timm's default init (no source, or class count differs).
    Block parameters are not handled here (see `inherit_untemplated`; TLEG and SWS bring their own).
    """
    k = dst.embed_dim // src.embed_dim
    out: dict[str, Tensor] = {}
    for name, default in defaults.items():
        if name.startswith("blocks."):
            continue
        source = free.get(name)
        if source is None and name in _NORM_ALIASES:
            source = free.get(_NORM_ALIASES[name])
        value = None if source is None else _transfer(name, source, src, dst, k, default)
        if value is not None and value.shape == default.shape:
            out[name] = value.to(default.dtype)
    fresh = [n for n in defaults if n not in out and not n.startswith("blocks.")]
    return out, fresh


def _tile(t: Tensor, dim: int, k: int) -> Tensor:
    return torch.cat([t] * k, dim=dim) if k > 1 else t


def _transfer(name: str, t: Tensor, src: Architecture, dst: Architecture, k: int, default: Tensor) -> Tensor | None:
    if name in _WIDTH_VECTORS:
        return _tile(t, 0, k)
    if name == "cls_token" or name == "reg_token":
        return _tile(t, -1, k)
    if name == "patch_embed.proj.weight":
        w = _tile(t, 0, k)
        if dst.in_chans != src.in_chans:
            w = adapt_input_conv(dst.in_chans, w, base_chans=src.in_chans)
        if dst.patch_size != src.patch_size:
            w = resample_patch_embed(w, list(dst.patch_size))
        return w
    if name == "pos_embed":
        pos = _tile(t, -1, k)
        if dst.grid_size != src.grid_size:
            pos = resample_abs_pos_embed(
                pos, list(dst.grid_size), old_size=list(src.grid_size), num_prefix_tokens=src.pos_embed_prefix
            )
        grid = pos[:, src.pos_embed_prefix :]
        prefix = (
            pos[:, : src.pos_embed_prefix]
            if dst.pos_embed_prefix == src.pos_embed_prefix
            else default[:, : dst.pos_embed_prefix]
        )
        return torch.cat([prefix, grid], dim=1)
    if name == "head.weight":
        return _tile(t, 1, k) / k if dst.num_classes == src.num_classes else None
    if name == "head.bias":
        return t if dst.num_classes == src.num_classes else None
    return t if t.shape == default.shape else None


def inherit(
    template_set: TemplateSet,
    spec: ViTSpec,
    *,
    noise: float = 1e-6,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> TemplatedViT:
    """A descendant for `spec`, in generating form (templates frozen), ready for `fit_scalers` or `materialize`."""
    config = template_set.config
    if config.method != "wave":
        raise SpecError("method", f"template set {template_set.ref} is a {config.method!r} learngene, not 'wave'")
    src, dst = config.arch, check_compatible(config, spec)
    generator = torch.Generator().manual_seed(seed)

    templates = WeightTemplates(config.templates)
    with torch.no_grad():
        for kind, t in templates.tensors.items():
            t.copy_(template_set.templates[kind])
    templates.requires_grad_(False)
    scalers = WeightScalers(config.templates, dst)
    scalers.load(inherit_scalers(template_set, dst, noise, generator))

    vit = build_fresh(spec, seed)  # fresh parameters (a new head): timm's seeded init
    free, fresh = inherit_free(template_set.free, src, dst, vit.state_dict())
    vit.load_state_dict({**free, **inherit_untemplated(template_set, dst)}, strict=False)
    model = TemplatedViT(spec, templates, scalers, vit=vit).to(device)
    model.provenance = {
        "template_set": template_set.ref,
        "method": config.method,
        "width_factor": dst.embed_dim // src.embed_dim,
        "depth": {"auxiliary": src.depth, "descendant": dst.depth},
        "noise": noise,
        "seed": seed,
        "fresh_parameters": fresh,
    }
    return model
