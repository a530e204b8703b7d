"""`learngene.create_model`, timm's one-liner for a model of any size: the class `timm.create_model` returns, with
the template set's preprocessing in `pretrained_cfg`, built on this machine or (`url=`) by a running service, the
two giving the same weights; `learngene.list_template_sets` on either side."""

from __future__ import annotations

import pytest
import timm
import torch

import learngene
from learngene.errors import UserError
from tests.support.data import FMNIST

SIZE = {"depth": 4, "embed_dim": 96, "num_heads": 2, "img_size": 28, "patch_size": 7, "in_chans": 1, "num_classes": 10}
FITTED = {"calibration": f"idx://{FMNIST}", "max_samples": 256, "fit": {"steps": 5, "batch_size": 32, "seed": 3}}


def test_a_timm_model_built_here_or_by_the_service(embedded_stack):
    here = learngene.create_model("vit_tiny_patch16_224", template_set="demo@prod", **FITTED, **SIZE)
    plain = timm.create_model("vit_tiny_patch16_224", pretrained=False, **SIZE)
    assert type(here) is type(plain)
    assert {k: v.shape for k, v in here.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    cfg = here.pretrained_cfg
    assert tuple(cfg["input_size"]) == (1, 28, 28) and len(cfg["mean"]) == len(cfg["std"]) == 1
    assert abs(cfg["mean"][0] - 0.286) < 1e-3  # FashionMNIST's, the demo set's normalization
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.isfinite(here.eval()(x)).all()
    qkv = "blocks.0.attn.qkv.weight"
    assert not torch.allclose(here.state_dict()[qkv], plain.state_dict()[qkv])  # inherited, not timm's own init

    # Built by the service from the same request: the same weights, to float rounding. Compared without fitting steps:
    # inheritance is the same arithmetic on the same templates and seed, while Adam turns the last-bit differences of
    # another BLAS thread count into lr-sized steps on near-zero gradients.
    inherited = {**FITTED, "fit": {**FITTED["fit"], "steps": 0}}
    mine = learngene.create_model("vit_tiny_patch16_224", template_set="demo@prod", **inherited, **SIZE)
    served = learngene.create_model("vit_tiny_patch16_224", template_set="demo@prod", url=embedded_stack.url,
                                    **inherited, **SIZE)  # fmt: skip
    assert type(served) is type(here) and served.pretrained_cfg["mean"] == cfg["mean"]
    for (name, a), (_, b) in zip(mine.state_dict().items(), served.state_dict().items(), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (name, (a - b).abs().max())  # float rounding only
    assert not torch.equal(mine.state_dict()[qkv], here.state_dict()[qkv])  # the five fitting steps moved it


def test_template_sets_of_a_domain_here_and_on_the_service(embedded_stack):
    for url in (None, embedded_stack.url):
        ranked = learngene.list_template_sets(img_size=28, in_chans=1, num_classes=10, depth=5, embed_dim=96, url=url)
        demo = next(v for v in ranked if v["name"] == "demo")
        assert demo["prediction"]["row"]["embed_dim"] in (64, 128) and 0 < demo["prediction"]["accuracy"] <= 1
        assert learngene.list_template_sets(in_chans=3, name="demo", url=url) == []  # demo is grey


def test_half_a_size_or_calibration_options_without_data_are_refused_here_too():
    with pytest.raises(UserError, match="depth and embed_dim together"):
        learngene.list_template_sets(depth=6)
    with pytest.raises(UserError, match="give calibration too"):
        learngene.create_model("vit_tiny_patch16_224", max_samples=10, **SIZE)
