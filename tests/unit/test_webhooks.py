"""Webhooks without a network (issue 26): the retry rule, the destination check that keeps the service from being a
request forger, the signatures a Standard Webhooks receiver verifies, and the outbox kept in memory."""

from __future__ import annotations

import json
import time

import pytest
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from jobs.settings import Settings
from jobs.webhooks.destinations import DestinationRefused, resolve
from jobs.webhooks.model import Attempt, Delivery, Subscription, after_attempt, new_secret, rescheduled
from jobs.webhooks.store import MemoryWebhookStore
from workers.webhooks import signed_headers

SCHEDULE = [5.0, 300.0, 1800.0]


def delivery(**fields) -> Delivery:
    base = dict(id="msg_1", subscription="wh_1", type="job.failed", payload="{}", created_at=100.0,
                next_attempt_at=100.0)  # fmt: skip
    return Delivery(**{**base, **fields})


def failed_at(at: float, code: int | None = 500) -> Attempt:
    return Attempt(at=at, status_code=code, error="answered 500" if code else "no answer", duration_s=0.1)


def test_a_2xx_delivers_and_every_failure_waits_its_turn_in_the_schedule_then_fails():
    d = after_attempt(delivery(), Attempt(at=100, status_code=204, duration_s=0.1), SCHEDULE, 0.2, 0.5)
    assert d.status == "delivered" and d.next_attempt_at is None and len(d.attempts) == 1
    d, at = delivery(), 100.0
    for delay in SCHEDULE:
        d = after_attempt(d, failed_at(at), SCHEDULE, 0.0, 0.5)
        assert d.status == "pending" and d.next_attempt_at == pytest.approx(at + delay)
        at = d.next_attempt_at
    d = after_attempt(d, failed_at(at, None), SCHEDULE, 0.0, 0.5)
    assert d.status == "failed" and d.next_attempt_at is None and len(d.attempts) == 4 and d.failures == 4
    again = rescheduled(d, 5000.0)
    assert again.status == "pending" and again.failures == 0 and again.next_attempt_at == 5000.0
    assert len(again.attempts) == 4 and again.id == d.id and again.payload == d.payload


def test_jitter_spreads_a_retry_by_the_fraction_either_way():
    low = after_attempt(delivery(), failed_at(0), [100.0], 0.2, 0.0).next_attempt_at
    high = after_attempt(delivery(), failed_at(0), [100.0], 0.2, 0.999999).next_attempt_at
    assert low == pytest.approx(80.0) and high == pytest.approx(120.0, abs=1e-3)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",  # a name that resolves to loopback
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://172.16.5.4/",
        "http://169.254.169.254/latest/meta-data/",  # the cloud metadata address (link-local)
        "http://100.64.0.1/",  # shared address space
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://[fd00::1]/",
        "http://224.0.0.1/",
        "http://[::ffff:127.0.0.1]/",  # loopback written as IPv6
    ],
)
def test_loopback_private_link_local_and_reserved_destinations_are_refused_by_default(url):
    with pytest.raises(DestinationRefused, match="refused unless LEARNGENE_WEBHOOK_ALLOWED_HOSTS lists it"):
        resolve(url, [])


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("ftp://93.184.216.34/", "http:// or https://"),
        ("http://user:pw@93.184.216.34/", "credentials"),
        ("http:///nohost", "has no host"),
        ("http://93.184.216.34:99999/", "not a URL"),
        ("http://no-such-host.invalid/", "does not resolve"),
        ("https://example.com/" + "a" * 2100, "longer than"),
    ],
)
def test_malformed_destinations_are_refused_saying_why(url, needle):
    with pytest.raises(DestinationRefused, match=needle):
        resolve(url, [])


