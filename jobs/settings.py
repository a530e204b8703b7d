"""All settings in one place, read from LEARNGENE_* environment variables (and a .env file) by pydantic-settings."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import platformdirs
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobs.logs import LogFormat
from jobs.webhooks.destinations import check_allow_list
from learngene.data import DecodeLimits
from storage.objects import is_url


class Limits(BaseModel):
    """What one request may ask for (LEARNGENE_LIMITS__<NAME>); beyond it, a 422 naming the field."""

    depth: int = Field(default=64, ge=1)
    embed_dim: int = Field(default=4096, ge=1)
    mlp_ratio: float = Field(default=16.0, gt=0)
    parameters: int = Field(default=1_000_000_000, ge=1, description="of the requested model")
    # The work of one step, estimated from the architecture before anything is built (learngene.cost): a step
    # is where a job cannot stop, so its length bounds how long a cancel waits.
    tokens: int = Field(default=8192, ge=1, description="sequence length of one image (patches and class token)")
    step_flops: float = Field(
        default=2e14,
        gt=0,
        description="one training step (forward and backward over a batch, a teacher's forward "
        "included); 2e14 is a ViT-B/16 at 224 px with a batch of 1024 x 3.7, about a second on one H100 and many "
        "minutes on a CPU: lower it for CPU workers",
    )
    img_size: int = Field(default=1024, ge=1)
    in_chans: int = Field(default=64, ge=1)
    num_classes: int = Field(default=100_000, ge=1)
    fit_steps: int = Field(default=20_000, ge=0)
    batch_size: int = Field(default=1024, ge=1)
    calibration_samples: int = Field(default=100_000, ge=1)
    calibration_bytes: int = Field(
        default=4 << 30,
        ge=1,
        description="samples x channels x height x width, as uint8 "
        "(turned into floats 64 MiB at a time: this bounds the peak)",
    )
    condense_steps: int = Field(default=2_000_000, ge=1)
    condense_epochs: float = Field(default=1000.0, gt=0)
    condense_nproc: int = Field(default=8, ge=1, description="processes one condensation may ask for")
    # Optimizer and loss numbers: finite, and far beyond any useful value, so a typo is refused rather than run.
    lr: float = Field(default=1.0, gt=0, description="learning rate of fitting and condensation")
    noise: float = Field(default=1.0, ge=0, description="eps of the noise added to inherited scalers")
    loss_weight: float = Field(default=100.0, gt=0, description="distillation and classification loss weights")
    temperature: float = Field(default=100.0, gt=0, description="distillation temperature")
    weight_decay: float = Field(default=10.0, ge=0)
    warmup_steps: int = Field(default=1_000_000, ge=0)
    # Decoding, checked from each file's header before anything is allocated.
    decoded_bytes: int = Field(
        default=1 << 30, ge=1, description="what one data file (IDX, .npz or safetensors bundle) may decode to"
    )
    image_pixels: int = Field(default=4096 * 4096, ge=1, description="width x height of one image of an ImageFolder")
    image_aspect: float = Field(default=16.0, ge=1, description="one image's longer side over its shorter one")

    def decode(self) -> DecodeLimits:
        return DecodeLimits(
            decoded_bytes=self.decoded_bytes, image_pixels=self.image_pixels, image_aspect=self.image_aspect
        )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LEARNGENE_", env_file=".env", extra="ignore", env_nested_delimiter="__"
    )

    # storage
    store: str = Field(
        default_factory=lambda: str(Path(platformdirs.user_data_dir("learngene")) / "store"),
        description="where the template store lives: a local folder, file:// URL or s3://bucket/prefix (endpoint and "
        "credentials from the AWS_* variables or the instance role)",
    )
    store_cache_size: int = Field(default=8, ge=1, description="template sets kept in memory per process")
    store_cache_bytes: int = Field(
        default=10 << 30, ge=1 << 20, description="local disk cache of template sets read from s3:// (LRU)"
    )
    artifacts: str = Field(
        default_factory=lambda: str(Path(platformdirs.user_data_dir("learngene")) / "artifacts"),
        description="where workers publish checkpoints (named by their sha256): a local folder or s3://bucket/prefix",
    )
    storage_outage_s: float = Field(
        default=600.0,
        ge=0,
        description="how long a running job waits out unreachable object storage (capped "
        "backoff) before it fails with StorageUnavailable",
    )
    retry_backoff_max_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="the longest wait between two retries of a job step through an "
        "outage of Redis or object storage (the wait doubles from 0.5 s up to it)",
    )
    artifacts_presign_s: int | None = Field(
        default=None,
        ge=1,
        le=7 * 86400,
        description="with s3:// artifacts, answer a download with a redirect to a "
        "presigned URL valid this long instead of streaming it through the API",
    )
    artifacts_public_endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://[^/?#\s]+/?$",
        description="the object store's endpoint as clients reach "
        "it: presigned URLs name it instead of the internal AWS_ENDPOINT_URL (they still carry the access key id, "
        "as every S3 presigned URL does: give the API a key that can only read the checkpoints)",
    )
    artifacts_sweep_interval_s: float = Field(
        default=3600.0,
        gt=0,
        description="how often the API removes checkpoint files that no kept, unreleased job names (jobs.retention)",
    )
    artifacts_sweep_grace_s: float = Field(
        default=3600.0,
        ge=0,
        description="an unreferenced checkpoint file younger than this is kept (its job may not "
        "have recorded its success yet)",
    )
    client_max_artifact_bytes: int = Field(
        default=50 << 30,
        ge=1,
        description="bytes of checkpoints one client's kept, unreleased jobs may name; past "
        "it, submissions get 429 until the client releases some (DELETE .../checkpoint) or their records expire",
    )
    signing_key: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("learngene")) / "signing-key.pem",
        description="the EC private key (PEM, P-256) every published checkpoint folder and template-set version is "
        "signed with (model.sig, "
        "OpenSSF model-signing) and whose public half GET /v1/signing-key serves; generated at first start when "
        "absent. With API and workers on several hosts, the same key (a mounted secret) on each",
    )
    work_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_cache_dir("learngene")),
        description="resumable condensation states and other scratch files",
    )
    data_roots: list[str] = Field(
        default_factory=lambda: [str(Path(platformdirs.user_data_dir("learngene")) / "datasets")],
        description="folders, and s3://bucket/prefix/ URL prefixes, that data and checkpoint references of API "
        "requests must lie under (JSON list)",
    )
    data_cache_bytes: int = Field(
        default=100 << 30,
        ge=1 << 20,
        description="each worker's disk cache of data copied from s3:// (LRU); "
        "a reference whose objects exceed it is refused",
    )
    device: str | None = Field(default=None, description="torch device; unset: CUDA when present, else CPU")
    condense_nproc: int = Field(
        default=1,
        ge=1,
        description="processes (torchrun ranks, one per GPU) a condensation runs on unless its request says `nproc`",
    )
    condense_compile: bool = Field(
        default=False, description="train condensations through torch.compile (off until measured on the GPUs used)"
    )
    data_workers: int | None = Field(
        default=None,
        ge=0,
        description="DataLoader worker processes of a condensation; unset: the cores less one, "
        "at most 8; 0: decode in the training process",
    )

    # queue and job records
    redis_url: str | None = Field(
        default=None, description="Redis for the Celery broker and job records; unset: embedded in-process executor"
    )
    redis_prefix: str = Field(default="learngene", description="prefix of the service's own Redis keys")
    job_ttl_s: int = Field(default=30 * 86400, ge=60, description="how long finished job records are kept")
    job_log_lines: int = Field(
        default=2000, ge=10, le=100_000, description="log lines kept per job (the last ones; GET .../{id}/logs)"
    )
    idempotency_ttl_s: int = Field(default=86400, ge=60, description="how long an Idempotency-Key is remembered")
    max_attempts: int = Field(default=3, ge=1, description="deliveries of one job before it is failed")
    lease_s: float = Field(
        default=30.0, gt=0, description="a running job's lease; renewed every third of it, redelivered when it lapses"
    )
    redelivery_grace_s: float = Field(
        default=600.0, gt=0, description="after a redelivery, how long before the same job may be re-sent"
    )
    reaper_interval_s: float = Field(default=10.0, gt=0, description="how often lapsed leases are looked for")
    condense_checkpoint_every: int = Field(
        default=500, ge=1, description="condensation steps between resumable states (a killed job loses at most these)"
    )
    card_on_publish: bool = Field(
        default=True, description="measure a quality card when a condensation publishes a set (in the same job)"
    )
    card_fit_steps: int | None = Field(
        default=None,
        ge=0,
        description="fitting (and baseline training) steps of every card size; unset: the set's default fitting",
    )
    card_train_samples: int = Field(default=2048, ge=1, description="images a card fits and trains on")
    card_eval_samples: int = Field(default=2000, ge=1, description="held-out images a card measures")
    embedded_workers: int = Field(
        default=2,
        ge=1,
        description="jobs the embedded executor runs at once, each in a process of its own: a slow "
        "job does not hold up the next one",
    )
    stop_grace_s: float = Field(
        default=10.0,
        gt=0,
        description="a job told to stop (cancelled, past its time limit) that has not reached a "
        "stop check this long after is ended with its process: a cancel takes effect within it, whatever one "
        "training step costs",
    )

    # webhooks (jobs.webhooks): sent from the workers' side, at least once
    webhook_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="host names or CIDRs (JSON list) webhooks may be sent to besides public addresses; by default "
        "loopback, private, link-local (cloud metadata) and reserved addresses are refused, checked after DNS "
        "resolution and again at every attempt",
    )
    webhook_retry_schedule_s: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        min_length=1,
        max_length=30,
        description="seconds before each retry of a failed delivery (Svix's schedule: 5 s, 5 min, 30 min, 2 h, "
        "5 h, 10 h, 10 h); once spent, the delivery is failed (a manual redelivery starts it again)",
    )
    webhook_retry_jitter: float = Field(
        default=0.2, ge=0, lt=1, description="each retry's delay is spread by this fraction either way"
    )
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="a receiver's answer must come within it")
    webhook_lease_s: float = Field(
        default=60.0,
        gt=0,
        description="a delivery being sent is another sender's again after this long (its sender died): more than "
        "webhook_timeout_s",
    )
    webhook_poll_s: float = Field(default=1.0, gt=0, description="how often due deliveries are looked for")
    webhook_senders: int = Field(default=4, ge=1, le=64, description="deliveries one process sends at once")
    webhook_deliveries_kept: int = Field(
        default=1000, ge=10, description="deliveries listed per subscription (the newest)"
    )

    # worker reliability (Celery)
    inherit_soft_time_limit_s: int = Field(default=900, ge=1)
    inherit_time_limit_s: int = Field(default=960, ge=1)
    condense_soft_time_limit_s: int = Field(default=12 * 3600, ge=1)
    condense_time_limit_s: int = Field(default=12 * 3600 + 300, ge=1)
    worker_max_tasks_per_child: int = Field(default=50, ge=1, description="recycle a worker process after N jobs")
    worker_max_memory_per_child_kb: int = Field(default=16 * 1024 * 1024, ge=1024)
    worker_soft_shutdown_s: float = Field(
        default=120.0, ge=0, description="on SIGTERM, time running jobs get to finish before they are requeued"
    )
    worker_heartbeat_file: Path | None = Field(
        default=None,
        description="a Celery worker's main process touches this file on its timer; "
        "`python -m workers.heartbeat` checks it is fresh (the images' HEALTHCHECK); unset: no heartbeat",
    )
    worker_heartbeat_interval_s: float = Field(default=5.0, gt=0, description="seconds between heartbeats")

    # API
    admin_token: SecretStr | None = Field(default=None, description="bearer token of the admin endpoints")
    client_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="name -> bearer token of API clients (JSON); when set, every /v1 call needs one of them",
    )
    client_max_active_jobs: int = Field(default=50, ge=1, description="queued + running jobs per client token")
    max_queued_jobs: int = Field(default=1000, ge=1, description="past it, submissions get 429 with Retry-After")
    max_request_bytes: int = Field(default=1 << 20, ge=1024, description="larger request bodies get 413")
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$",
        description="the API's address as clients reach "
        "it (https://learngene.example.com): links, Location and next are built from it, not from a client's Host",
    )
    forwarded_allow_ips: str = Field(
        default="",
        description="comma-separated addresses of the proxies whose X-Forwarded-For and -Proto are "
        "trusted (uvicorn's forwarded_allow_ips); none by default",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="a request's headers not complete this long "
        "after the connection (or its last answer) get 408 and the connection "
        "closed: a slow sender holds no connection",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="a request body that has not arrived this long "
        "after the headers gets 408: a slow sender holds no API task",
    )
    events_poll_s: float = Field(
        default=0.5, gt=0, le=60, description="how often a job's event stream (GET .../{id}/events) reads its record"
    )
    events_ping_s: int = Field(
        default=15, ge=1, le=300, description="a comment line this often keeps a quiet stream open"
    )
    limits: Limits = Field(default_factory=Limits)

    # logs (API and workers; see jobs.logs)
    log_format: LogFormat = Field(
        default="auto",
        description="json: one JSON object per line; text: for people; auto: text when stderr is a terminal, else json",
    )

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _allow_list(cls, entries: list[str]) -> list[str]:
        return check_allow_list(entries)

    @field_validator("webhook_retry_schedule_s")
    @classmethod
    def _schedule(cls, delays: list[float]) -> list[float]:
        if any(not 0 <= d <= 7 * 86400 for d in delays):
            raise ValueError("every delay is between 0 and 604800 s (a week)")
        return delays

    @model_validator(mode="after")
    def _lease_outlasts_timeout(self) -> Settings:
        if self.webhook_lease_s <= self.webhook_timeout_s:
            raise ValueError("webhook_lease_s must be longer than webhook_timeout_s (an attempt is sent within it)")
        return self

    @property
    def folder_roots(self) -> list[Path]:
        """The data roots that are folders."""
        return [Path(root).expanduser() for root in self.data_roots if not is_url(root)]

    @property
    def object_roots(self) -> list[str]:
        """The data roots that are object-storage URL prefixes."""
        return [root for root in self.data_roots if is_url(root)]

    def local_data_roots(self) -> list[Path] | None:
        """Roots for the local CLI: its user may name any path they can read, unless roots were configured."""
        return self.folder_roots if "data_roots" in self.model_fields_set else None

    @property
    def visibility_timeout_s(self) -> int:
        """Redis redelivers an unacknowledged job after this long: longer than the longest job."""
        return max(self.condense_time_limit_s, self.inherit_time_limit_s) + 3600


@lru_cache
def get_settings() -> Settings:
    return Settings()
