"""The ViT families timm builds, as data: every block and model feature, what timm calls it, how the methods treat
it, and whether it is served (METHOD.md, "Families").

`read_family` reads the features off a model timm built (on the meta device) and returns the flags `Architecture`
records; a model with a feature that is not served gets one `SpecError` naming every such feature, never a crash.
A feature that is served is either templated (a `Slot` of `learngene.layers.templates`), a free parameter of the
auxiliary model inherited by the width rules of `learngene.methods.wave.inherit`, or has no parameters at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from timm.layers import AttentionRope, GluMlp, LayerScale, Mlp, SwiGLU
from timm.layers.attention import Attention
from timm.models.eva import EvaAttention, EvaBlock
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from learngene.errors import SpecError


@dataclass(frozen=True)
class Feature:
    """One way a timm ViT departs from the plain DeiT block, and what the methods do with it."""

    name: str
    timm: str  # where timm has it: the constructor argument or class, and its parameters
    treatment: str  # how WAVE (and TLEG, SWS, the baselines) treat it
    served: bool = True


FEATURES: dict[str, Feature] = {
    f.name: f
    for f in (
        Feature(
            "layer_scale",
            "init_values (DeiT-3, DINOv2): ls1.gamma, ls2.gamma",
            "templated vector kinds ls1_gamma, ls2_gamma; folded into proj and fc2 (weight and bias rows, exact) for "
            "a descendant without layer scale; 1 (exact) for a layer-scale descendant of a set without",
        ),
        Feature("no_qkv_bias", "qkv_bias=False", "no qkv_bias kind; a set that has one serves no such descendant"),
        Feature("no_proj_bias", "proj_bias=False", "no proj_bias kind; a set that has one serves no such descendant"),
        Feature("no_mlp_bias", "the MLP's bias=False", "no fc1_bias/fc2_bias kinds; likewise"),
        Feature(
            "norm_pre",
            "pre_norm=True (CLIP): norm_pre.weight, norm_pre.bias",
            "a free parameter of the auxiliary model, tiled for width like every residual-stream vector",
        ),
        Feature(
            "attention_pool",
            "global_pool='map' (SigLIP): attn_pool.latent, .q, .kv, .proj, .norm, .mlp",
            "free parameters of the auxiliary model: inherited at its width, widened exactly at k x D0 (every pooling "
            "head copied, like a block's), timm's init at any other width (listed as fresh)",
        ),
        Feature("registers", "reg_tokens (DINOv2 reg4, SigLIP-2)", "reg_token: a free parameter, tiled for width"),
        Feature(
            "no_class_token",
            "class_token=False, global_pool='avg'",
            "nothing to inherit; fc_norm is inherited from the set's final norm and back",
        ),
        Feature("no_embed_class", "no_embed_class=True", "the position embedding covers the patches only"),
        Feature(
            "activation",
            "act_layer: GELU, QuickGELU (CLIP), GELUTanh (SigLIP), SiLU",
            "no parameters; recorded, and a descendant of another activation gets a family_mismatch warning",
        ),
        Feature(
            "qk_norm",
            "qk_norm=True: attn.q_norm, attn.k_norm (LayerNorms over the head dimension)",
            "vector kinds of head size (q_norm_weight, q_norm_bias, k_norm_weight, k_norm_bias), per-layer free "
            "parameters of the auxiliary model by default (templates of side D0 cannot tile a head): depth "
            "interpolated, unchanged under widening (every copied head keeps its size: exact); a descendant must "
            "keep the set's head size and qk-norm (a 422 otherwise)",
        ),
        Feature(
            "glu_mlp",
            "SwiGLUPacked / GluMlp with the gate first (DINOv2 giant, EVA-02 Ti/S): fc1 holds gate and value",
            "fc1's gate and value halves are widened tile by tile in place (the GATED axis), so their rows stay "
            "paired; no bridge to a GELU MLP (a 422 naming both families)",
        ),
        Feature(
            "eva",
            "the Eva class (EVA-02, DINOv3, RoPE ViTs): EvaBlock with EvaAttention or AttentionRope; gamma_1/gamma_2, "
            "q_bias/v_bias, q_proj/k_proj/v_proj, fc1_g/fc1_x",
            "its block is read in the plain Block's names (`block_layout`: fused or split along rows), so every kind, "
            "rule and method applies unchanged",
        ),
        Feature(
            "rope",
            "rope_type 'cat' (EVA-02, RoPE ViTs) or 'dinov3': RotaryEmbeddingCat, RotaryEmbeddingDinoV3",
            "no parameters; exact under widening (every head copied keeps its head size); a descendant must have "
            "the set's RoPE (a 422 naming both families otherwise)",
        ),
        Feature(
            "no_k_bias",
            "EVA's q_bias and v_bias without a k bias (a zero buffer), or k_proj without bias",
            "the qkv_bias kind's k third is dropped for the family; under RoPE a set and a descendant must agree on it",
        ),
        Feature("no_pos_embed", "use_abs_pos_emb=False (DINOv3: RoPE only)", "no pos_embed to inherit"),
        Feature(
            "swiglu",
            "SwiGLU (EVA-02 B/L): fc1_g (gate) and fc1_x (value) apart",
            "read as the packed GLU's fc1 (gate rows, then value rows): the glu_mlp rules",
        ),
        Feature(
            "attn_norm",
            "scale_attn_inner / scale_norm: attn.norm over the attention output",
            "templated vector kinds attn_norm_weight, attn_norm_bias (exact under widening: a LayerNorm over copies); "
            "set and descendant must agree on it",
        ),
        Feature(
            "mlp_norm",
            "scale_mlp: mlp.norm over the hidden layer (EVA-02 B/L)",
            "templated vector kinds mlp_norm_weight, mlp_norm_bias (hidden length); set and descendant must agree",
        ),
        Feature(
            "other_mlp",
            "any other MLP (GluMlp with the gate last, GatedMlp, a convolutional one)",
            "not served",
            served=False,
        ),
        Feature("rope_learned", "rope_type 'mixed' (learned frequencies) or 'mrope'", "not served", served=False),
        Feature("rel_pos", "VisionTransformerRelPos", "not served", served=False),
        Feature("parallel_blocks", "ParallelScalingBlock, ParallelThingsBlock", "not served", served=False),
        Feature("stem", "a patch embedding other than one convolution (hybrid CNN stems, MCi)", "not served", False),
        Feature("distillation_token", "VisionTransformerDistilled (deit_*_distilled)", "not served", served=False),
        Feature(
            "other_modules",
            "any other block, attention, MLP or norm module (DiffAttention, ResPostBlock, EvaBlockPostNorm, RmsNorm, "
            "gated or grouped-query attention, layer scale on one branch only, ...)",
            "not served",
            served=False,
        ),
    )
}

# Activations that have no parameters and are served (the class names timm builds).
ACTIVATIONS = ("GELU", "QuickGELU", "GELUTanh", "SiLU")

# RoPE without parameters, by the class timm builds: the rotation is a function of the grid, recorded so that a set
# and a descendant must agree on it. (`RotaryEmbeddingMixed` learns its frequencies: not served.)
ROPES = {"RotaryEmbeddingCat": "cat", "RotaryEmbeddingDinoV3": "dinov3"}


def _refuse(name: str, found: list[str]) -> SpecError:
    named = ", ".join(f"{f} ({FEATURES[f].timm})" for f in found)
    return SpecError("model", f"model={name!r} is not supported: {named}")


def _norm(module: nn.Module | None) -> bool | None:
    """True for a LayerNorm, False for none (Identity), None for any other module (not served)."""
    if module is None or isinstance(module, nn.Identity):
        return False
    return True if isinstance(module, nn.LayerNorm) else None


def _attention(attn: Any, dim: int) -> tuple[dict[str, Any], list[str]]:
    """timm's `Attention` (ViT), `EvaAttention` or `AttentionRope`: its biases, its layout and its norm."""
    if type(attn) not in (Attention, EvaAttention, AttentionRope):
        return {}, ["other_modules"]
    qk_norm = (_norm(attn.q_norm), _norm(attn.k_norm))
    norm = _norm(attn.norm)
    other = (
        norm is None
        or qk_norm[0] is None
        or qk_norm[0] != qk_norm[1]  # a norm over q only, or over k only
        or getattr(attn, "gate", None) is not None  # gated attention (sigmoid gate before proj)
        or getattr(attn, "num_kv_heads", attn.num_heads) != attn.num_heads  # grouped-query attention
        or attn.num_heads * attn.head_dim != dim  # an attention width other than the residual stream's
    )
    if other:
        return {}, ["other_modules"]
    proj = cast(nn.Linear, attn.proj)
    flags: dict[str, Any] = {"proj_bias": proj.bias is not None, "attn_norm": norm, "qk_norm": qk_norm[0]}
    if attn.qkv is None:  # separate q, k, v projections
        q, k = cast(nn.Linear, attn.q_proj), cast(nn.Linear, attn.k_proj)
        flags.update(qkv_layout="separate", qkv_bias=q.bias is not None, k_bias=k.bias is not None)
    elif getattr(attn, "q_bias", None) is not None:  # EVA: fused weight, q and v biases apart, no k bias
        flags.update(qkv_layout="qv_bias", qkv_bias=True, k_bias=False)
    else:
        flags.update(qkv_layout="fused", qkv_bias=cast(nn.Linear, attn.qkv).bias is not None)
    if not flags["qkv_bias"]:
        flags["k_bias"] = True  # no biases at all: nothing to tell apart (the recorded default)
    return flags, []


