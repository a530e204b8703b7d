"""No accepted job is lost: workers SIGKILLed mid-job, a job that keeps killing its worker, an API restarted, Redis
restarted. Real processes throughout (Celery workers, the API, redis-server), on the test Redis database."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from learngene import export_checkpoint
from tests.support.data import FMNIST, SHARED_DATA
from tests.support.harness import (
    ADMIN_TOKEN,
    TEST_REDIS_URL,
    Process,
    finished,
    flush_test_redis,
    kill_group,
    lease_pid,
    service_env,
    start_api,
    start_redis,
    start_worker,
    wait_for,
)
from tests.support.models import tiny_spec

# Short leases so that a dead worker's job is noticed within seconds; frequent condensation states.
FAST_RECOVERY = dict(
    LEARNGENE_LEASE_S="3", LEARNGENE_REAPER_INTERVAL_S="0.5", LEARNGENE_REDELIVERY_GRACE_S="20",
    LEARNGENE_MAX_ATTEMPTS="3", LEARNGENE_CONDENSE_CHECKPOINT_EVERY="10",
)  # fmt: skip


def body(steps: int, seed: int) -> dict:
    return {
        "model": "vit_tiny_patch16_224",
        "overrides": dict(depth=2, embed_dim=64, num_heads=1, img_size=28, patch_size=7, in_chans=1, num_classes=10),
        "calibration": {"uri": f"idx://{FMNIST}", "max_samples": 512},
        "fit": {"steps": steps, "batch_size": 16, "seed": seed},
    }


@dataclass
class Stack:
    env: dict[str, str]
    home: Path
    api: Process
    workers: dict[str, Process]

    def http(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.api.url, timeout=30, **kw)

    def worker_of(self, pid: int) -> str:
        """Which worker's pool the process `pid` belongs to."""
        for name, worker in self.workers.items():
            if worker.popen.poll() is not None:  # killed earlier in the test
                continue
            if pid in {p.pid for p in psutil.Process(worker.popen.pid).children(recursive=True)}:
                return name
        raise LookupError(pid)

    def checkpoints(self) -> list[Path]:
        return sorted((self.home / "artifacts").glob("*.safetensors"))

    def leftovers(self) -> list[Path]:
        """Hidden temporary files: of checkpoints being written, or of ones being published."""
        return sorted([*(self.home / "artifacts").glob(".*"), *(self.home / "work" / "checkpoints").glob(".*")])


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("reliability")
    (home / "data").mkdir()
    flush_test_redis()
    env = service_env(home, redis_url=TEST_REDIS_URL, data_roots=[SHARED_DATA, home / "data"], **FAST_RECOVERY)
    workers = {name: start_worker(env, home / f"worker-{name}.log", name=name) for name in ("a", "b")}
    api = start_api(env, home / "api.log")
    s = Stack(env, home, api, workers)
    yield s
    s.api.stop()
    for worker in s.workers.values():
        worker.stop()
    flush_test_redis()


def running(http: httpx.Client, url: str, min_step: int = 10, attempts: int | None = None) -> dict:
    """Wait until the job runs (at a given attempt) and has made some steps of progress."""

    def ready(job: dict) -> bool:
        if job["status"] != "running" or (attempts is not None and job["attempts"] != attempts):
            return False
        return (job["progress"] or {}).get("step", 0) >= min_step

    return wait_for(http, url, ready, timeout=120)


def test_killed_pool_process_is_redelivered_and_the_job_finishes_once(stack):
    with stack.http() as http:
        job = http.post("/v1/initializations", json=body(steps=400, seed=11)).json()
        url = f"/v1/initializations/{job['id']}"
        victim = lease_pid(running(http, url), TEST_REDIS_URL)
        os.kill(victim, signal.SIGKILL)  # the pool process running the job, as the OOM killer would
        done = wait_for(http, url, finished, timeout=180)
    assert done["status"] == "succeeded" and done["attempts"] == 2
    assert [p.name for p in stack.checkpoints()] == [f"{done['checkpoint']['sha256']}.safetensors"]
    assert stack.leftovers() == []


