"""The one exception tree of falbudget.

Every error a user can cause is a :class:`FalbudgetError`; the CLI turns each into one line on
stderr and exit code 2 (usage or bad input) without a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from falbudget.pricing.engine import Quote


class FalbudgetError(Exception):
    """Base class of every error falbudget raises on purpose."""


class ConfigurationError(FalbudgetError, ValueError):
    """A configuration file, URL or option is wrong; the message names it and what is allowed."""


class PriceTableError(FalbudgetError, ValueError):
    """A price table failed to load or validate.

    ``file``, ``endpoint`` and ``field`` say where; any of them may be None when unknown.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        endpoint: str | None = None,
        field: str | None = None,
    ) -> None:
        self.file = file
        self.endpoint = endpoint
        self.field = field
        where = []
        if file is not None:
            where.append(f"{file}")
        if endpoint is not None:
            where.append(f"endpoint {endpoint!r}")
        if field is not None:
            where.append(f"field {field}")
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.reason = message


class InvalidArguments(FalbudgetError, ValueError):
    """A request's arguments are not allowed by the endpoint's input schema.

    ``parameter`` names the input, ``value`` is what was given and ``allowed`` says what is allowed.
    """

    def __init__(self, endpoint: str, parameter: str, value: Any, allowed: str) -> None:
        self.endpoint = endpoint
        self.parameter = parameter
        self.value = value
        self.allowed = allowed
        shown = "(missing)" if value is _MISSING else _short_repr(value)
        super().__init__(f"{endpoint}: {parameter}={shown} is not allowed: {allowed}")


class NoPriceInEffect(InvalidArguments):
    """A quote asked for a moment before the earliest dated prices of the endpoint.

    ``at`` is the moment given (None: now), ``earliest`` the ISO date (UTC) from which the
    endpoint's first version is in effect. An InvalidArguments whose ``parameter`` is "at".
    """

    def __init__(self, endpoint: str, at: Any, shown: str, earliest: str) -> None:
        super().__init__(endpoint, "at", at, f"on or after {earliest} (UTC)")
        self.at = at
        self.earliest = earliest
        self.args = (
            f"{endpoint}: no prices in effect {shown}: its earliest prices take effect on"
            f" {earliest} (UTC)",
        )


class UnknownEndpoint(FalbudgetError, LookupError):
    """The endpoint is not in the price table; ``close_matches`` lists likely intended names."""

    def __init__(self, endpoint: str, close_matches: Sequence[str] = (), known: int = 0) -> None:
        self.endpoint = endpoint
        self.close_matches = tuple(close_matches)
        hint = (
            f"; did you mean {', '.join(repr(m) for m in self.close_matches)}?"
            if self.close_matches
            else f"; the table prices {known} endpoint(s), see `falbudget endpoints`"
        )
        super().__init__(f"unknown endpoint {endpoint!r}{hint}")


class BudgetExceeded(FalbudgetError):
    """A request would take a cap over its limit; nothing was held and nothing was sent.

    ``cap`` is the cap that refused, ``quote`` the request's quote, and ``spent``, ``held`` and
    ``remaining`` the cap's figures (Decimal USD) in its current window at the moment of refusal.
    """

    def __init__(
        self,
        message: str,
        *,
        cap: Any,
        quote: Quote | None,
        amount: Decimal,
        spent: Decimal,
        held: Decimal,
        remaining: Decimal,
    ) -> None:
        super().__init__(message)
        self.cap = cap
        self.quote = quote
        self.amount = amount
        self.spent = spent
        self.held = held
        self.remaining = remaining


class LedgerError(FalbudgetError):
    """The ledger failed; the guard fails closed and sends nothing."""


class LedgerUnavailable(LedgerError):
    """The ledger cannot be reached: file locked past the timeout, server down, connection lost."""


class HoldNotFound(LedgerError, LookupError):
    """No hold has that id."""


class _Missing:
    def __repr__(self) -> str:
        return "(missing)"


_MISSING: Any = _Missing()


def _short_repr(value: Any, limit: int = 80) -> str:
    """A value as the user wrote it: JSON for what JSON can hold (null, true, "480p", [1, 2]),
    since arguments are JSON on every path into a quote; Python's repr for anything else."""
    text = None
    if _json_shaped(value):
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (ValueError, RecursionError):
            text = None
    if text is None:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_shaped(value: Any, depth: int = 0) -> bool:
    if value is None or isinstance(value, str | bool | int | float):
        return True
    if depth > 20:
        return False
    if isinstance(value, list | tuple):
        return all(_json_shaped(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_shaped(v, depth + 1) for k, v in value.items())
    return False
