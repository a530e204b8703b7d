"""Condensation on real FashionMNIST: it learns, it is reproducible, and it resumes exactly."""

from __future__ import annotations

import pytest
import timm
import torch

from learngene import CondenseConfig, condense
from learngene.formats.files import sha256_file
from learngene.train.loop import Hooks, OptimConfig, Runtime, evaluate
from tests.support.data import FMNIST
from tests.support.models import tiny_spec

SHORT = CondenseConfig(
    recipe="plain", aux=tiny_spec(depth=2), steps=12, batch_size=32, optim=OptimConfig(lr=2e-3, warmup_steps=2)
)


def test_condensation_learns_from_the_ancestor(condensed, ancestor, fmnist_test):
    metrics = condensed.metrics
    assert metrics["ancestor_accuracy"] > 0.7
    assert metrics["aux_accuracy"] > 0.6  # chance is 0.1
    assert metrics["final_loss"] < 1.5  # CE + KL; CE alone starts at ln 10 = 2.3
    assert condensed.lineage.data_digest and condensed.lineage.condensation["steps"] == 300
    assert condensed.num_learngene_parameters() == 24 * 32 * 32 + 32 * 32


def test_condensation_loss_falls(ancestor, fmnist_train):
    losses = []
    config = SHORT.model_copy(update={"steps": 60})
    condense(
        ancestor,
        fmnist_train,
        config,
        runtime=Runtime(device="cpu"),
        hooks=Hooks(progress=lambda p: losses.append(p.loss)),
    )
    assert len(losses) == 6
    assert losses[-1] < losses[0] - 0.3


def test_condensation_is_reproducible_on_cpu(ancestor, fmnist_train):
    a = condense(ancestor, fmnist_train, SHORT, runtime=Runtime(device="cpu"))
    b = condense(ancestor, fmnist_train, SHORT, runtime=Runtime(device="cpu"))
    for kind in a.templates:
        assert torch.equal(a.templates[kind], b.templates[kind])
        assert torch.equal(a.scalers[kind], b.scalers[kind])
    c = condense(ancestor, fmnist_train, SHORT.model_copy(update={"seed": 1}), runtime=Runtime(device="cpu"))
    assert not torch.equal(a.templates["qkv"], c.templates["qkv"])


def test_condensation_resumes_from_its_checkpoint(ancestor, fmnist_train, tmp_path):
    straight = condense(ancestor, fmnist_train, SHORT, runtime=Runtime(device="cpu"))

    class Crash(Exception):
        pass

    def crash_at_10(p):  # progress is reported every 10 steps; the last saved state is step 8's
        if p.step == 10:
            raise Crash

    with pytest.raises(Crash):
        condense(
            ancestor,
            fmnist_train,
            SHORT,
            runtime=Runtime(device="cpu"),
            hooks=Hooks(checkpoint_dir=tmp_path, checkpoint_every=4, progress=crash_at_10),
        )
    # A process killed inside the next save, after its tensors were written and before its JSON was: the
    # state on record (step 8) must still resume, untouched by the newer orphan file.
    (tmp_path / "train_state-000000012.safetensors").write_bytes(b"half-written")
    steps_seen = []
    resumed = condense(
        ancestor,
        fmnist_train,
        SHORT,
        runtime=Runtime(device="cpu"),
        hooks=Hooks(checkpoint_dir=tmp_path, checkpoint_every=4, progress=lambda p: steps_seen.append(p.step)),
    )
    assert steps_seen == [10, 12]  # resumed from step 8, not from 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_state-000000012.safetensors", "train_state.json"]
    for kind in straight.templates:
        torch.testing.assert_close(resumed.templates[kind], straight.templates[kind], rtol=0, atol=1e-6)


def test_resume_refuses_another_configuration(ancestor, fmnist_train, tmp_path):
    condense(ancestor, fmnist_train, SHORT, runtime=Runtime(device="cpu"), hooks=Hooks(checkpoint_dir=tmp_path))
    with pytest.raises(ValueError, match="different configuration"):
        condense(
            ancestor,
            fmnist_train,
            SHORT.model_copy(update={"seed": 3}),
            runtime=Runtime(device="cpu"),
            hooks=Hooks(checkpoint_dir=tmp_path),
        )


def test_templated_auxiliary_reaches_its_reported_accuracy(condensed, fmnist_test):
    from learngene import inherit

    aux = inherit(condensed, condensed.config.aux, noise=0.0)
    accuracy = evaluate(aux, fmnist_test)["accuracy"]
    assert accuracy == pytest.approx(condensed.metrics["aux_accuracy"], abs=1e-6)


def test_bad_inputs_are_refused(ancestor, fmnist_train):
    with pytest.raises(ValueError, match="classes"):
        condense(
            ancestor,
            fmnist_train,
            SHORT.model_copy(update={"aux": tiny_spec(depth=2, num_classes=5)}),
            runtime=Runtime(device="cpu"),
        )
    with pytest.raises(ValueError, match="auxiliary model takes"):
        condense(
            ancestor,
            fmnist_train,
            SHORT.model_copy(update={"aux": tiny_spec(depth=2, img_size=14)}),
            runtime=Runtime(device="cpu"),
        )
    with pytest.raises(ValueError, match="template size"):
        CondenseConfig(recipe="plain", aux=tiny_spec(embed_dim=48, num_heads=1), template_size=32)


