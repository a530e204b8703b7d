"""Issues 9 and 23's guarantees, each against a real `learngene serve` over HTTP: what a hostile client meets with
the default settings (data roots, no existence oracle, non-finite numbers, never a broken checkpoint, bounded
decoding, cancellable loading, a store that never answers 500, shard patterns bounded from their text, and the small
holes)."""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import socket
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import torch
import webdataset as wds
from PIL import Image

from jobs.redaction import redact_paths
from learngene import export_checkpoint
from learngene.formats.template_set import TemplateSet
from templates_store import TemplateStore
from tests.support.data import FMNIST, REPO, SHARED_DATA
from tests.support.harness import ADMIN_TOKEN, finished, service_env, start_api, wait_for
from tests.support.models import random_template_set, tiny_spec
from tests.support.scale import patient

SHAPE = dict(img_size=28, patch_size=7, in_chans=1, num_classes=10)
BODY = {
    "model": "vit_tiny_patch16_224",
    "overrides": dict(depth=2, embed_dim=64, num_heads=1, **SHAPE),
    "fit": {"steps": 2, "batch_size": 8},
}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def default_env(home: Path, **extra: str) -> dict[str, str]:
    """The service's defaults (no LEARNGENE_DATA_ROOTS), with its data folder under `home` (XDG_DATA_HOME)."""
    env = service_env(home, redis_url=None, data_roots=[], XDG_DATA_HOME=str(home / "xdg"), **extra)
    del env["LEARNGENE_DATA_ROOTS"]
    return env


def post(api, body, **kw) -> httpx.Response:
    return httpx.post(f"{api.url}/v1/initializations", json=body, timeout=60, **kw)


def jobs_of(api) -> list[dict]:
    return httpx.get(f"{api.url}/v1/initializations", timeout=30).json()["items"]


def no_server_paths(response: httpx.Response, *paths: Path) -> None:
    for path in paths:
        assert str(path) not in response.text, response.text


