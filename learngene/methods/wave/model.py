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
        arch, slots = spec.resolve(), templates.config.slots()
        super().__init__(spec, (slot.param for slot in slots if slot.present(arch)), vit)
        self.templates = templates
        self.weight_scalers = scalers
        self.selection = (
            selection  # a width that is not a multiple: composed wider, then indexed (learngene.layers.select)
        )
        # A set's layer scale, for a descendant without: composed, then folded into the rows it multiplies.
        self.folded = tuple(slot.kind for slot in slots if not slot.present(arch))

    def composed(self, kind: str) -> Tensor:
        """The weights of one kind for all layers, (L, rows[, cols]), at the descendant's shape."""
        weights = compose(self.weight_scalers.tensors[kind], self.templates.tensors[kind])
        return weights if self.selection is None else self.selection.select(kind, weights)

    def generated_weights(self) -> dict[str, Tensor]:
        """One composition per kind, for all layers at once."""
        weights = {kind: self.composed(kind) for kind in self.templates.tensors}
        for kind in self.folded:
            gamma = weights.pop(kind)  # (L, D): x + gamma * (W y + b) = x + (gamma W) y + gamma b
            for target in SLOTS[kind].scales:
                if target in weights:
                    rows = weights[target]
                    weights[target] = rows * (gamma.unsqueeze(-1) if rows.dim() == 3 else gamma)
        out: dict[str, Tensor] = {}
        for kind, stack in weights.items():
            param = SLOTS[kind].param
            out.update({block_param_name(layer, param): w for layer, w in enumerate(stack.unbind(0))})
        return out

    def method_config(self) -> dict:
        return {"templates": self.templates.config}

    def learngene(self) -> dict[str, Tensor]:
        return dict(self.templates.tensors)

    def scalers(self) -> dict[str, Tensor]:
        return dict(self.weight_scalers.tensors)
