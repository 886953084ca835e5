"""Ledgers: where holds and running totals live. ``open_ledger(url)`` picks the backend."""

from __future__ import annotations

import importlib
import os
from typing import cast

from falbudget.errors import ConfigurationError, install_hint
from falbudget.ledger._urls import redact_url
from falbudget.ledger.base import (
    ADJUSTABLE_STATES,
    OPEN_STATES,
    SPENT_STATES,
    Adjustment,
    Admission,
    ApiKey,
    BucketCharge,
    BucketTotals,
    Hold,
    HoldGroup,
    HoldState,
    Ledger,
    Refusal,
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


def open_ledger(url: str, *, read_only: bool = False) -> Ledger:
    """The ledger ``url`` names; each call opens a new ledger object.

    ``memory://`` is a new, empty in-process ledger. ``sqlite:///`` follows SQLAlchemy: three
    slashes and a relative path (from the working directory), four for an absolute one, ``~``
    expanded; every missing directory above the file is created 0700 (whatever the umask) and
    a new file is 0600.
    ``postgresql://`` and ``postgres://`` need ``falbudget[postgres]``. Anything else raises
    ConfigurationError.

    ``read_only=True`` (the CLI's commands that only read) opens an existing ledger without
    creating, migrating or writing anything: a missing SQLite file or PostgreSQL schema raises
    LedgerNotFound naming the resolved path or schema.
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
    path = _sqlite_path(url)
    if path is not None:
        return SQLiteLedger(os.path.expanduser(path), read_only=read_only)
    if sep and scheme in ("postgresql", "postgres") and rest:
        return _open_postgres(url, read_only)
    raise ConfigurationError(f"ledger URL {redact_url(url)!r} is not allowed; {_allowed()}")


def _sqlite_path(url: str) -> str | None:
    """The path of a well-formed ``sqlite:///`` URL as written (relative, absolute or ``~``)."""
    scheme, sep, rest = url.partition("://")
    if not (sep and scheme.lower() == "sqlite"):
        return None
    path = rest[1:] if rest.startswith("/") else ""
    if path and not any(c in path for c in "?#") and path.strip("/"):
        return path
    return None


def resolve_ledger_url(url: str, base_dir: str) -> str:
    """``url`` with a relative SQLite path made absolute against ``base_dir`` (a configuration
    file's directory, as its ``pricing:`` is); any other URL is returned as it is."""
    path = _sqlite_path(url) if isinstance(url, str) else None
    if path is None or os.path.isabs(path) or path.startswith("~"):
        return url
    return "sqlite:///" + os.path.join(os.path.abspath(base_dir), path)


def default_ledger_url() -> str:
    """``FALBUDGET_LEDGER`` when set, else a SQLite file ``ledger.db`` in the user data dir."""
    configured = os.environ.get(LEDGER_ENV, "").strip()
    if configured:
        return configured
    import platformdirs

    return "sqlite:///" + os.path.join(platformdirs.user_data_dir("falbudget"), "ledger.db")


def _open_postgres(url: str, read_only: bool = False) -> Ledger:
    try:
        module = importlib.import_module("falbudget.ledger.postgres")
        return cast(Ledger, module.PostgresLedger(url, read_only=read_only))
    except ImportError as exc:
        raise ConfigurationError(
            f"ledger URL {redact_url(url)!r} needs PostgreSQL support: {install_hint('postgres')}"
            f" ({exc})"
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
    "ApiKey",
    "BucketCharge",
    "BucketTotals",
    "Hold",
    "HoldGroup",
    "HoldState",
    "Ledger",
    "MemoryLedger",
    "Refusal",
    "SQLiteLedger",
    "default_ledger_url",
    "open_ledger",
    "resolve_ledger_url",
]
