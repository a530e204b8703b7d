"""What a descendant's user should know about it: where a request leaves the template set's domain, and what that does.

A template set is condensed on one input domain (image size, channels, patch size, classes, normalization) and its
quality card measures a range of depths and widths. A request may leave either; inheritance then adapts (timm's
resampling of the position and patch embeddings, `adapt_input_conv`, a fresh head), and the result is worth less than
the card says. Each such departure is reported as a `Caveat` (a stable `code` and a sentence), before the job runs
(from the architecture alone) and after it (with what the calibration data showed).
"""

from __future__ import annotations

from pydantic import BaseModel

from learngene.data import ImageData, channel_stats
from learngene.formats.template_set import Normalization, TemplateSetConfig
from learngene.quality.card import QualityCard
from learngene.spec import Architecture

# Calibration images normalized with the set's statistics whose own mean/std stray this far from 0/1 are off-domain.
MEAN_TOLERANCE = 0.25
STD_RATIO_TOLERANCE = 1.5
STATS_SAMPLES = 1024  # images the statistics are taken on (in chunks): enough for two digits, bounded memory


class Caveat(BaseModel):
    code: str  # input_size, patch_size, in_chans, fresh_head, depth_range, width_range, no_fitting, ...
    message: str


def _size(hw: tuple[int, int]) -> str:
    return f"{hw[0]}x{hw[1]}"


