"""Static guarantees of the Docker deployment: docker-compose.yml structure, Dockerfile users and bases, and
docker/validate.sh (hadolint + `docker-compose config`), which needs no Docker engine but does need docker-compose."""

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.scale import PROCESS_TIMEOUT_S

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILES = {name: ROOT / "docker" / f"{name}.Dockerfile" for name in ("api", "worker")}
GPU_SERVICES = ("worker", "worker-condense", "condense")


def seconds(duration: str) -> float:
    """A Compose duration ("150s", "2m30s", "1h") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def mounts(service: str) -> dict[str, str]:
    """Container path -> source of each volume of a service."""
    return {v.split(":")[1]: v.split(":")[0] for v in SERVICES[service]["volumes"]}


def test_redis_is_durable_and_checked():
    assert "--appendonly yes" in SERVICES["redis"]["command"]
    assert "redis-cli" in SERVICES["redis"]["healthcheck"]["test"]


@pytest.mark.parametrize("service", ["api", "worker", "worker-condense", "condense", "flower"])
def test_services_wait_for_a_healthy_redis(service):
    assert SERVICES[service]["depends_on"]["redis"]["condition"] == "service_healthy"


@pytest.mark.parametrize("service", ["redis", "s3", "api", "worker", "worker-condense"])
def test_long_running_services_have_healthchecks(service):
    assert SERVICES[service]["healthcheck"]["test"]
    assert SERVICES[service]["restart"] == "unless-stopped"


def gpu_devices(service: str) -> list[dict]:
    return SERVICES[service]["deploy"]["resources"]["reservations"]["devices"]


def env_default(value: str) -> tuple[str, str]:
    """(variable, default) of a `${VARIABLE:-default}` interpolation."""
    match = re.fullmatch(r"\$\{(\w+):-([^}]*)\}", value)
    assert match, f"not an interpolation with a default: {value!r}"
    return match[1], match[2]


@pytest.mark.parametrize("service", GPU_SERVICES)
def test_gpu_reservation(service):
    devices = gpu_devices(service)
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert all("count" not in d for d in devices)  # a named device, not "any one GPU"


def test_each_gpu_worker_reserves_its_own_device():
    """The initialization and the condensation workers reserve different GPUs by default, each set by a variable of
    its own; the one-shot condensation takes the condensation worker's."""
    ids = {s: [env_default(i) for i in gpu_devices(s)[0]["device_ids"]] for s in GPU_SERVICES}
    assert ids["worker"] == [("LEARNGENE_INHERIT_GPU", "0")]
    assert ids["worker-condense"] == [("LEARNGENE_CONDENSE_GPU", "1")]
    assert ids["condense"] == ids["worker-condense"]


def test_compose_has_no_version_key():
    assert "version" not in COMPOSE  # obsolete in the Compose Specification; Compose v2 warns about it
    assert not re.search(r"^version\s*:", (ROOT / "docker-compose.yml").read_text(), re.MULTILINE)


def test_api_healthcheck_is_readiness():
    dockerfile = DOCKERFILES["api"].read_text()
    assert "http://127.0.0.1:8000/readyz" in SERVICES["api"]["healthcheck"]["test"][-1]
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD .*http://127\.0\.0\.1:8000/readyz", dockerfile, re.MULTILINE)
    assert "/healthz" not in dockerfile


@pytest.mark.parametrize("service", ["worker", "worker-condense"])
def test_worker_healthcheck_is_the_heartbeat(service):
    """Cheap: the heartbeat file's age (tests/service/test_worker_heartbeat.py runs it against a real worker), never a
    Celery client round trip through the broker."""
    check = ["python", "-m", "workers.heartbeat", "--max-age", "30"]
    assert SERVICES[service]["healthcheck"]["test"] == ["CMD", *check]
    dockerfile = DOCKERFILES["worker"].read_text()
    assert f"CMD {check}".replace("'", '"') in dockerfile
    assert re.search(r"LEARNGENE_WORKER_HEARTBEAT_FILE=/tmp/\S+", dockerfile)
    assert "inspect ping" not in dockerfile + (ROOT / "docker-compose.yml").read_text()
    assert SERVICES["condense"]["healthcheck"] == {"disable": True}  # a one-shot run has no heartbeat


