"""Embedded jobs in processes of their own, so that a job can be ended at any moment (a cancel, its deadline, a step
that runs for minutes) without ending the API: its process exits (`jobs.lease.StopWatchdog`) or is killed, and the
next job gets a new one.

Processes come from a fork server that imported the method's modules once (torch, timm): starting one costs
milliseconds rather than the seconds of those imports, and none inherits the API's threads or locks. The job store,
in the API's memory, is served to them over a Unix socket in a private folder (`multiprocessing.managers`,
authenticated with this process's key); their log records come back over a pipe and go out through the API's own
handler, with the job's ids.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import multiprocessing
import multiprocessing.util
import shutil
import socket
import tempfile
import threading
import time
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import Any

from jobs.logs import ContextIds
from jobs.model import JobStatus
from jobs.runner import WorkerContext, run_job
from jobs.settings import Settings
from jobs.storage import artifacts, template_store
from jobs.store import JobStore

log = logging.getLogger(__name__)

FORKSERVER = multiprocessing.get_context("forkserver")
# Imported once by the fork server, before any job: everything a job runs, and the program's main module (which
# multiprocessing would otherwise import again in every process it starts).
PRELOAD = ["__main__", "jobs.job_processes"]


class _StoreClient(BaseManager):
    """A job process's end of the served job store."""


# The records and, beside them, the store's other roles (a proxy serves methods, not attributes).
ROLES = ("keys", "results", "metrics", "logs", "webhooks")
for _name in ("jobs", *ROLES):
    _StoreClient.register(_name)


class JobProcesses:
    """Runs jobs in processes that share `jobs` (kept in this process), relaying their log lines. Should a job's
    process outlive its stop (its watchdog cannot run), it is killed here, and a cancel that it never recorded is."""

    def __init__(self, settings: Settings, jobs: JobStore) -> None:
        self.settings, self.jobs = settings, jobs
        folder = tempfile.mkdtemp(prefix="learngene-jobs-")  # mode 0700: the socket is ours only
        self.address = str(Path(folder) / "store.sock")
        # Removed at close, or at exit after the listener's own finalizer (priority 0) has unlinked the socket: an
        # API built and never started (its schema read, say) leaves nothing behind and reports no missing file.
        self._remove_folder = multiprocessing.util.Finalize(
            None, shutil.rmtree, args=(folder,), kwargs={"ignore_errors": True}, exitpriority=-1
        )

        class Served(BaseManager):
            pass

        Served.register("jobs", callable=lambda: jobs)
        for role in ROLES:
            Served.register(role, callable=lambda role=role: getattr(jobs, role))
        self._server: Any = Served(address=self.address).get_server()  # its stop_event and listener are not typed
        threading.Thread(target=self._serve, name="learngene-job-store", daemon=True).start()
        self._running: dict[int, multiprocessing.process.BaseProcess] = {}
        FORKSERVER.set_forkserver_preload(PRELOAD)

    def _serve(self) -> None:
        # Server.serve_forever ends with sys.exit(0), written for a manager process of its own; in a thread the
        # SystemExit is only noise (pytest reports it as an unhandled thread exception).
        with contextlib.suppress(SystemExit):
            self._server.serve_forever()

    def run(self, job_id: str) -> int | None:
        """Run the job in a new process and wait for it to end; its exit status."""
        records, sender = FORKSERVER.Pipe(duplex=False)
        level = logging.getLogger().getEffectiveLevel()
        process = FORKSERVER.Process(
            target=_job_process,
            name=f"learngene-job-{job_id[:8]}",
            daemon=True,
            args=(job_id, self.settings, self.address, sender, level),
        )
        process.start()
        sender.close()  # the child holds the only writer: its end is the pipe's end
        pid = process.pid
        assert pid is not None  # set by start()
        self._running[pid] = process
        try:
            stopped_at = None
            while True:
                if records.poll(0.5):
                    try:
                        record = records.recv()
                    except (EOFError, OSError):
                        break
                    logging.getLogger(record.name).handle(record)
                    continue
                stopped_at = self._backstop(job_id, process, stopped_at)
            process.join()
        finally:
            records.close()
            self._running.pop(pid, None)
        return process.exitcode

    def _backstop(self, job_id: str, process, stopped_at: float | None) -> float | None:
        job = self.jobs.get(job_id)
        if job is None or not (job.terminal or job.cancel_requested):
            return None
        now = time.monotonic()
        stopped_at = stopped_at or now
        if now - stopped_at > 3 * self.settings.stop_grace_s and process.is_alive():
            log.error("job %s: its process %d did not end when told to; killing it", job_id, process.pid)
            process.kill()
            process.join()
            if not job.terminal:
                self.jobs.finish(job_id, JobStatus.cancelled, owner=f"{socket.gethostname()}:{process.pid}")
        return stopped_at

    def close(self) -> None:
        """Embedded jobs end with the API."""
        for process in list(self._running.values()):
            process.kill()
        with contextlib.suppress(AttributeError):  # set once serve_forever runs
            self._server.stop_event.set()
        with contextlib.suppress(OSError):
            self._server.listener.close()
        self._remove_folder()


class _PipeHandler(logging.handlers.QueueHandler):
    """Log records into the job's pipe, formatted (`prepare`), the ids of this process's context on them."""

    def enqueue(self, record: logging.LogRecord) -> None:
        self.queue.send(record)  # type: ignore[attr-defined]  # the queue is a Connection: send, not put


def _job_process(job_id: str, settings: Settings, address: str, records, level: int) -> None:
    """A job process's body: logging into its pipe, the served job store, storage clients of its own."""
    handler = _PipeHandler(records)
    handler.addFilter(ContextIds())  # the ids are this process's context variables: put them on before the pipe
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    client: Any = _StoreClient(address=address)  # its methods are registered at run time
    client.connect()
    jobs = client.jobs()
    for role in ROLES:
        setattr(jobs, role, getattr(client, role)())
    context = WorkerContext(
        settings=settings, jobs=jobs, store=template_store(settings), artifacts=artifacts(settings), own_process=True
    )
    run_job(job_id, context)
