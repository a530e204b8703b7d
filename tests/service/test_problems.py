"""One error shape: every 4xx and 5xx the API gives is an RFC 9457 problem (`application/problem+json` with `type`,
`title`, `status`, `detail`, `instance`), driven by real requests against real servers; and every answer, drawn by
schemathesis for every operation, matches the schemas the OpenAPI document gives for its status."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig

from jobs.settings import Settings
from service.api.main import create_app
from service.client import ApiError, Client, Conflict, NotFound, Overloaded, Refused, Unauthorized, Unavailable
from tests.support.data import FMNIST, SHARED_DATA
from tests.support.harness import ADMIN_TOKEN, finished, kill_group, service_env, start_api, start_redis, wait_for
from tests.support.s3server import BUCKET, S3Server
from tests.support.scale import fuzz_settings

BODY = {
    "model": "vit_tiny_patch16_224",
    "overrides": dict(depth=2, embed_dim=64, num_heads=1, img_size=28, patch_size=7, in_chans=1, num_classes=10),
    "calibration": {"uri": f"idx://{FMNIST}", "max_samples": 64},
    "fit": {"steps": 2, "batch_size": 16},
}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MAX_BODY = 4096
MEMBERS = {"type", "title", "status", "detail", "instance"}


def assert_problem(response: httpx.Response, status: int, kind: str | None, path: str) -> dict:
    """`response` is the problem+json of `status`: every member there, `type` the kind's (about:blank for none)."""
    where = f"{response.request.method} {path}: {response.status_code} {response.text[:300]}"
    assert response.status_code == status, where
    assert response.headers["content-type"] == "application/problem+json", where
    problem = response.json()
    assert set(problem) >= MEMBERS, where
    assert problem["status"] == status and problem["instance"] == path, where
    assert problem["type"] == (f"/problems/{kind}" if kind else "about:blank"), where
    assert isinstance(problem["title"], str) and problem["title"], where
    assert isinstance(problem["detail"], str) and problem["detail"], where
    if kind is not None:  # the type names a document the API serves
        described = httpx.get(str(response.request.url.join(problem["type"])), timeout=10).json()
        assert (described["status"], described["title"]) == (status, problem["title"]), described
    return problem


@pytest.fixture(scope="module")
def queued(tmp_path_factory):
    """Celery mode without a worker, on a Redis server of its own (the 503 test takes it away): accepted jobs stay
    queued; one queued job fills the queue; bodies over 4 KiB are refused."""
    home = tmp_path_factory.mktemp("problems")
    redis_proc, redis_url = start_redis(home / "redis")
    env = service_env(
        home,
        redis_url=redis_url,
        data_roots=[SHARED_DATA],
        LEARNGENE_MAX_QUEUED_JOBS="1",
        LEARNGENE_MAX_REQUEST_BYTES=str(MAX_BODY),
    )
    try:
        api = start_api(env, home / "api.log")
    except Exception:
        kill_group(redis_proc)
        raise
    yield {"api": api, "redis": redis_proc}
    api.stop()
    if redis_proc.poll() is None:
        kill_group(redis_proc)