@pytest.fixture(scope="module")
def defaults(tmp_path_factory):
    """An embedded API with the default settings; its default data folder holds one small bundle."""
    home = tmp_path_factory.mktemp("defaults")
    datasets = home / "xdg" / "learngene" / "datasets"
    datasets.mkdir(parents=True)
    images = torch.randint(0, 255, (16, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    np.savez(datasets / "calib.npz", images=images.numpy(), labels=np.arange(16) % 10)
    api = start_api(default_env(home), home / "api.log")
    yield api, home, datasets
    api.stop()


# --- 1 and 2: the server's files are not the client's; no existence oracle ------------------------------------


def test_default_roots_confine_every_reference_and_answer_without_an_oracle(defaults, tmp_path):
    api, home, datasets = defaults
    private = tmp_path / "private.safetensors"
    spec = tiny_spec(depth=2, embed_dim=64, num_heads=1)
    export_checkpoint(spec.build(), private, spec=spec)
    os.chmod(private, 0o600)
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)  # opening it for reading would block: answered at once proves it was never opened

    def calibration(uri: str) -> httpx.Response:
        return post(api, {**BODY, "calibration": {"uri": uri, "max_samples": 8}})

    def ancestor(method: str, path: Path) -> httpx.Response:
        ancestor = {"model": BODY["model"], "overrides": BODY["overrides"], "checkpoint": str(path)}
        return post(api, {**BODY, "method": method, "ancestor": ancestor})

    refused = [calibration("imagefolder:///usr/share"), calibration(f"bundle://{private}"), calibration(str(fifo))]
    refused += [ancestor(m, p) for m in ("weight_selection", "heru_lg", "auto_lg") for p in (private, fifo)]
    for response in refused:
        assert response.status_code == 400, response.text
        assert "does not exist or lies outside the allowed data roots" in response.json()["detail"]
        no_server_paths(response, datasets, home)
    assert jobs_of(api) == []  # no job was created

    # Outside the roots and missing read the same, apart from the URI the client sent.
    outside, missing = calibration(f"bundle://{private}"), calibration(f"bundle://{datasets}/missing.npz")
    assert outside.status_code == missing.status_code == 400
    assert outside.json()["detail"].replace(str(private), "X") == missing.json()["detail"].replace(
        f"{datasets}/missing.npz", "X"
    )
    assert calibration(f"bundle://{datasets}/calib.npz").status_code == 202  # the default data folder is usable


def test_dot_dot_segments_are_refused_from_the_text_on_every_reference_kind(defaults):
    """`..` after a component is applied by the OS only once that component was looked up: a probe through
    /etc/passwd (present) and one through a missing file must get the same answer, from the text alone."""
    api, _, datasets = defaults
    climb = "/.." * len(datasets.parts)

    def probe(via: str) -> str:
        return f"{datasets}{climb}{via}/../..{datasets}/calib.npz"

    def answers(uri: str) -> list[httpx.Response]:
        checkpoint = uri.removesuffix(".npz") + ".safetensors"
        ancestor = {"model": BODY["model"], "overrides": BODY["overrides"], "checkpoint": checkpoint}
        return [
            *(post(api, {**BODY, "calibration": {"uri": f"{scheme}{uri}", "max_samples": 8}})
              for scheme in ("", "file://", "bundle://", "idx://", "imagefolder://", "wds://")),
            post(api, {**BODY, "method": "weight_selection", "ancestor": ancestor}),
        ]  # fmt: skip

    assert Path("/etc/passwd").is_file() and not Path("/etc/pzsswd").exists()
    jobs = len(jobs_of(api))
    present, missing = answers(probe("/etc/passwd")), answers(probe("/etc/pzsswd"))
    for seen, unseen in zip(present, missing, strict=True):
        assert seen.status_code == unseen.status_code == 422, seen.text
        assert "has a '..' segment" in seen.json()["detail"]
        assert seen.json()["errors"][0]["loc"] == unseen.json()["errors"][0]["loc"]
        assert seen.json()["errors"][0]["loc"][1] in ("calibration", "ancestor")
        assert seen.text.replace("passwd", "X") == unseen.text.replace("pzsswd", "X")
    for uri, why in (
        ("calib.npz", "is a relative path"),
        ("~root/calib.npz", "is a relative path"),
        (f"idx://{FMNIST}?split=test&split=train", "names a query parameter twice"),
    ):
        response = post(api, {**BODY, "calibration": {"uri": uri, "max_samples": 8}})
        assert response.status_code == 422 and why in response.json()["detail"], response.text
    assert len(jobs_of(api)) == jobs  # no job was created


def test_shard_patterns_are_counted_from_their_text_before_any_name_is_made(defaults):
    """Nine `{0..9}` groups name a billion shards in a 300-byte body: refused from the count, with the API's memory
    as it was; the grammar is ranges of ASCII digits and flat lists, nothing else."""
    api, _, datasets = defaults
    before, jobs = rss_mib(api.popen.pid), len(jobs_of(api))
    for pattern, why in (
        ("{0..9}" * 9, "names 1,000,000,000 shards, more than 100,000"),
        ("{0..999999999999999999}", "more than 100,000"),
        ("{a..z}", "is neither a range like {000..127} nor a list"),
        ("{0..\uff11}", "is neither a range"),
        ("{{0,1},2}", "nested or unbalanced braces"),
        ("{0..9", "nested or unbalanced braces"),
    ):
        response = post(api, {**BODY, "calibration": {"uri": f"wds://{datasets}/s-{pattern}.tar", "max_samples": 8}})
        assert response.status_code == 422 and why in response.json()["detail"], (pattern, response.text)
    assert rss_mib(api.popen.pid) - before < 30  # nothing was expanded
    assert len(jobs_of(api)) == jobs
    unavailable = post(api, {**BODY, "calibration": {"uri": f"wds://{datasets}/s-{{0..99999}}.tar"}})
    assert unavailable.status_code == 400 and "does not exist" in unavailable.json()["detail"]

    shard = datasets / "labels-0.tar"
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    with wds.TarWriter(str(shard)) as sink:
        for key, label in (("a", "1"), ("b", "\u00b2")):  # a superscript two is a digit to str.isdigit, not a label
            sink.write({"__key__": key, "png": Image.fromarray(images[0]), "cls": label.encode()})
    odd = post(api, {**BODY, "calibration": {"uri": f"wds://{datasets}/labels-{{0..0}}.tar", "max_samples": 2}})
    assert odd.status_code == 202, odd.text  # labels are read by the job, not at submission
    with httpx.Client() as http:
        failed = wait_for(http, f"{api.url}/v1/initializations/{odd.json()['id']}", finished)
    assert failed["status"] == "failed" and "b.cls of shard 0 is not a label" in failed["error"]["message"], failed


def test_thin_images_postscript_and_hostile_labels_fail_their_jobs_with_a_data_error(defaults):
    """Read by the job (an ImageFolder and shards are listed, not decoded, at submission): a 1 x 2000 strip is
    refused from its header (resizing it would cost 2000 x its bytes), a PostScript file named .png never reaches
    a PostScript decoder, and a 20-digit label is no class index; each says why, none is a raw exception."""
    api, _, datasets = defaults
    cases = {"thin": "is 1 x 2000 pixels, an aspect ratio over the limit of 16",
             "postscript": "is not a readable image (UnidentifiedImageError)",
             "huge-label": "a.cls of shard 0 is not a label"}  # fmt: skip
    for name in ("thin", "postscript"):
        (datasets / name / "0").mkdir(parents=True)
    Image.fromarray(np.zeros((2000, 1), dtype=np.uint8)).save(datasets / "thin" / "0" / "strip.png")
    (datasets / "postscript" / "0" / "page.png").write_bytes(
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\nnewpath 0 0 moveto 28 28 lineto stroke\n%%EOF\n"
    )
    with wds.TarWriter(str(datasets / "huge-label-0.tar")) as sink:
        sink.write({"__key__": "a", "png": Image.fromarray(np.zeros((28, 28), dtype=np.uint8)), "cls": b"9" * 20})
    uris = {"thin": f"imagefolder://{datasets}/thin", "postscript": f"imagefolder://{datasets}/postscript",
            "huge-label": f"wds://{datasets}/huge-label-{{0..0}}.tar"}  # fmt: skip
    with httpx.Client() as http:
        for name, uri in uris.items():
            accepted = post(api, {**BODY, "calibration": {"uri": uri, "max_samples": 1}})
            assert accepted.status_code == 202, accepted.text
            job = wait_for(http, f"{api.url}/v1/initializations/{accepted.json()['id']}", finished)
            assert job["status"] == "failed" and job["error"]["type"] == "DataRefError", (name, job)
            assert cases[name] in job["error"]["message"], (name, job["error"])


def test_forwarded_headers_are_not_trusted_by_default(defaults):
    """`learngene serve` with default settings trusts no proxy: X-Forwarded-Proto from a client (even one on
    127.0.0.1, which uvicorn would trust) changes no link."""
    api, _, datasets = defaults
    forged = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    accepted = post(
        api, {**BODY, "calibration": {"uri": f"bundle://{datasets}/calib.npz", "max_samples": 8}}, headers=forged
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.headers["location"].startswith(f"{api.url}/v1/initializations/")  # http, as connected


def readme_request() -> dict:
    """The body of the README's first curl, as the shell in the checkout sends it."""
    text = (REPO / "README.md").read_text()
    argument = text.split("/v1/initializations -H 'Content-Type: application/json' -d ", 1)[1]
    argument = argument.split("#", 1)[0].strip()  # up to the comment after the closing quote
    sent = subprocess.run(["bash", "-c", f"printf %s {argument}"], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(sent.stdout)


def test_serve_data_root_adds_a_root_as_make_run_does(tmp_path):
    """`make run` serves with `--data-root ../shared/data`: the README's example is accepted, nothing else is."""
    api = start_api(default_env(tmp_path), tmp_path / "api.log", args=("--data-root", str(SHARED_DATA)))
    try:
        body = readme_request()
        assert body["calibration"]["uri"].startswith("idx:///") and ".." not in body["calibration"]["uri"]
        readme = post(api, {**body, "fit": {"steps": 2}})
        assert readme.status_code == 202, readme.text
        assert post(api, {**BODY, "calibration": {"uri": "imagefolder:///usr/share"}}).status_code == 400
    finally:
        api.stop()


def test_references_leading_outside_are_refused_without_naming_where(defaults):
    """An IDX folder inside the roots whose raw files are a symlink to elsewhere: the API reads the files' headers,
    so it refuses at submission, and the answer names neither the link's target nor any server folder."""
    api, home, datasets = defaults
    (datasets / "raw-elsewhere").mkdir()
    (datasets / "raw-elsewhere" / "raw").symlink_to(FMNIST / "raw")
    response = post(api, {**BODY, "calibration": {"uri": f"idx://{datasets}/raw-elsewhere", "max_samples": 8}})
    assert response.status_code == 400 and "outside the allowed data roots" in response.json()["detail"]
    no_server_paths(response, FMNIST, SHARED_DATA, home / "store")


def test_job_errors_show_only_the_paths_the_client_sent():
    request = {"calibration": {"uri": "idx:///data/mine?split=test"}, "model": "m"}
    message = "cannot read /data/mine/raw/x.gz after /srv/learngene/store/demo/1 and /root/.cache/x (or '/etc/p')"
    assert redact_paths(message, request) == (
        "cannot read /data/mine/raw/x.gz after <server path> and <server path> (or '<server path>')"
    )
    assert redact_paths("/data/minesecret/x and /data/mine", request) == "<server path> and /data/mine"
    shards = {"calibration": {"uri": "wds:///data/train-{0000..0009}.tar"}, "ancestor": {"checkpoint": "local-dir:/m"}}
    message = (
        "data reference 'wds:///data/train-{0000..0009}.tar': shard /data/train-0003.tar is not a .tar file; "
        "/m/config.json is not JSON; /data/other.tar"
    )
    assert redact_paths(message, shards) == message.replace("/data/other.tar", "<server path>")
    opened = {"calibration": {"uri": "wds:///{srv,srv}/data/a.tar"}}  # a brace right after the root names no folder
    assert redact_paths("cannot read /srv/learngene/store/x", opened) == "cannot read <server path>"


# --- 3: non-finite and absurd numbers ------------------------------------------------------------------------


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e309"])
@pytest.mark.parametrize(
    ("path", "loc"),
    [
        (("fit", "lr"), ["body", "fit", "lr"]),
        (("fit", "noise"), ["body", "fit", "noise"]),
        (("overrides", "mlp_ratio"), ["body", "overrides", "mlp_ratio"]),
    ],
)
def test_non_finite_numbers_are_a_422_naming_the_field(defaults, literal, path, loc):
    api, _, _ = defaults
    body = {**BODY, "fit": {"batch_size": 8}}  # no calibration data, no steps: only the bad number is refused
    body[path[0]] = {**body[path[0]], path[1]: "@@"}
    raw = json.dumps(body).replace('"@@"', literal)
    response = httpx.post(
        f"{api.url}/v1/initializations", content=raw, timeout=30, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["errors"]] == [loc]


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-1e309", "[NaN]", '{"model": NaN}', "1e309", '"x"', "null"])
def test_bare_non_finite_bodies_are_a_422(defaults, raw):
    api, _, _ = defaults
    response = httpx.post(
        f"{api.url}/v1/initializations", content=raw, timeout=30, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][0] == "body"


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"fit": {"lr": 1e6}}, ["body", "fit", "lr"]),
        ({"fit": {"noise": 1e9}}, ["body", "fit", "noise"]),
        ({"fit": {"seed": 2**40}}, ["body", "fit", "seed"]),
        ({"fit": {"seed": -1}}, ["body", "fit", "seed"]),
    ],
)
def test_absurd_numbers_are_refused_by_their_bounds(defaults, change, loc):
    api, _, _ = defaults
    response = post(api, {**BODY, **change})
    assert response.status_code == 422 and response.json()["errors"][0]["loc"] == loc, response.text


