"""Object storage failing under a running service: the S3 server stopped and restarted, a writer SIGKILLed mid-upload.

The module runs an S3 server of its own (SeaweedFS), which it stops and starts; API and worker keep their own
folders and share only Redis and that server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import PurePath

import httpx
import pytest

from storage.artifacts import S3Artifacts
from tests.support.data import FMNIST, REPO, SHARED_DATA
from tests.support.harness import (
    TEST_REDIS_URL,
    finished,
    flush_test_redis,
    kill_group,
    service_env,
    start_api,
    start_worker,
    wait_for,
)
from tests.support.s3server import BUCKET, S3Server

BODY = {
    "model": "vit_tiny_patch16_224",
    "overrides": dict(depth=2, embed_dim=64, num_heads=1, img_size=28, patch_size=7, in_chans=1, num_classes=10),
    "template_set": "demo@prod",
    "calibration": {"uri": f"idx://{FMNIST}", "max_samples": 256},
    "fit": {"steps": 150, "batch_size": 32},
}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3-faults"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3):
    flush_test_redis()
    prefix = f"s3://{BUCKET}/faults"
    extra = {
        **s3.env, "LEARNGENE_STORE": f"{prefix}/store", "LEARNGENE_ARTIFACTS": f"{prefix}/checkpoints",
        "LEARNGENE_LEASE_S": "4", "LEARNGENE_REAPER_INTERVAL_S": "1", "LEARNGENE_STORAGE_OUTAGE_S": "120",
    }  # fmt: skip
    homes = {name: tmp_path_factory.mktemp(name) for name in ("api-host", "worker-host")}
    envs = {name: service_env(home, redis_url=TEST_REDIS_URL, data_roots=[SHARED_DATA], **extra)
            for name, home in homes.items()}  # fmt: skip
    worker = start_worker(envs["worker-host"], homes["worker-host"] / "worker.log")
    api = start_api(envs["api-host"], homes["api-host"] / "api.log")
    state = {"api": api, "worker": worker, "env": envs["worker-host"], "home": homes["worker-host"]}
    yield state
    api.stop()
    state["worker"].stop()
    flush_test_redis()


def checkpoint_objects(s3: S3Server) -> list[str]:
    return sorted(i.key for i in s3.bucket(f"s3://{BUCKET}/faults/checkpoints").list())


def test_an_outage_makes_the_service_unready_and_refuses_what_needs_storage(stack, s3):
    api = stack["api"]
    with httpx.Client(base_url=api.url, timeout=60) as http:
        assert http.get("/readyz").status_code == 200
        s3.stop()
        try:
            ready = http.get("/readyz")
            assert ready.status_code == 503 and ready.headers["retry-after"]
            assert ready.json()["checks"]["store"] != "ok" and ready.json()["checks"]["artifacts"] != "ok"
            assert ready.json()["checks"]["jobs"] == "ok"
            listed = http.get("/v1/initializations").json()["items"]
            refused = http.post("/v1/initializations", json=BODY)
            assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
            assert s3.endpoint not in refused.text and "127.0.0.1" not in refused.text
            assert http.get("/v1/initializations").json()["items"] == listed  # nothing was accepted
        finally:
            s3.start()
        assert http.get("/readyz").status_code == 200


def test_running_jobs_ride_out_an_outage_and_finish(stack, s3):
    api = stack["api"]
    with httpx.Client(base_url=api.url, timeout=60) as http:
        jobs = [http.post("/v1/initializations", json={**BODY, "fit": {**BODY["fit"], "seed": s}}).json()
                for s in range(3)]  # fmt: skip
        assert all("id" in j for j in jobs), jobs
        wait_for(http, f"/v1/initializations/{jobs[0]['id']}", lambda j: j["status"] == "running", timeout=60)
        s3.stop()
        try:
            time.sleep(8)  # the first job's 150 steps end within this; it cannot publish while storage is away
            during = [http.get(f"/v1/initializations/{j['id']}").json()["status"] for j in jobs]
            assert "succeeded" not in during and "failed" not in during, during
        finally:
            s3.start()
        done = [wait_for(http, f"/v1/initializations/{j['id']}", finished, timeout=240) for j in jobs]
        assert [d["status"] for d in done] == ["succeeded"] * 3, [d.get("error") for d in done]
        for d in done:
            data = http.get(d["checkpoint"]["download"]).content
            assert len(data) == d["checkpoint"]["bytes"]
    assert "object storage is unavailable" in (stack["home"] / "worker.log").read_text()
    shas = {d["checkpoint"]["sha256"] for d in done}
    assert {f"{sha}.safetensors" for sha in shas} <= set(checkpoint_objects(s3))


UPLOADER = """
import os, sys
from pathlib import Path
from storage.artifacts import S3Artifacts
from storage.objects import Bucket
path = Path(sys.argv[1])
print("uploading", flush=True)
S3Artifacts(Bucket(sys.argv[2])).publish(path, "0" * 64)
print("done", flush=True)
"""


def test_a_writer_killed_mid_upload_leaves_no_object(s3, tmp_path):
    big = tmp_path / "big.safetensors"
    block = os.urandom(4 << 20)
    with open(big, "wb") as f:
        for _ in range(96):
            f.write(block)  # 384 MiB: dozens of parts
    url = f"s3://{BUCKET}/faults/killed-upload"
    child = subprocess.Popen(
        [sys.executable, "-c", UPLOADER, str(big), url],
        cwd=REPO,
        env={**os.environ, **s3.env},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert child.stdout.readline().strip() == "uploading"
    time.sleep(1.0)
    assert child.poll() is None, "the upload ended before it could be interrupted"
    kill_group(child)
    artifacts = S3Artifacts(s3.bucket(url))
    assert artifacts.size("0" * 64) is None and artifacts.bucket.list() == []
    assert big.exists()  # the local file is consumed only by a finished upload


def test_a_worker_killed_mid_job_is_replaced_and_the_job_finishes_once(stack, s3):
    api = stack["api"]
    before = set(checkpoint_objects(s3))
    with httpx.Client(base_url=api.url, timeout=60) as http:
        body = {**BODY, "fit": {**BODY["fit"], "steps": 400, "seed": 11}}
        job = http.post("/v1/initializations", json=body).json()
        wait_for(
            http, f"/v1/initializations/{job['id']}", lambda j: (j["progress"] or {}).get("step", 0) > 5, timeout=60
        )
        kill_group(stack["worker"])
        stack["worker"] = start_worker(stack["env"], stack["home"] / "worker-2.log", name="worker2")
        done = wait_for(http, f"/v1/initializations/{job['id']}", finished, timeout=240)
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    added = set(checkpoint_objects(s3)) - before
    folder = {f"{f['sha256']}{PurePath(name).suffix}" for name, f in done["checkpoint"]["files"].items()}
    assert f"{done['checkpoint']['sha256']}.safetensors" in added and added == folder - before  # nothing else
