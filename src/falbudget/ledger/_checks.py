"""Argument checks every backend applies before it touches its store."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from falbudget.errors import LedgerError
from falbudget.ledger.base import (
    ADJUSTABLE_STATES,
    OPEN_STATES,
    BucketCharge,
    Hold,
    HoldState,
    Refusal,
)

MAX_MICROS = 2**63 - 1
"""The largest amount or total a ledger stores (a signed 64-bit integer, as SQL keeps it)."""

STATES: tuple[HoldState, ...] = ("held", "submitted", "settled", "released", "expired")


def micros(name: str, value: object) -> int:
    """``value`` as a non-negative integer number of micro-USD, or LedgerError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise LedgerError(f"{name} must be an integer number of micro-USD, got {value!r}")
    if not 0 <= value <= MAX_MICROS:
        raise LedgerError(f"{name} must be between 0 and {MAX_MICROS} micro-USD, got {value}")
    return value


def seconds(name: str, value: object) -> float:
    """``value`` as finite epoch seconds, or LedgerError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise LedgerError(f"{name} must be a finite number of epoch seconds, got {value!r}")
    return float(value)


def charge_keys(charges: Sequence[BucketCharge]) -> tuple[str, ...]:
    """The distinct bucket keys of ``charges``, in order; checks every key and limit."""
    keys: dict[str, None] = {}
    for charge in charges:
        key, limit = (charge.key, charge.limit) if type(charge) is BucketCharge else (None, None)
        if (
            type(key) is str
            and key
            and (limit is None or (type(limit) is int and 0 <= limit <= MAX_MICROS))
        ):  # the usual case, checked inline; the rest below, which words the errors
            keys[key] = None
            continue
        if not isinstance(charge, BucketCharge):
            raise LedgerError(f"charges must be BucketCharge objects, got {charge!r}")
        if not isinstance(charge.key, str) or not charge.key:
            raise LedgerError(f"a bucket key must be a non-empty string, got {charge.key!r}")
        if charge.limit is not None:
            micros(f"the limit of bucket {charge.key!r}", charge.limit)
        keys[charge.key] = None
    if not keys:
        raise LedgerError("a reservation must charge at least one bucket")
    return tuple(keys)


def string_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    """A copy of ``tags``, checked to map strings to strings."""
    out = dict(tags or {})
    for key, value in out.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise LedgerError(f"tags must map strings to strings, got {key!r}: {value!r}")
    return out


def reservation(
    amount: object,
    charges: Sequence[BucketCharge],
    now: object,
    expires_at: object,
    tags: Mapping[str, str] | None,
) -> tuple[int, tuple[str, ...], float, float, dict[str, str]]:
    """The checks every backend's ``reserve`` makes first: (amount, distinct bucket keys, now,
    expires_at, a checked copy of the tags), or LedgerError."""
    if type(amount) is not int or not 0 <= amount <= MAX_MICROS:
        amount = micros("amount", amount)
    if type(now) is not float or not math.isfinite(now):
        now = seconds("now", now)
    if type(expires_at) is not float or not math.isfinite(expires_at):
        expires_at = seconds("expires_at", expires_at)
    return (
        amount,
        charge_keys(charges),
        now,
        expires_at,
        {} if tags is None else string_tags(tags),
    )


def adjustment(
    amount: object, now: object, reason: object, source: object
) -> tuple[int, float, str, str]:
    """The checks every backend's ``adjust`` makes first: (amount, now, reason, source)."""
    return (
        micros("amount", amount),
        seconds("now", now),
        text("reason", reason),
        text("source", source),
    )


def check_states(states: Sequence[HoldState] | None) -> tuple[HoldState, ...] | None:
    """``states`` as a tuple, each a known HoldState, or LedgerError."""
    if states is None:
        return None
    if isinstance(states, str):
        raise LedgerError(f"states must be a sequence of states, got the string {states!r}")
    for state in states:
        if state not in STATES:
            raise LedgerError(f"unknown hold state {state!r}; the states are {', '.join(STATES)}")
    return tuple(states)


