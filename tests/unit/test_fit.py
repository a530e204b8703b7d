"""Fitting the scalers of a descendant inherited from a real condensed template set."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from learngene import fit_scalers, inherit
from learngene.fit_settings import FitSettings
from tests.support.models import tiny_spec


def test_fitting_lowers_the_loss_and_keeps_templates_frozen(condensed, fmnist_train):
    model = inherit(condensed, tiny_spec(embed_dim=64, num_heads=2, depth=3), seed=0)
    templates_before = {k: v.clone() for k, v in model.templates.tensors.items()}
    scalers_before = model.weight_scalers.tensors["qkv"].detach().clone()
    report = fit_scalers(model, fmnist_train, FitSettings(steps=60, lr=2e-3, batch_size=64))
    assert report.calibration_loss_after < report.calibration_loss_before - 0.05
    assert report.calibration_accuracy_after >= report.calibration_accuracy_before
    for kind, t in model.templates.tensors.items():
        assert torch.equal(t, templates_before[kind])
    assert not torch.equal(model.weight_scalers.tensors["qkv"].detach(), scalers_before)
    n_templates = sum(t.numel() for t in model.templates.tensors.values())
    assert report.trainable_parameters < sum(p.numel() for p in model.materialize().parameters()) - n_templates


def test_zero_steps_is_pure_inheritance(condensed, fmnist_train):
    spec = tiny_spec(embed_dim=64, num_heads=2, depth=4)
    model = inherit(condensed, spec, seed=3)
    before = model.materialized_state()
    report = fit_scalers(model, fmnist_train, FitSettings(steps=0))
    assert report.steps == 0 and report.calibration_loss_after == report.calibration_loss_before
    after = model.materialized_state()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert fit_scalers(model, None, FitSettings(steps=0)).calibration_loss_before is None


def test_inherited_model_has_instinct(condensed, fmnist_test):
    """With no training at all, the aux-sized descendant classifies far above chance (the paper's 'instinct')."""
    model = inherit(condensed, condensed.config.aux, noise=1e-6)
    report = fit_scalers(model, fmnist_test, FitSettings(steps=0), eval_samples=2000)
    assert report.calibration_accuracy_before > 0.5


def test_kl_only_fitting_on_unlabelled_data(condensed, ancestor, fmnist_train):
    unlabelled = dataclasses.replace(fmnist_train, labels=None)
    model = inherit(condensed, tiny_spec(embed_dim=64, num_heads=2, depth=2), seed=0)
    report = fit_scalers(model, unlabelled, FitSettings(steps=40), ancestor=ancestor)
    assert report.calibration_accuracy_before is None
    assert report.calibration_loss_after < report.calibration_loss_before
    with pytest.raises(ValueError, match="needs the ancestor"):
        fit_scalers(model, unlabelled, FitSettings(steps=5))


def test_fitting_needs_data_for_steps(condensed):
    model = inherit(condensed, condensed.config.aux)
    with pytest.raises(ValueError, match="needs calibration data"):
        fit_scalers(model, None, FitSettings(steps=10))


def test_labelled_fitting_with_the_ancestor_adds_the_distillation_term(condensed, ancestor, fmnist_train):
    """CE on the labels plus KL to the ancestor: the measured loss carries the KL term, and fitting lowers both."""
    spec = tiny_spec(embed_dim=64, num_heads=2, depth=2)
    ce_only = fit_scalers(inherit(condensed, spec, seed=0), fmnist_train, FitSettings(steps=0))
    model = inherit(condensed, spec, seed=0)
    report = fit_scalers(model, fmnist_train, FitSettings(steps=40), ancestor=ancestor)
    assert report.calibration_loss_before > ce_only.calibration_loss_before + 0.01  # the same model and images, plus KL
    assert report.calibration_loss_after < report.calibration_loss_before - 0.05
    # Both terms fall: the CE of the fitted model (measured alone, zero steps) and what the KL adds on top of it.
    # Not accuracy: the KL pulls towards the ancestor's answers, its mistakes included.
    ce_after = fit_scalers(model, fmnist_train, FitSettings(steps=0)).calibration_loss_before
    assert ce_after < ce_only.calibration_loss_before
    assert report.calibration_loss_after - ce_after < report.calibration_loss_before - ce_only.calibration_loss_before
