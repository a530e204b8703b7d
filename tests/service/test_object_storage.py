"""API and Celery worker on different hosts: they share Redis and an S3 server (SeaweedFS), never a disk.

Each process gets a home folder of its own (its work folder, its template cache); the template store and the
checkpoints live under s3:// prefixes. A checkpoint a worker made is downloaded through the API, by streaming (with
ETag, Range and If-None-Match) or by a redirect to a presigned URL.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import load, load_file, save_file

from jobs.remote_data import MAX_HEAD_REQUESTS
from learngene import ViTSpec, export_checkpoint
from learngene.formats.pretrained import FOLDER_FILES
from service.client import Client
from storage.artifacts import artifact_key
from storage.objects import Bucket
from storage.signing import SIGNATURE
from templates_store import TemplateStore
from tests.support.data import FMNIST, SHARED_DATA, fmnist_rgb64, write_folder, write_shards
from tests.support.harness import (
    ADMIN_TOKEN,
    TEST_REDIS_URL,
    finished,
    flush_test_redis,
    service_env,
    start_api,
    start_worker,
    wait_for,
)
from tests.support.models import tiny_spec
from tests.support.s3server import BUCKET

BODY = {
    "model": "vit_tiny_patch16_224",
    "overrides": dict(depth=2, embed_dim=64, num_heads=1, img_size=28, patch_size=7, in_chans=1, num_classes=10),
    "template_set": "demo@prod",
    "calibration": {"uri": f"idx://{FMNIST}", "max_samples": 256},
    "fit": {"steps": 10, "batch_size": 32},
}


def upload_tree(folder: Path, url: str) -> None:
    bucket = Bucket(url)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        bucket.upload(str(path.relative_to(folder)), path)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory, s3_server):
    """A worker 'host' and an API 'host': separate folders, one Redis, one bucket. The bucket also holds datasets
    (a bundle, an ImageFolder tree, WebDataset shards) under a data root that is a URL prefix; the bundle has a local
    twin under a folder root."""
    flush_test_redis()
    prefix = f"s3://{BUCKET}/hosts-{tmp_path_factory.getbasetemp().name}"
    data = tmp_path_factory.mktemp("datasets")
    images, labels = fmnist_rgb64(120)
    grey = np.ascontiguousarray(images[..., 0])
    save_file({"images": torch.from_numpy(grey), "labels": torch.from_numpy(labels)}, data / "fmnist.safetensors")
    write_folder(data / "folder", grey, labels)
    write_shards(data / "shards", images, labels, shards=2)
    upload_tree(data, f"{prefix}/datasets")
    roots = [SHARED_DATA, data, f"{prefix}/datasets/"]
    shared = {"LEARNGENE_STORE": f"{prefix}/store", "LEARNGENE_ARTIFACTS": f"{prefix}/checkpoints"}
    worker_home, api_home = tmp_path_factory.mktemp("worker-host"), tmp_path_factory.mktemp("api-host")
    worker_env = service_env(worker_home, redis_url=TEST_REDIS_URL, data_roots=roots, **shared)
    api_env = service_env(api_home, redis_url=TEST_REDIS_URL, data_roots=roots, **shared)
    worker = start_worker(worker_env, worker_home / "worker.log")
    try:
        api = start_api(api_env, api_home / "api.log")
    except Exception:
        worker.stop()
        raise
    yield {"api": api, "api_env": api_env, "worker_home": worker_home, "api_home": api_home, "data": data,
           "datasets": f"{prefix}/datasets"}  # fmt: skip
    api.stop()
    worker.stop()
    flush_test_redis()


def test_a_checkpoint_made_on_one_host_is_served_by_another(hosts, tmp_path):
    api, worker_home, api_home = hosts["api"], hosts["worker_home"], hosts["api_home"]
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
        for header, expected in (
            ("bytes=0-99", data[:100]),
            ("bytes=-10", data[-10:]),
            ("bytes=100-", data[100:]),
            (f"bytes=5-{len(data) + 50}", data[5:]),
        ):
            part = http.get(url, headers={"Range": header})
            assert part.status_code == 206 and part.content == expected, header
            assert part.headers["content-range"].endswith(f"/{len(data)}")
        unsatisfiable = http.get(url, headers={"Range": f"bytes={len(data)}-"})
        assert unsatisfiable.status_code == 416 and unsatisfiable.headers["content-range"] == f"bytes */{len(data)}"
        assert http.get(url, headers={"Range": "bytes=0-1,5-6"}).content == data  # several ranges: the whole file
        # The timm / Hugging Face folder, published to S3 by the worker too: file by file and as one tar.
        files = {n: f["sha256"] for n, f in done["checkpoint"]["files"].items()}
        urls = {n: f["download"] for n, f in done["checkpoint"]["files"].items()}
        assert list(files) == [*FOLDER_FILES, SIGNATURE]
        assert {n: hashlib.sha256(http.get(u).content).hexdigest() for n, u in urls.items()} == files
        with tarfile.open(fileobj=io.BytesIO(http.get(done["links"]["folder"]).content)) as archive:
            members = {m.name: hashlib.sha256(archive.extractfile(m).read()).hexdigest() for m in archive if m.isfile()}
        assert members == {f"{job['id']}/{n}": sha for n, sha in files.items()}

    model = ViTSpec(model=BODY["model"], **BODY["overrides"]).build()
    model.load_state_dict(load_file(path), strict=True)
    # Neither host keeps a checkpoint on its disk: the worker's scratch copy went once uploaded.
    for home in (worker_home, api_home):
        assert [p for p in home.rglob("*.safetensors") if not {"store-cache", "data-cache"} & set(p.parts)] == []


def test_downloads_can_redirect_to_a_presigned_url(hosts, tmp_path):
    api, api_env, api_home = hosts["api"], hosts["api_env"], hosts["api_home"]
    with httpx.Client(base_url=api.url, timeout=60) as http, Client(api.url) as client:
        job = http.post("/v1/initializations", json={**BODY, "fit": {**BODY["fit"], "seed": 7}}).json()
        done = wait_for(http, f"/v1/initializations/{job['id']}", finished, timeout=180)
        assert done["status"] == "succeeded", done
        streamed = client.download(job["id"], tmp_path / "streamed.safetensors").read_bytes()
    # Clients reach the store by another name than the API does: the presigned URL names theirs, and its
    # signature holds there.
    public = api_env["AWS_ENDPOINT_URL"].replace("127.0.0.1", "localhost")
    presigning = start_api(
        {**api_env, "LEARNGENE_ARTIFACTS_PRESIGN_S": "60", "LEARNGENE_ARTIFACTS_PUBLIC_ENDPOINT": public},
        api_home / "api-presign.log",
    )
    try:
        with httpx.Client(base_url=presigning.url, timeout=60) as http:
            answer = http.get(done["checkpoint"]["download"].replace(api.url, presigning.url))
            assert answer.status_code == 307 and answer.headers["etag"] == f'"{done["checkpoint"]["sha256"]}"'
            location = answer.headers["location"]
            assert "X-Amz-Signature=" in location and "X-Amz-Expires=60" in location
            assert location.startswith(f"{public}/") and api_env["AWS_ENDPOINT_URL"] not in location
            assert httpx.get(location, timeout=60).content == streamed
            # Deleted from the bucket: 410 as documented, not a redirect to a 404.
            Bucket(api_env["LEARNGENE_ARTIFACTS"]).delete(artifact_key(done["checkpoint"]["sha256"]))
            gone = http.get(done["checkpoint"]["download"].replace(api.url, presigning.url))
            assert gone.status_code == 410 and gone.headers["content-type"] == "application/problem+json"
    finally:
        presigning.stop()


def test_calibration_data_is_read_from_object_storage(hosts):
    """A bundle on S3 gives the very checkpoint its local twin gives, and so does an ImageFolder tree of which only
    the images the fit reads are copied (also when they leave classes empty); shards on S3 work too."""
    api, datasets = hosts["api"], hosts["datasets"]
    uris = {
        "local": str(hosts["data"] / "fmnist.safetensors"),
        "s3-bundle": f"{datasets}/fmnist.safetensors",
        "s3-folder": f"{datasets}/folder/",
        "local-folder": f"imagefolder://{hosts['data'] / 'folder'}",
        "s3-folder-6": f"{datasets}/folder/",  # six images of ten classes: their labels as in the whole tree
        "local-folder-6": f"imagefolder://{hosts['data'] / 'folder'}",
        "s3-shards": f"{datasets}/shards/train-{{0000..0001}}.tar",
        "s3-shards-listed": f"{datasets}/shards/train-{{0000,0001}}.tar",  # the same objects, spelt otherwise
    }
    with httpx.Client(base_url=api.url, timeout=60) as http:
        jobs = {}
        for name, uri in uris.items():
            samples = 6 if name.endswith("-6") else 100
            body = {**BODY, "calibration": {"uri": uri, "max_samples": samples},
                    "fit": {"steps": 5, "batch_size": min(20, samples), "seed": 7}}  # fmt: skip
            answer = http.post("/v1/initializations", json=body)
            assert answer.status_code == 202, (name, answer.text)
            jobs[name] = answer.json()["id"]
        done = {n: wait_for(http, f"/v1/initializations/{i}", finished, timeout=180) for n, i in jobs.items()}
    assert {n: d["status"] for n, d in done.items()} == dict.fromkeys(uris, "succeeded"), done
    with httpx.Client(base_url=api.url, timeout=60) as http:
        files = {n: http.get(d["checkpoint"]["download"]).content for n, d in done.items() if "shards" not in n}
    for local, remote in (("local", "s3-bundle"), ("local-folder", "s3-folder"), ("local-folder-6", "s3-folder-6")):
        twin, copied = load(files[local]), load(files[remote])
        assert twin.keys() == copied.keys() and all(torch.equal(twin[k], copied[k]) for k in twin), remote
    lineage = {n: json.loads(safe_header(files[n])["learngene"])["calibration"] for n in ("local", "s3-bundle")}
    assert lineage["s3-bundle"]["digest"] == lineage["local"]["digest"]  # from the very same images
    assert lineage["s3-bundle"]["uri"] == uris["s3-bundle"]  # named as sent, never by the worker's local copy
    mirrored = [p for p in hosts["worker_home"].rglob("*") if "data-cache" in p.parts and p.is_file()]
    # The bundle, the images each fit of the tree reads (100 and 6 of its 120), the shards (once for both spellings).
    assert len(mirrored) == 1 + 100 + 6 + 2


def test_object_storage_references_are_confined_and_answer_without_an_oracle(hosts):
    api, datasets = hosts["api"], hosts["datasets"]
    bucket = datasets.split("/")[2]
    Bucket(f"s3://{bucket}/elsewhere").upload("secret.safetensors", hosts["data"] / "fmnist.safetensors")

    def submit(uri: str) -> httpx.Response:
        return httpx.post(f"{api.url}/v1/initializations", json={**BODY, "calibration": {"uri": uri}}, timeout=60)

    outside_uri, missing_uri = f"s3://{bucket}/elsewhere/secret.safetensors", f"{datasets}/nothing.safetensors"
    outside, missing = submit(outside_uri), submit(missing_uri)
    assert outside.status_code == missing.status_code == 400
    assert outside.text.replace(outside_uri, "<uri>") == missing.text.replace(missing_uri, "<uri>")  # no oracle
    assert "does not exist or lies outside the allowed data roots" in outside.text
    for uri in (
        f"{datasets}/../elsewhere/secret.safetensors",
        f"{datasets}/model.pkl",
        f"s3://{bucket}/x?versionId=1",
        "s3://ab/x.safetensors",
        f"{datasets}/a.tar::elsewhere/secret.tar",  # a second pattern would be a key past the root
        f"{datasets}/{{,x}}/a.tar",
        f"{datasets}/{{..,x}}/a.tar",
        f"{datasets}/a\x01.safetensors",
    ):
        answer = submit(uri)
        assert answer.status_code in (400, 422) and answer.status_code < 500, (uri, answer.text)
        assert "calibration" in answer.text or "data reference" in answer.text


def test_large_shard_sets_on_object_storage_are_checked_from_a_listing_and_bounded_from_their_text(hosts, tmp_path):
    """40 shards (more than MAX_HEAD_REQUESTS) are found by one listing, not 40 HEAD requests; a pattern naming a
    shard that is not there is unavailable, and one naming a billion is refused before any request."""
    api, datasets = hosts["api"], hosts["datasets"]
    images, labels = fmnist_rgb64(40)
    write_shards(tmp_path / "many", images, labels, shards=40)
    upload_tree(tmp_path / "many", f"{datasets}/many")
    assert MAX_HEAD_REQUESTS < 40

    def submit(pattern: str) -> httpx.Response:
        body = {**BODY, "calibration": {"uri": f"{datasets}/many/{pattern}", "max_samples": 20},
                "fit": {"steps": 2, "batch_size": 10}}  # fmt: skip
        return httpx.post(f"{api.url}/v1/initializations", json=body, timeout=60)

    one_more, billion = (
        submit("train-{0000..0040}.tar"),
        submit("train-{0..9}{0..9}{0..9}{0..9}{0..9}{0..9}{0..9}{0..9}{0..9}.tar"),
    )
    assert one_more.status_code == 400 and "does not exist" in one_more.json()["detail"], one_more.text
    assert billion.status_code == 422 and "more than 100,000" in billion.json()["detail"], billion.text
    accepted = submit("train-{0000..0039}.tar")
    assert accepted.status_code == 202, accepted.text
    with httpx.Client(base_url=api.url, timeout=60) as http:  # waited for: later tests count the worker's copies
        done = wait_for(http, f"/v1/initializations/{accepted.json()['id']}", finished, timeout=180)
    assert done["status"] == "succeeded", done


def safe_header(data: bytes) -> dict:
    """The `__metadata__` of a safetensors file held in memory."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size])["__metadata__"]


