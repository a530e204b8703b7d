"""Every way this project can initialize a descendant, selectable by name (the registry in `registry.py`).

    learngenes (need a template set of their method):  wave (wave/), tleg (tleg.py), sws (sws.py)
    baselines with an ancestor (need its weights):      weight_selection, heru_lg, auto_lg (baselines.py)
    baselines from nothing:                             timm, mimetic                      (baselines.py)

Each method is one module (WAVE one folder) holding its tensor code and its registered class; the building blocks
they share (weight templates, generated ViTs, width selection) are in `learngene.layers`.

`check_method` says whether a method can produce a size (raising `SpecError` naming the field, e.g. TLEG at another
width); `build_descendant` builds it. WAVE descendants come back in generating form (their scalers are fitted
next); all others are plain timm models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from learngene.errors import SpecError
from learngene.formats.template_set import TemplateSet, TemplateSetConfig
from learngene.methods.ancestor_weights import AncestorWeights
from learngene.methods.registry import Learngene, Method, get_learngene, get_method, method_names, register_method
from learngene.spec import Architecture, ViTSpec

# Importing a method's module registers it; this order is the one the API, the CLI and the benchmark list them in.
import learngene.methods.wave.method  # noqa: F401  # isort: skip
from learngene.methods import tleg  # noqa: F401  # isort: skip
from learngene.methods import sws  # noqa: F401  # isort: skip
from learngene.methods import baselines  # noqa: F401  # isort: skip

METHODS = method_names()
LEARNGENE_METHODS = method_names("template_set")
ANCESTOR_METHODS = method_names("ancestor")
if TYPE_CHECKING:  # a Literal of names known only at run time: a str to the type checker
    MethodName = str
    LearngeneName = str
else:  # pydantic validates against (and documents) the registered names
    MethodName = Literal[METHODS]  # the API's `method` field: whatever is registered
    LearngeneName = Literal[LEARNGENE_METHODS]  # what a condensation can produce

__all__ = [
    "ANCESTOR_METHODS",
    "LEARNGENE_METHODS",
    "METHODS",
    "AncestorWeights",
    "Learngene",
    "LearngeneName",
    "Method",
    "MethodName",
    "build_descendant",
    "check_method",
    "get_learngene",
    "get_method",
    "register_method",
]


def check_method(
    method: str,
    spec: ViTSpec,
    *,
    template_config: TemplateSetConfig | None = None,
    ancestor: Architecture | None = None,
) -> Architecture:
    """The descendant's architecture, or a `SpecError` naming what this method cannot do."""
    chosen = get_method(method)
    if chosen.needs == "template_set":
        if template_config is None:
            raise SpecError("template_set", f"method {method!r} needs a template set")
        if template_config.method != method:
            raise SpecError(
                "method", f"the template set holds a {template_config.method!r} learngene, not a {method!r} one"
            )
    if chosen.needs == "ancestor" and ancestor is None:
        raise SpecError("ancestor", f"method {method!r} needs an ancestor checkpoint")
    return chosen.check(spec, spec.resolve(), template_config, ancestor)


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
    model = get_method(method).build(
        spec, template_set=template_set, ancestor=ancestor, seed=seed, noise=noise, device=device
    )
    if not getattr(model, "provenance", None):  # WAVE's inheritance records its own, richer one
        provenance: dict[str, Any] = {"method": method, "seed": seed}
        if template_set is not None:
            provenance["template_set"] = template_set.ref
        if ancestor is not None:
            provenance["ancestor_sha256"] = ancestor.sha256
        # torch types nn.Module.__setattr__'s value as Tensor | Module, but any plain attribute may be set
        model.provenance = provenance  # type: ignore[assignment]
    return model.to(device)
