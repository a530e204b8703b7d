"""The job stores' contract: the same scenarios against the in-memory store and the Redis one (real Redis, the test
database, a key prefix of its own): one set of transitions (`jobs.transitions`), applied atomically by each."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from jobs import redis_store
from jobs.memory_store import MemoryJobStore
from jobs.model import REDELIVERY, Job, JobError, JobKind, JobProgress, JobStatus
from jobs.redis_store import RedisJobStore
from jobs.store import JobQuery, JobStore, Position
from tests.support.harness import TEST_REDIS_URL
from tests.support.stores import stored_jobs


@pytest.fixture(params=["memory", "redis"])
def jobs(request) -> JobStore:
    if request.param == "memory":
        yield MemoryJobStore()
        return
    prefix = f"contract-{uuid.uuid4().hex[:8]}"
    store = RedisJobStore.from_url(TEST_REDIS_URL, prefix=prefix, job_ttl_s=600, idempotency_ttl_s=600)
    yield store
    client = redis.Redis.from_url(TEST_REDIS_URL)
    for key in client.scan_iter(match=f"{prefix}:*", count=500):
        client.delete(key)


def new(jobs: JobStore, kind: JobKind = JobKind.initialization, client: str | None = None, **fields) -> Job:
    job = Job.new(kind, {"model": "m"}, client=client, **fields)
    jobs.create(job)
    return job


def test_a_job_runs_under_its_lease_and_only_the_holder_finishes_it(jobs):
    job = new(jobs, client="alpha")
    assert jobs.counts(JobKind.initialization)["queued"] == 1 and jobs.active("alpha") == 1
    claim = jobs.claim(job.id, "w1", lease_s=30)
    assert claim.outcome == "claimed" and claim.job.status == JobStatus.running and claim.job.attempts == 1
    assert jobs.claim(job.id, "w2", lease_s=30).outcome == "busy"  # a second delivery leaves it alone
    assert jobs.heartbeat(job.id, "w1", 30) and not jobs.heartbeat(job.id, "w2", 30)
    jobs.set_progress(job.id, JobProgress(step=3, total_steps=10, loss=0.5))
    assert jobs.get(job.id).progress.step == 3
    assert not jobs.finish(job.id, JobStatus.succeeded, result={"x": 1}, owner="w2")
    assert jobs.finish(job.id, JobStatus.succeeded, result={"x": 1}, owner="w1")
    done = jobs.get(job.id)
    assert done.status == JobStatus.succeeded and done.result == {"x": 1} and done.finished_at is not None
    assert not jobs.finish(job.id, JobStatus.failed, error=JobError(type="T", message="m"))  # terminal stays
    assert jobs.claim(job.id, "w1", 30).outcome == "terminal"
    counts = jobs.counts(JobKind.initialization)
    assert (counts["queued"], counts["running"], counts["succeeded"]) == (0, 0, 1) and jobs.active("alpha") == 0
    assert jobs.metrics.histograms()["job_duration_seconds:initialization"]["count"] == 1


def test_cancelling_a_queued_job_ends_it_and_a_running_one_is_flagged(jobs):
    queued, running = new(jobs), new(jobs)
    assert jobs.request_cancel(queued.id).status == JobStatus.cancelled
    assert jobs.claim(queued.id, "w1", 30).outcome == "terminal"
    jobs.claim(running.id, "w1", 30)
    flagged = jobs.request_cancel(running.id)
    assert flagged.status == JobStatus.running and flagged.cancel_requested and jobs.cancel_requested(running.id)
    assert jobs.finish(running.id, JobStatus.cancelled, owner="w1")
    assert jobs.request_cancel("no-such-job") is None and jobs.get("no-such-job") is None
    assert jobs.counts(JobKind.initialization)["cancelled"] == 2


def test_a_redelivered_job_is_claimed_once_more_and_exhausts_its_attempts(jobs):
    job = new(jobs, max_attempts=2)
    jobs.mark_dispatched(job.id)
    jobs.claim(job.id, "w1", lease_s=0.05)
    time.sleep(0.1)  # the lease lapses: the worker is presumed dead
    now = time.time()
    assert jobs.due_for_redelivery(now, undispatched_grace_s=60) == [job.id]
    assert jobs.take_redelivery(job.id, now, grace_s=60)
    assert not jobs.take_redelivery(job.id, now, grace_s=60)  # exactly one reaper wins
    assert jobs.get(job.id).lease_owner == REDELIVERY and jobs.due_for_redelivery(now, 60) == []
    assert jobs.claim(job.id, "w2", 0.05).outcome == "claimed" and jobs.get(job.id).attempts == 2
    time.sleep(0.1)
    assert jobs.take_redelivery(job.id, time.time(), grace_s=60)
    exhausted = jobs.claim(job.id, "w3", 30)
    assert exhausted.outcome == "exhausted" and exhausted.job.status == JobStatus.failed
    assert exhausted.job.error.type == "AttemptsExhausted"
    assert jobs.metrics.histograms()["job_duration_seconds:initialization"]["count"] == 1  # recorded by both stores


def test_takeover_and_undispatched_jobs(jobs):
    job = new(jobs)
    jobs.mark_dispatched(job.id)
    jobs.claim(job.id, "w1", 600)
    assert jobs.claim(job.id, "w2", 600, takeover=True).outcome == "claimed"  # its owner is known to be dead
    assert not jobs.heartbeat(job.id, "w1", 600)
    stale = new(jobs)  # accepted but never handed to the broker
    assert jobs.due_for_redelivery(time.time() + 120, undispatched_grace_s=60) == [stale.id]
    assert jobs.take_redelivery(stale.id, time.time(), 60)
    assert jobs.due_for_redelivery(time.time() + 120, undispatched_grace_s=60) == []


def test_idempotency_keys_cache_and_counters(jobs):
    assert jobs.keys.remember("k", "job-1", "h1") is None
    assert tuple(jobs.keys.remember("k", "job-2", "h2")) == ("job-1", "h1")
    jobs.keys.forget("k", "job-2")  # not its holder: kept
    assert tuple(jobs.keys.remember("k", "job-3", "h3")) == ("job-1", "h1")
    jobs.keys.forget("k", "job-1")
    assert jobs.keys.remember("k", "job-3", "h3") is None
    assert jobs.results.get("c") is None
    jobs.results.put("c", {"checkpoint": {"sha256": "ab"}})
    assert jobs.results.get("c") == {"checkpoint": {"sha256": "ab"}}
    jobs.metrics.incr("hits", 2)
    jobs.metrics.incr("hits")
    assert jobs.metrics.counters()["hits"] == 3 and jobs.ping()
    listed = [new(jobs, JobKind.condensation) for _ in range(3)]
    condensations = JobQuery(kinds=frozenset({JobKind.condensation}))
    assert [j.id for j in jobs.page(condensations, limit=2).jobs] == [listed[2].id, listed[1].id]


def walk(jobs: JobStore, query: JobQuery, limit: int) -> list[list[Job]]:
    pages, after = [], None
    while True:
        page = jobs.page(query, limit, after)
        pages.append(page.jobs)
        if page.next is None:
            return pages
        assert page.next == Position.of(page.jobs[-1])
        after = page.next


QUERIES = {
    "everything": JobQuery(kinds=frozenset(JobKind)),
    "one kind": JobQuery(kinds=frozenset({JobKind.initialization})),
    "two kinds, two statuses": JobQuery(
        kinds=frozenset({JobKind.condensation, JobKind.card}), statuses=frozenset({JobStatus.failed, JobStatus.queued})
    ),
    "one client's": JobQuery(kinds=frozenset({JobKind.initialization}), client="beta"),
    "created after": JobQuery(kinds=frozenset(JobKind), created_after=1_700_000_000.0 + 20 * 0.25),
    "rare": JobQuery(kinds=frozenset({JobKind.card}), statuses=frozenset({JobStatus.running}), client="alpha"),
    "none": JobQuery(kinds=frozenset(JobKind), created_after=1_800_000_000.0),
}


@pytest.mark.parametrize("chunk", [redis_store.INDEX_CHUNK, 5])
def test_pages_walk_every_matching_job_once_newest_first_and_full(jobs, chunk, monkeypatch):
    """Pages filtered in the store (kinds, statuses, client, creation time): every matching job exactly once, in
    (created_at, id) order newest first, every page but the last full. A chunk of 5 ids makes the Redis store read
    its indexes in many pieces, each cutting through a run of equal creation times."""
    monkeypatch.setattr(redis_store, "INDEX_CHUNK", chunk)
    made = stored_jobs(jobs, 250)
    for name, query in QUERIES.items():
        expected = [j.id for j in sorted((j for j in made if query.matches(j)), key=Position.of, reverse=True)]
        for limit in (1, 7, 50, 500):
            pages = walk(jobs, query, limit)
            assert [j.id for page in pages for j in page] == expected, (name, limit)
            assert all(len(page) == limit for page in pages[:-1]) and len(pages[-1]) <= limit
            assert len(pages) == max(1, -(-len(expected) // limit))  # no empty last page after a full one
            assert all(query.matches(j) for page in pages for j in page)
    assert len(walk(jobs, QUERIES["everything"], 7)) == 36  # 250 jobs: 35 full pages and one of 5


def test_jobs_created_during_a_walk_neither_shift_nor_repeat_it(jobs):
    """The next page starts after a position, not an offset: newer jobs created between two pages go before the
    first page (a new walk shows them), and the rest of the walk is unchanged."""
    made = stored_jobs(jobs, 40)
    query = JobQuery(kinds=frozenset(JobKind))
    first = jobs.page(query, 10)
    newer = [new(jobs, JobKind.card) for _ in range(15)]  # created now: newer than every stored one
    rest = walk_from(jobs, query, 10, first.next)
    walked = [j.id for j in first.jobs + rest]
    assert walked == [j.id for j in sorted(made, key=Position.of, reverse=True)]
    assert [j.id for j in jobs.page(query, 15).jobs] == [j.id for j in reversed(newer)]


def walk_from(jobs: JobStore, query: JobQuery, limit: int, after: Position) -> list[Job]:
    found = []
    while after is not None:
        page = jobs.page(query, limit, after)
        found += page.jobs
        after = page.next
    return found


def test_racing_claims_and_cancels_leave_every_record_and_index_consistent(jobs):
    """Each job is claimed by two workers and cancelled by the API at once: exactly one claim wins, a queued job
    is either cancelled before it starts or runs flagged, and the counts agree with the records."""
    records = [new(jobs, client="racer") for _ in range(12)]
    outcomes: dict[str, list[str]] = {job.id: [] for job in records}

    def claim(job_id: str, owner: str) -> None:
        outcomes[job_id].append(jobs.claim(job_id, owner, lease_s=30).outcome)

    with ThreadPoolExecutor(max_workers=6) as pool:
        for job in records:
            pool.submit(claim, job.id, "w1")
            pool.submit(jobs.request_cancel, job.id)
            pool.submit(claim, job.id, "w2")
    for job in records:
        after = jobs.get(job.id)
        assert after.cancel_requested
        seen = sorted(outcomes[job.id])
        if after.status == JobStatus.running:  # both claims came before the cancel: one won, the other found it held
            assert seen == ["busy", "claimed"] and after.attempts == 1 and after.lease_owner in ("w1", "w2"), seen
        else:  # cancelled while queued, or by the claim after it, which found the flag (never a running job lost)
            assert after.status == JobStatus.cancelled, after.status
            assert seen in (["terminal", "terminal"], ["cancelled", "terminal"], ["cancelled", "claimed"]), seen
    statuses = [jobs.get(job.id).status.value for job in records]
    counts = jobs.counts(JobKind.initialization)
    assert counts["queued"] == 0 and counts["running"] == statuses.count("running")
    assert counts["cancelled"] == statuses.count("cancelled") and jobs.active("racer") == counts["running"]


def test_job_logs_keep_the_last_lines_by_position_each_bounded_and_expiring_with_the_record(jobs):
    jobs.logs.max_lines = 5  # (both stores read it at each append)
    job = new(jobs)
    assert jobs.logs.read(job.id) == ([], 0)
    for i in range(8):
        jobs.logs.append(job.id, f'{{"n": {i}}}')
    assert jobs.logs.read(job.id) == ([f'{{"n": {i}}}' for i in range(3, 8)], 8)  # the last 5 of 8
    assert jobs.logs.read(job.id, 6) == (['{"n": 6}', '{"n": 7}'], 8)  # a follower asks for what it lacks
    assert jobs.logs.read(job.id, 1) == ([f'{{"n": {i}}}' for i in range(3, 8)], 8)  # gone ones are not invented
    assert jobs.logs.read(job.id, 8) == ([], 8)
    jobs.logs.append(job.id, "x" * 10_000)
    lines, end = jobs.logs.read(job.id, 8)
    assert end == 9 and len(lines[0]) == jobs.logs.MAX_LINE
    assert jobs.logs.read("another-job") == ([], 0)
    if isinstance(jobs, RedisJobStore):
        for key in (f"{jobs.p}:log:{job.id}", f"{jobs.p}:logn:{job.id}"):
            assert 590 < jobs.r.ttl(key) <= 600  # the record's TTL
