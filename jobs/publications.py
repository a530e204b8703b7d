"""What a run published, recorded in its run folder, so that it is published once however often the run is repeated.

A worker killed after publishing but before recording the job's outcome is redelivered; `learngene condense
--publish` may simply be run again. Both ask `Publications` first and record what they published before anything
else can fail. One record per publication key, in `published.json`, replaced atomically (a kill mid-write leaves the
previous record, never half a file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from learngene.formats.files import write_json_atomic

PUBLISHED = "published.json"


class Publications:
    def __init__(self, run_dir: Path):
        self.path = run_dir / PUBLISHED

    def _records(self) -> dict[str, Any]:
        return json.loads(self.path.read_text()) if self.path.is_file() else {}

    def get(self, key: str) -> dict[str, Any] | None:
        """What the publication `key` recorded, or None when it has not published yet."""
        return self._records().get(key)

    def record(self, key: str, document: dict[str, Any]) -> None:
        """Record (or update) what the publication `key` made; the other keys' records are kept."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, {**self._records(), key: document})
