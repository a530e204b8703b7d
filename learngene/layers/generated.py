"""A timm VisionTransformer some of whose block parameters are generated from a learngene at every forward.

The auxiliary models of all three learngene methods are of this kind: WAVE generates weights from templates and
scalers (`TemplatedViT`), TLEG from a base and a slope per parameter (`LinearExpansionViT`), SWS from one set of
block parameters per stage (`StageSharedViT`). The timm model keeps its free parameters (embeddings, class token,
final norm, head, and any block parameter that is not generated); the generated ones are removed from it and
passed in at each forward by `torch.func.functional_call`, so it is an ordinary timm module in every other respect.

Block parameters are named as timm's plain `Block` names them (the canonical names of the `SLOTS` table) in
everything this module hands out or takes, whatever the family: an Eva's own names and splits are met only at the
timm model itself (`learngene.families.block_layout`: `to_native` going in, `to_canonical` coming out).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import Literal

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn
from torch.func import functional_call

from learngene.families import block_layout, load_canonical, to_canonical, to_native
from learngene.layers.templates import SLOTS
from learngene.spec import Architecture, ViTSpec


def block_shapes(spec: ViTSpec) -> dict[str, tuple[int, ...]]:
    """Every parameter of one block of `spec`, in canonical names and state-dict order, with its shape (what TLEG
    and SWS generate; the family decides which there are: `learngene.families`). Built on the meta device: no
    memory."""
    with torch.device("meta"):
        block = spec.build().blocks[0]
    state = to_canonical({f"blocks.0.{k}": v for k, v in block.state_dict().items()}, spec.resolve())
    return {name.removeprefix("blocks.0."): tuple(t.shape) for name, t in state.items()}


def init_block_param_(param: str, tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """timm's default for a block parameter: trunc-normal(0.02) weights, zero biases, unit gains (norm weights and,
    [ours] instead of timm's small init_values, layer-scale gammas: the plain block's function)."""
    with torch.no_grad():
        if param.endswith("bias"):
            return tensor.zero_()
        if is_gain(param):
            return tensor.fill_(1.0)
        return nn.init.trunc_normal_(tensor, std=0.02, generator=generator)


def is_gain(param: str) -> bool:
    """A block parameter whose neutral value is 1 (a norm weight, a layer-scale gamma): the `SLOTS` table says."""
    return any(slot.param == param and slot.unit for slot in SLOTS.values())


def block_param_name(layer: int, param: str) -> str:
    return f"blocks.{layer}.{param}"


def module_key(param: str) -> str:
    """`attn.qkv.weight` -> `attn__qkv__weight`: a parameter name usable as a ParameterDict key."""
    return param.replace(".", "__")


# The methods whose auxiliary model is a GeneratedViT: what a template set can hold the learngene of.
LearngeneMethod = Literal["wave", "tleg", "sws"]


class GeneratedViT(nn.Module, abc.ABC):
    method: LearngeneMethod

    def __init__(self, spec: ViTSpec, generated: Iterable[str], vit: VisionTransformer | None = None):
        super().__init__()
        self.spec = spec
        self.arch: Architecture = spec.resolve()
        self.vit = vit if vit is not None else spec.build()
        self.generated_params = tuple(generated)
        self.provenance: dict = {}  # how the weights came to be (filled by inheritance), carried into exports
        layout = block_layout(self.arch)
        for param in self.generated_params:
            for native in layout.get(param, (param,)):
                if native is None:
                    continue  # a part the family lacks (EVA's k bias): generated, then dropped by to_native
                owner, _, name = native.rpartition(".")
                for block in self.vit.blocks:
                    del block.get_submodule(owner)._parameters[name]

    @abc.abstractmethod
    def generated_weights(self) -> dict[str, Tensor]:
        """Every generated block parameter, keyed by its timm state-dict name."""

    @abc.abstractmethod
    def learngene(self) -> dict[str, Tensor]:
        """The tensors a template set stores as its learngene."""

    def method_config(self) -> dict:
        """The method's own fields of `TemplateSetConfig` (WAVE: templates, SWS: stages)."""
        return {}

    def scalers(self) -> dict[str, Tensor]:
        """Per-architecture parameters stored beside the learngene (WAVE's auxiliary scalers); none by default."""
        return {}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, x: Tensor) -> Tensor:
        # Generate in fp32 even under autocast: the weights are few and their precision matters more than speed.
        with torch.autocast(device_type=x.device.type, enabled=False):
            weights = self.generated_weights()
        return functional_call(self.vit, to_native(weights, self.arch), (x,))

    def free_state(self) -> dict[str, Tensor]:
        """The state-dict entries that are stored as they are (not generated), in canonical names."""
        return to_canonical(self.vit.state_dict(), self.arch)

    def load_free(self, state: dict[str, Tensor]) -> None:
        """Load free parameters given in canonical names (any subset of them, but nothing the model lacks: a name
        it does not know would otherwise be dropped in silence)."""
        load_canonical(self.vit, state, self.arch)

    def materialized_state(self) -> dict[str, Tensor]:
        """The full timm state dict, in the family's own names: free parameters plus the generated block weights,
        detached."""
        with torch.no_grad():
            state = to_native({**self.free_state(), **self.generated_weights()}, self.arch)
        return {k: v.detach().clone().contiguous() for k, v in state.items()}

    def materialize(self) -> VisionTransformer:
        """A plain timm model with the current weights; it trains without constraints."""
        model = self.spec.build()
        model.load_state_dict(self.materialized_state(), strict=True)
        return model.to(self.device)

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]
