"""Lineage (`GET /v1/lineage/{sha256}`): the graph around any artifact the service knows by digest.

An ancestor's weights (the sha256 a template set's lineage records), a template-set version (its manifest digest)
or a checkpoint (the sha256 of its weights, or of any file of its folder): the answer names the ancestor, the
template-set versions condensed from it, and the initializations inherited from those (job, checkpoint, method,
calibration data digest). Read from the store's manifests and the kept job records: a job whose record has expired
is no longer listed. With client tokens, a client sees its own initializations only.
"""

from __future__ import annotations

from typing import Any, Literal

from jobs.model import Job, JobKind, JobStatus
from jobs.store import JobQuery, JobStore
from learngene.formats.template_set import Manifest
from templates_store import ResolvedRef, TemplateStore

Found = Literal["ancestor", "template_set", "checkpoint"]


def _version(resolved: ResolvedRef, manifest: Manifest) -> dict[str, Any]:
    lineage = manifest.lineage
    return {
        "ref": str(resolved),
        "digest": resolved.digest,
        "method": manifest.method,
        "created": manifest.created,
        "ancestor_sha256": lineage.ancestor_sha256,
        "data_uri": lineage.data_uri,  # as the admin sent it
        "license": lineage.license,
        "base_model": lineage.base_model,
    }


def _descendant(job: Job) -> dict[str, Any]:
    result = job.result or {}
    return {
        "job_id": job.id,
        "model": job.request.get("model"),
        "method": result.get("method"),
        "template_set": (job.template_set or {}).get("digest"),
        "checkpoint_sha256": (result.get("checkpoint") or {}).get("sha256"),
        "calibration_digest": result.get("calibration_digest"),
        "finished_at": job.finished_at,
    }


def _checkpoint_shas(job: Job) -> set[str]:
    result = job.result or {}
    files = {entry["sha256"] for entry in (result.get("files") or {}).values()}
    weights = (result.get("checkpoint") or {}).get("sha256")
    return files | {weights} if weights else files


def _succeeded(jobs: JobStore, client: str | None) -> list[Job]:
    query = JobQuery(
        kinds=frozenset({JobKind.initialization}), statuses=frozenset({JobStatus.succeeded}), client=client
    )
    out, after = [], None
    while True:
        page = jobs.page(query, limit=500, after=after)
        out += page.jobs
        if page.next is None:
            return out
        after = page.next


def lineage(sha256: str, store: TemplateStore, jobs: JobStore, client: str | None = None) -> dict[str, Any] | None:
    """The graph around the artifact with this digest; None when none is known."""
    described = {resolved.digest: _version(resolved, manifest) for resolved, manifest in store.manifests()}
    descendants = _succeeded(jobs, client)
    found: Found
    if sha256 in described:
        found, sets = "template_set", [described[sha256]]
    elif any(v["ancestor_sha256"] == sha256 for v in described.values()):
        found, sets = "ancestor", [v for v in described.values() if v["ancestor_sha256"] == sha256]
    elif mine := [j for j in descendants if sha256 in _checkpoint_shas(j)]:
        digest = (mine[0].template_set or {}).get("digest")
        found, sets, descendants = "checkpoint", [described[digest]] if digest in described else [], mine[:1]
        return _graph(sha256, found, sets, [_descendant(j) for j in descendants])
    else:
        return None
    digests = {v["digest"] for v in sets}
    children = [_descendant(j) for j in descendants if (j.template_set or {}).get("digest") in digests]
    return _graph(sha256, found, sets, children)


def _graph(sha256: str, found: Found, sets: list[dict], descendants: list[dict]) -> dict[str, Any]:
    ancestors = sorted({v["ancestor_sha256"] for v in sets if v["ancestor_sha256"]})
    return {
        "sha256": sha256,
        "found": found,
        "ancestors": [{"sha256": a} for a in ancestors],
        "template_sets": sets,
        "descendants": descendants,
    }
