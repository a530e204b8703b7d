"""Mechanics of every initialization method: TLEG's layer rule, SWS's stage mapping, Weight Selection's index rule,
Mimetic's W_q^T W_k structure, Heru-LG/Auto-LG's layer placement, and which sizes each method refuses."""

from __future__ import annotations

import pytest
import torch

from learngene import CondenseConfig, Normalization, TemplateSet, condense
from learngene.errors import SpecError
from learngene.layers.generated import block_shapes
from learngene.methods import AncestorWeights, build_descendant, check_method
from learngene.methods.baselines import mimetic, select, uniform_indices
from learngene.methods.sws import aux_stage_of_layers, stage_of_layers
from learngene.train.condense import build_auxiliary
from learngene.train.loop import Hooks, OptimConfig, Runtime
from tests.support.models import tiny_spec

NORM = Normalization(mean=(0.5,), std=(0.5,))


def layer_set(method: str, depth: int = 4, **kw) -> TemplateSet:
    config = CondenseConfig(recipe="plain", method=method, aux=tiny_spec(depth=depth), steps=1, **kw)
    aux = build_auxiliary(config, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in aux.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return TemplateSet.from_auxiliary(aux, name=method, normalization=NORM)


# --- TLEG ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 3, 4, 9])
def test_tleg_layer_rule(depth):
    ts = layer_set("tleg")
    learngene = ts.templates
    model = build_descendant("tleg", tiny_spec(depth=depth), template_set=ts)
    state = model.state_dict()
    for i in range(depth):
        for param in ("attn.qkv.weight", "mlp.fc2.bias", "norm1.weight"):
            expected = learngene[f"base.{param}"] + (i / depth) * learngene[f"slope.{param}"]
            torch.testing.assert_close(state[f"blocks.{i}.{param}"], expected)


def test_tleg_auxiliary_generates_by_the_same_rule_and_starts_like_tleg():
    config = CondenseConfig(recipe="plain", method="tleg", aux=tiny_spec(depth=4), steps=1)
    aux = build_auxiliary(config, torch.Generator().manual_seed(0))
    gene = aux.learngene()
    assert torch.equal(gene["base.norm1.weight"], torch.ones(32)) and not gene["slope.norm1.weight"].any()
    assert not gene["base.attn.qkv.bias"].any() and 0.01 < gene["slope.attn.qkv.weight"].std() < 0.03
    weights = aux.generated_weights()
    torch.testing.assert_close(
        weights["blocks.3.mlp.fc1.weight"], gene["base.mlp.fc1.weight"] + 0.75 * gene["slope.mlp.fc1.weight"]
    )
    assert config.ce_weight == 0.0  # TLEG is condensed by pure soft distillation


def test_tleg_and_sws_descendants_inherit_embeddings_but_get_a_new_head():
    ts = layer_set("tleg")
    model = build_descendant("tleg", tiny_spec(depth=2), template_set=ts, seed=3)
    assert torch.equal(model.pos_embed.detach(), ts.free["pos_embed"])
    assert torch.equal(model.norm.weight.detach(), ts.free["norm.weight"])
    assert not torch.equal(model.head.weight.detach(), ts.free["head.weight"])


# --- SWS ----------------------------------------------------------------------------------------------------


def test_sws_stage_mapping():
    assert stage_of_layers(12, 5) == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4]  # METHOD.md's example
    assert stage_of_layers(16, 5) == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert stage_of_layers(5, 5) == [0, 1, 2, 3, 4]
    assert stage_of_layers(2, 5) == [0, 4] and stage_of_layers(1, 5) == [0] and stage_of_layers(3, 5) == [0, 2, 4]
    assert aux_stage_of_layers([3, 3, 4, 3, 3]) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4]


def test_sws_layers_of_a_stage_share_one_parameter_set():
    config = CondenseConfig(recipe="plain", method="sws", aux=tiny_spec(depth=4), stages=[1, 3], steps=1)
    aux = build_auxiliary(config, torch.Generator().manual_seed(0))
    weights = aux.generated_weights()
    assert torch.equal(weights["blocks.1.attn.qkv.weight"], weights["blocks.3.attn.qkv.weight"])
    assert not torch.equal(weights["blocks.0.attn.qkv.weight"], weights["blocks.1.attn.qkv.weight"])
    sum(w.sum() for w in weights.values()).backward()
    grad = aux.stage_params["attn__qkv__weight"].grad
    assert torch.allclose(grad[1], 3 * grad[0])  # three layers feed the gradient of stage 1, one of stage 0
    with pytest.raises(ValueError, match="sum to aux depth 4"):
        CondenseConfig(recipe="plain", method="sws", aux=tiny_spec(depth=4), stages=[3, 3], steps=1)


