"""Webhooks against real processes (issue 26): a receiver on loopback verifies every delivery with the
`standardwebhooks` library while it is made to fail, to time out and to be down, and gets every event later exactly as
signed; a request's own `notify`; the delivery log and a manual redelivery; a Celery worker killed during a delivery
loses none; and the default settings refuse loopback destinations."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from jobs.memory_store import MemoryJobStore
from jobs.redis_store import RedisJobStore
from jobs.settings import Settings
from jobs.webhooks.model import Subscription
from service.api.main import create_app
from tests.support.data import SHARED_DATA
from tests.support.harness import (
    ADMIN_TOKEN,
    TEST_REDIS_URL,
    finished,
    flush_test_redis,
    kill_group,
    service_env,
    start_api,
    start_worker,
    wait_for,
)
from tests.support.receiver import Receiver
from tests.support.scale import patient

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
QUICK = {  # the sender's timings, scaled down so that retries come within seconds
    "LEARNGENE_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
    "LEARNGENE_WEBHOOK_RETRY_SCHEDULE_S": "[0.5, 1, 1, 1, 1, 1, 1, 1]",
    "LEARNGENE_WEBHOOK_TIMEOUT_S": "2",
    "LEARNGENE_WEBHOOK_LEASE_S": "4",
    "LEARNGENE_WEBHOOK_POLL_S": "0.2",
}
TINY = {  # pure inheritance of a tiny model: a job that ends in a second or two
    "model": "vit_tiny_patch16_224",
    "overrides": dict(depth=2, embed_dim=64, num_heads=1, img_size=28, patch_size=7, in_chans=1, num_classes=10),
}


def deliveries(http: httpx.Client, webhook_id: str) -> list[dict]:
    answer = http.get(f"/v1/admin/webhooks/{webhook_id}/deliveries")
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def settled(http: httpx.Client, webhook_id: str, count: int, timeout: float = 60) -> list[dict]:
    """Until `count` deliveries are delivered or failed."""
    deadline = time.monotonic() + patient(timeout)
    while time.monotonic() < deadline:
        items = deliveries(http, webhook_id)
        if len(items) >= count and all(d["status"] != "pending" for d in items):
            return items
        time.sleep(0.1)
    raise AssertionError(f"deliveries did not settle: {json.dumps(items)[:2000]}")


def move_alias(http: httpx.Client, alias: str) -> None:
    moved = http.put(f"/v1/admin/template-sets/demo/aliases/{alias}", json={"version": 1})
    assert moved.status_code == 200, moved.text


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    home = tmp_path_factory.mktemp("webhooks")
    api = start_api(service_env(home, redis_url=None, data_roots=[SHARED_DATA], **QUICK), home / "api.log")
    yield api
    api.stop()


def test_a_failing_slow_or_absent_receiver_gets_every_event_later_exactly_as_signed(embedded):
    receiver = Receiver().start()
    with httpx.Client(base_url=embedded.url, headers=ADMIN, timeout=30) as http:
        made = http.post("/v1/admin/webhooks", json={"url": receiver.url, "events": ["alias.moved"]})
        assert made.status_code == 201, made.text
        hook = made.json()
        assert hook["secret"].startswith("whsec_") and made.headers["location"].endswith(hook["id"])
        shown = http.get(f"/v1/admin/webhooks/{hook['id']}").json()
        assert shown["secret"] is None and shown["url"] == receiver.url  # the secret is shown once
        receiver.secrets["hook"] = hook["secret"]

        receiver.mode = "fail"  # 500 twice, then well
        move_alias(http, "fails")
        receiver.wait_for(lambda seen: len(seen) >= 2)
        receiver.mode = "ok"
        [failing] = settled(http, hook["id"], 1)
        codes = [a["status_code"] for a in failing["attempts"]]
        assert failing["status"] == "delivered" and codes[-1] == 200 and set(codes[:-1]) == {500} and len(codes) >= 3
        assert failing["payload"]["data"] == {"name": "demo", "alias": "fails", "version": 1, "previous": None,
                                              "job_id": None}  # fmt: skip

        receiver.mode, receiver.slow_s = "slow", 3  # past the sender's 2 s timeout
        move_alias(http, "slow")
        receiver.wait_for(lambda seen: len([r for r in seen if r.event["data"]["alias"] == "slow"]) >= 1)
        receiver.mode = "ok"
        slow = settled(http, hook["id"], 2)[0]
        assert slow["status"] == "delivered" and "no answer within 2 s" in slow["attempts"][0]["error"]

        receiver.stop()  # down: refused connections until it is back on the same port
        move_alias(http, "down")
        deadline = time.monotonic() + patient(30)
        while len((down := deliveries(http, hook["id"])[0])["attempts"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert down["status"] == "pending" and all(a["status_code"] is None for a in down["attempts"])
        receiver.start()
        down = settled(http, hook["id"], 3)[0]
        assert down["status"] == "delivered" and down["attempts"][-1]["status_code"] == 200

        for item in deliveries(http, hook["id"]):  # each retry under one webhook-id, every one verified
            got = [r for r in receiver.received if r.webhook_id == item["id"]]
            assert got and all(r.verified == {"hook": True} for r in got)
            assert all(r.event == item["payload"] for r in got)

        again = http.post(f"/v1/admin/webhooks/{hook['id']}/deliveries/{down['id']}/redeliver")
        assert again.status_code == 202 and again.json()["status"] == "pending"
        before = len([r for r in receiver.received if r.webhook_id == down["id"]])
        receiver.wait_for(lambda seen: len([r for r in seen if r.webhook_id == down["id"]]) > before)
        assert http.post(f"/v1/admin/webhooks/{hook['id']}/deliveries/msg_nope/redeliver").status_code == 404

        assert http.delete(f"/v1/admin/webhooks/{hook['id']}").status_code == 204
        assert http.get(f"/v1/admin/webhooks/{hook['id']}").status_code == 404
        assert hook["id"] not in [w["id"] for w in http.get("/v1/admin/webhooks").json()["items"]]
    receiver.stop()


def test_a_request_s_own_notify_hears_its_job_end_with_its_own_secret(embedded):
    receiver = Receiver().start()
    with httpx.Client(base_url=embedded.url, headers=ADMIN, timeout=30) as http:
        every = http.post("/v1/admin/webhooks", json={"url": receiver.url, "events": ["job.succeeded"]}).json()
        accepted = http.post("/v1/initializations", json={**TINY, "notify": {"url": receiver.url}})
        assert accepted.status_code == 202, accepted.text
        notify = accepted.json()["notify"]
        assert notify["secret"].startswith("whsec_") and notify["url"] == receiver.url
        assert notify["events"] == ["job.succeeded", "job.failed", "job.cancelled", "template_set.published",
                                    "alias.moved", "card.ready"]  # fmt: skip
        job_id = accepted.json()["id"]
        assert http.get(f"/v1/initializations/{job_id}").json()["notify"] is None  # the secret was shown once
        receiver.secrets.update(own=notify["secret"], every=every["secret"])
        job = wait_for(http, f"/v1/initializations/{job_id}", finished)
        assert job["status"] == "succeeded", job["error"]
        seen = receiver.wait_for(lambda s: len([r for r in s if r.event["data"].get("id") == job_id]) >= 2)
        ours = [r for r in seen if r.event["data"].get("id") == job_id]
        assert sorted(v for r in ours for v, ok in r.verified.items() if ok) == ["every", "own"]  # each its own
        assert len({r.webhook_id for r in ours}) == 1  # one event, one webhook-id
        data = ours[0].event["data"]
        assert ours[0].event["type"] == "job.succeeded" and data["kind"] == "initialization"
        assert data["checkpoint"]["sha256"] == job["checkpoint"]["sha256"] and data["error"] is None
        assert http.get(f"/v1/admin/webhooks/{notify['subscription']}").status_code == 404  # not the admin's
        http.delete(f"/v1/admin/webhooks/{every['id']}")
    receiver.stop()


def test_by_default_loopback_private_and_metadata_destinations_are_refused_naming_the_field(tmp_path):
    settings = Settings(store=str(tmp_path / "store"), artifacts=str(tmp_path / "a"), admin_token=ADMIN_TOKEN,
                        signing_key=tmp_path / "key.pem", work_dir=tmp_path / "w")  # fmt: skip
    with TestClient(create_app(settings), headers=ADMIN) as http:
        for url in ("http://127.0.0.1:9/hook", "http://169.254.169.254/", "http://10.0.0.1/", "http://localhost/"):
            refused = http.post("/v1/admin/webhooks", json={"url": url, "events": ["job.failed"]})
            assert refused.status_code == 422, refused.text
            assert (
                refused.json()["errors"][0]["loc"] == ["body", "url"]
                and "LEARNGENE_WEBHOOK_ALLOWED_HOSTS" in refused.text
            )
            refused = http.post("/v1/initializations", json={**TINY, "notify": {"url": url}})
            assert refused.status_code == 422 and refused.json()["errors"][0]["loc"] == ["body", "notify", "url"]
        bad = http.post("/v1/admin/webhooks", json={"url": "http://93.184.216.34/", "events": ["job.exploded"]})
        assert bad.status_code == 422 and "events" in bad.text
        assert http.get("/v1/admin/webhooks").json() == {"items": []}
        assert http.post("/v1/admin/webhooks", headers={"Authorization": "Bearer no"}, json={}).status_code == 403


@pytest.fixture(params=["memory", "redis"])
def webhooks(request):
    if request.param == "memory":
        yield MemoryJobStore(webhooks_kept=10).webhooks
        return
    flush_test_redis()
    yield RedisJobStore.from_url(TEST_REDIS_URL, prefix="whtest", webhooks_kept=10).webhooks
    flush_test_redis()


def test_both_stores_lease_what_they_hand_out_and_keep_the_newest(webhooks):
    webhooks.subscribe(Subscription(id="wh_a", url="http://x", events=["card.ready"], secret="s", created_at=1))
    webhooks.subscribe(Subscription(id="wh_j", url="http://x", events=["card.ready"], secret="s", created_at=2,
                                    job_id="j"), ttl_s=60)  # fmt: skip
    assert [s.id for s in webhooks.subscriptions()] == ["wh_a"] and webhooks.job_subscription("j").id == "wh_j"
    made = webhooks.emit("card.ready", {"n": 0}, job_id="j")
    now = made[0].created_at
    first = webhooks.claim(now, 30, 1)
    assert len(first) == 1 and len(webhooks.claim(now, 30, 10)) == 1 and webhooks.claim(now, 30, 10) == []
    assert len(webhooks.claim(now + 31, 30, 10)) == 2
    for n in range(1, 12):
        webhooks.emit("card.ready", {"n": n})
    kept = webhooks.deliveries("wh_a")
    assert len(kept) == 10 and [json.loads(d.payload)["data"]["n"] for d in kept] == list(range(11, 1, -1))
    assert webhooks.delivery("wh_j", made[0].id).id == made[0].id and webhooks.delivery("wh_j", "msg_x") is None
    assert webhooks.unsubscribe("wh_a") and webhooks.subscriptions() == [] and not webhooks.unsubscribe("wh_j")


def test_a_worker_killed_during_a_delivery_loses_none(tmp_path):
    """The Celery worker's main process sends; it is killed while the receiver holds the request, and the next
    worker sends the same delivery (the same webhook-id) once the lease runs out."""
    flush_test_redis()
    receiver = Receiver(mode="hold").start()
    held = {**QUICK, "LEARNGENE_WEBHOOK_TIMEOUT_S": "10", "LEARNGENE_WEBHOOK_LEASE_S": "12"}  # killed well within
    env = service_env(tmp_path, redis_url=TEST_REDIS_URL, data_roots=[SHARED_DATA], **held)
    api = start_api(env, tmp_path / "api.log")
    worker = start_worker(env, tmp_path / "worker-1.log", name="first")
    try:
        with httpx.Client(base_url=api.url, headers=ADMIN, timeout=30) as http:
            hook = http.post("/v1/admin/webhooks", json={"url": receiver.url, "events": ["alias.moved"]}).json()
            receiver.secrets["hook"] = hook["secret"]
            move_alias(http, "killed")
            receiver.wait_holding()
            kill_group(worker)  # mid-delivery: the receiver has the request and has not answered
            receiver.release()
            receiver.mode = "ok"
            worker = start_worker(env, tmp_path / "worker-2.log", name="second")
            [delivered] = settled(http, hook["id"], 1, timeout=120)
            assert delivered["status"] == "delivered"
            got = receiver.wait_for(lambda seen: any(r.answered == 200 and r.verified["hook"] for r in seen))
            assert {r.webhook_id for r in got} == {delivered["id"]} and len(got) == 2  # the held one, and again
            assert len(delivered["attempts"]) == 1  # the killed sender recorded nothing: its lease ran out
    finally:
        receiver.stop()
        worker.stop()
        api.stop()
        flush_test_redis()