@pytest.mark.parametrize(
    ("training", "loc"),
    [
        ({"lr": 1e3}, ["body", "training", "lr"]),
        ({"tau": 1e9}, ["body", "training", "tau"]),
        ({"lam": 1e9}, ["body", "training", "lam"]),
        ({"seed": 2**63}, ["body", "training", "seed"]),
    ],
)
def test_condensation_numbers_are_bounded(defaults, training, loc):
    api, _, datasets = defaults
    body = {"name": "bounded", "aux": {"model": BODY["model"], "overrides": BODY["overrides"]},
            "ancestor": {"model": BODY["model"], "checkpoint": f"{datasets}/a.safetensors"},
            "data": {"uri": f"{datasets}/calib.npz"}, "training": training}  # fmt: skip
    response = httpx.post(f"{api.url}/v1/admin/condensations", json=body, headers=ADMIN, timeout=30)
    assert response.status_code == 422 and response.json()["errors"][0]["loc"] == loc, response.text


# --- 4: a checkpoint or template set is never non-finite -----------------------------------------------------


def overflowing_set(spec) -> TemplateSet:
    """Finite, so it passes every check at publish, but its composed weights overflow float32 (1e30 x 1e30)."""
    template_set = random_template_set(spec)
    for tensors in (template_set.templates, template_set.scalers):
        for t in tensors.values():
            t.mul_(1e30)
    return template_set