def test_sws_descendant_copies_its_stage_blocks():
    ts = layer_set("sws", depth=5, stages=[1, 1, 1, 1, 1])
    model = build_descendant("sws", tiny_spec(depth=7), template_set=ts)
    state = model.state_dict()
    for layer, stage in enumerate(stage_of_layers(7, 5)):
        for param in block_shapes(tiny_spec(depth=7)):
            assert torch.equal(state[f"blocks.{layer}.{param}"], ts.templates[f"stage.{param}"][stage])


# --- Weight Selection, Heru-LG, Auto-LG ----------------------------------------------------------------------


def test_weight_selection_index_rule():
    assert uniform_indices(12, 4).tolist() == [0, 3, 6, 9]  # divides: arange(s) * (T // s)
    assert uniform_indices(10, 4).tolist() == [0, 3, 6, 9]  # round(linspace(0, 9, 4)) = 0, 3, 6, 9
    assert uniform_indices(10, 3).tolist() == [0, 4, 9]  # round(linspace(0, 9, 3)) = 0, 4.5 -> 4, 9
    assert uniform_indices(5, 5).tolist() == [0, 1, 2, 3, 4]
    t = torch.arange(24.0).view(4, 6)
    assert select(t, (2, 3)).tolist() == [[0, 2, 4], [12, 14, 16]]


@pytest.fixture(scope="module")
def ancestor_weights():
    spec = tiny_spec(depth=5, embed_dim=64, num_heads=2)
    torch.manual_seed(1)
    return AncestorWeights(spec, spec.build().state_dict(), "0" * 64)


def test_weight_selection_takes_the_first_layers_and_uniform_elements(ancestor_weights):
    model = build_descendant(
        "weight_selection", tiny_spec(depth=2, embed_dim=32, num_heads=2), ancestor=ancestor_weights
    )
    state, src = model.state_dict(), ancestor_weights.state
    keep = uniform_indices(64, 32)
    torch.testing.assert_close(
        state["blocks.1.mlp.fc1.weight"], src["blocks.1.mlp.fc1.weight"][uniform_indices(256, 128)][:, keep]
    )
    q, k, v = src["blocks.0.attn.qkv.weight"].view(3, 64, 64)
    expected = torch.cat([part[keep][:, keep] for part in (q, k, v)])
    torch.testing.assert_close(state["blocks.0.attn.qkv.weight"], expected)  # q, k and v selected separately
    torch.testing.assert_close(state["pos_embed"], src["pos_embed"][..., keep])
    assert not torch.equal(state["head.weight"], src["head.weight"][:, keep])  # the head is excluded


def test_heru_and_auto_place_ancestor_layers_at_the_top_and_bottom(ancestor_weights):
    spec = tiny_spec(depth=6, embed_dim=64, num_heads=2)
    heru = build_descendant("heru_lg", spec, ancestor=ancestor_weights).state_dict()
    auto = build_descendant("auto_lg", spec, ancestor=ancestor_weights).state_dict()
    src = ancestor_weights.state
    w = "attn.proj.weight"
    assert [torch.equal(heru[f"blocks.{d}.{w}"], src[f"blocks.{a}.{w}"]) for d, a in ((3, 2), (4, 3), (5, 4))] == [
        True
    ] * 3
    assert [torch.equal(auto[f"blocks.{d}.{w}"], src[f"blocks.{d}.{w}"]) for d in (0, 1, 2)] == [True] * 3
    assert not torch.equal(heru[f"blocks.0.{w}"], src[f"blocks.0.{w}"])  # random below Heru-LG's layers
    assert not torch.equal(auto[f"blocks.3.{w}"], src[f"blocks.3.{w}"])  # random above Auto-LG's layers
    assert torch.equal(auto["patch_embed.proj.weight"], src["patch_embed.proj.weight"])
    assert torch.equal(heru["norm.weight"], src["norm.weight"])


# --- Mimetic ------------------------------------------------------------------------------------------------


