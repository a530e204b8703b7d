"""Weight templates and weight scalers (WAVE, Eq. 4), and the operations on scalers used by inheritance.

A weight of kind k in layer l is  W_k^(l) = sum_i S_{k,i}^(l) (x) T_{k,i}  (Kronecker product, scaler on the left),
so W is a grid of a x a tiles and tile (u, v) is sum_i S_{k,i}^(l)[u, v] * T_{k,i}. 1-D parameters (biases, norms)
are built the same way from length-a templates. Shapes used throughout:

    matrix templates (N, a, a)    matrix scalers (L, N, R, C)    ->  weights (L, R*a, C*a)
    vector templates (N, a)       vector scalers (L, N, R)       ->  vectors (L, R*a)

where R, C count tiles. See METHOD.md, "Weight templates and scalers" and "Inheritance".
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn

from learngene.errors import IntegrityError, SpecError, UserError
from learngene.spec import Architecture


class Axis(enum.Enum):
    """How one axis of a block weight is laid out, which decides how its scaler grid is grouped when widening.

    WIDTH: the residual stream (D); one group, so widening by k tiles the whole D0-vector k times.
    QKV:   q, k and v stacked (3D); three groups, each widened like WIDTH, so q/k/v and their heads stay apart.
    HIDDEN: the MLP hidden layer; every tile is its own group. Any layout works here as long as fc1's rows and
            fc2's columns agree, and per-tile groups allow any hidden size that is a multiple of the tile.
    GATED:  fc1's rows: the hidden layer, or in a GLU MLP its value and gate halves stacked (2M). Per-tile groups
            like HIDDEN: each half is widened tile by tile in place, so value and gate rows stay paired and both
            keep the order of fc2's columns.
    HEAD:   one attention head (qk-norm's vectors): never widened, since every copied head keeps its size.
    """

    WIDTH = "width"
    QKV = "qkv"
    HIDDEN = "hidden"
    GATED = "gated"
    HEAD = "head"

    def size(self, arch: Architecture) -> int:
        sizes = {
            Axis.WIDTH: arch.embed_dim,
            Axis.QKV: 3 * arch.embed_dim,
            Axis.HIDDEN: arch.mlp_hidden,
            Axis.GATED: arch.mlp_gates * arch.mlp_hidden,
            Axis.HEAD: arch.head_dim,
        }
        return sizes[self]

    def groups(self, tiles: int) -> int:
        return {Axis.WIDTH: 1, Axis.QKV: 3, Axis.HIDDEN: tiles, Axis.GATED: tiles, Axis.HEAD: tiles}[self]

    @property
    def is_hidden(self) -> bool:
        return self in (Axis.HIDDEN, Axis.GATED)


@dataclass(frozen=True)
class Slot:
    """One kind of templated block parameter: where it lives in a timm `Block` and the layout of its axes."""

    kind: str
    param: str
    axes: tuple[Axis, ...]  # (rows, cols) for matrices, (length,) for vectors
    needs: str | None = None  # the `Architecture` flag without which a block has no such parameter
    unit: bool = False  # a gain whose neutral value is 1 (norm weights, layer-scale gammas), not 0
    scales: tuple[str, ...] = ()  # layer scale: the kinds whose rows it multiplies, folded into them when absent

    @property
    def is_matrix(self) -> bool:
        return len(self.axes) == 2

    def present(self, arch: Architecture) -> bool:
        """Whether a block of `arch` has this parameter (`learngene.families`)."""
        return self.needs is None or bool(getattr(arch, self.needs))

    def grid(self, arch: Architecture, size: int) -> tuple[int, ...]:
        """Scaler grid (tiles per axis) of this parameter in `arch` with templates of side `size`."""
        return tuple(axis.size(arch) // size for axis in self.axes)


SLOTS: dict[str, Slot] = {
    s.kind: s
    for s in (
        Slot("qkv", "attn.qkv.weight", (Axis.QKV, Axis.WIDTH)),
        Slot("proj", "attn.proj.weight", (Axis.WIDTH, Axis.WIDTH)),
        Slot("fc1", "mlp.fc1.weight", (Axis.GATED, Axis.WIDTH)),
        Slot("fc2", "mlp.fc2.weight", (Axis.WIDTH, Axis.HIDDEN)),
        Slot("norm1_weight", "norm1.weight", (Axis.WIDTH,), unit=True),
        Slot("norm1_bias", "norm1.bias", (Axis.WIDTH,)),
        Slot("qkv_bias", "attn.qkv.bias", (Axis.QKV,), needs="qkv_bias"),
        Slot("proj_bias", "attn.proj.bias", (Axis.WIDTH,), needs="proj_bias"),
        Slot("norm2_weight", "norm2.weight", (Axis.WIDTH,), unit=True),
        Slot("norm2_bias", "norm2.bias", (Axis.WIDTH,)),
        Slot("fc1_bias", "mlp.fc1.bias", (Axis.GATED,), needs="mlp_bias"),
        Slot("fc2_bias", "mlp.fc2.bias", (Axis.WIDTH,), needs="mlp_bias"),
        # Layer scale (DeiT-3, DINOv2): x + gamma * f(x); gamma multiplies the rows of the layer before it.
        Slot("ls1_gamma", "ls1.gamma", (Axis.WIDTH,), needs="layer_scale", unit=True, scales=("proj", "proj_bias")),
        Slot("ls2_gamma", "ls2.gamma", (Axis.WIDTH,), needs="layer_scale", unit=True, scales=("fc2", "fc2_bias")),
        # A norm inside attention (over its output, before proj) or the MLP (over the hidden layer; EVA-02 B/L).
        Slot("attn_norm_weight", "attn.norm.weight", (Axis.WIDTH,), needs="attn_norm", unit=True),
        Slot("attn_norm_bias", "attn.norm.bias", (Axis.WIDTH,), needs="attn_norm"),
        Slot("mlp_norm_weight", "mlp.norm.weight", (Axis.HIDDEN,), needs="mlp_norm", unit=True),
        Slot("mlp_norm_bias", "mlp.norm.bias", (Axis.HIDDEN,), needs="mlp_norm"),
        # qk-norm: a LayerNorm over each head of q and of k (the same vector for every head).
        Slot("q_norm_weight", "attn.q_norm.weight", (Axis.HEAD,), needs="qk_norm", unit=True),
        Slot("q_norm_bias", "attn.q_norm.bias", (Axis.HEAD,), needs="qk_norm"),
        Slot("k_norm_weight", "attn.k_norm.weight", (Axis.HEAD,), needs="qk_norm", unit=True),
        Slot("k_norm_bias", "attn.k_norm.bias", (Axis.HEAD,), needs="qk_norm"),
    )
}

# The paper's counts for DeiT (its Table 8): qkv 6, proj 2, fc1 8, fc2 8 matrices; 4 of each vector kind
# (layer scale and the inner norms [ours]: 4 like every other vector kind). [ours] qk-norm's head-size vectors are
# not templated by default: the template side is D0 by default, longer than a head, so they stay per-layer free
# parameters of the auxiliary model (4 x head_dim numbers a layer); a set of side a dividing the head size may
# template them.
_MATRIX_COUNTS = {"qkv": 6, "proj": 2, "fc1": 8, "fc2": 8}
DEFAULT_COUNTS: dict[str, int] = {
    kind: _MATRIX_COUNTS[kind] if slot.is_matrix else 0 if Axis.HEAD in slot.axes else 4 for kind, slot in SLOTS.items()
}


class TemplateConfig(BaseModel):
    """Template side `size` (a) and how many templates each kind has; a kind with count 0 is not templated."""

    model_config = ConfigDict(frozen=True)

    size: int = Field(ge=1, description="side a of every matrix template and length of every vector template")
    counts: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_COUNTS))

    @field_validator("counts")
    @classmethod
    def _known_kinds(cls, counts: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(counts) - set(SLOTS))
        if unknown:
            raise UserError(f"unknown template kinds {unknown}; known: {sorted(SLOTS)}")
        if any(n < 0 for n in counts.values()):
            raise UserError("template counts must be >= 0")
        return {k: n for k, n in counts.items() if n > 0}

    def slots(self) -> list[Slot]:
        """The templated slots, in a fixed order."""
        return [slot for kind, slot in SLOTS.items() if kind in self.counts]

    def for_arch(self, arch: Architecture) -> TemplateConfig:
        """These templates with the kinds a block of `arch` lacks left out (no qkv bias, no layer scale, ...)."""
        counts = {kind: n for kind, n in self.counts.items() if SLOTS[kind].present(arch)}
        return self if counts == self.counts else self.model_copy(update={"counts": counts})

    def check(self, arch: Architecture, *, what: str = "embed_dim") -> None:
        """Raise `SpecError` unless every templated parameter of `arch` is a whole number of tiles."""
        a = self.size
        if arch.embed_dim % a:
            raise SpecError(what, f"embed_dim={arch.embed_dim} is not a multiple of the template size {a}")
        if arch.mlp_hidden % a and any(axis.is_hidden for s in self.slots() for axis in s.axes):
            raise SpecError(
                "mlp_ratio",
                f"the MLP hidden size {arch.mlp_hidden} is not a multiple of the template size {a}",
            )
        if arch.head_dim % a and any(Axis.HEAD in s.axes for s in self.for_arch(arch).slots()):
            raise SpecError(
                "template_counts",
                f"qk-norm's vectors have the head size {arch.head_dim}, not a multiple of the template size {a}: "
                "leave their kinds untemplated (count 0)",
            )


def compose(scalers: Tensor, templates: Tensor) -> Tensor:
    """Eq. 4 for all layers at once, without materializing N Kronecker products.

    (L, N, R, C) x (N, a, b) -> (L, R*a, C*b)   or   (L, N, R) x (N, a) -> (L, R*a).
    One contraction over N (a batched matmul) and a permute; no Python loop over layers or templates.
    """
    if scalers.dim() == 4:
        L, _, R, C = scalers.shape
        _, a, b = templates.shape
        return torch.einsum("lnrc,nab->lracb", scalers, templates).reshape(L, R * a, C * b)
    L, _, R = scalers.shape
    return torch.einsum("lnr,na->lra", scalers, templates).reshape(L, R * templates.shape[-1])


class WeightTemplates(nn.Module):
    """The learngene of WAVE: the shared templates of every templated kind."""

    def __init__(self, config: TemplateConfig):
        super().__init__()
        self.config = config
        a = config.size
        self.tensors = nn.ParameterDict(
            {
                s.kind: nn.Parameter(
                    torch.zeros((config.counts[s.kind], a, a) if s.is_matrix else (config.counts[s.kind], a))
                )
                for s in config.slots()
            }
        )

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """[ours] trunc-normal(0.02) like timm's Linear init; the templates of a gain (norm weights, layer scale)
        start with one all-ones template."""
        with torch.no_grad():
            for kind, t in self.tensors.items():
                nn.init.trunc_normal_(t, std=0.02, generator=generator)
                if SLOTS[kind].unit:
                    t[0].fill_(1.0)


class WeightScalers(nn.Module):
    """Per-layer scalers of one architecture (depth L, tile grid given by the width)."""

    def __init__(self, config: TemplateConfig, arch: Architecture):
        super().__init__()
        config.check(arch)
        self.config = config
        self.tensors = nn.ParameterDict(
            {
                s.kind: nn.Parameter(torch.zeros(arch.depth, config.counts[s.kind], *s.grid(arch, config.size)))
                for s in config.slots()
            }
        )

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """[ours] Matrix scalers ~ N(0, 1/N) so that W has the variance of a single template (std 0.02);
        gains (norm weights, layer scale) start at 1 (scaler 1 on the all-ones template), biases at 0."""
        with torch.no_grad():
            for kind, s in self.tensors.items():
                n = s.shape[1]
                if SLOTS[kind].is_matrix:
                    s.normal_(0.0, 1.0 / math.sqrt(n), generator=generator)
                else:
                    s.zero_()
                    if SLOTS[kind].unit:
                        s[:, 0].fill_(1.0)

    def load(self, tensors: dict[str, Tensor]) -> None:
        """Copy scaler values in, checking every kind and shape."""
        missing = set(self.tensors) - set(tensors)
        if missing:
            raise IntegrityError(f"scalers missing for kinds {sorted(missing)}")
        with torch.no_grad():
            for kind, p in self.tensors.items():
                if tensors[kind].shape != p.shape:
                    raise IntegrityError(
                        f"scalers[{kind}] has shape {tuple(tensors[kind].shape)}, expected {tuple(p.shape)}"
                    )
                p.copy_(tensors[kind])


def depth_interpolation(source_depth: int, target_depth: int) -> Tensor:
    """(target_depth, source_depth) matrix of linear-initialization weights (METHOD.md, Inheritance 1).

    Target layer j sits at p = j * (L0 - 1) / (L' - 1) in the source stack (p = 0 for a single layer) and mixes
    layers floor(p) and ceil(p). For L' = L0 this is the identity.
    """
    m = torch.zeros(target_depth, source_depth, dtype=torch.float64)
    for j in range(target_depth):
        p = 0.0 if target_depth == 1 else j * (source_depth - 1) / (target_depth - 1)
        lo = math.floor(p)
        frac = p - lo
        hi = min(lo + 1, source_depth - 1)
        m[j, lo] += 1.0 - frac
        m[j, hi] += frac
    return m


def deepen(scalers: Tensor, target_depth: int) -> Tensor:
    """Scalers (L0, ...) -> (L', ...) by linear interpolation along depth."""
    m = depth_interpolation(scalers.shape[0], target_depth).to(scalers.dtype)
    return torch.einsum("jl,l...->j...", m, scalers)


def copy_mixing(rows: int, cols: int) -> Tensor:
    """(rows, cols): which input copy each output copy of a widened matrix reads. Equal counts: the identity
    (METHOD.md's rule). Otherwise [ours, for an MLP ratio other than the set's]: the larger side's copy i pairs with
    copy i mod n of the smaller side, and an output copy that reads several input copies averages them, so that
    every copy stays exact."""
    m = torch.zeros(rows, cols, dtype=torch.float64)
    for i in range(max(rows, cols)):
        m[i % rows, i % cols] = 1.0
    return m / m.sum(1, keepdim=True)


def widen(
    scalers: Tensor,
    slot: Slot,
    factor: int,
    hidden_factor: int | None = None,
    input_scale: Tensor | None = None,
) -> Tensor:
    """Linear padding of one kind's scalers (L, N, *grid) to `factor` times the width (METHOD.md, Inheritance 2).

    Each group of tiles (see `Axis`) becomes `factor` copies: a matrix block B becomes I_factor (x) B, so the widened
    weight is block-diagonal in copies and maps [x; x; ...] to [Wx; Wx; ...]; a vector group g becomes [g; g; ...].
    For sizes that are not multiples (`learngene.layers.select`): the MLP hidden axis may get `hidden_factor` copies
    (`copy_mixing` pairs them with the width's), and `input_scale` (one factor per input copy) scales the blocks.
    """
    factors = [
        1 if axis is Axis.HEAD else hidden_factor if axis.is_hidden and hidden_factor else factor for axis in slot.axes
    ]
    if max(factors) == 1 and input_scale is None:
        return scalers
    lead = scalers.shape[:2]
    if slot.is_matrix:
        R, C = scalers.shape[2:]
        (fr, fc), gr, gc = factors, slot.axes[0].groups(R), slot.axes[1].groups(C)
        blocks = scalers.reshape(*lead, gr, R // gr, gc, C // gc)
        if fr == fc:
            mixing = torch.eye(fr, dtype=scalers.dtype, device=scalers.device)
        else:
            mixing = copy_mixing(fr, fc).to(scalers)
        if input_scale is not None:
            mixing = mixing * input_scale.to(mixing)
        return torch.einsum("lnaubv,ij->lnaiubjv", blocks, mixing).reshape(*lead, R * fr, C * fc)
    ((R,), (f,)) = scalers.shape[2:], factors
    g = slot.axes[0].groups(R)
    grouped = scalers.reshape(*lead, g, 1, R // g)
    return grouped.expand(*lead, g, f, R // g).reshape(*lead, R * f)


def tiles_of(weights: Tensor, slot: Slot, size: int) -> Tensor:
    """Block weights (L, m1[, m2]) cut into the tile grid Eq. 4 composes: (L, R, C, a, a) or (L, R, a).
    The inverse of `compose` for one template per tile."""
    if slot.is_matrix:
        L, m1, m2 = weights.shape
        return weights.reshape(L, m1 // size, size, m2 // size, size).permute(0, 1, 3, 2, 4)
    L, m = weights.shape
    return weights.reshape(L, m // size, size)


def untile(tiles: Tensor, slot: Slot) -> Tensor:
    """The inverse of `tiles_of`: (L, R, C, a, a) -> (L, R*a, C*a), or (L, R, a) -> (L, R*a)."""
    if slot.is_matrix:
        L, R, C, a, b = tiles.shape
        return tiles.permute(0, 1, 3, 2, 4).reshape(L, R * a, C * b)
    L, R, a = tiles.shape
    return tiles.reshape(L, R * a)


def resize_weights(
    weights: Tensor,
    slot: Slot,
    size: int,
    depth: int,
    factor: int,
    hidden_factor: int | None = None,
    input_scale: Tensor | None = None,
) -> Tensor:
    """Block weights of one kind (L0, m1[, m2]) to another depth and `factor` times the width, by the rules the
    scalers follow (`deepen`, then `widen`). A weight is Eq. 4 with one standard-basis template per tile entry, so
    its tiles' entries are scalers; used for block parameters a template set does not template."""
    if slot.axes == (Axis.HEAD,):  # never widened, and a head may be shorter than a tile
        return deepen(weights, depth)
    tiles = tiles_of(weights, slot, size)
    if slot.is_matrix:
        L, R, C, a, b = tiles.shape
        as_scalers = tiles.permute(0, 3, 4, 1, 2).reshape(L, a * b, R, C)
        grown = widen(deepen(as_scalers, depth), slot, factor, hidden_factor, input_scale)
        return untile(grown.reshape(depth, a, b, *grown.shape[-2:]).permute(0, 3, 4, 1, 2), slot)
    L, R, a = tiles.shape
    grown = widen(deepen(tiles.permute(0, 2, 1), depth), slot, factor, hidden_factor)  # (L', a, R*k)
    return untile(grown.permute(0, 2, 1), slot)


def templates_from_weights(weights: Tensor, slot: Slot, count: int, size: int) -> tuple[Tensor, Tensor]:
    """The best `count` templates (in Frobenius norm) for a stack of block weights, and the scalers that rebuild
    each layer from them: a PCA over all tiles of all layers. [ours] Used to start condensation from the ancestor.

    Scaled like the random init (templates with the entry scale of trunc-normal(0.02), scalers of order one), so
    AdamW moves both at comparable relative rates. Returns (templates (N, a[, a]), scalers (L, N, R[, C]))."""
    tiles = tiles_of(weights.float(), slot, size)
    grid = tiles.shape[1:-2] if slot.is_matrix else tiles.shape[1:-1]
    flat = tiles.reshape(-1, size * size if slot.is_matrix else size)
    _, _, vh = torch.linalg.svd(flat, full_matrices=False)
    n = min(count, vh.shape[0])
    scale = 0.02 * math.sqrt(flat.shape[1])  # the norm of a trunc-normal(0.02) template
    basis = torch.zeros(count, flat.shape[1])
    basis[:n] = vh[:n]
    coefficients = (flat @ basis.T) / scale  # (tiles, N); rows beyond n stay zero
    templates = (basis * scale).reshape(count, *tiles.shape[-2 if slot.is_matrix else -1 :])
    L = weights.shape[0]
    scalers = coefficients.reshape(L, *grid, count).movedim(-1, 1)
    return templates, scalers
