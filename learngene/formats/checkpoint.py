"""Loading models from and exporting them to safetensors state dicts (the only weight format read from outside).

An exported checkpoint is exactly `timm.create_model(name, **overrides).state_dict()` in keys, shapes and dtypes, and
carries its provenance (spec, template set, method, fitting summary, input normalization) as JSON under the
`learngene` key of the safetensors header.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import timm
import torch
from pydantic import BaseModel
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from learngene.errors import CheckpointError, NonFiniteWeights, SpecError
from learngene.formats.files import save_safetensors_atomic, sha256_file
from learngene.layers.generated import GeneratedViT
from learngene.spec import ViTSpec
from learngene.version import __version__

METADATA_KEY = "learngene"


def check_finite(tensors: dict[str, Tensor], what: str) -> None:
    """Raise `NonFiniteWeights` naming the tensors of `tensors` that hold NaN or Inf."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        shown = ", ".join(bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise NonFiniteWeights(f"{len(bad)} of {len(tensors)} tensors of {what} hold NaN or Inf ({shown})")


class CheckpointInfo(BaseModel):
    path: str
    sha256: str
    bytes: int
    parameters: int


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode, no gradients: how ancestors and teachers are used."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_state(path: str | Path) -> dict[str, Tensor]:
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path.name}: only .safetensors checkpoints are accepted")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def load_model(model: str, checkpoint: str | Path, overrides: dict[str, Any] | None = None) -> nn.Module:
    """Any timm model with its weights from a safetensors state dict, loaded strictly."""
    if not timm.is_model(model):
        raise SpecError("model", f"{model!r} is not a timm model name")
    state = load_state(checkpoint)
    net = timm.create_model(model, pretrained=False, **(overrides or {}))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{checkpoint} does not fit {model} {overrides or {}}: {exc}") from None
    return net


def load_ancestor(model: str, checkpoint: str | Path, overrides: dict[str, Any] | None = None) -> nn.Module:
    return freeze(load_model(model, checkpoint, overrides))


def state_for_export(model: nn.Module) -> dict[str, Tensor]:
    if isinstance(model, GeneratedViT):
        return model.materialized_state()
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}


def export_checkpoint(
    model: nn.Module, path: str | Path, *, spec: ViTSpec, metadata: dict[str, Any] | None = None
) -> CheckpointInfo:
    """Save a timm state dict for `spec` as safetensors (atomically) and return its size and sha256."""
    path = Path(path)
    state = {k: v.cpu() for k, v in state_for_export(model).items()}
    with torch.device("meta"):
        reference = spec.build().state_dict()
    mismatched = [
        k
        for k in reference.keys() | state.keys()
        if k not in state
        or k not in reference
        or state[k].shape != reference[k].shape
        or state[k].dtype != reference[k].dtype
    ]
    if mismatched:
        raise CheckpointError(f"state dict does not match {spec.model} {spec.overrides()}: {sorted(mismatched)[:5]}")
    check_finite(state, "the checkpoint")  # before anything is written: a broken model is never stored or cached
    info = {
        "spec": spec.model_dump(mode="json", exclude_none=True),
        "code_version": __version__,
        **(metadata or {}),
    }
    if getattr(model, "provenance", None):
        info.setdefault("provenance", model.provenance)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors_atomic(state, path, metadata={"format": "pt", METADATA_KEY: json.dumps(info, sort_keys=True)})
    return CheckpointInfo(
        path=str(path),
        sha256=sha256_file(path),
        bytes=path.stat().st_size,
        parameters=sum(t.numel() for t in state.values()),
    )


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The provenance JSON stored in a checkpoint's safetensors header ({} when absent)."""
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    return json.loads(header[METADATA_KEY]) if METADATA_KEY in header else {}
