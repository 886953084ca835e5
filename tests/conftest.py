"""Shared test set-up: the fake fal server fixtures (tests/fal_fixtures.py) and the ledger
backends' ``ledger_factory`` (tests/ledger_backends.py)."""

pytest_plugins = ["fal_fixtures", "ledger_backends"]
