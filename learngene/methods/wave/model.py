"""WAVE's generating ViT: block weights composed from weight templates and per-layer scalers (Eq. 4).

The auxiliary model during condensation, and a descendant while its scalers are fitted (templates frozen).
"""

from __future__ import annotations

from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from learngene.layers.generated import GeneratedViT, block_param_name
from learngene.layers.select import WidthSelection
from learngene.layers.templates import SLOTS, WeightScalers, WeightTemplates, compose
from learngene.spec import ViTSpec


class TemplatedViT(GeneratedViT):
    method = "wave"

    def __init__(
        self,
        spec: ViTSpec,
        templates: WeightTemplates,
        scalers: WeightScalers,
        vit: VisionTransformer | None = None,
        selection: WidthSelection | None = None,
    ):
        super().__init__(spec, (slot.param for slot in templates.config.slots()), vit)
        self.templates = templates
        self.weight_scalers = scalers
        self.selection = (
            selection  # a width that is not a multiple: composed wider, then indexed (learngene.layers.select)
        )

    def generated_weights(self) -> dict[str, Tensor]:
        """One composition per kind, for all layers at once."""
        out: dict[str, Tensor] = {}
        for kind, templates in self.templates.tensors.items():
            weights = compose(self.weight_scalers.tensors[kind], templates)
            if self.selection is not None:
                weights = self.selection.select(kind, weights)
            param = SLOTS[kind].param
            out.update({block_param_name(layer, param): w for layer, w in enumerate(weights.unbind(0))})
        return out

    def method_config(self) -> dict:
        return {"templates": self.templates.config}

    def learngene(self) -> dict[str, Tensor]:
        return dict(self.templates.tensors)

    def scalers(self) -> dict[str, Tensor]:
        return dict(self.weight_scalers.tensors)
