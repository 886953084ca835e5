"""Rows of the SQL backends (SQLite, PostgreSQL) as the contract's dataclasses: one reading of
the hold and adjustment columns, in the order both backends select them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from falbudget.ledger.base import Adjustment, Hold, HoldState


def _same(value: Any) -> Any:
    return value


def hold_from_row(row: Sequence[Any], *, decode: Callable[[Any], Any] = _same) -> Hold:
    """A ``holds`` row (id, endpoint, amount, state, buckets, created_at, expires_at, updated_at,
    idempotency_key, request_id, settled_amount, tags, table_version, table_sha256,
    adjusted_amount, fingerprint, idempotency_ttl) as a Hold; ``decode`` turns the stored buckets
    and tags into a list and a dict (SQLite keeps them as JSON text, PostgreSQL as native arrays
    and jsonb)."""
    (
        hold_id,
        endpoint,
        amount,
        state,
        buckets,
        created_at,
        expires_at,
        updated_at,
        idempotency_key,
        request_id,
        settled_amount,
        tags,
        table_version,
        table_sha256,
        adjusted_amount,
        fingerprint,
        idempotency_ttl,
    ) = row
    return Hold(
        id=hold_id,
        endpoint=endpoint,
        amount=int(amount),
        state=cast(HoldState, state),
        buckets=tuple(decode(buckets)),
        created_at=float(created_at),
        expires_at=float(expires_at),
        updated_at=float(updated_at),
        idempotency_key=idempotency_key,
        request_id=request_id,
        settled_amount=None if settled_amount is None else int(settled_amount),
        tags=dict(decode(tags)),
        table_version=table_version,
        table_sha256=table_sha256,
        adjusted_amount=None if adjusted_amount is None else int(adjusted_amount),
        fingerprint=fingerprint,
        idempotency_ttl=None if idempotency_ttl is None else float(idempotency_ttl),
    )


def adjustment_from_row(row: Sequence[Any]) -> Adjustment:
    """An ``adjustments`` row (id, hold_id, previous, amount, delta, reason, source,
    created_at) as an Adjustment."""
    adjustment_id, hold_id, previous, amount, delta, reason, source, created_at = row
    return Adjustment(
        id=int(adjustment_id),
        hold_id=hold_id,
        previous=int(previous),
        amount=int(amount),
        delta=int(delta),
        reason=reason,
        source=source,
        created_at=float(created_at),
    )
