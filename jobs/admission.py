"""Accepting a job: validate everything that can be checked cheaply, pin the template version, record, dispatch.

Framework-free: refusals are `FieldError` (422), `DataUnavailable` (400), `Overloaded` (429) and
`IdempotencyConflict` (422), mapped to HTTP in one place (`service.api.errors`); the CLI could reuse all of it.

Nothing slow happens here (no data is read, no model is built beyond the meta device), so submission stays fast
and every refusal is immediate and names its field.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence

from pydantic import ValidationError
from safetensors import SafetensorError, safe_open

from jobs.contracts import CardRequest, CondensationRequest, InitializationRequest, describe
from jobs.initialization import current_card
from jobs.logs import log_context, request_id_var
from jobs.model import Job, JobKind
from jobs.remote_data import check_data
from jobs.retention import usage_bytes
from jobs.services import Services
from jobs.settings import Limits, Settings
from jobs.store import JobStore
from learngene.cost import estimate
from learngene.data import resolve_file
from learngene.errors import DataRefError, SpecError
from learngene.formats.ancestors import ResolvedAncestor, resolve_ancestor
from learngene.methods import ANCESTOR_METHODS, check_method, get_method
from learngene.quality.caveats import architecture_caveats, no_fitting_caveat
from learngene.spec import Architecture, ViTSpec
from templates_store.refs import RefError, check_alias, check_name

log = logging.getLogger(__name__)

# Fields of a request body that a `SpecError` can name; any other field it names is an architecture override.
REQUEST_FIELDS = frozenset({"model", "method", "template_set", "ancestor"})


class FieldError(ValueError):
    """Fields of a request that are invalid, each as (loc, message): `loc` is where in the request it is, e.g.
    ("body", "overrides", "embed_dim"). The HTTP layer answers 422 with one entry per field."""

    def __init__(self, errors: list[tuple[tuple, str]]):
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in errors))
        self.errors = errors


class DataUnavailable(LookupError):
    """A data or checkpoint reference that does not exist or lies outside the allowed roots (answered 400; one
    message for both, so that nobody learns which)."""


class IdempotencyConflict(Exception):
    """The same Idempotency-Key was used for a different request body."""


class Overloaded(Exception):
    """Admission control said no: the queue is full, or the client has too many jobs. Answered 429."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


@contextlib.contextmanager
def located(*loc: str) -> Iterator[None]:
    """Report a domain error as a 422 at `loc` (like FastAPI's own body validation), or as a 400 for a data
    reference that does not exist or lies outside the allowed roots."""
    try:
        yield
    except SpecError as exc:
        field = exc.field.split(".")[-1]
        where = (field,) if field in REQUEST_FIELDS else ("overrides", field)
        raise FieldError([((*loc, *where), exc.message)]) from None
    except ValidationError as exc:
        raise FieldError([((*loc, *e["loc"]), e["msg"]) for e in exc.errors(include_url=False)]) from None
    except RefError as exc:
        raise FieldError([(loc, str(exc))]) from None
    except DataRefError as exc:  # its message names the reference as sent, never a server path
        if exc.reason == "invalid":
            raise FieldError([(loc, str(exc))]) from None
        raise DataUnavailable(f"{'.'.join(loc[1:])}: {exc}") from None


