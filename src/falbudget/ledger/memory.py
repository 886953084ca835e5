"""An in-process ledger: dicts behind one lock. Nothing survives the process; for tests and
single-process scripts."""

from __future__ import annotations

import bisect
import collections
import heapq
import itertools
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

from falbudget.errors import HoldNotFound, KeyNotFound, LedgerError
from falbudget.ledger import _checks
from falbudget.ledger.base import (
    OPEN_STATES,
    REFUSAL_MAX_ROWS,
    REFUSAL_RETENTION,
    Adjustment,
    Admission,
    ApiKey,
    BucketCharge,
    BucketTotals,
    Hold,
    HoldGroup,
    HoldState,
    Refusal,
)


def _figures(group: HoldGroup) -> tuple[int, ...]:
    """A group's counts and sums, in HoldGroup's field order after ``last``."""
    return (
        group.holds,
        group.spent,
        group.held,
        group.requests,
        group.open,
        group.expired,
        group.released,
        group.overruns,
        group.overrun,
    )


class MemoryLedger:
    """The Ledger protocol on dicts: running totals per bucket, open holds in a heap by expiry.

    Admission costs O(charges + overdue holds); history queries scan the holds. Holds are handed
    out as stored, without a copy: they are frozen and their tags a read-only dict (:class:`_Tags`).
    """

    def __init__(self) -> None:
        self.url = "memory://"
        self._lock = threading.Lock()
        self._settled: dict[str, int] = {}
        self._held: dict[str, int] = {}
        self._holds: dict[str, Hold] = {}
        self._order: dict[str, int] = {}
        """Insertion sequence of each hold: ties on created_at read newest first."""
        self._by_key: dict[str, str] = {}
        self._expiry: list[tuple[float, int, str]] = []
        """(expires_at, seq, hold id) of open holds; an entry whose hold has closed or moved its
        expiry is stale and skipped when popped."""
        self._seq = itertools.count()
        self._alerts: set[tuple[str, str]] = set()
        self._adjustments: list[Adjustment] = []
        self._api_keys: dict[str, ApiKey] = {}  # by id, in creation order
        self._key_digests: dict[str, str] = {}  # digest -> id
        self._refusals: collections.deque[Refusal] = collections.deque()
        """Refusals in the order recorded, pruned as :meth:`record_refusal` says."""

    # -- writes ------------------------------------------------------------------------------
    def reserve(
        self,
        *,
        hold_id: str,
        endpoint: str,
        amount: int,
        charges: Sequence[BucketCharge],
        now: float,
        expires_at: float,
        idempotency_key: str | None = None,
        tags: Mapping[str, str] | None = None,
        table_version: str | None = None,
        table_sha256: str | None = None,
        fingerprint: str | None = None,
        idempotency_ttl: float | None = None,
    ) -> Admission:
        """See :meth:`Ledger.reserve`."""
        amount, keys, now, expires_at, checked_tags = _checks.reservation(
            amount, charges, now, expires_at, tags
        )
        idempotency_key, fingerprint, idempotency_ttl = _checks.idempotency(
            idempotency_key, fingerprint, idempotency_ttl
        )
        clean_tags = _Tags(checked_tags)
        with self._lock:
            if self._expiry and self._expiry[0][0] < now:
                self._expire_locked(now)
            reopen: Hold | None = None
            bound = self._by_key.get(idempotency_key) if idempotency_key is not None else None
            existing = None if bound is None else self._holds[bound]
            if existing is not None and not _checks.key_forgotten(existing, now):
                if existing.fingerprint != fingerprint:
                    return Admission(admitted=False, hold=existing, conflict=True)
                if not _checks.readmits(existing):
                    return Admission(admitted=True, hold=existing, replayed=True)
                reopen = existing
            elif hold_id in self._holds:
                raise LedgerError(f"a hold with id {hold_id!r} already exists")
            settled_by_key, held_by_key = self._settled, self._held
            too_big: str | None = None  # the first bucket, in key order, that would overflow
            for charge in charges:
                settled = settled_by_key.get(charge.key, 0)
                held = held_by_key.get(charge.key, 0)
                if charge.limit is not None and settled + held + amount > charge.limit:
                    return Admission(
                        admitted=False,
                        refused_by=charge.key,
                        totals=BucketTotals(charge.key, settled, held),
                    )
                if too_big is None and settled + held + amount > _checks.MAX_MICROS:
                    too_big = charge.key  # charges list the keys in their order (duplicates aside)
            if too_big is not None:
                raise LedgerError(f"bucket {too_big!r} would exceed {_checks.MAX_MICROS} micro-USD")
            for key in keys:
                settled_by_key.setdefault(key, 0)
                held_by_key[key] = held_by_key.get(key, 0) + amount
            hold = _build(
                Hold,
                {
                    "id": reopen.id if reopen is not None else hold_id,
                    "endpoint": endpoint,
                    "amount": amount,
                    "state": "held",
                    "buckets": keys,
                    "created_at": now,
                    "expires_at": expires_at,
                    "updated_at": now,
                    "idempotency_key": idempotency_key,
                    "request_id": None,
                    "settled_amount": None,
                    "tags": clean_tags,
                    "table_version": table_version,
                    "table_sha256": table_sha256,
                    "adjusted_amount": None,
                    "fingerprint": fingerprint,
                    "idempotency_ttl": idempotency_ttl,
                },
            )
            self._holds[hold.id] = hold
            if reopen is None:
                self._order[hold.id] = next(self._seq)
            if idempotency_key is not None:
                self._by_key[idempotency_key] = hold.id
            heapq.heappush(self._expiry, (expires_at, next(self._seq), hold.id))
            return _build(
                Admission,
                {
                    "admitted": True,
                    "hold": hold,
                    "replayed": False,
                    "refused_by": None,
                    "totals": None,
                    "conflict": False,
                },
            )

    def mark_submitted(self, hold_id: str, request_id: str | None, *, now: float) -> Hold:
        """See :meth:`Ledger.mark_submitted`."""
        request_id = _checks.request_id(request_id)
        now = _checks.seconds("now", now)
        with self._lock:
            hold = self._get(hold_id)
            if hold.state in OPEN_STATES:
                recorded = hold.request_id if request_id is None else request_id
                hold = self._put(
                    _evolve(hold, state="submitted", request_id=recorded, updated_at=now)
                )
            return hold

    def renew(self, hold_id: str, *, now: float, expires_at: float) -> Hold:
        """See :meth:`Ledger.renew`."""
        now = _checks.seconds("now", now)
        expires_at = _checks.seconds("expires_at", expires_at)
        with self._lock:
            hold = self._get(hold_id)
            if hold.state in OPEN_STATES:
                hold = self._put(_evolve(hold, expires_at=expires_at, updated_at=now))
                heapq.heappush(self._expiry, (expires_at, next(self._seq), hold.id))
            return hold

    def settle(self, hold_id: str, amount: int | None, *, now: float) -> Hold:
        """See :meth:`Ledger.settle`."""
        if amount is not None:
            amount = _checks.micros("amount", amount)
        now = _checks.seconds("now", now)
        with self._lock:
            hold = self._get(hold_id)
            if hold.state in OPEN_STATES:
                hold = self._close(hold, "settled", hold.amount if amount is None else amount, now)
            return hold

    def release(self, hold_id: str, *, now: float) -> Hold:
        """See :meth:`Ledger.release`."""
        now = _checks.seconds("now", now)
        with self._lock:
            hold = self._get(hold_id)
            if hold.state in OPEN_STATES:
                hold = self._close(hold, "released", None, now)
            return hold

    def expire(self, *, now: float) -> list[Hold]:
        """See :meth:`Ledger.expire`; in order of expiry."""
        now = _checks.seconds("now", now)
        with self._lock:
            return self._expire_locked(now)

    def claim_alert(self, bucket: str, threshold: str) -> bool:
        """See :meth:`Ledger.claim_alert`."""
        with self._lock:
            if (bucket, threshold) in self._alerts:
                return False
            self._alerts.add((bucket, threshold))
            return True

    def record_refusal(self, refusal: Refusal) -> None:
        """See :meth:`Ledger.record_refusal`."""
        row = _checks.refusal(refusal)
        row = Refusal(row.at, row.endpoint, row.reason, row.cap, row.amount, _Tags(row.tags))
        cutoff = row.at - REFUSAL_RETENTION
        with self._lock:
            kept = self._refusals
            kept.append(row)
            while kept and (kept[0].at < cutoff or len(kept) > REFUSAL_MAX_ROWS):
                kept.popleft()

    def refusals(
        self, *, since: float | None = None, until: float | None = None, limit: int = 100
    ) -> list[Refusal]:
        """See :meth:`Ledger.refusals`."""
        low, high, limit = _checks.refusal_range(since, until, limit)
        with self._lock:
            rows = [r for r in self._refusals if _within(r.at, low, high)]
        order = sorted(range(len(rows)), key=lambda i: (rows[i].at, i), reverse=True)
        return [rows[i] for i in order[:limit]]

    def refusal_counts(
        self, *, since: float | None = None, until: float | None = None
    ) -> dict[tuple[str, str | None], int]:
        """See :meth:`Ledger.refusal_counts`."""
        low, high, _ = _checks.refusal_range(since, until)
        counts: dict[tuple[str, str | None], int] = {}
        with self._lock:
            for r in self._refusals:
                if _within(r.at, low, high):
                    counts[(r.endpoint, r.cap)] = counts.get((r.endpoint, r.cap), 0) + 1
        return counts

    def adjust(
        self, hold_id: str, amount: int, *, now: float, reason: str, source: str
    ) -> Adjustment | None:
        """See :meth:`Ledger.adjust`."""
        amount, now, reason, source = _checks.adjustment(amount, now, reason, source)
        with self._lock:
            hold = self._get(hold_id)
            delta = _checks.adjustment_delta(hold, amount)
            if delta is None:
                return None
            for key in hold.buckets:
                if self._settled[key] + self._held.get(key, 0) + delta > _checks.MAX_MICROS:
                    raise LedgerError(f"bucket {key!r} would exceed {_checks.MAX_MICROS} micro-USD")
            for key in hold.buckets:
                self._settled[key] += delta
            self._put(_evolve(hold, adjusted_amount=amount))
            row = Adjustment(
                id=len(self._adjustments) + 1,
                hold_id=hold.id,
                previous=amount - delta,
                amount=amount,
                delta=delta,
                reason=reason,
                source=source,
                created_at=now,
            )
            self._adjustments.append(row)
            return row

    # -- reads -------------------------------------------------------------------------------
    def adjustments(self, hold_id: str | None = None) -> list[Adjustment]:
        """See :meth:`Ledger.adjustments`."""
        with self._lock:
            return [a for a in self._adjustments if hold_id is None or a.hold_id == hold_id]

    def holds_by_request_id(self, request_ids: Sequence[str]) -> list[Hold]:
        """See :meth:`Ledger.holds_by_request_id` (a scan: this ledger keeps no index)."""
        wanted = set(_checks.request_ids(request_ids))
        with self._lock:
            rows = [h for h in self._holds.values() if h.request_id in wanted]
            rows.sort(key=lambda h: (h.created_at, self._order[h.id]))
            return rows

    def get_hold(self, hold_id: str) -> Hold:
        """See :meth:`Ledger.get_hold`."""
        with self._lock:
            return self._get(hold_id)

    def totals(self, keys: Sequence[str]) -> list[BucketTotals]:
        """See :meth:`Ledger.totals`."""
        with self._lock:
            return [
                BucketTotals(key, self._settled.get(key, 0), self._held.get(key, 0)) for key in keys
            ]

    def buckets(self, *, prefix: str = "") -> list[BucketTotals]:
        """Every bucket whose key starts with ``prefix``, by key (not in base.Ledger yet)."""
        with self._lock:
            return [
                BucketTotals(key, self._settled[key], self._held.get(key, 0))
                for key in sorted(self._settled)
                if key.startswith(prefix)
            ]

    def holds(
        self,
        *,
        states: Sequence[HoldState] | None = None,
        bucket: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
        overrun: bool = False,
    ) -> list[Hold]:
        """See :meth:`Ledger.holds`."""
        limit = _checks.check_limit(limit)
        rows = self._select(states, bucket, since, until)
        if overrun:
            rows = [hold for hold in rows if hold.overrun]
        return rows[:limit]

    def _select(
        self,
        states: Sequence[HoldState] | None,
        bucket: str | None,
        since: float | None,
        until: float | None,
    ) -> list[Hold]:
        """The history, newest first (references to the stored holds, not copies)."""
        wanted = _checks.check_states(states)
        with self._lock:
            rows = [
                hold
                for hold in self._holds.values()
                if (wanted is None or hold.state in wanted)
                and (bucket is None or bucket in hold.buckets)
                and (since is None or hold.created_at >= since)
                and (until is None or hold.created_at < until)
            ]
            rows.sort(key=lambda h: (h.created_at, self._order[h.id]), reverse=True)
            return rows

    def iter_holds(
        self,
        *,
        states: Sequence[HoldState] | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> Iterator[Hold]:
        """See :meth:`Ledger.iter_holds`: the holds are in memory already; this lists them
        (references, not copies) as :meth:`holds` does."""
        yield from self._select(states, None, since, until)

    def summarize(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        period: int = 86_400,
        offset: int = 0,
        cuts: Sequence[float] = (),
    ) -> list[HoldGroup]:
        """See :meth:`Ledger.summarize`: the same sums as the SQL backends' GROUP BY, over
        the holds in one pass, without copying them."""
        since, until, period, offset, cut = _checks.summary(since, until, period, offset, cuts)
        groups: dict[tuple[object, ...], list[Any]] = {}
        with self._lock:
            for hold in self._holds.values():
                at = hold.created_at
                if (since is not None and at < since) or (until is not None and at >= until):
                    continue
                one = HoldGroup.of(hold)
                key = (
                    hold.endpoint,
                    tuple(sorted(one.tags.items())),
                    one.buckets,
                    math.floor((at + offset) / period),
                    bisect.bisect_right(cut, at),
                )
                sums = groups.get(key)
                if sums is None:
                    groups[key] = [one, at, at, *_figures(one)]
                    continue
                sums[1] = min(sums[1], at)
                sums[2] = max(sums[2], at)
                for index, value in enumerate(_figures(one), start=3):
                    sums[index] += value
        return [
            HoldGroup(first.endpoint, first.tags, first.buckets, low, high, *figures)
            for first, low, high, *figures in groups.values()
        ]

    def create_key(
        self, key_id: str, digest: str, tags: Mapping[str, str], *, now: float
    ) -> ApiKey:
        """See :meth:`Ledger.create_key`."""
        key_id, digest, clean, at = _checks.api_key(key_id, digest, tags, now)
        with self._lock:
            if key_id in self._api_keys or digest in self._key_digests:
                raise LedgerError(f"a key with id {key_id!r} or its digest is already recorded")
            key = ApiKey(key_id, digest, clean, at)
            self._api_keys[key_id] = key
            self._key_digests[digest] = key_id
            return key

    def find_key(self, digest: str) -> ApiKey | None:
        """See :meth:`Ledger.find_key`."""
        with self._lock:
            key_id = self._key_digests.get(digest)
            return None if key_id is None else self._api_keys[key_id]

    def api_keys(self) -> list[ApiKey]:
        """See :meth:`Ledger.api_keys`."""
        with self._lock:
            return list(self._api_keys.values())

    def revoke_key(self, key_id: str, *, now: float) -> ApiKey:
        """See :meth:`Ledger.revoke_key`."""
        at = _checks.seconds("now", now)
        with self._lock:
            key = self._api_keys.get(key_id)
            if key is None:
                raise KeyNotFound(f"no key has id {key_id!r}")
            if key.revoked_at is None:
                key = ApiKey(key.id, key.digest, key.tags, key.created_at, at)
                self._api_keys[key_id] = key
            return key

    def close(self) -> None:
        """Nothing to release; the data stays readable."""

    def __enter__(self) -> MemoryLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers (the lock is held) ----------------------------------------------------------
    def _get(self, hold_id: str) -> Hold:
        try:
            return self._holds[hold_id]
        except KeyError:
            raise HoldNotFound(f"no hold has id {hold_id!r}") from None

    def _put(self, hold: Hold) -> Hold:
        self._holds[hold.id] = hold
        return hold

    def _close(self, hold: Hold, state: HoldState, spent: int | None, now: float) -> Hold:
        for key in hold.buckets:
            if spent and self._settled[key] + spent > _checks.MAX_MICROS:
                raise LedgerError(f"bucket {key!r} would exceed {_checks.MAX_MICROS} micro-USD")
        for key in hold.buckets:
            self._held[key] -= hold.amount
            if spent is not None:
                self._settled[key] += spent
        return self._put(_evolve(hold, state=state, settled_amount=spent, updated_at=now))

    def _expire_locked(self, now: float) -> list[Hold]:
        closed: list[Hold] = []
        while self._expiry and self._expiry[0][0] < now:
            expires_at, _, hold_id = heapq.heappop(self._expiry)
            hold = self._holds[hold_id]
            if hold.state not in OPEN_STATES or hold.expires_at != expires_at:
                continue
            if hold.state == "submitted":
                closed.append(self._close(hold, "expired", hold.amount, now))
            else:
                closed.append(self._close(hold, "released", None, now))
        return closed


def _within(at: float, since: float | None, until: float | None) -> bool:
    return (since is None or at >= since) and (until is None or at < until)


class _Tags(dict[str, str]):
    """A hold's tags as this ledger stores them: a dict (so ``json.dumps`` and ``isinstance(...,
    dict)`` work as with the SQL backends) that refuses changes, so stored holds can be handed out
    without a copy."""

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("a hold's tags are read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse

    def __reduce__(self) -> tuple[type[_Tags], tuple[dict[str, str]]]:
        return (_Tags, (dict(self),))  # copy, deepcopy and pickle build it whole


# A frozen dataclass's __init__ sets each field through object.__setattr__: about 6 us for a Hold
# on these machines, more than the rest of a reservation. On the hot path the ledger fills the
# instance's __dict__ directly with values it has already checked (every field, by name).
_T = TypeVar("_T")


def _build(cls: type[_T], fields: dict[str, object]) -> _T:
    """An instance of the frozen dataclass ``cls`` whose ``__dict__`` is ``fields`` (every
    field, by name; the dict is taken, not copied)."""
    new = object.__new__(cls)
    object.__setattr__(new, "__dict__", fields)
    return new


def _evolve(hold: Hold, **changes: object) -> Hold:
    """``dataclasses.replace(hold, **changes)`` without re-running ``__init__``."""
    fields = dict(hold.__dict__)
    fields.update(changes)
    return _build(Hold, fields)