def test_refusals_are_problems(queued):
    api = queued["api"]
    with httpx.Client(base_url=api.url, timeout=30) as http:
        job = http.post("/v1/initializations", json=BODY)
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]

        outside = http.post(
            "/v1/initializations", json={**BODY, "calibration": {"uri": "idx:///etc", "max_samples": 8}}
        )
        assert (
            "outside the allowed data roots"
            in assert_problem(outside, 400, "data-unavailable", "/v1/initializations")["detail"]
        )

        anonymous = http.post("/v1/admin/condensations", json={})
        assert_problem(anonymous, 401, "unauthorized", "/v1/admin/condensations")
        assert anonymous.headers["www-authenticate"] == "Bearer"
        wrong = http.post("/v1/admin/condensations", json={}, headers={"Authorization": "Bearer nope"})
        assert assert_problem(wrong, 403, "forbidden", "/v1/admin/condensations")["detail"] == "invalid admin token"

        missing = http.get("/v1/initializations/no-such-job")
        assert (
            "does not exist" in assert_problem(missing, 404, "not-found", "/v1/initializations/no-such-job")["detail"]
        )
        assert_problem(http.get("/v1/template-sets/nope"), 404, "not-found", "/v1/template-sets/nope")
        assert_problem(http.get("/no/such/route"), 404, "not-found", "/no/such/route")
        # the path comes back percent-encoded, as a URI reference: nothing the client sent is reflected raw
        assert_problem(http.get("/v1/initializations/a%20%3Cb%3E"), 404, "not-found", "/v1/initializations/a%20%3Cb%3E")

        wrong_method = http.put("/healthz")
        assert_problem(wrong_method, 405, "method-not-allowed", "/healthz")
        assert wrong_method.headers["allow"] == "GET"

        unfinished = http.get(f"/v1/initializations/{job_id}/checkpoint")
        detail = assert_problem(unfinished, 409, "conflict", f"/v1/initializations/{job_id}/checkpoint")["detail"]
        assert detail == f"job {job_id} is queued, not succeeded"

        undecodable = http.post(
            "/v1/initializations", content=b'{"model": "\xff\xfe"}', headers={"Content-Type": "application/json"}
        )
        assert_problem(undecodable, 400, "bad-request", "/v1/initializations")

        huge = http.post(
            "/v1/initializations", content=b"x" * (MAX_BODY + 1), headers={"Content-Type": "application/json"}
        )
        assert (
            "larger than 4096 bytes" in assert_problem(huge, 413, "content-too-large", "/v1/initializations")["detail"]
        )

        invalid = http.post("/v1/initializations", json={**BODY, "overrides": {**BODY["overrides"], "depth": 10**9}})
        problem = assert_problem(invalid, 422, "invalid-request", "/v1/initializations")
        assert [e["loc"] for e in problem["errors"]] == [["body", "overrides", "depth"]]
        assert all(e["msg"] and e["type"] for e in problem["errors"]) and "overrides.depth" in problem["detail"]
        assert str(10**9) not in invalid.text  # the input is never echoed
        unparsable = http.get("/v1/initializations", params={"limit": "many"})
        loc = assert_problem(unparsable, 422, "invalid-request", "/v1/initializations")["errors"][0]["loc"]
        assert loc == ["query", "limit"]

        full = http.post("/v1/initializations", json={**BODY, "fit": {**BODY["fit"], "seed": 1}})
        assert "1 jobs are queued" in assert_problem(full, 429, "overloaded", "/v1/initializations")["detail"]
        assert full.headers["retry-after"] == "30"

        unknown = http.get("/problems/no-such-kind")
        assert_problem(unknown, 404, "not-found", "/problems/no-such-kind")


def test_the_client_raises_a_typed_error_carrying_the_request_id(queued):
    """Each status is its own class (one queued job fills the queue), and each error carries the X-Request-ID the
    API answered with (sent by this client here, so it is known)."""
    with Client(queued["api"].url) as client:
        client.http.headers["X-Request-ID"] = "client-errors-1"
        listed = next(iter(client.job_pages(limit=1)))["items"]  # test_refusals_are_problems queued one, if it ran
        queued_job = listed[0]["id"] if listed else client.submit(BODY)["id"]
        refused_calls = {
            Refused: lambda: client.submit({**BODY, "overrides": {**BODY["overrides"], "depth": 10**9}}),
            NotFound: lambda: client.get("no-such-job"),
            Conflict: lambda: client.download_folder(queued_job, "unused"),
            Overloaded: lambda: client.submit({**BODY, "fit": {**BODY["fit"], "seed": 2}}),
            Unauthorized: lambda: client.condense({}),
        }
        for kind, call in refused_calls.items():
            with pytest.raises(kind) as caught:
                call()
            error = caught.value
            assert type(error) is kind and isinstance(error, ApiError), error
            if kind is not Conflict:  # the one the client raises itself, from the job's record
                assert error.request_id == "client-errors-1" and "(request id client-errors-1)" in str(error)
        assert caught.value.status == 401
    with Client(queued["api"].url) as client, pytest.raises(Refused) as caught:
        client.submit({**BODY, "overrides": {**BODY["overrides"], "depth": 10**9}})
    assert [e["loc"] for e in caught.value.errors] == [["body", "overrides", "depth"]]
    assert caught.value.request_id and len(caught.value.request_id) >= 16  # made by the API when none is sent
    with Client(queued["api"].url) as client, pytest.raises(Overloaded) as caught:
        client.submit({**BODY, "fit": {**BODY["fit"], "seed": 3}})
    assert caught.value.retry_after == 30.0 and "1 jobs are queued" in caught.value.detail


