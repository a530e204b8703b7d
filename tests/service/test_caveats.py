"""Honest warnings: what a request leaves of the template set's domain, said before and after it runs; fitting needs
data; fit metrics say what they were measured on."""

from __future__ import annotations

import httpx
import pytest
import timm
import torch
from safetensors.torch import load_file

from jobs.contracts import InitializationRequest
from learngene import TemplateSet
from learngene.formats.template_set import BUILTIN_TEMPLATE_SETS
from learngene.quality.card import QualityCard
from learngene.quality.caveats import architecture_caveats
from learngene.spec import ViTSpec
from service.client import Client
from tests.support.cli import last_json, learngene
from tests.support.data import FMNIST, SHARED_DATA
from tests.support.served import served, settings_for

DEIT_224_RGB = {
    "model": "deit_tiny_patch16_224",
    "overrides": {"num_classes": 100},
    "template_set": "demo@prod",
}
TINY_GREY = {"img_size": 28, "patch_size": 7, "in_chans": 1}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """The embedded service in this process (its jobs run in its executor threads here)."""
    home = tmp_path_factory.mktemp("caveats-home")
    with served(settings_for(home, redis_url=None, data_roots=[SHARED_DATA])) as api:
        yield api


def codes(caveats: list[dict]) -> list[str]:
    return [c["code"] for c in caveats]


def test_every_departure_from_the_domain_is_named_with_its_adaptation():
    demo = TemplateSet.load(BUILTIN_TEMPLATE_SETS["demo"]).config  # 28x28 grey, patch 7, 10 classes
    card = QualityCard.model_validate_json((BUILTIN_TEMPLATE_SETS["demo"] / "card.json").read_text())
    assert (card.depth_range, card.width_range) == ((3, 12), (64, 128))
    arch = ViTSpec(model="deit_tiny_patch16_224", num_classes=100).resolve()
    caveats = {c.code: c.message for c in architecture_caveats(demo, arch, card)}
    assert list(caveats) == ["input_size", "patch_size", "in_chans", "fresh_head", "width_range"]
    assert "224x224 differs from the template set's 28x28" in caveats["input_size"]
    assert "4x4 to a 14x14 grid" in caveats["input_size"]
    assert "replicated from its grey channel" in caveats["in_chans"] and "0.286" in caveats["in_chans"]
    assert "num_classes=100" in caveats["fresh_head"] and "embed_dim=192" in caveats["width_range"]
    assert [c.code for c in architecture_caveats(demo, arch)] == ["input_size", "patch_size", "in_chans", "fresh_head"]
    inside = ViTSpec(model="vit_tiny_patch16_224", depth=4, embed_dim=128, num_heads=2, num_classes=10, **TINY_GREY)
    assert architecture_caveats(demo, inside.resolve(), card) == []
    # 32x32 in patches of 8 is the set's 4x4 grid: only the patch embedding is resampled, the positions are kept
    same_grid = inside.model_copy(update={"img_size": 32, "patch_size": 8}).resolve()
    assert codes([c.model_dump() for c in architecture_caveats(demo, same_grid, card)]) == ["patch_size"]


def test_deit_at_224_rgb_from_the_demo_set_is_warned_before_and_after(api):
    with httpx.Client(base_url=api.url) as http, Client(api.url) as client:
        response = http.post("/v1/initializations", json=DEIT_224_RGB)
        assert response.status_code == 202, response.text
        job = response.json()
        before = ["input_size", "patch_size", "in_chans", "fresh_head", "width_range", "no_fitting"]  # card: 64-128
        assert codes(job["warnings"]) == before
        assert job["request"]["fit"]["steps"] == 0  # no calibration data: pure inheritance, as recorded
        done = client.wait(job["id"], timeout_s=120)
        assert done["status"] == "succeeded", done
        assert codes(done["warnings"]) == before
        assert codes(done["result"]["warnings"]) == before  # nothing more: no data was read
        no_fitting = done["result"]["warnings"][-1]["message"]
        assert "pure inheritance" in no_fitting and "fresh head is untrained" in no_fitting
        assert done["result"]["fit"]["steps"] == 0 and done["result"]["fit"]["calibration_samples"] == 0


