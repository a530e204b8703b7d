"""An ancestor's weights as the methods that inherit from one use them (and as WAVE's distillation teacher)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from learngene.errors import CheckpointError
from learngene.formats.checkpoint import freeze, load_state, read_metadata
from learngene.formats.files import sha256_file
from learngene.formats.template_set import Normalization
from learngene.spec import Architecture, ViTSpec


@dataclass(frozen=True)
class AncestorWeights:
    """An ancestor ViT as the ancestor-based baselines use it: its spec, architecture and state dict."""

    spec: ViTSpec
    state: dict[str, Tensor]
    sha256: str
    normalization: Normalization | None = None

    @property
    def arch(self) -> Architecture:
        return self.spec.resolve()

    @classmethod
    def load(cls, model: str, checkpoint: str | Path, overrides: dict[str, Any] | None = None) -> AncestorWeights:
        spec = ViTSpec(model=model, **(overrides or {}))
        state = load_state(checkpoint)
        with torch.device("meta"):
            shapes = {k: v.shape for k, v in spec.build().state_dict().items()}
        if {k: v.shape for k, v in state.items()} != shapes:
            raise CheckpointError(f"{checkpoint} does not hold a {model} {overrides or {}} state dict")
        stored = read_metadata(checkpoint).get("normalization")
        return cls(spec, state, sha256_file(checkpoint), Normalization.model_validate(stored) if stored else None)

    def model(self) -> nn.Module:
        """The ancestor as a frozen timm model (a distillation teacher)."""
        model = self.spec.build()
        model.load_state_dict(self.state, strict=True)
        return freeze(model)
