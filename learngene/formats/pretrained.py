"""A checkpoint as timm and the Hugging Face Hub lay out a model: a folder of `model.safetensors` (the weights),
`config.json` (timm's format: `architecture`, `num_classes`, `num_features`, `model_args`, `pretrained_cfg`) and
`README.md` (a model card with YAML front matter). `timm.create_model("local-dir:DIR", pretrained=True)` builds the
model with every weight, head included, and `timm.data.resolve_data_config(model=...)` gives its preprocessing.

`config.json` and `README.md` are pure functions of the provenance in the checkpoint's safetensors header (spec,
normalization, template set, fitting, warnings, the quality card's row): the same checkpoint always gives the same
bytes, so they are content-addressed like the checkpoint itself.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, cast

import torch
import yaml  # timm's own dependency (as huggingface_hub's)

from learngene.errors import CheckpointError
from learngene.formats.ancestors import CONFIG, WEIGHTS
from learngene.formats.checkpoint import read_metadata
from learngene.formats.files import atomic_path, sha256_file
from learngene.formats.template_set import FileEntry, Normalization
from learngene.spec import ViTSpec

CARD = "README.md"
FOLDER_FILES = (WEIGHTS, CONFIG, CARD)  # what a checkpoint folder holds, weights first
# How the evaluation transform prepares images (learngene.data.transforms.eval_transform: shorter side to the input
# size, bilinear, centre crop, no margin): what the descendant was fitted on.
PREPROCESSING = {"interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center"}
CARD_COLUMNS = ("depth", "embed_dim", "num_heads", "params", "accuracy", "baseline_accuracy", "fit_steps", "seconds")


def hf_config(spec: ViTSpec, normalization: Normalization | None) -> dict[str, Any]:
    """timm's `config.json` for a checkpoint of `spec` whose inputs are normalized with `normalization` (None:
    timm's default for the architecture). `model_args` holds every override, so `local-dir:` rebuilds exactly the
    exported state dict; `pretrained_cfg.num_classes` equals the head's, so timm keeps the trained head."""
    arch = spec.resolve()
    with torch.device("meta"):
        model = spec.build()
    default = cast(dict[str, Any], model.pretrained_cfg)  # a dict set by timm's builder (typed by __getattr__)
    norm = normalization or Normalization(mean=tuple(default["mean"]), std=tuple(default["std"]))
    norm = norm.for_channels(arch.in_chans)
    return {
        "architecture": spec.model,
        "num_classes": arch.num_classes,
        "num_features": model.num_features,
        "global_pool": arch.global_pool,
        "model_args": spec.overrides(),
        "pretrained_cfg": {
            "input_size": [arch.in_chans, *arch.img_size],
            "fixed_input_size": True,
            **PREPROCESSING,
            "mean": list(norm.mean),
            "std": list(norm.std),
            "num_classes": arch.num_classes,
            "first_conv": default["first_conv"],
            "classifier": default["classifier"],
        },
    }


