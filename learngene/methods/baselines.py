"""The baselines the learngenes are compared with: from an ancestor's weights (Weight Selection, Heru-LG, Auto-LG)
and from nothing (timm's init, mimetic init). The tensor code is in `learngene.baselines`."""

from __future__ import annotations

from torch import nn

from learngene import baselines
from learngene.methods.registry import Method, register_method
from learngene.spec import Architecture


class FromAncestor(Method):
    needs = "ancestor"

    def build(self, spec, *, template_set, ancestor, seed, noise, device) -> nn.Module:
        return getattr(baselines, self.name)(ancestor.state, ancestor.arch, spec, seed)


@register_method
class WeightSelection(FromAncestor):
    """The first L' layers, every tensor uniformly sub-selected (only shrinks)."""

    name = "weight_selection"

    def check(self, spec, dst, template_config, ancestor) -> Architecture:
        baselines.check_weight_selection(ancestor, dst)
        return dst


class LayerCopy(FromAncestor):
    def check(self, spec, dst, template_config, ancestor) -> Architecture:
        baselines.check_layer_learngene(ancestor, dst, self.name)
        return dst


@register_method
class HeruLg(LayerCopy):
    """The ancestor's last 3 layers, random elsewhere."""

    name = "heru_lg"


@register_method
class AutoLg(LayerCopy):
    """The ancestor's first 3 layers, random elsewhere."""

    name = "auto_lg"


@register_method
class Timm(Method):
    """timm's own initialization."""

    name = "timm"

    def build(self, spec, *, template_set, ancestor, seed, noise, device) -> nn.Module:
        return baselines.timm_default(spec, seed)


@register_method
class Mimetic(Method):
    """Mimetic initialization of the attention weights."""

    name = "mimetic"

    def build(self, spec, *, template_set, ancestor, seed, noise, device) -> nn.Module:
        return baselines.mimetic(spec, seed)