def _mlp(mlp: Any) -> tuple[dict[str, Any], list[str]]:
    """timm's `Mlp`, `GluMlp` with the gate first (`SwiGLUPacked`) or `SwiGLU` (gate and value apart), each with or
    without its own norm over the hidden layer."""
    norm = _norm(getattr(mlp, "norm", None))
    act = type(getattr(mlp, "act", None)).__name__
    if type(mlp) is SwiGLU:
        fc1 = cast(nn.Linear, mlp.fc1_g)
        flags = {"mlp_gates": 2, "mlp_layout": "separate"}
    elif type(mlp) is GluMlp and not mlp.gate_last and mlp.chunk_dim == -1:
        fc1 = cast(nn.Linear, mlp.fc1)
        flags = {"mlp_gates": 2}
    elif type(mlp) is Mlp:
        fc1 = cast(nn.Linear, mlp.fc1)
        flags = {"mlp_gates": 1}
    else:
        return {}, ["other_mlp"]
    if norm is None or act not in ACTIVATIONS:
        return {}, ["other_modules"]
    return {**flags, "mlp_bias": fc1.bias is not None, "mlp_norm": norm, "act": act}, []


def _block_family(block: Any, dim: int) -> tuple[dict[str, Any], list[str]]:
    """The flags of a timm `Block` or `EvaBlock` (pre-norm, LayerNorm, optional layer scale on both branches) and
    what it has that is not served."""
    attention, unserved = _attention(block.attn, dim)
    perceptron, found = _mlp(block.mlp)
    unserved += found
    if not isinstance(block.norm1, nn.LayerNorm) or not isinstance(block.norm2, nn.LayerNorm):
        unserved.append("other_modules")
    if isinstance(block, EvaBlock):
        scales = (block.gamma_1, block.gamma_2)
        if (scales[0] is None) != (scales[1] is None):  # attn_only_layer_scale
            unserved.append("other_modules")
        layer_scale = scales[0] is not None
    else:
        if not all(isinstance(ls, nn.Identity | LayerScale) for ls in (block.ls1, block.ls2)):
            unserved.append("other_modules")
        layer_scale = isinstance(block.ls1, LayerScale)
    if unserved:
        return {}, unserved
    return {**attention, **perceptron, "layer_scale": layer_scale}, []


