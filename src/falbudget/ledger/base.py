"""The ledger contract: integers and keys, nothing about pricing.

A ledger keeps *buckets* (one per cap and window, plus unlimited trackers) with running totals of
settled and held micro-USD, and *holds* (one per admitted request). Admission is one atomic step:
for every bucket a request touches, ``settled + held + amount <= limit`` is checked and the hold is
recorded in the same transaction, so the cost of admission does not grow with history.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

HoldState = Literal["held", "submitted", "settled", "released", "expired"]
"""held: admitted, not yet sent; submitted: the request may have left (marked just before it is
sent, with no request id yet) or fal accepted it (request id known); settled: spent; released:
not spent; expired: a submitted hold whose ttl passed, counted as spent and listed for
reconciliation (an expired hold that was never submitted becomes ``released``)."""

OPEN_STATES: tuple[HoldState, ...] = ("held", "submitted")
SPENT_STATES: tuple[HoldState, ...] = ("settled", "expired")

VISITOR_TAGS: tuple[str, ...] = ("ip",)
"""Tags with a value per visitor (the proxy's client address): thousands of values, one per
caller. A ledger keeps them, and the buckets of caps on them (keys ``ip=...|...``), with each
hold instead of in what holds share, and :meth:`Ledger.summarize` groups without them, so that
the groups of a report stay as few as the endpoints, shared tags and windows
(:func:`shared_part`). The proxy's ``key`` tag is not one: virtual keys are made one by one by
an operator (``falbudget keys create``), and spend by key is what a report and the dashboard
show."""

_VISITOR_PREFIXES = tuple(f"{tag}=" for tag in VISITOR_TAGS)


def is_visitor_bucket(key: str) -> bool:
    """Whether bucket ``key`` belongs to a cap on a visitor tag (:data:`VISITOR_TAGS`)."""
    return key.startswith(_VISITOR_PREFIXES)


def shared_part(
    tags: Mapping[str, str], buckets: Sequence[str]
) -> tuple[dict[str, str], tuple[str, ...]]:
    """``tags`` and ``buckets`` without the visitor tags and their buckets, in their order:
    what holds of many visitors share (the grouping of :meth:`Ledger.summarize`)."""
    return (
        {name: value for name, value in tags.items() if name not in VISITOR_TAGS},
        tuple(key for key in buckets if not is_visitor_bucket(key)),
    )


DEFAULT_IDEMPOTENCY_TTL = 86_400.0
"""How long (seconds) a guard remembers an idempotency key after its hold closes: 24 hours.
Keys of holds recorded before keys had a lifetime (schema 2) get it when the ledger upgrades."""


REFUSAL_RETENTION = 31 * 86_400.0
"""How long (seconds) a ledger keeps a refusal: 31 days, a month's window. Older rows are
deleted when the next refusal is recorded, so the table never grows with the ledger's age."""

REFUSAL_MAX_ROWS = 100_000
"""The most refusals a ledger keeps: the newest ones (a storm of refusals, a client retrying in a
loop, cannot grow the table past this; about 10 MB). Pruned as the retention is."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """One admission the guard refused (nothing was held or sent), as the ledger keeps it.

    ``at`` epoch seconds; ``endpoint`` the endpoint asked for; ``reason`` a short code
    (``cap_exceeded``, ``max_per_request``, ``unknown_endpoint``, ``missing_tag``,
    ``idempotency_conflict``, ``invalid_arguments``); ``cap`` the name (label) of the cap that
    refused, None when no cap did; ``amount`` the quote, integer micro-USD (0 when unpriced);
    ``tags`` the request's tags. Written only on refusal: an admission writes no refusal row."""

    at: float
    endpoint: str
    reason: str
    cap: str | None
    amount: int
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BucketCharge:
    """One bucket a reservation touches: its key and its limit (None: unlimited, a tracker)."""

    key: str
    limit: int | None


@dataclass(frozen=True)
class BucketTotals:
    key: str
    settled: int
    held: int


@dataclass(frozen=True)
class Hold:
    """A row of the ledger's hold table, as stored. Money in integer micro-USD, times in epoch s."""

    id: str
    endpoint: str
    amount: int
    """The amount held (the quote), micro-USD."""
    state: HoldState
    buckets: tuple[str, ...]
    created_at: float
    expires_at: float
    updated_at: float
    idempotency_key: str | None = None
    request_id: str | None = None
    settled_amount: int | None = None
    """What was counted as spent (settled or expired states), micro-USD."""
    tags: Mapping[str, str] = field(default_factory=dict)
    table_version: str | None = None
    table_sha256: str | None = None
    adjusted_amount: int | None = None
    """What the hold counts as spent after its last adjustment (:meth:`Ledger.adjust`, when fal's
    records showed a different bill), micro-USD; None: never adjusted. ``settled_amount`` keeps
    what was first counted; the adjustments are the audit trail between the two."""
    fingerprint: str | None = None
    """What ``idempotency_key`` is bound to, opaque to the ledger (the guard's digest of the
    endpoint, the canonical priced arguments and the tags); None: nothing recorded."""
    idempotency_ttl: float | None = None
    """Seconds ``idempotency_key`` stays bound to this hold after it closes (from
    ``updated_at``, when a closed hold last changed state); None: for ever."""

    @property
    def counts_as_spent(self) -> bool:
        """Whether the hold counts as a billed request: settled or expired, unless an adjustment
        says otherwise. An adjusted hold counts when its adjusted amount is above 0 (fal billed
        it: a released hold that fal billed after all counts too) and not when it was adjusted
        to 0 (fal billed nothing: a released hold adjusted up and back to 0 is released again,
        and its idempotency key may be admitted afresh)."""
        if self.adjusted_amount is not None:
            return self.adjusted_amount > 0
        return self.state in SPENT_STATES

    @property
    def spent_amount(self) -> int:
        """What the hold counts as spent now, micro-USD: the last adjustment's amount when it was
        adjusted, else ``settled_amount`` for a settled or expired hold, else 0 (open holds are
        held, not spent; released ones spent nothing)."""
        if self.adjusted_amount is not None:
            return self.adjusted_amount
        if self.state in SPENT_STATES:
            return self.amount if self.settled_amount is None else self.settled_amount
        return 0

    @property
    def overrun(self) -> int:
        """How much more than the amount held the hold counts as spent (fal billed more than
        quoted), micro-USD: ``spent_amount - amount`` when that is above 0, else 0."""
        return max(0, self.spent_amount - self.amount)


@dataclass(frozen=True)
class Adjustment:
    """One correction of a closed hold's spent amount (an audit row, never changed or deleted).

    ``previous`` is what the hold counted as spent before (its ``spent_amount``), ``amount`` what
    it counts after, ``delta`` = amount - previous: every bucket the hold charged moved its
    settled total by ``delta`` in the same transaction. ``id`` grows with each adjustment a
    ledger records; ``source`` says where the evidence came from (a billing file, fal's API)."""

    id: int
    hold_id: str
    previous: int
    amount: int
    delta: int
    reason: str
    source: str
    created_at: float


@dataclass(frozen=True)
class ApiKey:
    """A virtual key of ``falbudget proxy``: ``id`` (public, shown in lists), the SHA-256 hex
    ``digest`` of the whole key (the key itself is never stored), the ``tags`` a request made with
    it carries, when it was created and, once revoked, when (None while it is valid)."""

    id: str
    digest: str
    tags: dict[str, str]
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True)
class HoldGroup:
    """Holds summed by :meth:`Ledger.summarize`: every hold of a group has the same endpoint,
    tags and buckets, and was created in ``[first, last]``. Money in integer micro-USD. The tags
    and buckets are what the holds share: visitor tags and their buckets (:data:`VISITOR_TAGS`)
    are left out, so holds of every visitor sum into one group.

    ``spent`` sums ``Hold.spent_amount``, ``held`` the amounts of open holds; ``requests``
    counts the holds that count as spent (``Hold.counts_as_spent``), ``open`` the held and
    submitted ones, ``expired`` the expired ones, ``released`` the released ones that do not
    count as spent; ``overruns`` counts the holds with an overrun and ``overrun`` sums them.
    A single hold reads as a group of one (:meth:`of`)."""

    endpoint: str
    tags: Mapping[str, str]
    buckets: tuple[str, ...]
    first: float
    last: float
    holds: int
    spent: int
    held: int
    requests: int
    open: int
    expired: int
    released: int
    overruns: int
    overrun: int

    @property
    def created_at(self) -> float:
        """The moment that stands for the group (its first hold's ``created_at``)."""
        return self.first

    @classmethod
    def of(cls, hold: Hold) -> HoldGroup:
        counts = hold.counts_as_spent
        is_open = hold.state in OPEN_STATES
        overrun = hold.overrun
        tags, buckets = shared_part(hold.tags, hold.buckets)
        return cls(
            endpoint=hold.endpoint,
            tags=tags,
            buckets=buckets,
            first=hold.created_at,
            last=hold.created_at,
            holds=1,
            spent=hold.spent_amount,
            held=hold.amount if is_open else 0,
            requests=int(counts),
            open=int(is_open),
            expired=int(hold.state == "expired"),
            released=int(hold.state == "released" and not counts),
            overruns=int(overrun > 0),
            overrun=overrun,
        )


