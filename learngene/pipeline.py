"""The two jobs the service runs, as plain functions shared by the CLI and the workers.

`initialize`: template set + target spec (+ calibration data) -> fitted descendant -> timm safetensors checkpoint.
`run_condensation`: ancestor checkpoint + data -> condensed template set.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from learngene.data import DEFAULT_LIMITS, UNRESTRICTED, DataAccess, DecodeLimits, ImageData, load_images, open_source
from learngene.data.loader import Stream
from learngene.data.sources import sample_source, source_stats
from learngene.data.transforms import Augment, eval_transform, train_transform
from learngene.errors import DataRefError, UserError
from learngene.fit_settings import Calibration, FitSettings
from learngene.formats.ancestors import HUB_PREFIX, resolve_ancestor
from learngene.formats.checkpoint import CheckpointInfo, export_checkpoint, load_ancestor, read_metadata
from learngene.formats.files import sha256_file
from learngene.formats.template_set import Lineage, Normalization, TemplateSet
from learngene.methods import AncestorWeights, build_descendant, get_method
from learngene.methods.wave.fit import FitReport, fit_scalers
from learngene.quality.card import QualityCard
from learngene.quality.caveats import Caveat, architecture_caveats, calibration_caveats, no_fitting_caveat
from learngene.spec import ViTSpec
from learngene.train.condense import CondenseConfig, condense
from learngene.train.loop import (
    Hooks,
    LoopConfig,
    LoopHooks,
    OptimConfig,
    ProgressFn,
    Runtime,
    StopFn,
    evaluate,
    pick_device,
    train_classifier,
)

PLACEHOLDER = Normalization(mean=(0.5,), std=(0.5,))  # replaced before any batch is drawn


class InitResult(BaseModel):
    checkpoint: CheckpointInfo
    fit: FitReport
    template_set: str
    spec: dict[str, Any]
    warnings: list[Caveat] = Field(default_factory=list)


def load_calibration(
    spec: ViTSpec,
    calibration: Calibration,
    normalization: Normalization,
    *,
    seed: int = 0,
    access: DataAccess = UNRESTRICTED,
) -> ImageData:
    """The calibration images, resized for the descendant and normalized as its template set expects."""
    arch = spec.resolve()
    return load_images(
        calibration.uri,
        img_size=arch.img_size,
        in_chans=arch.in_chans,
        normalization=normalization,
        max_samples=calibration.max_samples,
        seed=seed,
        num_classes=arch.num_classes,
        access=access,
    )


@dataclasses.dataclass(frozen=True)
class InitInputs:
    """What an initialization reads besides its spec: the learngene methods' template set (`template_digest`, the
    store's manifest digest, goes into the checkpoint's provenance; `card`, its quality card, bounds the sizes it
    vouches for), the ancestor (the source of the ancestor-based baselines; for WAVE the teacher of a KL term in the
    scaler fitting, METHOD.md, Fitting), the calibration `data` and labelled held-out `eval_data`."""

    template_set: TemplateSet | None = None
    template_digest: str | None = None
    card: QualityCard | None = None
    ancestor: AncestorWeights | None = None
    data: ImageData | None = None
    eval_data: ImageData | None = None


def initialize(
    spec: ViTSpec,
    out: str | Path,
    *,
    method: str = "wave",
    inputs: InitInputs,
    fit: FitSettings | None = None,
    device: torch.device | str = "cpu",
    hooks: Hooks = Hooks(),
) -> InitResult:
    """Build a descendant with `method` from `inputs`, fit its scalers (WAVE, when calibration data is given),
    measure it on the held-out data, export it. The card's row for this size goes into the provenance (and so the
    model card)."""
    fit = fit or FitSettings()
    template_set, ancestor, data, card = inputs.template_set, inputs.ancestor, inputs.data, inputs.card
    fits = get_method(method).fits_scalers  # the ancestor is then the fitting's teacher, not a source of weights
    if fits and ancestor is not None and template_set is not None:
        check_lineage(template_set, ancestor)
    model = build_descendant(
        method,
        spec,
        template_set=template_set,
        ancestor=None if fits else ancestor,
        seed=fit.seed,
        noise=fit.noise,
        device=device,
    )
    steps = fit.steps if data is not None and fits else 0
    if fits:
        teacher = ancestor.model() if ancestor else None
        report = fit_scalers(model, data, fit.model_copy(update={"steps": steps}), ancestor=teacher, hooks=hooks)
    else:
        report = FitReport(steps=0)
    if inputs.eval_data is not None:
        report.heldout_samples = len(inputs.eval_data)
        report.heldout_accuracy = evaluate(model, inputs.eval_data, device=torch.device(device))["accuracy"]
    normalization = (
        template_set.config.normalization if template_set else (ancestor.normalization if ancestor else None)
    )
    arch = spec.resolve()
    caveats: list[Caveat] = []
    if template_set is not None:
        caveats = architecture_caveats(template_set.config, arch, card)
        if fits and data is None:
            caveats.append(no_fitting_caveat(fresh_head=arch.num_classes != template_set.config.arch.num_classes))
        if data is not None:
            caveats += calibration_caveats(arch, data, template_set.config.normalization)
    metadata = {
        "method": method,
        "template_set": None
        if template_set is None
        else {"name": template_set.name, "version": template_set.version, "digest": inputs.template_digest},
        "fit": {**fit.model_dump(), "steps": steps, **report.model_dump(exclude={"steps"})},
        "calibration": None if data is None else {"uri": data.uri, "samples": len(data), "digest": data.digest()},
        "ancestor_sha256": ancestor.sha256 if ancestor else None,
        "license": template_set.lineage.license if template_set else None,
        "base_model": template_set.lineage.base_model if template_set else None,
        "normalization": None if normalization is None else normalization.for_channels(arch.in_chans).model_dump(),
        "warnings": [c.model_dump() for c in caveats],
        "card_row": None,
    }
    row = card.row_for(arch.depth, arch.embed_dim) if card is not None else None
    if row is not None:  # measured with the set's default fitting on its own data, as the row says
        metadata["card_row"] = row.model_dump()
    info = export_checkpoint(model, out, spec=spec, metadata=metadata)
    source = template_set.ref if template_set else (f"ancestor:{ancestor.sha256[:12]}" if ancestor else method)
    return InitResult(
        checkpoint=info, fit=report, template_set=source, spec=spec.model_dump(exclude_none=True), warnings=caveats
    )


def check_lineage(template_set: TemplateSet, ancestor: AncestorWeights) -> None:
    """A WAVE teacher must be the ancestor the template set was condensed from (when its lineage records one)."""
    recorded = template_set.lineage.ancestor_sha256
    if recorded and ancestor.sha256 != recorded:
        raise UserError(
            f"the ancestor (sha256 {ancestor.sha256[:12]}) is not the one {template_set.ref} was condensed from "
            f"(sha256 {recorded[:12]})"
        )


class AncestorRef(BaseModel):
    """An ancestor as named by a user: see `learngene.formats.ancestors.resolve_ancestor` for the forms `checkpoint`
    takes; `model` may be left to the folder's or hub model's config.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str