def test_a_whole_worker_killed_hands_its_job_to_the_survivor(stack):
    with stack.http() as http:
        job = http.post("/v1/initializations", json=body(steps=400, seed=12)).json()
        url = f"/v1/initializations/{job['id']}"
        pid = lease_pid(running(http, url), TEST_REDIS_URL)
        name = stack.worker_of(pid)
        kill_group(stack.workers[name])  # the worker and its pool: Celery itself cannot requeue the job
        done = wait_for(http, url, finished, timeout=180)
        assert done["status"] == "succeeded" and done["attempts"] == 2
        survivor = next(n for n in stack.workers if n != name)
        assert stack.worker_of(lease_pid(done, TEST_REDIS_URL)) == survivor
        stack.workers[name] = start_worker(stack.env, stack.home / f"worker-{name}-2.log", name=name)
    assert stack.leftovers() == []


def test_a_job_that_keeps_killing_its_worker_fails_after_the_attempt_cap(stack):
    with stack.http() as http:
        job = http.post("/v1/initializations", json=body(steps=2000, seed=13)).json()
        url = f"/v1/initializations/{job['id']}"
        for attempt in (1, 2, 3):
            os.kill(lease_pid(running(http, url, min_step=1, attempts=attempt), TEST_REDIS_URL), signal.SIGKILL)
        done = wait_for(http, url, finished, timeout=120)
    assert done["status"] == "failed" and done["attempts"] == 4  # three runs, then the refused fourth delivery
    assert done["error"]["type"] == "AttemptsExhausted"
    assert "gave up after 3 attempts" in done["error"]["message"]
    assert stack.leftovers() == []  # the killed attempts' partial checkpoints are gone


def condensation_request(stack: Stack, ancestor, name: str, steps: int) -> dict:
    anc_spec = tiny_spec(embed_dim=64, num_heads=2, depth=2)
    checkpoint = stack.home / "data" / "ancestor.safetensors"
    export_checkpoint(ancestor, checkpoint, spec=anc_spec)
    return {
        "name": name,
        "ancestor": {"model": anc_spec.model, "overrides": anc_spec.overrides(), "checkpoint": str(checkpoint)},
        "aux": {"model": anc_spec.model, "overrides": tiny_spec(depth=2).overrides()},
        "data": {"uri": f"idx://{FMNIST}", "max_samples": 2000},
        "training": {"steps": steps, "batch_size": 16, "warmup_steps": 5, "recipe": "plain"},
    }


