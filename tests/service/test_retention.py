"""Checkpoints do not grow without bound (issue 23, 9): each client's checkpoints count against a byte quota, a
client releases what it has downloaded, and the retention sweep removes every file no kept, unreleased job names,
on a real `learngene serve` with client tokens."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from learngene import ViTSpec
from learngene.cost import estimate
from learngene.formats.pretrained import FOLDER_FILES
from tests.support.data import FMNIST, SHARED_DATA
from tests.support.harness import finished, service_env, start_api, wait_for
from tests.support.scale import patient

OVERRIDES = dict(depth=2, embed_dim=48, num_heads=3, img_size=28, patch_size=7, in_chans=1, num_classes=10)
MODEL = "vit_tiny_patch16_224"
ALL_STORED = [True] * (len(FOLDER_FILES) + 1)  # the folder's files and its signature
TOKENS = {name: f"{name}-retention-token-0123456789" for name in ("alpha", "beta", "gamma", "delta")}
# Room for two and a half checkpoints of this model, as the API estimates them (4 bytes a parameter).
ESTIMATE = estimate(ViTSpec(model=MODEL, **OVERRIDES)).parameters * 4
QUOTA = int(2.5 * ESTIMATE)


def body(seed: int) -> dict:
    return {"model": MODEL, "overrides": OVERRIDES, "fit": {"seed": seed}}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """Swept twice a second; a file younger than 5 s is kept (with none, a sweep between a job's publishing and its
    recorded success would take the file it is about to name)."""
    home = tmp_path_factory.mktemp("retention")
    env = service_env(
        home,
        redis_url=None,
        data_roots=[SHARED_DATA],
        LEARNGENE_CLIENT_TOKENS=json.dumps(TOKENS),
        LEARNGENE_CLIENT_MAX_ARTIFACT_BYTES=str(QUOTA),
        LEARNGENE_ARTIFACTS_SWEEP_INTERVAL_S="0.5",
        LEARNGENE_ARTIFACTS_SWEEP_GRACE_S="5",
    )
    proc = start_api(env, home / "api.log")
    yield proc, home / "artifacts"
    proc.stop()


def client(api, name: str) -> httpx.Client:
    return httpx.Client(base_url=api[0].url, headers={"Authorization": f"Bearer {TOKENS[name]}"}, timeout=60)


def run(http: httpx.Client, seed: int) -> dict:
    accepted = http.post("/v1/initializations", json=body(seed))
    assert accepted.status_code == 202, accepted.text
    job = wait_for(http, f"/v1/initializations/{accepted.json()['id']}", finished)
    assert job["status"] == "succeeded", job["error"]
    return job


def path(folder: Path, name: str, sha256: str) -> Path:
    return folder / f"{sha256}{Path(name).suffix}"


def shas(job: dict) -> dict[str, str]:
    return {name: entry["sha256"] for name, entry in job["checkpoint"]["files"].items()}


def stored(folder: Path, job: dict) -> list[bool]:
    return [path(folder, name, sha).is_file() for name, sha in shas(job).items()]


def wait_for_sweep(folder: Path, released: dict, *kept: dict) -> None:
    """Until the released job's files are gone, but for those a kept job names too (its config.json is another
    job's of the same architecture): those must stay."""
    named = {sha for job in kept for sha in shas(job).values()}
    expected = {name: sha in named for name, sha in shas(released).items()}
    assert not all(expected.values())  # its weights at least are its own
    deadline = time.monotonic() + patient(60)
    while time.monotonic() < deadline:
        now = {name: path(folder, name, sha).is_file() for name, sha in shas(released).items()}
        if now == expected:
            return
        time.sleep(0.1)
    assert now == expected, "the sweep left a released job's own files, or removed one a kept job names"


def test_a_client_past_its_byte_quota_is_refused_until_it_releases_checkpoints(api):
    folder = api[1]
    with client(api, "alpha") as alpha, client(api, "beta") as beta:
        first, second = run(alpha, 1), run(alpha, 2)
        assert stored(folder, first) == stored(folder, second) == ALL_STORED
        refused = alpha.post("/v1/initializations", json=body(3))
        assert refused.status_code == 429 and refused.headers["content-type"] == "application/problem+json"
        detail = refused.json()["detail"]
        assert f"over the quota of {QUOTA:,} bytes" in detail and f"needs about {ESTIMATE:,}" in detail
        assert "client 'alpha' hold" in detail and "DELETE /v1/initializations/{id}/checkpoint" in detail
        run(beta, 3)  # another client's quota is its own

        released = alpha.delete(f"/v1/initializations/{first['id']}/checkpoint")
        assert released.status_code == 200 and released.json()["result"]["released_at"] > 0
        assert alpha.delete(f"/v1/initializations/{first['id']}/checkpoint").status_code == 200  # again: no change
        gone = alpha.get(f"/v1/initializations/{first['id']}/checkpoint")
        assert gone.status_code == 410 and "released by its client" in gone.json()["detail"]
        assert alpha.get(f"/v1/initializations/{first['id']}/files.tar").status_code == 410
        assert beta.delete(f"/v1/initializations/{second['id']}/checkpoint").status_code == 404  # not beta's
        wait_for_sweep(folder, first, second)
        assert stored(folder, second) == ALL_STORED
        third = run(alpha, 3)  # room again
        assert stored(folder, third) == ALL_STORED


def test_a_file_two_jobs_name_stays_until_both_are_released(api):
    folder = api[1]
    with client(api, "gamma") as gamma:
        original, twin = run(gamma, 10), run(gamma, 10)  # the same request: the second reuses the first's files
        assert twin["result"]["cached"] and shas(twin) == shas(original)
        other = run(gamma, 11)
        for job in (twin, other):
            assert gamma.delete(f"/v1/initializations/{job['id']}/checkpoint").status_code == 200
        wait_for_sweep(folder, other, original)  # a sweep ran after both releases...
        assert stored(folder, original) == ALL_STORED  # ...and kept what `original` still names
        assert gamma.get(f"/v1/initializations/{original['id']}/checkpoint").status_code == 200
        assert gamma.delete(f"/v1/initializations/{original['id']}/checkpoint").status_code == 200
        wait_for_sweep(folder, original, *kept(api))


def kept(api) -> list[dict]:
    """Every client's succeeded jobs that are not released."""
    found = []
    for name in TOKENS:
        with client(api, name) as http:
            found += http.get("/v1/initializations", params={"status": "succeeded", "limit": 100}).json()["items"]
    return [job for job in found if job["result"].get("released_at") is None]


def test_only_a_succeeded_job_can_release(api):
    long = {**body(20), "calibration": {"uri": f"idx://{FMNIST}", "max_samples": 64},
            "fit": {"steps": 20000, "batch_size": 8}}  # fmt: skip
    with client(api, "delta") as delta:
        job_id = delta.post("/v1/initializations", json=long).json()["id"]
        wait_for(delta, f"/v1/initializations/{job_id}", lambda job: (job["progress"] or {}).get("step", 0) >= 10)
        running = delta.delete(f"/v1/initializations/{job_id}/checkpoint")
        assert running.status_code == 409 and "is running, not succeeded" in running.json()["detail"]
        delta.delete(f"/v1/initializations/{job_id}")
        assert wait_for(delta, f"/v1/initializations/{job_id}", finished)["status"] == "cancelled"
        assert delta.delete(f"/v1/initializations/{job_id}/checkpoint").status_code == 409
        missing = delta.delete("/v1/initializations/0123456789abcdef0123456789abcdef/checkpoint")
        assert missing.status_code == 404
