"""Initializations the benchmark compares against, which need no condensation (METHOD.md, Baselines).

- timm:             timm's default initialization (trunc-normal / He-style), i.e. training from scratch;
- mimetic:          Trockman & Kolter (2023): W_q^T W_k ~ alpha1 Z + beta1 I and W_v^T W_proj^T ~ alpha2 Z - beta2 I;
- weight_selection: Xu et al. (2024): the first L' ancestor layers, every tensor cut to the target shape by uniform
                    element selection; head excluded;
- heru_lg:          the last k ancestor layers on top, random layers below;
- auto_lg:          the first k ancestor layers (and the embeddings), random layers above.
All return a plain timm model; the ancestor-based ones need a timm VisionTransformer ancestor. Each is registered
as a method (the classes at the end).
"""

from __future__ import annotations

import math

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from learngene.errors import SpecError
from learngene.families import load_canonical, to_canonical
from learngene.layers.select import uniform_indices
from learngene.methods.registry import Method, register_method
from learngene.spec import Architecture, ViTSpec, build_fresh

LEARNGENE_LAYERS = 3  # [ours] k of Heru-LG and Auto-LG (the paper's Ti learngenes hold about three layers)


def timm_default(spec: ViTSpec, seed: int = 0) -> VisionTransformer:
    return build_fresh(spec, seed)


# --- Mimetic -------------------------------------------------------------------------------------------------


