"""No bad input gets through: a property-based fuzzer over the OpenAPI schema, a catalogue of hostile inputs,
admission control and per-client quotas, and secrets that never reach logs or job records."""

from __future__ import annotations

import base64
import hmac
import json
import os
import pickle
import re
import socket

import httpx
import numpy as np
import pytest
import redis
import schemathesis
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from schemathesis import GenerationMode

from learngene import export_checkpoint
from tests.support.data import FMNIST, SHARED_DATA
from tests.support.harness import (
    ADMIN_TOKEN,
    TEST_REDIS_URL,
    flush_test_redis,
    service_env,
    start_api,
)
from tests.support.models import tiny_spec
from tests.support.scale import fuzz_settings

BODY = {
    "model": "vit_tiny_patch16_224",
    "overrides": dict(depth=2, embed_dim=64, num_heads=1, img_size=28, patch_size=7, in_chans=1, num_classes=10),
    "calibration": {"uri": f"idx://{FMNIST}", "max_samples": 64},  # fitting needs data (nothing runs here)
    "fit": {"steps": 5},
}
CLIENTS = {"alpha": "tok-alpha-4f1c9e", "beta": "tok-beta-77d2a0"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Booby:
    """Unpickling this creates a marker file: the proof that a file was (or was not) unpickled."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile-data")


@pytest.fixture(scope="module")
def queue_only(tmp_path_factory, data_root):
    """Celery mode without a worker: accepted jobs stay queued, nothing runs (what the fuzzer should hit)."""
    home = tmp_path_factory.mktemp("queue-only")
    flush_test_redis()
    api = start_api(service_env(home, redis_url=TEST_REDIS_URL, data_roots=[SHARED_DATA, data_root]), home / "api.log")
    yield api
    api.stop()
    flush_test_redis()


def test_fuzzed_requests_get_no_server_error_and_every_refusal_says_why(queue_only):
    """schemathesis draws valid and invalid requests for every operation of the published OpenAPI document.
    (Its pytest fixture loader does not run under pytest 9, so the strategy is driven by hypothesis directly.)"""
    schema = schemathesis.openapi.from_url(f"{queue_only.url}/openapi.json")
    cases = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))
    seen: set[str] = set()

    @given(case=cases)
    @fuzz_settings(300)
    def check(case):
        seen.add(f"{case.method} {case.path}")
        response = case.call(headers=ADMIN if case.path.startswith("/v1/admin") else None)
        where = f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
        assert response.status_code < 500, where
        if 400 <= response.status_code < 500 and case.method != "HEAD":  # HEAD answers never carry a body
            try:
                detail = json.loads(response.text).get("detail")
            except ValueError:
                detail = None
            assert detail, where

    check()
    assert len(seen) >= 10, seen  # the draw reached (nearly) every operation


HOSTILE_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e309", "-1e309", "1e308", "-0.0", str(2**64), str(-(2**63)),
                   "9" * 5000, str(10**310)]  # fmt: skip
HOSTILE_STRINGS = ["\x00", "../../../../etc/passwd", "file://host/etc/passwd", "idx:///proc/self/environ",
                   "%s%n%x", "' OR 1=1 --", "\u202e\ufeff", "a" * 5000, "{{7*7}}", "$(reboot)",
                   # issue 23's shapes: digits of other scripts, '..' through a file, brace patterns, huge numbers
                   "demo@\u00b2", "demo@\u2460", "demo@\uff11", "\u0663",
                   f"{SHARED_DATA}/../../etc/passwd/../..{SHARED_DATA}",
                   f"wds://{SHARED_DATA}/s-" + "{0..9}" * 9 + ".tar", "{0..999999999999999999}", "9" * 400]  # fmt: skip


def mutate(body, path: list, literal: str):
    """`body` with the value at `path` replaced by a raw JSON literal (which may be one JSON cannot carry)."""
    marker = "\u0001HOSTILE\u0001"
    target = json.loads(json.dumps(body))
    node = target
    for step in path[:-1]:
        node = node[step]
    if path:
        node[path[-1]] = marker
    else:
        target = marker
    return json.dumps(target).replace(json.dumps(marker), literal)


def leaves(value, path=()):
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in leaves(v, (*path, k))]
    if isinstance(value, list) and value:
        return [p for i, v in enumerate(value) for p in leaves(v, (*path, i))]
    return [list(path)]


def test_fuzzed_bodies_with_non_finite_numbers_and_hostile_strings_get_no_server_error(queue_only):
    """Valid bodies drawn by schemathesis for every operation that takes one, with one value replaced by NaN,
    Infinity, 1e309, a huge integer, or a hostile string (NUL bytes, traversal, format strings, bidi controls)."""
    # Only the operations that take a JSON body: drawing among every operation, 150 examples could miss one of them.
    schema = schemathesis.openapi.from_url(f"{queue_only.url}/openapi.json").include(method=["POST", "PUT"])
    seen: set[str] = set()

    @given(case=schema.as_strategy(GenerationMode.POSITIVE), choice=st.data())
    @fuzz_settings(150, dev=60)  # 60 draws among the four body operations miss one with odds under 1e-5
    def check(case, choice):
        if case.method not in ("POST", "PUT") or not isinstance(case.body, dict):
            return
        path = choice.draw(st.sampled_from(leaves(case.body)))
        literal = choice.draw(st.sampled_from(HOSTILE_NUMBERS + [json.dumps(s) for s in HOSTILE_STRINGS]))
        seen.add(f"{case.method} {case.path}")
        response = httpx.request(
            case.method,
            f"{queue_only.url}{case.formatted_path}",
            content=mutate(case.body, path, literal),
            headers={"Content-Type": "application/json", **(ADMIN if case.path.startswith("/v1/admin") else {})},
            timeout=30,
        )
        where = (
            f"{case.method} {case.formatted_path} {path}={literal[:40]}: {response.status_code} {response.text[:300]}"
        )
        assert response.status_code < 500, where
        if response.status_code >= 400:
            assert response.json()["detail"], where

    check()
    assert {"POST /v1/initializations", "POST /v1/admin/condensations"} <= seen, seen


def post(api, body: dict, **kw) -> httpx.Response:
    return httpx.post(f"{api.url}/v1/initializations", json=body, timeout=30, **kw)


def first_error(response: httpx.Response) -> dict:
    return response.json()["errors"][0]


@pytest.mark.parametrize(
    ("change", "status", "loc"),
    [
        ({"overrides": {**BODY["overrides"], "depth": 10**9}}, 422, ["body", "overrides", "depth"]),
        (
            {"overrides": {**BODY["overrides"], "embed_dim": 65536, "num_heads": 1}},
            422,
            ["body", "overrides", "embed_dim"],
        ),
        (
            {"overrides": {**BODY["overrides"], "img_size": 10**7, "patch_size": 7}},
            422,
            ["body", "overrides", "img_size"],
        ),
        ({"overrides": {**BODY["overrides"], "in_chans": 10**6}}, 422, ["body", "overrides", "in_chans"]),
        ({"overrides": {**BODY["overrides"], "mlp_ratio": 1e308}}, 422, ["body", "overrides", "mlp_ratio"]),
        ({"model": "vit_gigantic_patch14_224", "overrides": {}}, 422, ["body", "overrides"]),
        ({"fit": {"steps": 10**9}}, 422, ["body", "fit", "steps"]),
        ({"fit": {"batch_size": 10**7}}, 422, ["body", "fit", "batch_size"]),
        ({"calibration": {"uri": f"idx://{FMNIST}", "max_samples": None}}, 422, ["body", "calibration", "max_samples"]),
        ({"template_set": "demo@../../etc"}, 422, ["body", "template_set"]),
        ({"template_set": "DEMO"}, 422, ["body", "template_set"]),
        ({"template_set": "demo;rm -rf /"}, 422, ["body", "template_set"]),
        ({"template_set": "démo"}, 422, ["body", "template_set"]),
        ({"template_set": "d" * 300}, 422, ["body", "template_set"]),
        ({"template_set": "demo@\u00b2"}, 422, ["body", "template_set"]),  # superscript two: isdigit(), not int()
        ({"template_set": "demo@\u2460"}, 422, ["body", "template_set"]),  # circled one
        ({"template_set": "demo@\uff11"}, 422, ["body", "template_set"]),  # full-width one: int() reads it as 1
        # 262,145 tokens per image: one step would take most of an hour here, and nothing could stop it
        (
            {"overrides": {**BODY["overrides"], "img_size": 1024, "patch_size": 2}},
            422,
            ["body", "overrides", "patch_size"],
        ),
        (
            {
                "model": "vit_large_patch16_224",
                "overrides": {"num_classes": 10, "in_chans": 1},
                "fit": {"steps": 5, "batch_size": 1024},
            },
            422,
            ["body", "fit", "batch_size"],
        ),  # about 3.8e14 FLOPs a step
        ({"model": "vit_base_mci_224", "overrides": {}}, 422, ["body", "model"]),  # no convolutional patch embedding
        (
            {
                "overrides": {**BODY["overrides"], "img_size": 1024, "patch_size": 16, "in_chans": 3},
                "calibration": {"uri": f"idx://{FMNIST}", "max_samples": 100_000},
            },
            422,
            ["body", "calibration", "max_samples"],
        ),  # 300 GB of images: refused before anything is read
    ],
    ids=lambda v: json.dumps(v)[:60] if isinstance(v, dict) else str(v),
)
def test_catalogue_of_out_of_bounds_requests(queue_only, change, status, loc):
    response = post(queue_only, {**BODY, **change})
    assert response.status_code == status, response.text
    assert first_error(response)["loc"] == loc and first_error(response)["msg"]


def test_refusals_echo_a_bounded_amount_of_the_input(queue_only):
    """40,000 unknown keys are one error; a 500 KB reference is named in 300 characters: a refusal is a few KB."""
    many = post(queue_only, {**BODY, **{f"unknown-{i}": i for i in range(40_000)}})
    assert many.status_code == 422 and len(many.content) < 2_000, len(many.content)
    assert first_error(many)["msg"].endswith("40,000 unknown fields (the first: 'unknown-0')")
    uri = f"{SHARED_DATA}/{'x' * 500_000}.npz"
    long = post(queue_only, {**BODY, "calibration": {"uri": uri, "max_samples": 8}})
    assert long.status_code in (400, 422) and len(long.content) < 2_000, (long.status_code, len(long.content))
    assert re.search(r"\(500,\d{3} characters\)", long.text), long.text
    nested = post(queue_only, {**BODY, "overrides": {f"unknown-{i}": i for i in range(40_000)}})
    assert nested.status_code == 422 and first_error(nested)["loc"] == ["body", "overrides"], nested.text[:300]
    fields = {"overrides": {f"bad{i}": 1 for i in range(8)}, "fit": {f"odd{i}": 1 for i in range(30)}}
    listed = post(queue_only, {**BODY, **fields})
    assert listed.status_code == 422 and len(listed.json()["errors"]) == 20  # 38 refused fields, 20 listed
    assert "(and 35 more)" in listed.json()["detail"]


def test_odd_digits_and_huge_numbers_in_paths_queries_and_headers_get_a_4xx(queue_only):
    """Every route that takes a template reference reads ASCII digits only, and numbers too large for a float or
    for int() (4300 digits) are refused, not a 500."""
    for selector in ("\u00b2", "\u2460", "\uff11", "9" * 5000):
        for method, path, body in (
            ("GET", f"/v1/template-sets/demo@{selector}", None),
            ("GET", f"/v1/template-sets/demo@{selector}/card", None),
            ("PUT", f"/v1/admin/template-sets/demo/aliases/{selector}", {"version": 1}),
            ("PUT", "/v1/admin/template-sets/demo/aliases/odd", {"version": selector}),
        ):
            response = httpx.request(method, f"{queue_only.url}{path}", json=body, headers=ADMIN, timeout=30)
            assert response.status_code in (404, 422), (method, path, response.status_code, response.text[:300])
    for values in ([10**310, "abc"], [-(10**400), "x"], ["1", "x"]):
        cursor = base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")
        response = httpx.get(f"{queue_only.url}/v1/initializations", params={"cursor": cursor}, timeout=30)
        assert response.status_code == 422 and first_error(response)["loc"] == ["query", "cursor"], response.text
    host, port = queue_only.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as raw:  # httpx will not send such a header
        raw.sendall(
            b"POST /v1/initializations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n{}"
        )
        status_line = raw.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 4"), status_line


def test_data_and_checkpoint_references_cannot_escape_or_smuggle_pickles(queue_only, data_root, tmp_path):
    Booby.marker = str(tmp_path / "unpickled")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, data_root / "escape")
    (data_root / "data.pkl").write_bytes(pickle.dumps(Booby()))
    torch.save({"x": Booby()}, data_root / "model.pt")
    (data_root / "evil.safetensors").write_bytes(pickle.dumps(Booby()))  # a pickle under a safetensors name
    good = data_root / "ancestor.safetensors"
    export_checkpoint(
        tiny_spec(depth=2, embed_dim=64, num_heads=1).build(), good, spec=tiny_spec(depth=2, embed_dim=64, num_heads=1)
    )
    (data_root / "truncated.safetensors").write_bytes(good.read_bytes()[:-1000])

    def calibration(uri: str) -> httpx.Response:
        return post(queue_only, {**BODY, "calibration": {"uri": uri, "max_samples": 64}})

    def ancestor(path) -> httpx.Response:
        spec = {"model": BODY["model"], "overrides": BODY["overrides"], "checkpoint": str(path)}
        return post(queue_only, {**BODY, "method": "weight_selection", "ancestor": spec})

    traversal = calibration(f"idx://{data_root}/../../../../etc")  # refused from its text: nothing is looked up
    assert traversal.status_code == 422 and "has a '..' segment" in first_error(traversal)["msg"]
    escape = calibration(f"imagefolder://{data_root}/escape")
    assert escape.status_code == 400 and "outside the allowed data roots" in escape.json()["detail"]
    pkl = calibration(f"{data_root}/data.pkl")
    assert pkl.status_code == 422 and "cannot tell the format" in first_error(pkl)["msg"]
    refusals = {"model.pt": "only .safetensors", "evil.safetensors": "not a readable safetensors",
                "truncated.safetensors": "not a readable safetensors"}  # fmt: skip
    for name, needle in refusals.items():
        path = data_root / name
        refused = ancestor(path)
        assert refused.status_code == 422 and first_error(refused)["loc"] == ["body", "ancestor", "checkpoint"]
        assert needle in first_error(refused)["msg"]
    assert ancestor(good).status_code == 202
    (outside / "elsewhere.safetensors").write_bytes(good.read_bytes())
    escaped = ancestor(data_root / "escape" / "elsewhere.safetensors")
    assert escaped.status_code == 400 and "outside the allowed data roots" in escaped.json()["detail"]

    def condensation(**change) -> httpx.Response:
        body = {"name": "hostile", "aux": {"model": BODY["model"], "overrides": BODY["overrides"]},
                "ancestor": {"model": BODY["model"], "overrides": BODY["overrides"], "checkpoint": str(good)},
                "data": {"uri": f"idx://{FMNIST}"}, **change}  # fmt: skip
        return httpx.post(f"{queue_only.url}/v1/admin/condensations", json=body, headers=ADMIN, timeout=30)

    pickled = condensation(ancestor={"model": BODY["model"], "checkpoint": str(data_root / "model.pt")})
    assert pickled.status_code == 422 and first_error(pickled)["loc"] == ["body", "ancestor", "checkpoint"]
    steps = condensation(training={"steps": 10**9})
    assert steps.status_code == 422 and first_error(steps)["loc"] == ["body", "training", "steps"]
    alias = condensation(promote="latest")  # refused now, not after hours of condensation
    assert alias.status_code == 422 and first_error(alias)["loc"] == ["body", "promote"]
    ungated = condensation(method="tleg", promote="prod")  # a card gates it, and a TLEG set gets none
    assert ungated.status_code == 422 and first_error(ungated)["loc"] == ["body", "promote_if"]
    assert "only WAVE sets get one" in first_error(ungated)["msg"]
    gate = condensation(promote_if="sometimes")
    assert gate.status_code == 422 and first_error(gate)["loc"] == ["body", "promote_if"]
    assert condensation().status_code == 202
    assert not (tmp_path / "unpickled").exists()

    # A local-dir ancestor's config.json says what it is, within what a request may say: no `checkpoint_path`
    # (timm would read that file, outside the roots), no size beyond the limits; hf-hub names are the Hub's.
    huge = {"depth": 64, "embed_dim": 4096, "num_heads": 64, "mlp_ratio": 16}  # each field within its limit
    for name, config, needle in (
        ("reads-a-file", {"model_args": {"checkpoint_path": "/etc/passwd"}}, "checkpoint_path"),
        ("too-deep", {"model_args": {"depth": 100_000}}, "depth=100000 is over the limit"),
        ("too-large", {"model_args": huge}, "parameters, the limit is 1,000,000,000"),
        ("odd-args", {"model_args": "x"}, "model_args of the wrong type"),
        ("odd-mean", {"pretrained_cfg": {"mean": 1, "std": [1]}}, "pretrained_cfg.mean/std of the wrong type"),
    ):
        folder = data_root / name
        folder.mkdir()
        save_file(load_file(good), folder / "model.safetensors")  # no recorded spec: config.json says what it is
        (folder / "config.json").write_text(json.dumps({"architecture": BODY["model"], **config}))
        refused = condensation(ancestor={"model": BODY["model"], "checkpoint": f"local-dir:{folder}"})
        assert refused.status_code == 422 and needle in refused.text, refused.text
    for hub in ("hf-hub:a/..", "hf-hub:../x", "hf-hub:a/b/c", "hf-hub:a/" + "b" * 200):
        refused = condensation(ancestor={"model": BODY["model"], "checkpoint": hub})
        assert refused.status_code == 422 and "expected hf-hub:<owner>/<name>" in refused.text, refused.text


def test_pickled_arrays_are_refused_from_their_header_without_being_unpickled(queue_only, tmp_path, data_root):
    """A .npz holding an object array: the API reads the member's header (no data) and refuses it at submission."""
    Booby.marker = str(tmp_path / "unpickled")
    np.savez(data_root / "calibration.npz", images=np.array([Booby()], dtype=object), labels=np.array([0]))
    refused = post(queue_only, {**BODY, "calibration": {"uri": str(data_root / "calibration.npz"), "max_samples": 8}})
    assert refused.status_code == 422 and first_error(refused)["loc"] == ["body", "calibration", "uri"]
    assert "not a readable .npz of plain arrays" in first_error(refused)["msg"]
    assert not (tmp_path / "unpickled").exists()


def test_oversized_bodies_are_refused(queue_only):
    big = {**BODY, "padding": "x" * (2 << 20)}
    response = post(queue_only, big)
    assert response.status_code == 413 and "larger than" in response.json()["detail"]
    chunked = httpx.post(
        f"{queue_only.url}/v1/initializations",
        content=iter([b"{" + b" " * (2 << 20)]),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert chunked.status_code == 413


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, queue_only):
    """Client tokens with a quota of 2 active jobs each, and a queue bounded at 3 (own key prefix, no worker)."""
    home = tmp_path_factory.mktemp("guarded")
    env = service_env(
        home,
        redis_url=TEST_REDIS_URL,
        data_roots=[SHARED_DATA],
        LEARNGENE_REDIS_PREFIX="guarded",
        LEARNGENE_CLIENT_TOKENS=json.dumps(CLIENTS),
        LEARNGENE_CLIENT_MAX_ACTIVE_JOBS="2",
        LEARNGENE_MAX_QUEUED_JOBS="3",
    )
    api = start_api(env, home / "api.log")
    yield api
    api.stop()


def test_admission_control_and_per_client_quotas(guarded):
    alpha, beta = ({"Authorization": f"Bearer {CLIENTS[c]}"} for c in ("alpha", "beta"))
    assert post(guarded, BODY).status_code == 401
    assert post(guarded, BODY, headers={"Authorization": "Bearer nope"}).status_code == 403
    assert httpx.get(f"{guarded.url}/v1/template-sets").status_code == 401
    assert [post(guarded, {**BODY, "fit": {"steps": 5, "seed": s}}, headers=alpha).status_code for s in (1, 2)] == [
        202,
        202,
    ]
    quota = post(guarded, {**BODY, "fit": {"steps": 5, "seed": 3}}, headers=alpha)
    assert quota.status_code == 429 and quota.headers["retry-after"] and "client 'alpha'" in quota.json()["detail"]
    assert post(guarded, {**BODY, "fit": {"steps": 5, "seed": 4}}, headers=beta).status_code == 202
    full = post(guarded, {**BODY, "fit": {"steps": 5, "seed": 5}}, headers=beta)
    assert (
        full.status_code == 429 and full.headers["retry-after"] == "30" and "3 jobs are queued" in full.json()["detail"]
    )
    assert httpx.get(f"{guarded.url}/v1/template-sets", headers=beta).status_code == 200

    # A refused submission leaves its Idempotency-Key free: once there is room, the retry creates the job once.
    retry = {**BODY, "fit": {"steps": 5, "seed": 6}}
    key = {**beta, "Idempotency-Key": "after-429"}
    assert post(guarded, retry, headers=key).status_code == 429
    beta_job = next(j["id"] for j in httpx.get(f"{guarded.url}/v1/initializations", headers=beta).json()["items"])
    assert httpx.delete(f"{guarded.url}/v1/initializations/{beta_job}", headers=beta).json()["status"] == "cancelled"
    created = post(guarded, retry, headers=key)
    replayed = post(guarded, retry, headers=key)
    assert (created.status_code, replayed.status_code) == (202, 200)
    assert created.json()["id"] == replayed.json()["id"]
    assert post(guarded, retry, headers={**alpha, "Idempotency-Key": "after-429"}).status_code == 429  # alpha's own


def test_clients_see_only_their_own_jobs(guarded):
    alpha, beta = ({"Authorization": f"Bearer {CLIENTS[c]}"} for c in ("alpha", "beta"))
    mine = {j["id"] for j in httpx.get(f"{guarded.url}/v1/initializations", headers=alpha).json()["items"]}
    listed = httpx.get(f"{guarded.url}/v1/initializations", headers=beta).json()["items"]
    theirs = {j["id"] for j in listed}
    assert mine and theirs and not mine & theirs
    job = next(j["id"] for j in listed if j["status"] == "queued")
    for method, path in (
        ("GET", ""),
        ("DELETE", ""),
        ("GET", "/checkpoint"),
        ("GET", "/files/config.json"),
        ("GET", "/files.tar"),
    ):
        response = httpx.request(method, f"{guarded.url}/v1/initializations/{job}{path}", headers=alpha)
        assert response.status_code == 404 and "does not exist" in response.json()["detail"]
    assert httpx.get(f"{guarded.url}/v1/initializations/{job}", headers=beta).json()["status"] == "queued"


@pytest.mark.parametrize(
    ("path", "loc"),
    [
        ("BAD/aliases/prod", ["path", "name"]),
        ("demo/aliases/latest", ["path", "alias"]),
        ("demo/aliases/7", ["path", "alias"]),
    ],
)
def test_alias_requests_name_the_bad_part(queue_only, path, loc):
    response = httpx.put(f"{queue_only.url}/v1/admin/template-sets/{path}", json={"version": 1}, headers=ADMIN)
    assert response.status_code == 422 and first_error(response)["loc"] == loc


def test_tokens_never_reach_logs_or_job_records(queue_only, guarded):
    model = "vit_tiny_patch16_224"
    condensation = {"name": "secret-check", "ancestor": {"model": model, "checkpoint": "/nope.safetensors"},
                    "aux": {"model": model}, "data": {"uri": "/nope"}}  # fmt: skip
    httpx.post(f"{queue_only.url}/v1/admin/condensations", json=condensation, headers=ADMIN, timeout=30)
    httpx.post(
        f"{queue_only.url}/v1/admin/condensations",
        json=condensation,
        timeout=30,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}x"},
    )
    client = redis.Redis.from_url(TEST_REDIS_URL)
    stored = b"".join(client.dump(key) or b"" for key in client.scan_iter(count=500))
    logs = (queue_only.log.read_bytes(), guarded.log.read_bytes())
    for secret in (ADMIN_TOKEN, *CLIENTS.values()):
        assert secret.encode() not in stored
        assert all(secret.encode() not in log for log in logs)


def test_tokens_are_compared_in_constant_time(monkeypatch):
    from fastapi import HTTPException
    from fastapi.security import HTTPAuthorizationCredentials
    from pydantic import SecretStr

    from jobs.settings import Settings
    from service.api import deps

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(deps.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    config = Settings(
        admin_token=SecretStr("admin-secret"), client_tokens={k: SecretStr(v) for k, v in CLIENTS.items()}
    )
    with pytest.raises(HTTPException) as refused:
        deps.require_admin(config, HTTPAuthorizationCredentials(scheme="Bearer", credentials="admin-secreT"))
    assert refused.value.status_code == 403 and calls == [(b"admin-secreT", b"admin-secret")]
    calls.clear()
    alpha = HTTPAuthorizationCredentials(scheme="Bearer", credentials=CLIENTS["alpha"])
    assert deps.current_client(config, alpha) == "alpha"
    assert len(calls) == len(CLIENTS)  # every token compared, whichever matches
