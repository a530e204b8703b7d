"""The service over real HTTP: Celery mode (a real redis-server and worker process) and embedded mode, on the
session's shared stacks (tests.support.stacks)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile

import httpx
import model_signing
import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file

from jobs.redis_store import RedisJobStore
from learngene import ViTSpec, export_checkpoint, read_metadata
from learngene.formats.pretrained import FOLDER_FILES
from learngene.formats.template_set import MANIFEST, TENSORS
from service.client import ApiError, Client, JobFailed
from storage.signing import SIGNATURE, SignatureInvalid, public_key_pem
from tests.support.data import FMNIST, SHARED_DATA, fmnist_rgb64, write_shards
from tests.support.harness import ADMIN_TOKEN, finished, wait_for
from tests.support.models import tiny_spec
from tests.support.receiver import Receiver

SHAPE = dict(img_size=28, patch_size=7, in_chans=1, num_classes=10)
BODY = {
    "model": "vit_tiny_patch16_224",
    "overrides": dict(depth=2, embed_dim=64, num_heads=1, **SHAPE),
    "template_set": "demo@prod",
    "calibration": {"uri": f"idx://{FMNIST}", "max_samples": 256},
    "fit": {"steps": 20, "batch_size": 32},
}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def data_root(request, celery_stack):
    return celery_stack.folder(request)


@pytest.fixture(scope="module", params=["celery", "embedded"])
def server(request):
    return request.getfixturevalue(f"{request.param}_stack")


def with_fit(**fit) -> dict:
    return {**BODY, "fit": {**BODY["fit"], **fit}}


def cache_hits(http: httpx.Client) -> float:
    return float(re.search(r"^learngene_checkpoint_cache_hits_total (\S+)$", http.get("/metrics").text, re.M)[1])


def test_end_to_end_submit_poll_download_load(server, tmp_path):
    with httpx.Client(base_url=server.url) as http, Client(server.url) as client:
        response = http.post("/v1/initializations", json=with_fit(seed=1))
        assert response.status_code == 202, response.text
        job = response.json()
        assert response.headers["location"] == f"{server.url}/v1/initializations/{job['id']}"
        assert job["status"] in ("queued", "running") and job["template_set"]["name"] == "demo"
        done = client.wait(job["id"], timeout_s=120)
        assert done["progress"]["step"] == done["progress"]["total_steps"] == 20
        assert done["result"]["fit"]["calibration_loss_after"] < done["result"]["fit"]["calibration_loss_before"]
        assert done["timings"]["queued_s"] >= 0 and done["timings"]["running_s"] > 0
        path = client.download(job["id"], tmp_path / "vit.safetensors")
        data = path.read_bytes()
        assert (
            hashlib.sha256(data).hexdigest() == done["checkpoint"]["sha256"]
            and len(data) == done["checkpoint"]["bytes"]
        )
        head = http.head(done["checkpoint"]["download"])
        assert head.headers["etag"] == f'"{done["checkpoint"]["sha256"]}"'
        assert int(head.headers["content-length"]) == len(data)
        assert (
            http.get(done["checkpoint"]["download"], headers={"If-None-Match": head.headers["etag"]}).status_code == 304
        )
        # Ranges read as on object storage: one range is a 206, several or 4400 digits (int() refuses 4300) are
        # the whole file, past the end is a 416 problem.
        url = done["checkpoint"]["download"]
        part = http.get(url, headers={"Range": "bytes=0-9"})
        assert part.status_code == 206 and part.content == data[:10]
        assert part.headers["content-range"] == f"bytes 0-9/{len(data)}"
        for whole in ("bytes=0-1,5-6", f"bytes={'9' * 4400}-"):
            answer = http.get(url, headers={"Range": whole})
            assert answer.status_code == 200 and answer.content == data, whole
        past = http.get(url, headers={"Range": f"bytes={len(data)}-"})
        assert past.status_code == 416 and past.headers["content-type"] == "application/problem+json"
        assert past.headers["content-range"] == f"bytes */{len(data)}"

    spec = ViTSpec(model=BODY["model"], **BODY["overrides"])
    model = spec.build()
    model.load_state_dict(load_file(path), strict=True)
    assert read_metadata(path)["template_set"] == done["template_set"]  # the pinned (name, version, digest)


def test_a_job_s_own_log_lines_are_served_by_position_and_a_failed_one_says_why(server, request):
    with httpx.Client(base_url=server.url) as http, Client(server.url) as client:
        sent = http.post("/v1/initializations", json=with_fit(seed=12, steps=3), headers={"X-Request-ID": "logs-ok-1"})
        job_id = sent.json()["id"]
        client.wait(job_id, timeout_s=120)
        lines, end, status = client.logs(job_id)
        assert status == "succeeded" and end == len(lines) >= 1, lines
        assert all(line["job_id"] == job_id and line["request_id"] == "logs-ok-1" for line in lines)
        assert any(f"job {job_id} (initialization) attempt 1/" in line["message"] for line in lines)
        assert client.logs(job_id, since=end) == ([], end, "succeeded")
        last = http.get(f"/v1/initializations/{job_id}/logs", params={"since": end - 1})
        assert last.headers["content-type"] == "application/x-ndjson" and len(last.text.splitlines()) == 1
        assert json.loads(last.text) == lines[-1] and last.headers["log-next"] == str(end)
        refused = http.get(f"/v1/initializations/{job_id}/logs", params={"since": -1})
        assert refused.status_code == 422 and refused.json()["errors"][0]["loc"] == ["query", "since"]
        assert http.get("/v1/initializations/no-such-job/logs").status_code == 404

        # Five classes against FashionMNIST's ten: IDX labels are read at admission, and the request refused.
        five = {**BODY["overrides"], "num_classes": 5}
        refused = http.post("/v1/initializations", json={**BODY, "overrides": five})
        assert refused.status_code == 422 and refused.json()["errors"][0]["loc"] == ["body", "calibration", "uri"]
        assert "labels span 10 classes" in refused.json()["errors"][0]["msg"]
        # Shards' labels lie among their images, unread at admission: accepted, then failed at run time.
        images, labels = fmnist_rgb64(64)
        shards = write_shards(server.folder(request) / "logs-shards", images, labels, shards=1)
        calibration = {"uri": shards, "max_samples": 64}
        sent = http.post("/v1/initializations", json={**BODY, "overrides": five, "calibration": calibration})
        failing = sent.json()["id"]
        with pytest.raises(JobFailed, match="labels go up to 9 but the model has num_classes=5"):
            client.wait(failing, timeout_s=120)
        failed = client.get(failing)
        told = list(client.follow_logs(failing, poll_s=0.2))  # ended: read to the last line, then stops
        [why] = [line for line in told if line["message"].startswith(f"job {failing} failed: ")]
        assert why["message"] == f"job {failing} failed: {failed['error']['type']}: {failed['error']['message']}"
        assert told[-1]["message"] == f"job {failing} failed"  # the outcome recorded, the last line
        text = json.dumps(told).replace(shards, "<sent>")  # the reference as sent is the client's own
        assert "Traceback" not in text and str(server.home) not in text  # no server path, no traceback


def test_the_checkpoint_as_a_timm_folder_file_by_file_and_as_one_tar(server, tmp_path):
    with httpx.Client(base_url=server.url) as http, Client(server.url) as client:
        job_id = http.post("/v1/initializations", json=with_fit(seed=11, steps=3)).json()["id"]
        done = client.wait(job_id, timeout_s=120)
        files = done["checkpoint"]["files"]
        assert list(files) == [*FOLDER_FILES, SIGNATURE] and "files" not in done["result"]
        assert files["model.safetensors"]["sha256"] == done["checkpoint"]["sha256"]
        for name, entry in files.items():
            answer = http.get(entry["download"])
            assert answer.status_code == 200 and answer.headers["etag"] == f'"{entry["sha256"]}"', name
            assert hashlib.sha256(answer.content).hexdigest() == entry["sha256"]
            assert len(answer.content) == entry["bytes"]
            assert http.get(entry["download"], headers={"If-None-Match": answer.headers["etag"]}).status_code == 304
        assert http.get(files["config.json"]["download"]).headers["content-type"] == "application/json"
        head = http.head(files["README.md"]["download"])
        assert head.status_code == 200 and int(head.headers["content-length"]) == files["README.md"]["bytes"]
        assert head.headers["content-type"].startswith("text/markdown")
        for name in ("secret.txt", "model.pt", "..%2F..%2Fjobs", "config.JSON"):
            missing = http.get(f"/v1/initializations/{job_id}/files/{name}")
            assert missing.status_code == 404, name
        holds = "a checkpoint folder holds model.safetensors, config.json, README.md, model.sig"
        assert holds in missing.json()["detail"]

        tar = http.get(done["links"]["folder"])
        assert tar.status_code == 200 and tar.headers["content-type"] == "application/x-tar"
        assert int(tar.headers["content-length"]) == len(tar.content)
        assert http.get(done["links"]["folder"], headers={"If-None-Match": tar.headers["etag"]}).status_code == 304
        with tarfile.open(fileobj=io.BytesIO(tar.content)) as archive:
            assert archive.getnames() == [job_id, *(f"{job_id}/{name}" for name in (*FOLDER_FILES, SIGNATURE))]
            for name, entry in files.items():
                data = archive.extractfile(f"{job_id}/{name}").read()
                assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
            archive.extractall(tmp_path / "untarred", filter="data")
        folder = client.download_folder(job_id, tmp_path / "folder")
        key = http.get("/v1/signing-key")
        assert key.headers["content-type"] == "application/x-pem-file" and key.content.startswith(b"-----BEGIN PUBLIC")
        assert client.verify(folder) == sorted(FOLDER_FILES)  # the key fetched from the API
        assert client.verify(tmp_path / "untarred" / job_id, key.content) == sorted(FOLDER_FILES)
    for name, entry in files.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == entry["sha256"]
    # OpenSSF model-signing's own verifier accepts it: a DSSE envelope over every file but the signature
    (tmp_path / "key.pem").write_bytes(key.content)
    verifier = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=tmp_path / "key.pem")
    verifier.set_hashing_config(model_signing.hashing.Config().set_ignored_paths(paths=[SIGNATURE]))
    verifier.verify(folder, folder / SIGNATURE)
    readme = (folder / "README.md").read_bytes()
    (folder / "README.md").write_bytes(readme.replace(b"timm", b"timM", 1))  # one byte of the model card
    with pytest.raises(SignatureInvalid, match=r"folder/ does not match its signature: .*README.md"):
        Client(server.url).verify(folder, key.content)
    (folder / "README.md").write_bytes(readme)
    (folder / "extra.bin").write_bytes(b"x")
    with pytest.raises(SignatureInvalid, match=r"extra\.bin"):
        Client(server.url).verify(folder, key.content)
    (folder / "extra.bin").unlink()
    foreign = public_key_pem(tmp_path / "foreign-key.pem")
    with pytest.raises(SignatureInvalid, match="Key mismatch"):
        Client(server.url).verify(folder, foreign)

    spec = ViTSpec(model=BODY["model"], **BODY["overrides"])
    strict = spec.build().eval()
    strict.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    x = torch.randn(2, 1, 28, 28)
    for root in (folder, tmp_path / "untarred" / job_id):
        model = timm.create_model(f"local-dir:{root}", pretrained=True).eval()
        assert torch.equal(model(x), strict(x))


def test_a_job_recorded_before_folders_still_serves_its_checkpoint(celery_stack):
    """A result stored by an earlier version names no `files`: its weights are served (by /checkpoint and as
    model.safetensors), config.json, README.md and the tar answer 404 saying why and what to do."""
    with httpx.Client(base_url=celery_stack.url) as http, Client(celery_stack.url) as client:
        job_id = http.post("/v1/initializations", json=with_fit(seed=12, steps=2)).json()["id"]
        done = client.wait(job_id, timeout_s=120)
        store = RedisJobStore.from_url(celery_stack.redis_url)
        old = {k: v for k, v in store.get(job_id).result.items() if k != "files"}
        store.r.hset(f"{store.p}:job:{job_id}", "result", json.dumps(old))  # as an earlier worker wrote it
        shown = client.get(job_id)["checkpoint"]
        assert list(shown["files"]) == ["model.safetensors"] and shown["folder"] is None
        weights = http.get(shown["files"]["model.safetensors"]["download"])
        assert hashlib.sha256(weights.content).hexdigest() == done["checkpoint"]["sha256"]
        assert http.get(shown["download"]).content == weights.content
        for url in (f"/v1/initializations/{job_id}/files/config.json", done["links"]["folder"]):
            answer = http.get(url)
            assert answer.status_code == 404 and "before checkpoints were stored as timm" in answer.json()["detail"]
            assert "submit the same request again" in answer.json()["detail"]
        with pytest.raises(ApiError, match="submit the request again"):
            client.download_folder(job_id, "unused")


def test_idempotent_retries_and_identical_requests_reuse_the_checkpoint(server):
    with httpx.Client(base_url=server.url) as http, Client(server.url) as client:
        body = with_fit(seed=2)
        first = http.post("/v1/initializations", json=body, headers={"Idempotency-Key": "retry-me"})
        again = http.post("/v1/initializations", json=body, headers={"Idempotency-Key": "retry-me"})
        assert (first.status_code, again.status_code) == (202, 200)
        assert again.json()["id"] == first.json()["id"]
        other = http.post("/v1/initializations", json=with_fit(seed=3), headers={"Idempotency-Key": "retry-me"})
        assert other.status_code == 422
        assert other.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]

        hits = cache_hits(http)  # the stack is shared: earlier tests' hits count too
        original = client.wait(first.json()["id"], timeout_s=120)
        assert original["result"]["cached"] is False
        identical = client.wait(http.post("/v1/initializations", json=body).json()["id"], timeout_s=120)
        assert identical["id"] != original["id"] and identical["result"]["cached"] is True
        assert identical["checkpoint"]["sha256"] == original["checkpoint"]["sha256"]
        assert cache_hits(http) == hits + 1


def test_cancel_a_queued_and_a_running_job(server):
    with httpx.Client(base_url=server.url) as http:
        running = http.post("/v1/initializations", json=with_fit(steps=20_000, seed=4)).json()
        url = f"/v1/initializations/{running['id']}"
        wait_for(http, url, lambda j: j["status"] == "running" and j["progress"] is not None)
        queued = http.post("/v1/initializations", json=with_fit(seed=5)).json()  # the only worker is busy
        cancelled = http.delete(f"/v1/initializations/{queued['id']}").json()
        assert cancelled["status"] == "cancelled"  # immediately: it never starts

        assert http.delete(url).json()["status"] == "running"  # flagged; it stops at its next step
        stopped = wait_for(http, url, finished, timeout=30)
        assert stopped["status"] == "cancelled" and stopped["progress"]["step"] < 20_000
        assert http.get(f"{url}/checkpoint").status_code == 409

        after = wait_for(http, f"/v1/initializations/{queued['id']}", finished)
        assert after["status"] == "cancelled" and after["attempts"] == 0 and after["timings"]["started_at"] is None


def test_bad_requests_are_refused_with_the_field_named(celery_stack):
    with httpx.Client(base_url=celery_stack.url) as http:

        def post(body, **kw):
            return http.post("/v1/initializations", json=body, **kw)

        def first_error(response):
            return response.json()["errors"][0]

        r = post({**BODY, "overrides": {**BODY["overrides"], "embed_dim": 201, "num_heads": 2}})
        assert r.status_code == 422 and first_error(r)["loc"] == ["body", "overrides", "num_heads"]
        assert "embed_dim=201 is not divisible by num_heads=2" in first_error(r)["msg"]
        r = post({**BODY, "model": "resnet50"})
        assert r.status_code == 422 and first_error(r)["loc"] == ["body", "model"]
        r = post({**BODY, "colour": "blue"})
        assert r.status_code == 422 and first_error(r)["loc"] == ["body", "colour"]
        r = post({**BODY, "fit": {"steps": -1}})
        assert r.status_code == 422 and first_error(r)["loc"] == ["body", "fit", "steps"]
        r = post({**BODY, "template_set": "../etc"})
        assert r.status_code == 422 and first_error(r)["loc"] == ["body", "template_set"]
        r = post({**BODY, "template_set": "nope"})
        assert r.status_code == 404 and "template set 'nope' does not exist" in r.json()["detail"]
        r = post({**BODY, "calibration": {"uri": "idx:///etc"}})
        assert r.status_code == 400 and "outside the allowed data roots" in r.json()["detail"]
        r = post({**BODY, "calibration": {"uri": f"idx://{SHARED_DATA}/NoSuchSet"}})
        assert r.status_code == 400 and "does not exist" in r.json()["detail"]
        r = post({**BODY, "calibration": {"uri": "ftp://host/x"}})
        assert r.status_code == 422 and first_error(r)["loc"] == ["body", "calibration", "uri"]
        r = post({**BODY, "method": "tleg"})
        assert r.status_code == 422 and first_error(r)["loc"] == ["body", "method"]
        assert "holds a 'wave' learngene, not a 'tleg' one" in first_error(r)["msg"]
        r = post({**BODY, "method": "weight_selection"})
        assert r.status_code == 422 and first_error(r)["loc"] == ["body", "ancestor"]
        ancestor = {"model": BODY["model"], "overrides": BODY["overrides"], "checkpoint": "/etc/passwd"}
        r = post({**BODY, "method": "timm", "ancestor": ancestor})
        assert r.status_code == 422 and "used only by weight_selection" in first_error(r)["msg"]
        r = post({**BODY, "ancestor": ancestor})  # WAVE's teacher: checked like any ancestor
        assert r.status_code == 422 and first_error(r)["loc"] == ["body", "ancestor", "checkpoint"]
        r = post({**BODY, "method": "heru_lg", "ancestor": ancestor})
        assert r.status_code == 422 and first_error(r)["loc"] == ["body", "ancestor", "checkpoint"]
        r = post({**BODY, "method": "magic"})
        assert r.status_code == 422 and first_error(r)["loc"] == ["body", "method"]
        assert http.get("/v1/initializations/0123").status_code == 404
        assert http.get("/v1/template-sets/nope@3").status_code == 404

        assert http.post("/v1/admin/condensations", json={}).status_code == 401
        wrong = http.post("/v1/admin/condensations", json={}, headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 403 and wrong.json()["detail"] == "invalid admin token"
        assert http.put("/v1/admin/template-sets/demo/aliases/prod", json={"version": 1}).status_code == 401


def test_admin_condensation_publishes_a_version_that_initializations_can_use(celery_stack, ancestor, data_root):
    anc_spec = tiny_spec(embed_dim=64, num_heads=2, depth=2)
    export_checkpoint(ancestor, data_root / "ancestor.safetensors", spec=anc_spec)
    body = {
        "name": "fmnist-tiny",
        "ancestor": {"model": anc_spec.model, "overrides": anc_spec.overrides(),
                     "checkpoint": str(data_root / "ancestor.safetensors")},
        "aux": {"model": anc_spec.model, "overrides": tiny_spec(depth=2).overrides()},
        "data": {"uri": f"idx://{FMNIST}", "max_samples": 3000},
        "eval_data": f"idx://{FMNIST}?split=test",
        "training": {"steps": 40, "batch_size": 32, "warmup_steps": 5, "recipe": "plain"},
        "promote": "prod",
        "promote_if": "always",  # this stack's cards are a token budget (tests/service/test_cards.py gates on one)
    }  # fmt: skip
    with httpx.Client(base_url=celery_stack.url, headers=ADMIN) as http:
        bad = http.post(
            "/v1/admin/condensations", json={**body, "ancestor": {**body["ancestor"], "checkpoint": "/etc/passwd"}}
        )  # a folder or file outside the data roots (an ancestor may be a local-dir folder): the no-oracle 400
        assert bad.status_code == 400 and "outside the allowed data roots" in bad.json()["detail"], bad.text
        (data_root / "ancestor.pt").write_bytes(b"\x80\x04 a pickle is never read")
        pickled = http.post(
            "/v1/admin/condensations",
            json={**body, "ancestor": {**body["ancestor"], "checkpoint": str(data_root / "ancestor.pt")}},
        )
        assert pickled.status_code == 422 and pickled.json()["errors"][0]["loc"] == ["body", "ancestor", "checkpoint"]
        assert "only .safetensors" in pickled.json()["errors"][0]["msg"]  # fmt: skip
        receiver = Receiver().start()
        response = http.post("/v1/admin/condensations", json={**body, "notify": {"url": receiver.url}})
        assert response.status_code == 202, response.text
        receiver.secrets["own"] = response.json()["notify"]["secret"]
        job = wait_for(http, response.headers["location"], finished, timeout=180)
        assert job["status"] == "succeeded", job
        assert job["result"]["ref"] == "fmnist-tiny@1" and job["result"]["metrics"]["aux_accuracy"] > 0.2
        assert job["result"]["promotion"] == {"alias": "prod", "moved": True} and job["result"]["warnings"] == []
        # Its webhook heard each step (in the order emitted: senders run concurrently), each delivery verified
        # with the request's own secret.
        steps = ["template_set.published", "card.ready", "alias.moved", "job.succeeded"]
        got = receiver.wait_for(lambda got: len(got) >= len(steps))
        seen = sorted(got, key=lambda r: (r.event["timestamp"], steps.index(r.event["type"])))  # ms: ties
        receiver.stop()
        assert [r.event["type"] for r in seen] == steps and all(r.verified == {"own": True} for r in seen)
        published, card, moved, ended = (r.event["data"] for r in seen)
        assert published["ref"] == card["ref"] == ended["ref"] == "fmnist-tiny@1" and published["method"] == "wave"
        assert card["card"]["revision"] == 1 and moved == {"name": "fmnist-tiny", "alias": "prod", "version": 1,
                                                          "previous": None, "job_id": job["id"]}  # fmt: skip

        listed = http.get("/v1/template-sets", params={"name": "fmnist-tiny"}).json()["items"]
        assert [(v["version"], v["aliases"]) for v in listed] == [(1, ["prod"])]
        shown = http.get("/v1/template-sets/fmnist-tiny@prod").json()
        assert shown["manifest"]["lineage"]["ancestor_model"] == anc_spec.model and shown["aliases"] == {"prod": 1}

        promoted = http.put("/v1/admin/template-sets/fmnist-tiny/aliases/stable", json={"version": 1})
        assert promoted.status_code == 200 and promoted.json()["history"] == [1]
        assert (
            http.put("/v1/admin/template-sets/fmnist-tiny/aliases/stable", json={"rollback": True}).status_code == 409
        )
        assert http.put("/v1/admin/template-sets/fmnist-tiny/aliases/stable", json={"version": 9}).status_code == 404
        both = http.put("/v1/admin/template-sets/fmnist-tiny/aliases/stable", json={"version": 1, "rollback": True})
        assert both.status_code == 422

        descendant = {
            **BODY,
            "template_set": "fmnist-tiny@prod",
            "overrides": tiny_spec(depth=3, embed_dim=64, num_heads=2).overrides(),
        }
        init = http.post("/v1/initializations", json=descendant).json()
        done = wait_for(http, f"/v1/initializations/{init['id']}", finished)
        assert done["status"] == "succeeded" and done["template_set"]["name"] == "fmnist-tiny"

        # The set's own ancestor as WAVE's teacher: the fitting loss carries the KL term, the checkpoint its sha256.
        taught = http.post("/v1/initializations", json={**descendant, "ancestor": body["ancestor"]}).json()
        taught = wait_for(http, f"/v1/initializations/{taught['id']}", finished)
        assert taught["status"] == "succeeded", taught
        assert taught["result"]["fit"]["calibration_loss_before"] > done["result"]["fit"]["calibration_loss_before"]
        with Client(celery_stack.url) as client:
            path = client.download(taught["id"], data_root / "taught.safetensors")
        assert (
            read_metadata(path)["ancestor_sha256"]
            == hashlib.sha256((data_root / "ancestor.safetensors").read_bytes()).hexdigest()
        )
        stranger = data_root / "stranger.safetensors"
        export_checkpoint(anc_spec.build(), stranger, spec=anc_spec)
        wrong = {**descendant, "ancestor": {**body["ancestor"], "checkpoint": str(stranger)}}
        wrong = wait_for(
            http, f"/v1/initializations/{http.post('/v1/initializations', json=wrong).json()['id']}", finished
        )
        assert (
            wrong["status"] == "failed"
            and "is not the one fmnist-tiny@1 was condensed from" in wrong["error"]["message"]
        )

        # Lineage, from any end: the ancestor's weights, the version's manifest, a descendant's checkpoint.
        ancestor_sha = hashlib.sha256((data_root / "ancestor.safetensors").read_bytes()).hexdigest()
        digest = http.get("/v1/template-sets/fmnist-tiny@1").json()["digest"]
        by_ancestor = http.get(f"/v1/lineage/{ancestor_sha}").json()
        assert by_ancestor["found"] == "ancestor" and by_ancestor["ancestors"] == [{"sha256": ancestor_sha}]
        [version] = by_ancestor["template_sets"]
        assert version["ref"] == "fmnist-tiny@1" and version["digest"] == digest and version["method"] == "wave"
        assert version["license"] == "other" and version["base_model"] is None  # none given, not an hf-hub: one
        assert version["data_uri"] == body["data"]["uri"]  # as the admin sent it
        children = {d["job_id"]: d for d in by_ancestor["descendants"]}
        assert {done["id"], taught["id"]} <= set(children) and wrong["id"] not in children
        assert children[done["id"]]["checkpoint_sha256"] == done["checkpoint"]["sha256"]
        assert children[done["id"]]["calibration_digest"] and children[done["id"]]["method"] == "wave"
        assert http.get(f"/v1/lineage/{digest}").json()["descendants"] == by_ancestor["descendants"]
        by_checkpoint = http.get(f"/v1/lineage/{done['checkpoint']['files']['README.md']['sha256']}").json()
        assert by_checkpoint["found"] == "checkpoint" and [d["job_id"] for d in by_checkpoint["descendants"]] == [
            done["id"]
        ]
        assert by_checkpoint["template_sets"] == [version] and by_checkpoint["ancestors"] == [{"sha256": ancestor_sha}]
        assert http.get(f"/v1/lineage/{'0' * 64}").status_code == 404
        assert http.get("/v1/lineage/not-a-digest").status_code == 422
        card = http.get(done["checkpoint"]["files"]["README.md"]["download"]).text
        front = yaml.safe_load(card.split("---\n")[1])
        assert front["license"] == "other" and "base_model" not in front  # the set's license; no hub id known


def test_operations_endpoints(celery_stack):
    with httpx.Client(base_url=celery_stack.url) as http:
        assert http.get("/healthz").json() == {"status": "ok", "checks": {}}
        assert http.get("/readyz").json()["checks"] == {"jobs": "ok", "store": "ok", "artifacts": "ok"}
        paths = http.get("/openapi.json").json()["paths"]
        for path in (
            "/v1/initializations",
            "/v1/initializations/{job_id}",
            "/v1/initializations/{job_id}/checkpoint",
            "/v1/initializations/{job_id}/files/{name}",
            "/v1/initializations/{job_id}/files.tar",
            "/v1/template-sets",
            "/v1/template-sets/{ref}",
            "/v1/admin/condensations",
            "/v1/admin/template-sets/{name}/aliases/{alias}",
            "/healthz",
            "/readyz",
            "/metrics",
        ):
            assert path in paths
        metrics = http.get("/metrics").text
        for family in (
            "learngene_jobs",
            "learngene_job_duration_seconds_bucket",
            "learngene_queue_wait_seconds_count",
            "learngene_fit_steps_per_second_count",
            "learngene_template_cache_hits_total",
            "learngene_http_requests_total",
        ):
            assert family in metrics
        assert 'learngene_jobs{kind="initialization",status="succeeded"}' in metrics


def test_cli_client_submits_waits_and_downloads(embedded_stack, tmp_path):
    from typer.testing import CliRunner

    from service.cli import app

    def cli(*args):
        result = CliRunner().invoke(app, [*args, "--url", embedded_stack.url])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.strip().splitlines()[-1])

    out = tmp_path / "cli.safetensors"
    overrides = [x for k, v in BODY["overrides"].items() for x in ("--set", f"{k}={v}")]
    job = cli(
        "submit",
        "--model",
        BODY["model"],
        *overrides,
        "--calibration",
        f"idx://{FMNIST}",
        "--max-samples",
        "128",
        "--steps",
        "5",
        "--seed",
        "7",
        "--out",
        str(out),
    )
    assert job["status"] == "succeeded" and job["downloaded_to"] == str(out)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == job["checkpoint"]["sha256"]
    assert cli("job", "status", job["id"])["status"] == "succeeded"
    last_line = cli("job", "logs", job["id"], "--json", "--follow")  # ended: --follow prints all and stops
    assert last_line["job_id"] == job["id"] and last_line["message"] == f"job {job['id']} succeeded"
    assert cli("job", "cancel", job["id"])["status"] == "succeeded"  # a finished job stays as it is
    assert cli("job", "download", job["id"], "--out", str(tmp_path / "again.safetensors"))["job"] == job["id"]
    assert (tmp_path / "again.safetensors").read_bytes() == out.read_bytes()
    folder = cli("job", "download", job["id"], "--out", str(tmp_path / "folder"))["path"]
    model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    weights, single = model.state_dict(), load_file(out)  # the very weights of the single-file download
    assert weights.keys() == single.keys() and all(torch.equal(weights[k], single[k]) for k in single)
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == sorted([*FOLDER_FILES, SIGNATURE])
    assert cli("verify", folder) == {"folder": folder, "verified": True, "files": sorted(FOLDER_FILES)}
    (tmp_path / "folder" / "config.json").write_text("{}")
    tampered = CliRunner().invoke(app, ["verify", folder, "--url", embedded_stack.url])
    assert tampered.exit_code == 2 and "does not match its signature" in tampered.output
    assert "config.json" in tampered.output and "Traceback" not in tampered.output
    with Client(embedded_stack.url) as client:  # a template-set version is signed as a checkpoint folder is
        demo = client.download_template_set("demo@prod", tmp_path / "demo")
        digest = client.http.get("/v1/template-sets/demo@prod").json()["digest"]
    assert sorted(p.name for p in demo.iterdir()) == sorted([MANIFEST, TENSORS, SIGNATURE])
    assert hashlib.sha256((demo / MANIFEST).read_bytes()).hexdigest() == digest
    assert cli("verify", str(demo))["files"] == sorted([MANIFEST, TENSORS])
    weights = bytearray((demo / TENSORS).read_bytes())
    weights[len(weights) // 2] ^= 0x01  # one bit of one template
    (demo / TENSORS).write_bytes(bytes(weights))
    tampered = CliRunner().invoke(app, ["verify", str(demo), "--url", embedded_stack.url])
    assert tampered.exit_code == 2 and f"{TENSORS}" in tampered.output and "Traceback" not in tampered.output
    released = cli("job", "release", job["id"])  # done with it: its bytes leave the quota, its downloads are gone
    assert released["status"] == "succeeded" and released["result"]["released_at"] > 0
    late = CliRunner().invoke(
        app, ["job", "download", job["id"], "--out", str(tmp_path / "late.safetensors"), "--url", embedded_stack.url]
    )
    assert late.exit_code == 2 and "released by its client" in late.output


def test_baseline_methods_through_the_api(celery_stack, ancestor, data_root, tmp_path):
    anc_spec = tiny_spec(embed_dim=64, num_heads=2, depth=2)
    path = data_root / "baseline-ancestor.safetensors"
    export_checkpoint(ancestor, path, spec=anc_spec)
    ancestor_ref = {"model": anc_spec.model, "overrides": anc_spec.overrides(), "checkpoint": str(path)}
    with httpx.Client(base_url=celery_stack.url) as http, Client(celery_stack.url) as client:
        too_wide = {**BODY, "method": "weight_selection", "ancestor": ancestor_ref,
                    "overrides": {**BODY["overrides"], "embed_dim": 128, "num_heads": 2}}  # fmt: skip
        r = http.post("/v1/initializations", json=too_wide)
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "overrides", "embed_dim"]
        for method, extra in (
            ("timm", {}),
            ("mimetic", {}),
            ("weight_selection", {"ancestor": ancestor_ref}),
            ("auto_lg", {"ancestor": ancestor_ref}),
        ):
            overrides = {**BODY["overrides"], "embed_dim": 64, "num_heads": 2, "depth": 3}
            if method == "weight_selection":
                overrides["depth"] = 2
            job = client.wait(
                client.submit({**BODY, "method": method, "overrides": overrides, **extra})["id"], timeout_s=120
            )
            assert (
                job["template_set"] is None and job["result"]["method"] == method and job["result"]["fit"]["steps"] == 0
            )
            out = client.download(job["id"], tmp_path / f"{method}.safetensors")
            meta = read_metadata(out)
            assert meta["method"] == method and meta["provenance"]["method"] == method
            model = ViTSpec(model=BODY["model"], **overrides).build()
            model.load_state_dict(load_file(out), strict=True)


def test_an_admin_condensation_on_two_processes_reports_progress_cancels_and_publishes(
    celery_stack, ancestor, data_root
):
    """`"nproc": 2`: the condense worker runs the job under torchrun; progress comes through from rank 0, a cancel
    stops every rank at the same step, and a finished run publishes one set whose lineage records the world size."""
    anc_spec = tiny_spec(embed_dim=64, num_heads=2, depth=2)
    export_checkpoint(ancestor, data_root / "ancestor-ddp.safetensors", spec=anc_spec)
    body = {
        "name": "ddp-tiny", "nproc": 2,
        "ancestor": {"model": anc_spec.model, "overrides": anc_spec.overrides(),
                     "checkpoint": str(data_root / "ancestor-ddp.safetensors")},
        "aux": {"model": anc_spec.model, "overrides": tiny_spec(depth=2).overrides()},
        "data": {"uri": f"idx://{FMNIST}", "max_samples": 2000},
        "training": {"steps": 5000, "batch_size": 32, "warmup_steps": 5, "recipe": "plain"},
    }  # fmt: skip
    with httpx.Client(base_url=celery_stack.url, headers=ADMIN) as http:
        assert http.post("/v1/admin/condensations", json={**body, "nproc": 99}).json()["errors"][0]["loc"] == [
            "body", "nproc"
        ]  # fmt: skip
        url = http.post("/v1/admin/condensations", json=body).headers["location"]
        running = wait_for(http, url, lambda j: (j.get("progress") or {}).get("step", 0) >= 20, timeout=120)
        assert running["status"] == "running" and running["progress"]["total_steps"] == 5000
        assert http.delete(url).json()["status"] == "running"
        cancelled = wait_for(http, url, finished, timeout=60)
        assert cancelled["status"] == "cancelled" and cancelled["progress"]["step"] < 5000, cancelled
        short = {**body, "training": {**body["training"], "steps": 30}}
        done = wait_for(http, http.post("/v1/admin/condensations", json=short).headers["location"], finished, 180)
        assert done["status"] == "succeeded" and done["result"]["ref"] == "ddp-tiny@1", done
        shown = http.get("/v1/template-sets/ddp-tiny@1").json()
        assert shown["manifest"]["lineage"]["condensation"]["world_size"] == 2
        assert [v["version"] for v in http.get("/v1/template-sets", params={"name": "ddp-tiny"}).json()["items"]] == [1]


def test_relative_paths_in_a_request_are_refused_with_the_field_named(server):
    """A relative path would be read from the server's working directory, which no client knows: 422, at once."""
    with httpx.Client(base_url=server.url, headers=ADMIN) as http:
        cases = {
            ("body", "calibration", "uri"): ("/v1/initializations", {**BODY, "calibration": {"uri": "idx://data/x"}}),
            ("body", "calibration", "eval_uri"): ("/v1/initializations", {
                **BODY, "calibration": {**BODY["calibration"], "eval_uri": "../shared/data/FashionMNIST"}}),
            ("body", "data", "uri"): ("/v1/admin/condensations", {
                "name": "rel", "ancestor": {"model": BODY["model"], "checkpoint": "/nope.safetensors"},
                "aux": {"model": BODY["model"]}, "data": {"uri": "imagefolder://flowers"}}),
            ("body", "ancestor", "checkpoint"): ("/v1/admin/condensations", {
                "name": "rel", "ancestor": {"model": BODY["model"], "checkpoint": "local-dir:ancestors/vit"},
                "aux": {"model": BODY["model"]}, "data": {"uri": f"idx://{FMNIST}"}}),
        }  # fmt: skip
        for loc, (path, body) in cases.items():
            answer = http.post(path, json=body)
            assert answer.status_code == 422, (loc, answer.text)
            [error] = answer.json()["errors"]
            assert (
                error["loc"] == list(loc)
                and "relative path" in error["msg"]
                and "absolute path or a URI" in error["msg"]
            )
