"""A job's own log lines, stored with its record (`JobStore.logs`) on whichever host runs it, served by
`GET .../{id}/logs` and `learngene job logs ID [--follow]`.

While a worker runs a job, `job_log` adds a handler to the root logger that keeps the records made in the job's
context (its `job_id`, `jobs.logs.log_context`) as JSON lines with the request and job ids on each, as the process's
own log has them, but written for the job's client: no traceback, and server paths redacted (`jobs.redaction`), since
the client may read them. A failed job's last line says why it failed (`jobs.runner._run_claimed`). Storing a line
never fails the job: a Redis that is away loses the line, not the job.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
from collections.abc import Iterator
from typing import Any

from jobs.logs import ContextIds, JsonLines
from jobs.redaction import redact_paths
from jobs.store import JobLogs


class _ForTheClient(JsonLines):
    def __init__(self, request: dict[str, Any]) -> None:
        super().__init__()
        self.request = request

    def format(self, record: logging.LogRecord) -> str:
        shown = copy.copy(record)  # the other handlers format the record as it is
        shown.msg, shown.args = redact_paths(record.getMessage(), self.request), ()
        shown.exc_info, shown.exc_text, shown.stack_info = None, None, None
        return super().format(shown)


class _JobHandler(logging.Handler):
    def __init__(self, logs: JobLogs, job_id: str, request: dict[str, Any]) -> None:
        super().__init__(level=logging.INFO)
        self.logs, self.job_id = logs, job_id
        self.addFilter(ContextIds())
        self.setFormatter(_ForTheClient(request))
        self._storing = threading.local()  # a line logged while storing one (by the store's client) is not kept

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "job_id", None) != self.job_id or getattr(self._storing, "on", False):
            return
        self._storing.on = True
        try:
            with contextlib.suppress(Exception):
                self.logs.append(self.job_id, self.format(record))
        finally:
            self._storing.on = False


@contextlib.contextmanager
def job_log(logs: JobLogs, job_id: str, request: dict[str, Any]) -> Iterator[None]:
    """Keep the job's log lines in `logs` while the block runs."""
    handler = _JobHandler(logs, job_id, request)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
