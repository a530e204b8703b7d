"""The template store's contract (tests.support.store_contract) on the local backend: a folder."""

from __future__ import annotations

import pytest

from tests.support.store_contract import (  # noqa: F401 - collected here: the contract's tests
    test_a_signing_store_signs_every_version_it_publishes,
    test_a_tampered_file_is_refused,
    test_aliases_move_roll_back_and_protect_their_targets,
    test_cards_are_immutable_checksummed_revisions,
    test_concurrent_alias_moves_lose_no_update,
    test_gc_removes_only_what_no_version_uses,
    test_publish_load_verify_list,
)


@pytest.fixture
def location(tmp_path) -> str:
    return str(tmp_path / "store")
