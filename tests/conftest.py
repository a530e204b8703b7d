"""The tiers, the scale and the shared fixtures.

- tests/unit/: no subprocess and no server of another process (in-process API tests through uvicorn included);
  `make test-fast` runs it.
- tests/service/: real Redis, Celery workers, API processes, SeaweedFS, torchrun, signals; every item there is
  marked `service` by the hook below.
- tests/support/: what both share (no test module imports another).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.support")  # the contract's tests and the helpers' checks, as in test modules

import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

from tests.support.harness import THREAD_ENV, TORCH_THREADS  # noqa: E402
from tests.support.scale import SCALE  # noqa: E402

pytest_plugins = ["tests.support.fixtures", "tests.support.stacks", "tests.support.store_contract"]

SERVICE_TIER = Path(__file__).parent / "service"

settings.load_profile(SCALE)
# The cores are shared by the xdist workers and the processes they start (servers, CLI commands, torchrun ranks).
torch.set_num_threads(TORCH_THREADS)
os.environ.update(THREAD_ENV)


# The service modules that take longest (minutes of subprocess training each, from `--durations`): handed out
# first, so that no worker starts one of them when the others are nearly done.
LONGEST_FIRST = (
    "test_cli_store.py",
    "test_streaming_memory.py",
    "test_distributed.py",
    "test_streaming.py",
    "test_cli.py",
    "test_cards.py",
    "test_ancestors.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the service tier, and hand it out first. `make test` distributes by module (`--dist loadscope`): a
    module's fixtures (its servers, its data) are made once, on the one worker that runs all its tests. The service
    modules, the longest units of work, go first (the longest of them before the rest); the unit tier fills the
    end (a stable sort: every module keeps its own order)."""
    service = {item: SERVICE_TIER in Path(item.path).parents for item in items}

    def order(item: pytest.Item) -> tuple[bool, int]:
        name = Path(item.path).name
        return not service[item], LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=order)
    for item in items:
        if service[item]:
            item.add_marker(pytest.mark.service)