def _values(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


def architecture_caveats(config: TemplateSetConfig, dst: Architecture, card: QualityCard | None = None) -> list[Caveat]:
    """What inheriting `dst` from a set condensed as `config` adapts, known before anything runs; with the set's
    quality `card`, whether `dst` lies inside the depths and widths it measured."""
    src, out = config.arch, []
    if dst.grid_size != src.grid_size:  # the same grid of patches at another patch size keeps its position embedding
        out.append(Caveat(code="input_size", message=(
            f"input size {_size(dst.img_size)} differs from the template set's {_size(src.img_size)}: the position "
            f"embedding is resampled from a {_size(src.grid_size)} to a {_size(dst.grid_size)} grid (bicubic)"
        )))  # fmt: skip
    if dst.patch_size != src.patch_size:
        out.append(Caveat(code="patch_size", message=(
            f"patch size {_size(dst.patch_size)} differs from the template set's {_size(src.patch_size)}: the patch "
            "embedding is resampled (timm's resample_patch_embed)"
        )))  # fmt: skip
    if dst.in_chans != src.in_chans:
        norm = config.normalization.for_channels(dst.in_chans)
        how = "replicated from its grey channel" if src.in_chans == 1 else f"averaged over its {src.in_chans} channels"
        out.append(Caveat(code="in_chans", message=(
            f"{dst.in_chans} input channel(s), the template set has {src.in_chans}: the patch embedding is adapted "
            f"(timm's adapt_input_conv) and the normalization mean {_values(norm.mean)}, std {_values(norm.std)} is "
            f"{how}"
        )))  # fmt: skip
    if dst.num_classes != src.num_classes:
        out.append(Caveat(code="fresh_head", message=(
            f"num_classes={dst.num_classes} differs from the template set's {src.num_classes}: the classifier head "
            "is fresh (timm's random initialization), not inherited"
        )))  # fmt: skip
    differences = family_differences(src, dst)
    if differences:
        out.append(Caveat(code="family_mismatch", message=(
            f"{dst.model} is of the family {dst.family}, the template set's auxiliary model of {src.family}: "
            + "; ".join(differences)
        )))  # fmt: skip
    if card is not None:
        depth = ("depth", "depth", dst.depth, card.depth_range)
        width = ("width", "embed_dim", dst.embed_dim, card.width_range)
        for what, field, value, (low, high) in (depth, width):
            if not low <= value <= high:
                out.append(Caveat(code=f"{what}_range", message=(
                    f"{field}={value} lies outside the {what}s the template set's quality card measured "
                    f"({low}-{high}): its accuracy there is not known"
                )))  # fmt: skip
    return out


def family_differences(src: Architecture, dst: Architecture) -> list[str]:
    """What inheriting across families does (METHOD.md, Families), one phrase per difference; [] within a family.
    Refused differences (a bias the descendant lacks) never get here: `check` refuses them first."""
    out = []
    if src.layer_scale and not dst.layer_scale:
        out.append("the set's layer scale is folded into proj and fc2 (exact)")
    if dst.layer_scale and not src.layer_scale:
        out.append("the layer-scale gammas start at 1 (exact)")
    for flag, name in (("qkv_bias", "qkv"), ("proj_bias", "proj"), ("mlp_bias", "MLP")):
        if getattr(dst, flag) and not getattr(src, flag):
            out.append(f"the {name} bias, which the set has not, starts at 0 (exact)")
    if dst.act != src.act:
        out.append(f"the activation is {dst.act}, the set was condensed with {src.act}: inherited weights meet "
                   "another non-linearity")  # fmt: skip
    if dst.attn_pool and not src.attn_pool:
        out.append("the attention pool is fresh (timm's init): the set has none")
    if src.attn_pool and not dst.attn_pool:
        out.append("the set's attention pool is not used: the descendant pools another way")
    if not (dst.attn_pool or src.attn_pool) and dst.global_pool != src.global_pool:
        out.append(f"the descendant pools by {dst.global_pool!r}, the set's auxiliary model by {src.global_pool!r}: "
                   "the inherited head reads other features")  # fmt: skip
    if dst.norm_pre != src.norm_pre:
        out.append("norm_pre is " + ("fresh (timm's init)" if dst.norm_pre else "dropped"))
    if dst.pos_embed != src.pos_embed:
        out.append("the absolute position embedding is " + ("fresh (timm's init): the set has none" if dst.pos_embed
                   else "dropped: the descendant encodes positions by RoPE alone"))  # fmt: skip
    if dst.reg_tokens != src.reg_tokens:
        out.append(f"the set's {src.reg_tokens} register tokens are dropped" if not dst.reg_tokens else
                   f"the descendant's {dst.reg_tokens} register tokens are fresh (timm's init): the set has "
                   f"{src.reg_tokens}")  # fmt: skip
    if dst.qkv_bias and src.qkv_bias and dst.k_bias != src.k_bias:  # RoPE makes it matter: check_bridge refuses
        out.append(
            "the key bias is "
            + ("zero" if dst.k_bias else "dropped")
            + " (exact: without RoPE a key bias shifts every logit of a query alike, and softmax ignores it)"
        )
    return out


def no_fitting_caveat(fresh_head: bool) -> Caveat:
    """No calibration data: the descendant is pure inheritance, and a fresh head stays random."""
    message = "no calibration data: pure inheritance, the weight scalers are not fitted (0 steps)"
    if fresh_head:
        message += "; the fresh head is untrained, so predictions are chance until the model is fine-tuned"
    return Caveat(code="no_fitting", message=message)


def calibration_caveats(dst: Architecture, data: ImageData, normalization: Normalization) -> list[Caveat]:
    """What the calibration data shows: classes it never labels, and statistics the set's normalization does not fit.
    `data` holds the images as loaded for the descendant (its size and channels)."""
    out = []
    if data.labels is not None and len(data):
        seen = int(data.labels.max()) + 1
        if seen < dst.num_classes:
            out.append(Caveat(code="classes_beyond_calibration", message=(
                f"the calibration labels go up to class {seen - 1} but num_classes={dst.num_classes}: the head rows of "
                f"classes {seen}-{dst.num_classes - 1} get no training signal"
            )))  # fmt: skip
    if len(data):
        own = channel_stats(data.images[:STATS_SAMPLES])  # a seeded subset already: its head is a random sample
        mean, std = own.mean, tuple(max(s, 1e-6) for s in own.std)
        norm = normalization.for_channels(dst.in_chans)
        off = any(
            abs(m - nm) / ns > MEAN_TOLERANCE or not 1 / STD_RATIO_TOLERANCE <= s / ns <= STD_RATIO_TOLERANCE
            for m, s, nm, ns in zip(mean, std, norm.mean, norm.std, strict=True)
        )
        if off:
            out.append(Caveat(code="normalization", message=(
                f"inputs are normalized with the template set's mean {_values(norm.mean)}, std {_values(norm.std)}, "
                f"not the calibration data's own mean {_values(mean)}, std {_values(std)}: the "
                "descendant sees inputs off the distribution it was condensed on; normalize with the set's "
                "statistics (the checkpoint's config.json) when using it"
            )))  # fmt: skip
    return out
