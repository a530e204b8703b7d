"""Stopping long work from outside: a callback polled between steps and between chunks of data being read.

A cancelled job, a lease another worker has taken over, or a time limit all answer True; the work then raises
`Stopped` at the next point where nothing is half-written.
"""

from __future__ import annotations

from collections.abc import Callable

StopFn = Callable[[], bool]


class Stopped(Exception):
    """Raised by long-running work when its `should_stop` callback answers True."""


def check_stop(should_stop: StopFn | None, where: str) -> None:
    if should_stop is not None and should_stop():
        raise Stopped(f"stopped {where}")
