"""Lists that scale, over HTTP: cursor pages of 250 jobs with filters, the `next` link, a client's own jobs only, the
422s of a bad limit, cursor or filter, and times as ISO 8601 UTC.

The API is the real app served by uvicorn on a local port (real requests), with the embedded memory store and with
the Redis store (the test database, a key prefix of its own). It runs in this process so that the 250 job records can
be written straight into its job store (`tests.support.stores.stored_jobs`): running 250 real jobs would take
minutes and test nothing more about lists.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis

from jobs.model import Job, JobKind, JobProgress, JobStatus
from jobs.settings import Settings
from jobs.store import JobQuery, JobStore, Position
from service.client import Client
from templates_store import TemplateStore
from tests.support.harness import ADMIN_TOKEN, TEST_REDIS_URL
from tests.support.models import random_template_set, tiny_spec
from tests.support.served import served
from tests.support.stores import stored_jobs

START = 1_700_000_000.0  # the first stored job's creation time (epoch seconds)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ALPHA = {"Authorization": "Bearer alpha-token"}
BETA = {"Authorization": "Bearer beta-token"}
PATHS = {"initialization": "/v1/initializations", "condensation": "/v1/admin/condensations", "card": "/v1/admin/cards"}


@dataclass
class Listed:
    """The served API with the job records written into its store."""

    url: str
    jobs: JobStore
    made: list[Job]
    store: TemplateStore


@pytest.fixture(scope="module", params=["memory", "redis"])
def api(request, tmp_path_factory) -> Iterator[Listed]:
    home = tmp_path_factory.mktemp(f"pages-{request.param}")
    prefix = f"pages-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        store=str(home / "store"),
        artifacts=str(home / "artifacts"),
        work_dir=home / "work",
        admin_token=ADMIN_TOKEN,
        client_tokens={"alpha": "alpha-token", "beta": "beta-token"},
        redis_url=TEST_REDIS_URL if request.param == "redis" else None,
        redis_prefix=prefix,
    )
    try:
        with served(settings) as api:
            made = stored_jobs(api.app.state.services.jobs, 250, start=START)
            yield Listed(api.url, api.app.state.services.jobs, made, api.app.state.services.store)
    finally:
        if request.param == "redis":
            client = redis.Redis.from_url(TEST_REDIS_URL)
            for key in client.scan_iter(match=f"{prefix}:*", count=500):
                client.delete(key)


def walk(api: Listed, path: str, headers: dict[str, str], **params) -> list[list[dict]]:
    """Follow `next` from the first page to the last; every link is absolute and keeps the filters and the limit."""
    pages, url = [], f"{api.url}{path}"
    while url is not None:
        response = httpx.get(url, params=params if not pages else None, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["items"])
        url = body["next"]
        if url is not None:
            assert url.startswith(f"{api.url}{path}?")
            kept = parse_qs(urlsplit(url).query)
            for name, value in params.items():
                assert kept[name] == (value if isinstance(value, list) else [str(value)]), (name, kept)
            assert set(kept) == {*params, "cursor"}
    return pages


def expected(api: Listed, query: JobQuery) -> list[str]:
    return [j.id for j in sorted((j for j in api.made if query.matches(j)), key=Position.of, reverse=True)]


def check(pages: list[list[dict]], ids: list[str], limit: int) -> None:
    """Every matching job exactly once, newest first; every page but the last full."""
    assert [j["id"] for page in pages for j in page] == ids
    assert all(len(page) == limit for page in pages[:-1]) and len(pages[-1]) <= limit
    assert len(pages) == max(1, -(-len(ids) // limit))


def test_every_kind_pages_newest_first(api):
    pages = walk(api, "/v1/admin/jobs", ADMIN, limit=7)
    check(pages, expected(api, JobQuery(kinds=frozenset(JobKind))), 7)
    assert len(pages) == 36  # 35 full pages and one of 5: all 250 jobs
    assert all(j["links"]["self"] == f"{api.url}{PATHS[j['kind']]}/{j['id']}" for j in pages[0])  # its own kind's


def test_filters_by_kind_status_and_creation_time(api):
    after = dt.datetime.fromtimestamp(START + 20 * 0.25, dt.timezone.utc)  # jobs 0-146 were created at or before it
    cases = [
        ("/v1/admin/jobs", {"kind": ["condensation", "card"], "status": ["failed", "queued"], "limit": 10},
         JobQuery(kinds=frozenset({JobKind.condensation, JobKind.card}),
                  statuses=frozenset({JobStatus.failed, JobStatus.queued}))),
        ("/v1/admin/condensations", {"created_after": after.isoformat(), "limit": 25},
         JobQuery(kinds=frozenset({JobKind.condensation}), created_after=after.timestamp())),
        ("/v1/admin/cards", {"status": "running", "limit": 3},
         JobQuery(kinds=frozenset({JobKind.card}), statuses=frozenset({JobStatus.running}))),
        ("/v1/admin/jobs", {"created_after": "2033-01-01T00:00:00Z", "limit": 5}, None),
    ]  # fmt: skip
    for path, params, query in cases:
        ids = expected(api, query) if query else []
        assert query is None or len(ids) > 5, path  # enough jobs to need several pages
        check(walk(api, path, ADMIN, **params), ids, params["limit"])
    # the same instant written with another offset is the same filter
    shifted = after.astimezone(dt.timezone(dt.timedelta(hours=-5))).isoformat()
    same = walk(api, "/v1/admin/condensations", ADMIN, created_after=shifted, limit=500)
    assert [j["id"] for j in same[0]] == expected(api, cases[1][2])


def test_a_client_pages_through_its_own_jobs_only(api):
    """The client filter is part of the store's query: each of alpha's pages is full of alpha's jobs."""
    for token, name in ((ALPHA, "alpha"), (BETA, "beta")):
        ids = expected(api, JobQuery(kinds=frozenset({JobKind.initialization}), client=name))
        assert len(ids) > 9
        check(walk(api, "/v1/initializations", token, limit=4), ids, 4)
        check(
            walk(api, "/v1/initializations", token, status=["queued", "succeeded"], limit=2),
            expected(
                api,
                JobQuery(
                    kinds=frozenset({JobKind.initialization}),
                    client=name,
                    statuses=frozenset({JobStatus.queued, JobStatus.succeeded}),
                ),
            ),
            2,
        )
    # a cursor taken from beta's list only says where alpha's own list resumes
    beta_page = httpx.get(f"{api.url}/v1/initializations", params={"limit": 1}, headers=BETA).json()
    cursor = parse_qs(urlsplit(beta_page["next"]).query)["cursor"][0]
    resumed = httpx.get(f"{api.url}/v1/initializations", params={"cursor": cursor, "limit": 500}, headers=ALPHA)
    assert {j["id"] for j in resumed.json()["items"]} <= set(
        expected(api, JobQuery(kinds=frozenset({JobKind.initialization}), client="alpha"))
    )


