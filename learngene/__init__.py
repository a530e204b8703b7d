"""learngene: condense an ancestor ViT into weight templates (WAVE) and inherit Vision Transformers of any size.

Pure PyTorch + timm; no web or queue code. The method is specified in ../shared/design/METHOD.md. The package is
grouped by concern (ARCHITECTURE.md, "The method core"):

    spec.py, cost.py       what a ViT is (timm's names and overrides) and what building one costs, analytically
    layers/                building blocks: weight templates and scalers (Eq. 4), generated ViTs, width selection
    methods/               every registered method, one module each (WAVE one folder: its model, inheritance, fit)
    train/                 the training loop, the condensation, torchrun launch, stop checks
    formats/               files: checkpoints, template sets, ancestors, timm/Hugging Face folders, atomic writes
    quality/               quality cards and their caveats
    data/                  data references, readers, sources, loaders, transforms
    pipeline.py            the two jobs end to end: initialize a descendant, condense an ancestor
    create.py              timm's one-liner: create_model (and list_template_sets), built here or by a service
    errors.py              one taxonomy: a UserError is the request's fault, anything else is a bug or the machine

The names below are imported on first use (PEP 562), for start-up time: importing a torch-free submodule such as
`learngene.version` or `learngene.fit_settings` (the command line's `--help` and `--version`) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from learngene.version import __version__

if TYPE_CHECKING:  # what a type checker sees of the lazy names below: the same objects, imported eagerly
    from learngene.create import create_model, list_template_sets
    from learngene.data import DataAccess, ImageData, load_images
    from learngene.errors import DataRefError, IntegrityError, LearngeneError, SpecError, UserError
    from learngene.fit_settings import Calibration, FitSettings
    from learngene.formats.checkpoint import CheckpointInfo, export_checkpoint, load_ancestor, load_model, read_metadata
    from learngene.formats.template_set import Lineage, Normalization, TemplateSet, TemplateSetConfig
    from learngene.layers.templates import TemplateConfig, WeightScalers, WeightTemplates, compose
    from learngene.methods.wave.fit import FitReport, fit_scalers
    from learngene.methods.wave.inherit import check_compatible, inherit
    from learngene.methods.wave.model import TemplatedViT
    from learngene.spec import Architecture, ViTSpec
    from learngene.train.condense import CondenseConfig, condense

_EXPORTS = {
    "learngene.create": ["create_model", "list_template_sets"],
    "learngene.formats.checkpoint": [
        "CheckpointInfo",
        "export_checkpoint",
        "load_ancestor",
        "load_model",
        "read_metadata",
    ],
    "learngene.train.condense": ["CondenseConfig", "condense"],
    "learngene.data": ["DataAccess", "ImageData", "load_images"],
    "learngene.fit_settings": ["Calibration", "FitSettings"],
    "learngene.methods.wave.fit": ["FitReport", "fit_scalers"],
    "learngene.methods.wave.inherit": ["check_compatible", "inherit"],
    "learngene.errors": ["DataRefError", "IntegrityError", "LearngeneError", "SpecError", "UserError"],
    "learngene.spec": ["Architecture", "ViTSpec"],
    "learngene.formats.template_set": [
        "Lineage",
        "Normalization",
        "TemplateSet",
        "TemplateSetConfig",
    ],
    "learngene.methods.wave.model": ["TemplatedViT"],
    "learngene.layers.templates": ["TemplateConfig", "WeightScalers", "WeightTemplates", "compose"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [*_MODULE_OF, "__version__"]


def __getattr__(name: str) -> object:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'learngene' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF})
