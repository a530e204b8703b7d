"""Request ids, structured logs and HTTP metrics, read from real processes: `learngene serve` and a Celery worker on
a dedicated Redis database (JSON lines, since their stderr is a file), `learngene serve` on a pseudo-terminal (text
lines), and the embedded executor through real requests in this process."""

from __future__ import annotations

import json
import logging
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from jobs.logs import ContextIds, JsonLines, accepted_request_id, resolve_format
from jobs.model import Job, JobKind
from jobs.redis_store import RedisJobStore
from jobs.settings import Settings
from service.api.main import create_app
from tests.support.data import FMNIST, SHARED_DATA
from tests.support.harness import (
    ADMIN_TOKEN,
    REPO,
    TEST_REDIS_URL,
    finished,
    flush_test_redis,
    free_port,
    service_env,
    start_api,
    start_worker,
    wait_for,
)

CLIENT_TOKEN = "tok-logs-5be0c1d2"
CLIENT = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BODY = {  # fits its scalers, so that every job metric the docs (docs/api.md) name has a value
    "model": "vit_tiny_patch16_224",
    "overrides": dict(depth=2, embed_dim=64, num_heads=1, img_size=28, patch_size=7, in_chans=1, num_classes=10),
    "calibration": {"uri": f"idx://{FMNIST}", "max_samples": 64},
    "fit": {"steps": 5, "batch_size": 16},
}
HEX_ID = re.compile(r"[0-9a-f]{32}")


