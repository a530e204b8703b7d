"""How big the tests are and how long they wait.

- LEARNGENE_TEST_SCALE: `dev` (`make test`, `make test-fast`) or `full` (`make test-full`): the sizes of the soak,
  of the fuzzers (hypothesis profiles of the same names) and of other loops that count repetitions. Every kind of
  test runs at both scales; `full` runs more of each.
- LEARNGENE_TEST_PATIENCE: a factor on every wait for CPU-bound work (a job to finish, a process to start, a
  command to exit). Those waits only catch a hang: a busy machine makes the work slower, never wrong, so a fixed
  wait there would be a flake. Waits that *are* the property under test (a cancel that takes effect within
  seconds, a lease that lapses) are written as such in their tests and not scaled.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

SCALE = os.environ.get("LEARNGENE_TEST_SCALE", "dev")
if SCALE not in ("dev", "full"):
    raise RuntimeError(f"LEARNGENE_TEST_SCALE is {SCALE!r}: dev or full")
PATIENCE = float(os.environ.get("LEARNGENE_TEST_PATIENCE", "4"))
# A command or job that has not finished after this long is hung, not slow.
PROCESS_TIMEOUT_S = 300 * PATIENCE

# Examples drawn by the property-based tests: the full count in `full`, a quarter of it (at least 10) in `dev`.
DEV_EXAMPLES = 0.25
# The profiles (loaded by tests/conftest.py) set the count of the tests that name none.
settings.register_profile("full", max_examples=100, deadline=None, database=None)
settings.register_profile("dev", max_examples=25, deadline=None, database=None)


def by_scale(dev, full):
    """`dev` at the dev scale, `full` at the full one."""
    return full if SCALE == "full" else dev


def examples(full: int) -> int:
    """How many examples a hypothesis test draws that draws `full` at the full scale."""
    return by_scale(max(10, round(full * DEV_EXAMPLES)), full)


def fuzz_settings(full: int, dev: int | None = None) -> settings:
    """Settings of the HTTP fuzzers: `full` requests at the full scale, `dev` (else `examples(full)`) at the dev
    scale, no deadline, every health check off (each example is a real request to a real server)."""
    count = by_scale(examples(full) if dev is None else dev, full)
    return settings(max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def patient(timeout_s: float) -> float:
    """A wait on CPU-bound work, stretched by LEARNGENE_TEST_PATIENCE."""
    return timeout_s * PATIENCE
