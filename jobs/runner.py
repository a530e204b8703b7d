"""The work itself, independent of how it is delivered (Celery task or embedded thread).

`run_job(job_id, context)` claims the job, runs it, and records the outcome. It is safe to deliver the same job
twice: a finished job is not run again, outputs are written under a temporary name and renamed to a name derived
from their content, a condensation resumes from its own state and publishes at most once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from jobs.cards import card_summary, measure_card
from jobs.contracts import CondensationRequest, InitializationRequest
from jobs.initialization import cache_key, load_inputs, run_request
from jobs.job_log import job_log
from jobs.lease import Lease, LeaseLost, Reporter, StopWatchdog, owner_dead, worker_identity
from jobs.logs import log_context
from jobs.model import TRANSIENT_ERRORS, Job, JobError, JobKind, JobStatus
from jobs.outages import through_outages, until_redis_answers
from jobs.promotion import promotion_warning, withheld_reason
from jobs.publications import Publications
from jobs.redaction import redact_paths
from jobs.remote_data import Sample, localize
from jobs.settings import Settings
from jobs.store import JobStore
from jobs.webhooks import events
from learngene.control import Stopped
from learngene.data import DataAccess
from learngene.errors import IntegrityError, UserError
from learngene.formats.files import sha256_file
from learngene.formats.pretrained import WEIGHTS, write_companions
from learngene.formats.template_set import FileEntry
from learngene.methods import get_method
from learngene.pipeline import CondensationSpec
from learngene.train.launch import condense_run
from learngene.train.loop import Hooks, Runtime, pick_device
from storage.artifacts import Artifacts
from storage.objects import StorageUnavailable
from storage.signing import SIGNATURE, sign_folder
from templates_store import ResolvedRef, StoreError, TemplateStore

log = logging.getLogger(__name__)

# The failures a job ends with, its message going to the client (it names no server path), no traceback logged:
# the request or its inputs are wrong (a UserError), the stored bytes are damaged or the store refuses, or storage
# stayed away past LEARNGENE_STORAGE_OUTAGE_S. Anything else (a ValueError from a bug included) is logged with its
# traceback and re-raised.
EXPECTED_FAILURES = (UserError, IntegrityError, StoreError, StorageUnavailable)


@dataclass
class WorkerContext:
    """What a worker process needs; built once per process (after the fork, for Celery's prefork pool)."""

    settings: Settings
    jobs: JobStore
    store: TemplateStore
    artifacts: Artifacts
    # The job runs in a process of its own (a Celery pool process, an embedded job's process): one that does not
    # stop within `settings.stop_grace_s` of being told to is ended with its process (jobs.lease.StopWatchdog).
    own_process: bool = False
    _template_hits_reported: int = field(default=0, repr=False)

    def report_store_cache(self) -> None:
        """Publish this process's template-cache hits to the cross-process counters."""
        delta = self.store.hits - self._template_hits_reported
        if delta:
            self.jobs.metrics.incr("template_cache_hits", delta)
            self._template_hits_reported = self.store.hits


def _finish(jobs: JobStore, job_id: str, owner: str, status: JobStatus, **fields: Any) -> bool:
    """Record the outcome, waiting out a short Redis outage; True when this call recorded it. If Redis stays away,
    the lease expires and the reaper runs the job again; the rerun finds its checkpoint (named by content) and its
    result in the cache."""
    for attempt in range(10):
        try:
            if jobs.finish(job_id, status, owner=owner, **fields):
                log.info("job %s %s", job_id, status.value)
                return True
            log.warning("job %s: not finished by %s (its lease moved on)", job_id, owner)
            return False
        except TRANSIENT_ERRORS:
            time.sleep(min(30.0, 0.5 * 2**attempt))
    log.error("job %s: could not record its outcome; it will be redelivered", job_id)
    return False


def condensation_state(settings: Settings, job_id: str) -> Path:
    """A condensation's resumable state: kept while the job may still run again, removed once it has ended."""
    return settings.work_dir / "condense" / job_id


def run_job(job_id: str, context: WorkerContext) -> None:
    """Claim the job and run it, every log line on the way carrying its `job_id` and, once its record is read, the
    `request_id` of the request that submitted it."""
    jobs, settings = context.jobs, context.settings
    owner = worker_identity()

    def claim_it():
        previous = jobs.get(job_id)
        takeover = previous is not None and owner_dead(previous.lease_owner)
        return jobs.claim(job_id, owner, settings.lease_s, takeover=takeover)

    with log_context(job_id=job_id):
        claim = until_redis_answers(claim_it, f"claiming job {job_id}", settings)
        job = claim.job
        request = job.request if job else {}
        with log_context(request_id=job.request_id if job else None), job_log(jobs.logs, job_id, request):
            if claim.outcome != "claimed":
                log.info("job %s not run: %s", job_id, claim.outcome)
                if claim.outcome in ("cancelled", "exhausted"):  # ended now, by this claim
                    shutil.rmtree(condensation_state(settings, job_id), ignore_errors=True)
                return
            _run_claimed(job, owner, context)


def _run_claimed(job: Job, owner: str, context: WorkerContext) -> None:
    jobs, settings = context.jobs, context.settings
    log.info("job %s (%s) attempt %d/%d by %s", job.id, job.kind.value, job.attempts, job.max_attempts, owner)
    lease = Lease(jobs, job.id, owner, settings.lease_s)
    reporter = Reporter(jobs, job.id, lease, kind=job.kind, time_limit_s=time_limit_s(settings, job.kind))
    ended = False  # recorded as finished by this worker: nothing of its working state is needed any more

    def record_stop() -> bool:
        stopped = _record_stop(jobs, job, owner, reporter)
        if stopped and job.kind == JobKind.condensation:
            shutil.rmtree(condensation_state(settings, job.id), ignore_errors=True)
        return stopped

    watchdog = (
        StopWatchdog(reporter, settings.stop_grace_s, record_stop) if context.own_process else contextlib.nullcontext()
    )
    try:
        with lease, watchdog:
            result = JOB_BODIES[job.kind](job, context, reporter)
    except (Stopped, LeaseLost):
        ended = record_stop()
    except TRANSIENT_ERRORS:
        # Redis went away mid-job. The job is not failed: its lease lapses and the reaper delivers it again once
        # Redis is back; the rerun reuses whatever this run finished (checkpoint by content, cached result).
        log.warning("job %s interrupted by an unreachable Redis; it will be redelivered", job.id)
    except Exception as exc:
        if _lease_gone(lease):  # e.g. a frozen worker that woke to find its job's state removed by the new owner:
            log.info("job %s: %s after its lease moved on", job.id, type(exc).__name__, exc_info=True)
            ended = record_stop()  # the job is another worker's: nothing is recorded
            return
        error = JobError(type=type(exc).__name__, message=redact_paths(str(exc), job.request))
        expected = isinstance(exc, EXPECTED_FAILURES)  # the request's fault or the store's: its message says it all
        if expected:
            log.info("job %s failed: %s: %s", job.id, error.type, error.message)
        else:  # a bug: its traceback goes to the log (not the job's own), and the job's record says only what it was
            log.exception("job %s failed: %s: %s", job.id, error.type, error.message)
        ended = _finish(jobs, job.id, owner, JobStatus.failed, error=error)
        if not expected:
            raise
    else:
        reporter.phase(None)  # its last phase is timed: a later job's ETA counts it
        ended = _finish(jobs, job.id, owner, JobStatus.succeeded, result=result)
    finally:
        if ended and job.kind == JobKind.condensation:
            shutil.rmtree(condensation_state(settings, job.id), ignore_errors=True)
        with contextlib.suppress(*TRANSIENT_ERRORS):
            context.report_store_cache()


def _lease_gone(lease: Lease) -> bool:
    """The lease is lost, known already or found now (a worker frozen past its term asks the store)."""
    try:
        return lease.lost or not lease.valid()
    except TRANSIENT_ERRORS:
        return False


def _record_stop(jobs: JobStore, job: Job, owner: str, reporter: Reporter) -> bool:
    """The outcome of a job that stopped before its end (at a stop check, or ended by its watchdog)."""
    if reporter.lease is not None and reporter.lease.lost:  # another worker has the job: record nothing
        log.warning("job %s: its lease moved to another worker; stopped without publishing", job.id)
        return False
    if reporter.timed_out:
        message = f"the job ran past its time limit of {reporter.time_limit_s:g} s"
        return _finish(jobs, job.id, owner, JobStatus.failed, error=JobError(type="TimeLimitExceeded", message=message))
    return _finish(jobs, job.id, owner, JobStatus.cancelled)


def time_limit_s(settings: Settings, kind: JobKind) -> float:
    """The job's own deadline (the queue's soft limit); Celery enforces the same limits on its pool processes."""
    if kind == JobKind.initialization:
        return settings.inherit_soft_time_limit_s
    return settings.condense_soft_time_limit_s  # condensations and cards


def run_initialization(job: Job, context: WorkerContext, reporter: Reporter) -> dict[str, Any]:
    request = InitializationRequest.model_validate(job.request)
    settings, jobs = context.settings, context.jobs
    template = ResolvedRef.model_validate(job.template_set) if job.template_set is not None else None
    local, roots = request, settings.folder_roots
    calibration = request.calibration
    if calibration is not None and get_method(request.method).fits_scalers:  # s3:// data: a local copy
        read = Sample(calibration.max_samples, request.fit.seed)  # the images the fit reads, not the whole prefix
        uri, roots = through_outages(
            lambda: localize(calibration.uri, settings, reporter.should_stop, read),
            reporter,
            settings,
            "copying the calibration data",
        )
        eval_uri = calibration.eval_uri
        if eval_uri is not None:
            held_out = eval_uri
            eval_uri, eval_roots = through_outages(
                lambda: localize(held_out, settings, reporter.should_stop, read),
                reporter,
                settings,
                "copying the held-out data",
            )
            roots = list(dict.fromkeys([*roots, *eval_roots]))
        local = request.model_copy(
            update={"calibration": calibration.model_copy(update={"uri": uri, "eval_uri": eval_uri})}
        )
    access = DataAccess(roots, settings.limits.decode(), reporter.should_stop)
    inputs = through_outages(
        lambda: load_inputs(local, template, context.store, access), reporter, settings, "reading the inputs"
    )  # the exact pinned version
    if inputs.data is not None and calibration is not None and local is not request:  # the data as sent, in lineage
        inputs = dataclasses.replace(inputs, data=dataclasses.replace(inputs.data, uri=calibration.uri))
    key = cache_key(request, inputs, job.client)  # the request as sent: the same key on every host
    cached = jobs.results.get(key)
    if cached and through_outages(
        lambda: stored_whole(context.artifacts, cached), reporter, settings, "looking up the cached checkpoint"
    ):
        jobs.metrics.incr("checkpoint_cache_hits")
        return {**cached, "cached": True}

    # Written as a folder on this host's disk (model.safetensors, then config.json and README.md from its header),
    # then each file published (renamed, or uploaded to object storage) under its sha256.
    scratch = settings.work_dir / "checkpoints"
    scratch.mkdir(parents=True, exist_ok=True)
    for leftover in scratch.glob(f"*{job.id}*"):  # an earlier attempt killed while writing its checkpoint
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    folder = scratch / f".{job.id}.{job.attempts}.partial"  # made when the checkpoint is written, at the end
    try:
        hooks = Hooks(progress=reporter.progress, should_stop=reporter.should_stop)
        reporter.phase("fitting")
        result = run_request(request, inputs, folder / WEIGHTS, device=pick_device(settings.device), hooks=hooks)
        reporter.phase("exporting")
        files = write_companions(folder)
        signature = sign_folder(folder, settings.signing_key)  # over the three files: one more file of the folder
        files[SIGNATURE] = FileEntry(sha256=sha256_file(signature), bytes=signature.stat().st_size)
        reporter.confirm_lease()
        for name, entry in files.items():  # by content: a rerun, or a retry after an outage, lands on the same object
            publish = functools.partial(context.artifacts.publish, folder / name, entry.sha256, PurePath(name).suffix)
            through_outages(publish, reporter, settings, f"publishing {name}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    fit = result.fit
    if fit.steps and fit.seconds:
        jobs.metrics.observe("fit_steps_per_second", fit.steps / fit.seconds)
    document = {
        "checkpoint": result.checkpoint.model_dump(),  # found by its sha256 wherever the artifacts live
        "files": {name: entry.model_dump() for name, entry in files.items()},  # the timm / Hugging Face folder
        "method": request.method,
        "fit": fit.model_dump(),
        "template_set": str(template) if template else None,
        "calibration_digest": inputs.data.digest() if inputs.data else None,  # the lineage's
        "warnings": [c.model_dump() for c in result.warnings],
        "cached": False,
    }
    reporter.confirm_lease()
    jobs.results.put(key, document)
    return document


def stored_whole(artifacts: Artifacts, result: dict[str, Any]) -> bool:
    """Whether every file of a cached result is still stored. A result cached before checkpoints came as folders
    (no `files`) counts as missing: the job runs again and publishes the whole folder."""
    files = result.get("files") or {}
    return bool(files) and all(
        artifacts.size(entry["sha256"], PurePath(name).suffix) == entry["bytes"] for name, entry in files.items()
    )


def run_condensation_job(job: Job, context: WorkerContext, reporter: Reporter) -> dict[str, Any]:
    request = CondensationRequest.model_validate(job.request)
    settings = context.settings
    state = condensation_state(settings, job.id)  # per job: a redelivered job resumes where it stopped
    published = Publications(state)
    # An earlier attempt that published but died before recording it: nothing is published twice, and its card is
    # measured, and its alias moved, if they were not yet.
    document = published.get(job.id)
    if document is None:
        document = _condense_and_publish(request, job, context, reporter)
        new = ResolvedRef.model_validate(document["template_set"])  # announced before it is recorded: at least once
        events.template_set_published(context.jobs.webhooks, job.id, new, request.method)
        published.record(job.id, document)  # until the outcome is recorded, a rerun must not publish again
    resolved = ResolvedRef.model_validate(document["template_set"])
    wants_card = settings.card_on_publish and request.method == "wave"  # cards measure WAVE descendants
    if wants_card and "card" not in document:
        try:  # on the lineage's data as sent (an s3:// copy is already in this worker's cache)
            document["card"] = _measure_and_store(context, resolved, reporter)
            events.card_ready(context.jobs.webhooks, job.id, resolved, document["card"])
        except (LeaseLost, *TRANSIENT_ERRORS):
            raise  # another worker holds the job, or it is redelivered: that one records the card
        except Exception as exc:  # the set stays published; the job's result says why it has no card
            if isinstance(exc, Stopped) and reporter.lease is not None and not reporter.lease.valid():
                raise
            log.warning("job %s: %s published, but its quality card failed: %s", job.id, resolved, exc)
            document["card"] = {"error": {"type": type(exc).__name__, "message": redact_paths(str(exc), job.request)}}
        published.record(job.id, document)
    if request.promote and "promotion" not in document:
        document.update(_promote(request, resolved, document.get("card"), context, reporter))
        published.record(job.id, document)
    return document


def _promote(request, resolved, card, context, reporter) -> dict[str, Any]:
    """Move the alias, unless the card gate withholds it (`jobs.promotion`): the result's `promotion` and
    `warnings`."""
    alias = request.promote
    reason = withheld_reason(request.promote_if, card)
    if reason is not None:
        log.warning("job %s: %s published but not promoted to %r: %s", reporter.job_id, resolved, alias, reason)
        return {"promotion": {"alias": alias, "moved": False, "reason": reason},
                "warnings": [promotion_warning(alias, reason)]}  # fmt: skip
    reporter.confirm_lease()
    record = through_outages(
        lambda: context.store.promote(resolved.name, resolved.version, alias),
        reporter,
        context.settings,
        "moving the alias",
    )
    events.alias_moved(context.jobs.webhooks, resolved.name, alias, record, reporter.job_id)
    return {"promotion": {"alias": alias, "moved": True}, "warnings": []}


def _condense_and_publish(request, job, context, reporter) -> dict[str, Any]:
    settings, state = context.settings, condensation_state(context.settings, job.id)
    data_uri, roots = through_outages(
        lambda: localize(request.data.uri, settings, reporter.should_stop), reporter, settings, "copying the data"
    )
    eval_uri = None
    if request.eval_data:
        eval_uri, eval_roots = through_outages(
            lambda: localize(request.eval_data, settings, reporter.should_stop),
            reporter,
            settings,
            "copying the evaluation data",
        )
        roots = list(dict.fromkeys([*roots, *eval_roots]))
    runtime = Runtime(device=settings.device, workers=settings.data_workers, compile=settings.condense_compile)
    reporter.phase("fitting")
    spec = CondensationSpec(
        ancestor=request.ancestor.ref(),
        data_uri=data_uri,
        config=request.condense_config(),
        name=request.name,
        eval_uri=eval_uri,
        max_samples=request.data.max_samples,
        allowed_roots=[str(root) for root in roots],
        limits=settings.limits.decode(),
        runtime=runtime,
        run_dir=str(state),
        checkpoint_every=settings.condense_checkpoint_every,
    )
    # With nproc > 1, torchrun ranks in the job's state folder: a redelivered job resumes there on any process count.
    template_set = condense_run(
        spec,
        nproc=request.nproc or settings.condense_nproc,
        progress=reporter.progress,
        should_stop=reporter.should_stop,
    )
    reporter.phase("publishing")
    # The lineage names the data as the client sent it, not this worker's local copy of it.
    template_set.lineage = template_set.lineage.model_copy(
        update={
            "data_uri": request.data.uri,
            "eval_data_uri": request.eval_data,
            "license": request.license,
            "base_model": request.base_model or template_set.lineage.base_model,
        }
    )
    reporter.confirm_lease()  # a worker that was frozen and lost the job must not publish a second version
    resolved = through_outages(
        lambda: context.store.publish(template_set, request.name), reporter, settings, "publishing the template set"
    )
    return {"template_set": resolved.model_dump(), "ref": str(resolved), "metrics": template_set.metrics}


def run_card_job(job: Job, context: WorkerContext, reporter: Reporter) -> dict[str, Any]:
    """Measure the pinned version's quality card on its lineage's data and store it as a new revision."""
    resolved = ResolvedRef.model_validate(job.template_set)
    card = _measure_and_store(context, resolved, reporter)
    events.card_ready(context.jobs.webhooks, job.id, resolved, card)
    return {"template_set": resolved.model_dump(), "ref": str(resolved), "card": card}


def _measure_and_store(context: WorkerContext, resolved: ResolvedRef, reporter: Reporter) -> dict:
    settings = context.settings
    reporter.phase("measuring_card")
    template_set = through_outages(lambda: context.store.load(resolved), reporter, settings, "reading the set")
    card = measure_card(template_set, resolved, settings, progress=reporter.progress, should_stop=reporter.should_stop)
    reporter.confirm_lease()
    revision = through_outages(lambda: context.store.put_card(resolved, card), reporter, settings, "storing the card")
    return card_summary(revision, card)


# What each kind of job runs, once claimed: (job, context, reporter) -> the result its record keeps.
JOB_BODIES: dict[JobKind, Callable[[Job, WorkerContext, Reporter], dict[str, Any]]] = {
    JobKind.initialization: run_initialization,
    JobKind.condensation: run_condensation_job,
    JobKind.card: run_card_job,
}