def json_lines(path: Path) -> list[dict]:
    """Every line of a log file as JSON (json.loads fails the test on any line that is not)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("logs")
    flush_test_redis()
    env = service_env(
        home,
        redis_url=TEST_REDIS_URL,
        data_roots=[SHARED_DATA],
        LEARNGENE_CLIENT_TOKENS=json.dumps({"alpha": CLIENT_TOKEN}),
    )
    worker = start_worker(env, home / "worker.log")
    api = start_api(env, home / "api.log")
    with httpx.Client(base_url=api.url, headers=CLIENT, timeout=30) as http:
        request_id = f"trace-{uuid.uuid4().hex[:12]}"
        accepted = http.post("/v1/initializations", json=BODY, headers={"X-Request-ID": request_id})
        assert accepted.status_code == 202, accepted.text
        job = wait_for(http, f"/v1/initializations/{accepted.json()['id']}", finished, timeout=180)
        assert job["status"] == "succeeded", job["error"]
    time.sleep(0.5)  # the worker's last lines (Celery's "succeeded in") follow the recorded outcome
    yield {"api": api, "worker": worker, "job": job, "request_id": request_id, "accepted": accepted}
    api.stop()
    worker.stop()
    flush_test_redis()


# --- request ids -------------------------------------------------------------------------------------------------


def test_a_request_id_is_kept_when_it_is_a_plain_token_and_replaced_otherwise():
    for kept in ("abc", "req-1.2_3", "0f" * 64, "a+b~c|d!e"):
        assert accepted_request_id(kept) == kept
        assert accepted_request_id(kept.encode()) == kept
    hostile = (None, "", "x" * 129, "two words", "line\nbreak", "a=b", 'say "hi"', "<script>", "caf\u00e9", "a\x00b")
    for sent in hostile:
        made = accepted_request_id(sent)
        assert HEX_ID.fullmatch(made) and made != sent
    assert accepted_request_id(None) != accepted_request_id(None)


def test_every_answer_carries_the_request_id_it_was_given_or_a_new_one(stack):
    url = stack["api"].url
    assert stack["accepted"].headers["x-request-id"] == stack["request_id"]  # a 202
    answers = {
        200: lambda **kw: httpx.get(f"{url}/healthz", **kw),
        401: lambda **kw: httpx.get(f"{url}/v1/template-sets", **kw),  # no client token
        404: lambda **kw: httpx.get(f"{url}/no/such/route", **kw),
        405: lambda **kw: httpx.put(f"{url}/healthz", **kw),
        413: lambda **kw: httpx.post(f"{url}/v1/initializations", content=b"{" * (2 << 20), **kw),  # the body limit
        422: lambda **kw: httpx.post(f"{url}/v1/initializations", json={"model": 7}, **kw),
    }
    for code, call in answers.items():
        given = f"probe-{code}"
        headers = {"X-Request-ID": given} | (CLIENT if code == 422 else {})
        echoed = call(headers=headers, timeout=30)
        assert echoed.status_code == code and echoed.headers["x-request-id"] == given, (code, echoed.headers)
        made = call(headers=CLIENT if code == 422 else {}, timeout=30)
        assert made.status_code == code and HEX_ID.fullmatch(made.headers["x-request-id"]), (code, made.headers)
    hostile = "evil<script>" + "x" * 200
    replaced = httpx.get(f"{url}/healthz", headers={"X-Request-ID": hostile})
    assert HEX_ID.fullmatch(replaced.headers["x-request-id"])
    assert hostile[:12].encode() not in stack["api"].log.read_bytes()  # never echoed into a log line


def test_a_500_carries_its_request_id_too(tmp_path):
    """Starlette answers an unhandled error from its outermost middleware: the request id is put on that answer too
    (real requests through the whole ASGI stack, in this process)."""
    app = create_app(embedded_settings(tmp_path))

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/boom", headers={"X-Request-ID": "probe-500"})
        assert answer.status_code == 500 and answer.headers["x-request-id"] == "probe-500"
        counted = client.get("/metrics").text
    assert 'learngene_http_requests_total{method="GET",route="/boom",status="500"} 1.0' in counted


# --- JSON logs ---------------------------------------------------------------------------------------------------


def check_line(line: dict) -> None:
    stamp = datetime.fromisoformat(line["timestamp"])
    assert stamp.utcoffset() == timedelta(0) and abs(datetime.now(stamp.tzinfo) - stamp) < timedelta(hours=1)
    assert line["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    assert line["logger"] and isinstance(line["message"], str)


def test_api_log_lines_are_json_with_the_request_id(stack):
    lines = json_lines(stack["api"].log)
    for line in lines:
        check_line(line)
    mine = [line for line in lines if line.get("request_id") == stack["request_id"]]
    assert {line["logger"] for line in mine} == {"jobs.admission", "uvicorn.access"}
    (access,) = [line for line in mine if line["logger"] == "uvicorn.access"]
    assert access["http"]["method"] == "POST" and access["http"]["path"] == "/v1/initializations"
    assert access["http"]["status"] == 202
    (admission,) = [line for line in mine if line["logger"] == "jobs.admission"]
    assert admission["job_id"] == stack["job"]["id"] and "accepted" in admission["message"]
    polls = [line for line in lines if line["logger"] == "uvicorn.access" and stack["job"]["id"] in line["message"]]
    assert polls and all(HEX_ID.fullmatch(line["request_id"]) for line in polls)  # each poll its own id
    assert len({line["request_id"] for line in polls}) == len(polls)


def test_worker_log_lines_of_a_job_carry_its_id_and_the_request_id_that_submitted_it(stack):
    lines = json_lines(stack["worker"].log)
    for line in lines:
        check_line(line)
    job_id = stack["job"]["id"]
    about_the_job = [line for line in lines if line.get("job_id") == job_id]
    assert {"jobs.runner", "celery.app.trace"} <= {line["logger"] for line in about_the_job}
    assert all(line["request_id"] == stack["request_id"] for line in about_the_job)
    assert any("succeeded" in line["message"] for line in about_the_job if line["logger"] == "jobs.runner")
    # only the lines of the job carry the ids: Celery's start-up and the received line do not
    assert any(line["logger"] == "celery.apps.worker" and "ready." in line["message"] for line in lines)
    assert all("request_id" not in line for line in lines if line.get("job_id") is None)


def test_no_token_reaches_a_log_line(stack):
    with httpx.Client(base_url=stack["api"].url, timeout=30) as http:
        http.get("/v1/admin/condensations", headers=ADMIN)
        http.get("/v1/admin/condensations", headers={"Authorization": f"Bearer {ADMIN_TOKEN}x"})
        http.get("/v1/initializations", headers={"Authorization": f"Bearer {CLIENT_TOKEN}y"})
    for log in (stack["api"].log, stack["worker"].log):
        text = log.read_bytes()
        for secret in (ADMIN_TOKEN, CLIENT_TOKEN):
            assert secret.encode() not in text
        assert b"Bearer" not in text and b"authorization" not in text.lower()


def test_embedded_jobs_log_with_their_request_id(tmp_path):
    """The embedded executor's threads: the job's lines carry the id of the request that submitted it."""
    captured: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: captured.append(handler.format(record))  # type: ignore[method-assign]
    handler.addFilter(ContextIds())
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with TestClient(create_app(embedded_settings(tmp_path))) as client:
            submitted = client.post("/v1/initializations", json=BODY, headers={"X-Request-ID": "embedded-1"})
            assert submitted.status_code == 202 and submitted.headers["x-request-id"] == "embedded-1"
            job = wait_for(client, f"/v1/initializations/{submitted.json()['id']}", finished, timeout=120)
            assert job["status"] == "succeeded", job["error"]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    lines = [json.loads(line) for line in captured]
    runner = [line for line in lines if line["logger"] == "jobs.runner" and line.get("job_id") == job["id"]]
    assert len(runner) >= 2 and all(line["request_id"] == "embedded-1" for line in runner)


def test_a_job_record_from_before_request_ids_still_loads():
    store = RedisJobStore.from_url(TEST_REDIS_URL, prefix=f"logs-{uuid.uuid4().hex[:8]}")
    try:
        new = Job.new(JobKind.initialization, {"model": "m"}, request_id="req-9")
        store.create(new)
        assert store.get(new.id).request_id == "req-9"
        old = Job.new(JobKind.initialization, {"model": "m"})
        store.create(old)
        key = f"{store.p}:job:{old.id}"
        doc = json.loads(store.r.hget(key, "doc"))
        del doc["request_id"]  # as written before the field existed
        store.r.hset(key, "doc", json.dumps(doc))
        loaded = store.get(old.id)
        assert loaded.request_id is None and loaded.id == old.id and loaded.request == {"model": "m"}
    finally:
        client = redis.Redis.from_url(TEST_REDIS_URL)
        for key in client.scan_iter(match=f"{store.p}:*"):
            client.delete(key)


# --- text on a terminal ------------------------------------------------------------------------------------------


def test_the_format_is_text_on_a_terminal_json_elsewhere_unless_set():
    leader, follower = os.openpty()
    reading, writing = os.pipe()
    try:
        with open(follower, "w", closefd=False) as tty, open(writing, "w", closefd=False) as pipe:
            assert resolve_format("auto", tty) == "text" and resolve_format("auto", pipe) == "json"
            assert resolve_format("json", tty) == "json" and resolve_format("text", pipe) == "text"
    finally:
        for fd in (leader, follower, reading, writing):
            os.close(fd)
    assert Settings().log_format == "auto"
    os.environ["LEARNGENE_LOG_FORMAT"] = "json"
    try:
        assert Settings().log_format == "json"
        os.environ["LEARNGENE_LOG_FORMAT"] = "xml"
        with pytest.raises(ValidationError, match="log_format"):
            Settings()
    finally:
        del os.environ["LEARNGENE_LOG_FORMAT"]


def test_learngene_serve_on_a_terminal_writes_text_lines(tmp_path):
    env = service_env(tmp_path, redis_url=None, data_roots=[SHARED_DATA])
    leader, follower = pty.openpty()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        start_new_session=True,
    )
    os.close(follower)
    output = b""
    try:
        deadline = time.monotonic() + 120
        while b"Application startup complete" not in output and time.monotonic() < deadline:
            if select.select([leader], [], [], 0.5)[0]:
                output += os.read(leader, 65536)
            assert proc.poll() is None, output.decode(errors="replace")
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"X-Request-ID": "tty-1"})
        assert answer.headers["x-request-id"] == "tty-1"
        while b"tty-1" not in output and time.monotonic() < deadline:
            if select.select([leader], [], [], 0.5)[0]:
                output += os.read(leader, 65536)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        os.close(leader)
    lines = [line for line in output.decode(errors="replace").splitlines() if line.strip()]
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert any(re.match(rf"{stamp} INFO uvicorn\.error Application startup complete", line) for line in lines), lines
    assert any(re.match(rf"{stamp} INFO uvicorn\.access \[request_id=tty-1\] .*GET /healthz", line) for line in lines)
    assert not any(line.startswith("{") for line in lines)


# --- metrics -----------------------------------------------------------------------------------------------------


def test_metrics_label_routes_by_their_full_template_and_expose_process_metrics(stack):
    url, job_id = stack["api"].url, stack["job"]["id"]
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.get(f"/v1/initializations/{job_id}", headers=CLIENT).status_code == 200
        assert http.get("/v1/admin/condensations/nope", headers=ADMIN).status_code == 404
        assert http.get("/v1/admin/cards/nope", headers=ADMIN).status_code == 404
        for path in ("/scan/a", "/scan/b/c", "/wp-login.php"):
            assert http.get(path).status_code == 404
        text = http.get("/metrics").text
        documented = set(http.get("/openapi.json").json()["paths"])
    families = {family.name: family for family in text_string_to_metric_families(text)}
    samples = [s for s in families["learngene_http_requests"].samples if s.name == "learngene_http_requests_total"]
    routes = {s.labels["route"] for s in samples}
    assert {"/v1/initializations/{job_id}", "/v1/admin/condensations/{job_id}", "/v1/admin/cards/{job_id}"} <= routes
    assert "/{job_id}" not in routes
    assert routes - {"/openapi.json"} <= documented | {"unmatched"}  # templates, never a raw path
    unmatched = [s for s in samples if s.labels["route"] == "unmatched" and s.labels["method"] == "GET"]
    assert sum(s.value for s in unmatched) >= 3
    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds", "python_info"):
        assert name in families, name
    assert families["process_resident_memory_bytes"].samples[0].value > 10 << 20
    # every metric the API page of the docs documents is served
    readme = (REPO / "docs" / "api.md").read_text()
    paragraph = readme[readme.index("**Metrics** (`/metrics`)") :].split("\n\n")[0]
    named = set(re.findall(r"`((?:learngene|process|python)_[a-z_]+)", paragraph))
    assert named >= {"learngene_jobs", "learngene_fit_steps_per_second", "process_cpu_seconds_total", "python_info"}
    served = {sample.name for family in families.values() for sample in family.samples} | set(families)
    assert named <= served, named - served


def embedded_settings(home: Path) -> Settings:
    return Settings(
        store=str(home / "store"),
        artifacts=str(home / "artifacts"),
        work_dir=home / "work",
        data_roots=[str(SHARED_DATA)],
        redis_url=None,
    )
