"""falbudget: what a fal.ai request will cost before it is sent, and a guard that stops any
request that would break a budget."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from falbudget.errors import (
    BudgetExceeded,
    ConfigurationError,
    FalbudgetError,
    HoldNotFound,
    InvalidArguments,
    LedgerError,
    LedgerUnavailable,
    PriceTableError,
    UnknownEndpoint,
)
from falbudget.pricing import LineItem, PriceTable, Quote, default_table, load_table

__version__ = "0.1.0"


def quote(
    endpoint: str, arguments: Mapping[str, Any] | None = None, *, strict: bool = False
) -> Quote:
    """What ``endpoint`` called with ``arguments`` will cost, under the default price table.

    The default table is the packaged pricing.yaml, or the file ``FALBUDGET_PRICING`` names; it is
    loaded and validated once per process. ``strict=True`` also requires the inputs fal requires
    (prompt, image_url), as the guard does. Raises UnknownEndpoint or InvalidArguments.
    """
    return default_table().quote(endpoint, arguments, strict=strict)


__all__ = [
    "BudgetExceeded",
    "ConfigurationError",
    "FalbudgetError",
    "HoldNotFound",
    "InvalidArguments",
    "LedgerError",
    "LedgerUnavailable",
    "LineItem",
    "PriceTable",
    "PriceTableError",
    "Quote",
    "UnknownEndpoint",
    "__version__",
    "default_table",
    "load_table",
    "quote",
]
