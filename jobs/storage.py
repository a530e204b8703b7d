"""The template store and the checkpoint store as the settings name them: one place that opens both."""

from __future__ import annotations

from jobs.settings import Settings
from storage.artifacts import Artifacts, open_artifacts
from templates_store import TemplateStore


def template_store(settings: Settings) -> TemplateStore:
    return TemplateStore.open(
        settings.store,
        cache_dir=settings.work_dir / "store-cache",
        cache_bytes=settings.store_cache_bytes,
        cache_size=settings.store_cache_size,
        signing_key=settings.signing_key,  # every version published through it is signed, as checkpoints are
    )


def artifacts(settings: Settings) -> Artifacts:
    return open_artifacts(settings.artifacts, sign_endpoint=settings.artifacts_public_endpoint)
