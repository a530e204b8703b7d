"""SWS, stage-wise weight sharing (seeds/001; METHOD.md, SWS): the learngene is one block per stage.

The auxiliary model has stages (default 5 stages of [3, 3, 4, 3, 3] layers); all layers of a stage share one set of
block parameters. A descendant of depth L' maps its layers to the stages in order, as evenly as possible (for 12
layers and 5 stages: 0,0,0,1,1,1,2,2,3,3,4,4) and copies the stage's block; embeddings and final norm are inherited,
the head is new. Depth only: width is fixed to the auxiliary width.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from learngene.errors import SpecError
from learngene.layers.generated import (
    GeneratedViT,
    block_param_name,
    block_shapes,
    init_block_param_,
    module_key,
)
from learngene.layers.templates import TemplateConfig
from learngene.methods.layer_learngene import LayerLearngene
from learngene.methods.registry import register_method
from learngene.spec import Architecture, ViTSpec


def aux_stage_of_layers(stages: list[int] | tuple[int, ...]) -> list[int]:
    """The auxiliary model's layer -> stage map: [3, 3, 4, ...] -> [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, ...]."""
    return [s for s, n in enumerate(stages) for _ in range(n)]


def stage_of_layers(depth: int, num_stages: int) -> list[int]:
    """A descendant's layer -> stage map: layers split over the stages in order, earlier stages taking the
    remainder (12 over 5: sizes 3,3,2,2,2). [ours] With fewer layers than stages, the stages are sampled evenly
    (first and last always kept): 2 layers over 5 stages -> stages 0 and 4."""
    if depth >= num_stages:
        sizes = [depth // num_stages + (1 if s < depth % num_stages else 0) for s in range(num_stages)]
        return [s for s, n in enumerate(sizes) for _ in range(n)]
    if depth == 1:
        return [0]
    return [round(j * (num_stages - 1) / (depth - 1)) for j in range(depth)]


def gather(stage_params: dict[str, Tensor], layer_stages: list[int]) -> dict[str, Tensor]:
    """Block state entries: layer l gets its stage's parameters (indexing keeps gradients to the shared set)."""
    index = torch.tensor(layer_stages)
    out: dict[str, Tensor] = {}
    for param, stacked in stage_params.items():
        for layer, w in enumerate(stacked[index.to(stacked.device)].unbind(0)):
            out[block_param_name(layer, param)] = w
    return out


class StageSharedViT(GeneratedViT):
    method = "sws"

    def __init__(self, spec: ViTSpec, stages: list[int] | tuple[int, ...], vit=None):
        depth = spec.resolve().depth
        if sum(stages) != depth or min(stages) < 1:
            raise SpecError("stages", f"stages {list(stages)} must be positive and sum to the auxiliary depth {depth}")
        shapes = block_shapes(spec)
        super().__init__(spec, shapes, vit)
        self.stages = list(stages)
        self.stage_params = nn.ParameterDict(
            {module_key(p): nn.Parameter(torch.zeros(len(stages), *s)) for p, s in shapes.items()}
        )

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        for param in self.generated_params:
            init_block_param_(param, self.stage_params[module_key(param)], generator)

    def generated_weights(self) -> dict[str, Tensor]:
        params = {p: self.stage_params[module_key(p)] for p in self.generated_params}
        return gather(params, aux_stage_of_layers(self.stages))

    def method_config(self) -> dict:
        return {"stages": self.stages}

    def learngene(self) -> dict[str, Tensor]:
        return {f"stage.{p}": self.stage_params[module_key(p)] for p in self.generated_params}


def descendant_blocks(learngene: dict[str, Tensor], depth: int) -> dict[str, Tensor]:
    """The block state of a `depth`-layer descendant from a stored SWS learngene."""
    params = {k.removeprefix("stage."): t for k, t in learngene.items() if k.startswith("stage.")}
    num_stages = next(iter(params.values())).shape[0]
    return gather(params, stage_of_layers(depth, num_stages))


@register_method
class Sws(LayerLearngene[StageSharedViT]):
    name = "sws"
    blocks = staticmethod(descendant_blocks)

    def check_auxiliary(self, arch: Architecture, templates: TemplateConfig, stages: list[int]) -> None:
        if sum(stages) != arch.depth or min(stages) < 1:
            raise SpecError("stages", f"stages {stages} must be positive and sum to aux depth {arch.depth}")

    def new_auxiliary(self, aux: ViTSpec, templates, stages: list[int] | None) -> StageSharedViT:
        if stages is None:
            raise SpecError("stages", "SWS's auxiliary model needs its layers per stage")
        return StageSharedViT(aux, stages)
