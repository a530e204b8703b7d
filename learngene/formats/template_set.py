"""A template set: one condensed learngene plus everything needed to inherit from it, and its folder format.

Folder layout (one version of one template set):

    manifest.json         schema version, name, version, method, config, lineage, metrics, file checksums
    tensors.safetensors   templates.<kind>, scalers.<kind> (the auxiliary model's, one row per layer),
                          free.<timm name> (the auxiliary model's parameters that are not generated)

Only JSON and safetensors are ever read, and every file is checked against the manifest's sha256 before use.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from torch import Tensor

from learngene.errors import IntegrityError, UserError
from learngene.formats.files import save_safetensors_atomic, sha256_file, write_json_atomic
from learngene.layers.generated import GeneratedViT, LearngeneMethod
from learngene.layers.templates import TemplateConfig
from learngene.spec import Architecture, ViTSpec

SCHEMA_VERSION = 1
# Template sets shipped inside the package, usable by name with no store and no training.
BUILTIN_TEMPLATE_SETS = {"demo": Path(__file__).parent.parent / "assets" / "demo"}  # learngene/assets
MANIFEST = "manifest.json"
TENSORS = "tensors.safetensors"
CARD = "card.json"  # a bundled set's quality card, beside its manifest (a stored set's cards live in the store)
PLAIN_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class Normalization(BaseModel):
    """Per-channel input normalization the template set was condensed with; descendants must use the same."""

    model_config = ConfigDict(frozen=True)

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def for_channels(self, channels: int) -> Normalization:
        """Adapt to another channel count (a grey mean replicated to RGB, RGB means averaged to grey)."""
        if len(self.mean) == channels:
            return self
        if len(self.mean) == 1:
            return Normalization(mean=self.mean * channels, std=self.std * channels)
        mean, std = sum(self.mean) / len(self.mean), sum(self.std) / len(self.std)
        return Normalization(mean=(mean,) * channels, std=(std,) * channels)


class TemplateSetConfig(BaseModel):
    """How the template set was built: the auxiliary architecture, the templates, and the input convention."""

    model_config = ConfigDict(frozen=True)

    method: LearngeneMethod = "wave"
    aux: ViTSpec
    architecture: Architecture | None = Field(
        default=None, description="what timm built for `aux` at condensation (D0, L0, heads, MLP hidden, patch, ...)"
    )
    templates: TemplateConfig | None = Field(default=None, description="WAVE: template size and counts")
    stages: list[int] | None = Field(default=None, description="SWS: layers per stage of the auxiliary model")
    normalization: Normalization

    @field_serializer("aux")
    def _aux_as_given(self, aux: ViTSpec) -> dict[str, Any]:
        # Like the architecture: an override added after a set was recorded (qk_norm) is not written into its
        # manifest, whose bytes stay as they were read; a new record holds the overrides it was given.
        return aux.model_dump(exclude_unset=True)

    @field_serializer("architecture")
    def _as_recorded(self, architecture: Architecture | None) -> dict[str, Any] | None:
        # A set recorded before a field existed is written back as it was read: its manifest's bytes (its digest,
        # which its cards name) do not change. A new record sets every field.
        return None if architecture is None else architecture.model_dump(exclude_unset=True)

    @model_validator(mode="after")
    def _method_fields(self) -> TemplateSetConfig:
        if (self.method == "wave") != (self.templates is not None):
            raise UserError("templates are given exactly for method 'wave'")
        if (self.method == "sws") != (self.stages is not None):
            raise UserError("stages are given exactly for method 'sws'")
        if self.architecture is not None and not _same_recorded(self.architecture, self.aux.resolve()):
            raise UserError(
                f"timm now builds {self.aux.resolve()} for the auxiliary spec, not {self.architecture} as when the "
                "template set was condensed (another timm version?)"
            )
        return self

    @property
    def arch(self) -> Architecture:
        return self.aux.resolve()


def _same_recorded(recorded: Architecture, built: Architecture) -> bool:
    """Whether timm builds what was recorded, over the fields the record holds: a set condensed before a field
    existed records the plain block's value by default, and reads as what it was."""
    return all(getattr(recorded, field) == getattr(built, field) for field in recorded.model_fields_set)


