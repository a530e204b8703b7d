"""learngene: condense an ancestor ViT into weight templates (WAVE) and inherit Vision Transformers of any size.

Pure PyTorch + timm; no web or queue code. The method is specified in ../shared/design/METHOD.md.

The names below are imported on first use (PEP 562), for start-up time: importing a torch-free submodule such as
`learngene.version` or `learngene.fit_settings` (the command line's `--help` and `--version`) does not load torch.
"""

from __future__ import annotations

import importlib
import sys
import types

from learngene.version import __version__

_EXPORTS = {
    "learngene.checkpoint": ["CheckpointInfo", "export_checkpoint", "load_ancestor", "load_model", "read_metadata"],
    "learngene.condense": ["CondenseConfig", "condense"],
    "learngene.data": ["DataRefError", "ImageData", "load_images"],
    "learngene.fit": ["FitReport", "fit_scalers"],
    "learngene.inherit": ["check_compatible", "inherit"],
    "learngene.spec": ["Architecture", "SpecError", "ViTSpec"],
    "learngene.template_set": ["IntegrityError", "Lineage", "Normalization", "TemplateSet", "TemplateSetConfig"],
    "learngene.templated_vit": ["TemplatedViT"],
    "learngene.templates": ["TemplateConfig", "WeightScalers", "WeightTemplates", "compose"],
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


# `inherit` and `condense` are functions named like the submodules that define them. Importing a submodule binds it
# as an attribute of its package (after it has run), which would shadow the lazily exported function of the same
# name; the package keeps the function instead (`from learngene.inherit import ...` reads sys.modules, unaffected).
_SHADOWED = frozenset(name for name in _MODULE_OF if f"learngene.{name}" in _EXPORTS)


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: object) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
