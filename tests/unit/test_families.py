"""The ViT families timm builds (issue 25): every name resolves or is refused by name, and WAVE (TLEG, SWS, the
baselines) condense and inherit within and across the served families, exactly where the rules say so."""

from __future__ import annotations

import json

import huggingface_hub
import pytest
import timm
import torch
from safetensors.torch import save_file

from learngene import CondenseConfig, TemplateSet, condense, export_checkpoint, inherit
from learngene.errors import SpecError, UserError
from learngene.families import FEATURES
from learngene.fit_settings import FitSettings
from learngene.formats.ancestors import resolve_ancestor
from learngene.layers.templates import DEFAULT_COUNTS, SLOTS, Axis
from learngene.methods import build_descendant
from learngene.methods.ancestor_weights import AncestorWeights
from learngene.quality.card import CardConfig, compute_card, load_card_data
from learngene.quality.caveats import architecture_caveats
from learngene.spec import VIT_PREFIXES, ViTSpec
from tests.support.cli import cli
from tests.support.data import FMNIST
from tests.support.models import TINY, aux_logits, random_template_set

# One tiny member of each served family (the benchmark's row groups): width 32, 2 heads, 3 layers, 28 px grey.
FAMILIES = {
    "plain": "vit_small_patch16_224",
    "deit3 (layer scale, no_embed_class)": "deit3_small_patch16_224",
    "dinov2 (layer scale, registers)": "vit_small_patch14_reg4_dinov2",
    "siglip (attention pool, no class token, GELUTanh)": "vit_base_patch32_siglip_256",
    "clip (norm_pre, QuickGELU)": "vit_base_patch16_clip_quickgelu_224",
    "no qkv bias, layer scale, avg pool": "vit_medium_patch16_gap_256",
    "dinov2 giant (GLU MLP, layer scale)": "vit_giant_patch14_dinov2",
    # the Eva class: its block read in the plain Block's names (families.block_layout)
    "eva02 (RoPE, packed SwiGLU, q and v biases)": "eva02_tiny_patch14_224",
    "eva02 clip (SwiGLU and q/k/v apart, attention and MLP norms)": "eva02_base_patch16_clip_224",
    "dinov3 (RoPE only, layer scale, registers)": "vit_small_patch16_dinov3_qkvb",
    "rope vit (AttentionRope: k bias, layer scale)": "vit_base_patch16_rope_224",
    "qk-norm (a LayerNorm over each head of q and k)": "vit_large_patch16_224",
}
# A GLU's MLP ratio (5.33 packed, 2.67 apart) makes a hidden layer of 85 at width 32: not a multiple of the template
# size.
SIZED = {
    name: {"mlp_ratio": 4.0}
    for name in ("vit_giant_patch14_dinov2", "eva02_tiny_patch14_224", "eva02_base_patch16_clip_224")
} | {"eva_giant_patch14_224": {"mlp_ratio": 4.0}, "vit_large_patch16_224": {"qk_norm": True}}


def family_spec(model: str, **overrides) -> ViTSpec:
    tiny = {**TINY, "embed_dim": 32, "num_heads": 2, "depth": 3, **SIZED.get(model, {})}
    return ViTSpec(model=model, **{**tiny, **overrides})


@pytest.fixture(scope="module")
def images():
    return torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module", params=list(FAMILIES), ids=list(FAMILIES))
def family(request):
    model = FAMILIES[request.param]
    return model, random_template_set(family_spec(model), seed=2)


def test_every_timm_vit_name_resolves_or_is_refused_by_name(capsys):
    names = [n for n in timm.list_models() if n.startswith(VIT_PREFIXES)]
    served, refused = [], {}
    for name in names:
        try:
            served.append(ViTSpec(model=name).resolve())
        except (SpecError, UserError) as exc:  # ValidationError is a ValueError; a crash is anything else
            refused[name] = str(exc)
    assert len(served) + len(refused) == len(names)
    for name, message in refused.items():
        assert any(f"{f.name} (" in message for f in FEATURES.values() if not f.served) or "builds a" in message, name
    assert "stem (" in refused["vit_base_mci_224"]  # once an AttributeError
    assert "rel_pos (" in refused["vit_relpos_base_patch16_224"]
    assert "rope_learned (" in refused["vit_base_patch16_rope_mixed_224"]
    assert "other_modules (" in refused["eva02_enormous_patch14_clip_224"]  # post-norm blocks
    families = {a.family for a in served}
    assert {"vit[layer_scale, registers=4]", "vit[attention_pool, GELUTanh]", "vit[norm_pre, QuickGELU]"} <= families
    share = len(served) / len(names)
    with capsys.disabled():
        print(f"\nViT names served: {len(served)} of {len(names)} ({share:.0%}); families: {len(families)}")
    assert {"eva[rope=cat, no_k_bias, glu_mlp, SiLU]", "eva[rope=cat, no_pos_embed, layer_scale]"} <= families
    assert share > 0.8  # 93 of 248 (38%) before the families, 158 of 251 before the Eva class


