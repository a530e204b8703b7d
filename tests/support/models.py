"""Tiny ViT specs and template sets for the tests."""

from __future__ import annotations

import torch

from learngene import CondenseConfig, Normalization, TemplatedViT, TemplateSet, ViTSpec, WeightScalers, WeightTemplates
from learngene.families import to_native
from learngene.train.condense import build_auxiliary

TINY = dict(img_size=28, patch_size=7, in_chans=1, num_classes=10)


def tiny_spec(**overrides) -> ViTSpec:
    return ViTSpec(model="vit_tiny_patch16_224", **{**TINY, "embed_dim": 32, "num_heads": 1, "depth": 3, **overrides})


def random_template_set(spec: ViTSpec, seed: int = 0, jitter: float = 0.3, **config_kw) -> TemplateSet:
    """An untrained but non-trivial template set: random templates, scalers and free parameters."""
    torch.manual_seed(seed)
    config = CondenseConfig(recipe="plain", aux=spec, steps=1, **config_kw)
    aux = build_auxiliary(config, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for p in aux.parameters():
            p.add_(jitter * torch.randn_like(p) * p.std().clamp_min(0.05))
    return TemplateSet.from_auxiliary(aux, name="random", normalization=Normalization(mean=(0.5,), std=(0.25,)))


def aux_logits(template_set: TemplateSet, images: torch.Tensor) -> torch.Tensor:
    """The auxiliary model rebuilt straight from the stored tensors, not through `inherit`."""
    config = template_set.config
    templates, scalers = WeightTemplates(config.templates), WeightScalers(config.templates, config.arch)
    with torch.no_grad():
        for module, stored in ((templates, template_set.templates), (scalers, template_set.scalers)):
            for kind, tensor in module.tensors.items():
                tensor.copy_(stored[kind])
    aux = TemplatedViT(config.aux, templates, scalers)
    aux.vit.load_state_dict(to_native(template_set.free, config.arch), strict=True)  # canonical names stored
    with torch.no_grad():
        return aux.eval()(images)
