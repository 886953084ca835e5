"""falbudget: what a fal.ai request will cost before it is sent, and a guard that stops any
request that would break a budget.

The guard and the ledgers load on first use, so that ``falbudget quote`` starts quickly.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from falbudget.errors import (
    BudgetExceeded,
    ConfigurationError,
    FalbudgetError,
    HoldClosed,
    HoldNotFound,
    IdempotencyConflict,
    IdempotencyError,
    IdempotencyInProgress,
    IdempotencyReplayed,
    InvalidArguments,
    LedgerError,
    LedgerNotFound,
    LedgerUnavailable,
    MissingTag,
    NoPriceInEffect,
    PriceTableError,
    UnknownEndpoint,
)
from falbudget.pricing import LineItem, PriceTable, Quote, default_table, load_table

if TYPE_CHECKING:  # pragma: no cover
    import datetime as dt

    from falbudget.guard import Alert, Cap, CapStatus, Decision, Guard, Hold
    from falbudget.ledger import Ledger, open_ledger

__version__ = "0.1.0"

_LAZY = {
    "Alert": "falbudget.guard",
    "Cap": "falbudget.guard",
    "CapStatus": "falbudget.guard",
    "Decision": "falbudget.guard",
    "Guard": "falbudget.guard",
    "Hold": "falbudget.guard",
    "Ledger": "falbudget.ledger",
    "open_ledger": "falbudget.ledger",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'falbudget' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def quote(
    endpoint: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    strict: bool = False,
    at: dt.datetime | dt.date | float | None = None,
) -> Quote:
    """What ``endpoint`` called with ``arguments`` will cost, under the default price table.

    The default table is the packaged pricing.yaml, or the file ``FALBUDGET_PRICING`` names; it is
    loaded and validated once per process. ``strict=True`` also requires the inputs fal requires
    (prompt, image_url), as the guard does. ``at`` prices with the rules in effect at that moment
    (an aware datetime, a naive one read as UTC, a date, or POSIX seconds; default: now); the
    quote's ``effective_from`` names the dated version used. Raises UnknownEndpoint or
    InvalidArguments (NoPriceInEffect, a subclass, for a moment before the earliest prices).
    """
    return default_table().quote(endpoint, arguments, strict=strict, at=at)


__all__ = [
    "Alert",
    "BudgetExceeded",
    "Cap",
    "CapStatus",
    "ConfigurationError",
    "Decision",
    "FalbudgetError",
    "Guard",
    "Hold",
    "HoldClosed",
    "HoldNotFound",
    "IdempotencyConflict",
    "IdempotencyError",
    "IdempotencyInProgress",
    "IdempotencyReplayed",
    "InvalidArguments",
    "Ledger",
    "LedgerError",
    "LedgerNotFound",
    "LedgerUnavailable",
    "LineItem",
    "MissingTag",
    "NoPriceInEffect",
    "PriceTable",
    "PriceTableError",
    "Quote",
    "UnknownEndpoint",
    "__version__",
    "default_table",
    "load_table",
    "open_ledger",
    "quote",
]