def test_the_architecture_records_the_family():
    dino = family_spec("vit_small_patch14_reg4_dinov2").resolve()
    assert dino.layer_scale and dino.reg_tokens == 4 and dino.num_prefix_tokens == 5 and dino.pos_embed_prefix == 0
    siglip = family_spec("vit_base_patch32_siglip_256").resolve()
    assert siglip.attn_pool and siglip.num_prefix_tokens == 0 and siglip.act == "GELUTanh"
    gap = family_spec("vit_medium_patch16_gap_256").resolve()
    assert not gap.qkv_bias and gap.layer_scale and gap.global_pool == "avg"
    giant = family_spec("vit_giant_patch14_dinov2").resolve()
    assert giant.mlp_gates == 2 and giant.mlp_hidden == 64 and giant.act == "SiLU"  # fc1: 128 rows, value and gate


def test_a_glu_mlp_is_not_bridged_to_a_plain_one():
    glu = random_template_set(family_spec("vit_giant_patch14_dinov2"), seed=11)
    with pytest.raises(SpecError, match=r"vit\[layer_scale, glu_mlp, SiLU\]\) have different MLPs"):
        build_descendant("wave", family_spec("vit_small_patch14_dinov2"), template_set=glu)


def test_a_family_set_holds_the_kinds_its_blocks_have(family):
    _, ts = family
    arch = ts.config.arch
    present = {k for k, s in SLOTS.items() if s.present(arch)}
    per_layer = {k for k in present if Axis.HEAD in SLOTS[k].axes}  # qk-norm's, untemplated by default
    assert set(ts.config.templates.counts) == present - per_layer and (len(per_layer) == 4) == arch.qk_norm
    assert all(ts.free[f"blocks.2.{SLOTS[k].param}"].shape == (arch.head_dim,) for k in per_layer)
    assert ("ls1_gamma" in ts.templates) == arch.layer_scale and ("qkv_bias" in ts.templates) == arch.qkv_bias
    assert any(k.startswith("attn_pool.") for k in ts.free) == arch.attn_pool


@pytest.mark.parametrize("k", [2, 3])
def test_widening_a_family_descendant_keeps_the_auxiliary_logits(family, images, k):
    model, ts = family
    d = inherit(ts, family_spec(model, embed_dim=32 * k, num_heads=2 * k), noise=0.0)
    assert d.provenance["fresh_parameters"] == []  # the attention pool too is widened, not drawn afresh
    with torch.no_grad():
        torch.testing.assert_close(d.eval()(images), aux_logits(ts, images), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("depth", "width", "heads"), [(2, 32, 2), (4, 64, 4), (6, 48, 3), (2, 40, 2)])
def test_family_descendants_load_strictly_into_timm_and_every_scaler_learns(family, images, depth, width, heads):
    model, ts = family
    spec = family_spec(model, depth=depth, embed_dim=width, num_heads=heads)
    if ts.config.arch.qk_norm and width // heads != ts.config.arch.head_dim:
        with pytest.raises(SpecError, match=r"normalize heads of different sizes \(20 against 16, qk-norm\)"):
            inherit(ts, spec)
        return  # the one size qk-norm cannot serve: another head size
    d = inherit(ts, spec, noise=1e-3)
    d(images).logsumexp(-1).sum().backward()
    for kind, scalers in d.weight_scalers.tensors.items():
        assert scalers.grad is not None and scalers.grad.abs().sum() > 0, kind
    state = d.materialized_state()
    assert all(torch.isfinite(t).all() for t in state.values())
    plain = timm.create_model(model, pretrained=False, **spec.overrides())
    plain.load_state_dict(state, strict=True)  # the family's own name and overrides
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(images), d.eval()(images), rtol=1e-4, atol=1e-5)