def read_family(name: str, model: nn.Module) -> dict[str, Any]:
    """The family flags of `model` (as `Architecture` records them), or a `SpecError` naming every feature of it
    that is not served."""
    cls = type(model).__name__
    vit: Any = model  # read by duck typing: a VisionTransformer and an Eva share these attributes
    if cls == "VisionTransformerRelPos":
        raise _refuse(name, ["rel_pos"])
    if cls == "VisionTransformerDistilled":
        raise _refuse(name, ["distillation_token"])
    if cls not in ("VisionTransformer", "Eva"):
        raise SpecError("model", f"model={name!r} builds a {cls}, not a timm VisionTransformer or Eva")
    unserved: list[str] = []
    if not isinstance(getattr(vit.patch_embed, "proj", None), nn.Conv2d):
        unserved.append("stem")
    flags: dict[str, Any] = {"block": "eva" if cls == "Eva" else "vit"}
    if cls == "Eva":
        rope = getattr(vit, "rope", None)
        if rope is not None and (type(rope).__name__ not in ROPES or any(True for _ in rope.parameters())):
            unserved.append("rope_learned")
        elif rope is not None:
            flags["rope"] = ROPES[type(rope).__name__]
    blocks = list(vit.blocks)
    kinds = {type(b) for b in blocks}
    if any("Parallel" in kind.__name__ for kind in kinds):
        unserved.append("parallel_blocks")
    elif kinds - {Block, EvaBlock} or len(kinds) > 1:
        unserved.append("other_modules")
    elif blocks:
        block_flags, found = _block_family(blocks[0], vit.embed_dim)
        flags.update(block_flags)
        unserved += found
    if unserved:
        raise _refuse(name, list(dict.fromkeys(unserved)))
    reg_token = vit.reg_token
    return {
        **flags,
        "attn_pool": vit.attn_pool is not None,
        "norm_pre": not isinstance(vit.norm_pre, nn.Identity),
        "reg_tokens": 0 if reg_token is None else reg_token.shape[1],
        "pos_embed": vit.pos_embed is not None,
    }