def test_fitting_without_calibration_data_is_refused_naming_calibration(api):
    body = {**DEIT_224_RGB, "fit": {"steps": 50}}
    response = httpx.post(f"{api.url}/v1/initializations", json=body)
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["loc"] == ["body", "calibration"] and "fit.steps=50" in error["msg"]
    explicit_zero = {**DEIT_224_RGB, "fit": {"steps": 0}}
    assert httpx.post(f"{api.url}/v1/initializations", json=explicit_zero).status_code == 202


def test_calibration_caveats_and_heldout_accuracy(api):
    """MNIST calibration for the FashionMNIST set, 20 classes for 10 labels: both said; held-out accuracy reported
    next to the calibration-set numbers, on its own images."""
    body = {
        "model": "vit_tiny_patch16_224",
        "overrides": {"depth": 3, "embed_dim": 64, "num_heads": 1, "num_classes": 20, **TINY_GREY},
        "calibration": {
            "uri": f"idx://{SHARED_DATA / 'MNIST'}",
            "max_samples": 256,
            "eval_uri": f"idx://{SHARED_DATA / 'MNIST'}?split=test",
        },
        "fit": {"steps": 10, "batch_size": 32},
    }
    with Client(api.url) as client:
        job = client.submit(body)
        assert codes(job["warnings"]) == ["fresh_head"]
        done = client.wait(job["id"], timeout_s=120)
    assert done["status"] == "succeeded", done
    result = done["result"]
    assert codes(result["warnings"]) == ["fresh_head", "classes_beyond_calibration", "normalization"]
    by_code = {c["code"]: c["message"] for c in result["warnings"]}
    assert "up to class 9 but num_classes=20" in by_code["classes_beyond_calibration"]
    assert "mean (0.286), std (0.353)" in by_code["normalization"] and "own mean (0.1" in by_code["normalization"]
    fit = result["fit"]
    assert fit["steps"] == 10 and fit["calibration_samples"] == 256 and fit["heldout_samples"] == 256
    assert 0.0 <= fit["heldout_accuracy"] <= 1.0 and 0.0 <= fit["calibration_accuracy_after"] <= 1.0
    assert {"initial_loss", "final_accuracy"}.isdisjoint(fit)  # unlabelled numbers are gone


def test_in_domain_request_has_no_warnings_and_its_model_card_quotes_the_card_row(api):
    body = {
        "model": "vit_tiny_patch16_224",
        "overrides": {"depth": 3, "embed_dim": 64, "num_heads": 1, "num_classes": 10, **TINY_GREY},
        "calibration": {"uri": f"idx://{FMNIST}", "max_samples": 128},
        "fit": {"steps": 5, "batch_size": 32},
    }
    with Client(api.url) as client:
        done = client.wait(client.submit(body)["id"], timeout_s=120)
    assert done["status"] == "succeeded" and done["warnings"] == [] and done["result"]["warnings"] == []
    readme = httpx.get(f"{api.url}/v1/initializations/{done['id']}/files/README.md").text
    row = next(
        r
        for r in httpx.get(f"{api.url}/v1/template-sets/demo@prod/card").json()["rows"]
        if (r["depth"], r["embed_dim"]) == (3, 64)
    )
    assert "## Warnings" not in readme
    assert f"| 3 | 64 | 1 | {row['params']} | {row['accuracy']:.4g} | {row['baseline_accuracy']:.4g} |" in readme


def test_a_size_outside_the_card_is_warned_before_it_runs(api):
    body = {
        "model": "vit_tiny_patch16_224",
        "overrides": {"depth": 24, "embed_dim": 256, "num_heads": 4, "num_classes": 10, **TINY_GREY},
    }
    job = httpx.post(f"{api.url}/v1/initializations", json=body).json()
    assert codes(job["warnings"]) == ["depth_range", "width_range", "no_fitting"]
    assert (
        "depth=24 lies outside the depths the template set's quality card measured (3-12)"
        in (job["warnings"][0]["message"])
    )
    httpx.delete(f"{api.url}/v1/initializations/{job['id']}")