ADJUSTABLE_STATES: tuple[HoldState, ...] = ("settled", "expired", "released")
"""States :meth:`Ledger.adjust` accepts: closed holds (an open one is settled or released first)."""


@dataclass(frozen=True)
class Admission:
    """The result of :meth:`Ledger.reserve`.

    ``admitted`` True: ``hold`` is the new (or, for a repeated idempotency key, the existing) hold;
    ``replayed`` says it already existed. ``admitted`` False: ``refused_by`` is the first bucket
    (in the given order) that would go over and ``totals`` its figures at that moment; or
    ``conflict`` is True: the idempotency key is bound to ``hold``, whose fingerprint is not the
    one given. Nothing was written.
    """

    admitted: bool
    hold: Hold | None = None
    replayed: bool = False
    refused_by: str | None = None
    totals: BucketTotals | None = None
    conflict: bool = False


@runtime_checkable
class Ledger(Protocol):
    """What every backend (memory, SQLite, PostgreSQL) provides; the contract suite tests it."""

    url: str

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
        """Atomically: expire overdue holds (as :meth:`expire` does, with ``now``), then check
        every charge's bucket and, when all fit, add ``amount`` to each bucket's held total and
        record the hold.

        An ``idempotency_key`` is bound to the hold it is first used for, with ``fingerprint``
        (what the key stands for; None is a value too) and ``idempotency_ttl`` (seconds the key
        stays bound after the hold closes; None: for ever). A repeated key:

        * whose hold closed more than its ``idempotency_ttl`` before ``now`` is forgotten: this
          call is a new reservation (a new hold; the old one keeps its key in the history);
        * with another fingerprint is refused with ``conflict=True`` and ``hold`` the bound
          hold; nothing is written;
        * whose hold is held, submitted, settled or expired returns that hold with
          ``replayed=True`` and charges nothing;
        * whose hold was released is admitted afresh (the same hold row, re-opened with this
          call's values and no adjusted amount; its past adjustments stay in the audit trail),
          unless the released hold was adjusted above 0 (fal billed it after all): that one
          replays."""
        ...

    def mark_submitted(self, hold_id: str, request_id: str | None, *, now: float) -> Hold:
        """An open hold -> submitted: the request is about to leave (``request_id`` None) or fal
        accepted it (its request id, recorded; None keeps the one recorded before). Raises
        HoldNotFound, and LedgerError for a request id that is not None or a non-empty string;
        a hold no longer open (settled, released, expired) is returned unchanged."""
        ...

    def renew(self, hold_id: str, *, now: float, expires_at: float) -> Hold:
        """Push an open hold's expiry to ``expires_at``; a closed hold is returned unchanged."""
        ...

    def settle(self, hold_id: str, amount: int | None, *, now: float) -> Hold:
        """An open hold -> settled at ``amount`` (None: the held amount): every bucket's held total
        drops by the held amount and its settled total rises by ``amount``. Idempotent: settling a
        closed hold changes nothing and returns it as it is."""
        ...

    def release(self, hold_id: str, *, now: float) -> Hold:
        """An open hold -> released: every bucket's held total drops by the held amount.
        Idempotent like settle."""
        ...

    def expire(self, *, now: float) -> list[Hold]:
        """Close every open hold with ``expires_at < now``: a held one is released, a submitted
        one becomes ``expired`` and counted as spent at its held amount. Returns those holds, in
        their new state."""
        ...

    def get_hold(self, hold_id: str) -> Hold:
        """Raises HoldNotFound."""
        ...

    def totals(self, keys: Sequence[str]) -> list[BucketTotals]:
        """Current totals of the given buckets, in order; an unknown bucket reads as 0, 0."""
        ...

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
        """History, newest first: filter by state, by a bucket the hold charged, by created_at in
        [since, until); ``overrun=True`` keeps the holds with an overrun (``Hold.overrun`` above
        0: fal billed more than was held), which the SQL backends read through an index of such
        holds, so finding them costs what they are, not the history."""
        ...

    def buckets(self, *, prefix: str = "") -> list[BucketTotals]:
        """Every bucket whose key starts with ``prefix``, sorted by key (for per-value caps)."""
        ...

    def iter_holds(
        self,
        *,
        states: Sequence[HoldState] | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> Iterator[Hold]:
        """The holds :meth:`holds` lists, in its order (newest first), read as they are
        yielded: memory does not grow with the history and the first hold comes at once. A
        backend may read in pages (PostgreSQL: pages of ``PAGE`` holds, each a statement of its
        own), so a hold changed meanwhile may show its new state; none is skipped or repeated."""
        ...

    def summarize(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        period: int = 86_400,
        offset: int = 0,
        cuts: Sequence[float] = (),
    ) -> list[HoldGroup]:
        """The holds created in [since, until), summed in the ledger (nothing is read into a
        Hold): one :class:`HoldGroup` per endpoint, shared tags and buckets (without the
        visitor tags and buckets, :func:`shared_part`), period
        (``floor((created_at + offset) / period)``, ``period`` seconds >= 1) and place among
        ``cuts`` (how many cuts are ``<= created_at``), in no particular order. A caller that
        needs exact boundaries passes them as cuts; a group's ``first`` and ``last`` let it
        check the rest (a backend may group more coarsely before 1970)."""
        ...

    def claim_alert(self, bucket: str, threshold: str) -> bool:
        """Record that an alert fired for (bucket, threshold); True only the first time."""
        ...

    def adjust(
        self, hold_id: str, amount: int, *, now: float, reason: str, source: str
    ) -> Adjustment | None:
        """Make a closed hold count ``amount`` as spent (what fal billed), in one transaction:
        every bucket the hold charged moves its settled total by ``amount - spent_amount``, the
        hold's ``adjusted_amount`` becomes ``amount`` and an :class:`Adjustment` row records the
        change (``created_at=now``). ``settled_amount`` and the hold's state stay as they were.
        A hold that already counts ``amount`` is left alone and None is returned: applying the
        same correction twice writes nothing. Buckets may go over their limits (the money was
        spent); the next admission sees it. Raises HoldNotFound, and LedgerError for an open
        hold (held or submitted: settle or release it first), an amount that is not integer
        micro-USD >= 0, or an empty reason or source."""
        ...

    def adjustments(self, hold_id: str | None = None) -> list[Adjustment]:
        """The audit trail, oldest first (by id): every adjustment, or those of one hold."""
        ...

    def holds_by_request_id(self, request_ids: Sequence[str]) -> list[Hold]:
        """The holds whose fal request id is one of ``request_ids`` (read through an index),
        oldest first; a request id may name no hold or, if a caller reused it, several."""
        ...

    def create_key(
        self, key_id: str, digest: str, tags: Mapping[str, str], *, now: float
    ) -> ApiKey:
        """Record a virtual key (its digest, never the key); LedgerError for an id or digest
        already recorded."""
        ...

    def find_key(self, digest: str) -> ApiKey | None:
        """The key whose digest is ``digest`` (revoked ones too), read through an index."""
        ...

    def api_keys(self) -> list[ApiKey]:
        """Every virtual key, oldest first."""
        ...

    def revoke_key(self, key_id: str, *, now: float) -> ApiKey:
        """Revoke key ``key_id`` (a revoked key stays revoked, at its first time); KeyNotFound
        for an id that names no key."""
        ...

    def record_refusal(self, refusal: Refusal) -> None:
        """Keep ``refusal`` (one row, its own transaction); rows older than
        :data:`REFUSAL_RETENTION` before ``refusal.at`` and all but the newest
        :data:`REFUSAL_MAX_ROWS` are deleted in the same step. LedgerError for a refusal
        whose fields are not what :class:`Refusal` says."""
        ...

    def refusals(
        self, *, since: float | None = None, until: float | None = None, limit: int = 100
    ) -> list[Refusal]:
        """The refusals kept with ``at`` in [since, until), newest first, at most ``limit``."""
        ...

    def refusal_counts(
        self, *, since: float | None = None, until: float | None = None
    ) -> dict[tuple[str, str | None], int]:
        """How many refusals kept with ``at`` in [since, until), by (endpoint, cap or None),
        counted in the ledger; keys with no refusal are absent."""
        ...

    def close(self) -> None: ...
