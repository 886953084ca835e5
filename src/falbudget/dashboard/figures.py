"""The dashboard's figures as JSON-ready data (money as decimal strings of USD, times as ISO
8601): the pages render these and the JSON API returns them, so both show the same numbers.

Everything is read through the ledger's aggregates (bucket totals, :meth:`Ledger.summarize`)
or bounded reads (the open holds, newest first, at most ``limit``): no page reads every hold.
The report figures are those of ``falbudget report`` (``falbudget.report`` and its JSON data).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from falbudget.errors import ConfigurationError
from falbudget.ledger.base import OPEN_STATES
from falbudget.money import format_usd, from_micros

if TYPE_CHECKING:  # pragma: no cover
    from falbudget.guard.core import Guard
    from falbudget.ledger.base import Adjustment, ApiKey, Hold, HoldState
    from falbudget.report import Report

NEAR = Decimal("0.8")
"""A cap is "near" its limit from 80% used (spent + held) and "over" from 100%."""
IN_FLIGHT_LIMIT = 200
"""The open holds a page lists at most (newest first); the count of all is in the report."""
ADJUSTMENTS_LIMIT = 50
HISTORY_LIMIT = 100
MAX_HISTORY_LIMIT = 1000


class BadQuery(ConfigurationError):
    """A query parameter that is not allowed: HTTP 400 with this one-line message."""


def iso(epoch: float | None, tz: str) -> str | None:
    from falbudget.report import zone

    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, tz=zone(tz)).isoformat(timespec="seconds")


def _ratio(used: Decimal, limit: Decimal) -> Decimal:
    if limit == 0:
        return Decimal(1) if used > 0 else Decimal(0)
    return used / limit


def parse_moment(text: str | None, name: str, tz: str) -> float | None:
    """An ISO date or time of a query (``since``, ``until``); empty or absent: None."""
    from falbudget.report import zone

    if text is None or not text.strip():
        return None
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadQuery(
            f"{name}={text!r} is not allowed: an ISO date or time such as 2026-11-24"
            " or 2026-11-24T13:00+01:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone(tz))
    return moment.timestamp()


@dataclass(frozen=True)
class Figures:
    """Reads the figures of one guard (its ledger and caps) at the guard's clock."""

    guard: Guard
    tz: str = "UTC"

    def now(self) -> float:
        return self.guard._now()

    # -- caps -----------------------------------------------------------------------------
    def caps(self) -> dict[str, Any]:
        """Every cap in its current window (``falbudget budget status``), with when the window
        started and resets; the caps over their limit first, then those near it, each group
        by share used, highest first."""
        from falbudget.report import percent_used, window_bounds

        now = self.now()
        rows = []
        for status in self.guard.status():
            cap = status.cap
            used = status.spent + status.held
            ratio = _ratio(used, cap.limit)
            start, end = window_bounds(cap, now)
            scope = status.bucket.partition("|")[0]
            rows.append(
                (
                    -ratio,
                    {
                        "cap": cap.label(status.bucket),
                        "scope": scope,
                        "window": cap.window,
                        "window_key": status.bucket.partition("|")[2],
                        "tz": cap.tz,
                        "window_start": iso(start, cap.tz),
                        "resets_at": iso(end, cap.tz),
                        "limit": format_usd(cap.limit),
                        "spent": format_usd(status.spent),
                        "held": format_usd(status.held),
                        "remaining": format_usd(status.remaining),
                        "over_by": format_usd(max(Decimal(0), used - cap.limit)),
                        "used": percent_used(used, cap.limit),
                        "state": "over" if ratio >= 1 else "near" if ratio >= NEAR else "ok",
                        "waiting": scope == cap.tag,
                    },
                )
            )
        rows.sort(key=lambda row: row[0])  # stable: configuration order among equals
        return {"currency": "USD", "now": iso(now, self.tz), "caps": [row for _, row in rows]}

    # -- report ---------------------------------------------------------------------------
    def window(self, since: str | None, until: str | None) -> tuple[float, float]:
        from falbudget.report import default_window

        try:
            return default_window(
                self.now(),
                self.tz,
                since=parse_moment(since, "since", self.tz),
                until=parse_moment(until, "until", self.tz),
            )
        except BadQuery:
            raise
        except ConfigurationError as exc:
            message = str(exc).replace("--since", "since").replace("--until", "until")
            raise BadQuery(message) from None

    def report(
        self, since: str | None = None, until: str | None = None, *, by_key: bool = False
    ) -> Report:
        """The report of ``falbudget report`` over [since, until) (default: the 30 days to the
        end of today), summed in the ledger; ``by_key`` adds a breakdown by the proxy's key."""
        from falbudget import report as rp

        start, end = self.window(since, until)
        now = self.now()
        groups = rp.read_groups(
            self.guard.ledger, self.guard.caps, now=now, since=start, until=end, tz=self.tz
        )
        by = [*rp.DEFAULT_BY, ("key",)] if by_key else list(rp.DEFAULT_BY)
        return rp.build_report(
            groups, self.guard.caps, now=now, since=start, until=end, tz=self.tz, by=by
        )

    def report_data(self, report: Report) -> dict[str, Any]:
        from falbudget.cli.report_cmd import report_data

        data = report_data(report)
        data["breakdowns"] = [b for b in data["breakdowns"] if b["by"] != ["key"]]
        return data

    # -- activity -------------------------------------------------------------------------
    def in_flight(self, limit: int = IN_FLIGHT_LIMIT) -> dict[str, Any]:
        """The open holds (held and submitted), newest first, at most ``limit``: their age and
        when they expire (an expiry in the past: ``overdue``, closed by the next admission or
        by release-expired)."""
        now = self.now()
        holds = self.guard.ledger.holds(states=OPEN_STATES, limit=limit + 1)
        rows = [
            {
                **self.hold_row(hold),
                "age_seconds": max(0, int(now - hold.created_at)),
                "expires_in_seconds": int(hold.expires_at - now),
                "overdue": hold.expires_at < now,
            }
            for hold in holds[:limit]
        ]
        return {"now": iso(now, self.tz), "holds": rows, "more": len(holds) > limit}

    def hold_row(self, hold: Hold) -> dict[str, Any]:
        return {
            "id": hold.id,
            "endpoint": hold.endpoint,
            "state": hold.state,
            "amount": format_usd(from_micros(hold.amount)),
            "spent": format_usd(from_micros(hold.spent_amount)),
            "overrun": format_usd(from_micros(hold.overrun)),
            "tags": dict(hold.tags),
            "request_id": hold.request_id,
            "created_at": iso(hold.created_at, self.tz),
            "expires_at": iso(hold.expires_at, self.tz),
            "updated_at": iso(hold.updated_at, self.tz),
        }

    def overruns(self, since: float, until: float) -> list[dict[str, Any]]:
        """Holds created in [since, until) that count more as spent than was held."""
        return [self.hold_row(hold) for hold in self.guard.overruns(since=since, until=until)]

    def reconciliation(self, limit: int = ADJUSTMENTS_LIMIT) -> dict[str, Any]:
        """The discrepancies reconciliation corrected: the newest ``limit`` adjustments
        recorded by ``falbudget reconcile --apply`` (the ledger keeps no other record of a
        reconciliation), newest first; ``last_source`` is the evidence of the newest one."""
        rows: list[Adjustment] = self.guard.ledger.adjustments()[-limit:][::-1]
        return {
            "last_at": iso(rows[0].created_at, self.tz) if rows else None,
            "last_source": rows[0].source if rows else None,
            "adjustments": [
                {
                    "id": row.id,
                    "hold_id": row.hold_id,
                    "previous": format_usd(from_micros(row.previous)),
                    "amount": format_usd(from_micros(row.amount)),
                    "delta": format_usd(from_micros(row.delta)),
                    "reason": row.reason,
                    "source": row.source,
                    "created_at": iso(row.created_at, self.tz),
                }
                for row in rows
            ],
        }

    def refusals(
        self, since: float | None = None, until: float | None = None, limit: int = 100
    ) -> dict[str, Any]:
        """The admissions the guard refused with ``at`` in [since, until): the newest
        ``limit`` with their reason, and how many by endpoint and cap (counted in the ledger)."""
        if not 1 <= limit <= MAX_HISTORY_LIMIT:
            raise BadQuery(f"limit={limit} is not allowed: from 1 to {MAX_HISTORY_LIMIT}")
        ledger = self.guard.ledger
        rows = ledger.refusals(since=since, until=until, limit=limit)
        counts = ledger.refusal_counts(since=since, until=until)
        return {
            "since": iso(since, self.tz),
            "until": iso(until, self.tz),
            "refusals": [
                {
                    "at": iso(row.at, self.tz),
                    "endpoint": row.endpoint,
                    "reason": row.reason,
                    "cap": row.cap,
                    "amount": format_usd(from_micros(row.amount)),
                    "tags": dict(row.tags),
                }
                for row in rows
            ],
            "counts": [
                {"endpoint": endpoint, "cap": cap, "refusals": count}
                for (endpoint, cap), count in sorted(
                    counts.items(), key=lambda item: (-item[1], item[0][0], item[0][1] or "")
                )
            ],
        }

    # -- keys -----------------------------------------------------------------------------
    def keys(self, report: Report, caps: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Each virtual key of the proxy: its tags, what requests made with it spent and hold
        in the report's window (the report's breakdown by the ``key`` tag) and the caps that
        apply to it (a cap on one of its tags' values, or on the key itself)."""
        caps = self.caps() if caps is None else caps
        spend = {}
        for breakdown in report.breakdowns:
            if breakdown.by == ("key",):
                spend = {group.key[0]: group.figures for group in breakdown.groups}
        keys: list[ApiKey] = self.guard.ledger.api_keys()
        rows = []
        for key in keys:
            scopes = {f"{tag}={value}" for tag, value in {**key.tags, "key": key.id}.items()}
            figures = spend.get(key.id)
            rows.append(
                {
                    "id": key.id,
                    "tags": dict(key.tags),
                    "created_at": iso(key.created_at, self.tz),
                    "revoked_at": iso(key.revoked_at, self.tz),
                    "spent": format_usd(figures.spent if figures else Decimal(0)),
                    "held": format_usd(figures.held if figures else Decimal(0)),
                    "requests": figures.requests if figures else 0,
                    "caps": [c for c in caps["caps"] if c["scope"] in scopes],
                }
            )
        return {
            "since": iso(report.since, self.tz),
            "until": iso(report.until, self.tz),
            "keys": rows,
        }

    # -- history --------------------------------------------------------------------------
    def history(
        self,
        *,
        cursor: str | None = None,
        limit: int = HISTORY_LIMIT,
        states: Sequence[HoldState] | None = None,
    ) -> dict[str, Any]:
        """A page of the holds, newest first (:meth:`Ledger.iter_holds`), and the cursor of the
        next page (None: the last page). The cursor names the last hold's ``created_at`` and the
        ids seen at that moment, so that holds created at the same moment are neither skipped
        nor repeated."""
        if not 1 <= limit <= MAX_HISTORY_LIMIT:
            raise BadQuery(f"limit={limit} is not allowed: from 1 to {MAX_HISTORY_LIMIT}")
        until: float | None = None
        seen: set[str] = set()
        if cursor:
            until, seen = _read_cursor(cursor)
        holds: Iterator[Hold] = self.guard.ledger.iter_holds(
            states=states, until=None if until is None else math.nextafter(until, math.inf)
        )
        page: list[Hold] = []
        more = False
        for hold in holds:
            if until is not None and hold.created_at == until and hold.id in seen:
                continue
            if len(page) == limit:
                more = True
                break
            page.append(hold)
        close = getattr(holds, "close", None)
        if close is not None:
            close()
        after = None
        if more:
            last = page[-1].created_at
            ids = [h.id for h in page if h.created_at == last]
            if until is not None and last == until:
                ids.extend(seen)
            after = _write_cursor(last, ids)
        return {"holds": [self.hold_row(hold) for hold in page], "next_cursor": after}


def _write_cursor(created_at: float, ids: Sequence[str]) -> str:
    raw = json.dumps({"at": created_at.hex(), "ids": sorted(set(ids))}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _read_cursor(cursor: str) -> tuple[float, set[str]]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        at = float.fromhex(data["at"])
        ids = data["ids"]
        if not math.isfinite(at) or not isinstance(ids, list):
            raise ValueError
        if not all(isinstance(i, str) for i in ids):
            raise ValueError
        return at, set(ids)
    except (ValueError, KeyError, TypeError, OverflowError):  # 0x1p+2000 overflows a float
        raise BadQuery(
            f"cursor={cursor[:40]!r} is not allowed: the next_cursor of a history page"
        ) from None
