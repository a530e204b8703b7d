"""What a ViT costs, from its numbers alone: no model is built, so a request can be measured against its limits
before anything of its size is allocated (a model of the maximum size takes seconds to build even on the meta
device).

Counts are those of the plain timm `VisionTransformer` block (pre-norm attention and a two-layer MLP); FLOPs count
the matrix products (2 per multiply-add), which dominate: norms, activations and softmax add a few per cent.
"""

from __future__ import annotations

from dataclasses import dataclass

from learngene.spec import ViTSpec

# A training step is a forward and a backward pass; the backward pass costs about twice the forward one.
TRAINING_PASSES = 3


@dataclass(frozen=True)
class Cost:
    tokens: int  # sequence length of one image: its patches and the prefix (class) tokens
    parameters: int
    forward_flops: float  # one image through the model

    def step_flops(self, batch_size: int, *, training: bool = True) -> float:
        """One step over a batch: a forward and backward pass when training, a forward pass (a teacher) else."""
        return self.forward_flops * batch_size * (TRAINING_PASSES if training else 1)


def estimate(spec: ViTSpec) -> Cost:
    """The cost of `spec`, from its overrides and the named model's own numbers (one small, cached resolution of
    the bare name)."""
    base = ViTSpec(model=spec.model).resolve()
    dim = spec.embed_dim or base.embed_dim
    depth = spec.depth or base.depth
    gates = base.mlp_gates  # a GLU's fc1 holds value and gate: mlp_ratio sizes fc1, the hidden layer is half
    hidden = (
        int(dim * spec.mlp_ratio) // gates if spec.mlp_ratio is not None else base.mlp_hidden * dim // base.embed_dim
    )
    img = spec.img_size or base.img_size[0]
    patch = spec.patch_size or base.patch_size[0]
    in_chans = spec.in_chans or base.in_chans
    classes = spec.num_classes if spec.num_classes is not None else base.num_classes
    prefix = 0 if spec.class_token is False else base.num_prefix_tokens
    patches = (img // patch) ** 2
    tokens = patches + prefix

    block = 4 * dim * dim + (gates + 1) * dim * hidden  # qkv, proj, fc1, fc2 weights
    biases = 3 * dim * base.qkv_bias + dim * base.proj_bias + (gates * hidden + dim) * base.mlp_bias
    block_vectors = biases + 4 * dim + 2 * dim * base.layer_scale  # two LayerNorms, the layer-scale gammas
    pool = 0  # an attention pool (SigLIP): latent, q, kv, proj, norm, its own MLP
    if base.attn_pool:
        pool = dim + 4 * dim * dim + 4 * dim + 2 * dim + 2 * dim * hidden * gates + hidden * gates + dim
    parameters = (
        depth * (block + block_vectors)
        + pool
        + 2 * dim * base.norm_pre
        + in_chans * patch * patch * dim
        + dim * (not base.norm_pre)  # patch embedding (timm drops its bias when a norm_pre follows)
        + (tokens if base.pos_embed_prefix else patches) * dim
        + prefix * dim  # position embedding, class token
        + 2 * dim
        + dim * classes
        + classes  # final norm, head
    )
    attention = 4 * tokens * tokens * dim  # q @ k^T and attn @ v, over all heads
    forward = depth * (2 * block * tokens + attention) + 2 * in_chans * patch * patch * dim * patches
    return Cost(tokens=tokens, parameters=parameters, forward_flops=float(forward + 2 * dim * classes))