@pytest.fixture(scope="module")
def on_s3(tmp_path_factory):
    """The embedded service (no Redis) with its template store and checkpoints on an S3 server, and one finished
    job: its downloads can be out of range (416) or gone (410), and the storage can be taken away (503)."""
    home = tmp_path_factory.mktemp("problems-s3")
    s3 = S3Server(home / "s3")
    s3.start()
    prefix = f"s3://{BUCKET}/problems-{home.name}"
    env = service_env(
        home,
        redis_url=None,
        data_roots=[SHARED_DATA],
        **s3.env,
        LEARNGENE_STORE=f"{prefix}/store",
        LEARNGENE_ARTIFACTS=f"{prefix}/checkpoints",
    )
    try:
        api = start_api(env, home / "api.log")
    except Exception:
        s3.stop()
        raise
    with httpx.Client(base_url=api.url, timeout=60) as http:
        job = http.post("/v1/initializations", json=BODY).json()
        done = wait_for(http, f"/v1/initializations/{job['id']}", finished, timeout=300)
    assert done["status"] == "succeeded", done
    yield {"api": api, "s3": s3, "job": done, "checkpoints": f"{prefix}/checkpoints"}
    api.stop()
    s3.stop()


def test_downloads_and_storage_outages_are_problems(on_s3):
    api, s3, job = on_s3["api"], on_s3["s3"], on_s3["job"]
    base = f"/v1/initializations/{job['id']}"
    with httpx.Client(base_url=api.url, timeout=60) as http:
        size = job["checkpoint"]["bytes"]
        past = http.get(f"{base}/checkpoint", headers={"Range": f"bytes={size}-"})
        assert_problem(past, 416, "range-not-satisfiable", f"{base}/checkpoint")
        assert past.headers["content-range"] == f"bytes */{size}"

        config = job["checkpoint"]["files"]["config.json"]["sha256"]
        s3.bucket(on_s3["checkpoints"]).delete(f"{config}.json")
        gone = http.get(f"{base}/files/config.json")
        assert (
            assert_problem(gone, 410, "gone", f"{base}/files/config.json")["detail"]
            == "config.json is no longer stored"
        )

        s3.stop()
        try:
            refused = http.post("/v1/initializations", json={**BODY, "fit": {**BODY["fit"], "seed": 7}})
            problem = assert_problem(refused, 503, "storage-unavailable", "/v1/initializations")
            assert refused.headers["retry-after"] == "5" and s3.endpoint not in refused.text
            assert "retry" in problem["detail"]
        finally:
            s3.start()


def test_an_unexpected_failure_is_a_500_problem_that_says_nothing_of_the_server(tmp_path):
    """A route that fails in a way nobody foresaw (added here: the API has none on purpose): the answer is a 500
    problem without the exception's message, type or traceback; the server's log keeps them."""
    app = create_app(
        Settings(store=str(tmp_path / "store"), artifacts=str(tmp_path / "artifacts"), work_dir=str(tmp_path / "work"))
    )
    secret = f"{tmp_path}/private/key.pem token=hunter2"

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError(secret)

    with TestClient(app, raise_server_exceptions=False) as http:
        failed = http.get("/boom")
    assert failed.status_code == 500 and failed.headers["content-type"] == "application/problem+json"
    problem = failed.json()
    assert problem["type"] == "/problems/internal-error" and problem["status"] == 500 and problem["instance"] == "/boom"
    assert set(problem) >= MEMBERS and problem["title"] == "Internal Server Error"
    for leak in (str(tmp_path), "hunter2", "RuntimeError", "Traceback", "key.pem"):
        assert leak not in failed.text


