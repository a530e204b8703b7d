"""How soon a running job stops when cancelled inside a stretch without stop checks, and what a process per job costs
the embedded executor.

Starts an embedded `learngene serve` (each job in a process of its own) and
  1. --probes times: submits a job that measures 512 calibration images of 785 tokens before fitting (about a
     minute on two CPU cores, with no stop check inside), cancels it once that stretch has begun (its log line), and
     measures cancel -> `cancelled`, as a ratio of LEARNGENE_STOP_GRACE_S;
  2. --jobs times: a tiny job without fitting, submit -> succeeded: what the executor adds per job (process start
     from the fork server, a job-store round trip per record change).
Prints a table and writes bench/results/stop_latency.json.

    python bench/stop_latency.py [--probes 3] [--jobs 10] [--grace 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from service_common import RESULTS, SHARED, print_table, write_report

from tests.support.harness import service_env, start_api

SLOW = {
    "model": "vit_tiny_patch16_224",
    "overrides": {"depth": 12, "img_size": 28, "patch_size": 1, "in_chans": 1, "num_classes": 10},
    "calibration": {"uri": f"idx://{SHARED / 'FashionMNIST'}", "max_samples": 512},
    "fit": {"steps": 5, "batch_size": 32},
}
TINY = {"model": "vit_tiny_patch16_224", "overrides": {"depth": 2, "embed_dim": 48, "num_heads": 3, "img_size": 28,
                                                       "patch_size": 7, "in_chans": 1}}  # fmt: skip


def wait(http: httpx.Client, job_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/v1/initializations/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise TimeoutError(job_id)


def wait_for_line(log: Path, job_id: str, text: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if job_id in line and text in line:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{job_id}: {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probes", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--grace", type=float, default=2.0, help="LEARNGENE_STOP_GRACE_S")
    parser.add_argument("--out", default=str(RESULTS / "stop_latency.json"))
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="learngene-stop-"))
    env = service_env(home, redis_url=None, data_roots=[SHARED], LEARNGENE_STOP_GRACE_S=str(args.grace))
    api = start_api(env, home / "api.log")
    try:
        with httpx.Client(base_url=api.url, timeout=60) as http:
            wait(http, http.post("/v1/initializations", json=TINY).json()["id"])  # the fork server starts: not counted
            stops = []
            for _ in range(args.probes):
                job_id = http.post("/v1/initializations", json=SLOW).json()["id"]
                wait_for_line(api.log, job_id, "measuring the descendant on 512 calibration images")
                t0 = time.perf_counter()
                http.delete(f"/v1/initializations/{job_id}")
                job = wait(http, job_id)
                stops.append(time.perf_counter() - t0)
                assert job["status"] == "cancelled", job
            tiny = []
            for _ in range(args.jobs):
                t0 = time.perf_counter()
                job = wait(http, http.post("/v1/initializations", json=TINY).json()["id"])
                tiny.append(time.perf_counter() - t0)
                assert job["status"] == "succeeded", job
        ended = sum("did not stop within" in line for line in api.log.read_text().splitlines())
    finally:
        api.stop()
    summary = {
        "cancel_to_cancelled_s": stops,
        "cancel_to_cancelled_over_grace_median": statistics.median(stops) / args.grace,
        "ended_by_watchdog": ended,
        "tiny_job_submit_to_succeeded_s": tiny,
    }
    print_table(
        [
            ("stop grace (LEARNGENE_STOP_GRACE_S)", f"{args.grace:g} s"),
            ("cancel -> cancelled, median", f"{statistics.median(stops):.2f} s"),
            ("  as a multiple of the grace", f"{summary['cancel_to_cancelled_over_grace_median']:.2f}x"),
            ("  max", f"{max(stops):.2f} s"),
            ("jobs ended by their watchdog", f"{ended} / {args.probes}"),
            ("tiny job submit -> succeeded, median", f"{statistics.median(tiny):.2f} s"),
            ("  min / max", f"{min(tiny):.2f} / {max(tiny):.2f} s"),
        ]
    )
    write_report("stop_latency", args, summary)
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, list)}))


if __name__ == "__main__":
    main()