def test_condensation_killed_mid_way_resumes_from_its_state_and_publishes_once(stack, ancestor):
    request = condensation_request(stack, ancestor, "resumed", steps=150)
    with stack.http(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        job = http.post("/v1/admin/condensations", json=request).json()
        url = f"/v1/admin/condensations/{job['id']}"
        os.kill(lease_pid(running(http, url, min_step=45), TEST_REDIS_URL), signal.SIGKILL)
        done = wait_for(http, url, finished, timeout=180)
        assert done["status"] == "succeeded" and done["attempts"] == 2, done["error"]
        assert [v["version"] for v in http.get("/v1/template-sets", params={"name": "resumed"}).json()["items"]] == [1]
    logs = "".join(w.log.read_text() for w in stack.workers.values())
    resumed_at = [
        int(line.split("resumes at step ")[1].split()[0]) for line in logs.splitlines() if "resumes at step" in line
    ]
    assert resumed_at and resumed_at[0] >= 40  # not from the start: from the last state before the kill
    assert not (stack.home / "work" / "condense" / job["id"]).exists()  # its state went once the job had ended


def test_a_frozen_worker_loses_its_condensation_once_and_publishes_nothing_when_it_wakes(stack, ancestor):
    """SIGSTOP, not death: the lease lapses, exactly one redelivery gives the job to the other worker, which resumes
    and publishes; the frozen worker, woken afterwards, finds its lease gone and stops without publishing."""
    request = condensation_request(stack, ancestor, "frozen", steps=300)
    logs = lambda: "".join(p.log.read_text() for p in (stack.api, *stack.workers.values()))  # noqa: E731
    redeliveries_before = logs().count("redelivered")
    with stack.http(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        job = http.post("/v1/admin/condensations", json=request).json()
        url = f"/v1/admin/condensations/{job['id']}"
        frozen = stack.workers[stack.worker_of(lease_pid(running(http, url, min_step=20), TEST_REDIS_URL))]
        os.killpg(frozen.popen.pid, signal.SIGSTOP)  # the worker and its pool, as a paused VM would be
        try:
            done = wait_for(http, url, finished, timeout=180)
            assert done["status"] == "succeeded" and done["attempts"] == 2, done["error"]
        finally:
            os.killpg(frozen.popen.pid, signal.SIGCONT)
        try:
            woke = wait_for(http, url, lambda j: f"job {job['id']}: its lease moved" in frozen.log.read_text(), 60)
        except TimeoutError as exc:  # say what the woken worker did instead
            raise AssertionError(f"{exc}\n--- the frozen worker's log:\n{frozen.tail(60)}") from None
        assert woke["status"] == "succeeded" and woke["attempts"] == 2 and woke["result"] == done["result"]
        versions = http.get("/v1/template-sets", params={"name": "frozen"}).json()["items"]
        assert [v["version"] for v in versions] == [1]
    assert logs().count("redelivered") - redeliveries_before == 1  # one lapse, one redelivery
    assert not (stack.home / "work" / "condense" / job["id"]).exists()


def test_api_restarted_while_jobs_run_loses_nothing(stack):
    with stack.http() as http:
        job = http.post("/v1/initializations", json=body(steps=300, seed=14)).json()
        url = f"/v1/initializations/{job['id']}"
        running(http, url, min_step=5)
    kill_group(stack.api)
    stack.api = start_api(stack.env, stack.home / "api-2.log")
    with stack.http() as http:
        done = wait_for(http, url, finished, timeout=180)
        assert done["status"] == "succeeded" and done["attempts"] == 1
        assert http.post("/v1/initializations", json=body(steps=5, seed=15)).status_code == 202


def test_redis_restart_loses_no_accepted_job_and_the_api_recovers_by_itself(tmp_path):
    redis_proc, url = start_redis(tmp_path / "redis")
    port = url.rsplit(":", 1)[1].split("/")[0]
    env = service_env(tmp_path, redis_url=url, data_roots=[SHARED_DATA], **FAST_RECOVERY)
    worker = start_worker(env, tmp_path / "worker.log")
    api = start_api(env, tmp_path / "api.log")
    try:
        with httpx.Client(base_url=api.url, timeout=30) as http:
            ids = [http.post("/v1/initializations", json=body(steps=150, seed=20 + i)).json()["id"] for i in range(4)]
            running(http, f"/v1/initializations/{ids[0]}", min_step=5)
            subprocess.run(["redis-cli", "-p", port, "shutdown"], check=False, capture_output=True)
            redis_proc.wait(20)

            refused = http.post("/v1/initializations", json=body(steps=5, seed=30))
            assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
            assert "retry" in refused.json()["detail"]
            assert http.get(f"/v1/initializations/{ids[1]}").status_code == 503
            assert http.get("/readyz").status_code == 503

            redis_proc, _ = start_redis(tmp_path / "redis", port=int(port))  # the same append-only file
            jobs = [wait_for(http, f"/v1/initializations/{i}", finished, timeout=240) for i in ids]
            assert [j["status"] for j in jobs] == ["succeeded"] * 4
            assert http.post("/v1/initializations", json=body(steps=5, seed=31)).status_code == 202
            assert http.get("/readyz").status_code == 200
    finally:
        api.stop()
        worker.stop()
        kill_group(redis_proc)
