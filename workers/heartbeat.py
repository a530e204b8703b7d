"""A Celery worker's liveness, checked without a broker round trip.

The worker's main process touches a heartbeat file on its timer (`workers.celery_app.Heartbeat`, a bootstep, as in
Celery's "worker liveness probe" recipe), every `LEARNGENE_WORKER_HEARTBEAT_INTERVAL_S` seconds; the images'
HEALTHCHECK runs `python -m workers.heartbeat`, which exits 0 when the file is fresh and 1 when it is missing or older
than `--max-age`. A stopped, hung or dead main process stops the beats, and so does a broker out of reach: the main
loop then sits in the consumer's reconnect until Redis answers again, so "unhealthy" reads "not consuming". (A
Kubernetes liveness probe built on it should tolerate the Redis outages it means to ride out: running jobs go on
meanwhile.)

Why not `celery inspect ping`: it imports the application (torch included) into a new client, broadcasts through
Redis and waits for replies, every interval: seconds of CPU, and an answer that depends on the broker as much as on
the worker. This module imports nothing but the standard library, so the check costs a Python start-up.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# The variable Settings.worker_heartbeat_file reads (jobs.settings); read here directly to keep the check cheap.
HEARTBEAT_FILE_ENV = "LEARNGENE_WORKER_HEARTBEAT_FILE"
DEFAULT_MAX_AGE_S = 30.0


def beat(path: Path) -> None:
    """One heartbeat: create the file or move its modification time to now."""
    path.touch()


def age_s(path: Path) -> float | None:
    """Seconds since the last heartbeat, or None when there has been none (no file)."""
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.heartbeat", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--file", type=Path, default=os.environ.get(HEARTBEAT_FILE_ENV), help=f"default: ${HEARTBEAT_FILE_ENV}"
    )
    parser.add_argument("--max-age", type=float, default=DEFAULT_MAX_AGE_S, help="seconds (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.file is None:
        parser.error(f"no heartbeat file: pass --file or set {HEARTBEAT_FILE_ENV}")
    age = age_s(args.file)
    if age is None:
        print(f"unhealthy: no heartbeat yet ({args.file} does not exist)")
        return 1
    if age > args.max_age:
        print(f"unhealthy: last heartbeat {age:.1f} s ago (more than {args.max_age:g} s)")
        return 1
    print(f"healthy: last heartbeat {age:.1f} s ago")
    return 0


if __name__ == "__main__":
    sys.exit(main())
