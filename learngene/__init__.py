"""learngene: condense an ancestor ViT into weight templates (WAVE) and inherit Vision Transformers of any size.

Pure PyTorch + timm; no web or queue code. The method is specified in ../shared/design/METHOD.md.
"""

from learngene.checkpoint import CheckpointInfo, export_checkpoint, load_ancestor, load_model, read_metadata
from learngene.condense import CondenseConfig, condense
from learngene.data import DataRefError, ImageData, load_images
from learngene.fit import FitReport, fit_scalers
from learngene.inherit import check_compatible, inherit
from learngene.spec import Architecture, SpecError, ViTSpec
from learngene.template_set import IntegrityError, Lineage, Normalization, TemplateSet, TemplateSetConfig
from learngene.templated_vit import TemplatedViT
from learngene.templates import TemplateConfig, WeightScalers, WeightTemplates, compose
from learngene.version import __version__

__all__ = [
    "Architecture",
    "CheckpointInfo",
    "CondenseConfig",
    "DataRefError",
    "FitReport",
    "ImageData",
    "IntegrityError",
    "Lineage",
    "Normalization",
    "SpecError",
    "TemplateConfig",
    "TemplateSet",
    "TemplateSetConfig",
    "TemplatedViT",
    "ViTSpec",
    "WeightScalers",
    "WeightTemplates",
    "__version__",
    "check_compatible",
    "compose",
    "condense",
    "export_checkpoint",
    "fit_scalers",
    "inherit",
    "load_ancestor",
    "load_images",
    "load_model",
    "read_metadata",
]