def test_templates_from_weights_is_a_pca_of_the_tiles():
    from learngene.layers.templates import SLOTS, compose, templates_from_weights

    weights = torch.randn(3, 96, 32, generator=torch.Generator().manual_seed(0))  # 3 layers of qkv at width 32
    templates, scalers = templates_from_weights(weights, SLOTS["qkv"], 9, 32)  # 9 = every tile: exact
    torch.testing.assert_close(compose(scalers, templates), weights, atol=1e-5, rtol=1e-5)
    few_t, few_s = templates_from_weights(weights, SLOTS["qkv"], 4, 32)
    tiles = weights.reshape(3, 3, 32, 1, 32).permute(0, 1, 3, 2, 4).reshape(9, -1)
    tail = torch.linalg.svdvals(tiles)[4:].pow(2).sum().sqrt()  # Eckart-Young: the best rank-4 error
    assert (compose(few_s, few_t) - weights).norm() == pytest.approx(float(tail), rel=1e-4)
    assert 0.01 < few_t.std() < 0.03  # templates keep the random init's scale


def test_condensation_starts_from_the_ancestor_when_its_blocks_have_the_auxiliary_shapes(ancestor, fmnist_train):
    from learngene.methods import get_learngene
    from learngene.train.condense import build_auxiliary

    wave = get_learngene("wave")
    counts = {"qkv": 6, "proj": 2, "fc1": 8, "fc2": 8, "norm1_weight": 2, "norm1_bias": 2, "qkv_bias": 6,
              "proj_bias": 2, "norm2_weight": 2, "norm2_bias": 2, "fc1_bias": 8, "fc2_bias": 2}  # fmt: skip
    config = CondenseConfig(
        recipe="plain", aux=tiny_spec(embed_dim=64, num_heads=2, depth=2), template_counts=counts, steps=1
    )
    aux = build_auxiliary(config, torch.Generator().manual_seed(0))
    assert wave.start_from_ancestor(aux, ancestor, config.init)  # as many templates as tiles: the ancestor exactly
    x, _ = fmnist_train.batch(torch.arange(8))
    with torch.no_grad():
        torch.testing.assert_close(aux.eval()(x), ancestor.eval()(x), atol=1e-4, rtol=1e-4)
    random = CondenseConfig(recipe="plain", aux=tiny_spec(embed_dim=64, num_heads=2, depth=2), init="random", steps=1)
    assert not wave.start_from_ancestor(build_auxiliary(random, torch.Generator()), ancestor, random.init)
    other_width = CondenseConfig(recipe="plain", aux=tiny_spec(depth=2), init="ancestor", steps=1)
    with pytest.raises(ValueError, match="block shapes"):
        wave.start_from_ancestor(build_auxiliary(other_width, torch.Generator()), ancestor, other_width.init)
    ts = condense(ancestor, fmnist_train, config.model_copy(update={"steps": 5}), runtime=Runtime(device="cpu"))
    assert ts.lineage.condensation["init"] == "ancestor"


def test_any_timm_classifier_can_be_the_ancestor(fmnist_train, tmp_path):
    """A convolutional ancestor, loaded from safetensors by name: condensation distils its logits (no weight
    shapes in common, so the templates start from random)."""
    from safetensors.torch import save_file

    from learngene.pipeline import AncestorRef, CondensationSpec, run_condensation

    torch.manual_seed(0)
    cnn = timm.create_model("resnet10t", pretrained=False, in_chans=1, num_classes=10)
    save_file({k: v.contiguous() for k, v in cnn.state_dict().items()}, tmp_path / "cnn.safetensors")
    ref = AncestorRef(
        model="resnet10t", overrides={"in_chans": 1, "num_classes": 10}, checkpoint=str(tmp_path / "cnn.safetensors")
    )
    config = CondenseConfig(recipe="plain", aux=tiny_spec(depth=2), steps=20, batch_size=32)
    ts = run_condensation(
        CondensationSpec(ancestor=ref, data_uri=f"idx://{FMNIST}", config=config, name="from-cnn", max_samples=512)
    )
    assert ts.lineage.ancestor_model == "resnet10t" and ts.lineage.condensation["init"] == "random"
    assert ts.lineage.ancestor_sha256 == sha256_file(tmp_path / "cnn.safetensors")
    assert 0 < ts.metrics["final_loss"] < 10
    # no held-out data given: the accuracies are measured on a sample of the training data, and the lineage says so
    assert set(ts.metrics) == {"final_loss", "aux_accuracy", "ancestor_accuracy"}
    assert ts.lineage.eval_data_uri == f"idx://{FMNIST} (training sample)"


def test_a_compiled_condensation_trains_the_same_parameters_as_eager(ancestor, fmnist_train):
    """torch.compile is an option (`Runtime.compile`), never a change of result."""
    config = SHORT.model_copy(update={"steps": 3})
    eager = condense(ancestor, fmnist_train, config, runtime=Runtime(device="cpu"))
    compiled = condense(ancestor, fmnist_train, config, runtime=Runtime(device="cpu", compile=True))
    for key, tensor in eager.tensors().items():
        torch.testing.assert_close(compiled.tensors()[key], tensor, rtol=1e-4, atol=1e-5, msg=key)