def model_card(meta: dict[str, Any]) -> str:
    """`README.md` for a checkpoint whose header provenance is `meta` (`read_metadata`)."""
    spec = ViTSpec.model_validate(meta["spec"])
    config = hf_config(spec, _normalization(meta))
    pretrained, provenance = config["pretrained_cfg"], meta.get("provenance") or {}
    method = meta.get("method") or provenance.get("method") or "unknown"
    template = meta.get("template_set")
    warnings, card_row = meta.get("warnings") or [], meta.get("card_row")
    # Hugging Face's conventions: the license the template set was published under ("other": terms of its own),
    # never null; `base_model` only when the ancestor's hub id is known, never an architecture name.
    front: dict[str, Any] = {
        "library_name": "timm",
        "pipeline_tag": "image-classification",
        "tags": ["image-classification", "timm", "learngene", method],
        "license": meta.get("license") or "other",
    }
    if meta.get("base_model"):
        front["base_model"] = [meta["base_model"]]
        front["base_model_relation"] = "finetune"  # its weights derive from the base model's (no closer relation)
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", ""]
    ref = f"{template['name']}@{template['version']}" if template else None
    source = f"template set {_code(ref)}" if template else f"method {_code(method)}"
    lines += [
        f"# {spec.model} ({_overrides_text(spec)})",
        "",
        f"An **initialization** made by learngene from the {source}: weights to start training "
        "from, not a trained classifier. Its `license` is the template set's, as given by whoever condensed it; the "
        "terms of the ancestor and of the data it was condensed from apply too.",
    ]
    if warnings:  # first: what the user should know before using it
        lines += ["", "## Warnings", ""] + [f"- {_text(w['message'])} ({_code(w['code'])})" for w in warnings]
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "import timm",
        "",
        'model = timm.create_model("local-dir:PATH/TO/THIS/FOLDER", pretrained=True)  # every weight, head included',
        "data_config = timm.data.resolve_data_config(model=model)  # the normalization below",
        "```",
        "",
        "## Lineage",
        "",
        f"- method: {_code(method)}",
    ]
    if template:
        digest = f" (digest {_code(template['digest'])})" if template.get("digest") else ""
        lines.append(f"- template set: {_code(ref)}{digest}")
    if meta.get("ancestor_sha256"):
        lines.append(f"- ancestor (weights sha256): {_code(meta['ancestor_sha256'])}")
    if "width_factor" in provenance:
        depth = provenance.get("depth") or {}
        fresh = ", ".join(provenance.get("fresh_parameters") or []) or "none"
        lines.append(
            f"- inherited at width factor {provenance['width_factor']}, depth {depth.get('auxiliary')} -> "
            f"{depth.get('descendant')}; parameters drawn fresh by timm: {fresh}"
        )
    lines.append(f"- code version: {_code(meta.get('code_version', 'unknown'))}")
    lines += ["", "## Fitting (calibration-set metrics)", ""]
    lines += _fit_lines(meta.get("fit") or {}, meta.get("calibration"))
    lines += [
        "",
        "## Input",
        "",
        f"- input size (channels, height, width): {tuple(pretrained['input_size'])}",
        f"- normalization: mean {pretrained['mean']}, std {pretrained['std']}"
        + ("" if _normalization(meta) else " (timm's default for the architecture: none was recorded)"),
        f"- resize: {pretrained['interpolation']}, shorter side to the input size, centre crop (crop_pct "
        f"{pretrained['crop_pct']})",
    ]
    if card_row:
        lines += ["", "## Quality card row (this size, from the template set's card)", ""]
        columns = [c for c in CARD_COLUMNS if c in card_row] + [c for c in card_row if c not in CARD_COLUMNS]
        lines += ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
        lines.append("| " + " | ".join(_cell(card_row[c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def companion_files(meta: dict[str, Any]) -> dict[str, bytes]:
    """`config.json` and `README.md` of a checkpoint whose header provenance is `meta`, as bytes."""
    config = hf_config(ViTSpec.model_validate(meta["spec"]), _normalization(meta))
    return {CONFIG: (json.dumps(config, indent=2) + "\n").encode(), CARD: model_card(meta).encode()}


def write_companions(folder: str | Path) -> dict[str, FileEntry]:
    """Write `config.json` and `README.md` beside `folder/model.safetensors` (atomically, from its header); returns
    the three files' sha256 and size."""
    folder = Path(folder)
    meta = read_metadata(folder / WEIGHTS)
    if "spec" not in meta:
        raise CheckpointError(f"{WEIGHTS} has no learngene metadata: config.json cannot be derived from it")
    for name, data in companion_files(meta).items():
        with atomic_path(folder / name) as tmp:
            tmp.write_bytes(data)
    return {name: FileEntry(sha256=sha256_file(folder / name), bytes=(folder / name).stat().st_size)
            for name in FOLDER_FILES}  # fmt: skip


def _normalization(meta: dict[str, Any]) -> Normalization | None:
    stored = meta.get("normalization")
    return Normalization.model_validate(stored) if stored else None


def _overrides_text(spec: ViTSpec) -> str:
    return ", ".join(f"{k}={v}" for k, v in spec.overrides().items()) or "timm defaults"


def _fit_lines(fit: dict[str, Any], calibration: dict[str, Any] | None) -> list[str]:
    if not fit.get("steps"):
        return ["- no fitting: pure inheritance (0 steps)"]
    lines = [
        f"- {fit['steps']} steps, lr {fit.get('lr')}, batch size {fit.get('batch_size')}, seed {fit.get('seed')}",
        f"- calibration loss: {_cell(fit.get('calibration_loss_before'))} -> "
        f"{_cell(fit.get('calibration_loss_after'))}",
    ]
    if fit.get("calibration_accuracy_after") is not None:
        lines.append(
            f"- calibration accuracy: {_cell(fit.get('calibration_accuracy_before'))} -> "
            f"{_cell(fit['calibration_accuracy_after'])} (on {fit.get('calibration_samples')} of the calibration "
            "images themselves: not a held-out score)"
        )
    if fit.get("heldout_accuracy") is not None:
        lines.append(f"- held-out accuracy: {_cell(fit['heldout_accuracy'])} on {fit.get('heldout_samples')} images")
    if calibration:
        lines.append(
            f"- calibration data: {_code(calibration.get('uri'))}, {calibration.get('samples')} images "
            f"(digest {_code(calibration.get('digest'))})"
        )
    return lines


def _code(value: Any) -> str:
    """`value` as a Markdown code span that none of its characters can leave (a calibration URI is the client's
    text): control characters shown as escapes (a newline could end the paragraph), and a fence longer than any
    run of backticks inside."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in str(value))
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _text(value: Any) -> str:
    """`value` as literal Markdown text: its punctuation escaped, so that no link, image, HTML or emphasis comes of
    it."""
    text = "".join(c if c.isprintable() else " " for c in str(value))
    return re.sub(r"([\\`*_\[\]{}()<>#+!|~&-])", r"\\\1", text)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)
