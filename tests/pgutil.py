"""Placeholder: the PostgreSQL test helper is written separately and replaces this file."""

from __future__ import annotations

import pytest


def postgres_test_url() -> str:
    """The URL of a fresh schema for this test; skips until the postgres backend exists."""
    pytest.skip("postgres backend not written yet")
