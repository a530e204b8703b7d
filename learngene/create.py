"""`learngene.create_model`: timm's one-liner for a model of any size initialized from a learngene, and
`learngene.list_template_sets` to choose the learngene.

    model = learngene.create_model("vit_small_patch16_224", template_set="demo@prod",
                                   calibration="idx:///data/FashionMNIST", depth=6, embed_dim=96, num_heads=2,
                                   img_size=28, patch_size=7, in_chans=1, num_classes=10)

The model is what `timm.create_model` returns (the same class), loaded from the timm folder the service would hand
out (`pretrained_cfg` from its config.json: mean, std, input size). Who builds that folder is a backend: on this
machine (`local`: the template store at LEARNGENE_STORE, data under LEARNGENE_DATA_ROOTS when set) or, with `url=`,
a running service (`remote`: its client). The method core knows backends only by this interface; the distribution
registers them as entry points of the group `learngene.backends` (pyproject.toml), so that the core imports no
layer above it.
"""

from __future__ import annotations

import tempfile
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from learngene.errors import UserError

if TYPE_CHECKING:
    import torch

BACKENDS = "learngene.backends"  # the entry-point group: `local` and `remote`


class Backend(Protocol):
    def initialize(self, request: dict[str, Any], folder: Path) -> None:
        """Write the timm folder (model.safetensors, config.json, README.md) of POST /v1/initializations' `request`."""

    def template_sets(self, **wanted: Any) -> list[dict[str, Any]]:
        """The versions of a domain, ranked for a size (GET /v1/template-sets' filters)."""


def backend(url: str | None = None) -> Backend:
    name = "local" if url is None else "remote"
    found = {point.name: point for point in entry_points(group=BACKENDS)}
    if name not in found:
        raise UserError(f"no {name} backend is installed (entry point {name!r} of {BACKENDS}): install learngene")
    factory = found[name].load()
    return factory() if url is None else factory(url)


def create_model(
    model_name: str,
    *,
    template_set: str | None = None,
    calibration: str | None = None,
    max_samples: int | None = None,
    eval_data: str | None = None,
    method: str = "wave",
    fit: dict[str, Any] | None = None,
    url: str | None = None,
    **overrides: Any,
) -> torch.nn.Module:
    """A timm model of `model_name` with `overrides` (depth, embed_dim, num_heads, img_size, num_classes, ...),
    initialized by `method` from `template_set` (default demo@prod) and, given `calibration` data (a data
    reference: idx://, imagefolder://, bundle://, wds://, s3://), its scalers fitted (`fit`: steps, lr, batch_size,
    seed, noise). With `url`, the service at that address builds it; else this machine does."""
    import timm  # here, not with the module: list_template_sets(url=...) runs on the light client, without torch

    if calibration is None and (max_samples is not None or eval_data is not None):
        raise UserError("max_samples and eval_data describe the calibration data: give calibration too")
    request: dict[str, Any] = {"model": model_name, "method": method, "overrides": overrides, "fit": fit or {}}
    if template_set is not None:
        request["template_set"] = template_set
    if calibration is not None:
        given = {"uri": calibration, "max_samples": max_samples, "eval_uri": eval_data}
        request["calibration"] = {key: value for key, value in given.items() if value is not None}
    with tempfile.TemporaryDirectory(prefix="learngene-model-") as scratch:
        folder = Path(scratch) / "model"
        backend(url).initialize(request, folder)
        return timm.create_model(f"local-dir:{folder}", pretrained=True)


def list_template_sets(
    *,
    img_size: int | None = None,
    in_chans: int | None = None,
    num_classes: int | None = None,
    depth: int | None = None,
    embed_dim: int | None = None,
    name: str | None = None,
    url: str | None = None,
) -> list[dict[str, Any]]:
    """The template sets condensed for a domain (square images of `img_size`, `in_chans`, `num_classes`; each only
    when given); with `depth` and `embed_dim`, the best first by what their quality card predicts at that size (each
    with its `prediction`: the card row used). With `url`, those of the service at that address."""
    wanted = {"img_size": img_size, "in_chans": in_chans, "num_classes": num_classes, "depth": depth,
              "embed_dim": embed_dim, "name": name}  # fmt: skip
    return backend(url).template_sets(**{k: v for k, v in wanted.items() if v is not None})