def test_a_family_condenses_from_an_ancestor_of_its_own_family(fmnist_train):
    spec = family_spec("vit_small_patch14_reg4_dinov2")
    torch.manual_seed(0)
    ancestor = family_spec("vit_small_patch14_reg4_dinov2", depth=4).build().eval()
    config = CondenseConfig(recipe="plain", aux=spec, steps=2, batch_size=8)
    ts = condense(ancestor, fmnist_train, config)
    assert ts.config.arch.layer_scale and ts.config.arch.reg_tokens == 4
    assert {"ls1_gamma", "ls2_gamma"} <= set(ts.templates)
    assert ts.free["reg_token"].shape == (1, 4, 32)


def test_an_eva_condenses_from_an_eva_ancestor_in_the_plain_block_s_kinds(fmnist_train):
    """EVA-02 CLIP stores q, k and v apart, SwiGLU's gate and value apart, and norms inside attention and MLP: the
    set holds them as the plain Block's kinds (families.block_layout), started from the ancestor's own blocks."""
    model = "eva02_base_patch16_clip_224"
    torch.manual_seed(0)
    ancestor = family_spec(model, depth=4).build().eval()
    ts = condense(ancestor, fmnist_train, CondenseConfig(recipe="plain", aux=family_spec(model), steps=2, batch_size=8))
    arch = ts.config.arch
    assert (arch.block, arch.rope, arch.qkv_layout, arch.mlp_layout) == ("eva", "cat", "separate", "separate")
    assert {"qkv", "fc1", "attn_norm_weight", "mlp_norm_weight"} <= set(ts.templates)
    assert not any(".q_proj." in k or ".w12." in k for k in ts.free)  # canonical names only
    d = inherit(ts, family_spec(model, depth=5, embed_dim=64, num_heads=4))
    state = d.materialized_state()
    assert torch.equal(state["blocks.4.attn.k_proj.weight"].isfinite(), torch.ones(64, 64, dtype=torch.bool))
    timm.create_model(model, **family_spec(model, depth=5, embed_dim=64, num_heads=4).overrides()).load_state_dict(
        state, strict=True
    )


# --- across families -----------------------------------------------------------------------------------------


def test_a_plain_descendant_of_a_layer_scale_set_folds_the_gammas_exactly(images):
    ts = random_template_set(family_spec("vit_small_patch14_dinov2"), seed=4)
    d = inherit(ts, family_spec("vit_small_patch16_224"), noise=0.0)
    assert d.folded == ("ls1_gamma", "ls2_gamma") and d.provenance["layer_scale"] == "folded"
    assert "blocks.0.ls1.gamma" not in d.materialized_state()
    with torch.no_grad():
        torch.testing.assert_close(d.eval()(images), aux_logits(ts, images), rtol=1e-4, atol=1e-5)
    wide = inherit(ts, family_spec("vit_small_patch16_224", embed_dim=64, num_heads=4), noise=0.0)
    with torch.no_grad():
        torch.testing.assert_close(wide.eval()(images), aux_logits(ts, images), rtol=1e-4, atol=1e-5)


def test_a_layer_scale_descendant_of_a_plain_set_starts_with_unit_gammas(images):
    ts = random_template_set(family_spec("vit_small_patch16_224"), seed=5)
    d = inherit(ts, family_spec("vit_small_patch14_dinov2"), noise=0.0)
    state = d.materialized_state()
    assert torch.equal(state["blocks.2.ls2.gamma"], torch.ones(32)) and d.provenance["layer_scale"] == "neutral"
    with torch.no_grad():
        torch.testing.assert_close(d.eval()(images), aux_logits(ts, images), rtol=1e-4, atol=1e-5)
    warning = architecture_caveats(ts.config, d.arch)[0]
    assert warning.code == "family_mismatch" and "start at 1 (exact)" in warning.message