def block_layout(arch: Any) -> dict[str, tuple[str | None, ...]]:
    """How a family's block stores the parameters of the plain timm `Block` (the canonical names every method, the
    `SLOTS` table and a template set use): canonical name -> its native parts, equal chunks along dim 0 (None: a
    part the family does not have, zero by construction, such as EVA's k bias). A name not listed is stored as it is.

    `arch` is an `Architecture` (typed loosely: `learngene.spec` imports this module)."""
    if arch.block == "vit":
        return {}
    parts: dict[str, tuple[str | None, ...]] = {"ls1.gamma": ("gamma_1",), "ls2.gamma": ("gamma_2",)}
    k_bias = arch.k_bias
    if arch.qkv_layout == "qv_bias":
        parts["attn.qkv.bias"] = ("attn.q_bias", None, "attn.v_bias")
    elif arch.qkv_layout == "separate":
        parts["attn.qkv.weight"] = tuple(f"attn.{p}_proj.weight" for p in "qkv")
        parts["attn.qkv.bias"] = ("attn.q_proj.bias", "attn.k_proj.bias" if k_bias else None, "attn.v_proj.bias")
    if arch.mlp_layout == "separate":  # SwiGLU: act(fc1_g x) * fc1_x x, the packed GLU's order (gate first)
        parts["mlp.fc1.weight"] = ("mlp.fc1_g.weight", "mlp.fc1_x.weight")
        parts["mlp.fc1.bias"] = ("mlp.fc1_g.bias", "mlp.fc1_x.bias")
    return parts


def _split_key(key: str) -> tuple[str, str] | None:
    """`blocks.3.attn.qkv.weight` -> ("blocks.3.", "attn.qkv.weight"); None for a parameter outside the blocks."""
    head, _, rest = key.partition(".")
    layer, _, param = rest.partition(".")
    return (f"{head}.{layer}.", param) if head == "blocks" and layer.isdigit() else None


def to_native(state: dict[str, Tensor], arch: Any) -> dict[str, Tensor]:
    """A state dict in canonical names, as the family's own model names and splits it (parts it lacks dropped)."""
    layout = block_layout(arch)
    if not layout:
        return state
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        split = _split_key(key)
        parts = layout.get(split[1]) if split else None
        if split is None or parts is None:
            out[key] = value
            continue
        for part, chunk in zip(parts, value.chunk(len(parts)), strict=True):
            if part is not None:
                out[split[0] + part] = chunk
    return out