def test_a_non_finite_checkpoint_fails_its_job_and_is_never_stored_or_cached(defaults):
    api, home, _ = defaults
    spec = tiny_spec(depth=2)
    TemplateStore.local(home / "store").publish(overflowing_set(spec), "overflow")
    body = {"model": spec.model, "overrides": spec.overrides(), "template_set": "overflow", "fit": {"steps": 0}}
    stored = lambda: sorted([*(home / "artifacts").glob("*"), *(home / "work" / "checkpoints").glob("*")])  # noqa: E731 - hidden temporary files included
    before = stored()
    with httpx.Client(base_url=api.url, timeout=30) as http:
        for _ in range(2):  # the second, identical request is not answered from a cache
            job = http.post("/v1/initializations", json=body).json()
            done = wait_for(http, f"/v1/initializations/{job['id']}", finished)
            assert done["status"] == "failed" and done["error"]["type"] == "NonFiniteWeights", done
            assert "tensors of the checkpoint hold NaN or Inf" in done["error"]["message"]
            assert http.get(f"/v1/initializations/{job['id']}/checkpoint").status_code == 409
    assert stored() == before  # nothing written, not even a temporary file


def test_a_diverging_condensation_publishes_nothing(defaults, ancestor):
    """An ancestor whose logits overflow makes the condensation's loss NaN: the job fails, no version appears."""
    api, home, datasets = defaults
    spec = tiny_spec(embed_dim=64, num_heads=2, depth=2)
    huge = spec.build()
    huge.load_state_dict({k: v * 1e30 if v.is_floating_point() else v for k, v in ancestor.state_dict().items()})
    export_checkpoint(huge, datasets / "huge.safetensors", spec=spec)
    body = {"name": "diverged", "aux": {"model": spec.model, "overrides": tiny_spec(depth=2).overrides()},
            "ancestor": {"model": spec.model, "overrides": spec.overrides(),
                         "checkpoint": str(datasets / "huge.safetensors")},
            "data": {"uri": f"{datasets}/calib.npz"},
            "training": {"steps": 3, "batch_size": 8, "warmup_steps": 0, "recipe": "plain"}}  # fmt: skip
    with httpx.Client(base_url=api.url, timeout=30, headers=ADMIN) as http:
        job = http.post("/v1/admin/condensations", json=body)
        assert job.status_code == 202, job.text
        done = wait_for(http, f"/v1/admin/condensations/{job.json()['id']}", finished)
        assert done["status"] == "failed" and done["error"]["type"] == "NonFiniteWeights", done
        assert http.get("/v1/template-sets", params={"name": "diverged"}).json()["items"] == []
    assert not (home / "store" / "diverged").exists() or TemplateStore.local(home / "store").list("diverged") == []


