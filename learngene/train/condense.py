"""Knowledge condensation (WAVE Eq. 5-6, Algorithm 1): distil a frozen ancestor into weight templates.

The auxiliary model is a ViT of width D0 and depth L0 whose block weights are generated from the templates and its
own scalers (`TemplatedViT`). Only templates, scalers and the auxiliary model's free parameters are trained, with

    loss = CE(z_aux, y) + lambda * tau^2 * KL(softmax(z_anc / tau) || softmax(z_aux / tau)).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Literal, cast

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from learngene.data import ImageData
from learngene.data.loader import Stream, ordered_batches
from learngene.data.sources import ImageSource, MemorySource, SubsetSource
from learngene.data.transforms import Augment, eval_transform, train_transform
from learngene.errors import IntegrityError, SpecError, UserError
from learngene.formats.checkpoint import check_finite, freeze
from learngene.formats.template_set import Lineage, Normalization, TemplateSet, TemplateSetConfig
from learngene.layers.generated import GeneratedViT
from learngene.layers.templates import DEFAULT_COUNTS, SLOTS, TemplateConfig
from learngene.methods import LearngeneName, get_learngene
from learngene.spec import ViTSpec
from learngene.train import distributed
from learngene.train.loop import (
    Hooks,
    LoopConfig,
    LoopHooks,
    Objective,
    OptimConfig,
    Runtime,
    build_optimizer,
    evaluate,
    load_train_state,
    pick_device,
    save_train_state,
    train_steps,
)
from learngene.version import __version__

log = logging.getLogger(__name__)
EVAL_SAMPLES = 2048  # accuracies measured on the training data when no held-out data is given

DEFAULT_STAGES = (3, 3, 4, 3, 3)  # SWS's auxiliary model: layers per stage (seeds/001)


class CondenseConfig(BaseModel):
    """Everything that determines a condensation run (saved in the template set's lineage)."""

    model_config = ConfigDict(frozen=True)

    method: LearngeneName = "wave"
    aux: ViTSpec = Field(description="the auxiliary model; its embed_dim is D0")
    template_size: int | None = Field(default=None, ge=1, description="side a of the templates; default D0")
    template_counts: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_COUNTS))
    steps: int = Field(default=1000, ge=1)
    batch_size: int = Field(default=128, ge=1)
    optim: OptimConfig = OptimConfig(lr=5e-4, warmup_steps=100, weight_decay=0.05)
    stages: list[int] = Field(default_factory=lambda: list(DEFAULT_STAGES), description="SWS: layers per stage")
    init: Literal["auto", "ancestor", "random"] = Field(
        default="auto",
        description="WAVE: start templates and scalers from a PCA of the ancestor's weight tiles ('ancestor'; "
        "needs a timm ViT ancestor whose block weights have the auxiliary shapes), from random ('random'), or the "
        "first when possible ('auto')",
    )
    ce: float | None = Field(
        default=None, ge=0, description="weight of the CE term; default 1 for wave, 0 (pure KL) for tleg and sws"
    )
    lam: float = Field(default=1.0, ge=0, description="weight of the distillation term")
    tau: float = Field(default=1.0, gt=0, description="distillation temperature")
    seed: int = 0
    recipe: Literal["deit", "plain"] = Field(
        default="deit",
        description="deit: the paper's setting (DeiT's augmentation, Mixup/CutMix, label smoothing, "
        "lr scaled by batch/512); plain: none of it, for tiny data. Sets the defaults of `augment` and `lr_batch`",
    )
    augment: Augment | None = Field(default=None, validate_default=False, description="default: from `recipe`")
    lr_batch: int | None = Field(
        default=None,
        ge=1,
        description="optim.lr is the rate for this global batch and is scaled linearly by "
        "batch_size / lr_batch (DeiT: 512); None: optim.lr as given. Default: from `recipe`",
    )
    epochs: float | None = Field(
        default=None, gt=0, description="when given, the run's length in passes over the data, instead of `steps`"
    )
    warmup_epochs: float | None = Field(
        default=None,
        ge=0,
        description="when given, the warm-up in passes over the data (DeiT: 5), instead of optim.warmup_steps",
    )

    @model_validator(mode="before")
    @classmethod
    def _family_counts(cls, values: Any) -> Any:
        """The counts keep the kinds the auxiliary model's family has (no layer scale in a plain ViT, no qkv bias
        without one), so that the recorded configuration is the one used. An invalid `aux` is left to its own
        validation."""
        if not isinstance(values, dict) or "aux" not in values:
            return values
        try:
            arch = ViTSpec.model_validate(values["aux"]).resolve()
        except ValueError:  # pydantic's ValidationError and SpecError: reported by the field's own validation
            return values
        counts = values.get("template_counts", DEFAULT_COUNTS)
        if not isinstance(counts, dict):
            return values
        kept = {k: n for k, n in counts.items() if k not in SLOTS or SLOTS[k].present(arch)}  # unknown: refused
        return {**values, "template_counts": kept}

    @model_validator(mode="before")
    @classmethod
    def _recipe_defaults(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("recipe", "deit") in ("deit", "plain"):
            recipe = values.get("recipe", "deit")
            if values.get("augment") is None:
                values = {**values, "augment": Augment.for_recipe(recipe)}
            if "lr_batch" not in values:
                values = {**values, "lr_batch": None if recipe == "plain" else 512}
        return values

    def schedule(self, samples: int) -> tuple[int, OptimConfig]:
        """The number of steps and the optimizer settings for a data set of `samples` images."""
        per_epoch = samples / self.batch_size
        steps = math.ceil(self.epochs * per_epoch) if self.epochs is not None else self.steps
        optim = self.optim
        if self.warmup_epochs is not None:
            optim = optim.model_copy(update={"warmup_steps": min(steps, round(self.warmup_epochs * per_epoch))})
        if self.lr_batch is not None:
            scale = self.batch_size / self.lr_batch
            optim = optim.model_copy(update={"lr": optim.lr * scale, "min_lr": optim.min_lr * scale})
        return steps, optim

    @model_validator(mode="after")
    def _method_fits(self) -> CondenseConfig:
        get_learngene(self.method).check_auxiliary(self.aux.resolve(), self.templates(), self.stages)
        if self.ce_weight == 0 and self.lam == 0:
            raise SpecError("lam", "with ce=0 the distillation term is the whole loss: lam must be > 0")
        if self.augmentation.mixes and self.batch_size % 2:
            raise SpecError("batch_size", f"Mixup/CutMix pair images: batch_size must be even, got {self.batch_size}")
        return self

    @property
    def augmentation(self) -> Augment:
        """`augment`, which validation fills in from `recipe` when it is not given (None: the input's default)."""
        if self.augment is None:  # only a config made without validation (model_construct) lacks one
            raise UserError("the condensation config has no augmentation: build it through validation")
        return self.augment

    @property
    def ce_weight(self) -> float:
        """TLEG and SWS are condensed by pure soft distillation (METHOD.md); WAVE adds the classification loss."""
        return self.ce if self.ce is not None else get_learngene(self.method).default_ce

    def templates(self) -> TemplateConfig:
        arch = self.aux.resolve()
        return TemplateConfig(size=self.template_size or arch.embed_dim, counts=self.template_counts).for_arch(arch)


def build_auxiliary(config: CondenseConfig, generator: torch.Generator) -> GeneratedViT:
    """The auxiliary model of the method, initialized: timm's init for its free parameters, the method's own for
    its learngene ([ours] for WAVE's templates and scalers, TLEG's and timm's rules for TLEG and SWS)."""
    learngene = get_learngene(config.method)
    aux = learngene.new_auxiliary(config.aux, config.templates(), config.stages)
    learngene.init_auxiliary(aux, generator)
    return aux


def expected_tensors(config: TemplateSetConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a template set of `config` holds, with its shape (the auxiliary model, built on the meta
    device: no memory, no init)."""
    with torch.device("meta"):
        aux = get_learngene(config.method).new_auxiliary(config.aux, config.templates, config.stages)
    groups = {"templates": aux.learngene(), "scalers": aux.scalers(), "free": aux.free_state()}
    return {f"{g}.{k}": tuple(v.shape) for g, d in groups.items() for k, v in d.items()}


def check_template_set(template_set: TemplateSet) -> None:
    """A set is usable only if it holds exactly the tensors its config implies, in a floating dtype, all finite:
    checked before it is published (and when loaded), so a crafted or diverged set never reaches a descendant."""
    expected, actual = expected_tensors(template_set.config), template_set.tensors()
    where = f"template set {template_set.name!r}"
    for key in sorted(expected.keys() - actual.keys()):
        raise IntegrityError(f"{where}: tensor {key!r} is missing (its config needs {list(expected[key])})")
    for key in sorted(actual.keys() - expected.keys()):
        raise IntegrityError(f"{where}: tensor {key!r} is not part of a {template_set.config.method} set")
    for key, tensor in sorted(actual.items()):
        if tuple(tensor.shape) != expected[key]:
            raise IntegrityError(
                f"{where}: tensor {key!r} has shape {list(tensor.shape)}, its config needs {list(expected[key])}"
            )
        if not tensor.is_floating_point():
            raise IntegrityError(f"{where}: tensor {key!r} is {tensor.dtype}, not a floating dtype")
    check_finite(actual, where)


# The whole condensation in order (build, start from the ancestor, resume, train, evaluate, snapshot): longer than
# most functions here, kept in one piece so that its sequence and its resume points read in one place.
def condense(
    ancestor: nn.Module,
    data: ImageData | ImageSource,
    config: CondenseConfig,
    *,
    normalization: Normalization | None = None,
    eval_data: ImageData | ImageSource | None = None,
    lineage: Lineage | None = None,
    runtime: Runtime = Runtime(),
    hooks: Hooks = Hooks(),
) -> TemplateSet:
    """Distil `ancestor` into a new template set, named "templates" (its publisher names it). Resumes from
    `hooks.checkpoint_dir` when it holds this run's state.

    `data` is decoded images in memory or a source streamed through `runtime.workers` loader processes; a source
    needs the `normalization` the ancestor was trained with. `runtime.compile` trains through `torch.compile` (off by
    default: equal parameters to eager on CPU, its speed on a GPU not measured yet)."""
    world = distributed.current()  # torchrun's ranks share the global batch; rank 0 alone writes
    device = distributed.device_for(world, pick_device(runtime.device))
    workers, checkpoint_dir, should_stop = runtime.workers, hooks.checkpoint_dir, hooks.should_stop
    arch = config.aux.resolve()
    train, normalization = _training_data(data, config, normalization, workers)
    source = train.source if isinstance(train, Stream) else MemorySource(train)
    if not source.labelled and config.lam == 0:
        raise UserError("unlabelled data needs the distillation term (lam > 0)")
    if source.labelled and source.max_label() >= arch.num_classes:
        raise UserError(f"labels go up to {source.max_label()}, the auxiliary model has {arch.num_classes} classes")
    total_steps, optim = config.schedule(len(source))
    evaluation = _evaluation_data(eval_data, source, config, normalization, workers)

    torch.manual_seed(config.seed)  # timm's init of the free parameters draws from the global generator
    aux = build_auxiliary(config, torch.Generator().manual_seed(config.seed))
    started_from = get_learngene(config.method).start_from_ancestor(aux, ancestor, config.init)
    aux = aux.to(device)
    model: nn.Module = (
        aux
        if world.size == 1
        else DistributedDataParallel(aux, device_ids=[device.index] if device.index is not None else None)
    )
    if runtime.compile:  # the wrapped model, as torch's DDP + compile notes ask; evaluation stays eager
        model = cast(nn.Module, torch.compile(model))  # an OptimizedModule; torch's stub says a callable
    ancestor = freeze(ancestor).to(device)
    _check_ancestor_classes(ancestor, evaluation, arch.num_classes, device)

    named = aux.trainable_named_parameters()
    optimizer = build_optimizer(named, optim)
    params = dict(named)
    meta = config.model_dump(mode="json")
    start = 0
    if checkpoint_dir is not None:
        start = load_train_state(Path(checkpoint_dir), params, optimizer, meta)
        if start:
            log.info("condensation resumes at step %d of %d from %s", start, total_steps, checkpoint_dir)

    def save_state(step: int) -> None:
        assert checkpoint_dir is not None  # only called with one (the checkpoint hook, the final save)
        if world.main:
            save_train_state(Path(checkpoint_dir), params, optimizer, step, meta)

    def stop() -> bool:  # every rank stops at the same step, or none does
        return distributed.any_rank(should_stop is not None and should_stop(), world)

    final_loss = train_steps(
        model,
        optimizer,
        train,
        LoopConfig(
            total_steps=total_steps,
            batch_size=config.batch_size,
            optim=optim,
            seed=config.seed,
            rank=world.rank,
            world=world.size,
        ),
        device=device,
        objective=Objective(
            teacher=ancestor if config.lam > 0 else None,
            lam=config.lam,
            tau=config.tau,
            ce=config.ce_weight,
            label_smoothing=config.augmentation.label_smoothing,
            mixup=config.augmentation.mixer(arch.num_classes),
        ),
        start_step=start,
        hooks=LoopHooks(
            progress=hooks.progress,
            checkpoint=save_state if checkpoint_dir is not None else None,
            checkpoint_every=hooks.checkpoint_every,
            should_stop=stop if should_stop is not None or world.size > 1 else None,
        ),
    )
    if checkpoint_dir is not None:
        save_state(total_steps)

    metrics: dict[str, float] = {}
    if final_loss is not None:
        metrics["final_loss"] = final_loss
    if source.labelled:
        metrics["aux_accuracy"] = evaluate(aux, evaluation, device=device)["accuracy"]
        metrics["ancestor_accuracy"] = evaluate(ancestor, evaluation, device=device)["accuracy"]
    lineage = (lineage or Lineage()).model_copy(
        update={
            # 'auto' as resolved; the world size is recorded, not part of the run's identity: the same global
            # batch on any number of processes is the same run, and may resume on another number.
            "condensation": {**meta, "init": "ancestor" if started_from else "random", "world_size": world.size},
            "code_version": __version__,
            "data_digest": source.digest(),
            "data_uri": (lineage.data_uri if lineage and lineage.data_uri else source.uri),
            "eval_data_uri": evaluation.uri,
        }
    )
    template_set = TemplateSet.from_auxiliary(
        aux, name="templates", normalization=normalization, lineage=lineage, metrics=metrics
    )
    check_template_set(template_set)  # a diverged run fails here (NonFiniteWeights), before anything is saved
    return template_set


def _training_data(
    data: ImageData | ImageSource, config: CondenseConfig, normalization: Normalization | None, workers: int | None
) -> tuple[ImageData | Stream, Normalization]:
    """What the loop draws from: images in memory as they are (plain), or a stream through the training transform
    (a source, or memory images that are to be augmented)."""
    arch = config.aux.resolve()
    if isinstance(data, ImageData):
        normalization = normalization or data.normalization
        if config.augmentation.transform == "plain":
            if data.images.shape[1] != arch.in_chans or tuple(data.images.shape[2:]) != arch.img_size:
                raise UserError(
                    f"data is {tuple(data.images.shape[1:])}, the auxiliary model takes "
                    f"{(arch.in_chans, *arch.img_size)}"
                )
            return dataclasses.replace(data, normalization=normalization), normalization
        data = MemorySource(data)
    if normalization is None:
        raise UserError("streamed data needs the normalization its ancestor was trained with")
    transform = train_transform(config.augmentation, arch.img_size, arch.in_chans, normalization)
    return Stream(data, transform, workers), normalization


def _evaluation_data(
    eval_data: ImageData | ImageSource | None,
    train: ImageSource,
    config: CondenseConfig,
    normalization: Normalization,
    workers: int | None,
) -> ImageData | Stream:
    """Held-out data as given, or [ours] a seeded sample of the training data, through the evaluation transform."""
    if isinstance(eval_data, ImageData):
        return eval_data
    if eval_data is None:
        sample = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed))[:EVAL_SAMPLES]
        eval_data = SubsetSource(train, sample.tolist(), f"{train.uri} (training sample)")
    arch = config.aux.resolve()
    workers = 0 if eval_data.in_memory else workers  # no decoding to spread: loader processes would only copy
    return Stream(eval_data, eval_transform(arch.img_size, arch.in_chans, normalization), workers)


def _check_ancestor_classes(
    ancestor: nn.Module, data: ImageData | Stream, num_classes: int, device: torch.device
) -> None:
    if isinstance(data, Stream):  # two images: decoded here, not by a pool of loader workers started for them
        data = dataclasses.replace(data, workers=0)
    x, _ = next(ordered_batches(data, 2, device))
    with torch.no_grad():
        out = ancestor(x)
    if out.shape[-1] != num_classes:
        raise UserError(f"the ancestor predicts {out.shape[-1]} classes, the auxiliary model {num_classes}")