def test_a_bias_the_descendant_lacks_is_refused_and_one_the_set_lacks_starts_at_zero(images):
    with_bias = random_template_set(family_spec("vit_base_patch16_224"), seed=6)
    with pytest.raises(SpecError, match=r"\(vit\[no_qkv_bias\]\) has no attn.qkv.bias.*family \(vit\)") as info:
        build_descendant("wave", family_spec("vit_base_patch16_224_miil"), template_set=with_bias)
    assert info.value.field == "model"
    without = random_template_set(family_spec("vit_base_patch16_224_miil"), seed=7)
    d = inherit(without, family_spec("vit_base_patch16_224"), noise=0.0)
    assert torch.equal(d.materialized_state()["blocks.1.attn.qkv.bias"], torch.zeros(96))
    with torch.no_grad():
        torch.testing.assert_close(d.eval()(images), aux_logits(without, images), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("set_model", "descendant", "needle"),
    [
        ("eva02_tiny_patch14_224", "vit_small_patch16_224", "have different MLPs"),
        ("vit_base_patch16_rope_224", "deit3_small_patch16_224", "encode positions differently"),
        ("vit_base_patch16_rope_224", "vit_small_patch16_dinov3", "encode positions differently"),  # another RoPE
        ("eva02_base_patch16_clip_224", "eva02_tiny_patch14_224", "differ in a norm inside attention or the MLP"),
        ("vit_base_patch16_rope_224", "vit_base_patch16_rope_reg1_gap_256", "differ in the key bias under RoPE"),
    ],
)
def test_what_no_rule_bridges_is_refused_naming_both_families(set_model, descendant, needle):
    ts = random_template_set(family_spec(set_model), seed=12)
    with pytest.raises(SpecError, match=needle) as info:
        build_descendant("wave", family_spec(descendant), template_set=ts)
    assert info.value.field == "model"
    assert ts.config.arch.family in str(info.value) and family_spec(descendant).resolve().family in str(info.value)


def test_qk_norm_is_per_layer_by_default_templated_where_a_head_tiles_and_never_bridged(images, fmnist_train):
    qk, plain = family_spec("vit_large_patch16_224"), family_spec("vit_large_patch16_224", qk_norm=False)
    for src, dst in ((qk, plain), (plain, qk)):
        with pytest.raises(SpecError, match=r"\(vit(\[qk_norm\])?\) differ in a norm inside attention"):
            inherit(random_template_set(src, seed=16), dst)
    counts = {**DEFAULT_COUNTS, "q_norm_weight": 2, "k_norm_bias": 1}
    with pytest.raises(ValueError, match="head size 16, not a multiple of the template size 32"):
        CondenseConfig(recipe="plain", aux=qk, steps=1, template_counts=counts)
    ts = random_template_set(qk, seed=17, template_size=16, template_counts=counts)
    assert ts.templates["q_norm_weight"].shape == (2, 16) and "blocks.0.attn.k_norm.weight" in ts.free
    wide = inherit(ts, family_spec("vit_large_patch16_224", embed_dim=64, num_heads=4), noise=0.0)
    with torch.no_grad():
        torch.testing.assert_close(wide.eval()(images), aux_logits(ts, images), rtol=1e-4, atol=1e-5)
    torch.manual_seed(0)
    ancestor = family_spec("vit_large_patch16_224", depth=4, embed_dim=64, num_heads=4).build().eval()
    condensed = condense(ancestor, fmnist_train, CondenseConfig(recipe="plain", aux=qk, steps=2, batch_size=8))
    assert condensed.config.arch.family == "vit[qk_norm]" and condensed.free["blocks.2.attn.q_norm.bias"].shape == (16,)
    for method, extra in (("tleg", {}), ("sws", {"stages": [1, 1, 1]})):
        layered = random_template_set(qk, seed=18, method=method, **extra)
        d = build_descendant(method, family_spec("vit_large_patch16_224", depth=5), template_set=layered)
        assert d.blocks[4].attn.q_norm.weight.shape == (16,)