# --- 5: decoding is bounded before it allocates ---------------------------------------------------------------


def write_npz_bomb(path: Path, rows: int, row_shape=(28, 28)) -> None:
    """A .npz whose `images` member decodes to rows x 784 bytes of zeros (written without ever holding them), with
    `labels` 0..9."""
    header = {"descr": "|u1", "fortran_order": False, "shape": (rows, *row_shape)}
    total, zero = rows * math.prod(row_shape), bytes(8 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as npz:
        with npz.open("images.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, header)
            while total:
                f.write(zero[: min(total, len(zero))])
                total -= min(total, len(zero))
        with npz.open("labels.npy", "w") as f:
            np.lib.format.write_array(f, np.arange(rows, dtype=np.int64) % 10)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bomb")
    write_npz_bomb(folder / "bomb.npz", rows=(2 << 30) // 784)  # 2 GiB of images, about 2 MB on disk
    assert folder.joinpath("bomb.npz").stat().st_size < 4 << 20
    return folder


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def test_a_compressed_bomb_is_refused_from_its_header(defaults, bomb):
    api, _, _ = defaults
    before = rss_mib(api.popen.pid)
    response = post(api, {**BODY, "calibration": {"uri": str(bomb / "bomb.npz"), "max_samples": 64}})
    assert response.status_code == 400  # outside the default roots, before its header is even opened
    os.link(bomb / "bomb.npz", defaults[2] / "bomb.npz")
    response = post(api, {**BODY, "calibration": {"uri": str(defaults[2] / "bomb.npz"), "max_samples": 64}})
    assert response.status_code == 422, response.text
    error = response.json()["errors"][0]
    assert error["loc"] == ["body", "calibration", "uri"]
    assert re.search(
        r"images of bomb.npz decodes to 2,14\d,\d{3},\d{3} bytes, over the limit of 1,073,741,824", error["msg"]
    )
    assert rss_mib(api.popen.pid) - before < 50  # the API read a header, nothing more


def test_only_the_chosen_samples_of_a_large_file_are_decoded(tmp_path, bomb):
    """With a limit that admits the 2 GiB bundle, a job that asks for 64 samples streams the file and keeps 64:
    the process's memory rises by far less than the data's size (sampled every 50 ms while the job runs)."""
    small = np.random.default_rng(0).integers(0, 255, (64, 28, 28), dtype=np.uint8)
    np.savez(bomb / "small.npz", images=small, labels=np.arange(64) % 10)
    env = service_env(tmp_path, redis_url=None, data_roots=[bomb], LEARNGENE_LIMITS__DECODED_BYTES=str(3 << 30))
    api = start_api(env, tmp_path / "api.log")
    try:
        with httpx.Client(base_url=api.url) as http:  # a first job: imports, the template set, torch's threads
            warm = post(api, {**BODY, "calibration": {"uri": str(bomb / "small.npz"), "max_samples": 64}}).json()
            assert wait_for(http, f"/v1/initializations/{warm['id']}", finished)["status"] == "succeeded"
        base, peak, stop = rss_mib(api.popen.pid), [0.0], threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                peak[0] = max(peak[0], rss_mib(api.popen.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        job = post(api, {**BODY, "calibration": {"uri": str(bomb / "bomb.npz"), "max_samples": 64}}).json()
        with httpx.Client(base_url=api.url) as http:
            done = wait_for(http, f"/v1/initializations/{job['id']}", finished, timeout=240)
        stop.set()
        sampler.join()
    finally:
        api.stop()
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["fit"]["steps"] == 2
    assert peak[0] - base < 300, f"RSS rose by {peak[0] - base:.0f} MiB while decoding a 2 GiB file"


def test_an_image_over_the_pixel_limit_fails_its_job_from_its_header(defaults):
    api, _, datasets = defaults
    folder = datasets / "huge-images" / "class0"
    folder.mkdir(parents=True)
    Image.new("L", (4100, 4100)).save(folder / "big.png")  # 16.8 M pixels, over the default 4096 x 4096
    job = post(api, {**BODY, "calibration": {"uri": f"imagefolder://{datasets}/huge-images", "max_samples": 4}})
    with httpx.Client(base_url=api.url) as http:
        done = wait_for(http, f"/v1/initializations/{job.json()['id']}", finished)
    assert done["status"] == "failed" and done["error"]["type"] == "DataRefError"
    assert "class0/big.png has 4100 x 4100 pixels, over the limit of 16,777,216" in done["error"]["message"]


# --- 6: loading is cancellable and bounded in time -------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_folder(tmp_path_factory):
    """An ImageFolder that takes long to read: 240 links to one 4000 x 4000 PNG (tiny on disk, slow to decode)."""
    root = tmp_path_factory.mktemp("slow")
    (root / "slow" / "a").mkdir(parents=True)
    first = root / "slow" / "a" / "0.png"
    Image.new("L", (4000, 4000), color=128).save(first)
    for i in range(1, 240):
        os.link(first, root / "slow" / "a" / f"{i}.png")
    return root


def slow_body(root: Path) -> dict:
    return {**BODY, "calibration": {"uri": f"imagefolder://{root}/slow", "max_samples": 240}}


def test_cancel_during_loading_takes_effect_at_once_and_other_jobs_go_on(tmp_path, slow_folder):
    env = service_env(tmp_path, redis_url=None, data_roots=[slow_folder])  # default: two executor threads
    api = start_api(env, tmp_path / "api.log")
    try:
        with httpx.Client(base_url=api.url, timeout=30) as http:
            slow = http.post("/v1/initializations", json=slow_body(slow_folder)).json()
            url = f"/v1/initializations/{slow['id']}"
            wait_for(http, url, lambda j: j["status"] == "running")
            quick = http.post("/v1/initializations", json={**BODY, "fit": {"steps": 0}}).json()
            quick_done = wait_for(http, f"/v1/initializations/{quick['id']}", finished)
            assert quick_done["status"] == "succeeded"
            assert http.get(url).json()["status"] == "running"  # the slow one is still reading its images
            asked = time.time()
            http.delete(url)
            done = wait_for(http, url, finished, poll=0.05)
    finally:
        api.stop()
    assert done["status"] == "cancelled" and done["progress"] is None  # stopped while loading, before any step
    finished_at = datetime.datetime.fromisoformat(done["timings"]["finished_at"]).timestamp()
    assert finished_at - asked < 5  # loading alone takes far longer (240 x 16 M pixels)


def test_loading_obeys_the_jobs_time_limit(tmp_path, slow_folder):
    env = service_env(tmp_path, redis_url=None, data_roots=[slow_folder], LEARNGENE_INHERIT_SOFT_TIME_LIMIT_S="2")
    api = start_api(env, tmp_path / "api.log")
    try:
        with httpx.Client(base_url=api.url, timeout=30) as http:
            job = http.post("/v1/initializations", json=slow_body(slow_folder)).json()
            done = wait_for(http, f"/v1/initializations/{job['id']}", finished)
    finally:
        api.stop()
    assert done["status"] == "failed" and done["error"]["type"] == "TimeLimitExceeded"
    assert "time limit of 2 s" in done["error"]["message"]
    assert done["timings"]["running_s"] < 10


# --- 7 and 8: what is loaded was verified; the store never answers 500 --------------------------------------


def test_a_set_placed_by_hand_is_checked_and_broken_versions_never_answer_500(defaults):
    api, home, _ = defaults
    with httpx.Client(base_url=api.url, timeout=30) as http:
        assert http.get("/v1/template-sets/demo").status_code == 200
        crafted = random_template_set(tiny_spec())
        crafted.scalers.pop(next(iter(crafted.scalers)))  # copied into the store without `publish`
        crafted.save(home / "store" / "crafted" / "1")
        (home / "store" / "demo" / "7").mkdir()  # an empty version folder
        listed = http.get("/v1/template-sets")
        assert listed.status_code == 200
        assert ("demo", 7) not in {(v["name"], v["version"]) for v in listed.json()["items"]}
        assert http.get("/v1/template-sets/demo").json()["ref"] == "demo@1"  # latest: the highest whole version
        broken = http.get("/v1/template-sets/demo@7")
        assert broken.status_code == 409 and "demo@7 is damaged" in broken.json()["detail"]
        spec = tiny_spec()
        use = http.post(
            "/v1/initializations",
            json={"model": spec.model, "overrides": spec.overrides(), "template_set": "crafted@1", "fit": {"steps": 0}},
        )
        assert use.status_code == 202
        done = wait_for(http, f"/v1/initializations/{use.json()['id']}", finished)
        assert done["status"] == "failed" and done["error"]["type"] == "IntegrityError"
        assert "is missing" in done["error"]["message"] and str(home) not in done["error"]["message"]
        damaged = {**BODY, "template_set": "demo@7", "fit": {"steps": 0}}
        assert http.post("/v1/initializations", json=damaged).status_code == 409
        alias = http.put("/v1/admin/template-sets/ghost/aliases/prod", json={"version": 1}, headers=ADMIN)
        assert alias.status_code == 404 and not (home / "store" / "ghost").exists()


# --- 10: smaller holes ------------------------------------------------------------------------------------------


def test_file_uris_name_no_host(defaults):
    api, _, datasets = defaults
    remote = post(api, {**BODY, "calibration": {"uri": f"file://evil.example{datasets}/calib.npz", "max_samples": 8}})
    assert remote.status_code == 422 and "no host but localhost" in remote.json()["errors"][0]["msg"]
    local = post(api, {**BODY, "calibration": {"uri": f"file://localhost{datasets}/calib.npz", "max_samples": 8}})
    assert local.status_code == 202, local.text


def test_idempotency_keys_are_not_echoed_and_if_none_match_star_answers_304(defaults):
    api, _, _ = defaults
    key = "k-" + "s3cr3t" * 20
    first = post(api, {**BODY, "fit": {"steps": 0}}, headers={"Idempotency-Key": key})
    conflict = post(api, {**BODY, "fit": {"steps": 0, "seed": 9}}, headers={"Idempotency-Key": key})
    assert first.status_code == 202 and conflict.status_code == 422
    assert "s3cr3t" not in conflict.text and "s3cr3t" not in first.text
    with httpx.Client(base_url=api.url, timeout=30) as http:
        done = wait_for(http, f"/v1/initializations/{first.json()['id']}", finished)
        url = f"/v1/initializations/{done['id']}/checkpoint"
        etag = f'"{done["checkpoint"]["sha256"]}"'
        assert http.get(url, headers={"If-None-Match": "*"}).status_code == 304
        assert http.get(url, headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304
        assert http.get(url, headers={"If-None-Match": '"other"'}).status_code == 200


# --- 20: headers that never end ----------------------------------------------------------------------------------


def test_headers_that_never_end_get_a_408_and_the_connection_closed(tmp_path):
    api = start_api(default_env(tmp_path, LEARNGENE_HEADER_TIMEOUT_S="1"), tmp_path / "api.log")
    try:
        host, port = api.url.removeprefix("http://").split(":")
        slow, idle = socket.create_connection((host, int(port))), socket.create_connection((host, int(port)))
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")  # and never the blank line
        for sock in (slow, idle):  # one dribbling its headers, one that sends nothing at all
            sock.settimeout(patient(30))
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in answer  # then EOF: closed
            sock.close()
        with httpx.Client(base_url=api.url) as http:  # a request whose headers arrive in time is served
            assert [http.get("/healthz").status_code for _ in range(3)] == [200, 200, 200]
    finally:
        api.stop()
