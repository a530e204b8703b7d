"""A running job stops within seconds when told to, whatever one step of it costs (issue 23, 3): in the embedded
executor (a process per job) and in a Celery pool process alike, the job's watchdog records the outcome and ends
the process; the executor runs the next job as before."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import time
from pathlib import Path

import httpx
import pytest

from jobs.lease import EXIT_STUCK, Reporter, StopWatchdog
from jobs.memory_store import MemoryJobStore
from jobs.model import Job, JobKind
from tests.support.data import FMNIST
from tests.support.harness import finished, wait_for
from tests.support.scale import patient

# 785 tokens (28 x 28 patches of one pixel) through 12 blocks: measuring 512 calibration images before fitting, a
# stretch without any stop check, takes about a minute on two CPU cores; a cancel must not wait for it.
SLOW = {
    "model": "vit_tiny_patch16_224",
    "overrides": {"depth": 12, "img_size": 28, "patch_size": 1, "in_chans": 1, "num_classes": 10},
    "calibration": {"uri": f"idx://{FMNIST}", "max_samples": 512},
    "fit": {"steps": 5, "batch_size": 32},
}
QUICK = {"model": "vit_tiny_patch16_224", "overrides": {"depth": 2, "embed_dim": 48, "num_heads": 3,
                                                        "img_size": 28, "patch_size": 7, "in_chans": 1}}  # fmt: skip


@pytest.fixture(scope="module", params=["celery", "embedded"])
def stack(request):
    return request.getfixturevalue(f"{request.param}_stack")


def job_lines(log: Path, job_id: str) -> list[dict]:
    lines = []
    for line in log.read_text(errors="replace").splitlines():
        if job_id in line and line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def wait_for_line(log: Path, job_id: str, text: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + patient(timeout)
    while time.monotonic() < deadline:
        found = [line for line in job_lines(log, job_id) if text in line["message"]]
        if found:
            return found[0]
        time.sleep(0.1)
    raise TimeoutError(f"no line {text!r} of job {job_id} in {log.name} after {patient(timeout)} s")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")


def test_a_cancel_ends_a_job_in_the_middle_of_its_longest_stretch(stack):
    log = stack.processes[0].log  # the worker's (Celery), or the API's, where embedded jobs' lines come out
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        job_id = http.post("/v1/initializations", json=SLOW).json()["id"]
        owner = wait_for_line(log, job_id, "attempt 1/")["message"].rsplit(":", 1)[1]
        wait_for_line(log, job_id, "measuring the descendant on 512 calibration images")  # no stop check till done
        assert http.delete(f"/v1/initializations/{job_id}").status_code == 200
        job = wait_for(http, f"/v1/initializations/{job_id}", finished, timeout=60)
        assert job["status"] == "cancelled" and job["result"] is None and job["checkpoint"] is None
        ended = [line for line in job_lines(log, job_id) if "did not stop within 2 s" in line["message"]]
        assert ended and ended[0]["level"] == "ERROR" and f"pid {owner}" in ended[0]["message"]
        deadline = time.monotonic() + patient(30)
        while alive(int(owner)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(int(owner)), "the stuck job's process is still there"
        # The executor is free again: the next job runs, in a new process.
        quick = http.post("/v1/initializations", json=QUICK).json()["id"]
        done = wait_for(http, f"/v1/initializations/{quick}", finished, timeout=120)
        assert done["status"] == "succeeded", done["error"]
        by = wait_for_line(log, quick, "attempt 1/")["message"]
        assert re.search(r":(\d+)$", by)[1] != owner


def _one_long_step(marker: str, step_s: float, grace_s: float) -> None:
    """A job past its 0.2 s deadline inside a step of `step_s` seconds without a stop check."""
    jobs = MemoryJobStore()
    job = Job.new(JobKind.initialization, {})
    jobs.create(job)
    reporter = Reporter(jobs, job.id, time_limit_s=0.2)
    with StopWatchdog(reporter, grace_s, lambda: Path(marker).write_text(f"timed out: {reporter.timed_out}")):
        time.sleep(step_s)


@pytest.mark.parametrize(("step_s", "grace_s", "exitcode", "recorded"), [
    (600.0, 0.5, EXIT_STUCK, "timed out: True"),  # stuck: recorded, and the process ends with EX_TEMPFAIL
    (1.0, 30.0, 0, None),  # back at a check within its grace: the job ends itself, the watchdog does nothing
])  # fmt: skip
def test_the_watchdog_ends_only_a_process_whose_job_stays_stuck(tmp_path, step_s, grace_s, exitcode, recorded):
    marker = tmp_path / "recorded"
    process = multiprocessing.get_context("spawn").Process(target=_one_long_step, args=(str(marker), step_s, grace_s))
    process.start()
    process.join(patient(120))
    if process.is_alive():
        process.kill()
    assert process.exitcode == exitcode
    assert (marker.read_text() if marker.exists() else None) == recorded