def test_without_rope_an_eva_and_a_plain_vit_bridge_exactly_whatever_their_key_bias(images):
    """eva_giant has no RoPE and no key bias: a constant key bias adds the same q.b_k to every logit of a query,
    which softmax ignores, so dropping or zeroing it keeps the function."""
    eva = random_template_set(family_spec("eva_giant_patch14_224"), seed=13)  # pools by 'avg'
    plain = random_template_set(family_spec("vit_small_patch16_224", global_pool="avg"), seed=14)
    for ts, descendant in ((eva, "vit_small_patch16_224"), (plain, "eva_giant_patch14_224")):
        d = inherit(ts, family_spec(descendant, global_pool="avg"), noise=0.0)
        with torch.no_grad():
            torch.testing.assert_close(d.eval()(images), aux_logits(ts, images), rtol=1e-4, atol=1e-5)
        (warning,) = [c for c in architecture_caveats(ts.config, d.arch) if c.code == "family_mismatch"]
        assert "key bias is " + ("zero" if descendant.startswith("vit") else "dropped") in warning.message
    d = inherit(eva, family_spec("vit_small_patch16_224"))  # token pooling: inherited, with a warning
    assert "blocks.0.attn.qkv.bias" in d.materialized_state()
    assert "pools by 'token'" in architecture_caveats(eva.config, d.arch)[0].message


def test_an_absolute_position_embedding_the_set_lacks_is_fresh_with_a_warning():
    ts = random_template_set(family_spec("vit_base_patch16_rope_224"), seed=15)
    d = inherit(ts, family_spec("vit_base_patch16_rope_ape_224"))
    assert d.provenance["fresh_parameters"] == ["pos_embed"]
    (warning,) = [c for c in architecture_caveats(ts.config, d.arch) if c.code == "family_mismatch"]
    assert "absolute position embedding is fresh" in warning.message


def test_another_activation_or_pool_is_inherited_with_a_family_mismatch_warning():
    ts = random_template_set(family_spec("vit_small_patch16_224"), seed=8)
    siglip = family_spec("vit_base_patch32_siglip_256").resolve()
    (warning,) = [c for c in architecture_caveats(ts.config, siglip) if c.code == "family_mismatch"]
    assert "GELUTanh" in warning.message and "attention pool is fresh" in warning.message
    d = inherit(ts, family_spec("vit_base_patch32_siglip_256"))
    assert "attn_pool.latent" in d.provenance["fresh_parameters"]
    assert architecture_caveats(ts.config, ts.config.arch) == []


@pytest.mark.parametrize("model", ["vit_small_patch14_reg4_dinov2", "eva02_base_patch16_clip_224"])
@pytest.mark.parametrize("method", ["tleg", "sws"])
def test_layer_learngenes_serve_their_own_family_at_any_depth(method, model):
    spec = family_spec(model, depth=5)
    extra = {"stages": [1, 1, 1, 1, 1]} if method == "sws" else {}
    ts = random_template_set(spec, seed=9, method=method, **extra)
    assert any(k.endswith("attn.qkv.weight") for k in ts.templates)  # the plain Block's names, whatever the class
    descendant = family_spec(model, depth=7)
    d = build_descendant(method, descendant, template_set=ts)
    timm.create_model(descendant.model, **descendant.overrides()).load_state_dict(d.state_dict(), strict=True)
    with pytest.raises(SpecError, match=r"copies whole blocks|no rule maps one onto the other"):
        build_descendant(method, family_spec("vit_small_patch16_224", depth=7), template_set=ts)


CONDENSED_BY_CLI = [
    "deit3_small_patch16_224",
    "vit_small_patch14_reg4_dinov2",
    "vit_base_patch32_siglip_256",
    "eva02_tiny_patch14_224",
]


@pytest.mark.parametrize("model", CONDENSED_BY_CLI)
def test_a_family_condenses_through_the_cli_and_records_its_family(model, tmp_path):
    spec = family_spec(model, depth=2)
    torch.manual_seed(0)
    ancestor = tmp_path / "ancestor.safetensors"
    export_checkpoint(spec.build(), ancestor, spec=spec)  # random weights: the family is what is tested here
    sets = [x for k, v in spec.overrides().items() for x in ("--aux-set", f"{k}={v}")]
    run = cli(
        "condense", "--ancestor", str(ancestor), "--aux-model", model, *sets, "--data", f"idx://{FMNIST}",
        "--steps", "2", "--batch-size", "8", "--recipe", "plain", "--out", str(tmp_path / "set"),
    )  # fmt: skip
    assert run.returncode == 0, run.output
    ts = TemplateSet.load(tmp_path / "set")
    recorded = json.loads((tmp_path / "set" / "manifest.json").read_text())["config"]["architecture"]
    assert recorded["layer_scale"] == spec.resolve().layer_scale and recorded["attn_pool"] == spec.resolve().attn_pool
    d = inherit(ts, family_spec(model, depth=4, embed_dim=64, num_heads=4))
    timm.create_model(model, **family_spec(model, depth=4, embed_dim=64, num_heads=4).overrides()).load_state_dict(
        d.materialized_state(), strict=True
    )


