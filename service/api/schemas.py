"""Response bodies of the API (request bodies are `jobs.contracts`, shared with the workers)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, PlainSerializer, WithJsonSchema, model_validator

from jobs.model import JobError, JobKind, JobProgress, JobStatus
from jobs.webhooks.model import Delivery, DeliveryStatus, EventType, Subscription
from learngene.quality.caveats import Caveat
from templates_store import AliasRecord, VersionInfo


def _from_epoch(value: Any) -> Any:
    """Job records keep epoch seconds (old records too); a body shows them as times."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.timezone.utc)
    return value


def _iso_utc(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds and an explicit offset, as the template sets' stored times also read
    (`2026-12-02T10:38:33.123+00:00`)."""
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")


UtcTime = Annotated[
    dt.datetime,
    BeforeValidator(_from_epoch),
    PlainSerializer(_iso_utc, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time", "examples": ["2026-12-02T10:38:33.123+00:00"]}),
]


class ProgressView(JobProgress):
    updated_at: UtcTime


class Links(BaseModel):
    self: str
    cancel: str
    checkpoint: str | None = None
    folder: str | None = Field(default=None, description="initializations: the checkpoint folder as one .tar")


class Timings(BaseModel):
    created_at: UtcTime
    started_at: UtcTime | None = None
    finished_at: UtcTime | None = None
    queued_s: float | None = Field(default=None, description="from acceptance to the first start")
    running_s: float | None = Field(default=None, description="from the first start to the end")


class FileView(BaseModel):
    sha256: str
    bytes: int
    download: str


class CheckpointView(BaseModel):
    sha256: str
    bytes: int
    parameters: int
    download: str
    files: dict[str, FileView] = Field(
        default_factory=dict,
        description="the timm / Hugging Face folder: model.safetensors (the same bytes as `download`), config.json, "
        "README.md; only model.safetensors for jobs that finished before checkpoints were stored as folders",
    )
    folder: str | None = Field(default=None, description="the whole folder as one .tar (null for those older jobs)")


class NotifyView(BaseModel):
    subscription: str
    url: str
    events: list[EventType]
    secret: str = Field(description="whsec_...: verify the deliveries' webhook-signature with it (shown only here)")


class JobView(BaseModel):
    id: str
    kind: JobKind
    status: JobStatus
    phase: str | None = Field(
        default=None,
        description="queued, loading_data, fitting, exporting, publishing or measuring_card; null once ended",
    )
    attempts: int
    max_attempts: int
    template_set: dict[str, Any] | None = Field(description="the resolved (name, version, digest) the job uses")
    warnings: list[Caveat] = Field(
        default_factory=list,
        description="caveats known at acceptance: where the request leaves the template set's "
        "domain or its quality card's range; the result's `warnings` add what the calibration data showed",
    )
    request: dict[str, Any]
    progress: ProgressView | None = None
    timings: Timings
    result: dict[str, Any] | None = None
    checkpoint: CheckpointView | None = None
    error: JobError | None = None
    links: Links
    notify: NotifyView | None = Field(
        default=None, description="the request's own webhook, with its secret: only in the answer that accepted it"
    )


class JobList(BaseModel):
    items: list[JobView] = Field(description="newest first")
    next: str | None = Field(description="the next page (the same filters and limit); null on the last page")


class TemplateSetQuery(BaseModel):
    """The filters of GET /v1/template-sets: a name, a domain (each given field must equal the set's), a size to
    rank by (depth and embed_dim together)."""

    name: str | None = Field(default=None, max_length=64, description="only this template set")
    img_size: int | None = Field(
        default=None, ge=1, le=1_000_000, description="sets condensed on square images of this side"
    )
    in_chans: int | None = Field(default=None, ge=1, le=1_000_000, description="sets condensed on this many channels")
    num_classes: int | None = Field(
        default=None, ge=1, le=1_000_000, description="sets condensed for this many classes"
    )
    depth: int | None = Field(
        default=None, ge=1, le=1_000_000, description="with embed_dim: rank by the card's prediction"
    )
    embed_dim: int | None = Field(
        default=None, ge=1, le=1_000_000, description="with depth: rank by the card's prediction"
    )


class TemplateSetList(BaseModel):
    items: list[VersionInfo] = Field(
        description="by name, then version; with depth and embed_dim, by the card's prediction, best first"
    )
    next: str | None = Field(description="the next page (the same filters and limit); null on the last page")


class TemplateSetView(BaseModel):
    ref: str
    digest: str
    aliases: dict[str, int]
    manifest: dict[str, Any]


class AliasUpdate(BaseModel):
    """Either `version` (promote: point the alias there) or `rollback: true` (back to its previous target)."""

    version: int | None = Field(default=None, ge=1)
    rollback: bool = False

    @model_validator(mode="after")
    def _one_action(self) -> AliasUpdate:
        if (self.version is None) == (not self.rollback):
            raise ValueError("give either version (to promote) or rollback: true")
        return self


class AliasView(AliasRecord):
    name: str
    alias: str


class WebhookView(BaseModel):
    id: str
    url: str
    events: list[EventType]
    created_at: UtcTime
    secret: str | None = Field(default=None, description="whsec_...: only in the answer that created the subscription")

    @classmethod
    def of(cls, subscription: Subscription, *, with_secret: bool = False) -> WebhookView:
        return cls(
            id=subscription.id,
            url=subscription.url,
            events=subscription.events,
            created_at=subscription.created_at,
            secret=subscription.secret if with_secret else None,
        )


class WebhookList(BaseModel):
    items: list[WebhookView] = Field(description="oldest first")


class AttemptView(BaseModel):
    at: UtcTime
    status_code: int | None
    error: str | None
    duration_s: float


class DeliveryView(BaseModel):
    id: str = Field(description="the webhook-id: the same on every attempt")
    type: EventType
    status: DeliveryStatus
    created_at: UtcTime
    attempts: list[AttemptView]
    next_attempt_at: UtcTime | None
    payload: dict[str, Any] = Field(description="the event as sent")

    @classmethod
    def of(cls, delivery: Delivery) -> DeliveryView:
        return cls(
            id=delivery.id,
            type=delivery.type,
            status=delivery.status,
            created_at=delivery.created_at,
            attempts=[AttemptView(**a.model_dump()) for a in delivery.attempts],
            next_attempt_at=delivery.next_attempt_at,
            payload=json.loads(delivery.payload),
        )


class DeliveryList(BaseModel):
    items: list[DeliveryView] = Field(description="newest first")


class LineageVersion(BaseModel):
    ref: str
    digest: str
    method: str
    created: str
    ancestor_sha256: str | None
    data_uri: str | None = Field(description="the condensation's data, as the admin named it")
    license: str | None
    base_model: str | None


class LineageDescendant(BaseModel):
    job_id: str
    model: str | None
    method: str | None
    template_set: str | None = Field(description="the manifest digest it inherited from")
    checkpoint_sha256: str | None
    calibration_digest: str | None = Field(description="of the calibration data its scalers were fitted on")
    finished_at: UtcTime | None


class LineageView(BaseModel):
    sha256: str
    found: Literal["ancestor", "template_set", "checkpoint"] = Field(description="what the digest is")
    ancestors: list[dict[str, str]]
    template_sets: list[LineageVersion]
    descendants: list[LineageDescendant]


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