class CondensationSpec(BaseModel):
    """One condensation, whole: what it reads, what it computes (`config`), where it runs (`runtime`) and where it
    keeps its training state. The same spec runs in this process (`run_condensation`) or in each torchrun rank
    (`learngene.train.launch`, which writes it into the run folder as JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ancestor: AncestorRef
    data_uri: str
    config: CondenseConfig
    name: str
    eval_uri: str | None = None
    max_samples: int | None = None
    allowed_roots: list[str] | None = None
    limits: DecodeLimits = DEFAULT_LIMITS
    runtime: Runtime = Field(default_factory=Runtime)
    run_dir: str | None = Field(
        default=None,
        description="the run's folder: its training state (as a single process keeps it, so a run may resume on "
        "another number of processes) and, launched on ranks, the spec, progress, log and result; none: no state",
    )
    checkpoint_every: int = Field(default=500, ge=1, description="steps between snapshots of the training state")


def run_condensation(
    spec: CondensationSpec, *, progress: ProgressFn | None = None, should_stop: StopFn | None = None
) -> TemplateSet:
    """Load the ancestor (safetensors only, from under the allowed roots), open the data (streamed, never decoded
    whole), condense, record lineage."""
    config, roots = spec.config, spec.allowed_roots
    access = DataAccess(roots, spec.limits, should_stop)
    arch = config.aux.resolve()
    resolved = resolve_ancestor(spec.ancestor.checkpoint, spec.ancestor.model, spec.ancestor.overrides, roots)
    checkpoint = resolved.checkpoint
    anc = load_ancestor(resolved.model, checkpoint, resolved.overrides)
    opened = open_source(spec.data_uri, access)
    source = sample_source(opened, spec.max_samples, config.seed)
    stored = read_metadata(checkpoint).get("normalization")
    normalization = resolved.normalization or (Normalization.model_validate(stored) if stored else None)
    if normalization is None:  # the ancestor's convention is unknown: the data's own statistics, from a sample
        normalization = source_stats(source, arch.img_size, arch.in_chans, seed=config.seed)
    eval_source = open_source(spec.eval_uri, access) if spec.eval_uri else None
    named = spec.ancestor.checkpoint
    lineage = Lineage(
        ancestor_model=resolved.model,
        ancestor_overrides=resolved.overrides,
        ancestor_sha256=sha256_file(checkpoint),
        data_uri=spec.data_uri,
        base_model=named.removeprefix(HUB_PREFIX) if named.startswith(HUB_PREFIX) else None,  # its hub id
    )
    hooks = Hooks(
        progress=progress,
        should_stop=should_stop,
        checkpoint_dir=Path(spec.run_dir) if spec.run_dir else None,
        checkpoint_every=spec.checkpoint_every,
    )
    template_set = condense(
        anc,
        source,
        config,
        normalization=normalization,
        eval_data=eval_source,
        lineage=lineage,
        runtime=spec.runtime,
        hooks=hooks,
    )
    template_set.name = spec.name
    return template_set


class TrainResult(BaseModel):
    checkpoint: CheckpointInfo
    metrics: dict[str, float]


class TrainingSpec(BaseModel):
    """One training of a timm ViT from scratch (ancestors, baselines), whole: the model, its data (`max_samples`: a
    seeded subset), how long and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ViTSpec
    data_uri: str
    eval_uri: str | None = None
    max_samples: int | None = Field(default=None, ge=1)
    steps: int = Field(ge=0)
    batch_size: int = Field(default=128, ge=1)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    seed: int = 0
    augment: Augment = Field(default_factory=Augment.plain)


