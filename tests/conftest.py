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

pytest_plugins = ["tests.support.fixtures", "tests.support.store_contract"]

SERVICE_TIER = Path(__file__).parent / "service"

settings.load_profile(SCALE)
# The cores are shared by the xdist workers and the processes they start (servers, CLI commands, torchrun ranks).
torch.set_num_threads(TORCH_THREADS)
os.environ.update(THREAD_ENV)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the service tier. A test that uses a module-scoped fixture (a module's servers, its data) runs on the
    xdist worker that runs the module's other such tests (`--dist loadgroup`), so that the fixture is made once;
    every other test goes to whichever worker is free."""
    for item in items:
        if SERVICE_TIER in Path(item.path).parents:
            item.add_marker(pytest.mark.service)
        if uses_module_fixtures(item):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


def uses_module_fixtures(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)  # pytest's own record of the fixtures a test function closes over
    if info is None:
        return False
    return any(d.scope in ("module", "class", "package") for defs in info.name2fixturedefs.values() for d in defs)
