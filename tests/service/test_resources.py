"""Resources stay bounded: one worker's memory across 40 consecutive jobs (100 at the full scale), its processes
recycled as configured, and no temporary files left behind by jobs that fail or are cancelled."""

from __future__ import annotations

import contextlib
import threading
import time

import httpx
import psutil

from learngene import export_checkpoint
from tests.support.data import FMNIST, SHARED_DATA
from tests.support.harness import (
    ADMIN_TOKEN,
    TEST_REDIS_URL,
    finished,
    flush_test_redis,
    lease_pid,
    service_env,
    start_api,
    start_worker,
    wait_for,
)
from tests.support.models import tiny_spec
from tests.support.scale import by_scale

# Four pool processes either way, each serving RECYCLE_AFTER jobs: enough to see one grow.
JOBS, RECYCLE_AFTER = by_scale(dev=(40, 10), full=(100, 25))


def body(seed: int) -> dict:
    return {
        "model": "vit_tiny_patch16_224",
        "overrides": dict(depth=2, embed_dim=64, num_heads=1, img_size=28, patch_size=7, in_chans=1, num_classes=10),
        "calibration": {"uri": f"idx://{FMNIST}", "max_samples": 128},
        "fit": {"steps": 4, "batch_size": 16, "seed": seed},
    }


class RssSampler(threading.Thread):
    """Resident memory of each pool process of a worker, sampled every 100 ms."""

    def __init__(self, parent_pid: int):
        super().__init__(daemon=True)
        self.parent = psutil.Process(parent_pid)
        self.series: dict[int, list[int]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            for child in self.parent.children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    self.series.setdefault(child.pid, []).append(child.memory_info().rss)

    def peak(self, pid: int) -> int:
        return max(self.series[pid])

    def growth(self, pid: int) -> int:
        """How much higher the process peaked in the last third of its life than in the first third."""
        samples = self.series[pid]
        third = max(1, len(samples) // 3)
        return max(samples[-third:]) - max(samples[:third])


def test_memory_stays_bounded_over_many_jobs_and_pool_processes_are_recycled(tmp_path, ancestor):
    flush_test_redis()
    (tmp_path / "data").mkdir()
    env = service_env(
        tmp_path,
        redis_url=TEST_REDIS_URL,
        data_roots=[SHARED_DATA, tmp_path / "data"],
        LEARNGENE_WORKER_MAX_TASKS_PER_CHILD=str(RECYCLE_AFTER),
        LEARNGENE_CONDENSE_CHECKPOINT_EVERY="10",
    )
    worker = start_worker(env, tmp_path / "worker.log")
    api = start_api(env, tmp_path / "api.log")
    sampler = RssSampler(worker.popen.pid)
    sampler.start()
    try:
        with httpx.Client(base_url=api.url, timeout=30) as http:
            ids = [http.post("/v1/initializations", json=body(seed)).json()["id"] for seed in range(JOBS)]
            jobs = [wait_for(http, f"/v1/initializations/{i}", finished, timeout=600) for i in ids]
            assert [j["status"] for j in jobs] == ["succeeded"] * JOBS
            owners = [lease_pid(j, TEST_REDIS_URL) for j in jobs]  # read before the records are flushed

            # A condensation cancelled half-way leaves neither its resumable state nor a partial checkpoint.
            anc = tiny_spec(embed_dim=64, num_heads=2, depth=2)
            export_checkpoint(ancestor, tmp_path / "data" / "ancestor.safetensors", spec=anc)
            checkpoint = str(tmp_path / "data" / "ancestor.safetensors")
            request = {"name": "cancelled", "aux": {"model": anc.model, "overrides": tiny_spec(depth=2).overrides()},
                       "ancestor": {"model": anc.model, "overrides": anc.overrides(), "checkpoint": checkpoint},
                       "data": {"uri": f"idx://{FMNIST}", "max_samples": 1000},
                       "training": {"steps": 100000, "batch_size": 16, "recipe": "plain"}}  # fmt: skip
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            job = http.post("/v1/admin/condensations", json=request, headers=admin).json()
            url = f"/v1/admin/condensations/{job['id']}"
            wait_for(http, url, lambda j: (j["progress"] or {}).get("step", 0) >= 30, headers=admin, timeout=300)
            assert (tmp_path / "work" / "condense" / job["id"] / "train_state.json").is_file()
            http.delete(url, headers=admin)
            assert wait_for(http, url, finished, headers=admin)["status"] == "cancelled"
    finally:
        sampler.done.set()
        api.stop()
        worker.stop()
        flush_test_redis()

    assert len(set(owners)) == JOBS // RECYCLE_AFTER  # a fresh pool process every RECYCLE_AFTER jobs
    served = list(dict.fromkeys(owners))  # the pool processes, in the order they served
    peaks = [sampler.peak(pid) for pid in served]
    growth = [sampler.growth(pid) for pid in served]
    print(f"peak RSS per process (MiB): {[p >> 20 for p in peaks]}; growth within each: {[g >> 20 for g in growth]}")
    assert max(growth) < 64 * 2**20  # its jobs leave a process no bigger than after its first few
    assert max(peaks[1:]) <= 1.25 * peaks[0] + 64 * 2**20  # later processes do not grow beyond the first
    assert max(peaks) < 2 * 2**30
    time.sleep(0.5)
    assert not (tmp_path / "work" / "condense" / job["id"]).exists()
    for folder in (tmp_path / "artifacts", tmp_path / "work" / "checkpoints"):  # published, and being written
        assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []
