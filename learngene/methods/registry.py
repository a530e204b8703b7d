"""One registry of the ways to initialize a descendant, the way timm registers models: a method is a class with a
`name`, registered by `@register_method`, and everything else (the API's `method` field, the CLI's help, admission,
the condensation) reads the registry. A new method is one new module that registers itself, plus its tests.

A `Method` checks and builds descendants. A `Learngene` is a method with a condensation of its own: it also says
how its auxiliary model is built and initialized, whether it starts from the ancestor, and its loss weights."""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar, runtime_checkable

import torch
from torch import nn

from learngene.errors import SpecError
from learngene.formats.template_set import TemplateSet, TemplateSetConfig
from learngene.layers.generated import GeneratedViT
from learngene.layers.templates import TemplateConfig
from learngene.methods.ancestor_weights import AncestorWeights
from learngene.spec import Architecture, ViTSpec

Needs = Literal["template_set", "ancestor"] | None


@runtime_checkable
class Resettable(Protocol):
    """An auxiliary model with an initialization rule of its own (what `Learngene.init_auxiliary` calls by default)."""

    def reset_parameters(self, generator: torch.Generator | None = None) -> None: ...


class Method(abc.ABC):
    """How one method checks and builds a descendant. `needs` says what it inherits from: a template set of its own
    kind (the learngenes), an ancestor's weights (the ancestor baselines), or nothing."""

    name: ClassVar[str]
    needs: ClassVar[Needs] = None
    # Its descendants carry scalers that calibration data fits, with an ancestor as the optional teacher (WAVE).
    fits_scalers: ClassVar[bool] = False

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


AuxT = TypeVar("AuxT", bound=GeneratedViT)


class Learngene(Method, Generic[AuxT]):
    """A method condensed from an ancestor into a template set of its own kind, then inherited from that set.
    `AuxT`: the class of its auxiliary model, which its hooks receive."""

    needs = "template_set"
    default_ce: ClassVar[float] = 0.0  # weight of the CE term when not given: TLEG and SWS distil purely (METHOD.md)

    def check_auxiliary(self, arch: Architecture, templates: TemplateConfig, stages: list[int]) -> None:
        """A `SpecError` naming the condensation field this method cannot build its auxiliary model with."""

    @abc.abstractmethod
    def new_auxiliary(self, aux: ViTSpec, templates: TemplateConfig | None, stages: list[int] | None) -> AuxT:
        """The auxiliary model, not yet initialized (so it also builds on the meta device); each method reads the
        parts of the set's configuration it has (templates for WAVE, stages for SWS)."""

    def init_auxiliary(self, aux: AuxT, generator: torch.Generator) -> None:
        """Initialize the learngene and the free parameters (the method's own rule)."""
        if not isinstance(aux, Resettable):
            raise TypeError(
                f"{type(aux).__name__} has no reset_parameters: {type(self).__name__} must override init_auxiliary"
            )
        aux.reset_parameters(generator)

    def start_from_ancestor(self, aux: AuxT, ancestor: nn.Module, init: str) -> bool:
        """Start the learngene from the ancestor's weights where the method can; True if it did. `init` is
        'auto' (when possible), 'ancestor' (required) or 'random' (never)."""
        return False


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


def get_learngene(name: str) -> Learngene[Any]:
    method = get_method(name)
    if not isinstance(method, Learngene):
        raise SpecError("method", f"{name!r} is not a learngene; known: {', '.join(method_names('template_set'))}")
    return method


_GROUPS = {"template_set": 0, "ancestor": 1, None: 2}  # learngenes first, then the baselines


def method_names(needs: Needs | Literal["any"] = "any") -> tuple[str, ...]:
    """Registered names, learngenes first, then in registration order; only those needing `needs` unless 'any'."""
    ordered = sorted(_REGISTRY.values(), key=lambda m: _GROUPS[m.needs])
    return tuple(m.name for m in ordered if needs == "any" or m.needs == needs)
