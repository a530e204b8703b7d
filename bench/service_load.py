"""Service load benchmark: concurrent submissions against one API and one Celery worker (real Redis, real HTTP).

Starts a worker and an API on a dedicated Redis database (or uses --url), then
  1. submits --jobs distinct tiny initializations from --clients threads at once: submission latency p50/p99;
  2. waits for all of them: completed jobs per minute (one worker, CPU);
  3. resubmits --cache-probes identical requests one by one: end-to-end latency of a cache hit.
Prints a table and writes bench/results/service_load.json (with --storage s3: the template store and the
checkpoints on a local S3 server, SeaweedFS, written to service_load_s3.json).

    python bench/service_load.py [--jobs 200] [--clients 16] [--steps 20] [--storage local|s3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from service_common import BENCH_REDIS_URL, RESULTS, SHARED, percentile, print_table, tiny_request, write_report

from tests.support.harness import service_env, start_api, start_worker
from tests.support.s3server import BUCKET, S3Server


def wait_all(http: httpx.Client, ids: list[str], timeout: float, poll: float = 0.5) -> dict[str, dict]:
    pending, done = set(ids), {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            job = http.get(f"/v1/initializations/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                done[job_id] = job
                pending.discard(job_id)
        time.sleep(poll)
    if pending:
        raise TimeoutError(f"{len(pending)} jobs unfinished after {timeout} s")
    return done


def run(url: str, args: argparse.Namespace) -> dict:
    with httpx.Client(base_url=url, timeout=60) as http:

        def submit(seed: int) -> tuple[float, str]:
            t0 = time.perf_counter()
            response = http.post("/v1/initializations", json=tiny_request(seed, args.steps))
            response.raise_for_status()
            return time.perf_counter() - t0, response.json()["id"]

        # One job first, not counted: the API's first request builds caches (timm specs, broker connection).
        cold_s, warm_id = submit(999)
        wait_all(http, [warm_id], timeout=120)
        start = time.time()
        with ThreadPoolExecutor(args.clients) as pool:
            submitted = list(pool.map(submit, range(1000, 1000 + args.jobs)))
        latencies = [s for s, _ in submitted]
        done = wait_all(http, [i for _, i in submitted], timeout=args.timeout)
        finished_at = max(dt.datetime.fromisoformat(j["timings"]["finished_at"]).timestamp() for j in done.values())
        statuses = [j["status"] for j in done.values()]
        per_minute = 60 * len(done) / (finished_at - start)
        run_s = [j["timings"]["running_s"] for j in done.values()]
        queue_s = [j["timings"]["queued_s"] for j in done.values()]

        cache = []
        for seed in range(1000, 1000 + args.cache_probes):
            t0 = time.perf_counter()
            job_id = submit(seed)[1]
            job = wait_all(http, [job_id], timeout=60, poll=0.02)[job_id]
            cache.append(time.perf_counter() - t0)
            assert job["result"]["cached"], job
    return {
        "jobs": args.jobs,
        "succeeded": statuses.count("succeeded"),
        "first_submission_cold_ms": 1000 * cold_s,
        "submission_ms": {"p50": 1000 * percentile(latencies, 50), "p99": 1000 * percentile(latencies, 99),
                          "max": 1000 * max(latencies)},
        "completed_per_minute": per_minute,
        "job_running_s": {"p50": statistics.median(run_s), "p99": percentile(run_s, 99)},
        "job_queued_s": {"p50": statistics.median(queue_s), "p99": percentile(queue_s, 99)},
        "cache_hit_end_to_end_ms": {"p50": 1000 * statistics.median(cache), "p99": 1000 * percentile(cache, 99)},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="fitting steps per job")
    parser.add_argument("--cache-probes", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--url", help="an already running API (with its own workers) instead of starting one")
    parser.add_argument(
        "--storage", choices=["local", "s3"], default="local", help="where the template store and the checkpoints live"
    )
    parser.add_argument("--out", help="default: bench/results/service_load[_s3].json")
    args = parser.parse_args()
    args.out = args.out or str(RESULTS / ("service_load_s3.json" if args.storage == "s3" else "service_load.json"))

    if args.url:
        summary = run(args.url, args)
    else:
        import redis

        redis.Redis.from_url(BENCH_REDIS_URL).flushdb()
        home = Path(tempfile.mkdtemp(prefix="learngene-load-"))
        s3 = S3Server(home / "s3") if args.storage == "s3" else None
        extra = {}
        if s3 is not None:
            s3.start()
            extra = {**s3.env, "LEARNGENE_STORE": f"s3://{BUCKET}/load/store",
                     "LEARNGENE_ARTIFACTS": f"s3://{BUCKET}/load/checkpoints"}  # fmt: skip
        env = service_env(home, redis_url=BENCH_REDIS_URL, data_roots=[SHARED], **extra)
        worker = start_worker(env, home / "worker.log")
        api = start_api(env, home / "api.log")
        try:
            summary = run(api.url, args)
        finally:
            api.stop()
            worker.stop()
            if s3 is not None:
                s3.stop()
            redis.Redis.from_url(BENCH_REDIS_URL).flushdb()

    rows = [
        ("storage (template store, checkpoints)", args.storage),
        ("jobs submitted / succeeded", f"{summary['jobs']} / {summary['succeeded']}"),
        (f"submission latency p50 ({args.clients} clients)", f"{summary['submission_ms']['p50']:.1f} ms"),
        ("submission latency p99", f"{summary['submission_ms']['p99']:.1f} ms"),
        ("first submission to a cold API", f"{summary['first_submission_cold_ms']:.0f} ms"),
        ("completed jobs per minute (1 worker, CPU)", f"{summary['completed_per_minute']:.1f}"),
        ("job running time p50", f"{summary['job_running_s']['p50']:.2f} s"),
        ("cache hit, submit to succeeded, p50", f"{summary['cache_hit_end_to_end_ms']['p50']:.0f} ms"),
        ("cache hit, submit to succeeded, p99", f"{summary['cache_hit_end_to_end_ms']['p99']:.0f} ms"),
    ]
    print_table(rows, width=64)
    write_report("service_load", args, summary)


if __name__ == "__main__":
    main()
