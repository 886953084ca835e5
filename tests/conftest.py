"""Shared test set-up: the fake fal server fixtures (tests/fal_fixtures.py) and the ledger
backends' ``ledger_factory`` (tests/ledger_backends.py)."""

import os
from collections.abc import Iterator

import pytest

pytest_plugins = ["fal_fixtures", "ledger_backends"]


@pytest.fixture(autouse=True, scope="session")
def _no_table_cache() -> Iterator[None]:
    """The compiled-table cache is off unless a test turns it on (tests/test_table_cache.py):
    tests count validations, and none writes to the user's cache directory."""
    saved = os.environ.get("FALBUDGET_CACHE_DIR")
    os.environ["FALBUDGET_CACHE_DIR"] = ""
    yield
    if saved is None:
        os.environ.pop("FALBUDGET_CACHE_DIR", None)
    else:
        os.environ["FALBUDGET_CACHE_DIR"] = saved
