"""The events the service emits, each built in one place: what `data` holds for each type.

A job's end is emitted by the job store itself (whichever process ends it: a worker finishing, the API cancelling a
queued job); the others by the condensation's runner and the admin's alias route. Nothing here names a server path:
template sets by reference, checkpoints by digest, errors as the job record shows them (redacted).
"""

from __future__ import annotations

from typing import Any

from jobs.model import Job, JobKind
from jobs.webhooks.model import JOB_END_EVENTS, EventType
from jobs.webhooks.store import WebhookStore
from templates_store import AliasRecord, ResolvedRef


def job_ended(webhooks: WebhookStore, job: Job) -> None:
    """`job.succeeded`, `job.failed` or `job.cancelled`."""
    data: dict[str, Any] = {
        "id": job.id,
        "kind": job.kind.value,
        "status": job.status.value,
        "client": job.client,
        "request_id": job.request_id,
        "template_set": job.template_set,
        "error": job.error.model_dump() if job.error else None,
    }
    result = job.result or {}
    if job.kind == JobKind.initialization and "checkpoint" in result:
        data["checkpoint"] = {k: result["checkpoint"][k] for k in ("sha256", "bytes", "parameters")}
    if job.kind != JobKind.initialization and "ref" in result:
        data["template_set"], data["ref"] = result["template_set"], result["ref"]
    event: EventType = JOB_END_EVENTS[job.status.value]  # type: ignore[assignment]
    webhooks.emit(event, data, job_id=job.id)


def template_set_published(webhooks: WebhookStore, job_id: str, resolved: ResolvedRef, method: str) -> None:
    data = {"job_id": job_id, "ref": str(resolved), "template_set": resolved.model_dump(), "method": method}
    webhooks.emit("template_set.published", data, job_id=job_id)


def card_ready(webhooks: WebhookStore, job_id: str, resolved: ResolvedRef, summary: dict[str, Any]) -> None:
    data = {"job_id": job_id, "ref": str(resolved), "template_set": resolved.model_dump(), "card": summary}
    webhooks.emit("card.ready", data, job_id=job_id)


def alias_moved(webhooks: WebhookStore, name: str, alias: str, record: AliasRecord, job_id: str | None = None) -> None:
    """An alias was moved to `record.version` (by a condensation job's promotion, or by hand: `job_id` None)."""
    previous = record.history[-2] if len(record.history) > 1 else None
    data = {"name": name, "alias": alias, "version": record.version, "previous": previous, "job_id": job_id}
    webhooks.emit("alias.moved", data, job_id=job_id)
