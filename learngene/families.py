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

from timm.layers import GluMlp, LayerScale, Mlp
from timm.layers.attention import Attention
from timm.models.vision_transformer import VisionTransformer
from torch import nn

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
        Feature("qk_norm", "qk_norm=True: attn.q_norm, attn.k_norm", "not served yet", served=False),
        Feature(
            "glu_mlp",
            "SwiGLUPacked / GluMlp (DINOv2 giant): fc1 holds value and gate",
            "fc1's value and gate halves are widened tile by tile in place (the GATED axis), so their rows stay "
            "paired; no bridge to a GELU MLP (a 422 naming both families)",
        ),
        Feature("other_mlp", "SwiGLU with separate fc1_g/fc1_x, or an MLP with its own norm", "not served", False),
        Feature("eva", "the Eva class (EVA-02, DINOv3, ...: RoPE, SwiGLU)", "not served yet", served=False),
        Feature("rel_pos", "VisionTransformerRelPos", "not served", served=False),
        Feature("parallel_blocks", "ParallelScalingBlock, ParallelThingsBlock", "not served", served=False),
        Feature("stem", "a patch embedding other than one convolution (hybrid CNN stems, MCi)", "not served", False),
        Feature("distillation_token", "VisionTransformerDistilled (deit_*_distilled)", "not served", served=False),
        Feature(
            "other_modules",
            "any other block, attention, MLP or norm module (DiffAttention, ResPostBlock, RmsNorm, ...)",
            "not served",
            served=False,
        ),
    )
}

# Activations that have no parameters and are served (the class names timm builds).
ACTIVATIONS = ("GELU", "QuickGELU", "GELUTanh", "SiLU")


def _refuse(name: str, found: list[str]) -> SpecError:
    named = ", ".join(f"{f} ({FEATURES[f].timm})" for f in found)
    return SpecError("model", f"model={name!r} is not supported: {named}")


def _block_family(block: nn.Module) -> tuple[dict[str, Any], list[str]]:
    """The flags of a plain timm `Block` (with layer scale, any bias, any activation) and what it has that is not
    served."""
    unserved: list[str] = []
    attn, mlp = block.attn, block.mlp
    if type(attn) is not Attention:
        unserved.append("other_modules")
    elif not isinstance(attn.q_norm, nn.Identity) or not isinstance(attn.norm, nn.Identity):
        unserved.append("qk_norm")
    if type(mlp) not in (Mlp, GluMlp) or not isinstance(mlp.norm, nn.Identity):
        unserved.append("other_mlp")
    elif type(getattr(mlp, "act", None)).__name__ not in ACTIVATIONS or getattr(mlp, "chunk_dim", -1) != -1:
        unserved.append("other_modules")
    if not isinstance(block.norm1, nn.LayerNorm) or not isinstance(block.norm2, nn.LayerNorm):
        unserved.append("other_modules")
    for ls in (block.ls1, block.ls2):
        if not isinstance(ls, nn.Identity | LayerScale):
            unserved.append("other_modules")
    if unserved:
        return {}, unserved
    attention, perceptron = cast(Attention, attn), cast(Mlp | GluMlp, mlp)  # what the checks above let through
    qkv, proj, fc1 = (cast(nn.Linear, m) for m in (attention.qkv, attention.proj, perceptron.fc1))
    return {
        "layer_scale": isinstance(block.ls1, LayerScale),
        "qkv_bias": qkv.bias is not None,
        "proj_bias": proj.bias is not None,
        "mlp_bias": fc1.bias is not None,
        "mlp_gates": 2 if isinstance(perceptron, GluMlp) else 1,
        "act": type(perceptron.act).__name__,
    }, []


def read_family(name: str, model: nn.Module) -> dict[str, Any]:
    """The family flags of `model` (as `Architecture` records them), or a `SpecError` naming every feature of it
    that is not served."""
    cls = type(model).__name__
    if cls == "Eva":
        raise _refuse(name, ["eva"])
    if cls == "VisionTransformerRelPos":
        raise _refuse(name, ["rel_pos"])
    if cls == "VisionTransformerDistilled":
        raise _refuse(name, ["distillation_token"])
    if not isinstance(model, VisionTransformer) or cls != "VisionTransformer":
        raise SpecError("model", f"model={name!r} builds a {cls}, not a timm VisionTransformer")
    unserved: list[str] = []
    if not isinstance(getattr(model.patch_embed, "proj", None), nn.Conv2d):
        unserved.append("stem")
    blocks = list(model.blocks)
    kinds = {type(b).__name__ for b in blocks}
    flags: dict[str, Any] = {}
    if any("Parallel" in kind for kind in kinds):
        unserved.append("parallel_blocks")
    elif kinds != {"Block"}:
        unserved.append("other_modules")
    elif blocks:
        flags, found = _block_family(blocks[0])
        unserved += found
    if unserved:
        raise _refuse(name, list(dict.fromkeys(unserved)))
    return {
        **flags,
        "attn_pool": model.attn_pool is not None,
        "norm_pre": not isinstance(model.norm_pre, nn.Identity),
        "reg_tokens": model.num_reg_tokens,
    }


def family_name(flags: dict[str, Any]) -> str:
    """A short label of a family, for messages: 'vit' plus the features that are not the plain block's."""
    parts = []
    if flags.get("layer_scale"):
        parts.append("layer_scale")
    for bias in ("qkv_bias", "proj_bias", "mlp_bias"):
        if not flags.get(bias, True):
            parts.append(f"no_{bias}")
    if flags.get("mlp_gates", 1) == 2:
        parts.append("glu_mlp")
    if flags.get("attn_pool"):
        parts.append("attention_pool")
    if flags.get("norm_pre"):
        parts.append("norm_pre")
    if flags.get("reg_tokens"):
        parts.append(f"registers={flags['reg_tokens']}")
    if flags.get("act", "GELU") != "GELU":
        parts.append(str(flags["act"]))
    return "vit" + (f"[{', '.join(parts)}]" if parts else "")