def test_an_allow_list_admits_networks_and_names_and_the_attempt_connects_to_the_checked_address():
    target = resolve("http://127.0.0.1:8080/hook?x=1", ["127.0.0.0/8"])
    assert (target.url, target.host, target.server_name) == ("http://127.0.0.1:8080/hook?x=1", "127.0.0.1:8080",
                                                               "127.0.0.1")  # fmt: skip
    named = resolve("http://localhost:9/h", ["LOCALHOST"])  # a name on the list is trusted whatever it resolves to
    assert named.host == "localhost:9" and named.server_name == "localhost" and "localhost" not in named.url
    assert resolve("https://[::1]/", ["::1"]).url == "https://[::1]:443/"
    assert resolve("https://93.184.216.34/p", []).url == "https://93.184.216.34:443/p"  # a public address
    with pytest.raises(DestinationRefused):
        resolve("http://127.0.0.2/", ["127.0.0.1"])


def test_the_settings_refuse_a_bad_allow_list_and_a_lease_shorter_than_the_timeout():
    assert Settings(webhook_allowed_hosts=["10.0.0.0/8", "hooks.internal"]).webhook_allowed_hosts[1] == "hooks.internal"
    with pytest.raises(ValidationError, match="neither a host name nor a CIDR"):
        Settings(webhook_allowed_hosts=["10.0.0.0/99"])
    with pytest.raises(ValidationError, match="webhook_lease_s must be longer"):
        Settings(webhook_timeout_s=30, webhook_lease_s=30)
    with pytest.raises(ValidationError, match="between 0 and 604800"):
        Settings(webhook_retry_schedule_s=[5, -1])


def test_each_attempt_is_signed_so_that_a_standard_webhooks_receiver_verifies_it():
    secret = new_secret()
    sub = Subscription(id="wh_1", url="http://x", events=["job.failed"], secret=secret, created_at=0)
    d = delivery(payload=json.dumps({"type": "job.failed", "data": {"id": "j"}}))
    headers = signed_headers(sub, d, time.time())
    assert headers["webhook-id"] == "msg_1" and headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(d.payload, headers)["data"] == {"id": "j"}
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(d.payload, headers)  # another secret
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(d.payload.replace('"j"', '"k"'), headers)  # another byte


def test_an_event_is_one_delivery_per_subscriber_sharing_its_webhook_id_and_a_claim_leases_it():
    store = MemoryWebhookStore(kept=10)
    every = Subscription(id="wh_all", url="http://x", events=["job.failed", "job.succeeded"], secret="s", created_at=1)
    other = Subscription(id="wh_other", url="http://x", events=["card.ready"], secret="s", created_at=2)
    own = Subscription(id="wh_own", url="http://x", events=["job.failed"], secret="s", created_at=3, job_id="j1")
    for s in (every, other, own):
        store.subscribe(s)
    assert [s.id for s in store.subscriptions()] == ["wh_all", "wh_other"]  # a request's own is not listed
    made = store.emit("job.failed", {"id": "j1"}, job_id="j1")
    assert sorted(d.subscription for d in made) == ["wh_all", "wh_own"] and len({d.id for d in made}) == 1
    assert made[0].payload == made[1].payload and json.loads(made[0].payload)["data"] == {"id": "j1"}
    assert store.emit("job.failed", {"id": "j2"}, job_id="j2")[0].subscription == "wh_all"  # not j1's own
    assert store.emit("alias.moved", {}) == []
    now = made[0].created_at + 1
    claimed = store.claim(now, lease_s=30, limit=10)
    assert len(claimed) == 3 and store.claim(now + 29, 30, 10) == []  # leased
    assert len(store.claim(now + 31, 30, 10)) == 3  # the lease ran out: due again (its sender died)
    store.save(claimed[0].model_copy(update={"status": "delivered", "next_attempt_at": None}))
    assert len(store.claim(now + 100, 30, 10)) == 2
    assert store.redeliver(claimed[0].subscription, claimed[0].id).status == "pending"
    assert store.unsubscribe("wh_other") and not store.unsubscribe("wh_own") and not store.unsubscribe("nope")


def test_a_subscription_keeps_its_newest_deliveries():
    store = MemoryWebhookStore(kept=10)
    store.subscribe(Subscription(id="wh", url="http://x", events=["alias.moved"], secret="s", created_at=0))
    ids = [store.emit("alias.moved", {"n": n})[0].id for n in range(15)]
    assert [d.id for d in store.deliveries("wh")] == ids[::-1][:10]
