"""Shared test set-up: the fake fal server fixtures (tests/fal_fixtures.py)."""

pytest_plugins = ["fal_fixtures"]