def run_training(
    spec: TrainingSpec,
    out: str | Path,
    *,
    access: DataAccess = UNRESTRICTED,
    runtime: Runtime = Runtime(),
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train on streamed data, plain unless `spec.augment` says otherwise; normalization comes from the statistics
    of a sample of the data."""
    arch, augment, seed, workers = spec.model.resolve(), spec.augment, spec.seed, runtime.workers
    source = sample_source(open_source(spec.data_uri, access), spec.max_samples, seed)
    if source.max_label() >= arch.num_classes:
        raise DataRefError(
            spec.data_uri, f"labels go up to {source.max_label()} but the model has num_classes={arch.num_classes}"
        )
    normalization = source_stats(source, arch.img_size, arch.in_chans, seed=seed)
    torch.manual_seed(seed)
    model = spec.model.build()
    final_loss = train_classifier(
        model,
        Stream(source, train_transform(augment, arch.img_size, arch.in_chans, normalization), workers),
        LoopConfig(total_steps=spec.steps, batch_size=spec.batch_size, optim=spec.optim, seed=seed),
        device=pick_device(runtime.device),
        augment=augment,
        hooks=LoopHooks(progress=progress),
    )
    metrics = {"final_loss": final_loss} if final_loss is not None else {}
    if spec.eval_uri:
        held = open_source(spec.eval_uri, access)
        eval_data = Stream(held, eval_transform(arch.img_size, arch.in_chans, normalization), workers)
        metrics["accuracy"] = evaluate(model, eval_data)["accuracy"]
    metadata = {
        "method": "scratch",
        "normalization": normalization.model_dump(),
        "train": {
            "data_uri": spec.data_uri,
            "data_digest": source.digest(),
            "augment": augment.model_dump(),
            "steps": spec.steps,
            "batch_size": spec.batch_size,
            "seed": seed,
            "optim": spec.optim.model_dump(),
            "metrics": metrics,
        },
    }
    info = export_checkpoint(model, out, spec=spec.model, metadata=metadata)
    return TrainResult(checkpoint=info, metrics=metrics)