def to_canonical(state: dict[str, Tensor], arch: Any) -> dict[str, Tensor]:
    """The inverse of `to_native`: the family's state dict in canonical names (a part it lacks is zeros). A
    canonical parameter some of whose native parts are not in `state` is left out."""
    layout = block_layout(arch)
    if not layout:
        return state
    owner = {part: (name, i) for name, parts in layout.items() for i, part in enumerate(parts) if part is not None}
    out: dict[str, Tensor] = {}
    gathered: dict[tuple[str, str], dict[int, Tensor]] = {}
    for key, value in state.items():
        split = _split_key(key)
        if split is None or split[1] not in owner:
            out[key] = value
            continue
        name, i = owner[split[1]]
        gathered.setdefault((split[0], name), {})[i] = value
    for (prefix, name), found in gathered.items():
        parts = layout[name]
        if len(found) < sum(part is not None for part in parts):
            continue
        like = next(iter(found.values()))
        out[prefix + name] = torch.cat([found.get(i, torch.zeros_like(like)) for i in range(len(parts))])
    return out


def load_canonical(model: nn.Module, state: dict[str, Tensor], arch: Any) -> None:
    """Load `state` (canonical names, any subset of the model's parameters) into the timm `model` of family `arch`.
    A name the model does not have is an error: `strict=False` would drop it in silence."""
    unexpected = model.load_state_dict(to_native(state, arch), strict=False).unexpected_keys
    if unexpected:
        raise ValueError(f"not parameters of {arch.model}: {unexpected[:5]}")


def check_bridge(src: Any, dst: Any) -> None:
    """A `SpecError` naming both families when no rule maps a block of family `src` (a template set's) onto one of
    `dst` (a descendant's); every other difference has an exact rule or a warning. Both are `Architecture`s."""
    refusal = _bridge_refusal(src, dst)
    if refusal:
        raise SpecError("model", f"{dst.model} ({dst.family}) and the template set's family ({src.family}) {refusal}")


def _bridge_refusal(src: Any, dst: Any) -> str | None:
    if dst.mlp_gates != src.mlp_gates:
        return "have different MLPs (a GLU and a plain one): no rule maps one onto the other"
    if dst.rope != src.rope:
        return "encode positions differently (RoPE against none or another RoPE): attention cannot be mapped"
    if dst.attn_norm != src.attn_norm or dst.mlp_norm != src.mlp_norm or dst.qk_norm != src.qk_norm:
        return "differ in a norm inside attention or the MLP: a LayerNorm cannot be added or removed exactly"
    if dst.qk_norm and dst.head_dim != src.head_dim:
        return (
            f"normalize heads of different sizes ({dst.head_dim} against {src.head_dim}, qk-norm): a norm over a "
            "head has no rule to another head size"
        )
    if dst.rope and dst.qkv_bias and src.qkv_bias and dst.k_bias != src.k_bias:
        return "differ in the key bias under RoPE, where it changes the attention (without RoPE it would not)"
    return None


def family_name(flags: dict[str, Any]) -> str:
    """A short label of a family, for messages: its class ('vit', 'eva') plus the features that are not the plain
    block's."""
    parts = []
    if flags.get("rope"):
        parts.append(f"rope={flags['rope']}")
    if not flags.get("pos_embed", True):
        parts.append("no_pos_embed")
    if flags.get("layer_scale"):
        parts.append("layer_scale")
    for bias in ("qkv_bias", "proj_bias", "mlp_bias"):
        if not flags.get(bias, True):
            parts.append(f"no_{bias}")
    if flags.get("qkv_bias", True) and not flags.get("k_bias", True):
        parts.append("no_k_bias")
    if flags.get("mlp_gates", 1) == 2:
        parts.append("glu_mlp")
    for norm in ("attn_norm", "mlp_norm", "qk_norm"):
        if flags.get(norm):
            parts.append(norm)
    if flags.get("attn_pool"):
        parts.append("attention_pool")
    if flags.get("norm_pre"):
        parts.append("norm_pre")
    if flags.get("reg_tokens"):
        parts.append(f"registers={flags['reg_tokens']}")
    if flags.get("act", "GELU") != "GELU":
        parts.append(str(flags["act"]))
    cls = flags.get("block", "vit")
    return cls + (f"[{', '.join(parts)}]" if parts else "")
