"""Checkpoints as timm / Hugging Face folders: timm's own `local-dir:` loader rebuilds exactly the exported model, head
included, and reads the template set's preprocessing; the model card's metadata parses."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import yaml
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from learngene import load_images, read_metadata
from learngene.formats.pretrained import FOLDER_FILES, companion_files, model_card, write_companions
from learngene.pipeline import FitSettings, InitInputs, initialize
from storage.artifacts import LocalArtifacts
from tests.support.data import FMNIST
from tests.support.models import random_template_set, tiny_spec


@pytest.fixture(scope="module")
def template_set():
    return random_template_set(tiny_spec(embed_dim=32, depth=2))  # grey 28 px, normalization (0.5,), (0.25,)


@pytest.mark.parametrize(
    "overrides, fitted",
    [
        (dict(depth=3, embed_dim=64, num_heads=2, num_classes=12), True),  # the set's own domain, fitted
        (dict(depth=2, img_size=32, patch_size=8, in_chans=3, class_token=False, global_pool="avg"), False),
    ],
    ids=["grey-fitted", "rgb-avg-pool"],
)
def test_timm_loads_the_folder_with_its_head_and_preprocessing(tmp_path, template_set, overrides, fitted):
    spec = tiny_spec(**overrides)
    data = None
    if fitted:
        data = load_images(
            f"idx://{FMNIST}",
            img_size=(28, 28),
            in_chans=1,
            max_samples=64,
            num_classes=12,
            normalization=template_set.config.normalization,
        )
    fit = FitSettings(steps=3 if fitted else 0, batch_size=16)
    initialize(spec, tmp_path / "model.safetensors", inputs=InitInputs(template_set, data=data), fit=fit)
    files = write_companions(tmp_path)
    assert list(files) == list(FOLDER_FILES) and sorted(p.name for p in tmp_path.iterdir()) == sorted(FOLDER_FILES)
    assert companion_files(read_metadata(tmp_path / "model.safetensors")) == {
        name: (tmp_path / name).read_bytes() for name in ("config.json", "README.md")
    }  # a pure function of the checkpoint's header: content-addressed, the same bytes on every host

    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    strict = timm.create_model(spec.model, pretrained=False, **spec.overrides())
    strict.load_state_dict(load_file(tmp_path / "model.safetensors"), strict=True)
    fresh = timm.create_model(spec.model, pretrained=False, **spec.overrides())
    arch = spec.resolve()
    x = torch.randn(3, arch.in_chans, *arch.img_size)
    with torch.no_grad():
        assert torch.equal(loaded(x), strict.eval()(x))
    assert torch.equal(loaded.head.weight, strict.head.weight)
    assert not torch.equal(loaded.head.weight, fresh.head.weight)  # the checkpoint's head, not timm's random one

    data_config = timm.data.resolve_data_config(model=loaded)
    norm = template_set.config.normalization.for_channels(arch.in_chans)
    assert data_config["input_size"] == (arch.in_chans, *arch.img_size)
    assert tuple(data_config["mean"]) == norm.mean and tuple(data_config["std"]) == norm.std
    assert (data_config["crop_pct"], data_config["interpolation"]) == (1.0, "bilinear")  # as the fitting saw them

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == spec.model and config["num_classes"] == arch.num_classes
    assert config["model_args"] == spec.overrides() and config["num_features"] == arch.embed_dim
    assert config["pretrained_cfg"]["num_classes"] == arch.num_classes  # equal: timm keeps the head


def test_the_model_card_has_hub_metadata_and_states_what_the_numbers_are(template_set):
    meta = {
        "spec": tiny_spec(depth=4, embed_dim=64, num_heads=2).model_dump(mode="json", exclude_none=True),
        "code_version": "0.1.0",
        "method": "wave",
        "template_set": {"name": "demo", "version": 3, "digest": "d" * 64},
        "fit": {"steps": 200, "lr": 0.002, "batch_size": 64, "seed": 0, "calibration_samples": 1024,
                "calibration_loss_before": 2.31, "calibration_loss_after": 0.52, "calibration_accuracy_before": 0.11,
                "calibration_accuracy_after": 0.955, "heldout_samples": 2000, "heldout_accuracy": 0.861},
        "calibration": {"uri": "idx:///data/FashionMNIST", "samples": 2048, "digest": "c" * 64},
        "normalization": {"mean": [0.286], "std": [0.353]},
        "provenance": {"width_factor": 2, "depth": {"auxiliary": 2, "descendant": 4}, "fresh_parameters": ["head"]},
        "warnings": [{"code": "input_size", "message": "input size 224x224 differs from the template set's 28x28"},
                     {"code": "normalization", "message": "inputs are normalized with the template set's mean"}],
        "card_row": {"depth": 4, "embed_dim": 64, "num_heads": 2, "params": 214_000, "accuracy": 0.861,
                     "baseline_accuracy": 0.702, "fit_steps": 200, "seconds": 1.7},
    }  # fmt: skip
    card = model_card(meta)
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    metadata = yaml.safe_load(front)
    assert metadata["library_name"] == "timm" and {"timm", "learngene", "wave"} <= set(metadata["tags"])
    assert metadata["license"] == "other" and "base_model" not in metadata  # never null; no hub id, no base_model
    assert ModelCard(card).data.library_name == "timm"  # the Hub's own parser reads it
    named = yaml.safe_load(
        model_card({**meta, "license": "apache-2.0", "base_model": "timm/vit_small_patch14_dinov2.lvd142m"}).split(
            "---\n"
        )[1]
    )
    assert named["license"] == "apache-2.0" and named["base_model"] == ["timm/vit_small_patch14_dinov2.lvd142m"]
    assert named["base_model_relation"] == "finetune"
    assert "`demo@3` (digest `" + "d" * 64 + "`)" in body and "method: `wave`" in body
    assert "## Fitting (calibration-set metrics)" in body and "0.11 -> 0.955 (on 1024 of the calibration" in body
    assert "- held-out accuracy: 0.861 on 2000 images" in body
    assert "mean [0.286], std [0.353]" in body and "(1, 28, 28)" in body
    assert "| depth | embed_dim | num_heads | params | accuracy | baseline_accuracy | fit_steps | seconds |" in body
    assert "| 4 | 64 | 2 | 214000 | 0.861 | 0.702 | 200 | 1.7 |" in body
    assert "## Warnings\n\n- input size 224x224 differs from the template set's 28x28 (`input_size`)" in body
    assert "- inputs are normalized with the template set's mean (`normalization`)" in body

    bare = model_card({**meta, "warnings": [], "card_row": None, "fit": {"steps": 0}, "normalization": None})
    assert "## Warnings" not in bare and "Quality card" not in bare and "pure inheritance (0 steps)" in bare
    assert "timm's default for the architecture" in bare


def test_client_text_cannot_escape_its_place_in_the_model_card():
    """The calibration URI is the client's text: backticks, newlines and HTML in it stay inside one code span on
    one line; a warning's text is escaped Markdown (no link, image or HTML comes of it)."""
    hostile = "idx:///d/x``\n\n<script>alert(1)</script>\n# Owned\n[click](http://evil)"
    meta = {
        "spec": tiny_spec(depth=2).model_dump(mode="json", exclude_none=True), "method": "wave",
        "fit": {"steps": 2, "lr": 0.1, "batch_size": 8, "seed": 0},
        "calibration": {"uri": hostile, "samples": 8, "digest": "c" * 64},
        "warnings": [{"code": "x", "message": "see <img src=x onerror=alert(1)> and [this](http://evil)"}],
    }  # fmt: skip
    card = model_card(meta)
    line = next(line for line in card.splitlines() if line.startswith("- calibration data: "))
    assert line.startswith("- calibration data: ```idx:///d/x``\\n\\n<script>") and line.count("```") == 2
    assert not any(line.startswith(("<script", "# Owned", "[click]")) for line in card.splitlines())
    assert "see \\<img src=x onerror=alert\\(1\\)\\> and \\[this\\]\\(http://evil\\)" in card
    assert ModelCard(card).data.library_name == "timm"


def test_a_cached_result_without_the_folder_is_not_reused(tmp_path):
    """Results cached before checkpoints came as folders name no `files`: the job runs again and stores them."""
    from jobs.runner import stored_whole

    artifacts = LocalArtifacts(tmp_path)
    (tmp_path / "weights").write_bytes(b"w" * 10)
    artifacts.publish(tmp_path / "weights", "a" * 64)
    old = {"checkpoint": {"sha256": "a" * 64, "bytes": 10, "parameters": 1}}
    assert not stored_whole(artifacts, old)
    files = {"model.safetensors": {"sha256": "a" * 64, "bytes": 10}, "config.json": {"sha256": "b" * 64, "bytes": 2}}
    assert not stored_whole(artifacts, {**old, "files": files})  # config.json is not stored
    (tmp_path / "config").write_bytes(b"{}")
    artifacts.publish(tmp_path / "config", "b" * 64, ".json")
    assert stored_whole(artifacts, {**old, "files": files})
