"""The `local` backend of `learngene.create_model` (entry point of `learngene.backends`): an initialization on this
machine, from the template store and data its settings name (the same path as `learngene init`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobs.contracts import InitializationRequest
from jobs.initialization import load_inputs, run_request
from jobs.settings import Settings, get_settings
from jobs.storage import template_store
from learngene.data import DataAccess
from learngene.errors import UserError
from learngene.formats.pretrained import WEIGHTS, write_companions
from learngene.train.loop import pick_device
from templates_store.choice import Wanted, choose


class LocalBackend:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.store = template_store(self.settings)

    def initialize(self, request: dict[str, Any], folder: Path) -> None:
        parsed = InitializationRequest.model_validate(request)
        if problem := parsed.fitting_without_data():
            raise UserError(f"calibration: {problem}")
        template = self.store.resolve(parsed.template_ref) if parsed.template_ref else None
        inputs = load_inputs(parsed, template, self.store, DataAccess(self.settings.local_data_roots()))
        folder.mkdir(parents=True, exist_ok=True)
        run_request(parsed, inputs, folder / WEIGHTS, device=pick_device(self.settings.device))
        write_companions(folder)

    def template_sets(self, **wanted: Any) -> list[dict[str, Any]]:
        name = wanted.pop("name", None)
        return [version.model_dump(mode="json") for version in choose(self.store, Wanted(**wanted), name)]