def test_a_dinov2_from_the_local_hub_cache_is_an_ancestor_of_its_family(tmp_path, monkeypatch, fmnist_train):
    """The layout huggingface_hub keeps for `timm/vit_small_patch14_dinov2.lvd142m`, with random weights and a
    config.json as timm writes it (no header of ours): read offline, condensed, inherited."""
    model = "vit_small_patch14_dinov2"
    spec = family_spec(model, depth=2)
    commit = "0123456789abcdef0123456789abcdef01234567"
    entry = tmp_path / "hub" / "models--timm--vit_small_patch14_dinov2.lvd142m"
    snapshot = entry / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(commit)
    torch.manual_seed(1)
    save_file(spec.build().state_dict(), snapshot / "model.safetensors")
    model_args = {k: v for k, v in spec.overrides().items() if k != "num_classes"}
    config = {"architecture": model, "num_classes": 10, "model_args": model_args,
              "pretrained_cfg": {"mean": [0.286], "std": [0.353]}}  # fmt: skip
    (snapshot / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    found = resolve_ancestor(f"hf-hub:timm/{model}.lvd142m")
    ancestor = AncestorWeights.load(found.model, found.checkpoint, found.overrides)
    assert ancestor.arch.layer_scale and ancestor.arch == spec.resolve()
    ts = condense(ancestor.model(), fmnist_train, CondenseConfig(recipe="plain", aux=spec, steps=2, batch_size=8))
    assert ts.config.arch.family == "vit[layer_scale]"
    d = build_descendant("wave", family_spec(model, depth=3, embed_dim=64, num_heads=4), template_set=ts)
    timm.create_model(model, **family_spec(model, depth=3, embed_dim=64, num_heads=4).overrides()).load_state_dict(
        d.materialize().state_dict(), strict=True
    )


def test_a_family_set_gets_a_quality_card():
    template_set = random_template_set(family_spec("vit_base_patch32_siglip_256", depth=2), seed=10)
    template_set.lineage.data_uri = f"idx://{FMNIST}"
    config = CardConfig(depths=(1, 2), fit=FitSettings(steps=2, batch_size=16), train_samples=64, eval_samples=64)
    card = compute_card(template_set, load_card_data(template_set, config), digest="b" * 64, config=config)
    assert {(r.depth, r.embed_dim) for r in card.rows} == {(1, 32), (2, 32), (1, 64), (2, 64)}
    assert all(0.0 <= r.accuracy <= 1.0 for r in card.rows)


def test_weight_selection_keeps_a_glu_s_value_and_gate_halves_apart():
    spec = family_spec("vit_giant_patch14_dinov2", depth=4, embed_dim=64, num_heads=4)
    torch.manual_seed(3)
    ancestor = AncestorWeights(spec, spec.build().state_dict(), sha256="0" * 64)
    target = family_spec("vit_giant_patch14_dinov2", depth=2)
    model = build_descendant("weight_selection", target, ancestor=ancestor)
    fc1 = ancestor.state["blocks.1.mlp.fc1.weight"]  # (2 x 128, 64): value rows, then gate rows
    value, gate = model.state_dict()["blocks.1.mlp.fc1.weight"].chunk(2)  # (2 x 64, 32)
    torch.testing.assert_close(value, fc1[:128][::2, ::2])
    torch.testing.assert_close(gate, fc1[128:][::2, ::2])


def test_mimetic_structures_an_eva_s_separate_query_and_key_projections():
    model = build_descendant("mimetic", family_spec("eva02_base_patch16_clip_224", embed_dim=64, num_heads=2))
    attn = model.blocks[1].attn
    q, k = attn.q_proj.weight.detach(), attn.k_proj.weight.detach()
    for head in range(2):
        qk = q[head * 32 : (head + 1) * 32].T @ k[head * 32 : (head + 1) * 32]
        off = ~torch.eye(64, dtype=torch.bool)
        assert qk.diagonal().mean() > 0.3 and qk.diagonal().mean() > 5 * qk[off].abs().mean()