def request_hash(document: dict) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def submit_initialization(
    request: InitializationRequest, services: Services, *, idempotency_key: str | None, client: str | None = None
) -> tuple[Job, bool]:
    """Returns the job and whether it was created now (False: an idempotent replay of an earlier submission)."""
    settings, store = services.settings, services.store
    if problem := request.fitting_without_data():
        raise FieldError([(("body", "calibration"), problem)])
    fits = request.calibration is not None and request.fit.steps > 0 and get_method(request.method).fits_scalers
    batch_size = request.fit.batch_size if fits else 1  # without fitting: one forward pass at a time
    with located("body"):
        spec = request.spec()
        check_overrides(settings.limits, spec)
        check_cost(settings.limits, spec, batch_size=batch_size)
        arch = spec.resolve()
    check_limits(
        settings.limits,
        arch,
        spec,
        fit_steps=request.fit.steps,
        batch_size=request.fit.batch_size,
        samples=request.calibration.max_samples if request.calibration else 0,
    )
    check_bounds(settings.limits, ("body", "fit"), lr=request.fit.lr, noise=request.fit.noise)
    resolved = config = ancestor = None
    if request.template_ref is not None:
        with located("body", "template_set"):
            resolved = store.resolve(request.template_ref)  # pinned now: a later alias move does not change the job
        config = store.manifest(resolved).config
    if request.ancestor is not None:
        method = get_method(request.method)
        if method.needs != "ancestor" and not method.fits_scalers:
            users = ", ".join(ANCESTOR_METHODS)
            raise FieldError([(("body", "ancestor"), f"an ancestor is used only by {users} and as WAVE's teacher")])
        with located("body", "ancestor"):
            check_overrides(settings.limits, request.ancestor.spec(), prefix=("body", "ancestor"))
            check_cost(settings.limits, request.ancestor.spec(), batch_size=1, prefix=("body", "ancestor"))
            if fits:  # the ancestor teaches while the scalers are fitted
                check_cost(settings.limits, spec, batch_size=batch_size, teacher=request.ancestor.spec())
            ancestor = request.ancestor.spec().resolve()
        with located("body", "ancestor", "checkpoint"):
            _check_safetensors(request.ancestor.checkpoint, settings)
    with located("body"):
        check_method(request.method, spec, template_config=config, ancestor=ancestor)
    if request.calibration is not None:
        with located("body", "calibration", "uri"):
            check_data(request.calibration.uri, settings)
        if request.calibration.eval_uri is not None:
            if not get_method(request.method).fits_scalers:  # only the fitted methods read calibration data
                message = f"held-out accuracy is measured for the methods that fit scalers, not {request.method}"
                raise FieldError([(("body", "calibration", "eval_uri"), message)])
            with located("body", "calibration", "eval_uri"):
                check_data(request.calibration.eval_uri, settings)
    template = resolved.model_dump() if resolved else None
    warnings = []
    if config is not None and resolved is not None:
        caveats = architecture_caveats(config, arch, current_card(store, resolved))
        if request.calibration is None and get_method(request.method).fits_scalers:
            caveats.append(no_fitting_caveat(fresh_head=arch.num_classes != config.arch.num_classes))
        warnings = [c.model_dump() for c in caveats]
    return _accept(
        JobKind.initialization,
        request,
        services,
        template_set=template,
        idempotency_key=idempotency_key,
        client=client,
        warnings=warnings,
        checkpoint_bytes=estimate(spec).parameters * CHECKPOINT_BYTES_PER_PARAMETER,
    )


def check_overrides(limits: Limits, spec: ViTSpec, prefix: tuple[str, ...] = ("body",)) -> None:
    """The requested sizes against the limits, before anything is built from them."""
    over = []
    for field in ("depth", "embed_dim", "mlp_ratio", "img_size", "in_chans", "num_classes"):
        value = getattr(spec, field)
        if value is not None and value > getattr(limits, field):
            over.append(
                ((*prefix, "overrides", field), f"{field}={value:g} is over the limit of {getattr(limits, field):g}")
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
                over.append(((*prefix, field), f"{field}={value:g} is over the limit of {limit:g}"))
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


def _check_safetensors(uri: str, settings: Settings, *, ancestor: ViTSpec | None = None) -> ResolvedAncestor | None:
    """Only safetensors are loaded from outside: the suffix, and a header that parses, are checked up front. Given
    the `ancestor` (a condensation's), a timm local-dir folder or a cached hf-hub model is accepted too, and what
    it is (what its files record, under the request's overrides) is returned."""
    found = None
    if ancestor is not None:
        found = resolve_ancestor(
            uri, model=ancestor.model, overrides=ancestor.overrides(), allowed_roots=settings.folder_roots
        )
        path = found.checkpoint
    elif not uri.endswith(".safetensors"):
        raise DataRefError(uri, "only .safetensors files are accepted")
    else:
        path = resolve_file(uri, settings.folder_roots)
    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError, ValueError) as exc:  # the type only: an OSError's text names the path
        raise DataRefError(uri, f"not a readable safetensors file ({type(exc).__name__})") from None
    return found


def submit_condensation(
    request: CondensationRequest, services: Services, *, idempotency_key: str | None
) -> tuple[Job, bool]:
    settings = services.settings
    with located("body", "name"):
        check_name(request.name)
    if request.promote is not None:
        with located("body", "promote"):
            check_alias(request.promote)
    with located("body", "aux"):
        aux = request.aux.spec()
        check_overrides(settings.limits, aux, prefix=("body", "aux"))
        check_cost(settings.limits, aux, batch_size=1, prefix=("body", "aux"))
        arch = aux.resolve()
        request.condense_config()  # the templates must tile the auxiliary model
    check_limits(
        settings.limits,
        arch,
        aux,
        fit_steps=0,
        batch_size=request.training.batch_size,
        samples=0,
        prefix=("body", "aux"),
    )
    if request.training.steps > settings.limits.condense_steps:
        message = f"steps is over the limit of {settings.limits.condense_steps}"
        raise FieldError([(("body", "training", "steps"), message)])
    if (request.nproc or 0) > settings.limits.condense_nproc:
        message = f"nproc is over the limit of {settings.limits.condense_nproc}"
        raise FieldError([(("body", "nproc"), message)])
    for field in ("epochs", "warmup_epochs"):
        if (getattr(request.training, field) or 0) > settings.limits.condense_epochs:
            message = f"{field} is over the limit of {settings.limits.condense_epochs:g}"
            raise FieldError([(("body", "training", field), message)])
    t = request.training
    check_bounds(
        settings.limits,
        ("body", "training"),
        lr=t.lr,
        loss_weight={"lam": t.lam},
        temperature={"tau": t.tau},
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_steps,
    )
    with located("body", "ancestor"):
        check_overrides(settings.limits, request.ancestor.spec(), prefix=("body", "ancestor"))
    with located("body", "ancestor", "checkpoint"):
        found = _check_safetensors(request.ancestor.checkpoint, settings, ancestor=request.ancestor.spec())
        assert found is not None  # given the ancestor's spec, what it resolved to is returned
    with located("body", "ancestor"):  # what its files say it is, within the same limits as what a request says
        ancestor = ViTSpec(model=found.model, **found.overrides)
        check_overrides(settings.limits, ancestor, prefix=("body", "ancestor"))
        check_cost(settings.limits, ancestor, batch_size=1, prefix=("body", "ancestor"))  # its size, alone
        check_cost(
            settings.limits,
            aux,
            batch_size=request.training.batch_size,
            teacher=ancestor,
            prefix=("body", "aux"),
            batch_loc=("body", "training", "batch_size"),
        )
        ancestor.resolve()
    with located("body", "data", "uri"):
        check_data(request.data.uri, settings)
    if request.eval_data:
        with located("body", "eval_data"):
            check_data(request.eval_data, settings)
    return _accept(JobKind.condensation, request, services, idempotency_key=idempotency_key)


