"""Idempotency keys as payment APIs have them: a key is bound to what it was first used for (the
endpoint, the canonical priced arguments and the tags: their fingerprint, which the ledger stores
and compares as an opaque string) and remembered for ``idempotency_ttl`` seconds after its hold
closes. One place for the rules the guard, its configuration and the fal_client wrapper share."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from falbudget.errors import (
    ConfigurationError,
    IdempotencyConflict,
    IdempotencyInProgress,
    IdempotencyReplayed,
    InvalidArguments,
)
from falbudget.ledger.base import DEFAULT_IDEMPOTENCY_TTL, OPEN_STATES, Hold

DEFAULT_TTL = DEFAULT_IDEMPOTENCY_TTL
"""24 hours."""
MIN_TTL = 3_600.0
"""One hour: a shorter memory would let a retry after an ordinary outage send the request again."""
MAX_TTL = 365 * 86_400.0
"""365 days."""


def check_ttl(value: object) -> float:
    """``value`` as the seconds a key is remembered after its hold closes, or ConfigurationError."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not MIN_TTL <= value <= MAX_TTL
    ):
        raise ConfigurationError(
            f"idempotency_ttl={value!r} is not allowed: a number of seconds from {MIN_TTL:.0f}"
            f" (1 hour) to {MAX_TTL:.0f} (365 days); the default is {DEFAULT_TTL:.0f} (24 hours)"
        )
    return float(value)


def check_key(key: object) -> str | None:
    """``key`` as an idempotency key (None: no key), or ConfigurationError."""
    if key is not None and (not isinstance(key, str) or not key.strip()):
        raise ConfigurationError(
            f"idempotency_key={key!r} is not allowed: a non-empty string such as 'job-42', or None"
        )
    return key


def fingerprint(endpoint: str, arguments: Mapping[str, Any], tags: Mapping[str, str]) -> str:
    """The sha256 of the canonical JSON of the request a key is bound to: ``arguments`` are the
    quote's (validated, defaults filled in), so leaving out a default or writing it out is the
    same request; JSON is what fal receives, so ``(1, 2)`` and ``[1, 2]`` are the same too."""
    try:
        text = json.dumps(
            {"endpoint": endpoint, "arguments": arguments, "tags": tags},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            default=_mapping,
        )
    except (TypeError, ValueError) as exc:
        raise InvalidArguments(
            endpoint,
            "arguments",
            dict(arguments),
            f"JSON values to be bound to an idempotency key ({exc})",
        ) from None
    return hashlib.sha256(text.encode()).hexdigest()


def _mapping(value: object) -> dict[Any, Any]:
    """Read-only mappings (the quote's arguments) as the JSON objects they are; else TypeError."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} {value!r} is not a JSON value")


def _own(tags: Mapping[str, str]) -> dict[str, str]:
    """The caller's tags (the guard adds the endpoint as a tag itself)."""
    return {name: value for name, value in tags.items() if name != "endpoint"}


def _lifetime(hold: Hold) -> str:
    ttl = hold.idempotency_ttl
    if ttl is None:
        return "this key is remembered for ever"
    shown = f"{ttl / 3600:g} h" if ttl % 60 == 0 else f"{ttl:g} s"
    return f"a key is remembered for {shown} after its hold closes"


def conflict(key: str, hold: Hold, endpoint: str, tags: Mapping[str, str]) -> IdempotencyConflict:
    """The error for ``key`` bound to ``hold`` and reused for another request (``endpoint`` with
    ``tags``)."""
    where = f"hold {hold.id} ({hold.state}, {hold.endpoint})"
    differs: list[str] = []
    if hold.fingerprint is None:
        why = (
            f"{where} was made under it before falbudget bound keys to requests, so no request"
            " can be matched to it"
        )
    else:
        if hold.endpoint != endpoint:
            differs.append("endpoint")
        if _own(hold.tags) != _own(tags):
            differs.append("tags")
        differs = differs or ["arguments"]
        shown = f"endpoint {endpoint!r}" if differs[0] == "endpoint" else " and ".join(differs)
        why = f"it is bound to {where}, and this request differs in its {shown}"
    return IdempotencyConflict(
        f"idempotency_key={key!r} is not allowed for this request: {why}; nothing was held or"
        f" sent. Use a new key for a new request ({_lifetime(hold)})",
        key=key,
        hold_id=hold.id,
        state=hold.state,
        differs=differs,
    )


def unavailable(key: str, hold: Hold, why: str) -> IdempotencyInProgress | IdempotencyReplayed:
    """The error for a replay of ``key`` that cannot return the first request's outcome
    (``why``): still open, IdempotencyInProgress (retry later); closed, IdempotencyReplayed."""
    where = f"hold {hold.id}, {hold.state}"
    error: type[IdempotencyInProgress | IdempotencyReplayed]
    if hold.state in OPEN_STATES:
        error = IdempotencyInProgress
        message = (
            f"idempotency_key={key!r}: the first request under this key ({where}) is still in"
            f" progress and {why}; nothing was sent. Retry later"
        )
    else:
        error = IdempotencyReplayed
        message = (
            f"idempotency_key={key!r}: the request under this key was already made ({where}) and"
            f" {why}; nothing was sent. Use a new key to make a new request ({_lifetime(hold)})"
        )
    return error(message, key=key, hold_id=hold.id, state=hold.state)
