"""A template set's quality card: what descendants of the sizes a user would ask for are worth, measured.

Over a ladder of sizes around the set's auxiliary model (depths L0/2, L0, 2·L0 and widths D0, 2·D0 by default, heads
keeping the auxiliary head dimension), each descendant is inherited with WAVE and fitted with the set's default
fitting on the set's own data, then measured on held-out data, next to timm's default initialization trained for
the same steps on the same images (all parameters, the same optimizer schedule). Held-out data is the set's
`lineage.eval_data_uri`; without one, a seeded sample of the data itself, disjoint from the fitting images.

Pure PyTorch + timm: storing the card is the store's business, drawing it the application's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time
from collections.abc import Mapping

import torch
from pydantic import BaseModel, ConfigDict, Field

from learngene.control import check_stop
from learngene.data import UNRESTRICTED, DataAccess, ImageData, load_images
from learngene.errors import LearngeneError, UserError
from learngene.fit_settings import FitSettings
from learngene.formats.template_set import Lineage, TemplateSet, TemplateSetConfig
from learngene.methods import build_descendant
from learngene.methods.wave.fit import fit_scalers
from learngene.spec import ViTSpec
from learngene.train.loop import (
    Hooks,
    LoopConfig,
    LoopHooks,
    OptimConfig,
    ProgressFn,
    StopFn,
    evaluate,
    train_classifier,
)
from learngene.version import __version__

CARD_SCHEMA_VERSION = 1


class CardDomain(BaseModel):
    """The inputs the set was condensed for: what a descendant sees best without any adaptation."""

    model_config = ConfigDict(frozen=True)

    img_size: tuple[int, int]
    in_chans: int
    patch_size: tuple[int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    data_uri: str | None = None
    eval_data_uri: str | None = None

    @classmethod
    def of(cls, config: TemplateSetConfig, lineage: Lineage) -> CardDomain:
        arch = config.arch
        return cls(
            img_size=arch.img_size,
            in_chans=arch.in_chans,
            patch_size=arch.patch_size,
            num_classes=arch.num_classes,
            mean=config.normalization.mean,
            std=config.normalization.std,
            data_uri=lineage.data_uri,
            eval_data_uri=lineage.eval_data_uri,
        )


class CardRow(BaseModel):
    """One size of the ladder: WAVE (inherited + fitted) and timm's initialization (trained), on held-out data."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    depth: int
    embed_dim: int
    num_heads: int
    params: int = Field(description="parameters of the timm model")
    accuracy: float = Field(ge=0, le=1, description="WAVE: inherited, scalers fitted for fit_steps")
    baseline_accuracy: float = Field(ge=0, le=1, description="timm's default init, trained for fit_steps")
    fit_steps: int
    seconds: float = Field(ge=0, description="WAVE inheritance + fitting, wall clock")


class CardConfig(BaseModel):
    """How a card is measured. Unset ladders come from the auxiliary architecture; unset fitting is the set's
    default (`FitSettings()`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    depths: tuple[int, ...] | None = Field(default=None, description="default: L0/2, L0, 2·L0 (at least 3)")
    width_multiples: tuple[int, ...] = Field(default=(1, 2), description="widths k·D0, heads k·H0")
    fit: FitSettings = Field(default_factory=FitSettings)
    train_samples: int = Field(default=2048, ge=1, description="seeded subset of the data to fit and train on")
    eval_samples: int = Field(default=2000, ge=1, description="held-out images measured")
    seed: int = Field(default=0, ge=0)

    def ladder(self, config: TemplateSetConfig) -> list[ViTSpec]:
        """The descendants' specs: the auxiliary spec at every (depth, width) of the ladder, narrow first."""
        arch = config.arch
        depths = self.depths or default_depths(arch.depth)
        return [
            config.aux.model_copy(update={"depth": d, "embed_dim": k * arch.embed_dim, "num_heads": k * arch.num_heads})
            for k in sorted(set(self.width_multiples))
            for d in sorted(set(depths))
        ]