def test_mimetic_attention_structure():
    spec = tiny_spec(depth=2, embed_dim=64, num_heads=2)
    model = mimetic(spec, seed=0)
    d, dh = 64, 32
    qkv, proj = model.blocks[0].attn.qkv.weight.detach(), model.blocks[0].attn.proj.weight.detach()
    for head in range(2):
        rows = slice(head * dh, (head + 1) * dh)
        qk = qkv[rows].T @ qkv[d:][rows]  # logits x W_q^T W_k x^T
        vo = qkv[2 * d :][rows].T @ proj[:, rows].T  # value path x W_v^T W_o^T
        off = ~torch.eye(d, dtype=torch.bool)
        assert qk.diagonal().mean() > 0.3 and qk.diagonal().mean() > 5 * qk[off].abs().mean()
        assert vo.diagonal().mean() < -0.15 and -vo.diagonal().mean() > 5 * vo[off].abs().mean()
    untouched = tiny_spec(depth=2, embed_dim=64, num_heads=2).build()
    plain = untouched.blocks[0].attn.qkv.weight.detach()
    assert (plain[:dh].T @ plain[d : d + dh]).diagonal().mean().abs() < 0.01  # timm's init has no such structure


def test_mimetic_is_exact_when_one_head_spans_the_width():
    model = mimetic(tiny_spec(depth=1, embed_dim=16, num_heads=1), seed=0, alpha1=0.0, beta1=0.5)
    qkv = model.blocks[0].attn.qkv.weight.detach()
    torch.testing.assert_close(qkv[:16].T @ qkv[16:32], 0.5 * torch.eye(16), atol=1e-5, rtol=1e-5)


# --- what each method refuses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "overrides", "field", "needle"),
    [
        ("tleg", dict(embed_dim=64, num_heads=2), "embed_dim", "tleg inherits depth only: embed_dim must be 32"),
        ("sws", dict(embed_dim=64, num_heads=2), "embed_dim", "sws inherits depth only"),
        ("weight_selection", dict(embed_dim=128, num_heads=2), "embed_dim", "only shrinks"),
        ("weight_selection", dict(depth=6, embed_dim=64, num_heads=2), "depth", "only shrinks"),
        ("heru_lg", dict(embed_dim=32), "embed_dim", "copies whole ancestor layers"),
        ("auto_lg", dict(embed_dim=64, num_heads=4), "num_heads", "num_heads must be 2"),
        ("auto_lg", dict(embed_dim=64, num_heads=2, img_size=56), "img_size", "the ancestor's img_size"),
        ("wave", {}, "method", "holds a 'tleg' learngene"),
        ("magic", {}, "method", "unknown method 'magic'"),
    ],
)
def test_methods_refuse_sizes_they_cannot_produce(ancestor_weights, method, overrides, field, needle):
    with pytest.raises(SpecError) as info:
        template_set = layer_set("sws", stages=[2, 2]) if method == "sws" else layer_set("tleg")
        check_method(
            method, tiny_spec(**overrides), template_config=template_set.config, ancestor=ancestor_weights.arch
        )
    assert info.value.field == field and needle in str(info.value)
    with pytest.raises(SpecError, match="needs an ancestor"):
        check_method("heru_lg", tiny_spec())


@pytest.mark.parametrize("method", ["tleg", "sws"])
def test_tleg_and_sws_condense_from_a_real_ancestor(method, ancestor, fmnist_train, fmnist_test):
    config = CondenseConfig(
        recipe="plain",
        method=method,
        aux=tiny_spec(depth=4),
        stages=[1, 2, 1],
        steps=80,
        batch_size=64,
        optim=OptimConfig(lr=2e-3, warmup_steps=10),
    )
    losses = []
    ts = condense(
        ancestor,
        fmnist_train,
        config,
        eval_data=fmnist_test,
        runtime=Runtime(device="cpu"),
        hooks=Hooks(progress=lambda p: losses.append(p.loss)),
    )
    assert losses[-1] < losses[0] - 0.3
    assert ts.config.method == method and ts.metrics["aux_accuracy"] > 0.4  # chance is 0.1
    assert ts.config.stages == ([1, 2, 1] if method == "sws" else None)
    descendant = build_descendant(method, tiny_spec(depth=6), template_set=ts)
    assert descendant(fmnist_test.batch(torch.arange(4))[0]).shape == (4, 10)