def test_a_condensation_reads_its_data_from_object_storage_and_publishes_there(hosts, ancestor):
    """The admin job condenses from an ImageFolder tree on S3 (evaluated on the S3 bundle) into the S3 store;
    another process opens the store and finds the version whole."""
    anc_spec = tiny_spec(embed_dim=64, num_heads=2, depth=2)
    export_checkpoint(ancestor, hosts["data"] / "ancestor.safetensors", spec=anc_spec)
    body = {
        "name": "from-s3",
        "ancestor": {"model": anc_spec.model, "overrides": anc_spec.overrides(),
                     "checkpoint": str(hosts["data"] / "ancestor.safetensors")},
        "aux": {"model": anc_spec.model, "overrides": tiny_spec(depth=2).overrides()},
        "data": {"uri": f"{hosts['datasets']}/folder/"},
        "eval_data": f"{hosts['datasets']}/fmnist.safetensors",
        "training": {"steps": 20, "batch_size": 20, "warmup_steps": 2, "recipe": "plain"},
    }  # fmt: skip
    with httpx.Client(base_url=hosts["api"].url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        response = http.post("/v1/admin/condensations", json=body)
        assert response.status_code == 202, response.text
        job = wait_for(http, response.headers["location"], finished, timeout=240)
    assert job["status"] == "succeeded", job
    store = TemplateStore.open(hosts["api_env"]["LEARNGENE_STORE"], cache_dir=hosts["api_home"] / "reader-cache")
    resolved = store.verify("from-s3@1")
    assert store.load(resolved).metrics == job["result"]["metrics"]