def test_flower_is_on_loopback_and_needs_a_password(tmp_path):
    """The port is published on 127.0.0.1 unless FLOWER_BIND says otherwise, and the container's command refuses to
    start Flower without FLOWER_BASIC_AUTH: run here with a stand-in `celery` that records its arguments."""
    flower = SERVICES["flower"]
    assert flower["ports"] == ["${FLOWER_BIND:-127.0.0.1}:5555:5555"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == "${FLOWER_BASIC_AUTH:-}"
    argv = [part.replace("$$", "$") for part in flower["command"]]  # Compose's escape of a literal $
    (tmp_path / "celery").write_text('#!/bin/sh\necho "celery $*"\n')
    (tmp_path / "celery").chmod(0o755)
    path = f"{tmp_path}:{os.environ['PATH']}"
    refused = subprocess.run(argv, env={"PATH": path, "FLOWER_BASIC_AUTH": ""}, capture_output=True, text=True)
    assert refused.returncode == 1 and "set FLOWER_BASIC_AUTH" in refused.stderr and not refused.stdout
    started = subprocess.run(
        argv, env={"PATH": path, "FLOWER_BASIC_AUTH": "ops:secret"}, capture_output=True, text=True
    )
    assert started.returncode == 0 and started.stdout == "celery flower\n"


def test_condensations_never_hold_up_initializations():
    """Each queue has a worker of its own: a long condensation cannot occupy the only worker of `inherit`."""
    queues = {
        s: SERVICES[s]["command"][SERVICES[s]["command"].index("--queues") + 1] for s in ("worker", "worker-condense")
    }
    assert queues == {"worker": "inherit", "worker-condense": "condense"}


@pytest.mark.parametrize("service", ["worker", "worker-condense"])
def test_worker_outlives_its_soft_shutdown(service):
    worker = SERVICES[service]
    soft_shutdown = float(worker["environment"]["LEARNGENE_WORKER_SOFT_SHUTDOWN_S"])
    assert worker["environment"]["REMAP_SIGTERM"] == "SIGQUIT"
    assert worker["stop_signal"] == "SIGTERM"
    assert seconds(worker["stop_grace_period"]) >= soft_shutdown + 15


def test_profiles():
    assert SERVICES["condense"]["profiles"] == ["admin"]
    assert SERVICES["condense"]["restart"] == "no"
    assert SERVICES["condense"]["entrypoint"][:2] == ["learngene", "condense"]
    assert SERVICES["flower"]["profiles"] == ["monitoring"]
    assert all("profiles" not in SERVICES[s] for s in ("redis", "s3", "s3-bucket", "api", "worker", "worker-condense"))


def test_api_and_workers_share_only_redis_and_object_storage():
    """No volume is shared: the store and the checkpoints are on S3, so the services can run on different hosts."""
    own = {s: {src for src in mounts(s).values() if not src.startswith("$")} for s in ("api", "worker", "condense")}
    assert own["api"].isdisjoint(own["worker"]) and own["api"].isdisjoint(own["condense"])
    for service in ("api", "worker", "worker-condense", "condense"):
        env = SERVICES[service]["environment"]
        assert env["LEARNGENE_STORE"].startswith("s3://") and env["LEARNGENE_ARTIFACTS"].startswith("s3://")
        assert env["AWS_ENDPOINT_URL"] == "${AWS_ENDPOINT_URL:-http://s3:8333}"
        assert SERVICES[service]["depends_on"]["s3-bucket"]["condition"] == "service_completed_successfully"
    assert SERVICES["s3-bucket"]["depends_on"]["s3"]["condition"] == "service_healthy"
    assert "-s3" in SERVICES["s3"]["command"].split()


def test_admin_token_is_required():
    assert re.fullmatch(r"\$\{LEARNGENE_ADMIN_TOKEN:\?.+\}", SERVICES["api"]["environment"]["LEARNGENE_ADMIN_TOKEN"])


def test_the_api_and_every_worker_read_one_signing_key_from_a_required_secret():
    """Workers sign each checkpoint folder, the API serves the public half: the same key, as a secret (not a volume)."""
    assert re.fullmatch(r"\$\{LEARNGENE_SIGNING_KEY_FILE:\?.+\}", COMPOSE["secrets"]["signing-key"]["file"])
    for service in ("api", "worker", "worker-condense"):
        assert SERVICES[service]["secrets"] == ["signing-key"], service
        assert SERVICES[service]["environment"]["LEARNGENE_SIGNING_KEY"] == "/run/secrets/signing-key", service


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfiles_run_as_non_root(name):
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILES[name].read_text(), re.MULTILINE)
    assert users, f"{name}.Dockerfile has no USER line"
    assert users[-1].split(":")[0] not in ("root", "0")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_are_slim_python(name):
    """Both stages of both images on the same pinned slim Python: no nvidia/cuda base, so the worker carries CUDA
    once, in torch's own nvidia-* wheels."""
    bases = re.findall(r"^FROM\s+(\S+)", DOCKERFILES[name].read_text(), re.MULTILINE)
    assert len(bases) == 2 and len(set(bases)) == 1, bases
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", bases[0]), bases[0]
    assert "nvidia/cuda" not in DOCKERFILES[name].read_text()


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_install_from_the_lock(name):
    """Every pip install takes requirements.lock as constraints, as `make install` does."""
    dockerfile = DOCKERFILES[name].read_text()
    assert re.search(r"^COPY requirements\.lock\b", dockerfile, re.MULTILINE)
    commands = re.sub(r"\\\n\s*", " ", dockerfile)  # continuation lines joined
    installs = re.findall(r"pip install\b[^&\n]*", commands)
    assert installs and all("-c requirements.lock" in i for i in installs), installs
    assert "--index-url https://download.pytorch.org/whl/cu" not in dockerfile  # CUDA torch comes from PyPI
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet -c $(LOCK) -e '.[service,worker,dev,docs]'" in makefile
    assert "make install" in (ROOT / ".ci" / "run").read_text()


def test_api_image_takes_cpu_only_torch():
    """torch and torchvision alone (--no-deps) from PyTorch's CPU index, before the project: its CPU build requires
    no CUDA package, and the build fails if one was installed anyway."""
    dockerfile = DOCKERFILES["api"].read_text()
    cpu = re.search(
        r"pip install [^\n]*--no-deps --index-url https://download\.pytorch\.org/whl/cpu\s*\\\n\s*"
        r"-c requirements\.lock torch torchvision\n",
        dockerfile,
    )
    project = dockerfile.index("'.[service]'")
    assert cpu and cpu.end() < project
    assert "startswith(('nvidia-', 'cuda-', 'triton'))" in dockerfile[project:]


def test_hadolint_ignores_no_rule():
    config = yaml.safe_load((ROOT / "docker" / "hadolint.yaml").read_text())
    assert not config.get("ignored") and config["failure-threshold"] == "warning"


def test_validate_script():
    """Fails (never skips) where hadolint or docker-compose is missing: the script exits 1 and says so."""
    result = subprocess.run(
        ["bash", str(ROOT / "docker" / "validate.sh")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout + result.stderr
