"""The light client: the distribution's core (httpx, typer, pydantic; no extra) runs the Python client and every
remote command against a real API.

Checked twice: here, each remote command in a fresh process in which the heavy packages cannot be imported (an
import of one fails the command, and so the test), through a whole session of a user (submit, wait, list, logs,
download, release, the template sets and their card, an admin condensation and an alias move); and in a fresh
virtualenv holding `pip install <this project>` alone, where torch is not installed at all."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from learngene.formats.checkpoint import export_checkpoint
from tests.support.data import FMNIST, REPO
from tests.support.fixtures import ANCESTOR_SPEC
from tests.support.harness import ADMIN_TOKEN, service_env, start_api
from tests.support.scale import PROCESS_TIMEOUT_S

# What a remote command must never import: the method, its numerics and files, the servers, the queue.
HEAVY = ("torch", "timm", "torchvision", "numpy", "safetensors", "PIL", "matplotlib", "webdataset", "obstore",
         "fastapi", "starlette", "uvicorn", "celery", "kombu", "redis", "model_signing")  # fmt: skip
BLOCKED = f"""
import runpy, sys
for name in {HEAVY!r}:
    sys.modules[name] = None  # `import name` now raises ModuleNotFoundError
runpy.run_module("service.cli", run_name="__main__", alter_sys=True)
"""
SHAPE = {"img_size": 28, "patch_size": 7, "in_chans": 1, "num_classes": 10}
REQUEST = {"model": "vit_tiny_patch16_224", "overrides": {"depth": 2, "embed_dim": 64, "num_heads": 1, **SHAPE}}


def client_env(**extra: str) -> dict[str, str]:
    """The user's environment: none of the server's variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LEARNGENE_")} | extra


