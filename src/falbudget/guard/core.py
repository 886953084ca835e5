"""The guard: quote a request, hold its price in the ledger against every cap, then settle or
release. One core serves sync and async code: the async face runs the same blocking steps in a
worker thread (``asyncio.to_thread``), it does not copy them."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import functools
import logging
import threading
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from falbudget import clock as falbudget_clock
from falbudget.errors import (
    BudgetExceeded,
    ConfigurationError,
    FalbudgetError,
    HoldClosed,
    HoldNotFound,
    IdempotencyConflict,
    InvalidArguments,
    LedgerError,
    LedgerUnavailable,
    MissingTag,
    UnknownEndpoint,
)
from falbudget.guard import _idempotency
from falbudget.guard.caps import GLOBAL_TOTAL, Cap
from falbudget.ledger.base import Admission, BucketCharge, Ledger, Refusal
from falbudget.ledger.base import Hold as LedgerHold
from falbudget.money import format_usd, from_micros, to_decimal, to_micros

if TYPE_CHECKING:  # pragma: no cover
    from falbudget.alerts import Notifier
    from falbudget.pricing.engine import PriceTable, Quote

log = logging.getLogger("falbudget.guard")
_LATE_SETTLE = "guard: Hold.settle"
"""The source of the adjustment a settle records on a hold that expired or was released."""

MAX_HOLD_TTL = 200 * 365 * 86400
"""The longest ``hold_ttl``, in seconds (200 years of 365 days): within what the keep-alive
timer can wait (a third of it) and what dates can show (an expiry before the year 9999)."""

P = ParamSpec("P")
T = TypeVar("T")
OnUnknown = Literal["deny", "allow"]
SettleFrom = Literal["quote", "billing"]
BillingLookup = Callable[[str, float], Decimal | None]
"""(fal request id, the hold's reservation time) -> what fal billed for it, or None when fal's
billing records do not show it yet."""


@dataclass(frozen=True)
class Alert:
    """Settled spend in ``cap``'s current window reached ``fraction`` of its limit."""

    cap: Cap
    fraction: Decimal
    bucket: str
    spent: Decimal
    limit: Decimal


@dataclass(frozen=True)
class CapStatus:
    """One cap's figures in its current window for a request's scope."""

    cap: Cap
    bucket: str
    spent: Decimal
    held: Decimal
    remaining: Decimal


@dataclass(frozen=True)
class Decision:
    """What ``Guard.check`` found: would the request fit every cap now? Nothing was held."""

    allowed: bool
    quote: Quote | None
    amount: Decimal
    caps: tuple[CapStatus, ...]
    refused_by: Cap | None = None
    reason: str = ""


@dataclass(frozen=True)
class _Plan:
    endpoint: str
    arguments: Mapping[str, Any]
    quote: Quote | None
    amount: int
    tags: dict[str, str]
    charges: tuple[BucketCharge, ...]
    caps_by_bucket: dict[str, Cap]
    now: float


class Hold:
    """An amount held in the ledger for one request. Settle it, release it, or let it expire.

    Every method has an ``a``-prefixed twin for asyncio code that runs the same step off the
    event loop.
    """

    def __init__(self, guard: Guard, row: LedgerHold, quote: Quote | None, replayed: bool):
        self._guard = guard
        self._row = row
        self.quote = quote
        self.replayed = replayed
        """True when an earlier reservation with the same idempotency key was returned: that
        request's hold, not this caller's to settle or release (leaving a ``with`` block does
        neither); a caller that sees it sends nothing."""

    @property
    def id(self) -> str:
        return self._row.id

    @property
    def endpoint(self) -> str:
        return self._row.endpoint

    @property
    def amount(self) -> Decimal:
        """The amount held (the quote's total), USD."""
        return from_micros(self._row.amount)

    @property
    def state(self) -> str:
        """held, submitted, settled, released or expired, as last seen by this object."""
        return self._row.state

    @property
    def spent(self) -> Decimal:
        """What the hold counts as spent (USD), as last seen: 0 while it is open or released."""
        return from_micros(self._row.spent_amount)

    @property
    def overrun(self) -> Decimal:
        """How much more than the amount held the hold counts as spent (USD; fal billed more
        than quoted), as last seen; 0 when it counts the quote or less."""
        return from_micros(self._row.overrun)

    @property
    def request_id(self) -> str | None:
        return self._row.request_id

    @property
    def idempotency_key(self) -> str | None:
        return self._row.idempotency_key

    @property
    def expires_at(self) -> float:
        return self._row.expires_at

    @property
    def closed(self) -> bool:
        return self._row.state not in ("held", "submitted")

    def __repr__(self) -> str:
        """'<Hold 3f2a...: 0.80 USD for fal-ai/magi/image-to-video, held, not yet sent>': what
        is held, for what, and where the hold stands (as last seen by this object)."""
        row = self._row
        state = {
            "held": "held, not yet sent",
            "submitted": (
                "sent to fal, its request id not known yet"
                if row.request_id is None
                else f"submitted to fal as {row.request_id}"
            ),
            "settled": f"settled at {format_usd(from_micros(row.spent_amount))} USD",
            "released": "released, nothing spent",
            "expired": f"expired, counted {format_usd(from_micros(row.spent_amount))} USD as spent",
        }.get(row.state, row.state)
        if row.state == "released" and row.spent_amount:
            state = (
                f"released, then counted {format_usd(from_micros(row.spent_amount))} USD as spent"
            )
        if row.adjusted_amount is not None and row.state != "released":
            first = row.amount if row.settled_amount is None else row.settled_amount
            state += f" (adjusted from {format_usd(from_micros(first))} USD)"
        return f"<Hold {self.id}: {format_usd(self.amount)} USD for {self.endpoint}, {state}>"

    # -- the steps, sync -------------------------------------------------------------------
    def mark_submitted(self, request_id: str | None = None) -> None:
        """The request is about to leave, or fal accepted it (``request_id``, once known): from
        now on an expiry counts the hold as spent. Call it with no request id just before the
        bytes are sent, and again with fal's request id when the queue returns it."""
        ledger = self._guard.ledger
        self._row = self._twice(
            "mark_submitted", lambda: ledger.mark_submitted(self.id, request_id, now=self._now())
        )
        if request_id is None and self.closed:
            # it expired or was released before the request left: sending now would spend
            # money no hold counts, so nothing may be sent (a request id means it left already:
            # a later settle records what fal billed)
            raise HoldClosed(
                f"hold {self.id} ({self.endpoint}) is already {self._row.state}: the request must"
                " not be sent under it; reserve again",
                hold_id=self.id,
                state=self._row.state,
                action="mark_submitted",
                amount=None,
                counted=from_micros(self._row.spent_amount),
            )

    def settle(self, amount: Decimal | str | int | None = None) -> None:
        """Count the hold as spent, at ``amount`` (default: the amount held). More than the
        amount held is allowed (fal billed more than quoted): it is an overrun, logged, and it
        counts against the caps and fires their alerts like any spend.

        A hold that closed before this call: one settled at the same amount is left as it is
        (a retry is safe); one settled at another amount raises HoldClosed; one that expired or
        was released gets ``amount`` recorded as what it counts as spent, through a ledger
        adjustment with its reason (the audit trail of ``falbudget ledger adjustments``)."""
        micros = None if amount is None else to_micros(to_decimal(amount, what="amount"))
        if micros is not None and micros < 0:
            raise ValueError(f"amount={amount!r} is not allowed: it must be 0 or more")
        guard = self._guard
        was_open = not self.closed
        now = guard._now()
        row = self._twice("settle", lambda: guard.ledger.settle(self.id, micros, now=now))
        self._row = row
        target = row.amount if micros is None else micros
        if row.state == "settled":
            if row.settled_amount != target:
                raise self._closed_error("settle", target)
            changed = was_open
        else:  # it expired or was released before this settle: record the spend, never drop it
            how = "expired" if row.state == "expired" else "was released"
            settled_late = [
                a for a in guard.ledger.adjustments(self.id) if a.source == _LATE_SETTLE
            ]
            if settled_late and settled_late[-1].amount != target:
                raise self._closed_error("settle", target)  # settled once already, at another
            adjustment = guard.ledger.adjust(
                self.id,
                target,
                now=now,
                reason=f"settled at {format_usd(from_micros(target))} after the hold {how}",
                source=_LATE_SETTLE,
            )
            self._row = guard.ledger.get_hold(self.id)
            changed = adjustment is not None
            log.warning(
                "falbudget: hold %s %s before it was settled; it now counts %s as spent%s",
                self.id,
                how,
                format_usd(from_micros(self._row.spent_amount)),
                "" if changed else " (unchanged: it counted that already)",
            )
        if changed:
            if self._row.overrun and guard.on_overrun is not None:
                try:
                    guard.on_overrun(self._row)
                except Exception:
                    log.exception("falbudget: the on_overrun callback failed")
            if self._row.overrun:
                log.warning(
                    "falbudget: overrun: hold %s (%s) counts %s as spent, %s more than the %s held",
                    self.id,
                    self.endpoint,
                    format_usd(from_micros(self._row.spent_amount)),
                    format_usd(from_micros(self._row.overrun)),
                    format_usd(self.amount),
                )
            try:
                guard._after_settle(self._row)
            except (
                FalbudgetError
            ) as exc:  # the spend is recorded: a missed alert must not undo that
                log.error(
                    "falbudget: hold %s is settled, but its caps' alert thresholds could not be"
                    " checked: %s",
                    self.id,
                    exc,
                )

    def release(self) -> None:
        """Give the held amount back: the request was not sent or not billed. Releasing a hold
        that is already released changes nothing; one that counts as spent (settled, or expired
        as spent) raises HoldClosed and stays as it is."""
        ledger = self._guard.ledger
        self._row = self._twice("release", lambda: ledger.release(self.id, now=self._now()))
        if self._row.counts_as_spent:
            raise self._closed_error("release", None)

    def _closed_error(self, action: str, micros: int | None) -> HoldClosed:
        row = self._row
        counted = from_micros(row.spent_amount)
        asked = None if micros is None else from_micros(micros)
        what = "release it" if asked is None else f"settle it at {format_usd(asked)}"
        return HoldClosed(
            f"hold {row.id} ({row.endpoint}) is already {row.state} and counts"
            f" {format_usd(counted)} as spent: cannot {what}; a correction of a closed hold is"
            " a ledger adjustment (falbudget reconcile --apply)",
            hold_id=row.id,
            state=row.state,
            action=action,
            amount=asked,
            counted=counted,
        )

    def _now(self) -> float:
        return self._guard._now()

    def _twice(self, step: str, write: Callable[[], LedgerHold]) -> LedgerHold:
        """``write`` (an idempotent step: on a closed hold it changes nothing), tried again once
        when the ledger is unavailable. The first try may have taken effect all the same (a
        connection lost after the request left: the server may have committed it); the second
        then finds it done and changes nothing, so the step never counts twice."""
        try:
            return write()
        except LedgerUnavailable as exc:
            log.warning("falbudget: %s of hold %s: %s; trying once more", step, self.id, exc)
        try:
            return write()
        except LedgerUnavailable as exc:
            raise LedgerUnavailable(
                f"{exc}; hold {self.id}: whether {step} took effect is not known; call "
                f"{step}() again when the ledger answers (it never counts twice)"
            ) from None

    def renew(self) -> None:
        """Push the expiry ``hold_ttl`` seconds past now (a job still running is not dead)."""
        now = self._guard._now()
        self._row = self._guard.ledger.renew(
            self.id, now=now, expires_at=now + self._guard.hold_ttl
        )

    def close(self, failed: bool) -> None:
        """What leaving a ``with guard.reserve(...)`` block does: settle on success; on failure
        release, unless fal already accepted the request (a request id was recorded: then it
        stays submitted and counts as spent at expiry, unless settled or released first). A
        failure never raises HoldClosed here (the caller's own error goes on); it is logged."""
        if self.closed:
            return
        if not failed:
            self.settle()
        elif self._row.request_id is None:
            try:
                self.release()
            except HoldClosed:
                log.warning("falbudget: hold %s counts as spent; not released", self.id)

    # -- the same steps, async --------------------------------------------------------------
    async def amark_submitted(self, request_id: str | None = None) -> None:
        await asyncio.to_thread(self.mark_submitted, request_id)

    async def asettle(self, amount: Decimal | str | int | None = None) -> None:
        await asyncio.to_thread(self.settle, amount)

    def settle_billed(self) -> None:
        """Settle a request that fal answered: at what fal billed for it when the guard reads
        the bill (``settle_from="billing"``, or a quote that is a ceiling) and fal's billing
        records already show it; else at the amount held, which a later
        ``falbudget reconcile --apply`` corrects to the bill."""
        self.settle(self.billed())

    async def asettle_billed(self) -> None:
        amount = await asyncio.to_thread(self.billed)
        await self.asettle(amount)

    def billed(self) -> Decimal | None:
        """What fal billed for this hold's request, when the guard reads the bill for it and
        fal's records show it; None otherwise (an error reading them is logged, never raised:
        the hold then counts the amount held)."""
        guard = self._guard
        if guard.settle_from != "billing" and not self._is_ceiling():
            return None
        if guard.billing is None or self.request_id is None:
            return None
        try:
            return guard.billing(self.request_id, self._row.created_at)
        except FalbudgetError as exc:
            log.warning(
                "falbudget: fal's bill for request %s (hold %s) could not be read: %s; counted"
                " at %s USD until reconciled",
                self.request_id,
                self.id,
                exc,
                format_usd(self.amount),
            )
            return None

    def _is_ceiling(self) -> bool:
        """Whether the amount held is a ceiling (the endpoint is priced only after the call):
        from the quote, or, for a hold read back from the ledger without one (a proxy following
        the holds it accepted before a restart), from the guard's price table."""
        if self.quote is not None:
            return self.quote.is_ceiling
        try:
            return self._guard.table.endpoint(self.endpoint).after_call
        except FalbudgetError:  # not in the table (any more): nothing says it is a ceiling
            return False

    async def arelease(self) -> None:
        await asyncio.to_thread(self.release)

    async def arenew(self) -> None:
        await asyncio.to_thread(self.renew)

    async def aclose(self, failed: bool) -> None:
        await asyncio.to_thread(self.close, failed)

    # -- keeping a hold alive while a call waits on a long job ------------------------------
    @contextlib.contextmanager
    def keepalive(self) -> Iterator[Hold]:
        """Renew the hold every third of ``hold_ttl`` until the block ends (a daemon thread)."""
        stop = threading.Event()
        period = self._guard.hold_ttl / 3

        def loop() -> None:
            while not stop.wait(period):
                if self.closed:
                    return
                try:
                    self.renew()
                except Exception:  # a failed renewal must not kill the call it protects
                    log.warning("could not renew hold %s", self.id, exc_info=True)

        thread = threading.Thread(target=loop, name=f"falbudget-renew-{self.id}", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()

    @contextlib.asynccontextmanager
    async def akeepalive(self) -> AsyncIterator[Hold]:
        """The asyncio twin of :meth:`keepalive` (a task on the running loop)."""
        period = self._guard.hold_ttl / 3

        async def loop() -> None:
            while True:
                await asyncio.sleep(period)
                if self.closed:
                    return
                try:
                    await self.arenew()
                except Exception:
                    log.warning("could not renew hold %s", self.id, exc_info=True)

        task = asyncio.create_task(loop())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Reservation:
    """``with guard.reserve(...) as hold`` and ``async with guard.areserve(...) as hold``.

    A reservation holds nothing until it is entered or acquired: one dropped before that warns
    (ResourceWarning), as an unclosed file does."""

    def __init__(
        self,
        guard: Guard,
        plan: _Plan | None,
        idempotency_key: str | None,
        fingerprint: str | None = None,
    ) -> None:
        self._used = False
        self._guard = guard
        self._plan = plan
        self._key = idempotency_key
        self._fingerprint = fingerprint
        self.hold: Hold | None = None

    def acquire(self) -> Hold:
        """Hold the amount now (raises BudgetExceeded, or IdempotencyConflict for a key bound to
        another request); the caller must settle or release, unless ``hold.replayed``."""
        self._used = True
        self.hold = self._guard._admit(self._plan, self._key, self._fingerprint)
        return self.hold

    async def aacquire(self) -> Hold:
        self._used = True
        self.hold = await asyncio.to_thread(
            self._guard._admit, self._plan, self._key, self._fingerprint
        )
        return self.hold

    def __del__(self) -> None:
        if getattr(self, "_used", True):
            return
        endpoint = self._plan.endpoint if self._plan is not None else "a request"
        warnings.warn(
            f"guard.reserve({endpoint!r}) was dropped without `with` or acquire(): it held"
            " nothing, and a request sent meanwhile was neither checked against the caps nor"
            " counted",
            ResourceWarning,
            stacklevel=1,  # from __del__: no caller frame to point at
            source=self,
        )

    def __enter__(self) -> Hold:
        return self.acquire()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.hold is not None and not self.hold.replayed:  # a replay's hold is not ours
            self.hold.close(failed=exc_type is not None)

    async def __aenter__(self) -> Hold:
        return await self.aacquire()

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.hold is not None and not self.hold.replayed:
            await self.hold.aclose(failed=exc_type is not None)


class Guard:
    """Enforces spend caps before a request leaves.

    ``Guard(ledger, caps)``: ``ledger`` is a Ledger or a URL for ``open_ledger`` (None: the
    default ledger, ``FALBUDGET_LEDGER`` or a SQLite file in the user's data directory);
    ``caps`` the Cap objects; ``table`` a PriceTable (None: the default table); ``hold_ttl`` the
    seconds a hold lives without renewal; ``idempotency_ttl`` the seconds an idempotency key is
    remembered after its hold closes (default 86400, 24 hours; from 3600 to 365 days);
    ``on_unknown`` "deny" (an unpriced endpoint raises UnknownEndpoint) or "allow" (it passes
    unpriced, with a warning); ``clock`` a function returning epoch seconds (default
    ``falbudget.clock.now``, the wall clock); ``on_alert`` called with an Alert.
    """

    def __init__(
        self,
        ledger: Ledger | str | None = None,
        caps: Sequence[Cap] = (),
        *,
        table: PriceTable | None = None,
        hold_ttl: float = 3600.0,
        idempotency_ttl: float = _idempotency.DEFAULT_TTL,
        on_unknown: OnUnknown = "deny",
        clock: Callable[[], float] | None = None,
        on_alert: Callable[[Alert], object] | None = None,
        settle_from: SettleFrom = "quote",
        billing: BillingLookup | None = None,
    ) -> None:
        from falbudget.ledger import default_ledger_url, open_ledger

        if settle_from not in ("quote", "billing"):
            raise ConfigurationError(
                f"settle_from={settle_from!r} is not allowed: 'quote' or 'billing'"
            )

        if (
            isinstance(hold_ttl, bool)
            or not isinstance(hold_ttl, int | float)
            or not 0 < hold_ttl <= MAX_HOLD_TTL  # False for nan; inf is above the bound
        ):
            raise ConfigurationError(
                f"hold_ttl={hold_ttl!r} is not allowed: a number of seconds above 0 and at most"
                f" {MAX_HOLD_TTL} (200 years)"
            )
        idempotency_ttl = _idempotency.check_ttl(idempotency_ttl)
        if on_unknown not in ("deny", "allow"):
            raise ConfigurationError(f"on_unknown={on_unknown!r} is not allowed: 'deny' or 'allow'")
        caps = tuple(caps)
        for cap in caps:
            if not isinstance(cap, Cap):
                raise ConfigurationError(f"caps: {cap!r} is not a falbudget.Cap")
        if ledger is None:
            ledger = default_ledger_url()
        self.ledger: Ledger = open_ledger(ledger) if isinstance(ledger, str) else ledger
        self.caps = caps
        self._table = table
        self.hold_ttl = float(hold_ttl)
        self.idempotency_ttl = idempotency_ttl
        self.on_unknown: OnUnknown = on_unknown
        self._clock = clock or falbudget_clock.now
        self.on_alert = on_alert
        self.on_overrun: Callable[[LedgerHold], object] | None = None
        """Called with a hold this guard settled above its amount held (an overrun)."""
        self.notifier: Notifier | None = None
        """The webhook notifier attached to this guard (``falbudget.alerts``), closed with it."""
        self.on_refusal: Callable[[Refusal], object] | None = None
        """Called with each :class:`Refusal` after it is recorded (webhook alerts watch the
        refusal rate through it); an exception it raises is logged, never raised."""
        self._claimed: set[tuple[str, str]] = set()
        """(bucket, threshold) claims this guard already asked the ledger about: a claim is
        final (True: this guard fired it; False: another did), so it is asked once, not at
        every settle above the threshold (a ledger write each). Cleared past _CLAIMS_KEPT."""
        self.settle_from: SettleFrom = settle_from
        if billing is None:
            from falbudget.reconcile import bill_lookup

            billing = bill_lookup()
        self.billing: BillingLookup | None = billing
        """Reads fal's bill for a request after the call (``settle_from="billing"`` and ceiling
        quotes); the default asks fal's Platform API with FAL_KEY."""

    @classmethod
    def from_config(cls, path: str | None = None, **overrides: Any) -> Guard:
        """A guard built from a YAML configuration file (default: ``FALBUDGET_CONFIG``)."""
        from falbudget.guard.config import load_config

        return load_config(path).build_guard(**overrides)

    @property
    def table(self) -> PriceTable:
        if self._table is None:
            from falbudget.pricing.loader import default_table, table_path_from_env

            self._table = default_table(table_path_from_env())  # read once per guard
        return self._table

    def _now(self) -> float:
        return float(self._clock())

    # -- planning: CPU only, shared by every path ------------------------------------------
    def _plan(
        self,
        endpoint: str,
        arguments: Mapping[str, Any] | None,
        tags: Mapping[str, Any],
        *,
        strict: bool = True,
    ) -> _Plan:
        clean_tags = {}
        for key, value in tags.items():
            if not isinstance(value, str) or not value:
                raise ConfigurationError(
                    f"tag {key}={value!r} is not allowed: tags are non-empty strings"
                )
            clean_tags[key] = value
        if "endpoint" in clean_tags and clean_tags["endpoint"] != endpoint:
            raise ConfigurationError("tag 'endpoint' is set by the guard from the request")
        given = sorted(clean_tags)
        clean_tags["endpoint"] = endpoint
        for cap in self.caps:
            if cap.lacks_tag(clean_tags):
                tag = str(cap.tag)
                raise MissingTag(cap, tag, given, difflib.get_close_matches(tag, given, n=3))
        now = self._now()
        quote: Quote | None
        if endpoint in self.table:
            # priced with the rules in effect at the guard's own clock, the moment it records
            quote = self.table.quote(endpoint, arguments, strict=strict, at=now)
            amount = to_micros(quote.total)
            normalized: Mapping[str, Any] = quote.arguments
        elif self.on_unknown == "allow":
            log.warning("falbudget: %s is not priced; letting it through unpriced", endpoint)
            quote, amount, normalized = None, 0, dict(arguments or {})
        else:
            self.table.endpoint(endpoint)  # raises UnknownEndpoint with close matches
            raise UnknownEndpoint(endpoint)  # pragma: no cover - endpoint() raised already
        limits: dict[str, int | None] = {GLOBAL_TOTAL: None}
        caps_by_bucket: dict[str, Cap] = {}
        for cap in self.caps:
            bucket = cap.bucket(clean_tags, now)
            if bucket is None:
                continue
            per_request = cap.max_per_request
            if per_request is not None and quote is not None and quote.total > per_request:
                raise self._refusal(
                    cap,
                    bucket,
                    quote,
                    amount,
                    f"over max_per_request {format_usd(per_request)}",
                    "max_per_request",
                )
            limit = cap.limit_micros
            previous = limits.get(bucket)
            if previous is None or limit < previous:
                limits[bucket] = limit
                caps_by_bucket[bucket] = cap
        # a fixed order (sorted keys) so that backends that lock rows never deadlock
        charges = tuple(BucketCharge(key, limits[key]) for key in sorted(limits))
        return _Plan(endpoint, normalized, quote, amount, clean_tags, charges, caps_by_bucket, now)

    def _refusal(
        self,
        cap: Cap,
        bucket: str,
        quote: Quote | None,
        amount: int,
        why: str,
        reason: str = "cap_exceeded",
    ) -> BudgetExceeded:
        totals = self.ledger.totals([bucket])[0]
        spent, held = from_micros(totals.settled), from_micros(totals.held)
        remaining = max(Decimal(0), cap.limit - spent - held)
        endpoint = quote.endpoint if quote is not None else "request"
        message = (
            f"budget exceeded: {endpoint} costs {format_usd(from_micros(amount))}, {why};"
            f" {cap.label(bucket)}: spent {format_usd(spent)}, held {format_usd(held)},"
            f" remaining {format_usd(remaining)}"
        )
        return BudgetExceeded(
            message,
            cap=cap,
            quote=quote,
            amount=from_micros(amount),
            spent=spent,
            held=held,
            remaining=remaining,
            reason=reason,
        )

    def _record_refusal(
        self, exc: Exception, endpoint: str, tags: Mapping[str, object], amount: int = 0
    ) -> None:
        """Record in the ledger that the admission ``exc`` stops was refused (metrics, alerts
        and the dashboard read it). Never turns the refusal into an admission nor hides it: a
        failed write is logged at ERROR and noted on ``exc``, which the caller raises as it
        would have."""
        cap: Cap | None = None
        if isinstance(exc, BudgetExceeded):
            reason, cap = exc.reason, exc.cap
            if exc.quote is not None or exc.amount:
                amount = to_micros(exc.amount)
        elif isinstance(exc, MissingTag):
            reason, cap = "missing_tag", exc.cap
        elif isinstance(exc, UnknownEndpoint):
            reason = "unknown_endpoint"
        elif isinstance(exc, IdempotencyConflict):
            reason = "idempotency_conflict"
        elif isinstance(exc, InvalidArguments):
            reason = "invalid_arguments"
        else:  # pragma: no cover - callers pass only the errors above
            return
        refusal = Refusal(
            at=self._now(),
            endpoint=endpoint,
            reason=reason,
            cap=None if cap is None else cap.label(),
            amount=amount,
            tags={k: v for k, v in tags.items() if isinstance(v, str)},
        )
        try:
            self.ledger.record_refusal(refusal)
        except Exception as failure:  # the refusal stands whatever the ledger says
            log.error(
                "falbudget: could not record the refusal of %s (%s): %s", endpoint, reason, failure
            )
            exc.add_note(f"(falbudget could not record this refusal in the ledger: {failure})")
        if self.on_refusal is not None:
            try:
                self.on_refusal(refusal)
            except Exception:
                log.exception("falbudget: the on_refusal callback failed")

    # -- the ledger steps: blocking, run in a thread by the async face ----------------------
    def _admit(
        self, plan: _Plan | None, idempotency_key: str | None, fingerprint: str | None = None
    ) -> Hold:
        if plan is None:  # pragma: no cover - Reservation always has a plan
            raise ConfigurationError("nothing to reserve")
        if idempotency_key is not None and fingerprint is None:
            fingerprint = _idempotency.fingerprint(plan.endpoint, plan.arguments, plan.tags)
        now = self._now()
        quote = plan.quote
        hold_id = uuid.uuid4().hex
        try:
            result: Admission = self._reserve(plan, hold_id, idempotency_key, fingerprint, now)
        except LedgerUnavailable as exc:
            if idempotency_key is None:
                raise self._unresolved(exc, hold_id) from None
            result = self._reserve_again(exc, plan, hold_id, idempotency_key, fingerprint, now)
        if result.conflict and result.hold is not None and idempotency_key is not None:
            conflict = _idempotency.conflict(idempotency_key, result.hold, plan.endpoint, plan.tags)
            self._record_refusal(conflict, plan.endpoint, plan.tags, plan.amount)
            raise conflict
        if not result.admitted or result.hold is None:
            bucket = result.refused_by or GLOBAL_TOTAL
            cap = plan.caps_by_bucket.get(bucket)
            if cap is None:  # pragma: no cover - trackers have no limit
                raise ConfigurationError(f"ledger refused unlimited bucket {bucket}")
            refused = self._refusal(cap, bucket, quote, plan.amount, "over the limit")
            self._record_refusal(refused, plan.endpoint, plan.tags, plan.amount)
            raise refused
        # a replay of the hold made under this very id is this reservation's own (the answer to
        # the first try was lost, the retry found it): it is not another request's
        return Hold(self, result.hold, quote, result.replayed and result.hold.id != hold_id)

    def _reserve_again(
        self,
        exc: LedgerUnavailable,
        plan: _Plan,
        hold_id: str,
        idempotency_key: str,
        fingerprint: str | None,
        now: float,
    ) -> Admission:
        """A reservation under an idempotency key that the ledger did not confirm, tried once
        more with the same hold id: the key makes it safe. Recorded the first time, the retry
        finds the hold under this id and it is this reservation's own; not recorded, the retry
        records it. Still unavailable: LedgerUnavailable, and nothing is sent."""
        log.warning("falbudget: reserve under key %r: %s; trying once more", idempotency_key, exc)
        try:
            return self._reserve(plan, hold_id, idempotency_key, fingerprint, now)
        except LedgerUnavailable as again:
            later = f"its expiry (hold_ttl {self.hold_ttl:g} s) releases it, never counted as spent"
            raise LedgerUnavailable(
                f"{again}; the reservation under idempotency key {idempotency_key!r} may have"
                f" been recorded as hold {hold_id}: it was never submitted, so if it was, {later};"
                " retry with the same key"
            ) from None

    def _reserve(
        self,
        plan: _Plan,
        hold_id: str,
        idempotency_key: str | None,
        fingerprint: str | None,
        now: float,
    ) -> Admission:
        quote = plan.quote
        return self.ledger.reserve(
            hold_id=hold_id,
            endpoint=plan.endpoint,
            amount=plan.amount,
            charges=plan.charges,
            now=now,
            expires_at=now + self.hold_ttl,
            idempotency_key=idempotency_key,
            tags=plan.tags,
            # the table's version, and for dated prices "@" and their first day (rules_version)
            table_version=quote.rules_version if quote else None,
            table_sha256=quote.table_sha256 if quote else None,
            fingerprint=fingerprint,
            idempotency_ttl=None if idempotency_key is None else self.idempotency_ttl,
        )

    def _unresolved(self, exc: LedgerUnavailable, hold_id: str) -> LedgerUnavailable:
        """A reservation without an idempotency key that the ledger did not confirm. It may have
        been recorded all the same (the connection was lost after the request left: the server
        may have committed it), so the guard looks the hold up by the id it chose; nobody else
        knows that id, so a hold found is released at once. The caller gets LedgerUnavailable
        and sends nothing; a hold left behind was never submitted, so its expiry releases it and
        never counts it as spent. (Under a key, ``_reserve_again`` retries instead.)"""
        later = f"released when it expires (hold_ttl {self.hold_ttl:g} s), never counted as spent"
        try:
            row = self.ledger.get_hold(hold_id)
        except HoldNotFound:
            return LedgerUnavailable(
                f"{exc}; the reservation is not recorded (hold {hold_id}): nothing is held; were "
                f"the server to record it still, it would be {later}"
            )
        except LedgerError:
            return LedgerUnavailable(
                f"{exc}; the reservation may have been recorded as hold {hold_id}: if so, it is "
                f"{later}"
            )
        if row.state != "held":
            return LedgerUnavailable(
                f"{exc}; the reservation was recorded as hold {hold_id}, now {row.state}"
            )
        try:
            self.ledger.release(hold_id, now=self._now())
        except LedgerError:
            return LedgerUnavailable(
                f"{exc}; the reservation was recorded as hold {hold_id} and could not be "
                f"released now: it is {later}"
            )
        return LedgerUnavailable(
            f"{exc}; the reservation had been recorded as hold {hold_id} and has been released: "
            "nothing is held"
        )

    def _after_settle(self, row: LedgerHold) -> None:
        watched = []
        for cap in self.caps:
            bucket = cap.bucket(row.tags, row.created_at) if cap.alert_at else None
            if bucket is not None and bucket in row.buckets:
                watched.append((bucket, cap))
        if not watched:
            return
        totals = {t.key: t for t in self.ledger.totals([bucket for bucket, _ in watched])}
        for bucket, cap in watched:
            settled = totals[bucket].settled
            for fraction in cap.alert_at:
                if settled < to_micros(cap.limit * fraction):
                    break
                claim = (bucket, f"{fraction}@{cap.limit}")
                if claim in self._claimed:
                    continue
                claimed = self.ledger.claim_alert(*claim)
                if len(self._claimed) >= _CLAIMS_KEPT:  # old windows' claims: asked again, if
                    self._claimed.clear()  # ever, and answered False by the ledger
                self._claimed.add(claim)
                if claimed:
                    alert = Alert(cap, fraction, bucket, from_micros(settled), cap.limit)
                    log.warning(
                        "falbudget alert: %s reached %s%% (spent %s of %s) in %s",
                        cap.label(bucket),
                        fraction * 100,
                        format_usd(alert.spent),
                        format_usd(cap.limit),
                        bucket,
                    )
                    if self.on_alert is not None:
                        try:
                            self.on_alert(alert)
                        except Exception:
                            log.exception("falbudget: the on_alert callback failed")

    # -- public API -------------------------------------------------------------------------
    def reserve(
        self,
        endpoint: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        **tags: str,
    ) -> Reservation:
        """``with guard.reserve(endpoint, arguments, project="alpha") as hold:``.

        Validates the full request (required inputs included) and quotes it at once; a request
        without the tag a cap is keyed on raises MissingTag at once (unless that cap has
        ``untagged="skip"``). On entry holds the amount against every cap that applies or raises
        BudgetExceeded. Normal exit
        settles at the quoted amount; an exception releases (a hold marked submitted stays
        submitted) and propagates.

        ``idempotency_key`` binds the key to this request (endpoint, canonical arguments, tags)
        until ``idempotency_ttl`` after its hold closes: the same request again returns the
        first hold (``hold.replayed``; send nothing, and leaving the block neither settles nor
        releases it); another request under the key raises IdempotencyConflict.
        """
        key = _idempotency.check_key(idempotency_key)
        try:
            plan = self._plan(endpoint, arguments, tags)
        except (BudgetExceeded, MissingTag, UnknownEndpoint, InvalidArguments) as exc:
            self._record_refusal(exc, endpoint, {**tags, "endpoint": endpoint})
            raise
        fingerprint = (
            None
            if key is None
            else _idempotency.fingerprint(plan.endpoint, plan.arguments, plan.tags)
        )
        return Reservation(self, plan, key, fingerprint)

    def areserve(
        self,
        endpoint: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        **tags: str,
    ) -> Reservation:
        """``async with guard.areserve(...) as hold:``: the same as reserve, off the loop."""
        return self.reserve(endpoint, arguments, idempotency_key=idempotency_key, **tags)

    def check(
        self, endpoint: str, arguments: Mapping[str, Any] | None = None, **tags: str
    ) -> Decision:
        """Would this request fit every cap now? Holds nothing; a moment later it may differ.

        Unlike reserve, inputs that do not change the price (prompt, image_url) may be left out.
        """
        try:
            plan = self._plan(endpoint, arguments, tags, strict=False)
        except BudgetExceeded as exc:
            return Decision(False, exc.quote, exc.amount, (), exc.cap, str(exc))
        statuses = []
        refused: Cap | None = None
        reason = ""
        keys = [c.key for c in plan.charges if c.key in plan.caps_by_bucket]
        for totals in self.ledger.totals(keys):
            cap = plan.caps_by_bucket[totals.key]
            spent, held = from_micros(totals.settled), from_micros(totals.held)
            statuses.append(
                CapStatus(cap, totals.key, spent, held, max(Decimal(0), cap.limit - spent - held))
            )
            if refused is None and totals.settled + totals.held + plan.amount > cap.limit_micros:
                refused = cap
                cost = format_usd(from_micros(plan.amount))
                reason = (
                    f"it costs {cost} and {cap.label(totals.key)} has"
                    f" {format_usd(statuses[-1].remaining)} left"
                )
        return Decision(
            refused is None,
            plan.quote,
            from_micros(plan.amount),
            tuple(statuses),
            refused,
            reason,
        )

    def call(
        self,
        fn: Callable[..., T],
        endpoint: str,
        arguments: Mapping[str, Any] | None = None,
        *args: Any,
        idempotency_key: str | None = None,
        tags: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> T:
        """Call ``fn(endpoint, arguments, *args, **kwargs)`` under a reservation: settle when it
        returns, release when it raises. The hold is renewed while ``fn`` runs. A replayed
        ``idempotency_key`` never calls ``fn`` again: it raises IdempotencyInProgress while the
        first call's hold is open, IdempotencyReplayed once it is closed."""
        reservation = self.reserve(
            endpoint, arguments, idempotency_key=idempotency_key, **(tags or {})
        )
        with reservation as hold:
            _refuse_replay(hold)
            with hold.keepalive():
                hold.mark_submitted()  # fn may send: if this process dies now, expiry counts it
                return fn(endpoint, arguments, *args, **kwargs)

    async def acall(
        self,
        fn: Callable[..., Awaitable[T]],
        endpoint: str,
        arguments: Mapping[str, Any] | None = None,
        *args: Any,
        idempotency_key: str | None = None,
        tags: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> T:
        """The asyncio twin of :meth:`call` for a coroutine function."""
        # reserve() in a thread: a refusal it finds reads and writes the ledger (the cap's
        # figures, the record of the refusal), which must not block the event loop
        reservation = await asyncio.to_thread(
            functools.partial(
                self.reserve, endpoint, arguments, idempotency_key=idempotency_key, **(tags or {})
            )
        )
        async with reservation as hold:
            _refuse_replay(hold)
            async with hold.akeepalive():
                await hold.amark_submitted()  # as in call()
                return await fn(endpoint, arguments, *args, **kwargs)

    def wrap(self, client: Any, **tags: str) -> Any:
        """A fal_client.SyncClient or AsyncClient whose spending calls go through this guard."""
        from falbudget.guard.fal import wrap_client

        return wrap_client(self, client, tags)

    # -- reading the ledger -----------------------------------------------------------------
    def _bucket(self, scope: str, window: str) -> tuple[str, Cap | None]:
        now = self._now()
        if scope == "global" and window == "total":
            cap = next(
                (
                    c
                    for c in self.caps
                    if c.bucket_for_scope(scope, now) == GLOBAL_TOTAL and c.window == "total"
                ),
                None,
            )
            return GLOBAL_TOTAL, cap
        for cap in self.caps:
            if cap.window != window:
                continue
            bucket = cap.bucket_for_scope(scope, now)
            if bucket is not None:
                return bucket, cap
        raise ConfigurationError(
            f"no cap tracks scope {scope!r} over window {window!r}; figures exist for"
            " scope 'global' over 'total' and for each cap's scope and window"
        )

    def spent(self, scope: str = "global", window: str = "total") -> Decimal:
        """Settled spend (USD) in ``scope`` over the current ``window``."""
        bucket, _ = self._bucket(scope, window)
        return from_micros(self.ledger.totals([bucket])[0].settled)

    def held(self, scope: str = "global", window: str = "total") -> Decimal:
        """Amount held for requests in flight (USD) in ``scope`` over the current ``window``."""
        bucket, _ = self._bucket(scope, window)
        return from_micros(self.ledger.totals([bucket])[0].held)

    def remaining(self, scope: str = "global", window: str = "total") -> Decimal:
        """What the cap on ``scope`` and ``window`` still admits (USD); needs such a cap."""
        bucket, cap = self._bucket(scope, window)
        if cap is None:
            raise ConfigurationError(f"no cap limits scope {scope!r} over window {window!r}")
        totals = self.ledger.totals([bucket])[0]
        return max(Decimal(0), cap.limit - from_micros(totals.settled + totals.held))

    def status(self) -> list[CapStatus]:
        """Every cap's figures now, in the order of the caps: per-value caps ('project') list
        each value seen; one with no value yet is listed once, with bucket 'project|WINDOW'
        (the tag without a value) and zero figures, so that no cap is ever left out."""
        now = self._now()
        result = []
        for cap in self.caps:
            buckets = _cap_buckets(self, cap, now)
            if not buckets:
                bucket = f"{cap.scope}|{cap.window_key(now)}"
                result.append(CapStatus(cap, bucket, Decimal(0), Decimal(0), cap.limit))
                continue
            for totals in self.ledger.totals(buckets):
                spent, held = from_micros(totals.settled), from_micros(totals.held)
                result.append(
                    CapStatus(
                        cap, totals.key, spent, held, max(Decimal(0), cap.limit - spent - held)
                    )
                )
        return result

    def overruns(
        self, *, since: float | None = None, until: float | None = None
    ) -> list[LedgerHold]:
        """The holds created in [since, until) that count more as spent than was held for them
        (fal billed more than quoted: ``hold.overrun`` micro-USD above), newest first, read
        through the ledger's index of such holds (:meth:`Ledger.holds` ``overrun=True``)."""
        return self.ledger.holds(since=since, until=until, overrun=True)

    def release_expired(self) -> list[LedgerHold]:
        """Close every hold past its expiry now: never submitted -> released; submitted ->
        expired, counted as spent and listed for reconciliation."""
        return self.ledger.expire(now=self._now())

    def close(self) -> None:
        if self.notifier is not None:
            self.notifier.close()
        self.ledger.close()

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_CLAIMS_KEPT = 10_000
"""How many alert claims a guard remembers (:attr:`Guard._claimed`)."""


def _refuse_replay(hold: Hold) -> None:
    """guard.call keeps no result to return: a replayed key raises instead of calling again."""
    if hold.replayed and hold.idempotency_key is not None:
        raise _idempotency.unavailable(
            hold.idempotency_key, hold._row, "guard.call keeps no result to return"
        )


def _cap_buckets(guard: Guard, cap: Cap, now: float) -> list[str]:
    window = cap.window_key(now)
    if cap.scope_value({}) == "global":
        return [f"global|{window}"]
    if cap._value is not None:
        return [f"{cap._tag}={cap._value}|{window}"]
    suffix = f"|{window}"
    return [t.key for t in guard.ledger.buckets(prefix=f"{cap._tag}=") if t.key.endswith(suffix)]
