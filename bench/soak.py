"""Soak run: jobs against one API and two Celery workers while one worker is SIGKILLed every 30 s (and restarted,
as a supervisor would), with the production lease and reaper settings.

    python bench/soak.py [--jobs 200] [--kill-every 30]

Counts accepted jobs that never reached an end (lost), jobs that ended failed, jobs whose completion was recorded
more than once (duplicates, from the workers' "job <id> succeeded" lines, written only when the record changed),
checkpoint files against succeeded jobs, leftover temporary files, and the completion time (submit to succeeded)
p50/p99. Prints a table and writes bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import redis
from service_common import BENCH_REDIS_URL, RESULTS, SHARED, percentile, print_table, tiny_request, write_report

from tests.support.harness import kill_group, service_env, start_api, start_worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=40, help="fitting steps per job")
    parser.add_argument("--kill-every", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--out", default=str(RESULTS / "soak.json"))
    args = parser.parse_args()

    redis.Redis.from_url(BENCH_REDIS_URL).flushdb()
    home = Path(tempfile.mkdtemp(prefix="learngene-soak-"))
    env = service_env(home, redis_url=BENCH_REDIS_URL, data_roots=[SHARED])  # production lease/reaper defaults
    workers = {name: start_worker(env, home / f"{name}-0.log", name=name) for name in ("w1", "w2")}
    api = start_api(env, home / "api.log")
    kills: list[float] = []
    stop = threading.Event()

    def killer() -> None:
        turn = 0
        while not stop.wait(args.kill_every):
            name = ("w1", "w2")[turn % 2]
            kill_group(workers[name])
            kills.append(time.time())
            turn += 1
            workers[name] = start_worker(env, home / f"{name}-{turn}.log", name=name)

    submitted: dict[str, float] = {}
    started = time.time()
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=api.url, timeout=60) as http:
            for seed in range(args.jobs):
                response = http.post("/v1/initializations", json=tiny_request(seed, args.steps))
                response.raise_for_status()
                submitted[response.json()["id"]] = time.time()
            done: dict[str, dict] = {}
            deadline = time.monotonic() + args.timeout
            while len(done) < len(submitted) and time.monotonic() < deadline:
                for job_id in [j for j in submitted if j not in done]:
                    job = http.get(f"/v1/initializations/{job_id}").json()
                    if job["status"] in ("succeeded", "failed", "cancelled"):
                        done[job_id] = job
                time.sleep(1.0)
    finally:
        stop.set()
        thread.join()
        api.stop()
        for worker in workers.values():
            worker.stop()
    elapsed = time.time() - started

    logs = "".join(p.read_text(errors="replace") for p in home.glob("w*.log"))
    completions = Counter(re.findall(r"job ([0-9a-f]{32}) succeeded", logs))
    succeeded = [j for j in done.values() if j["status"] == "succeeded"]
    latency = [j["timings"]["finished_at"] - submitted[j["id"]] for j in succeeded]
    attempts = Counter(j["attempts"] for j in done.values())
    artifacts = home / "artifacts"
    summary = {
        "jobs_accepted": len(submitted),
        "jobs_succeeded": len(succeeded),
        "jobs_lost": len(submitted) - len(done),
        "jobs_failed": sum(1 for j in done.values() if j["status"] != "succeeded"),
        "duplicate_completions": sum(n - 1 for n in completions.values() if n > 1),
        "checkpoint_files": len(list(artifacts.glob("*.safetensors"))),
        "leftover_temporary_files": len(
            [
                p
                for d in (artifacts, home / "work" / "checkpoints")
                if d.is_dir()
                for p in d.iterdir()
                if p.name.startswith(".")
            ]
        ),
        "worker_kills": len(kills),
        "jobs_by_attempts": dict(sorted(attempts.items())),
        "completion_s": {
            "p50": percentile(latency, 50),
            "p99": percentile(latency, 99),
            "max": max(latency),
            "mean": statistics.mean(latency),
        },
        "wall_s": elapsed,
    }
    rows = [
        ("jobs accepted / succeeded", f"{summary['jobs_accepted']} / {summary['jobs_succeeded']}"),
        ("jobs lost (never ended)", summary["jobs_lost"]),
        ("jobs failed", summary["jobs_failed"]),
        ("duplicate completions", summary["duplicate_completions"]),
        ("checkpoint files (one per job)", summary["checkpoint_files"]),
        ("leftover temporary files", summary["leftover_temporary_files"]),
        (f"worker kills (every {args.kill_every:.0f} s)", summary["worker_kills"]),
        ("jobs by attempts", summary["jobs_by_attempts"]),
        ("completion p50 / p99", f"{summary['completion_s']['p50']:.1f} s / {summary['completion_s']['p99']:.1f} s"),
        ("wall time", f"{elapsed:.0f} s"),
    ]
    print_table(rows)
    write_report("soak", args, summary)
    redis.Redis.from_url(BENCH_REDIS_URL).flushdb()


if __name__ == "__main__":
    main()