def check_limit(limit: int | None) -> int | None:
    """A history query's row limit: None or an integer >= 0."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise LedgerError(f"limit must be None or an integer >= 0, got {limit!r}")
    return limit


def text(name: str, value: object) -> str:
    """``value`` as a non-empty string, or LedgerError."""
    if not isinstance(value, str) or not value.strip():
        raise LedgerError(f"{name} must be a non-empty string, got {value!r}")
    return value


def request_id(value: object) -> str | None:
    """A request id to record: None (not known yet) or a non-empty string, or LedgerError."""
    if value is None:
        return None
    return text("request_id", value)


def request_ids(values: Sequence[str]) -> tuple[str, ...]:
    """Distinct request ids, in order; each a string."""
    if isinstance(values, str):
        raise LedgerError(f"request_ids must be a sequence of strings, got the string {values!r}")
    for value in values:
        if not isinstance(value, str):
            raise LedgerError(f"a request id must be a string, got {value!r}")
    return tuple(dict.fromkeys(values))


def adjustment_delta(hold: Hold, amount: int) -> int | None:
    """How much adjusting ``hold`` to count ``amount`` moves its buckets' settled totals; None
    when it already counts ``amount``. LedgerError for a hold that is still open."""
    if hold.state not in ADJUSTABLE_STATES:
        raise LedgerError(
            f"hold {hold.id!r} is {hold.state}: only a settled, expired or released hold can be"
            " adjusted; settle or release it first"
        )
    previous = hold.spent_amount
    return None if previous == amount else amount - previous


def idempotency(
    key: object, fingerprint: object, ttl: object
) -> tuple[str | None, str | None, float | None]:
    """The checks of ``reserve``'s idempotency arguments: (key, fingerprint, ttl), or
    LedgerError. A key is None or a non-empty string, a fingerprint None or a string, a ttl None
    or finite seconds above 0."""
    if key is not None and (not isinstance(key, str) or not key):
        raise LedgerError(f"idempotency_key must be None or a non-empty string, got {key!r}")
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise LedgerError(f"fingerprint must be None or a string, got {fingerprint!r}")
    if ttl is not None:
        ttl = seconds("idempotency_ttl", ttl)
        if ttl <= 0:
            raise LedgerError(f"idempotency_ttl must be None or seconds above 0, got {ttl!r}")
    return key, fingerprint, ttl


def key_forgotten(hold: Hold, now: float) -> bool:
    """Whether ``hold`` no longer holds its idempotency key at ``now``: it closed (its
    ``updated_at``) more than its ``idempotency_ttl`` seconds ago. An open hold keeps its key."""
    return (
        hold.idempotency_ttl is not None
        and hold.state not in OPEN_STATES
        and hold.updated_at + hold.idempotency_ttl < now
    )


def readmits(hold: Hold) -> bool:
    """Whether a reservation repeating ``hold``'s idempotency key is admitted afresh (re-opening
    the row) rather than replayed: only a released hold that fal did not bill (never adjusted,
    or adjusted back to 0: :attr:`Hold.counts_as_spent` is false)."""
    return hold.state == "released" and not hold.counts_as_spent


def missing_buckets(hold: Hold, found: Sequence[str]) -> LedgerError | None:
    """The error for a hold whose bucket rows are not all in the store (``found``: the keys that
    are), naming the first missing one; None when every bucket is there. Only a row deleted by
    hand can be missing: adjusting the hold would move some of its buckets and not others."""
    present = set(found)
    missing = [key for key in hold.buckets if key not in present]
    if not missing:
        return None
    return LedgerError(
        f"bucket {missing[0]!r} of hold {hold.id!r} is missing from the ledger (deleted by hand?):"
        " the hold cannot be adjusted until the bucket row is restored"
    )


def api_key(
    key_id: object, digest: object, tags: object, now: object
) -> tuple[str, str, dict[str, str], float]:
    """A virtual key's fields checked: an id of letters and digits, a SHA-256 hex digest, tags
    of non-empty strings; or LedgerError."""
    if not isinstance(key_id, str) or not key_id.isalnum() or not 1 <= len(key_id) <= 64:
        raise LedgerError(f"a key id must be 1 to 64 letters or digits, got {key_id!r}")
    if (
        not isinstance(digest, str)
        or len(digest) != 64
        or any(c not in "0123456789abcdef" for c in digest)
    ):
        raise LedgerError("a key digest must be 64 lower-case hex digits (SHA-256)")
    if not isinstance(tags, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in tags.items()
    ):
        raise LedgerError(f"a key's tags must map non-empty strings to non-empty strings: {tags!r}")
    return key_id, digest, dict(tags), seconds("now", now)


def summary(
    since: float | None, until: float | None, period: object, offset: object, cuts: object
) -> tuple[float | None, float | None, int, int, tuple[float, ...]]:
    """The arguments of ``Ledger.summarize`` checked: epoch seconds, ``period`` an integer
    number of seconds >= 1, ``offset`` an integer, ``cuts`` finite epoch seconds (sorted)."""
    if isinstance(period, bool) or not isinstance(period, int) or period < 1:
        raise LedgerError(f"period must be an integer number of seconds >= 1, got {period!r}")
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise LedgerError(f"offset must be an integer number of seconds, got {offset!r}")
    if isinstance(cuts, str) or not isinstance(cuts, Sequence):
        raise LedgerError(f"cuts must be a sequence of epoch seconds, got {cuts!r}")
    return (
        None if since is None else seconds("since", since),
        None if until is None else seconds("until", until),
        period,
        offset,
        tuple(sorted(seconds("cuts", cut) for cut in cuts)),
    )


def refusal(value: object) -> Refusal:
    """``value`` checked as a :class:`Refusal` to record (tags copied), or LedgerError."""
    if not isinstance(value, Refusal):
        raise LedgerError(f"refusal must be a Refusal, got {value!r}")
    if value.cap is not None:
        text("refusal.cap", value.cap)
    return Refusal(
        at=seconds("refusal.at", value.at),
        endpoint=text("refusal.endpoint", value.endpoint),
        reason=text("refusal.reason", value.reason),
        cap=value.cap,
        amount=micros("refusal.amount", value.amount),
        tags=string_tags(value.tags),
    )


def refusal_range(
    since: float | None, until: float | None, limit: int | None = None
) -> tuple[float | None, float | None, int]:
    """A refusal query's time range and row limit (an integer >= 0), or LedgerError."""
    low = None if since is None else seconds("since", since)
    high = None if until is None else seconds("until", until)
    if limit is None:
        limit = 100
    checked = check_limit(limit)
    assert checked is not None
    return low, high, checked