def default_depths(depth: int) -> tuple[int, ...]:
    """L0/2, L0, 2·L0, filled up to three distinct depths for very shallow auxiliary models."""
    depths = sorted({max(1, depth // 2), depth, 2 * depth})
    while len(depths) < 3:
        depths.append(depths[-1] + 1)
    return tuple(depths)


class QualityCard(BaseModel):
    """The card of one version of a template set (`template_set` is `name@version`, `digest` its manifest's)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    schema_version: int = CARD_SCHEMA_VERSION
    template_set: str
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    domain: CardDomain
    rows: list[CardRow] = Field(min_length=1)
    fit: FitSettings = Field(description="the fitting every row used (the baseline trained with the same budget)")
    train_samples: int
    eval_samples: int
    held_out: str = Field(description="where the accuracies were measured")
    created: str = Field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    code_version: str = __version__
    seconds: float = 0.0

    @property
    def depth_range(self) -> tuple[int, int]:
        return min(r.depth for r in self.rows), max(r.depth for r in self.rows)

    @property
    def width_range(self) -> tuple[int, int]:
        return min(r.embed_dim for r in self.rows), max(r.embed_dim for r in self.rows)

    def row_for(self, depth: int, embed_dim: int) -> CardRow | None:
        return next((r for r in self.rows if (r.depth, r.embed_dim) == (depth, embed_dim)), None)

    @property
    def best(self) -> CardRow:
        return max(self.rows, key=lambda r: r.accuracy)

    @property
    def worst(self) -> CardRow:
        return min(self.rows, key=lambda r: r.accuracy)


@dataclasses.dataclass(frozen=True)
class CardData:
    """The images a card fits on and measures with, and how the held-out part was chosen."""

    train: ImageData
    held_out: ImageData
    description: str


def load_card_data(
    template_set: TemplateSet,
    config: CardConfig,
    *,
    data_uri: str | None = None,
    eval_uri: str | None = None,
    local: Mapping[str, str] | None = None,
    access: DataAccess = UNRESTRICTED,
) -> CardData:
    """The set's data (`data_uri`, default its lineage's) at the set's input size and normalization. Held out: the
    evaluation data (`eval_uri`, default the lineage's) or, without one, a seeded sample of the data disjoint from
    the fitting images. `local` maps a reference to a local copy read in its place (object storage); the card
    names the reference itself."""
    data_uri = data_uri or template_set.lineage.data_uri
    eval_uri = eval_uri or template_set.lineage.eval_data_uri
    if not data_uri:
        raise UserError(f"{template_set.ref} records no data (lineage.data_uri): a card needs the set's own data")
    arch = template_set.config.arch
    local = local or {}
    load = lambda uri, n: load_images(  # noqa: E731
        local.get(uri, uri),
        img_size=arch.img_size,
        in_chans=arch.in_chans,
        normalization=template_set.config.normalization,
        max_samples=n,
        seed=config.seed,
        num_classes=arch.num_classes,
        access=access,
    )
    if eval_uri:
        train, held = load(data_uri, config.train_samples), load(eval_uri, config.eval_samples)
        description = f"{config.eval_samples} (at most) seeded images of {eval_uri}"
    else:
        both = load(data_uri, config.train_samples + config.eval_samples)
        order = torch.randperm(len(both), generator=torch.Generator().manual_seed(config.seed))
        n_held = max(1, min(config.eval_samples, len(both) // 2))
        held, train = both.subset(order[:n_held]), both.subset(order[n_held:])
        description = f"{n_held} seeded images of {data_uri}, disjoint from the {len(train)} fitting images"
    if train.labels is None or held.labels is None:
        raise UserError("a card needs labelled data: accuracy is what it reports")
    return CardData(train=train, held_out=held, description=description)


def compute_card(
    template_set: TemplateSet,
    data: CardData,
    *,
    digest: str,
    config: CardConfig | None = None,
    device: torch.device | str = "cpu",
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> QualityCard:
    """Measure every size of the ladder (deterministic given `config.seed` on one device). `progress` counts the
    training steps of all runs together: 2 x sizes x steps."""
    config = config or CardConfig()
    if template_set.config.method != "wave":
        raise UserError(
            f"quality cards measure WAVE descendants; {template_set.ref} holds a "
            f"{template_set.config.method!r} learngene"
        )
    fit, device = config.fit, torch.device(device)
    specs = config.ladder(template_set.config)
    total = 2 * len(specs) * fit.steps
    optim = OptimConfig(lr=fit.lr, min_lr=fit.lr / 100, warmup_steps=min(20, fit.steps // 10), weight_decay=0.0)
    rows, t_card = [], time.perf_counter()
    for i, spec in enumerate(specs):
        check_stop(should_stop, "between the card's sizes")
        t0 = time.perf_counter()
        model = build_descendant("wave", spec, template_set=template_set, seed=fit.seed, noise=fit.noise, device=device)
        shifted = _shifted(progress, 2 * i * fit.steps, total)
        fit_scalers(model, data.train, fit, hooks=Hooks(progress=shifted, should_stop=should_stop))
        seconds = time.perf_counter() - t0
        accuracy = evaluate(model, data.held_out, device=device)["accuracy"]
        del model
        baseline = build_descendant("timm", spec, seed=fit.seed, device=device)
        if fit.steps:
            loop = LoopConfig(total_steps=fit.steps, batch_size=fit.batch_size, optim=optim, seed=fit.seed)
            shifted = _shifted(progress, (2 * i + 1) * fit.steps, total)
            train_classifier(baseline, data.train, loop, device=device, hooks=LoopHooks(progress=shifted))
        baseline_accuracy = evaluate(baseline, data.held_out, device=device)["accuracy"]
        with torch.device("meta"):
            params = sum(p.numel() for p in spec.build().parameters())
        arch = spec.resolve()
        rows.append(
            CardRow(
                depth=arch.depth,
                embed_dim=arch.embed_dim,
                num_heads=arch.num_heads,
                params=params,
                accuracy=_finite(accuracy),
                baseline_accuracy=_finite(baseline_accuracy),
                fit_steps=fit.steps,
                seconds=seconds,
            )
        )
    return QualityCard(
        template_set=template_set.ref,
        digest=digest,
        domain=CardDomain.of(template_set.config, template_set.lineage),
        rows=rows,
        fit=fit,
        train_samples=len(data.train),
        eval_samples=len(data.held_out),
        held_out=data.description,
        seconds=time.perf_counter() - t_card,
    )


def _shifted(progress: ProgressFn | None, offset: int, total: int) -> ProgressFn | None:
    """One run's progress as a part of the whole card's."""
    if progress is None:
        return None
    return lambda p: progress(dataclasses.replace(p, step=offset + p.step, total_steps=total))


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise LearngeneError(f"a card measurement came out {value}")
    return value
