"""WAVE as a registered method: how its descendants are checked and built (inherited from weight templates, in
generating form: the scalers are fitted next, `learngene.methods.wave.fit`) and how its auxiliary model is made and
started for a condensation (METHOD.md, WAVE)."""

from __future__ import annotations

from typing import TypeGuard

import torch
from timm.models.eva import Eva
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from learngene.errors import SpecError, UserError
from learngene.families import to_canonical
from learngene.layers.templates import TemplateConfig, WeightScalers, WeightTemplates, templates_from_weights
from learngene.methods.registry import Learngene, register_method
from learngene.methods.wave.inherit import check_compatible, inherit
from learngene.methods.wave.model import TemplatedViT
from learngene.spec import Architecture, ViTSpec


@register_method
class Wave(Learngene[TemplatedViT]):
    """Weight templates and Kronecker scalers: any depth and any width timm builds (exact at k x D0, indexed down from
    the next multiple otherwise: `learngene.layers.select`); the scalers are fitted next."""

    name, fits_scalers, default_ce = "wave", True, 1.0

    def check(self, spec, dst, template_config, ancestor) -> Architecture:
        return check_compatible(template_config, spec)

    def build(self, spec, *, template_set, ancestor, seed, noise, device) -> nn.Module:
        return inherit(template_set, spec, noise=noise, seed=seed, device=device)  # in generating form

    def check_auxiliary(self, arch: Architecture, templates: TemplateConfig, stages: list[int]) -> None:
        templates.check(arch, what="aux.embed_dim")

    def new_auxiliary(self, aux: ViTSpec, templates: TemplateConfig | None, stages: list[int] | None) -> TemplatedViT:
        if templates is None:
            raise SpecError("templates", "WAVE's auxiliary model needs a template configuration")
        arch = aux.resolve()
        templates = templates.for_arch(arch)  # the kinds this family has
        return TemplatedViT(aux, WeightTemplates(templates), WeightScalers(templates, arch))

    def init_auxiliary(self, aux: TemplatedViT, generator: torch.Generator) -> None:
        aux.templates.reset_parameters(generator)  # [ours]
        aux.weight_scalers.reset_parameters(generator)

    def start_from_ancestor(self, aux: TemplatedViT, ancestor: nn.Module, init: str) -> bool:
        """WAVE's templates and scalers from a PCA of the ancestor's block weights, and its embeddings, norms and head
        where shapes agree (METHOD.md: "initialize templates from the ancestor's weights when its width equals D0").

        Measured in the benchmark (BENCHMARKS.md, ablation): the auxiliary model ends closer to the ancestor and its
        descendants fine-tune better than from random templates."""
        if init == "random":
            return False
        if not _same_block_shapes(ancestor, aux):
            if init == "ancestor":
                raise UserError("init='ancestor' needs a timm ViT ancestor with the auxiliary model's block shapes")
            return False
        arch, size = aux.arch, aux.templates.config.size
        state = to_canonical(ancestor.state_dict(), arch)  # the ancestor is of the auxiliary model's family
        depth = len(ancestor.blocks)
        layers = [round(j * (depth - 1) / max(arch.depth - 1, 1)) for j in range(arch.depth)]  # same relative depth
        with torch.no_grad():
            for slot in aux.templates.config.slots():
                weights = torch.stack([state[f"blocks.{i}.{slot.param}"] for i in range(depth)])
                count = aux.templates.tensors[slot.kind].shape[0]
                templates, scalers = templates_from_weights(weights, slot, count, size)
                aux.templates.tensors[slot.kind].copy_(templates)
                aux.weight_scalers.tensors[slot.kind].copy_(scalers[layers])
            free = aux.free_state()
            aux.load_free({k: v for k, v in state.items() if k in free and v.shape == free[k].shape})
        return True


def _same_block_shapes(ancestor: nn.Module, aux: TemplatedViT) -> TypeGuard[VisionTransformer]:
    """Whether `ancestor` is a timm ViT (or Eva) of the auxiliary model's family with its block shapes."""
    if not isinstance(ancestor, VisionTransformer | Eva) or len(ancestor.blocks) == 0:
        return False
    if (type(ancestor) is Eva) != (aux.arch.block == "eva"):
        return False  # another family's names: its blocks cannot be read in the auxiliary model's
    state = to_canonical(ancestor.state_dict(), aux.arch)
    for slot in aux.templates.config.slots():
        weight = state.get(f"blocks.0.{slot.param}")
        if weight is None or tuple(weight.shape) != tuple(axis.size(aux.arch) for axis in slot.axes):
            return False
    return True