def test_every_operation_documents_its_problems(queued):
    """Each operation lists the error statuses it can answer, each as a problem under application/problem+json;
    FastAPI's own 422 schema is gone."""
    document = httpx.get(f"{queued['api'].url}/openapi.json", timeout=30).json()
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert {"type", "title", "status", "detail", "instance"} <= set(schemas["ProblemDetails"]["required"])
    assert "errors" in schemas["ValidationProblem"]["required"]

    def documented(method: str, path: str) -> set[int]:
        responses = document["paths"][path][method]["responses"]
        for code, response in responses.items():
            if int(code) >= 400 and (method, path, code) != ("get", "/readyz", "503"):
                schema = "ValidationProblem" if code == "422" else "ProblemDetails"
                content = {"application/problem+json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
                assert response["content"] == content, (method, path, code)
        return {int(c) for c in responses if int(c) >= 400}

    assert documented("post", "/v1/initializations") == {400, 401, 403, 404, 409, 413, 422, 429, 503}
    assert documented("post", "/v1/admin/condensations") == {400, 401, 403, 404, 409, 413, 422, 429, 503}
    assert documented("get", "/v1/initializations/{job_id}") == {401, 403, 404, 422, 503}
    assert documented("get", "/v1/initializations/{job_id}/checkpoint") == {401, 403, 404, 409, 410, 416, 422, 503}
    assert documented("get", "/v1/initializations/{job_id}/files.tar") == {401, 403, 404, 409, 410, 422, 503}
    assert documented("put", "/v1/admin/template-sets/{name}/aliases/{alias}") == {
        400,
        401,
        403,
        404,
        409,
        413,
        422,
        503,
    }
    assert documented("get", "/v1/template-sets/{ref}/card") == {401, 403, 404, 409, 422, 503}
    assert documented("get", "/healthz") == set()
    assert documented("get", "/readyz") == {503}


load_all_checks()
ALL_CHECKS = CHECKS.get_all()  # `--checks all`
# A schema-valid request may still be refused by what JSON Schema cannot say: `model` must be one of timm's ~1,300
# names, `embed_dim` divisible by `num_heads`, a data reference must exist inside the data roots (400), derived
# sizes must stay within LEARNGENE_LIMITS__* (422 naming the field). positive_data_acceptance takes those two
# refusals as expected; everything else it checks (no 5xx, nothing but 2xx/3xx/401/403/404/409/429) stays.
# Query parameters the API does not define are ignored, as HTTP APIs commonly do (a cache-busting `?_=...` must not
# break a client), so schemathesis is told not to count an extra parameter as invalid data: negative_data_rejection
# otherwise fails on whichever operation draws one (seen on `GET /v1/admin/jobs?=false`).
CONFIG = SchemathesisConfig.from_dict({
    "generation": {"allow-extra-parameters": False},
    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "3xx", 400, 401, 403, 404, 409, 422, 429]}},
})  # fmt: skip


def test_answers_match_the_documented_schemas(queued):
    """schemathesis draws valid and invalid requests for every operation and runs all its checks on each answer:
    no server error, the status documented, the content type documented, the body valid against the schema of that
    status (problems included), the headers documented, negative data refused."""
    schema = schemathesis.openapi.from_url(f"{queued['api'].url}/openapi.json", config=CONFIG)
    operations = [result.ok() for result in schema.get_all_operations()]
    # Every operation gets its share: schemathesis weights the operations it draws from a whole schema, and one
    # draw of 38 once reached only 9 of them.
    budget = fuzz_settings(150)
    per_operation = settings(budget, max_examples=max(2, budget.max_examples // len(operations)))
    seen: set[str] = set()

    def check(case):
        seen.add(f"{case.method.upper()} {case.path}")
        headers = ADMIN if case.path.startswith("/v1/admin") else None
        case.call_and_validate(headers=headers, checks=ALL_CHECKS)

    for operation in operations:
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        cases = st.one_of(*(operation.as_strategy(mode) for mode in modes))

        @given(case=cases)
        @per_operation
        def fuzz(case):
            check(case)

        fuzz()
    assert seen == {f"{op.method.upper()} {op.path}" for op in operations}


def test_an_unreachable_job_store_is_a_503_problem(queued):
    """Last in this file: it takes the Redis server of `queued` away."""
    api, redis_proc = queued["api"], queued["redis"]
    with httpx.Client(base_url=api.url, timeout=30) as http:
        kill_group(redis_proc)
        refused = http.get("/v1/initializations/any")
        problem = assert_problem(refused, 503, "job-store-unavailable", "/v1/initializations/any")
        assert refused.headers["retry-after"] == "5" and "retry" in problem["detail"]
        # /readyz answers with its health report (what a probe asked for), not a problem
        ready = http.get("/readyz")
        assert ready.status_code == 503 and ready.headers["content-type"] == "application/json"
        assert ready.json()["status"] == "not ready" and ready.json()["checks"]["jobs"] == "unreachable"
    with Client(api.url) as client, pytest.raises(Unavailable) as caught:
        client.get("any")
    assert caught.value.status == 503 and caught.value.request_id