class Lineage(BaseModel):
    """Where a template set came from, so that a checkpoint can be traced back to its ancestor and data."""

    ancestor_model: str | None = None
    ancestor_overrides: dict[str, Any] = Field(default_factory=dict)
    ancestor_sha256: str | None = None
    data_uri: str | None = None
    data_digest: str | None = None
    eval_data_uri: str | None = Field(default=None, description="where the recorded accuracies were measured")
    condensation: dict[str, Any] = Field(default_factory=dict)
    code_version: str | None = None
    license: str | None = Field(
        default=None, description="the set's terms (a Hugging Face license id), inherited by every descendant"
    )
    base_model: str | None = Field(
        default=None, description="the ancestor's Hugging Face Hub id, when known (an hf-hub: ancestor, or given)"
    )

    @model_serializer(mode="wrap")
    def _unset_terms_unwritten(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Without a license or hub id a manifest is written byte for byte as before these fields existed, so a set
        published again (the bundled demo) keeps its digest, and the card keyed to it."""
        data = handler(self)
        return {k: v for k, v in data.items() if not (k in ("license", "base_model") and v is None)}


class FileEntry(BaseModel):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class Manifest(BaseModel):
    """`manifest.json`: everything about one version of a template set except its tensors."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int
    name: str
    version: int = Field(ge=1)
    method: str
    created: str
    config: TemplateSetConfig
    lineage: Lineage
    metrics: dict[str, float]
    parameters: dict[str, int]
    files: dict[str, FileEntry]

    @field_validator("files")
    @classmethod
    def _plain_file_names(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        """Entries name files inside the version's folder, never a path elsewhere (`../x`, `/etc/passwd`)."""
        bad = sorted(name for name in files if not PLAIN_FILE_NAME.fullmatch(name))
        if bad:
            raise UserError(f"file names must be plain names inside the folder, got {bad}")
        return files


class TemplateSet(BaseModel):
    """Templates, the auxiliary model's scalers and free parameters, configuration, lineage and metrics."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    version: int = 1
    config: TemplateSetConfig
    templates: dict[str, Tensor]
    scalers: dict[str, Tensor]
    free: dict[str, Tensor]
    lineage: Lineage = Field(default_factory=Lineage)
    metrics: dict[str, float] = Field(default_factory=dict)
    created: str = Field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    @classmethod
    def from_auxiliary(
        cls,
        aux: GeneratedViT,
        *,
        name: str,
        normalization: Normalization,
        lineage: Lineage | None = None,
        metrics: dict[str, float] | None = None,
    ) -> TemplateSet:
        """Snapshot of an auxiliary model: its learngene, its scalers (WAVE) and its free parameters."""

        def snapshot(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
            return {k: v.detach().cpu().clone() for k, v in tensors.items()}

        config = TemplateSetConfig(
            method=aux.method, aux=aux.spec, architecture=aux.arch, normalization=normalization, **aux.method_config()
        )
        return cls(
            name=name,
            config=config,
            templates=snapshot(aux.learngene()),
            scalers=snapshot(aux.scalers()),
            free=snapshot(aux.free_state()),
            lineage=lineage or Lineage(),
            metrics=metrics or {},
        )

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def tensors(self) -> dict[str, Tensor]:
        groups = {"templates": self.templates, "scalers": self.scalers, "free": self.free}
        return {f"{g}.{k}": v.detach().cpu().contiguous() for g, d in groups.items() for k, v in d.items()}

    def num_learngene_parameters(self) -> int:
        return sum(t.numel() for t in self.templates.values())

    def manifest(self, files: dict[str, FileEntry]) -> Manifest:
        count = lambda d: sum(t.numel() for t in d.values())  # noqa: E731
        return Manifest(
            schema_version=SCHEMA_VERSION,
            name=self.name,
            version=self.version,
            method=self.config.method,
            created=self.created,
            config=self.config,
            lineage=self.lineage,
            metrics=self.metrics,
            parameters={"templates": count(self.templates), "scalers": count(self.scalers), "free": count(self.free)},
            files=files,
        )

    def write_tensors(self, folder: Path) -> dict[str, FileEntry]:
        """Write the tensor file into `folder` (atomically) and return its manifest entry."""
        path = folder / TENSORS
        save_safetensors_atomic(self.tensors(), path, metadata={"format": "pt"})
        return {TENSORS: FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size)}

    def write_manifest(self, folder: Path, files: dict[str, FileEntry]) -> None:
        write_json_atomic(folder / MANIFEST, self.manifest(files).model_dump(mode="json"))

    def save(self, folder: str | Path) -> Path:
        """Write the folder; the manifest is written last and atomically, so a reader never sees half a set."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.write_manifest(folder, self.write_tensors(folder))
        return folder

    @classmethod
    def load(
        cls,
        folder: str | Path,
        device: str | torch.device = "cpu",
        *,
        manifest: Manifest | None = None,
    ) -> TemplateSet:
        """Read a folder, checking the tensor file against the manifest. The file is read into memory once and
        those very bytes are hashed and deserialized: what is loaded is what was verified, even if the file is
        rewritten afterwards."""
        folder = Path(folder)
        manifest = manifest or read_manifest(folder)
        if TENSORS not in manifest.files:
            raise IntegrityError(f"{_where(folder / MANIFEST)}: no checksum recorded for {TENSORS}")
        path = folder / TENSORS
        try:
            data = path.read_bytes()
        except OSError:
            raise IntegrityError(f"{_where(path)}: file missing or unreadable") from None
        check_bytes(path, data, manifest.files[TENSORS])
        try:
            tensors = load_bytes(data)
        except SafetensorError as exc:
            raise IntegrityError(f"{_where(path)}: not a readable safetensors file ({exc})") from None
        groups: dict[str, dict[str, Tensor]] = {"templates": {}, "scalers": {}, "free": {}}
        for key, value in tensors.items():
            group, _, name = key.partition(".")
            if group not in groups:
                raise IntegrityError(f"{_where(path)}: unexpected tensor {key!r}")
            groups[group][name] = value.to(device)
        return cls(
            name=manifest.name,
            version=manifest.version,
            created=manifest.created,
            config=manifest.config,
            lineage=manifest.lineage,
            metrics=manifest.metrics,
            **groups,
        )


def _where(path: Path) -> str:
    """A stored file named by its place in the store (`name/version/file`), never by an absolute server path."""
    return "/".join(path.parts[-3:])


def check_bytes(path: Path, data: bytes, entry: FileEntry) -> None:
    if len(data) != entry.bytes:
        raise IntegrityError(f"{_where(path)}: {len(data)} bytes, manifest says {entry.bytes} (truncated?)")
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise IntegrityError(f"{_where(path)}: sha256 does not match the manifest (modified or corrupt)")


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST
    if not path.is_file():
        raise IntegrityError(f"{_where(path)}: manifest missing")
    return parse_manifest(path.read_bytes(), path)


def parse_manifest(data: bytes, path: Path) -> Manifest:
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{_where(path)}: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict) or raw.get("schema_version") != SCHEMA_VERSION:
        found = raw.get("schema_version") if isinstance(raw, dict) else None
        raise IntegrityError(f"{_where(path)}: schema_version {found!r}, expected {SCHEMA_VERSION}")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise IntegrityError(f"{_where(path)}: invalid manifest ({first['loc']}: {first['msg']})") from exc


def verify_files(folder: Path, manifest: Manifest) -> None:
    """Every file the manifest lists exists with its size and sha256, and the tensor file is listed."""
    if TENSORS not in manifest.files:
        raise IntegrityError(f"{_where(folder / MANIFEST)}: no checksum recorded for {TENSORS}")
    for name, entry in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise IntegrityError(f"{_where(path)}: file missing")
        size = path.stat().st_size
        if size != entry.bytes:
            raise IntegrityError(f"{_where(path)}: {size} bytes, manifest says {entry.bytes} (truncated?)")
        if sha256_file(path) != entry.sha256:
            raise IntegrityError(f"{_where(path)}: sha256 does not match the manifest (modified or corrupt)")
