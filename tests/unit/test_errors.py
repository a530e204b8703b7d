"""One error taxonomy: every error the method core raises on purpose is a LearngeneError, and the runner tells the
client's fault (a UserError: the message, no traceback) from a bug (a plain ValueError: logged with its traceback,
re-raised), whatever the built-in type."""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil

import pytest

import learngene
from jobs import runner
from jobs.memory_store import MemoryJobStore
from jobs.model import Job, JobKind, JobStatus
from jobs.runner import WorkerContext, run_job
from jobs.settings import Settings
from jobs.storage import artifacts, template_store
from learngene.control import Stopped
from learngene.errors import CheckpointError, DataRefError, IntegrityError, LearngeneError, SpecError, UserError


def test_every_exception_class_of_the_core_is_in_the_taxonomy():
    classes = {}
    for info in pkgutil.walk_packages(learngene.__path__, "learngene."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == info.name:
                classes[f"{info.name}.{name}"] = value
    assert len(classes) >= 8
    outside = [name for name, cls in classes.items() if not issubclass(cls, (LearngeneError, Stopped))]
    assert outside == []  # Stopped (and TrainingStopped) are how a stop request unwinds, not errors
    for cls in (SpecError, DataRefError, CheckpointError):
        assert issubclass(cls, UserError) and issubclass(cls, ValueError)  # pydantic validators report them
    assert not issubclass(IntegrityError, UserError)  # damaged stored bytes are not the request's fault


def _context(tmp_path) -> WorkerContext:
    settings = Settings(
        store=str(tmp_path / "store"), artifacts=str(tmp_path / "artifacts"), work_dir=tmp_path / "work"
    )
    return WorkerContext(
        settings=settings, jobs=MemoryJobStore(), store=template_store(settings), artifacts=artifacts(settings)
    )


@pytest.mark.parametrize(
    ("raised", "is_bug"),
    [
        (SpecError("depth", "must be >= 1"), False),
        (UserError("give --publish NAME"), False),
        (IntegrityError("tensors.safetensors: checksum mismatch"), False),
        (ValueError("too many values to unpack"), True),  # a bug, though a ValueError
        (FileNotFoundError(2, "No such file or directory"), True),
    ],
)
def test_the_runner_fails_a_user_error_quietly_and_a_bug_with_its_traceback(
    tmp_path, monkeypatch, caplog, raised, is_bug
):
    context = _context(tmp_path)

    def body(job, context, reporter):
        raise raised

    monkeypatch.setitem(runner.JOB_BODIES, JobKind.initialization, body)
    context.jobs.create(Job(id="j1", kind=JobKind.initialization, request={}, max_attempts=1))
    caplog.set_level(logging.INFO, logger="jobs.runner")
    if is_bug:
        with pytest.raises(type(raised)):
            run_job("j1", context)
    else:
        run_job("j1", context)
    job = context.jobs.get("j1")
    assert job.status == JobStatus.failed
    assert job.error.type == type(raised).__name__ and job.error.message == str(raised)
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert bool(tracebacks) is is_bug
