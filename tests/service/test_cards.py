"""Quality cards over the service: measured when a condensation publishes a set, served as JSON, PNG, a model card
(README.md) and a CLI table, refreshed by an admin job as a new revision (tests/unit/test_cards.py: measuring in
this process; tests.support.store_contract: storage on both backends)."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import httpx
import pytest
import torch
import yaml

from learngene import export_checkpoint
from templates_store import TemplateStore
from tests.support.data import FMNIST, REPO, SHARED_DATA
from tests.support.harness import ADMIN_TOKEN, finished, service_env, start_api, wait_for
from tests.support.models import random_template_set, tiny_spec
from tests.support.receiver import Receiver
from tests.support.scale import PROCESS_TIMEOUT_S

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def card_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("card-home")
    data_root = tmp_path_factory.mktemp("card-data")
    env = service_env(
        home,
        redis_url=None,
        data_roots=[SHARED_DATA, data_root],
        LEARNGENE_EMBEDDED_WORKERS="1",
        LEARNGENE_CARD_FIT_STEPS="5",
        LEARNGENE_CARD_TRAIN_SAMPLES="256",
        LEARNGENE_CARD_EVAL_SAMPLES="200",
        LEARNGENE_WEBHOOK_ALLOWED_HOSTS='["127.0.0.1"]',  # the losing condensation's receiver
        LEARNGENE_WEBHOOK_POLL_S="0.2",
    )
    api = start_api(env, home / "api.log")
    yield api, home, data_root
    api.stop()


def test_a_condensation_publishes_its_card_served_as_json_png_readme_and_cli_table(card_server, ancestor, tmp_path):
    api, home, data_root = card_server
    anc_spec = tiny_spec(embed_dim=64, num_heads=2, depth=2)
    export_checkpoint(ancestor, data_root / "ancestor.safetensors", spec=anc_spec)
    body = {
        "name": "carded-tiny",
        "ancestor": {"model": anc_spec.model, "overrides": anc_spec.overrides(),
                     "checkpoint": str(data_root / "ancestor.safetensors")},
        "aux": {"model": anc_spec.model, "overrides": tiny_spec(depth=2).overrides()},
        "data": {"uri": f"idx://{FMNIST}", "max_samples": 2000},
        "eval_data": f"idx://{FMNIST}?split=test",
        "training": {"steps": 30, "batch_size": 32, "warmup_steps": 5, "recipe": "plain"},
    }  # fmt: skip
    with httpx.Client(base_url=api.url, timeout=30) as http:
        job = http.post("/v1/admin/condensations", json=body, headers=ADMIN)
        assert job.status_code == 202, job.text
        done = wait_for(http, job.headers["location"], finished, timeout=300, headers=ADMIN)
        assert done["status"] == "succeeded", done
        assert done["result"]["ref"] == "carded-tiny@1" and done["result"]["card"]["revision"] == 1, done["result"]

        card = http.get("/v1/template-sets/carded-tiny@1/card").json()
        assert card["template_set"] == "carded-tiny@1" and card["digest"] == done["result"]["template_set"]["digest"]
        assert card["domain"]["img_size"] == [28, 28] and card["domain"]["in_chans"] == 1
        assert card["domain"]["num_classes"] == 10 and card["domain"]["eval_data_uri"].endswith("?split=test")
        assert {(r["depth"], r["embed_dim"], r["num_heads"]) for r in card["rows"]} == {
            (d, w, w // 32) for d in (1, 2, 4) for w in (32, 64)
        }  # the ladder around the auxiliary model (depth 2, width 32, 1 head): heads keep the head dimension
        for row in card["rows"]:
            for key in ("accuracy", "baseline_accuracy"):
                assert math.isfinite(row[key]) and 0 <= row[key] <= 1, row
            assert row["fit_steps"] == 5 and row["params"] > 0 and row["seconds"] >= 0
        assert card["eval_samples"] == 200 and card["train_samples"] == 256

        png = http.get("/v1/template-sets/carded-tiny@1/card.png")
        assert png.headers["content-type"] == "image/png" and png.content.startswith(PNG_MAGIC)
        assert 10_000 < len(png.content) < 1_000_000
        cached = http.get("/v1/template-sets/carded-tiny@1/card.png", headers={"If-None-Match": png.headers["etag"]})
        assert cached.status_code == 304 and cached.content == b"" and cached.headers["etag"] == png.headers["etag"]
        assert http.get("/v1/template-sets/carded-tiny@1/card.png").content == png.content  # the same plot

        readme = http.get("/v1/template-sets/carded-tiny@1/README.md")
        assert readme.headers["content-type"].startswith("text/markdown")
        _, front, body_md = readme.text.split("---\n", 2)
        meta = yaml.safe_load(front)
        assert meta["library_name"] == "timm" and meta["base_model"] == anc_spec.model
        [index] = meta["model-index"]
        accuracies = [r["metrics"][0]["value"] for r in index["results"]]
        assert index["name"] == "carded-tiny@1" and accuracies == [round(r["accuracy"], 4) for r in card["rows"]]
        assert "| depth | width |" in body_md

        [listed] = http.get("/v1/template-sets", params={"name": "carded-tiny"}).json()["items"]
        assert listed["domain"] == card["domain"]
        assert listed["card"]["best_accuracy"] == max(r["accuracy"] for r in card["rows"])
        assert listed["card"]["worst_accuracy"] == min(r["accuracy"] for r in card["rows"])

        # An admin refresh: a job on the condense queue, a new revision; the first card's bytes stay as they were.
        store = TemplateStore.local(home / "store")
        [(first, first_sha)] = store.card_revisions("carded-tiny@1")
        first_bytes = store.backend.read_card("carded-tiny", 1, first, first_sha)
        assert http.post("/v1/admin/template-sets/carded-tiny@1/card").status_code == 401
        assert http.post("/v1/admin/template-sets/no-such@1/card", headers=ADMIN).status_code == 404
        assert http.post("/v1/admin/template-sets/BAD@@/card", headers=ADMIN).json()["errors"][0]["loc"] == [
            "path", "ref"
        ]  # fmt: skip
        refresh = http.post("/v1/admin/template-sets/carded-tiny@1/card", headers=ADMIN)
        assert refresh.status_code == 202 and refresh.json()["kind"] == "card", refresh.text
        refreshed = wait_for(http, refresh.headers["location"], finished, timeout=300, headers=ADMIN)
        assert refreshed["status"] == "succeeded" and refreshed["result"]["card"]["revision"] == 2, refreshed
        assert refreshed["progress"]["step"] == refreshed["progress"]["total_steps"] == 2 * 6 * 5
        assert [r for r, _ in store.card_revisions("carded-tiny@1")] == [1, 2]
        assert store.backend.read_card("carded-tiny", 1, first, first_sha) == first_bytes
        assert http.get("/v1/template-sets", params={"name": "carded-tiny"}).json()["items"][0]["card"]["revision"] == 2

        uncarded = store.publish(random_template_set(tiny_spec(depth=2)), "uncarded")
        missing = http.get(f"/v1/template-sets/{uncarded}/card")
        assert missing.status_code == 404 and "no quality card yet" in missing.json()["detail"]
        assert http.get(f"/v1/template-sets/{uncarded}/card.png").status_code == 404
        failing = http.post(f"/v1/admin/template-sets/{uncarded}/card", headers=ADMIN).headers["location"]
        failed = wait_for(http, failing, finished, timeout=120, headers=ADMIN)  # a set that records no data
        assert failed["status"] == "failed" and "records no data" in failed["error"]["message"], failed
        assert store.card(uncarded) is None

    env = {**api.env, "PYTHONPATH": str(REPO)}
    cli = [sys.executable, "-m", "service.cli", "templates", "card", "carded-tiny@1"]
    table = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
    assert table.returncode == 0, table.stderr
    assert "WAVE acc" in table.stdout and "timm init acc" in table.stdout and "28x28x1" in table.stdout
    as_json = subprocess.run(
        [*cli, "--json", "--out", str(tmp_path / "card")],
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
    )
    assert as_json.returncode == 0, as_json.stderr
    shown = json.loads(as_json.stdout.strip().splitlines()[-1])
    assert shown["rows"] == http_rows_of(api, 2)
    assert (tmp_path / "card" / "card.png").read_bytes().startswith(PNG_MAGIC)
    assert yaml.safe_load((tmp_path / "card" / "README.md").read_text().split("---\n")[1])["library_name"] == "timm"
    nothing = subprocess.run(
        [*cli[:-1], "uncarded@1"], env=env, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S
    )
    assert nothing.returncode == 2 and "no quality card yet" in nothing.stderr


def http_rows_of(api, revision: int) -> list[dict]:
    card = httpx.get(f"{api.url}/v1/template-sets/carded-tiny@1/card").json()
    listed = httpx.get(f"{api.url}/v1/template-sets", params={"name": "carded-tiny"}).json()["items"][0]
    assert listed["card"]["revision"] == revision
    return card["rows"]


def test_a_condensation_whose_card_loses_to_timm_s_init_is_published_but_not_promoted(card_server, ancestor):
    """promote_if='card' (the default): an ancestor whose head is turned against its classes (x -10) gives a set
    that starts from it (the auxiliary width is the ancestor's) and predicts the wrong class at every card size, so
    timm's init, trained as long, wins every row: the version is published, `prod` stays where it was (nowhere)."""
    api, _, data_root = card_server
    anc_spec = tiny_spec(embed_dim=64, num_heads=2, depth=2)
    inverted = copy.deepcopy(ancestor)
    with torch.no_grad():
        inverted.head.weight.mul_(-10)
        inverted.head.bias.mul_(-10)
    export_checkpoint(inverted, data_root / "inverted.safetensors", spec=anc_spec)
    body = {
        "name": "losing-tiny",
        "ancestor": {"model": anc_spec.model, "overrides": anc_spec.overrides(),
                     "checkpoint": str(data_root / "inverted.safetensors")},
        "aux": {"model": anc_spec.model, "overrides": anc_spec.overrides()},
        "data": {"uri": f"idx://{FMNIST}", "max_samples": 512},
        "training": {"steps": 2, "batch_size": 32, "warmup_steps": 0, "lr": 1e-6, "recipe": "plain"},
        "promote": "prod",
    }  # fmt: skip
    receiver = Receiver().start()
    with httpx.Client(base_url=api.url, timeout=30) as http:
        job = http.post("/v1/admin/condensations", json={**body, "notify": {"url": receiver.url}}, headers=ADMIN)
        assert job.status_code == 202, job.text
        assert job.json()["request"]["promote_if"] == "card"  # the default, recorded
        done = wait_for(http, job.headers["location"], finished, timeout=300, headers=ADMIN)
        assert done["status"] == "succeeded", done
        result = done["result"]
        card = http.get("/v1/template-sets/losing-tiny@1/card").json()
        losing = [r for r in card["rows"] if r["accuracy"] < r["baseline_accuracy"]]
        assert losing and [(r["depth"], r["embed_dim"]) for r in result["card"]["below_baseline"]] == [
            (r["depth"], r["embed_dim"]) for r in losing
        ]
        assert result["promotion"]["alias"] == "prod" and result["promotion"]["moved"] is False
        [warning] = result["warnings"]
        assert warning["code"] == "promotion_withheld"
        assert f"below timm's init on {len(losing)} of 6 card rows" in warning["message"]
        [listed] = http.get("/v1/template-sets", params={"name": "losing-tiny"}).json()["items"]
        assert listed["version"] == 1 and listed["aliases"] == []
        assert http.get("/v1/template-sets/losing-tiny@prod").status_code == 404
    seen = receiver.wait_for(lambda got: any(r.event["type"] == "job.succeeded" for r in got))
    receiver.stop()
    events = [r.event["type"] for r in sorted(seen, key=lambda r: r.event["timestamp"])]  # sent concurrently
    assert events == ["template_set.published", "card.ready", "job.succeeded"]  # and no alias.moved