def test_the_cli_prints_the_warnings_and_refuses_steps_without_data(tmp_path):
    deit = ["init", "--model", "deit_tiny_patch16_224", "--set", "num_classes=100", "--out", str(tmp_path / "d.st")]
    run = learngene(*deit)
    assert run.returncode == 0, run.stderr
    printed = [line for line in run.stderr.splitlines() if line.startswith("warning: ")]
    assert len(printed) == 6 and "224x224 differs" in printed[0] and "pure inheritance" in printed[-1]
    assert codes(last_json(run)["warnings"]) == [
        "input_size", "patch_size", "in_chans", "fresh_head", "width_range", "no_fitting"
    ]  # fmt: skip
    refused = learngene(*deit, "--steps", "10")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith("error: calibration: ")


def test_heldout_data_for_a_method_that_reads_no_data_is_refused(api):
    body = {**DEIT_224_RGB, "method": "timm", "calibration": {"uri": f"idx://{FMNIST}", "eval_uri": f"idx://{FMNIST}"}}
    response = httpx.post(f"{api.url}/v1/initializations", json=body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "calibration", "eval_uri"]


def test_a_request_stored_before_the_rule_still_reads_back():
    """Job records written before fitting needed data carry the old default of 200 steps without calibration: a
    worker reading one back runs it (as pure inheritance, as then); only new submissions are refused."""
    stored = {**DEIT_224_RGB, "calibration": None, "fit": {"steps": 200, "lr": 2e-3, "batch_size": 64, "seed": 0}}
    request = InitializationRequest.model_validate(stored)
    assert request.fit.steps == 200 and "fit.steps=200" in request.fitting_without_data()
    assert InitializationRequest.model_validate(DEIT_224_RGB).fit.steps == 0


@pytest.mark.parametrize(
    ("model", "needle", "check"),
    [
        ("vit_small_patch14_reg4_dinov2", "layer-scale gammas start at 1 (exact)", "blocks.3.ls1.gamma"),
        ("eva_giant_patch14_224", "pools by 'avg'", "blocks.3.attn.q_bias"),  # the Eva class, no RoPE: q, v biases
    ],
)
def test_a_descendant_of_another_family_is_served_from_the_plain_demo_set(api, tmp_path, model, needle, check):
    body = {
        "model": model,
        "overrides": {"depth": 4, "embed_dim": 128, "num_heads": 2, "num_classes": 10, **TINY_GREY},
        "template_set": "demo@prod",
    }
    with httpx.Client(base_url=api.url) as http, Client(api.url) as client:
        response = http.post("/v1/initializations", json=body)
        assert response.status_code == 202, response.text
        mismatch = [c["message"] for c in response.json()["warnings"] if c["code"] == "family_mismatch"]
        assert mismatch and needle in mismatch[0]
        done = client.wait(response.json()["id"], timeout_s=120)
        assert done["status"] == "succeeded", done
        folder = client.download_folder(done["id"], tmp_path / "descendant")
    state = load_file(folder / "model.safetensors")
    assert state[check].shape == (128,) and torch.isfinite(state[check]).all()
    strict = ViTSpec(model=body["model"], **body["overrides"]).build().eval()
    strict.load_state_dict(state, strict=True)
    x = torch.randn(2, 1, 28, 28)
    model_ = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert type(model_) is type(strict) and torch.equal(model_(x), strict(x))  # config.json rebuilds the family


def test_a_rope_descendant_of_the_plain_demo_set_is_refused_naming_both_families(api):
    body = {
        "model": "vit_small_patch16_rope_224",  # the Eva class with RoPE, a plain MLP and layer scale
        "overrides": {"depth": 4, "embed_dim": 128, "num_heads": 2, "num_classes": 10, **TINY_GREY},
        "template_set": "demo@prod",
    }
    refused = httpx.post(f"{api.url}/v1/initializations", json=body)
    assert refused.status_code == 422, refused.text
    assert "encode positions differently" in refused.text and "eva[rope=cat" in refused.text
    assert "template set's family (vit)" in refused.text and "model" in refused.text
