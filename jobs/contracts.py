"""What clients submit: the request bodies of initialization and condensation jobs.

They live beside the task code because a worker re-reads them from the job record; the API validates with the same
models, so anything a worker sees has already passed them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from jobs.promotion import PromoteIf
from jobs.webhooks.model import EVENT_TYPES, EventType
from learngene import ViTSpec
from learngene.data.transforms import Augment
from learngene.fit_settings import SEED_MAX, Calibration, FitSettings
from learngene.layers.templates import DEFAULT_COUNTS
from learngene.methods import LEARNGENE_METHODS, LearngeneName, MethodName, get_method
from learngene.pipeline import AncestorRef
from learngene.spec import check_model_name
from learngene.train.condense import DEFAULT_STAGES, CondenseConfig
from learngene.train.loop import OptimConfig

DEFAULT_TEMPLATE_SET = "demo@prod"


MAX_UNKNOWN_FIELDS = 8


def few_unknown_fields(model: type[BaseModel], data: Any) -> Any:
    """Many unknown keys are one error, not one each: building 80,000 errors costs seconds of the API's CPU."""
    if isinstance(data, dict):
        unknown = [key for key in data if key not in model.model_fields]
        if len(unknown) > MAX_UNKNOWN_FIELDS:
            raise ValueError(f"{len(unknown):,} unknown fields (the first: {str(unknown[0])[:40]!r})")
    return data


class Body(BaseModel):
    """A request body or a part of one: unknown fields refused (many of them as one error), finite numbers only."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _few_unknown(cls, data: Any) -> Any:
        return few_unknown_fields(cls, data)


DESTINATION = "an http(s) URL the service may reach: a public address, or one LEARNGENE_WEBHOOK_ALLOWED_HOSTS lists"


class Notify(Body):
    """Where this job's events go (a webhook of its own, Standard Webhooks format): its secret is shown once, in
    the answer that accepts the job."""

    url: str = Field(max_length=2048, description=DESTINATION)
    events: list[EventType] = Field(
        default_factory=lambda: list(EVENT_TYPES),  # type: ignore[arg-type]  # EVENT_TYPES is EventType's values
        min_length=1,
        max_length=len(EVENT_TYPES),
        description="of this job only; default: all (an initialization's end is job.succeeded, job.failed or "
        "job.cancelled; a condensation also sends template_set.published, card.ready and alias.moved)",
    )


class WebhookRequest(Body):
    """POST /v1/admin/webhooks: a deployment's subscription, to the events of every job."""

    url: str = Field(max_length=2048, description=DESTINATION)
    events: list[EventType] = Field(min_length=1, max_length=len(EVENT_TYPES))


# The overrides are exactly ViTSpec's fields other than the model name: one definition, two shapes. A type checker
# cannot follow a model built at run time: to it they are a Body.
if TYPE_CHECKING:
    Overrides = Body
else:
    Overrides = create_model(
        "Overrides",
        __base__=Body,
        __doc__="Architecture overrides passed to `timm.create_model`; unset ones keep the named model's defaults.",
        **{name: (field.annotation, field) for name, field in ViTSpec.model_fields.items() if name != "model"},
    )


class Architecture(Body):
    model: str = Field(description="timm model name of the ViT/DeiT family", examples=["vit_tiny_patch16_224"])
    overrides: Overrides = Field(default_factory=Overrides)

    _known_model = field_validator("model")(lambda cls, name: check_model_name(name))

    def spec(self) -> ViTSpec:
        return ViTSpec(model=self.model, **self.overrides.model_dump(exclude_none=True))


class AncestorSpec(Architecture):
    checkpoint: str = Field(description="path or file:// URI of the ancestor's safetensors state dict")

    def ref(self) -> AncestorRef:
        return AncestorRef(model=self.model, overrides=self.spec().overrides(), checkpoint=self.checkpoint)


class InitializationRequest(Architecture):
    """POST /v1/initializations."""

    method: MethodName = Field(default="wave", description="wave, tleg, sws (learngenes) or a baseline")
    template_set: str | None = Field(
        default=None, description="template store reference (name, name@N, name@alias); default demo@prod"
    )
    ancestor: AncestorSpec | None = Field(
        default=None,
        description="weights for weight_selection, heru_lg, auto_lg; for wave, the template set's own ancestor as the "
        "teacher of a KL term in the scaler fitting",
    )
    calibration: Calibration | None = Field(
        default=None,
        description="data for WAVE's scaler fitting; without it the descendant is pure inheritance (fit.steps 0)",
    )
    fit: FitSettings = Field(default_factory=FitSettings)
    notify: Notify | None = Field(default=None, description="a webhook for this job's end")

    def fitting_without_data(self) -> str | None:
        """Why the request cannot run as asked: scaler-fitting steps but no calibration data. Checked when a request
        is accepted, not when a stored one is read back (records from before this rule carry the old default of 200
        steps; without data they run as pure inheritance, as they always did)."""
        if self.calibration is None and self.fit.steps > 0 and get_method(self.method).fits_scalers:
            return (
                f"fit.steps={self.fit.steps} asks for scaler fitting, which needs calibration data: give "
                "calibration.uri, or leave fit.steps out for pure inheritance"
            )
        return None

    @model_validator(mode="after")
    def _no_data_no_steps(self) -> InitializationRequest:
        """Without calibration data the default is pure inheritance, and the request (as recorded) says so."""
        if self.calibration is None and "steps" not in self.fit.model_fields_set:
            self.fit = self.fit.model_copy(update={"steps": 0})
        return self

    @property
    def template_ref(self) -> str | None:
        """The template set this request uses: only the learngene methods use one."""
        return (self.template_set or DEFAULT_TEMPLATE_SET) if self.method in LEARNGENE_METHODS else None


