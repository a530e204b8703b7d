"""API and Celery worker on different hosts: they share Redis and an S3 server (SeaweedFS), never a disk.

Each process gets a home folder of its own (its work folder, its template cache); the template store and the
checkpoints live under s3:// prefixes. A checkpoint a worker made is downloaded through the API, by streaming (with
ETag, Range and If-None-Match) or by a redirect to a presigned URL.
"""

from __future__ import annotations

import hashlib

import httpx
import pytest
from safetensors.torch import load_file

from learngene import ViTSpec
from service.client import Client
from tests.conftest import FMNIST, SHARED_DATA
from tests.harness import TEST_REDIS_URL, finished, flush_test_redis, service_env, start_api, start_worker, wait_for
from tests.s3server import BUCKET

BODY = {
    "model": "vit_tiny_patch16_224",
    "overrides": dict(depth=2, embed_dim=64, num_heads=1, img_size=28, patch_size=7, in_chans=1, num_classes=10),
    "template_set": "demo@prod",
    "calibration": {"uri": f"idx://{FMNIST}", "max_samples": 256},
    "fit": {"steps": 10, "batch_size": 32},
}


@pytest.fixture(scope="module")
def hosts(tmp_path_factory, s3_server):
    """A worker 'host' and an API 'host': separate folders, one Redis, one bucket."""
    flush_test_redis()
    prefix = f"s3://{BUCKET}/hosts-{tmp_path_factory.getbasetemp().name}"
    shared = {"LEARNGENE_STORE": f"{prefix}/store", "LEARNGENE_ARTIFACTS": f"{prefix}/checkpoints"}
    worker_home, api_home = tmp_path_factory.mktemp("worker-host"), tmp_path_factory.mktemp("api-host")
    worker_env = service_env(worker_home, redis_url=TEST_REDIS_URL, data_roots=[SHARED_DATA], **shared)
    api_env = service_env(api_home, redis_url=TEST_REDIS_URL, data_roots=[SHARED_DATA], **shared)
    worker = start_worker(worker_env, worker_home / "worker.log")
    try:
        api = start_api(api_env, api_home / "api.log")
    except Exception:
        worker.stop()
        raise
    yield api, api_env, worker_home, api_home
    api.stop()
    worker.stop()
    flush_test_redis()


def test_a_checkpoint_made_on_one_host_is_served_by_another(hosts, tmp_path):
    api, _, worker_home, api_home = hosts
    with httpx.Client(base_url=api.url, timeout=60) as http, Client(api.url) as client:
        assert http.get("/readyz").json()["checks"] == {"jobs": "ok", "store": "ok", "artifacts": "ok"}
        job = http.post("/v1/initializations", json=BODY).json()
        done = client.wait(job["id"], timeout_s=180)
        assert done["status"] == "succeeded", done
        path = client.download(job["id"], tmp_path / "vit.safetensors")
        data = path.read_bytes()
        sha, url = done["checkpoint"]["sha256"], done["checkpoint"]["download"]
        assert hashlib.sha256(data).hexdigest() == sha and len(data) == done["checkpoint"]["bytes"]

        head = http.head(url)
        assert (head.status_code, head.headers["etag"], int(head.headers["content-length"])) == (
            200,
            f'"{sha}"',
            len(data),
        )
        assert http.get(url, headers={"If-None-Match": f'"{sha}"'}).status_code == 304
        for header, expected in (("bytes=0-99", data[:100]), ("bytes=-10", data[-10:]), ("bytes=100-", data[100:]),
                                 (f"bytes=5-{len(data) + 50}", data[5:])):  # fmt: skip
            part = http.get(url, headers={"Range": header})
            assert part.status_code == 206 and part.content == expected, header
            assert part.headers["content-range"].endswith(f"/{len(data)}")
        unsatisfiable = http.get(url, headers={"Range": f"bytes={len(data)}-"})
        assert unsatisfiable.status_code == 416 and unsatisfiable.headers["content-range"] == f"bytes */{len(data)}"
        assert http.get(url, headers={"Range": "bytes=0-1,5-6"}).content == data  # several ranges: the whole file

    model = ViTSpec(model=BODY["model"], **BODY["overrides"]).build()
    model.load_state_dict(load_file(path), strict=True)
    # Neither host keeps a checkpoint on its disk: the worker's scratch copy went once uploaded.
    for home in (worker_home, api_home):
        assert [p for p in home.rglob("*.safetensors") if "store-cache" not in p.parts] == []


def test_downloads_can_redirect_to_a_presigned_url(hosts, tmp_path):
    api, api_env, _, api_home = hosts
    with httpx.Client(base_url=api.url, timeout=60) as http, Client(api.url) as client:
        job = http.post("/v1/initializations", json={**BODY, "fit": {**BODY["fit"], "seed": 7}}).json()
        done = wait_for(http, f"/v1/initializations/{job['id']}", finished, timeout=180)
        assert done["status"] == "succeeded", done
        streamed = client.download(job["id"], tmp_path / "streamed.safetensors").read_bytes()
    presigning = start_api({**api_env, "LEARNGENE_ARTIFACTS_PRESIGN_S": "60"}, api_home / "api-presign.log")
    try:
        with httpx.Client(base_url=presigning.url, timeout=60) as http:
            answer = http.get(done["checkpoint"]["download"].replace(api.url, presigning.url))
            assert answer.status_code == 307 and answer.headers["etag"] == f'"{done["checkpoint"]["sha256"]}"'
            location = answer.headers["location"]
            assert "X-Amz-Signature=" in location and "X-Amz-Expires=60" in location
            assert httpx.get(location, timeout=60).content == streamed
    finally:
        presigning.stop()
