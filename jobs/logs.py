"""Log lines of the API and the workers: JSON (python-json-logger) for log pipelines, plain text on a terminal, and
in either the request id and job id of whatever the line is about.

The ids travel in context variables: the API's request-id middleware sets `request_id` for everything a request
does (the job it accepts stores it, `jobs.model.Job.request_id`); a worker sets `job_id` and the job's `request_id`
while it runs the job (`jobs.runner.run_job`). A filter on the one handler copies them onto every record, whichever
library logged it (uvicorn's access log, Celery's task lines, ours).

Both adapters configure logging from here (`logging_config`): `learngene serve` hands it to uvicorn, the Celery
worker applies it from its `setup_logging` signal. No web or queue framework is imported here.
"""

from __future__ import annotations

import contextlib
import logging
import logging.config
import re
import sys
import time
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from typing import IO, Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["auto", "json", "text"]

request_id_var: ContextVar[str | None] = ContextVar("learngene_request_id", default=None)
job_id_var: ContextVar[str | None] = ContextVar("learngene_job_id", default=None)

REQUEST_ID_HEADER = "X-Request-ID"
# A client's request id is kept when it is a token (RFC 9110 tchar) of at most 128 characters: it is then safe in a
# header, a JSON document and a plain-text log line alike. Anything else is replaced by a new id, never echoed.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}")
IDS = ("request_id", "job_id")


def new_request_id() -> str:
    return uuid.uuid4().hex


def accepted_request_id(sent: str | bytes | None) -> str:
    """The request id to use: the client's own (`X-Request-ID`) when it is a plain token, else a new one."""
    if isinstance(sent, bytes):
        sent = sent.decode("latin-1")
    if sent is not None and REQUEST_ID_PATTERN.fullmatch(sent):
        return sent
    return new_request_id()


@contextlib.contextmanager
def log_context(**ids: str | None) -> Iterator[None]:
    """Put `request_id` and/or `job_id` on every log line made inside the block (by this thread or task)."""
    variables = {"request_id": request_id_var, "job_id": job_id_var}
    tokens = [(variables[name], variables[name].set(value)) for name, value in ids.items()]
    try:
        yield
    finally:
        for variable, token in reversed(tokens):
            variable.reset(token)


class ContextIds(logging.Filter):
    """Copies the current request and job ids onto each record (unless the record carries its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, variable in (("request_id", request_id_var), ("job_id", job_id_var)):
            if getattr(record, name, None) is None:
                setattr(record, name, variable.get())
        return True


def _utc_iso(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    """`2025-01-31T12:00:00.123Z INFO uvicorn.access [request_id=… job_id=…] message`, for people at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(ids)s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc_iso(record.created)

    def format(self, record: logging.LogRecord) -> str:
        known = [f"{name}={getattr(record, name)}" for name in IDS if getattr(record, name, None)]
        record.ids = f" [{' '.join(known)}]" if known else ""
        return super().format(record)


class JsonLines(JsonFormatter):
    """One JSON object per line: timestamp (ISO 8601, UTC), level, logger, message, request_id and job_id when
    known, and any structured extras of the record (Celery's task data, for one)."""

    def __init__(self) -> None:
        super().__init__(
            "{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp=True,
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],  # uvicorn's ANSI-coloured copy of the message
        )

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, version, status = record.args  # uvicorn's access line, as fields to query by
            log_data["http"] = {"client": client, "method": method, "path": path, "version": version, "status": status}

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        for name in IDS:
            if log_data.get(name) is None:
                log_data.pop(name, None)
        return {"timestamp": log_data.pop("timestamp", None), **log_data}  # the time first, as people read it


def resolve_format(setting: LogFormat, stream: IO[str] | None = None) -> Literal["json", "text"]:
    """`auto`: plain text when the stream (stderr) is an interactive terminal, JSON otherwise."""
    if setting != "auto":
        return setting
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


# Loggers of the servers that would otherwise keep handlers of their own: they go through the root's one handler.
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def logging_config(fmt: LogFormat = "auto", level: str | int = "INFO", filename: str | None = None) -> dict[str, Any]:
    """A `logging.config.dictConfig` document: one handler on the root logger (stderr, or `filename`) with the ids
    filter and the chosen formatter; the uvicorn loggers hand their records to it. The format is decided here,
    once, so that every process started with this document (uvicorn's workers) writes the same."""
    resolved = resolve_format(fmt)
    handler = {"()": f"{__name__}.log_handler", "filename": filename, "formatter": resolved, "filters": ["ids"]}
    level = logging.getLevelName(level) if isinstance(level, int) else level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"ids": {"()": f"{__name__}.ContextIds"}},
        "formatters": {"json": {"()": f"{__name__}.JsonLines"}, "text": {"()": f"{__name__}.TextFormatter"}},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": level},
        "loggers": {name: {"handlers": [], "propagate": True, "level": level} for name in SERVER_LOGGERS},
    }


def log_handler(filename: str | None = None) -> logging.Handler:
    """The process's one handler (stderr, or a file). Python's warnings become log lines through it too, rather
    than text on stderr among the JSON lines."""
    logging.captureWarnings(True)
    return logging.FileHandler(filename) if filename else logging.StreamHandler(sys.stderr)


def configure_logging(fmt: LogFormat = "auto", level: str | int = "INFO", filename: str | None = None) -> None:
    logging.config.dictConfig(logging_config(fmt, level, filename))