def submit_card(request: CardRequest, services: Services, *, idempotency_key: str | None) -> tuple[Job, bool]:
    """A job measuring a stored version's quality card again; the version is pinned now."""
    store = services.store
    with located("path", "ref"):
        resolved = store.resolve(request.template_set)
    method = store.manifest(resolved).method
    if method != "wave":
        raise FieldError([(("path", "ref"), f"{resolved} holds a {method!r} learngene; cards measure WAVE sets")])
    return _accept(JobKind.card, request, services, template_set=resolved.model_dump(), idempotency_key=idempotency_key)


def _accept(
    kind: JobKind,
    request: InitializationRequest | CondensationRequest | CardRequest,
    services: Services,
    *,
    template_set: dict | None = None,
    idempotency_key: str | None,
    client: str | None = None,
    warnings: Sequence[dict] = (),
    checkpoint_bytes: int = 0,
) -> tuple[Job, bool]:
    """Record the job (after the idempotency replay, the queue bounds and the quota) and hand it to the dispatcher."""
    jobs, dispatcher, settings = services.jobs, services.dispatcher, services.settings
    document = describe(request)
    job = Job.new(
        kind,
        document,
        template_set=template_set,
        max_attempts=settings.max_attempts,
        idempotency_key=idempotency_key,
        client=client,
        warnings=list(warnings),
        request_id=request_id_var.get(),  # the submission's (set by the API for the whole request)
    )
    scoped = None
    if idempotency_key is not None:
        scoped = f"{kind.value}:{client or '-'}:{idempotency_key}"  # one client's keys never meet another's
        existing = _replay(jobs, scoped, job.id, request_hash(document))
        if existing is not None:
            return existing, False
    try:
        admit(jobs, settings, kind, client)
        if checkpoint_bytes:  # a job that writes a checkpoint
            check_quota(jobs, settings, client, checkpoint_bytes=checkpoint_bytes)
        jobs.create(job)
    except BaseException:
        if scoped is not None:  # refused or failed: the key must not point at a job that was never recorded
            with contextlib.suppress(Exception):
                jobs.keys.forget(scoped, job.id)
        raise
    with log_context(job_id=job.id):
        try:
            dispatcher.submit(job)
        except Exception:  # the job is recorded, so it is accepted: the reaper sends it once the broker answers
            log.warning(
                "job %s recorded but not yet handed to the broker; the reaper will send it", job.id, exc_info=True
            )
        else:
            jobs.mark_dispatched(job.id)
            log.info("job %s (%s) accepted", job.id, kind.value)
    return job, True


def _replay(jobs: JobStore, scoped: str, job_id: str, digest: str) -> Job | None:
    """The job an earlier request with this key created, or None when this request is the first to use it."""
    known = jobs.keys.remember(scoped, job_id, digest)
    if known is None:
        return None
    known_id, known_digest = known
    if known_digest != digest:
        raise IdempotencyConflict("this Idempotency-Key was used for a different request")  # the key is not echoed
    existing = _wait_for(jobs, known_id)
    if existing is None:  # its first request died between storing the key and recording the job: take the key over
        jobs.keys.forget(scoped, known_id)
        return _replay(jobs, scoped, job_id, digest)
    return existing


def _wait_for(jobs: JobStore, job_id: str, timeout_s: float = 5.0) -> Job | None:
    """A concurrent request with the same key stores the key just before its job record: give it a moment."""
    deadline = time.monotonic() + timeout_s
    while (job := jobs.get(job_id)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return job