def light(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`learngene ARGS` with the heavy packages unimportable; exit 0 asserted, so a heavy import fails here."""
    run = subprocess.run([sys.executable, "-c", BLOCKED, *args], cwd=REPO, capture_output=True, text=True,
                         env=client_env(**env), timeout=PROCESS_TIMEOUT_S)  # fmt: skip
    assert run.returncode == 0, f"learngene {' '.join(args)}: {run.stderr}"
    return run


def refused(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`learngene ARGS` as `light` runs it, refused: exit 2 and one line on stderr."""
    run = subprocess.run([sys.executable, "-c", BLOCKED, *args], cwd=REPO, capture_output=True, text=True,
                         env=client_env(**env), timeout=PROCESS_TIMEOUT_S)  # fmt: skip
    assert run.returncode == 2 and len(run.stderr.splitlines()) == 1, run.stderr
    return run


def last(run: subprocess.CompletedProcess):
    return json.loads(run.stdout.strip().splitlines()[-1])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_client_knows_the_servers_job_statuses_and_kinds():
    from jobs import model
    from service import client

    assert [s.value for s in client.JobStatus] == [s.value for s in model.JobStatus]
    assert [k.value for k in client.JobKind] == [k.value for k in model.JobKind]
    assert client.TERMINAL == model.TERMINAL


def test_a_users_session_imports_neither_the_method_nor_a_server(embedded_stack, tmp_path):
    url = embedded_stack.url
    overrides = [f"--set={k}={v}" for k, v in REQUEST["overrides"].items()]
    done = last(light("submit", "--model", REQUEST["model"], *overrides, "--out", str(tmp_path / "vit"), "--url", url))
    assert done["status"] == "succeeded" and done["downloaded_to"] == str(tmp_path / "vit")
    weights = tmp_path / "vit" / "model.safetensors"
    assert sha256(weights) == done["checkpoint"]["sha256"]

    (tmp_path / "request.json").write_text(json.dumps(REQUEST))
    queued = last(light("submit", "-f", str(tmp_path / "request.json"), "--url", url))
    assert queued["id"] != done["id"] and queued["request"]["overrides"]["depth"] == 2
    assert last(light("job", "wait", queued["id"], "--url", url))["status"] == "succeeded"
    # LEARNGENE_URL instead of --url, from here on
    assert last(light("job", "status", done["id"], LEARNGENE_URL=url))["id"] == done["id"]
    listed = last(light("job", "list", "--json", "--limit", "500", LEARNGENE_URL=url))
    assert {done["id"], queued["id"]} <= {job["id"] for job in listed}
    table = light("job", "list", LEARNGENE_URL=url).stdout
    assert all(column in table for column in ("model", "size", "template set", "phase"))
    assert "succeeded" in light("job", "logs", done["id"], LEARNGENE_URL=url).stdout
    light("job", "download", queued["id"], "--out", str(tmp_path / "second.safetensors"), LEARNGENE_URL=url)
    assert sha256(tmp_path / "second.safetensors") == sha256(weights)  # same request, same seed: the same bytes
    light("job", "release", queued["id"], LEARNGENE_URL=url)
    gone = refused("job", "download", queued["id"], "--out", str(tmp_path / "third.safetensors"), LEARNGENE_URL=url)
    assert gone.stderr.startswith("error: the API answered 410: ")

    sets = last(light("templates", "list", "--json", LEARNGENE_URL=url))
    demo = next(v for v in sets if v["name"] == "demo" and "prod" in v["aliases"])
    shown = last(light("templates", "show", "demo@prod", "--json", LEARNGENE_URL=url))
    assert shown["ref"] == f"demo@{demo['version']}" and shown["digest"] == demo["digest"]
    assert "configuration" in light("templates", "show", "demo@prod", LEARNGENE_URL=url).stdout


def test_recommend_ranks_the_sets_of_a_domain_by_their_cards_prediction(embedded_stack):
    url = embedded_stack.url
    grey = ["--img-size", "28", "--in-chans", "1", "--num-classes", "10"]
    ranked = last(light("templates", "recommend", *grey, "--depth", "5", "--embed-dim", "96", "--json", "--url", url))
    assert all((v["domain"]["img_size"], v["domain"]["in_chans"], v["domain"]["num_classes"]) == ([28, 28], 1, 10)
               for v in ranked)  # fmt: skip
    predicted = [v["prediction"]["accuracy"] for v in ranked if v["prediction"]]
    assert predicted == sorted(predicted, reverse=True) and all(v["prediction"] for v in ranked[: len(predicted)])
    demo = next(v for v in ranked if v["name"] == "demo")
    card = httpx.get(f"{url}/v1/template-sets/demo@{demo['version']}/card").json()
    nearest = min(card["rows"], key=lambda r: (abs(math.log(5 / r["depth"])) + abs(math.log(96 / r["embed_dim"])),
                                               -r["accuracy"]))  # fmt: skip
    assert demo["prediction"] == {"accuracy": nearest["accuracy"], "row": nearest}
    table = light("templates", "recommend", *grey, "--depth", "5", "--embed-dim", "96", "--url", url).stdout
    assert f"demo@{demo['version']}" in table and f"{nearest['depth']} x {nearest['embed_dim']}" in table

    rgb = last(light("templates", "recommend", "--in-chans", "3", "--json", "--url", url))
    assert all(v["domain"]["in_chans"] == 3 for v in rgb) and "demo" not in {v["name"] for v in rgb}
    one_sided = httpx.get(f"{url}/v1/template-sets", params={"depth": 4})
    assert one_sided.status_code == 422 and one_sided.json()["errors"][0]["loc"] == ["query", "embed_dim"]
    if len(ranked) > 1:  # a ranking pages by position, in the same order
        first = httpx.get(
            f"{url}/v1/template-sets",
            params={"depth": 5, "embed_dim": 96, "num_classes": 10, "in_chans": 1, "img_size": 28, "limit": 1},
        ).json()
        second = httpx.get(first["next"]).json()  # fmt: skip
        assert [first["items"][0]["digest"], second["items"][0]["digest"]] == [v["digest"] for v in ranked[:2]]


def test_an_admin_condenses_and_moves_an_alias_through_the_api(embedded_stack, ancestor, request, tmp_path):
    url, folder = embedded_stack.url, embedded_stack.folder(request)
    checkpoint = folder / "light-ancestor.safetensors"
    export_checkpoint(ancestor, checkpoint, spec=ANCESTOR_SPEC)
    flags = [
        "--name", "light", "--ancestor-model", ANCESTOR_SPEC.model, "--ancestor", str(checkpoint),
        *(f"--ancestor-set={k}={v}" for k, v in ANCESTOR_SPEC.overrides().items()),
        "--aux-model", ANCESTOR_SPEC.model,
        *(f"--aux-set={k}={v}" for k, v in {**ANCESTOR_SPEC.overrides(), "depth": 2}.items()),
        "--data", f"idx://{FMNIST}", "--max-samples", "1000",
        "--training", "steps=30", "--training", "batch_size=16", "--training", "warmup_steps=5",
        "--training", "recipe=plain", "--promote", "candidate", "--promote-if", "always", "--url", url,
    ]  # fmt: skip
    unauthorized = refused("admin", "condense", *flags)
    assert "401" in unauthorized.stderr and "LEARNGENE_ADMIN_TOKEN" in unauthorized.stderr  # where the token goes

    job = last(light("admin", "condense", *flags, "--wait", LEARNGENE_ADMIN_TOKEN=ADMIN_TOKEN))
    assert job["status"] == "succeeded" and job["result"]["ref"] == "light@1"
    listed = last(light("templates", "list", "light", "--json", "--url", url))
    assert [(v["version"], v["aliases"]) for v in listed] == [(1, ["candidate"])]
    assert listed[0]["domain"]["num_classes"] == 10

    card = last(light("templates", "card", "light@1", "--json", "--out", str(tmp_path / "card"), "--url", url))
    assert card["rows"] and all(0 <= row["accuracy"] <= 1 for row in card["rows"])
    assert json.loads((tmp_path / "card" / "card.json").read_text()) == card
    assert (tmp_path / "card" / "card.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "light" in (tmp_path / "card" / "README.md").read_text()

    moved = last(light("templates", "promote", "light", "1", "beta", "--json", "--url", url,
                       LEARNGENE_ADMIN_TOKEN=ADMIN_TOKEN))  # fmt: skip
    assert moved["name"] == "light" and moved["alias"] == "beta" and moved["version"] == 1
    shown = last(light("templates", "show", "light@beta", "--json", "--url", url))
    assert shown["aliases"] == {"candidate": 1, "beta": 1}


def test_the_port_is_one_variable_for_the_server_and_its_clients(tmp_path):
    """LEARNGENE_PORT moves `learngene serve` (as `make run PORT=...` does), and the clients' default URL with it."""
    api = start_api(service_env(tmp_path, redis_url=None, data_roots=[]), tmp_path / "api.log", port_from_env=True)
    try:
        port = api.url.rpartition(":")[2]
        assert port != "8000"
        assert last(light("job", "list", "--json", LEARNGENE_PORT=port)) == []
        assert "demo" in {v["name"] for v in last(light("templates", "list", "--json", LEARNGENE_PORT=port,
                                                        LEARNGENE_URL=api.url))}  # fmt: skip
    finally:
        api.stop()
    dry = subprocess.run(["make", "-n", "run", "PORT=8123"], cwd=REPO, capture_output=True, text=True, check=True)
    assert "serve --host 127.0.0.1 --port 8123" in dry.stdout


@pytest.fixture(scope="module")
def core_only(tmp_path_factory) -> Path:
    """A fresh virtualenv with `pip install <project>`: the distribution's core, no extra (from a copy of the
    sources, so that the build's files stay out of the checkout)."""
    home = tmp_path_factory.mktemp("light-client")
    source = home / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for package in ("learngene", "service", "jobs", "workers", "templates_store", "storage"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    venv = home / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=PROCESS_TIMEOUT_S)
    install = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-c", str(REPO / "requirements.lock"),
               str(source)]  # fmt: skip
    run = subprocess.run(install, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
    assert run.returncode == 0, run.stderr[-3000:]
    return venv


def test_the_core_distribution_alone_runs_the_client_and_the_remote_commands(core_only, embedded_stack):
    python, learngene = str(core_only / "bin" / "python"), str(core_only / "bin" / "learngene")

    def run(*argv: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, env=client_env(**env), timeout=PROCESS_TIMEOUT_S)

    for package in ("torch", "timm", "numpy", "fastapi", "celery"):
        assert run(python, "-c", f"import {package}").returncode == 1  # not installed
    listed = run(learngene, "templates", "list", "--json", LEARNGENE_URL=embedded_stack.url)
    assert listed.returncode == 0, listed.stderr
    assert "demo" in {v["name"] for v in json.loads(listed.stdout)}
    jobs = run(learngene, "job", "list", "--json", "--url", embedded_stack.url)
    assert jobs.returncode == 0 and isinstance(json.loads(jobs.stdout), list), jobs.stderr
    code = "from service.client import Client; print(Client.from_env().template_set('demo@prod')['ref'])"
    assert run(python, "-c", code, LEARNGENE_URL=embedded_stack.url).stdout.startswith("demo@")

    # A command of an extra says which one to install, in one line.
    for argv, extra in ((["serve"], "service"), (["init", "--model", "vit_tiny_patch16_224", "--out", "x"], "method"),
                        (["templates", "list"], "method"), (["worker"], "worker")):  # fmt: skip
        refused = run(learngene, *argv)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.count("\n") == 1 and f"pip install 'learngene[{extra}]'" in refused.stderr
