"""Any width, head count and MLP ratio from a WAVE template set (issue 15): composed at the next multiple of the set's
width and indexed down inside the fitted graph (`learngene.layers.select`)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from learngene.errors import SpecError
from learngene.fit_settings import FitSettings
from learngene.formats.checkpoint import export_checkpoint
from learngene.layers.select import WidthSelection, coverage
from learngene.layers.templates import DEFAULT_COUNTS, SLOTS
from learngene.methods import check_method
from learngene.methods.wave import inherit as inheritance
from learngene.methods.wave.fit import fit_scalers
from learngene.methods.wave.inherit import inherit
from tests.support.models import aux_logits, random_template_set, tiny_spec

AUX = tiny_spec(embed_dim=64, num_heads=2, depth=2)  # D0 = 64, head_dim 32, MLP hidden 256


@pytest.fixture(scope="module")
def template_set():
    return random_template_set(AUX, seed=7)


@pytest.fixture(scope="module")
def images():
    return torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))


ODD = [
    dict(embed_dim=96, num_heads=3),  # 1.5 x D0, head_dim kept
    dict(embed_dim=96, num_heads=2, mlp_ratio=3.0),  # head_dim 48: heads straddle auxiliary heads
    dict(embed_dim=160, num_heads=5, mlp_ratio=2.0),
    dict(embed_dim=200, num_heads=4, mlp_ratio=4.5),  # head_dim 50, hidden 900
    dict(embed_dim=320, num_heads=10, mlp_ratio=6.0),
    dict(embed_dim=48, num_heads=4, mlp_ratio=1.5),  # narrower than D0: Weight Selection's case
    dict(embed_dim=64, num_heads=2, mlp_ratio=7.0),  # the set's width, hidden 1.75 x M0
]


@pytest.mark.parametrize("overrides", ODD, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_odd_sizes_export_plain_timm_checkpoints(template_set, images, tmp_path, overrides):
    spec = tiny_spec(depth=3, **overrides)
    descendant = inherit(template_set, spec, seed=1).eval()
    assert descendant.selection is not None
    info = export_checkpoint(descendant, tmp_path / "odd.safetensors", spec=spec)
    model = spec.build()
    model.load_state_dict(load_file(info.path), strict=True)
    with torch.no_grad():
        exported, generated = model.eval()(images), descendant(images)
    assert torch.isfinite(exported).all() and exported.shape == (4, 10)
    assert torch.equal(exported, generated)  # the generating form computes what is exported


def test_untemplated_block_parameters_follow_the_same_selection(images, tmp_path):
    counts = {kind: (count if SLOTS[kind].is_matrix else 0) for kind, count in DEFAULT_COUNTS.items()}
    partly = random_template_set(AUX, seed=3, template_counts=counts)
    spec = tiny_spec(depth=3, embed_dim=96, num_heads=3, mlp_ratio=3.0)
    descendant = inherit(partly, spec, seed=1).eval()
    model = spec.build()
    model.load_state_dict(descendant.materialized_state(), strict=True)
    with torch.no_grad():
        assert torch.equal(model.eval()(images), descendant(images))
    bias = descendant.vit.state_dict()["blocks.0.mlp.fc1.bias"]  # tile-major: tile 0 of copy 0 comes first
    torch.testing.assert_close(bias[:2], partly.free["blocks.0.mlp.fc1.bias"][:2])


def test_the_rule_is_deterministic(template_set):
    spec = tiny_spec(depth=3, embed_dim=160, num_heads=5, mlp_ratio=3.0)
    a, b = inherit(template_set, spec, noise=1e-3, seed=4), inherit(template_set, spec, noise=1e-3, seed=4)
    sa, sb = a.materialized_state(), b.materialized_state()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_index_sets_keep_every_channel_head_and_unit():
    """1.5 x D0 with the auxiliary head_dim: copy 0 whole, then every other channel of copy 1; whole heads for q/k/v."""
    assert coverage(2, 4, 6).tolist() == [0, 1, 2, 3, 4, 6]
    src, dst = AUX.resolve(), tiny_spec(embed_dim=96, num_heads=3).resolve()
    selection = WidthSelection(src, dst, size=64)
    assert selection.width.tolist() == [*range(64), *range(64, 128, 2)]
    assert selection.inner.tolist() == list(range(96))  # auxiliary heads 0, 1 of copy 0 and head 0 of copy 1
    assert selection.qkv.tolist() == [*range(96), *range(128, 224), *range(256, 352)]
    assert selection.scales["width"].tolist() == selection.scales["inner"].tolist() == [1.0, 1.0]  # a whole copy
    narrow = WidthSelection(src, tiny_spec(embed_dim=16, num_heads=1, mlp_ratio=2.0).resolve(), size=64)
    assert narrow.width.tolist() == list(range(0, 64, 4))
    assert narrow.inner.tolist() == list(range(0, 32, 2))  # half of auxiliary head 0, uniformly
    assert narrow.scales["width"].tolist() == narrow.scales["inner"].tolist() == [4.0]  # unbiased: 64 / 16
    assert narrow.scales["hidden"].tolist() == [8.0]  # 256 / 32
    assert selection.hidden.numel() == 384 and selection.hidden.unique().numel() == 384
    assert ((selection.hidden // 64) % 2 == 0).sum() == 256  # every auxiliary hidden unit, once more for half


@pytest.mark.parametrize(("embed_dim", "num_heads", "mlp_ratio"), [(128, 4, 4.0), (64, 2, 4.0), (192, 6, 4.0)])
def test_the_general_rule_is_the_exact_rule_at_multiples(template_set, monkeypatch, embed_dim, num_heads, mlp_ratio):
    """Forced through the selection path, a multiple width gives today's weights bit for bit (noise 0)."""
    spec = tiny_spec(depth=3, embed_dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio)
    exact = inherit(template_set, spec, noise=0.0)
    assert exact.selection is None
    monkeypatch.setattr(inheritance, "select_width", lambda src, dst, size: WidthSelection(src, dst, size))
    general = inherit(template_set, spec, noise=0.0)
    assert general.selection is not None
    a, b = exact.materialized_state(), general.materialized_state()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("embed_dim", "num_heads", "mlp_ratio"), [(64, 2, 8.0), (128, 4, 2.0), (128, 4, 6.0)])
