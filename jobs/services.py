"""The application's collaborators, built once per process by an adapter and handed whole to admission and routes."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.dispatch import Dispatcher
from jobs.settings import Settings
from jobs.store import JobStore
from storage.artifacts import Artifacts
from templates_store import TemplateStore


@dataclass(frozen=True)
class Services:
    """One settings tree, the job records, the template store, the checkpoint artifacts and the dispatcher that
    hands accepted jobs to workers (Celery, or the embedded executor)."""

    settings: Settings
    jobs: JobStore
    store: TemplateStore
    artifacts: Artifacts
    dispatcher: Dispatcher
