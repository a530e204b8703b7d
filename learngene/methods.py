"""Every way this project can initialize a descendant, selectable by name.

    learngenes (need a template set of their method):  wave, tleg, sws
    baselines with an ancestor (need its weights):      weight_selection, heru_lg, auto_lg
    baselines from nothing:                             timm, mimetic

`check_method` says whether a method can produce a size (raising `SpecError` naming the field, e.g. TLEG at another
width); `build_descendant` builds it. WAVE descendants come back in generating form (their scalers are fitted
next); all others are plain timm models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from learngene import baselines, sws, tleg
from learngene.checkpoint import freeze, load_state, read_metadata
from learngene.files import sha256_file
from learngene.inherit import check_compatible, inherit, inherit_free
from learngene.spec import Architecture, SpecError, ViTSpec, build_fresh
from learngene.template_set import Normalization, TemplateSet, TemplateSetConfig

Method = Literal["wave", "tleg", "sws", "timm", "mimetic", "weight_selection", "heru_lg", "auto_lg"]
LEARNGENE_METHODS = ("wave", "tleg", "sws")
ANCESTOR_METHODS = ("weight_selection", "heru_lg", "auto_lg")
METHODS: tuple[str, ...] = (*LEARNGENE_METHODS, *ANCESTOR_METHODS, "timm", "mimetic")


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
            raise ValueError(f"{checkpoint} does not hold a {model} {overrides or {}} state dict")
        stored = read_metadata(checkpoint).get("normalization")
        return cls(spec, state, sha256_file(checkpoint), Normalization.model_validate(stored) if stored else None)

    def model(self) -> nn.Module:
        """The ancestor as a frozen timm model (a distillation teacher)."""
        model = self.spec.build()
        model.load_state_dict(self.state, strict=True)
        return freeze(model)


def check_method(
    method: str,
    spec: ViTSpec,
    *,
    template_config: TemplateSetConfig | None = None,
    ancestor: Architecture | None = None,
) -> Architecture:
    """The descendant's architecture, or a `SpecError` naming what this method cannot do."""
    if method not in METHODS:
        raise SpecError("method", f"unknown method {method!r}; known: {', '.join(METHODS)}")
    dst = spec.resolve()
    if method in LEARNGENE_METHODS:
        if template_config is None:
            raise SpecError("template_set", f"method {method!r} needs a template set")
        if template_config.method != method:
            raise SpecError(
                "method", f"the template set holds a {template_config.method!r} learngene, not a {method!r} one"
            )
        if method == "wave":
            return check_compatible(template_config, spec)
        src = template_config.arch
        if dst.embed_dim != src.embed_dim or dst.mlp_hidden != src.mlp_hidden:
            raise SpecError(
                "embed_dim",
                f"{method} inherits depth only: embed_dim must be {src.embed_dim} (mlp hidden {src.mlp_hidden})",
            )
    elif method in ANCESTOR_METHODS:
        if ancestor is None:
            raise SpecError("ancestor", f"method {method!r} needs an ancestor checkpoint")
        if method == "weight_selection":
            baselines.check_weight_selection(ancestor, dst)
        else:
            baselines.check_layer_learngene(ancestor, dst, method)
    return dst


def build_descendant(
    method: str,
    spec: ViTSpec,
    *,
    template_set: TemplateSet | None = None,
    ancestor: AncestorWeights | None = None,
    seed: int = 0,
    noise: float = 1e-6,
    device: torch.device | str = "cpu",
) -> nn.Module:
    check_method(
        method,
        spec,
        template_config=template_set.config if template_set else None,
        ancestor=ancestor.arch if ancestor else None,
    )
    if method == "wave":
        return inherit(template_set, spec, noise=noise, seed=seed, device=device)
    if method in ("tleg", "sws"):
        model = _layer_descendant(template_set, spec, seed)
    elif method == "timm":
        model = baselines.timm_default(spec, seed)
    elif method == "mimetic":
        model = baselines.mimetic(spec, seed)
    else:
        model = getattr(baselines, method)(ancestor.state, ancestor.arch, spec, seed)
    model.provenance = {"method": method, "seed": seed}
    if template_set is not None:
        model.provenance["template_set"] = template_set.ref
    if ancestor is not None:
        model.provenance["ancestor_sha256"] = ancestor.sha256
    return model.to(device)


def _layer_descendant(template_set: TemplateSet, spec: ViTSpec, seed: int) -> nn.Module:
    """TLEG/SWS: blocks from the learngene's rule, embeddings and final norm inherited, a new head."""
    rule = {"tleg": tleg.descendant_blocks, "sws": sws.descendant_blocks}[template_set.config.method]
    dst = spec.resolve()
    model = build_fresh(spec, seed)
    blocks = rule(template_set.templates, dst.depth)
    free = {k: v for k, v in template_set.free.items() if not k.startswith("head.")}
    inherited, _ = inherit_free(free, template_set.config.arch, dst, model.state_dict())
    model.load_state_dict({**inherited, **blocks}, strict=False)
    return model