def test_another_mlp_ratio_at_a_multiple_width_preserves_the_function(
    template_set, images, embed_dim, num_heads, mlp_ratio
):
    """Hidden copies paired with width copies (`copy_mixing`): each hidden copy reads one residual copy, each residual
    copy averages the hidden copies it reads, so at noise 0 the logits are the auxiliary model's."""
    reference = aux_logits(template_set, images)
    spec = tiny_spec(depth=2, embed_dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio)
    descendant = inherit(template_set, spec, noise=0.0)
    assert descendant.selection is None
    with torch.no_grad():
        assert (descendant.eval()(images) - reference).abs().max() < 1e-4


def test_fitting_through_the_selection_lowers_the_calibration_loss(template_set, fmnist_train):
    descendant = inherit(template_set, tiny_spec(depth=2, embed_dim=96, num_heads=3), seed=0)
    images, labels = torch.randn(16, 1, 28, 28), torch.arange(16) % 10
    loss = torch.nn.functional.cross_entropy(descendant(images), labels)
    loss.backward()
    for kind, scalers in descendant.weight_scalers.tensors.items():  # the gradient reaches the partial copy too
        assert scalers.grad is not None and scalers.grad[..., -1].abs().sum() > 0, kind
    descendant.zero_grad()
    report = fit_scalers(descendant, fmnist_train, FitSettings(steps=15, batch_size=32, lr=5e-3), eval_samples=256)
    assert report.calibration_loss_after < report.calibration_loss_before - 0.05


def test_admission_accepts_any_width_timm_builds_and_names_the_field_otherwise(template_set):
    config = template_set.config
    assert check_method("wave", tiny_spec(embed_dim=96, num_heads=2), template_config=config).embed_dim == 96
    with pytest.raises(SpecError) as info:
        check_method("wave", tiny_spec(embed_dim=97, num_heads=2), template_config=config)
    assert info.value.field in ("embed_dim", "num_heads") and "not divisible" in str(info.value)
