"""The numbers of a request against the deployment's limits (`Settings.limits`, quotas, the queue's bound): the
refusals admission makes before anything is read or built, each naming its field (`FieldError`, a 422) or asking the
client to come back later (`Overloaded`, a 429). Framework-free, like `jobs.admission`, which calls them."""

from __future__ import annotations

from jobs.model import JobKind
from jobs.retention import usage_bytes
from jobs.settings import Limits, Settings
from jobs.store import JobStore
from learngene.cost import estimate
from learngene.spec import Architecture, ViTSpec


class FieldError(ValueError):
    """Fields of a request that are invalid, each as (loc, message): `loc` is where in the request it is, e.g.
    ("body", "overrides", "embed_dim"). The HTTP layer answers 422 with one entry per field."""

    def __init__(self, errors: list[tuple[tuple, str]]):
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in errors))
        self.errors = errors


class Overloaded(Exception):
    """Admission control said no: the queue is full, or the client has too many jobs. Answered 429."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


def shown(value: float) -> str:
    """A number as a message echoes it: `:g`, or its first digits for an integer too large for a float (JSON has
    no bound on digits)."""
    try:
        return f"{value:g}"
    except OverflowError:
        digits = str(abs(int(value)))
        return f"{'-' if value < 0 else ''}{digits[0]}.{digits[1:4]}e+{len(digits) - 1}"


def check_overrides(limits: Limits, spec: ViTSpec, prefix: tuple[str, ...] = ("body",)) -> None:
    """The requested sizes against the limits, before anything is built from them."""
    over = []
    for field in ("depth", "embed_dim", "mlp_ratio", "img_size", "in_chans", "num_classes"):
        value = getattr(spec, field)
        if value is not None and value > getattr(limits, field):
            over.append(
                (
                    (*prefix, "overrides", field),
                    f"{field}={shown(value)} is over the limit of {getattr(limits, field):g}",
                )
            )
    if over:
        raise FieldError(over)


def check_limits(
    limits: Limits,
    arch: Architecture,
    spec: ViTSpec,
    *,
    fit_steps: int,
    batch_size: int,
    samples: int | None,
    prefix: tuple[str, ...] = ("body",),
) -> None:
    """The resolved model (the named model's defaults included) and the run against the limits."""
    over = []
    for field, value in (
        ("depth", arch.depth),
        ("embed_dim", arch.embed_dim),
        ("img_size", max(arch.img_size)),
        ("in_chans", arch.in_chans),
        ("num_classes", arch.num_classes),
    ):
        if value > getattr(limits, field):
            over.append(
                ((*prefix, "overrides", field), f"{field}={value} is over the limit of {getattr(limits, field)}")
            )
    for loc, value, limit in (
        (("fit", "steps"), fit_steps, limits.fit_steps),
        (("fit", "batch_size"), batch_size, limits.batch_size),
    ):
        if value > limit:
            over.append(((*prefix, *loc), f"{loc[-1]}={value} is over the limit of {limit}"))
    if samples is None or samples > limits.calibration_samples:
        message = f"max_samples must be set, at most {limits.calibration_samples}"
        over.append(((*prefix, "calibration", "max_samples"), message))
    elif samples * arch.in_chans * arch.img_size[0] * arch.img_size[1] > limits.calibration_bytes:
        size = f"{samples} x {arch.in_chans} x {arch.img_size[0]} x {arch.img_size[1]}"
        message = f"{size} images take more than {limits.calibration_bytes:,} bytes; ask for fewer samples"
        over.append(((*prefix, "calibration", "max_samples"), message))
    if over:
        raise FieldError(over)


def check_cost(
    limits: Limits,
    spec: ViTSpec,
    *,
    batch_size: int,
    teacher: ViTSpec | None = None,
    prefix: tuple[str, ...] = ("body",),
    batch_loc: tuple[str, ...] | None = None,
) -> None:
    """Tokens, parameters and the work of one step, estimated from the numbers of the request before any model is
    built; `teacher` (an ancestor that distils into the model) adds its forward pass to the step. A step over the
    limit is reported at `batch_loc` (the fit's batch size unless said)."""
    cost = estimate(spec)
    over = []
    if cost.tokens > limits.tokens:
        message = (
            f"{cost.tokens:,} tokens per image ((img_size / patch_size)^2 and the class token) is over the "
            f"limit of {limits.tokens:,}"
        )
        over.append(((*prefix, "overrides", "patch_size" if spec.patch_size else "img_size"), message))
    if cost.parameters > limits.parameters:
        message = f"the model has about {cost.parameters:,} parameters, the limit is {limits.parameters:,}"
        over.append(((*prefix, "overrides"), message))
    if not over:
        flops = cost.step_flops(batch_size)
        if teacher is not None:
            flops += estimate(teacher).step_flops(batch_size, training=False)
        if flops > limits.step_flops:
            message = (
                f"one step of batch_size={batch_size} is about {flops:.2g} FLOPs, over the limit of "
                f"{limits.step_flops:.2g}; ask for a smaller batch or model"
            )
            over.append((batch_loc or (*prefix, "fit", "batch_size"), message))
    if over:
        raise FieldError(over)


def check_bounds(limits: Limits, prefix: tuple[str, ...], **values: float | dict[str, float]) -> None:
    """Numbers of the optimizer and the loss against their limits (a field named differently from its limit is
    given as {field: value})."""
    over = []
    for limit_name, given in values.items():
        for field, value in given.items() if isinstance(given, dict) else [(limit_name, given)]:
            limit = getattr(limits, limit_name)
            if value > limit:
                over.append(((*prefix, field), f"{field}={shown(value)} is over the limit of {limit:g}"))
    if over:
        raise FieldError(over)


# An exported checkpoint holds float32 tensors (as timm's state dict): its size, estimated before anything is built.
CHECKPOINT_BYTES_PER_PARAMETER = 4


def check_quota(jobs: JobStore, settings: Settings, client: str | None, *, checkpoint_bytes: int) -> None:
    """The client's checkpoints (`jobs.retention`), this one's estimate included, against its byte quota: past it,
    429 until checkpoints are released or expire (the next sweep frees their bytes)."""
    used, quota = usage_bytes(jobs, client), settings.client_max_artifact_bytes
    if used + checkpoint_bytes > quota:
        who = f"client {client!r}" if client is not None else "this service's clients"
        message = (
            f"{who} hold {used:,} bytes of checkpoints and this one needs about {checkpoint_bytes:,}: over the "
            f"quota of {quota:,} bytes; release checkpoints you have downloaded (DELETE "
            "/v1/initializations/{id}/checkpoint)"
        )
        raise Overloaded(message, int(settings.artifacts_sweep_interval_s))


def admit(jobs: JobStore, settings: Settings, kind: JobKind, client: str | None) -> None:
    """A bounded queue, and a bound on each client's jobs: past either, 429 with Retry-After."""
    queued = jobs.counts(kind)["queued"]
    if queued >= settings.max_queued_jobs:
        raise Overloaded(f"{queued} jobs are queued, the limit is {settings.max_queued_jobs}; retry later", 30)
    if client is not None and jobs.active(client) >= settings.client_max_active_jobs:
        limit = settings.client_max_active_jobs
        raise Overloaded(f"client {client!r} has {limit} queued or running jobs, its limit; retry later", 10)
