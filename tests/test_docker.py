"""Static guarantees of the Docker deployment: docker-compose.yml structure, Dockerfile users and bases, and
docker/validate.sh (hadolint + `docker-compose config`), which needs no Docker engine but does need docker-compose."""

import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SERVICES = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
DOCKERFILES = {name: ROOT / "docker" / f"{name}.Dockerfile" for name in ("api", "worker")}


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


@pytest.mark.parametrize("service", ["worker", "worker-condense", "condense"])
def test_gpu_reservation(service):
    devices = SERVICES[service]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


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


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfiles_run_as_non_root(name):
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILES[name].read_text(), re.MULTILINE)
    assert users, f"{name}.Dockerfile has no USER line"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_worker_image_is_cuda_runtime():
    bases = re.findall(r"^FROM\s+(\S+)", DOCKERFILES["worker"].read_text(), re.MULTILINE)
    assert re.fullmatch(r"nvidia/cuda:[\w.]+-(cudnn-)?runtime-[\w.]+", bases[-1]), bases[-1]


def test_validate_script():
    """Fails (never skips) where hadolint or docker-compose is missing: the script exits 1 and says so."""
    result = subprocess.run(
        ["bash", str(ROOT / "docker" / "validate.sh")], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
