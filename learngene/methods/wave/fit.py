"""Fitting a descendant's weight scalers (and free parameters) with the templates frozen (METHOD.md, Fitting).

Loss: CE on labelled calibration data, plus the distillation term when the ancestor is given; KL alone for unlabelled
data. Zero steps is pure inheritance. The loss is measured on the same held subset before and after, so the report
says whether fitting helped.
"""

from __future__ import annotations

import logging
import time

import torch
from pydantic import BaseModel
from torch import nn

from learngene.data import ImageData
from learngene.errors import UserError
from learngene.fit_settings import FitSettings
from learngene.formats.checkpoint import freeze
from learngene.methods.wave.model import TemplatedViT
from learngene.train.loop import (
    Hooks,
    LoopConfig,
    LoopHooks,
    Objective,
    OptimConfig,
    build_optimizer,
    evaluate,
    train_steps,
)

log = logging.getLogger(__name__)


class FitReport(BaseModel):
    """What fitting did. Losses and accuracies are measured on a held subset of the calibration images, which the
    fitting also trains on: they say whether fitting helped, not how well the descendant generalizes (that is
    `heldout_accuracy`, on separate data, when the request gives some)."""

    steps: int
    calibration_samples: int = 0  # the subset the calibration_* numbers are measured on
    calibration_loss_before: float | None = None
    calibration_loss_after: float | None = None
    calibration_accuracy_before: float | None = None
    calibration_accuracy_after: float | None = None
    heldout_samples: int = 0
    heldout_accuracy: float | None = None
    trainable_parameters: int = 0
    seconds: float = 0.0


def fit_scalers(
    model: nn.Module,
    data: ImageData | None,
    fit: FitSettings,
    *,
    ancestor: nn.Module | None = None,
    lam: float = 1.0,
    tau: float = 1.0,
    eval_samples: int = 1024,
    hooks: Hooks = Hooks(),
) -> FitReport:
    """Train `model`'s scalers and free parameters for `fit.steps` steps on `data`; templates stay frozen. `fit.noise`
    is not used here: it belongs to the inheritance that built `model`. `model`: a WAVE descendant in generating form
    (a `TemplatedViT`, what `build_descendant` returns for the methods that fit scalers)."""
    if not isinstance(model, TemplatedViT):
        raise TypeError(
            f"fit_scalers fits a WAVE descendant in generating form (TemplatedViT), not a {type(model).__name__}"
        )
    steps, lr, batch_size, seed = fit.steps, fit.lr, fit.batch_size, fit.seed
    if steps < 0:
        raise UserError(f"steps={steps} must be >= 0")
    model.templates.requires_grad_(False)
    named = model.trainable_named_parameters()
    report = FitReport(steps=steps, trainable_parameters=sum(p.numel() for _, p in named))
    if data is None:
        if steps:
            raise UserError("fitting for steps > 0 needs calibration data")
        return report
    if data.labels is None and ancestor is None:
        raise UserError("unlabelled calibration data needs the ancestor (the loss is KL to it)")
    device = model.device
    teacher = freeze(ancestor).to(device) if ancestor is not None else None
    lam = lam if teacher is not None else 0.0

    held = data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:eval_samples])
    report.calibration_samples = len(held)
    log.info("measuring the descendant on %d calibration images before %d fitting steps", len(held), steps)
    before = evaluate(model, held, device=device, teacher=teacher, lam=lam, tau=tau)
    report.calibration_loss_before, report.calibration_accuracy_before = before["loss"], before.get("accuracy")
    if steps == 0:
        report.calibration_loss_after = report.calibration_loss_before
        report.calibration_accuracy_after = report.calibration_accuracy_before
        return report

    cfg = OptimConfig(lr=lr, min_lr=lr / 100, warmup_steps=min(20, steps // 10), weight_decay=0.0)
    optimizer = build_optimizer(named, cfg)

    t0 = time.perf_counter()
    train_steps(
        model,
        optimizer,
        data,
        LoopConfig(total_steps=steps, batch_size=batch_size, optim=cfg, seed=seed),
        device=device,
        objective=Objective(teacher=teacher, lam=lam, tau=tau),
        hooks=LoopHooks(progress=hooks.progress, should_stop=hooks.should_stop),
    )
    model.eval()
    report.seconds = time.perf_counter() - t0
    after = evaluate(model, held, device=device, teacher=teacher, lam=lam, tau=tau)
    report.calibration_loss_after, report.calibration_accuracy_after = after["loss"], after.get("accuracy")
    return report
