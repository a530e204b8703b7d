"""Accepting a job: validate everything that can be checked cheaply, pin the template version, record, dispatch.

Framework-free: refusals are `FieldError` (422), `DataUnavailable` (400), `Overloaded` (429; those two raised by
`jobs.limits`, which checks the request's numbers) and `IdempotencyConflict` (422), mapped to HTTP in one place
(`service.api.errors`); the CLI could reuse all of it.

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
from pathlib import Path

from pydantic import ValidationError
from safetensors import SafetensorError, safe_open

from jobs.contracts import CardRequest, CondensationRequest, InitializationRequest, describe
from jobs.initialization import current_card
from jobs.limits import (
    CHECKPOINT_BYTES_PER_PARAMETER,
    FieldError,
    admit,
    check_bounds,
    check_cost,
    check_limits,
    check_overrides,
    check_quota,
)
from jobs.logs import log_context, request_id_var
from jobs.model import Job, JobKind
from jobs.remote_data import check_data
from jobs.services import Services
from jobs.settings import Settings
from jobs.store import JobStore
from jobs.webhooks.subscriptions import subscribe
from learngene.cost import estimate
from learngene.data import DataRef, resolve_file
from learngene.errors import DataRefError, SpecError
from learngene.formats.ancestors import ResolvedAncestor, resolve_ancestor
from learngene.methods import ANCESTOR_METHODS, check_method, get_method
from learngene.quality.caveats import architecture_caveats, no_fitting_caveat
from learngene.spec import ViTSpec
from storage.objects import is_url
from templates_store.refs import RefError, check_alias, check_name

log = logging.getLogger(__name__)

# Fields of a request body that a `SpecError` can name; any other field it names is an architecture override.
REQUEST_FIELDS = frozenset({"model", "method", "template_set", "ancestor"})


class DataUnavailable(LookupError):
    """A data or checkpoint reference that does not exist or lies outside the allowed roots (answered 400; one
    message for both, so that nobody learns which)."""


class IdempotencyConflict(Exception):
    """The same Idempotency-Key was used for a different request body."""


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


def require_absolute(*references: tuple[str | None, tuple[str, ...]]) -> None:
    """The references of an HTTP request name the server's files absolutely (or are s3:// URLs, hub models): a
    relative path would be read from the server's working directory, which no client knows (a 422, before any
    other check). `references`: (reference or None, its field)."""
    for uri, loc in references:
        hub = loc[-1] == "checkpoint" and uri is not None and uri.startswith("hf-hub:")  # a hub model: no path
        if not uri or is_url(uri) or hub:
            continue
        first, *more = uri.removeprefix("local-dir:").split("::")  # WebDataset: patterns joined by ::
        try:
            paths = [DataRef.parse(first).path, *map(Path, more)]
        except DataRefError:
            continue  # malformed: the check of the field names the problem
        if not all(path.is_absolute() for path in paths):
            message = (
                f"{uri!r} is a relative path, which the server would read from its own working directory: name an "
                "absolute path or a URI (idx:///data/FashionMNIST, file:///data/ancestor.safetensors, s3://...)"
            )
            raise FieldError([(loc, message)])


def request_hash(document: dict) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def submit_initialization(
    request: InitializationRequest, services: Services, *, idempotency_key: str | None, client: str | None = None
) -> tuple[Job, bool]:
    """Returns the job and whether it was created now (False: an idempotent replay of an earlier submission)."""
    settings, store = services.settings, services.store
    calibration = request.calibration
    require_absolute(
        (request.ancestor.checkpoint if request.ancestor else None, ("body", "ancestor", "checkpoint")),
        (calibration.uri if calibration else None, ("body", "calibration", "uri")),
        (calibration.eval_uri if calibration else None, ("body", "calibration", "eval_uri")),
    )
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
            check_data(request.calibration.uri, settings, arch.num_classes)
        if request.calibration.eval_uri is not None:
            if not get_method(request.method).fits_scalers:  # only the fitted methods read calibration data
                message = f"held-out accuracy is measured for the methods that fit scalers, not {request.method}"
                raise FieldError([(("body", "calibration", "eval_uri"), message)])
            with located("body", "calibration", "eval_uri"):
                check_data(request.calibration.eval_uri, settings, arch.num_classes)
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
    require_absolute(
        (request.ancestor.checkpoint, ("body", "ancestor", "checkpoint")),
        (request.data.uri, ("body", "data", "uri")),
        (request.eval_data, ("body", "eval_data")),
    )
    with located("body", "name"):
        check_name(request.name)
    if request.promote is not None:
        with located("body", "promote"):
            check_alias(request.promote)
        if request.promote_if == "card" and not (settings.card_on_publish and request.method == "wave"):
            why = "this deployment measures no cards" if request.method == "wave" else "only WAVE sets get one"
            raise FieldError(
                [
                    (
                        ("body", "promote_if"),
                        f"the promotion is gated on the quality card, but this condensation gets none ({why}): send "
                        "promote_if='always' to move the alias on publication",
                    )
                ]
            )
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
        check_data(request.data.uri, settings, arch.num_classes)  # the auxiliary's head trains on it
    if request.eval_data:
        with located("body", "eval_data"):
            check_data(request.eval_data, settings, arch.num_classes)
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
        # Its destination checked (a 422 naming it) and subscribed before the record: a quick job is heard too.
        if (notify := getattr(request, "notify", None)) is not None:
            subscribe(jobs.webhooks, settings, notify.url, notify.events, job_id=job.id, loc=("body", "notify", "url"))
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
