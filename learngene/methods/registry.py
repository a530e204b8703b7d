"""One registry of the ways to initialize a descendant, the way timm registers models: a method is a class with a
`name`, registered by `@register_method`, and everything else (the API's `method` field, the CLI's help, admission)
reads the registry. A new method is one new module that registers itself, plus its tests."""

from __future__ import annotations

import abc
from typing import ClassVar, Literal

import torch
from torch import nn

from learngene.methods.ancestor import AncestorWeights
from learngene.spec import Architecture, SpecError, ViTSpec
from learngene.template_set import TemplateSet, TemplateSetConfig

Needs = Literal["template_set", "ancestor"] | None


class Method(abc.ABC):
    """How one method checks and builds a descendant. `needs` says what it inherits from: a template set of its own
    kind (the learngenes), an ancestor's weights (the ancestor baselines), or nothing."""

    name: ClassVar[str]
    needs: ClassVar[Needs] = None

    def check(
        self, spec: ViTSpec, dst: Architecture, template_config: TemplateSetConfig | None, ancestor: Architecture | None
    ) -> Architecture:
        """The descendant's architecture, or a `SpecError` naming what this method cannot build."""
        return dst

    @abc.abstractmethod
    def build(
        self,
        spec: ViTSpec,
        *,
        template_set: TemplateSet | None,
        ancestor: AncestorWeights | None,
        seed: int,
        noise: float,
        device: torch.device | str,
    ) -> nn.Module: ...


_REGISTRY: dict[str, Method] = {}


def register_method(cls: type[Method]) -> type[Method]:
    if cls.name in _REGISTRY:
        raise ValueError(f"method {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def get_method(name: str) -> Method:
    if name not in _REGISTRY:
        raise SpecError("method", f"unknown method {name!r}; known: {', '.join(method_names())}")
    return _REGISTRY[name]


_GROUPS = {"template_set": 0, "ancestor": 1, None: 2}  # learngenes first, then the baselines


def method_names(needs: Needs | Literal["any"] = "any") -> tuple[str, ...]:
    """Registered names, learngenes first, then in registration order; only those needing `needs` unless 'any'."""
    ordered = sorted(_REGISTRY.values(), key=lambda m: _GROUPS[m.needs])
    return tuple(m.name for m in ordered if needs == "any" or m.needs == needs)
