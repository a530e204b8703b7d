"""Inheritance: a descendant of any depth and width, initialized from a template set (METHOD.md, Inheritance).

1. depth: scalers linearly interpolated along the auxiliary stack;
2. width k * D0: scalers padded group-wise with identity blocks (`templates.widen`), free vectors tiled k times, patch
   embedding output channels tiled, head input columns tiled and divided by k; then eps * N(0, 1) on every scaler;
   block parameters of kinds that are not templated follow the same depth and width rules from their stored values;
3. any other width, MLP hidden size or head size: composed at the next multiple K * D0 by rule 2 and indexed down to
   the requested shape inside the fitted graph (`learngene.layers.select`); the head is divided by D / D0;
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

from learngene.errors import SpecError
from learngene.families import check_bridge
from learngene.formats.template_set import TemplateSet, TemplateSetConfig
from learngene.layers.select import WidthSelection, factors, select_width, widen_residual
from learngene.layers.templates import (
    SLOTS,
    TemplateConfig,
    WeightScalers,
    WeightTemplates,
    deepen,
    resize_weights,
    widen,
)
from learngene.methods.wave.model import TemplatedViT
from learngene.spec import Architecture, ViTSpec, build_fresh

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


def _wave_templates(config: TemplateSetConfig) -> TemplateConfig:
    """The weight templates of a WAVE set (its config has them exactly when its method is 'wave')."""
    if config.templates is None:
        raise SpecError("method", f"a {config.method!r} template set has no weight templates: it is not a WAVE one")
    return config.templates


def check_compatible(config: TemplateSetConfig, spec: ViTSpec) -> Architecture:
    """The descendant's architecture, or a `SpecError` naming the field this template set cannot produce.

    Across families (METHOD.md, Families): a set's layer scale is folded into a descendant without one, and a
    descendant's layer scale or bias that the set lacks starts neutral (1, 0); a bias the descendant lacks cannot
    be dropped without changing the function, so such a descendant is refused, naming both families."""
    dst = spec.resolve()  # any width timm builds (embed_dim divisible by num_heads) is served (learngene.layers.select)
    src, counts = config.arch, _wave_templates(config).counts
    check_bridge(src, dst)
    for kind, slot in SLOTS.items():
        if slot.present(src) and not slot.present(dst) and not (slot.scales and kind in counts):
            how = "templates" if kind in counts else "stores (untemplated)"
            raise SpecError(
                "model",
                f"{dst.model} ({dst.family}) has no {slot.param}, but the template set's family ({src.family}) "
                f"{how} it: that cannot be dropped without changing the function",
            )
    return dst


def _scale(selection: WidthSelection | None, kind: str) -> Tensor | None:
    return None if selection is None else selection.input_scale(kind)


def inherit_scalers(
    template_set: TemplateSet,
    dst: Architecture,
    noise: float,
    generator: torch.Generator,
    selection: WidthSelection | None = None,
) -> dict[str, Tensor]:
    """Depth interpolation, then group-wise identity padding to K * D0 (Kh * M0), then eps * N(0, 1) (Eq. 7)."""
    k, kh = factors(template_set.config.arch, dst)
    out = {}
    for kind, scalers in template_set.scalers.items():
        s = widen(deepen(scalers.float(), dst.depth), SLOTS[kind], k, kh, _scale(selection, kind))
        if noise:
            s = s + noise * torch.randn(s.shape, generator=generator)
        out[kind] = s
    return out


def inherit_untemplated(
    template_set: TemplateSet, dst: Architecture, selection: WidthSelection | None = None
) -> dict[str, Tensor]:
    """Block parameters of kinds the template set does not template (count 0), from the auxiliary model's own
    trained values: interpolated along depth and padded for width by the scalers' rules (METHOD.md, Inheritance
    1-2: "free vectors that are not templated: each D0-long group repeated k times"), so that function preservation
    holds for them too. Matrices follow the same rule; METHOD.md is silent there and this is [ours]."""
    config = template_set.config
    templates = _wave_templates(config)
    src, size = config.arch, templates.size
    k, kh = factors(src, dst)
    out: dict[str, Tensor] = {}
    for kind, slot in SLOTS.items():
        if kind in templates.counts or not slot.present(dst):
            continue  # templated, or absent from the descendant (a set's layer scale is folded: TemplatedViT)
        if not slot.present(src):  # the descendant's family has it, the set's not: neutral, so exact
            shape = (dst.depth, *(axis.size(dst) for axis in slot.axes))
            neutral = torch.ones(shape) if slot.unit else torch.zeros(shape)
            out.update({f"blocks.{j}.{slot.param}": w for j, w in enumerate(neutral.unbind(0))})
            continue
        stack = torch.stack([template_set.free[f"blocks.{i}.{slot.param}"] for i in range(src.depth)]).float()
        weights = resize_weights(stack, slot, size, dst.depth, k, kh, _scale(selection, kind))
        if selection is not None:
            weights = selection.select(kind, weights)
        out.update({f"blocks.{j}.{slot.param}": w for j, w in enumerate(weights.unbind(0))})
    return out


def inherit_free(
    free: dict[str, Tensor], src: Architecture, dst: Architecture, defaults: dict[str, Tensor]
) -> tuple[dict[str, Tensor], list[str]]:
    """Map the auxiliary model's free parameters onto the descendant's non-block parameters.

    Returns the inherited tensors and the names left at timm's default init (no source, or class count differs).
    Block parameters are not handled here (see `inherit_untemplated`; TLEG and SWS bring their own).
    """
    out: dict[str, Tensor] = {}
    for name, default in defaults.items():
        if name.startswith("blocks."):
            continue
        source = free.get(name)
        if source is None and name in _NORM_ALIASES:
            source = free.get(_NORM_ALIASES[name])
        value = None if source is None else _transfer(name, source, src, dst, default)
        if value is not None and value.shape == default.shape:
            out[name] = value.to(default.dtype)
    fresh = [n for n in defaults if n not in out and not n.startswith("blocks.")]
    return out, fresh


def _widen_pool(name: str, t: Tensor, k: int) -> Tensor:
    """An attention pool's parameter at k times its width, exactly: every pooling head copied, like a block's
    (`templates.widen`): matrices block-diagonal in copies (kv's k and v apart), vectors and the latent tiled."""
    if name == "attn_pool.latent":
        return torch.cat([t] * k, dim=-1)
    groups = t.chunk(2) if name.startswith("attn_pool.kv.") else (t,)
    if t.dim() == 2:
        return torch.cat([torch.block_diag(*[g] * k) for g in groups])
    return torch.cat([torch.cat([g] * k) for g in groups])


def _transfer(name: str, t: Tensor, src: Architecture, dst: Architecture, default: Tensor) -> Tensor | None:
    def residual(t: Tensor, dim: int) -> Tensor:
        return widen_residual(t, dim, src.embed_dim, dst.embed_dim)

    if name.startswith("attn_pool."):
        k = dst.embed_dim // src.embed_dim
        exact = dst.embed_dim == k * src.embed_dim and dst.mlp_hidden == k * src.mlp_hidden
        if exact and dst.head_dim == src.head_dim:
            return _widen_pool(name, t, k)
        return None  # no exact rule at this width: timm's init (listed as fresh)

    if name in _WIDTH_VECTORS:
        return residual(t, 0)
    if name == "cls_token" or name == "reg_token":
        return residual(t, t.dim() - 1)
    if name == "patch_embed.proj.weight":
        w = residual(t, 0)
        if dst.in_chans != src.in_chans:
            w = adapt_input_conv(dst.in_chans, w, base_chans=src.in_chans)
        if dst.patch_size != src.patch_size:
            w = resample_patch_embed(w, list(dst.patch_size))
        return w
    if name == "pos_embed":
        pos = residual(t, t.dim() - 1)
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
        # the residual stream holds D / D0 copies of each auxiliary channel (on average, for non-multiples)
        return residual(t, 1) / (dst.embed_dim / src.embed_dim) if dst.num_classes == src.num_classes else None
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

    template_config = _wave_templates(config)
    templates = WeightTemplates(template_config)
    with torch.no_grad():
        for kind, t in templates.tensors.items():
            t.copy_(template_set.templates[kind])
    templates.requires_grad_(False)
    k, kh = factors(src, dst)
    selection = select_width(src, dst, template_config.size)
    composed = dst.model_copy(update={"embed_dim": k * src.embed_dim, "mlp_hidden": kh * src.mlp_hidden})
    scalers = WeightScalers(template_config, composed)
    scalers.load(inherit_scalers(template_set, dst, noise, generator, selection))

    vit = build_fresh(spec, seed)  # fresh parameters (a new head): timm's seeded init
    free, fresh = inherit_free(template_set.free, src, dst, vit.state_dict())
    model = TemplatedViT(spec, templates, scalers, vit=vit, selection=selection)
    model.load_free({**free, **inherit_untemplated(template_set, dst, selection)})
    _fold_untemplated(model)
    model = model.to(device)
    ratio = dst.embed_dim / src.embed_dim
    model.provenance = {
        "template_set": template_set.ref,
        "method": config.method,
        "width_factor": int(ratio) if ratio.is_integer() else round(ratio, 4),
        "composed_factors": {"width": k, "mlp_hidden": kh},
        "depth": {"auxiliary": src.depth, "descendant": dst.depth},
        "noise": noise,
        "seed": seed,
        "fresh_parameters": fresh,
        "family": {"template_set": src.family, "descendant": dst.family},
        "layer_scale": "folded" if model.folded else "neutral" if dst.layer_scale and not src.layer_scale else None,
    }
    return model


def _fold_untemplated(model: TemplatedViT) -> None:
    """A folded layer scale also multiplies the rows of the kinds the set does not template (their stored values,
    now free parameters of the descendant), with its inherited value: exact at initialization."""
    with torch.no_grad():
        for kind in model.folded:
            gamma = model.composed(kind)
            for target in SLOTS[kind].scales:
                if target in model.templates.tensors:
                    continue  # generated: folded at every forward
                for layer, block in enumerate(model.vit.blocks):
                    param = block.get_parameter(SLOTS[target].param)
                    param.mul_(gamma[layer].unsqueeze(-1) if param.dim() == 2 else gamma[layer])
