"""The learngenes of whole layers, TLEG and SWS: any depth at the auxiliary width. Their blocks come from the
learngene's rule (`blocks`), embeddings and final norm are inherited, the head is new."""

from __future__ import annotations

from torch import nn

from learngene.errors import SpecError
from learngene.families import check_bridge, load_canonical
from learngene.formats.template_set import TemplateSet, TemplateSetConfig
from learngene.layers.generated import block_shapes
from learngene.methods.registry import AuxT, Learngene
from learngene.methods.wave.inherit import inherit_free
from learngene.spec import Architecture, ViTSpec, build_fresh


class LayerLearngene(Learngene[AuxT]):
    """TLEG and SWS: any depth at the auxiliary width; blocks from the learngene's rule, embeddings and final norm
    inherited, a new head."""

    blocks: staticmethod  # the learngene's rule: (learngene tensors, depth) -> block parameters

    def check(self, spec, dst, template_config: TemplateSetConfig | None, ancestor) -> Architecture:
        if template_config is None:
            raise SpecError("template_set", f"method {self.name!r} needs a template set")
        src = template_config.arch
        if dst.embed_dim != src.embed_dim or dst.mlp_hidden != src.mlp_hidden:
            raise SpecError(
                "embed_dim",
                f"{self.name} inherits depth only: embed_dim must be {src.embed_dim} (mlp hidden {src.mlp_hidden})",
            )
        check_bridge(src, dst)
        if block_shapes(spec) != block_shapes(template_config.aux):
            raise SpecError(
                "model",
                f"{self.name} copies whole blocks: {dst.model}'s ({dst.family}) are not those of the template set's "
                f"family ({src.family}) at its width {src.embed_dim}",
            )
        return dst

    def build(self, spec: ViTSpec, *, template_set: TemplateSet | None, ancestor, seed, noise, device) -> nn.Module:
        if template_set is None:
            raise SpecError("template_set", f"method {self.name!r} needs a template set")
        dst = spec.resolve()
        model = build_fresh(spec, seed)
        blocks = self.blocks(template_set.templates, dst.depth)
        free = {k: v for k, v in template_set.free.items() if not k.startswith("head.")}
        inherited, _ = inherit_free(free, template_set.config.arch, dst, model.state_dict())
        load_canonical(model, {**inherited, **blocks}, dst)
        return model
