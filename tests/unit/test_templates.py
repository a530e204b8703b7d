"""Eq. 4 and the scaler operations of inheritance, checked against their definitions."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from learngene.layers.templates import SLOTS, Axis, compose, deepen, depth_interpolation, widen


@settings(max_examples=60, deadline=None)
@given(
    L=st.integers(1, 4),
    N=st.integers(1, 5),
    R=st.integers(1, 4),
    C=st.integers(1, 4),
    a=st.integers(1, 6),
    b=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_compose_equals_sum_of_kronecker_products(L, N, R, C, a, b, seed):
    g = torch.Generator().manual_seed(seed)
    scalers, templates = torch.randn(L, N, R, C, generator=g), torch.randn(N, a, b, generator=g)
    explicit = torch.stack([sum(torch.kron(scalers[layer, i], templates[i]) for i in range(N)) for layer in range(L)])
    assert explicit.shape == (L, R * a, C * b)
    torch.testing.assert_close(compose(scalers, templates), explicit, rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    L=st.integers(1, 4),
    N=st.integers(1, 5),
    R=st.integers(1, 6),
    a=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
def test_vector_compose_equals_sum_of_kronecker_products(L, N, R, a, seed):
    g = torch.Generator().manual_seed(seed)
    scalers, templates = torch.randn(L, N, R, generator=g), torch.randn(N, a, generator=g)
    explicit = torch.stack([sum(torch.kron(scalers[layer, i], templates[i]) for i in range(N)) for layer in range(L)])
    torch.testing.assert_close(compose(scalers, templates), explicit, rtol=1e-5, atol=1e-5)


def test_tile_uv_is_weighted_sum_of_templates():
    scalers, templates = torch.randn(1, 3, 2, 2), torch.randn(3, 4, 4)
    w = compose(scalers, templates)[0]
    tile = w[4:8, 0:4]  # tile (u=1, v=0)
    torch.testing.assert_close(tile, torch.einsum("n,nab->ab", scalers[0, :, 1, 0], templates))


def test_depth_interpolation_endpoints_and_rows():
    assert torch.equal(depth_interpolation(5, 5), torch.eye(5, dtype=torch.float64))
    m = depth_interpolation(4, 7)
    torch.testing.assert_close(m.sum(1), torch.ones(7, dtype=torch.float64))
    assert m[0, 0] == 1 and m[-1, -1] == 1  # first and last layers are kept
    assert torch.allclose(m[1], torch.tensor([0.5, 0.5, 0, 0], dtype=torch.float64))  # p = 0.5
    single = depth_interpolation(6, 1)
    assert single.tolist() == [[1.0, 0, 0, 0, 0, 0]]
    s = torch.randn(4, 2, 3)
    torch.testing.assert_close(deepen(s, 7)[1], 0.5 * (s[0] + s[1]))


@settings(max_examples=30, deadline=None)
@given(
    k=st.integers(1, 4),
    c=st.integers(1, 3),
    r=st.integers(1, 4),
    n=st.integers(1, 3),
    seed=st.integers(0, 999),
)
def test_widened_weights_act_on_tiled_inputs_like_the_original(k, c, r, n, seed):
    """For every kind, the widened weight maps the k-fold tiled input to the tiled output (the layout contract)."""
    g = torch.Generator().manual_seed(seed)
    a = 2
    d0, h0 = c * a, r * c * a  # width and MLP hidden size of the source, in units of a-tiles
    templates = torch.randn(n, a, a, generator=g)
    sizes = {Axis.WIDTH: d0, Axis.QKV: 3 * d0, Axis.HIDDEN: h0, Axis.GATED: h0}  # GATED: a plain MLP's fc1 rows
    for kind in ("qkv", "proj", "fc1", "fc2"):
        slot = SLOTS[kind]
        rows, cols = (sizes[ax] // a for ax in slot.axes)
        s = torch.randn(1, n, rows, cols, generator=g)
        w, w_wide = compose(s, templates)[0], compose(widen(s, slot, k), templates)[0]
        x = torch.randn(cols * a, generator=g)
        x_wide = _tile(x, slot.axes[1], k, d0, a)
        torch.testing.assert_close(w_wide @ x_wide, _tile(w @ x, slot.axes[0], k, d0, a), rtol=1e-4, atol=1e-4)


def _tile(v: torch.Tensor, axis: Axis, k: int, d0: int, a: int) -> torch.Tensor:
    """The widened layout of a vector on `axis`: [x; x; ...] per group of the axis."""
    if axis is Axis.WIDTH:
        return v.repeat(k)
    if axis is Axis.QKV:
        return torch.cat([g.repeat(k) for g in v.split(d0)])
    return torch.cat([t.repeat(k) for t in v.split(a)])  # HIDDEN, GATED: every tile is its own group


def test_widen_vectors_repeats_each_group():
    s = torch.arange(6.0).view(1, 1, 6)  # qkv bias scalers: 3 groups of 2 tiles
    out = widen(s, SLOTS["qkv_bias"], 2)
    assert out.view(-1).tolist() == [0, 1, 0, 1, 2, 3, 2, 3, 4, 5, 4, 5]
    proj = widen(torch.tensor([[[7.0]]]), SLOTS["proj_bias"], 3)
    assert proj.view(-1).tolist() == [7, 7, 7]


def test_widen_matrix_is_block_identity_for_single_tile_groups():
    s = torch.tensor([[[[2.0]]]])  # proj with D0 = a
    out = widen(s, SLOTS["proj"], 3)[0, 0]
    assert torch.equal(out, 2.0 * torch.eye(3))
    qkv = torch.tensor([[[[1.0], [2.0], [3.0]]]])  # S[g, 0] for g in q, k, v
    out = widen(qkv, SLOTS["qkv"], 2)[0, 0]
    expected = torch.cat([v * torch.eye(2) for v in (1.0, 2.0, 3.0)])
    assert torch.equal(out, expected)
