"""The learngene methods: each inherits from a template set of its own kind (METHOD.md, Inheritance)."""

from __future__ import annotations

from torch import nn

from learngene import sws, tleg
from learngene.inherit import check_compatible, inherit, inherit_free
from learngene.methods.registry import Method, register_method
from learngene.spec import Architecture, SpecError, ViTSpec, build_fresh
from learngene.template_set import TemplateSet, TemplateSetConfig


@register_method
class Wave(Method):
    """Weight templates and Kronecker scalers: any depth, widths k x D0; the scalers are fitted next."""

    name, needs = "wave", "template_set"

    def check(self, spec, dst, template_config, ancestor) -> Architecture:
        return check_compatible(template_config, spec)

    def build(self, spec, *, template_set, ancestor, seed, noise, device) -> nn.Module:
        return inherit(template_set, spec, noise=noise, seed=seed, device=device)  # in generating form


class LayerLearngene(Method):
    """TLEG and SWS: any depth at the auxiliary width; blocks from the learngene's rule, embeddings and final norm
    inherited, a new head."""

    needs = "template_set"
    blocks: staticmethod  # the learngene's rule: (learngene tensors, depth) -> block parameters

    def check(self, spec, dst, template_config: TemplateSetConfig, ancestor) -> Architecture:
        src = template_config.arch
        if dst.embed_dim != src.embed_dim or dst.mlp_hidden != src.mlp_hidden:
            raise SpecError(
                "embed_dim",
                f"{self.name} inherits depth only: embed_dim must be {src.embed_dim} (mlp hidden {src.mlp_hidden})",
            )
        return dst

    def build(self, spec: ViTSpec, *, template_set: TemplateSet, ancestor, seed, noise, device) -> nn.Module:
        dst = spec.resolve()
        model = build_fresh(spec, seed)
        blocks = self.blocks(template_set.templates, dst.depth)
        free = {k: v for k, v in template_set.free.items() if not k.startswith("head.")}
        inherited, _ = inherit_free(free, template_set.config.arch, dst, model.state_dict())
        model.load_state_dict({**inherited, **blocks}, strict=False)
        return model


@register_method
class Tleg(LayerLearngene):
    name = "tleg"
    blocks = staticmethod(tleg.descendant_blocks)


@register_method
class Sws(LayerLearngene):
    name = "sws"
    blocks = staticmethod(sws.descendant_blocks)
