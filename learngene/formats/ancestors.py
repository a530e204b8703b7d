"""Ancestors in the forms people have them: a `.safetensors` state dict, a timm `local-dir` folder
(`model.safetensors` + `config.json`), or `hf-hub:<owner>/<name>` from the local Hugging Face cache (offline; never
downloaded here). Only safetensors weights and JSON are read, never a pickle.

What the ancestor is need not be repeated: the timm name and the architecture overrides come from the `spec` that
the weights' own safetensors header records (`learngene.formats.checkpoint.export_checkpoint` writes it), else from
a timm `config.json` in the folder or beside the weights file (`architecture`, `num_classes`, `model_args`); the
normalization from that config.json's `pretrained_cfg`. What the caller gives explicitly wins, key by key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import try_to_load_from_cache  # timm's own dependency
from safetensors import SafetensorError

from learngene.data.refs import file_uri_path, resolve_inside
from learngene.errors import DataRefError
from learngene.formats.checkpoint import read_metadata
from learngene.formats.template_set import Normalization
from learngene.spec import ViTSpec

HUB_PREFIX, LOCAL_DIR_PREFIX = "hf-hub:", "local-dir:"
HUB_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")  # the Hub's own rule
WEIGHTS, CONFIG = "model.safetensors", "config.json"


@dataclass(frozen=True)
class ResolvedAncestor:
    checkpoint: Path
    model: str
    overrides: dict[str, Any] = field(default_factory=dict)
    normalization: Normalization | None = None  # from config.json's pretrained_cfg, when it has mean and std


def resolve_ancestor(
    ref: str,
    model: str | None = None,
    overrides: dict[str, Any] | None = None,
    allowed_roots: Sequence[str | Path] | None = None,
) -> ResolvedAncestor:
    """Where the ancestor's weights are and what it is. `ref` is a path or file:// URI of a .safetensors file or a
    local-dir folder, `local-dir:<folder>`, or `hf-hub:<owner>/<name>`."""
    bare = False  # a weights file named alone, not a folder
    if ref.startswith(HUB_PREFIX):
        folder = _cached_hub_folder(ref, ref[len(HUB_PREFIX) :])
        weights = resolve_inside(ref, folder / WEIGHTS, allowed_roots)
    else:
        path = ref[len(LOCAL_DIR_PREFIX) :] if ref.startswith(LOCAL_DIR_PREFIX) else ref
        scheme, sep, rest = path.partition("://")
        if sep and scheme != "file":
            raise DataRefError(ref, f"expected a path, file://, local-dir: or hf-hub: reference, got {scheme}://")
        target = resolve_inside(ref, Path(file_uri_path(ref, rest) if sep else path), allowed_roots)
        if target.is_file() and target.suffix != ".safetensors":
            raise DataRefError(ref, f"only .safetensors weights are read, got {target.name}")
        bare = target.is_file()
        folder = target.parent if bare else target
        weights = target if bare else resolve_inside(ref, folder / WEIGHTS, allowed_roots)
    spec = _recorded_spec(ref, weights)
    # A folder's config.json is part of it; beside a bare file, one is consulted only when nothing else names the
    # model (it may belong to another file in that folder).
    config = {} if bare and (model or spec) else _read_config(ref, folder / CONFIG, allowed_roots)
    architecture, recorded = spec or _config_spec(config)
    if model is not None and model != architecture:
        recorded = {}  # recorded for another model: the explicit one is built with its own defaults
    architecture = model or architecture
    if not isinstance(architecture, str):
        raise DataRefError(
            ref,
            "neither its safetensors header nor a config.json beside it names the architecture: give the timm "
            "model name (--ancestor-model)",
        )
    pretrained = config.get("pretrained_cfg") or {}
    normalization = None
    if pretrained.get("mean") and pretrained.get("std"):
        normalization = Normalization(mean=tuple(pretrained["mean"]), std=tuple(pretrained["std"]))
    return ResolvedAncestor(
        weights, architecture, {**_checked_overrides(ref, recorded), **(overrides or {})}, normalization
    )


def _recorded_spec(ref: str, weights: Path) -> tuple[str, dict[str, Any]] | None:
    """The timm name and overrides the weights' header records (a checkpoint written by this project), if any."""
    try:
        spec = read_metadata(weights).get("spec")
    except (SafetensorError, OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise DataRefError(ref, "the weights are not a readable safetensors file") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), str):
        return None
    return spec["model"], {k: v for k, v in spec.items() if k != "model"}


# What a file may say about the ancestor's architecture: the overrides a request may give (ViTSpec's fields). Any
# other `model_args` key goes to timm.create_model unchecked (`checkpoint_path` would make timm read a file outside
# the roots; `pretrained_cfg_overlay` and the like are no architecture), so it is refused.
ARCHITECTURE_KEYS = frozenset(ViTSpec.model_fields) - {"model"}


def _config_spec(config: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The timm name and overrides of a timm config.json (None and {} when there is none)."""
    overrides = dict(config.get("model_args") or {})  # a dict: _read_config checked the shape
    if "num_classes" in config:
        overrides["num_classes"] = config["num_classes"]
    return config.get("architecture"), overrides


def _checked_overrides(ref: str, overrides: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(str(key)[:40] for key in overrides if key not in ARCHITECTURE_KEYS)
    if unknown:
        accepted = ", ".join(sorted(ARCHITECTURE_KEYS))
        raise DataRefError(
            ref,
            f"its config.json or header gives model arguments learngene does not accept: "
            f"{', '.join(unknown[:8])} (accepted: {accepted})",
        )
    return overrides


def _read_config(ref: str, path: Path, allowed_roots: Sequence[str | Path] | None) -> dict[str, Any]:
    """The config.json at `path`, {} when there is none."""
    if not path.exists():
        return {}
    path = resolve_inside(ref, path, allowed_roots)
    if path.stat().st_size > 1 << 20:
        raise DataRefError(ref, "config.json is over 1 MiB")
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataRefError(ref, f"config.json is not JSON ({type(exc).__name__})") from None
    if not isinstance(config, dict):
        raise DataRefError(ref, "config.json is not a JSON object")
    shapes = {"architecture": str, "model_args": dict, "pretrained_cfg": dict}
    wrong = [key for key, kind in shapes.items() if config.get(key) is not None and not isinstance(config[key], kind)]
    pretrained = config.get("pretrained_cfg") or {}
    if any(not _numbers(pretrained.get(key)) for key in ("mean", "std") if pretrained.get(key) is not None):
        wrong.append("pretrained_cfg.mean/std")
    if wrong:
        raise DataRefError(ref, f"config.json has {', '.join(wrong)} of the wrong type")
    return config


def _numbers(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    )


def _cached_hub_folder(ref: str, repo_id: str) -> Path:
    """The snapshot folder of a hub model in the local cache, found without any network access."""
    if not HUB_REPO.fullmatch(repo_id) or ".." in repo_id:
        raise DataRefError(ref, "expected hf-hub:<owner>/<name> (letters, digits, '.', '_', '-')")
    found = {name: try_to_load_from_cache(repo_id, name) for name in (CONFIG, WEIGHTS)}
    cached = {name: path for name, path in found.items() if isinstance(path, str)}
    missing = [name for name in found if name not in cached]
    if missing:
        raise DataRefError(
            ref,
            f"{', '.join(missing)} not in the local Hugging Face cache (this service never downloads; "
            "populate the cache, e.g. with `huggingface-cli download`, or set HF_HUB_CACHE)",
            "unavailable",
        )
    return Path(cached[CONFIG]).parent