def mimetic_factors(dim: int, head_dim: int, alpha: float, beta: float, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """(A, B), each (head_dim, dim), with A^T B the best rank-head_dim approximation of alpha Z + beta I,
    Z ~ N(0, 1/dim)."""
    target = alpha * torch.randn(dim, dim, generator=g) / math.sqrt(dim) + beta * torch.eye(dim)
    u, s, vh = torch.linalg.svd(target)
    root = s[:head_dim].sqrt()
    return (u[:, :head_dim] * root).T, (vh[:head_dim].T * root).T


def mimetic(
    spec: ViTSpec, seed: int = 0, alpha1: float = 0.7, beta1: float = 0.7, alpha2: float = 0.4, beta2: float = 0.4
) -> VisionTransformer:
    """timm's init, then every head's query/key and value/output products set to the mimetic structure."""
    model = timm_default(spec, seed)
    arch = spec.resolve()
    d, h, dh = arch.embed_dim, arch.num_heads, arch.head_dim
    g = torch.Generator().manual_seed(seed)
    state = to_canonical(model.state_dict(), arch)  # q, k and v stacked, whatever the family stores
    updates: dict[str, Tensor] = {}
    for layer in range(arch.depth):
        qkv = state[f"blocks.{layer}.attn.qkv.weight"].clone()  # (3d, d)
        proj = state[f"blocks.{layer}.attn.proj.weight"].clone()  # (d, d)
        for head in range(h):
            rows = slice(head * dh, (head + 1) * dh)
            q, k = mimetic_factors(d, dh, alpha1, beta1, g)  # attention logits: x W_q^T W_k x^T
            qkv[rows] = q
            qkv[d:][rows] = k
            v, o = mimetic_factors(d, dh, alpha2, -beta2, g)  # value path: x W_v^T W_proj[:, head]^T
            qkv[2 * d :][rows] = v
            proj[:, rows] = o.T
        updates[f"blocks.{layer}.attn.qkv.weight"] = qkv
        updates[f"blocks.{layer}.attn.proj.weight"] = proj
    load_canonical(model, updates, arch)
    return model


# --- ancestor-based ------------------------------------------------------------------------------------------


def select(tensor: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Uniform element selection along every axis where the target is smaller."""
    for axis, size in enumerate(shape):
        if tensor.shape[axis] != size:
            tensor = tensor.index_select(axis, uniform_indices(tensor.shape[axis], size))
    return tensor


def _same_input(src: Architecture, dst: Architecture, method: str) -> None:
    for field in ("img_size", "patch_size", "in_chans"):
        if getattr(src, field) != getattr(dst, field):
            raise SpecError(field, f"{method} needs the ancestor's {field} {getattr(src, field)}")


def check_weight_selection(src: Architecture, dst: Architecture) -> None:
    _same_input(src, dst, "weight_selection")
    for field, value, limit in (
        ("depth", dst.depth, src.depth),
        ("embed_dim", dst.embed_dim, src.embed_dim),
        ("mlp_ratio", dst.mlp_hidden, src.mlp_hidden),
    ):
        if value > limit:
            raise SpecError(field, f"weight_selection only shrinks: {field} must not exceed the ancestor's ({limit})")
    if dst.num_prefix_tokens != src.num_prefix_tokens:
        raise SpecError("class_token", "weight_selection needs the ancestor's prefix tokens")


def weight_selection(ancestor: dict[str, Tensor], src: Architecture, spec: ViTSpec, seed: int = 0) -> VisionTransformer:
    dst = spec.resolve()
    check_weight_selection(src, dst)
    model = timm_default(spec, seed)
    state = model.state_dict()
    chosen = {}
    for name, target in state.items():
        if name.startswith("head") or name not in ancestor:
            continue  # the head is excluded (new task); layers beyond the target depth are not asked for
        gated = ".mlp.fc1." in name and name.startswith("blocks.") and src.mlp_gates == 2
        stacked = 3 if ".qkv." in name else 2 if name.startswith("attn_pool.kv.") or gated else 1
        chosen[name] = _select_stacked(ancestor[name], target.shape, stacked, src, dst)
    model.load_state_dict(chosen, strict=False)
    return model


def _select_stacked(tensor: Tensor, shape: torch.Size, parts: int, src: Architecture, dst: Architecture) -> Tensor:
    """q, k and v (an attention pool's k and v, a GLU's value and gate) are selected separately, so each keeps its
    own rows (the same indices as the residual width, or the hidden layer)."""
    if parts == 1:
        return select(tensor, tuple(shape))
    stacked = tensor.reshape(parts, tensor.shape[0] // parts, *tensor.shape[1:])
    return torch.cat([select(p, (shape[0] // parts, *shape[1:])) for p in stacked])


def check_layer_learngene(src: Architecture, dst: Architecture, method: str) -> None:
    _same_input(src, dst, method)
    if dst.embed_dim != src.embed_dim or dst.mlp_hidden != src.mlp_hidden:
        raise SpecError("embed_dim", f"{method} copies whole ancestor layers: embed_dim must be {src.embed_dim}")
    if dst.num_heads != src.num_heads:
        raise SpecError("num_heads", f"{method} copies whole ancestor layers: num_heads must be {src.num_heads}")


def _layer_learngene(
    ancestor: dict[str, Tensor], src: Architecture, spec: ViTSpec, seed: int, method: str, top: bool
) -> VisionTransformer:
    dst = spec.resolve()
    check_layer_learngene(src, dst, method)
    k = min(LEARNGENE_LAYERS, dst.depth, src.depth)
    model = timm_default(spec, seed)
    if top:  # Heru-LG: ancestor layers L-k..L-1 become the descendant's top layers; the final norm comes along
        pairs = zip(range(src.depth - k, src.depth), range(dst.depth - k, dst.depth), strict=True)
        extra = {n: t for n, t in ancestor.items() if n.startswith("norm.")}
    else:  # Auto-LG: the first k layers, with the embeddings below them
        pairs = zip(range(k), range(k), strict=True)
        extra = {
            n: t
            for n, t in ancestor.items()
            if n.split(".")[0] in ("cls_token", "pos_embed", "patch_embed", "reg_token")
        }
    chosen = dict(extra)
    for a, d in pairs:
        prefix = f"blocks.{a}."
        chosen.update({f"blocks.{d}.{n[len(prefix) :]}": t for n, t in ancestor.items() if n.startswith(prefix)})
    model.load_state_dict(chosen, strict=False)
    return model


def heru_lg(ancestor: dict[str, Tensor], src: Architecture, spec: ViTSpec, seed: int = 0) -> VisionTransformer:
    return _layer_learngene(ancestor, src, spec, seed, "heru_lg", top=True)


def auto_lg(ancestor: dict[str, Tensor], src: Architecture, spec: ViTSpec, seed: int = 0) -> VisionTransformer:
    return _layer_learngene(ancestor, src, spec, seed, "auto_lg", top=False)


# --- The registered methods ---------------------------------------------------------------------------------


class FromAncestor(Method):
    needs = "ancestor"
    initialize: staticmethod  # (ancestor state, its architecture, spec, seed) -> descendant

    def build(self, spec, *, template_set, ancestor, seed, noise, device) -> nn.Module:
        return self.initialize(ancestor.state, ancestor.arch, spec, seed)


@register_method
class WeightSelection(FromAncestor):
    """The first L' layers, every tensor uniformly sub-selected (only shrinks)."""

    name = "weight_selection"
    initialize = staticmethod(weight_selection)

    def check(self, spec, dst, template_config, ancestor) -> Architecture:
        check_weight_selection(ancestor, dst)
        return dst


class LayerCopy(FromAncestor):
    def check(self, spec, dst, template_config, ancestor) -> Architecture:
        check_layer_learngene(ancestor, dst, self.name)
        return dst


@register_method
class HeruLg(LayerCopy):
    """The ancestor's last 3 layers, random elsewhere."""

    name = "heru_lg"
    initialize = staticmethod(heru_lg)


@register_method
class AutoLg(LayerCopy):
    """The ancestor's first 3 layers, random elsewhere."""

    name = "auto_lg"
    initialize = staticmethod(auto_lg)


@register_method
class Timm(Method):
    """timm's own initialization."""

    name = "timm"

    def build(self, spec, *, template_set, ancestor, seed, noise, device) -> nn.Module:
        return timm_default(spec, seed)


@register_method
class Mimetic(Method):
    """Mimetic initialization of the attention weights."""

    name = "mimetic"

    def build(self, spec, *, template_set, ancestor, seed, noise, device) -> nn.Module:
        return mimetic(spec, seed)
