"""Descendants whose width, MLP hidden size or head size is not a multiple of the template set's (issue 15; METHOD.md,
Inheritance 3; the details are [ours]).

The descendant (width D, MLP hidden M, head size h) of a set of width D0, hidden M0 and head size h0 is composed at
K = ceil(D / D0) times the set's width and Kh = ceil(M / M0) times its hidden size by the exact rule
(`templates.widen`, with `copy_mixing` when K != Kh), where every axis is copies of the auxiliary one, and its
weights are indexed down to the requested shape after every composition, so the selection is inside the graph the
scalers are fitted through. Each index set takes whole copies first, then
Weight Selection's uniform rule inside the next copy (`coverage`): every auxiliary channel, head and hidden unit is
kept at least once, and the partial copy is an even sample of the auxiliary one, so LayerNorm statistics hardly move.

- residual stream: the same D indices for every weight and vector that reads or writes it (patch embedding, position
  embedding, class token, norms, qkv and fc1 columns, proj and fc2 rows, the head's columns);
- attention: q, k and v rows (and proj columns) take the same indices, made of whole auxiliary heads: with h = h0
  every descendant head is one auxiliary head, with h = m * h0 it is m whole heads; otherwise the heads cut the
  stream of whole heads where they fall (the last auxiliary head cut uniformly when h0 does not divide D);
- MLP: fc1 rows, fc1 bias and fc2 columns take the same M hidden units.

A matrix whose input axis is narrower than the auxiliary one (D < D0, M < M0) is scaled by (auxiliary size / size),
so that its output stays an unbiased estimate of the full one (`WidthSelection.input_scale`); wider axes are not
scaled (the whole copies carry the signal). The head is divided by D / D0.
When D = K * D0 and M = Kh * M0 nothing is indexed or scaled: `select_width` returns None, and inheritance is
today's exact rule, bit for bit when also K = Kh (and exact in function for another MLP ratio).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from learngene.spec import Architecture


def uniform_indices(total: int, size: int) -> Tensor:
    """Weight Selection's index rule: arange(size) * (total // size) when it divides, else round(linspace)."""
    if size > total:
        raise ValueError(f"cannot select {size} of {total} elements")
    if total % size == 0:
        return torch.arange(size) * (total // size)
    return torch.linspace(0, total - 1, size).round().long()


def coverage(copies: int, unit: int, size: int) -> Tensor:
    """`size` positions of `copies` consecutive copies of `unit` positions: whole copies first, then Weight
    Selection's uniform rule inside the next copy. Sorted; all positions when `size == copies * unit`."""
    full, rest = divmod(size, unit)
    if full + (rest > 0) > copies:
        raise ValueError(f"cannot select {size} of {copies} x {unit} positions")
    parts = [torch.arange(full * unit)]
    if rest:
        parts.append(full * unit + uniform_indices(unit, rest))
    return torch.cat(parts)


def factors(src: Architecture, dst: Architecture) -> tuple[int, int]:
    """(K, Kh): how many times the set's width and MLP hidden size the descendant is composed at before selection."""
    return math.ceil(dst.embed_dim / src.embed_dim), math.ceil(dst.mlp_hidden / src.mlp_hidden)


def widen_residual(t: Tensor, dim: int, d0: int, d: int) -> Tensor:
    """A free tensor whose axis `dim` is the residual stream, from width d0 to d: tiled, then the residual indices."""
    k = math.ceil(d / d0)
    t = torch.cat([t] * k, dim=dim) if k > 1 else t
    return t if d == k * d0 else t.index_select(dim, coverage(k, d0, d))


def _scale(copy_of: Tensor, copies: int, unit: int) -> Tensor:
    """Per copy, the factor on the blocks that read it: unit / positions kept when the axis is narrower than the
    auxiliary one (only part of copy 0 is kept), else 1 (measured: with a whole copy kept, scaling the partial one
    up costs accuracy; without one, it helps; see the README's method notes)."""
    scale = torch.ones(copies, dtype=torch.float64)
    if copy_of.numel() < unit:
        scale[0] = unit / copy_of.numel()
    return scale


class WidthSelection(nn.Module):
    """The index sets into the composed weights (buffers, so they follow the model to its device)."""

    width: Tensor
    qkv: Tensor
    inner: Tensor
    hidden: Tensor
    gated: Tensor

    def __init__(self, src: Architecture, dst: Architecture, size: int):
        super().__init__()
        (k, kh), d0, m0, h0 = factors(src, dst), src.embed_dim, src.mlp_hidden, src.head_dim
        d, m = dst.embed_dim, dst.mlp_hidden
        width = coverage(k, d0, d)
        heads = coverage(k, src.num_heads, math.ceil(d / h0))
        channels = list(heads[:, None] * h0 + torch.arange(h0))  # per head, its channels
        if d % h0:
            channels[-1] = channels[-1][uniform_indices(h0, d % h0)]
        inner = torch.cat(channels)
        units = coverage(kh, m0, m)  # position copy * m0 + unit; the widened hidden axis is tile-major
        copy, unit = units // m0, units % m0
        hidden = torch.sort((unit // size) * (kh * size) + copy * size + unit % size).values
        # fc1's rows: the hidden units, and in a GLU MLP the same units of its gate half (Axis.GATED)
        gated = torch.cat([hidden + g * kh * m0 for g in range(src.mlp_gates)])
        for name, value in (("width", width), ("inner", inner), ("hidden", hidden), ("gated", gated)):
            self.register_buffer(name, value, persistent=False)
        self.register_buffer("qkv", torch.cat([inner + i * k * d0 for i in range(3)]), persistent=False)
        self.scales = {
            "width": _scale(width // d0, k, d0),
            "inner": _scale(inner // d0, k, d0),
            "hidden": _scale((hidden // size) % kh, kh, m0),
        }

    def axes(self, kind: str) -> tuple[str, ...]:
        """The index set of each axis of a block parameter: (rows, columns) or (length,)."""
        return {
            "qkv": ("qkv", "width"),
            "proj": ("width", "inner"),
            "fc1": ("gated", "width"),
            "fc2": ("width", "hidden"),
            "qkv_bias": ("qkv",),
            "fc1_bias": ("gated",),
            "attn_norm_weight": ("inner",),
            "attn_norm_bias": ("inner",),
            "mlp_norm_weight": ("hidden",),
            "mlp_norm_bias": ("hidden",),
            # qk-norm's vectors: one head, the same in every head (a descendant keeps the set's head size)
            "q_norm_weight": (),
            "q_norm_bias": (),
            "k_norm_weight": (),
            "k_norm_bias": (),
        }.get(kind, ("width",))

    def input_scale(self, kind: str) -> Tensor | None:
        """Per copy, the factor a matrix's blocks reading that copy are scaled by (None for vectors)."""
        axes = self.axes(kind)
        return self.scales[axes[1]] if len(axes) == 2 else None

    def select(self, kind: str, weights: Tensor) -> Tensor:
        """Composed weights of one kind, (L, rows[, cols]) at K * D0, indexed to the descendant's shape. (Not named
        `apply`: that is nn.Module's, which `model.apply(fn)` calls on every submodule.)"""
        for dim, name in enumerate(self.axes(kind), start=1):
            weights = weights.index_select(dim, getattr(self, name))
        return weights


def select_width(src: Architecture, dst: Architecture, size: int) -> WidthSelection | None:
    """The selection for `dst`, or None when `dst` is an exact multiple (today's rule, nothing indexed)."""
    k, kh = factors(src, dst)
    if dst.embed_dim == k * src.embed_dim and dst.mlp_hidden == kh * src.mlp_hidden:
        return None
    return WidthSelection(src, dst, size)