class DataSpec(Body):
    uri: str
    max_samples: int | None = Field(default=None, ge=1)


class TemplatesSpec(Body):
    size: int | None = Field(default=None, ge=1, description="template side; default: the auxiliary width")
    counts: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_COUNTS))


_CONDENSE = CondenseConfig.model_fields  # the request's defaults are the method's own
_OPTIM: OptimConfig = _CONDENSE["optim"].default


class TrainingSpec(Body):
    steps: int = Field(default=_CONDENSE["steps"].default, ge=1)
    batch_size: int = Field(default=_CONDENSE["batch_size"].default, ge=1)
    lr: float = Field(default=_OPTIM.lr, gt=0)
    warmup_steps: int = Field(default=_OPTIM.warmup_steps, ge=0)
    weight_decay: float = Field(default=_OPTIM.weight_decay, ge=0)
    lam: float = Field(default=_CONDENSE["lam"].default, ge=0)
    tau: float = Field(default=_CONDENSE["tau"].default, gt=0)
    seed: int = Field(default=_CONDENSE["seed"].default, ge=0, le=SEED_MAX)
    recipe: Literal["deit", "plain"] = Field(
        default=_CONDENSE["recipe"].default, description=_CONDENSE["recipe"].description
    )
    augment: Augment | None = Field(default=None, description="default: from `recipe`")
    lr_batch: int | None = Field(default=None, ge=1, description=_CONDENSE["lr_batch"].description)
    epochs: float | None = Field(default=None, gt=0, description=_CONDENSE["epochs"].description)
    warmup_epochs: float | None = Field(default=None, ge=0, description=_CONDENSE["warmup_epochs"].description)


class CondensationRequest(Body):
    """POST /v1/admin/condensations."""

    name: str = Field(description="template-set name to publish the result under")
    method: LearngeneName = Field(default="wave", description="the learngene to condense")
    stages: list[int] | None = Field(
        default=None, description=f"SWS: layers per stage (default {','.join(map(str, DEFAULT_STAGES))})"
    )
    ancestor: AncestorSpec
    aux: Architecture = Field(description="the auxiliary model; its embed_dim is the template width")
    data: DataSpec
    eval_data: str | None = Field(default=None, description="held-out labelled data for the recorded accuracies")
    templates: TemplatesSpec = Field(default_factory=TemplatesSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    promote: str | None = Field(default=None, description="alias to point at the new version when it succeeds")
    promote_if: PromoteIf = Field(
        default="card",
        description="'card': move `promote` only once the quality card is measured and WAVE is at or above timm's "
        "init on every row (else the set stays unpromoted, with a `promotion_withheld` warning); 'always': on "
        "publication",
    )
    nproc: int | None = Field(
        default=None,
        ge=1,
        description="processes to run on (torchrun ranks on the worker's machine, one per GPU); "
        "default: the worker's LEARNGENE_CONDENSE_NPROC",
    )
    notify: Notify | None = Field(default=None, description="a webhook for this job's events")
    license: str = Field(
        default="other",
        pattern=r"^[a-z0-9][a-z0-9.+-]{0,63}$",
        description="the set's terms as a Hugging Face license id (apache-2.0, cc-by-nc-4.0, ...; 'other' for "
        "custom terms): its descendants' model cards carry it",
    )
    base_model: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$",
        description="the ancestor's Hugging Face Hub id (owner/name), named as base_model in descendants' model "
        "cards; default: the id of an hf-hub: ancestor, else none",
    )

    def condense_config(self) -> CondenseConfig:
        t = self.training
        given: dict[str, Any] = {"stages": self.stages} if self.stages else {}
        if "lr_batch" in t.model_fields_set:  # None is a value: no scaling
            given["lr_batch"] = t.lr_batch
        return CondenseConfig(
            method=self.method,
            aux=self.aux.spec(),
            template_size=self.templates.size,
            template_counts=self.templates.counts,
            steps=t.steps,
            batch_size=t.batch_size,
            optim=OptimConfig(lr=t.lr, warmup_steps=t.warmup_steps, weight_decay=t.weight_decay),
            lam=t.lam,
            tau=t.tau,
            seed=t.seed,
            recipe=t.recipe,
            augment=t.augment,
            epochs=t.epochs,
            warmup_epochs=t.warmup_epochs,
            **given,
        )


class CardRequest(Body):
    """POST /v1/admin/template-sets/{ref}/card: measure the version's quality card again (a new revision)."""

    template_set: str = Field(description="the reference as sent; the job pins the version it resolved to")


def describe(request: BaseModel) -> dict[str, Any]:
    """The request as stored in the job record (JSON types, defaults filled in)."""
    return request.model_dump(mode="json")
