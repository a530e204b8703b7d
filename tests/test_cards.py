"""Quality cards: measured when a condensation publishes a set, stored immutably with the version on both backends,
served as JSON, PNG, a model card (README.md) and a CLI table, refreshed by an admin job as a new revision."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import httpx
import pytest
import yaml

from learngene import IntegrityError, export_checkpoint
from learngene.card import CardConfig, CardDomain, CardRow, QualityCard, compute_card, default_depths, load_card_data
from learngene.fit_settings import FitSettings
from templates_store import NotFoundError, TemplateStore
from templates_store.s3 import S3Backend
from tests.conftest import FMNIST, REPO, SHARED_DATA, random_template_set, tiny_spec
from tests.harness import ADMIN_TOKEN, finished, service_env, start_api, wait_for
from tests.test_store_contract import flip, location, open_store, store  # noqa: F401 - the two-backend fixtures

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def hand_card(ref, accuracy: float = 0.5) -> QualityCard:
    """A card with made-up numbers, for the storage tests (measuring is tested over the service below)."""
    rows = [CardRow(depth=d, embed_dim=w, num_heads=w // 32, params=1000 * d * w, accuracy=accuracy + d / 100,
                    baseline_accuracy=0.3, fit_steps=5, seconds=0.1) for w in (32, 64) for d in (1, 2, 4)]  # fmt: skip
    domain = CardDomain(img_size=(28, 28), in_chans=1, patch_size=(7, 7), num_classes=10, mean=(0.5,), std=(0.25,))
    return QualityCard(template_set=str(ref), digest=ref.digest, domain=domain, rows=rows, fit=FitSettings(steps=5),
                       train_samples=64, eval_samples=64, held_out="a test")  # fmt: skip


def test_default_ladder_has_three_depths_and_two_widths():
    assert default_depths(6) == (3, 6, 12) and default_depths(2) == (1, 2, 4) and default_depths(1) == (1, 2, 3)


def test_a_card_is_deterministic_and_measured_on_images_it_did_not_fit_on():
    template_set = random_template_set(tiny_spec(depth=2))
    template_set.lineage.data_uri = f"idx://{FMNIST}"  # no evaluation data: a held-out sample of the data itself
    config = CardConfig(depths=(1, 2, 3), fit=FitSettings(steps=3, batch_size=16), train_samples=96, eval_samples=64)
    data = load_card_data(template_set, config)
    assert (len(data.train), len(data.held_out)) == (96, 64) and "disjoint" in data.description
    seen = {bytes(image.numpy()) for image in data.train.images}
    assert not any(bytes(image.numpy()) in seen for image in data.held_out.images)
    steps = []
    first, again = (compute_card(template_set, data, digest="a" * 64, config=config, progress=steps.append)
                    for _ in range(2))  # fmt: skip
    strip = lambda card: [r.model_dump(exclude={"seconds"}) for r in card.rows]  # noqa: E731
    assert strip(first) == strip(again) and len(first.rows) == 6
    assert steps[-1].step == steps[-1].total_steps == 2 * 6 * 3
    assert first.row_for(3, 64).num_heads == 2 and first.row_for(3, 48) is None
    assert first.depth_range == (1, 3) and first.width_range == (32, 64)


def test_cards_are_immutable_checksummed_revisions_on_both_backends(store):  # noqa: F811 - the fixture
    ref = store.publish(random_template_set(tiny_spec(depth=2)), "carded")
    assert store.card(ref) is None and store.list("carded")[0].card is None
    assert store.list("carded")[0].domain.img_size == (28, 28)

    assert store.put_card(ref, hand_card(ref, 0.5)) == 1
    [(revision, sha256)] = store.card_revisions(ref)
    first = store.backend.read_card("carded", 1, revision, sha256)
    assert store.card(ref).best.accuracy == pytest.approx(0.54)

    assert store.put_card(ref, hand_card(ref, 0.6)) == 2  # a refresh adds a revision; the newest is served
    assert store.card("carded@1").worst.accuracy == pytest.approx(0.61)
    assert store.backend.read_card("carded", 1, revision, sha256) == first  # the first card's bytes, unchanged
    assert store.read_card(ref, 1).best.accuracy == pytest.approx(0.54)
    [info] = store.list("carded")
    assert (info.card.revision, info.card.best_accuracy, info.card.worst_accuracy) == (2, 0.64, 0.61)

    other = ref.model_copy(update={"digest": "0" * 64})
    with pytest.raises(ValueError, match="not of carded@1"):
        store.put_card(ref, hand_card(other))

    store.backend.orphan_grace_s = 0  # S3: nothing is young enough to be spared
    store.gc()
    assert store.card(ref).worst.accuracy == pytest.approx(0.61)  # gc keeps the cards of live versions

    latest, latest_sha = store.card_revisions(ref)[-1]
    key = f"carded/versions/1/cards/card-{latest:06d}-{latest_sha}.json"
    if isinstance(store.backend, S3Backend):
        store.backend.bucket.put(key, flip(store.backend.bucket.get(key)[0]))
    else:
        path = store.backend.root / "carded" / "1" / "cards" / key.rpartition("/")[2]
        path.write_bytes(flip(path.read_bytes()))
    with pytest.raises(IntegrityError, match="sha256 does not match"):
        store.card(ref)
    assert store.list("carded")[0].card is None  # a damaged card is not shown, the version still is

    store.delete("carded@1")  # its cards go with it
    with pytest.raises(NotFoundError):
        store.card_revisions("carded@1")
    second = store.publish(random_template_set(tiny_spec(depth=2)), "carded")
    assert second.version == 2 and store.card(second) is None and store.backend.cards("carded", 1) == []


def test_the_bundled_demo_set_ships_its_card(tmp_path):
    fresh = TemplateStore.local(tmp_path / "fresh")
    card = fresh.card("demo@prod")
    assert card is not None and card.template_set == "demo@1" and card.digest == fresh.resolve("demo@prod").digest
    assert len({r.depth for r in card.rows}) >= 3 and len({r.embed_dim for r in card.rows}) >= 2
    assert fresh.card_revisions("demo@1")[0][0] == 1  # stored, checksummed, as any card
    assert fresh.list("demo")[0].card.best_accuracy == card.best.accuracy


@pytest.fixture(scope="module")
def card_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("card-home")
    data_root = tmp_path_factory.mktemp("card-data")
    env = service_env(home, redis_url=None, data_roots=[SHARED_DATA, data_root], LEARNGENE_EMBEDDED_WORKERS="1",
                      LEARNGENE_CARD_FIT_STEPS="5", LEARNGENE_CARD_TRAIN_SAMPLES="256",
                      LEARNGENE_CARD_EVAL_SAMPLES="200")  # fmt: skip
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
    table = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    assert "WAVE acc" in table.stdout and "timm init acc" in table.stdout and "28x28x1" in table.stdout
    as_json = subprocess.run([*cli, "--json", "--out", str(tmp_path / "card")], env=env, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    shown = json.loads(as_json.stdout.strip().splitlines()[-1])
    assert shown["rows"] == http_rows_of(api, 2)
    assert (tmp_path / "card" / "card.png").read_bytes().startswith(PNG_MAGIC)
    assert yaml.safe_load((tmp_path / "card" / "README.md").read_text().split("---\n")[1])["library_name"] == "timm"
    nothing = subprocess.run([*cli[:-1], "uncarded@1"], env=env, capture_output=True, text=True, timeout=120)
    assert nothing.returncode == 2 and "no quality card yet" in nothing.stderr


def http_rows_of(api, revision: int) -> list[dict]:
    card = httpx.get(f"{api.url}/v1/template-sets/carded-tiny@1/card").json()
    listed = httpx.get(f"{api.url}/v1/template-sets", params={"name": "carded-tiny"}).json()["items"][0]
    assert listed["card"]["revision"] == revision
    return card["rows"]
