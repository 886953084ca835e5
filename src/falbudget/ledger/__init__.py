"""Ledgers: where holds and running totals live. ``open_ledger(url)`` picks the backend."""

from __future__ import annotations

import importlib
import os
from typing import cast

from falbudget.errors import ConfigurationError
from falbudget.ledger._urls import redact_url
from falbudget.ledger.base import (
    ADJUSTABLE_STATES,
    OPEN_STATES,
    SPENT_STATES,
    Adjustment,
    Admission,
    BucketCharge,
    BucketTotals,
    Hold,
    HoldState,
    Ledger,
)
from falbudget.ledger.memory import MemoryLedger
from falbudget.ledger.sqlite import SQLiteLedger

LEDGER_ENV = "FALBUDGET_LEDGER"

_FORMS = (
    "memory://",
    "sqlite:///relative/to/cwd.db",
    "sqlite:////absolute/path.db",
    "sqlite:///~/in/home.db",
    "postgresql://user:password@host:5432/dbname (or postgres://)",
)


def open_ledger(url: str) -> Ledger:
    """The ledger ``url`` names; each call opens a new ledger object.

    ``memory://`` is a new, empty in-process ledger. ``sqlite:///`` follows SQLAlchemy: three
    slashes and a relative path (from the working directory), four for an absolute one, ``~``
    expanded; a missing parent directory is created (0700) and a new file is 0600.
    ``postgresql://`` and ``postgres://`` need ``falbudget[postgres]``. Anything else raises
    ConfigurationError.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"ledger URL {url!r} is not a string; {_allowed()}")
    if "\0" in url:  # no file name or libpq string can hold one
        raise ConfigurationError(
            f"ledger URL {redact_url(url)!r} is not allowed: it holds a NUL character; {_allowed()}"
        )
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if sep and scheme == "memory" and not rest:
        return MemoryLedger()
    if sep and scheme == "sqlite":
        path = rest[1:] if rest.startswith("/") else ""
        if path and not any(c in path for c in "?#") and path.strip("/"):
            return SQLiteLedger(os.path.expanduser(path))
    if sep and scheme in ("postgresql", "postgres") and rest:
        return _open_postgres(url)
    raise ConfigurationError(f"ledger URL {redact_url(url)!r} is not allowed; {_allowed()}")


def default_ledger_url() -> str:
    """``FALBUDGET_LEDGER`` when set, else a SQLite file ``ledger.db`` in the user data dir."""
    configured = os.environ.get(LEDGER_ENV, "").strip()
    if configured:
        return configured
    import platformdirs

    return "sqlite:///" + os.path.join(platformdirs.user_data_dir("falbudget"), "ledger.db")


def _open_postgres(url: str) -> Ledger:
    try:
        module = importlib.import_module("falbudget.ledger.postgres")
        return cast(Ledger, module.PostgresLedger(url))
    except ImportError as exc:
        raise ConfigurationError(
            f"ledger URL {redact_url(url)!r} needs PostgreSQL support: install falbudget[postgres] "
            f"({exc})"
        ) from exc


def _allowed() -> str:
    return "the allowed forms are " + ", ".join(_FORMS)


__all__ = [
    "ADJUSTABLE_STATES",
    "LEDGER_ENV",
    "OPEN_STATES",
    "SPENT_STATES",
    "Adjustment",
    "Admission",
    "BucketCharge",
    "BucketTotals",
    "Hold",
    "HoldState",
    "Ledger",
    "MemoryLedger",
    "SQLiteLedger",
    "default_ledger_url",
    "open_ledger",
]