def error_fields(response: httpx.Response) -> list[list]:
    """The `loc` of each refused field of a 422 problem."""
    body = response.json()
    return [e["loc"] for e in body["errors"]]


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "!!not-base64!!"}, "cursor"),
        ({"cursor": b64(b"\xff\xfe")}, "cursor"),  # not UTF-8
        ({"cursor": b64(b"[1700000000.0")}, "cursor"),  # not JSON
        ({"cursor": b64(b'{"a": 1}')}, "cursor"),
        ({"cursor": b64(b'[1700000000.0, "abc", 3]')}, "cursor"),
        ({"cursor": b64(b'["yesterday", "abc"]')}, "cursor"),
        ({"cursor": b64(b'[true, "abc"]')}, "cursor"),
        ({"cursor": b64(b'[NaN, "abc"]')}, "cursor"),
        ({"cursor": b64(b'[1e999, "abc"]')}, "cursor"),  # infinite
        ({"cursor": b64(b'[1700000000.0, "../../etc"]')}, "cursor"),
        ({"cursor": b64(b"[1700000000.0, 12]")}, "cursor"),
        ({"cursor": "A" * 600}, "cursor"),
        ({"status": "finished"}, "status"),
        ({"kind": "training"}, "kind"),
        ({"created_after": "2026-01-01T00:00:00"}, "created_after"),  # no timezone: which instant is it?
        ({"created_after": "last week"}, "created_after"),
        ({"created_after": "447810904"}, "created_after"),  # seconds since 1970? milliseconds? ISO 8601 only
    ],
)
def test_a_bad_limit_cursor_or_filter_is_a_422_naming_it(api, params, field):
    response = httpx.get(f"{api.url}/v1/admin/jobs", params=params, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert [loc[:2] for loc in error_fields(response)] == [["query", field]]  # (a repeated one: and its index)


def test_a_cursor_past_every_job_is_an_empty_last_page(api):
    oldest = b64(f'[{START - 1}, "0"]'.encode())
    body = httpx.get(f"{api.url}/v1/admin/jobs", params={"cursor": oldest}, headers=ADMIN).json()
    assert body == {"items": [], "next": None}


def test_times_are_iso_8601_utc(api):
    job = next(j for j in reversed(api.made) if j.kind == JobKind.condensation and j.status == JobStatus.queued)
    assert api.jobs.claim(job.id, "w1", lease_s=600).outcome == "claimed"
    api.jobs.set_progress(job.id, JobProgress(step=1, total_steps=4, updated_at=START + 100.125))
    api.made[api.made.index(job)] = api.jobs.get(job.id)  # now running: what the other tests expect of it
    view = httpx.get(f"{api.url}/v1/admin/condensations/{job.id}", headers=ADMIN).json()
    created = view["timings"]["created_at"]
    assert created == dt.datetime.fromtimestamp(job.created_at, dt.timezone.utc).isoformat(timespec="milliseconds")
    assert created.endswith("+00:00") and view["timings"]["finished_at"] is None
    started = dt.datetime.fromisoformat(view["timings"]["started_at"])
    assert started.utcoffset() == dt.timedelta(0) and abs(started.timestamp() - time.time()) < 60
    assert view["progress"]["updated_at"] == "2023-11-14T22:15:00.125+00:00"  # START + 100.125 s


@pytest.fixture
def cli(monkeypatch):
    """`learngene ...` in this process, with the given bearer token (LEARNGENE_API_TOKEN); returns the click result."""
    from typer.testing import CliRunner

    from jobs.settings import get_settings
    from service.cli import app

    def run(token: str, *args: str):
        monkeypatch.setenv("LEARNGENE_API_TOKEN", token)
        monkeypatch.setenv("LEARNGENE_ADMIN_TOKEN", token)  # the CLI sends this one to the admin routes
        get_settings.cache_clear()
        return CliRunner().invoke(app, list(args))

    yield run
    get_settings.cache_clear()


def test_the_client_iterates_pages(api):
    """`Client.jobs` follows `next` (7 jobs a page here) and reads initializations, or every kind with the admin
    token."""
    with Client(api.url, token=ADMIN_TOKEN) as client:
        pages = list(client.job_pages(kinds=["card", "initialization"], statuses=["running"], limit=7))
        query = JobQuery(
            kinds=frozenset({JobKind.card, JobKind.initialization}), statuses=frozenset({JobStatus.running})
        )
        check([page["items"] for page in pages], expected(api, query), 7)
        assert len(pages) > 2
        after = dt.datetime.fromtimestamp(START + 10, dt.timezone.utc).isoformat()
        ids = [j["id"] for j in client.jobs(kinds=[k.value for k in JobKind], created_after=after, limit=9)]
        assert ids == expected(api, JobQuery(kinds=frozenset(JobKind), created_after=START + 10))
    with Client(api.url, token="beta-token") as client:
        ids = [j["id"] for j in client.jobs(limit=3)]
        assert ids == expected(api, JobQuery(kinds=frozenset({JobKind.initialization}), client="beta"))


def test_job_list_command(api, cli):
    wanted = JobQuery(
        kinds=frozenset({JobKind.condensation, JobKind.card}), statuses=frozenset({JobStatus.failed, JobStatus.queued})
    )
    every = cli(
        ADMIN_TOKEN,
        "job",
        "list",
        "--url",
        api.url,
        "--kind",
        "condensation",
        "--kind",
        "card",
        "--status",
        "failed",
        "--status",
        "queued",
        "--all",
        "--json",
    )
    assert every.exit_code == 0, every.output
    assert [j["id"] for j in json.loads(every.stdout.splitlines()[-1])] == expected(api, wanted)
    alpha = expected(api, JobQuery(kinds=frozenset({JobKind.initialization}), client="alpha"))
    some = cli("alpha-token", "job", "list", "--url", api.url, "--limit", "20", "--json")
    assert some.exit_code == 0, some.output
    assert [j["id"] for j in json.loads(some.stdout.splitlines()[-1])] == alpha[:20]
    assert "more match" in some.stderr
    table = cli("alpha-token", "job", "list", "--url", api.url, "--limit", str(len(alpha) + 1))
    assert table.exit_code == 0 and "more match" not in table.stderr, table.output
    assert all(job_id in table.stdout for job_id in alpha) and "+00:00" in table.stdout
    after = cli(ADMIN_TOKEN, "job", "list", "--url", api.url, "--kind", "card", "--created-after", "2026-01-01T00:00")
    assert after.exit_code == 2 and "created_after" in after.stderr, after.output  # no timezone: refused, named
    bad = cli(ADMIN_TOKEN, "job", "list", "--url", api.url, "--status", "finished")
    assert bad.exit_code == 2 and "finished" in bad.output  # click's own refusal: not a status


def test_template_sets_page_by_name_and_version(api):
    """Versions in (name, version) order, a page at a time, with the name filter kept in `next`."""
    template_set = random_template_set(tiny_spec())
    for name in ("zeta", "alpha", "mid"):
        for _ in range(3 if name == "mid" else 2):
            api.store.publish(template_set, name)
    every = [(v.name, v.version) for v in api.store.list()]
    assert every == sorted(every) and len(every) >= 7  # with the bundled demo set
    for params in ({"limit": 2}, {"limit": 1, "name": "mid"}, {"limit": 500}):
        pages, url = [], f"{api.url}/v1/template-sets"
        while url is not None:
            body = httpx.get(url, params=params if not pages else None, headers=ALPHA).json()
            pages.append([(v["name"], v["version"]) for v in body["items"]])
            url = body["next"]
        name = params.get("name")
        check_pages = [v for v in every if name is None or v[0] == name]
        assert [v for page in pages for v in page] == check_pages
        assert all(len(page) == params["limit"] for page in pages[:-1]) and len(pages) == -(
            -len(check_pages) // params["limit"]
        )
    for cursor in (b64(b'["mid", 0]'), b64(b"[1, 2]"), b64(b'["mid", "2"]'), b64(b'["mid", true]'), "%%%"):
        response = httpx.get(f"{api.url}/v1/template-sets", params={"cursor": cursor}, headers=ALPHA)
        assert response.status_code == 422 and error_fields(response) == [["query", "cursor"]], response.text
    assert httpx.get(f"{api.url}/v1/template-sets", params={"limit": 0}, headers=ALPHA).status_code == 422
