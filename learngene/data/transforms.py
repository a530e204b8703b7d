"""Image transforms by factory: the DeiT training recipe from timm (RandAugment, random erasing, random resized
crops, flips; Mixup/CutMix with label smoothing) or the plain resize-and-crop, and the evaluation transform.

`Augment()` is the DeiT setting (METHOD.md: the paper trains as DeiT does); `Augment.plain()` switches all of it off,
which is what tiny data (28 px grey digits) wants.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator
from timm.data import Mixup, create_transform
from torch import Tensor
from torchvision.transforms import v2

from learngene.errors import UserError
from learngene.formats.template_set import Normalization

Transform = Callable[[Image.Image], Tensor]


# timm's RandAugment settings (`rand-m9-n2-mstd0.5-inc1-mmax10-p0.5`) and the values accepted for each; the longer
# keys come first, so that `mstd` is not read as `m`. mmax stays below 10: see `Augment.auto_augment`.
RAND_BOUNDS = {"mstd": (0, 10), "mmax": (1, 9), "inc": (0, 1), "m": (0, 10), "n": (1, 4), "p": (0, 1), "w": (0, 0)}


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class Augment(BaseModel):
    """How training images are varied. Defaults: DeiT's (timm's `rand-m9-mstd0.5-inc1`, capped at 9; random erasing
    0.25, Mixup 0.8, CutMix 1.0, label smoothing 0.1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    transform: Literal["deit", "plain"] = Field(
        default="deit",
        description="deit: timm's training transform (random resized crop, flip, RandAugment, "
        "random erasing); plain: shorter side to the input size and a centre crop",
    )
    auto_augment: str | None = Field(
        default="rand-m9-mstd0.5-inc1-mmax9",
        description="timm's auto-augment policy; DeiT's, with magnitudes capped at 9 (at 10 timm's posterize asks "
        "Pillow for 0 bits, which Pillow 13 refuses)",
    )
    re_prob: float = Field(default=0.25, ge=0, le=1, description="random erasing probability")
    mixup: float = Field(default=0.8, ge=0, le=100, description="Mixup alpha (0: off)")
    cutmix: float = Field(default=1.0, ge=0, le=100, description="CutMix alpha (0: off)")
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)

    @field_validator("auto_augment")
    @classmethod
    def _bounded_policy(cls, policy: str | None) -> str | None:
        """timm's parser ignores what it does not know and accepts any number of layers; only RandAugment
        policies with bounded values pass here."""
        if policy is None:
            return None
        name, *parts = policy.split("-")
        if name != "rand":
            raise UserError(f"only RandAugment policies ('rand-...') are accepted, got {policy!r}")
        for part in parts:
            key = next((k for k in RAND_BOUNDS if part.startswith(k) and _number(part[len(k) :]) is not None), None)
            if key is None:
                raise UserError(f"unknown RandAugment setting {part!r} in {policy!r}; known: {', '.join(RAND_BOUNDS)}")
            low, high = RAND_BOUNDS[key]
            value = _number(part[len(key) :])
            assert value is not None  # the key was chosen for the number that follows it
            if not low <= value <= high:
                raise UserError(f"RandAugment setting {key} must be in [{low}, {high}], got {part!r}")
        return policy

    @classmethod
    def plain(cls) -> Augment:
        return cls(transform="plain", auto_augment=None, re_prob=0.0, mixup=0.0, cutmix=0.0, label_smoothing=0.0)

    @classmethod
    def for_recipe(cls, recipe: str) -> Augment:
        if recipe not in ("deit", "plain"):
            raise UserError(f"recipe must be 'deit' or 'plain', got {recipe!r}")
        return cls.plain() if recipe == "plain" else cls()

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def mixer(self, num_classes: int) -> Mixup | None:
        """timm's Mixup/CutMix (soft targets, label smoothing folded in), or None when both are off."""
        if not self.mixes:
            return None
        return Mixup(
            mixup_alpha=self.mixup,
            cutmix_alpha=self.cutmix,
            label_smoothing=self.label_smoothing,
            num_classes=num_classes,
        )


def eval_transform(img_size: tuple[int, int], in_chans: int, normalization: Normalization) -> Transform:
    """Shorter side to the input size, a centre crop, normalization: timm's evaluation transform at crop_pct 1."""
    norm = normalization.for_channels(in_chans)
    steps = v2.Compose(
        [
            v2.PILToTensor(),
            v2.Resize(min(img_size), antialias=True),
            v2.CenterCrop(img_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(norm.mean, norm.std),
        ]
    )
    mode = "L" if in_chans == 1 else "RGB"
    return lambda image: steps(image.convert(mode))


def train_transform(
    augment: Augment, img_size: tuple[int, int], in_chans: int, normalization: Normalization
) -> Transform:
    if augment.transform == "plain":
        return eval_transform(img_size, in_chans, normalization)
    norm = normalization.for_channels(3)  # timm's transforms work on RGB; grey models get the channel mean back
    steps = create_transform(
        input_size=(3, *img_size),
        is_training=True,
        auto_augment=augment.auto_augment,
        re_prob=augment.re_prob,
        re_mode="pixel",
        interpolation="bicubic",
        mean=norm.mean,
        std=norm.std,
    )

    def transform(image: Image.Image) -> Tensor:
        x = steps(image.convert("RGB"))
        return x.mean(0, keepdim=True) if in_chans == 1 else x

    return transform
