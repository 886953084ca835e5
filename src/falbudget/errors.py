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


def install_hint(extra: str) -> str:
    """How to install one of falbudget's extras, from a package index and from a clone."""
    return f"pip install 'falbudget[{extra}]' (from a clone of falbudget: pip install '.[{extra}]')"


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
        reason: str = "cap_exceeded",
    ) -> None:
        super().__init__(message)
        self.reason = reason
        """``cap_exceeded`` (the cap's window would go over its limit) or ``max_per_request``
        (the request alone costs more than the cap allows one request)."""
        self.cap = cap
        self.quote = quote
        self.amount = amount
        self.spent = spent
        self.held = held
        self.remaining = remaining


class IdempotencyError(FalbudgetError):
    """An idempotency key stopped this call; nothing was held and nothing sent. ``key`` is the
    key, ``hold_id`` and ``state`` the hold it is bound to (the first request's)."""

    def __init__(self, message: str, *, key: str, hold_id: str, state: str) -> None:
        super().__init__(message)
        self.key = key
        self.hold_id = hold_id
        self.state = state


class IdempotencyConflict(IdempotencyError):
    """An idempotency key was reused for a different request; nothing was held and nothing sent.

    A key is bound to what it was first used for: the endpoint, the priced request (its canonical
    arguments) and the tags. ``differs`` says what this request changes ("endpoint", "tags",
    "arguments"; empty when the hold was recorded before keys were bound to requests).
    """

    def __init__(
        self, message: str, *, key: str, hold_id: str, state: str, differs: Sequence[str] = ()
    ) -> None:
        super().__init__(message, key=key, hold_id=hold_id, state=state)
        self.differs = tuple(differs)


class IdempotencyInProgress(IdempotencyError):
    """The first request under this idempotency key is still open and its outcome cannot be
    returned yet (fal's request id is not known yet); nothing was sent: retry later."""


class IdempotencyReplayed(IdempotencyError):
    """The request under this idempotency key was already made and its hold is closed, but this
    call cannot return its result (no fal request id was recorded to fetch it by: a ``stream``,
    a ``run`` without one, ``guard.call``); nothing was sent."""


class MissingTag(FalbudgetError, ValueError):
    """A request lacks the tag a cap is keyed on; refused before anything was held or sent.

    ``cap`` is the cap (its ``untagged`` is "refuse"), ``tag`` the missing tag name, ``given``
    the tag names the request carried and ``close_matches`` those of them close to ``tag``.
    """

    def __init__(
        self, cap: Any, tag: str, given: Sequence[str], close_matches: Sequence[str] = ()
    ) -> None:
        self.cap = cap
        self.tag = tag
        self.given = tuple(given)
        self.close_matches = tuple(close_matches)
        shown = ", ".join(self.given) if self.given else "none"
        if self.close_matches:
            wrote = " or ".join(repr(m) for m in self.close_matches)
            shown += f"; did you mean {tag!r} where you wrote {wrote}?"
        super().__init__(
            f"missing tag {tag!r}: cap {cap.label()!r} is keyed on it and the request has no"
            f" {tag!r} tag (tags given: {shown}). Tag the request {tag}=VALUE, or set"
            " untagged: skip on the cap to let requests without the tag past it"
        )


class LedgerError(FalbudgetError):
    """The ledger failed; the guard fails closed and sends nothing."""


class LedgerUnavailable(LedgerError):
    """The ledger cannot be reached: file locked past the timeout, server down, connection lost."""


class LedgerNotFound(LedgerError, LookupError):
    """A command that only reads found no ledger where the URL points (a SQLite file that does
    not exist, a PostgreSQL schema never created); it creates none. The message names the
    resolved path or schema."""


class HoldNotFound(LedgerError, LookupError):
    """No hold has that id."""


class KeyNotFound(LedgerError, LookupError):
    """No virtual key has that id (``falbudget keys revoke``)."""


class HoldClosed(FalbudgetError):
    """A hold was asked to close a second time in a way that contradicts how it closed.

    Settling a settled hold at another amount than it was settled at, or releasing a hold that
    was settled or that expired as spent (state ``expired``), raises it; nothing was changed.
    ``hold_id`` names the hold, ``state`` is its state, ``action`` what was asked ("settle" or
    "release"), ``amount`` the amount asked (Decimal USD; None for a release) and ``counted``
    what the hold counts as spent (Decimal USD).
    """

    def __init__(
        self,
        message: str,
        *,
        hold_id: str,
        state: str,
        action: str,
        amount: Decimal | None,
        counted: Decimal,
    ) -> None:
        super().__init__(message)
        self.hold_id = hold_id
        self.state = state
        self.action = action
        self.amount = amount
        self.counted = counted


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
