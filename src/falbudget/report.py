"""Spend reports over the ledger's holds: who spent what, how fast, and when each cap runs out.

Everything here but :func:`read_groups` is a pure computation over what the caller passes (ledger
``Hold`` rows or the ``HoldGroup`` sums :func:`read_groups` asks the ledger for, the caps and the
moment "now"); nothing reads the clock or the environment. Money is
integer micro-USD inside and ``Decimal`` USD in every result.

Definitions (docs/reports.md says the same for people):

* A hold belongs to the moment it was reserved, ``created_at``: the same moment that decides which
  cap window it charges, so a day's figures here match what the guard counted.
* **spent**: holds settled or expired, at what they count as spent (``Hold.spent_amount``: the
  settled amount, or the amount of the hold's last adjustment when reconciliation with fal's
  records corrected it; a released hold that fal billed after all counts at its adjustment).
  **held**: holds still held or submitted, at the amount held. Other released holds count for
  nothing.
* **burn rate**: what was spent (settled or expired) by holds created in the ``burn_days`` x 24
  hours up to now, divided by ``burn_days``; open holds are left out (their amount is not final).
* **forecast**: for each cap (each value seen, for a per-value cap), the cap's current window uses
  ``spent + held`` (the guard's own figures: the holds that charged the window's bucket); at the
  burn rate of the cap's scope it reaches the limit ``remaining / rate`` after now. A zero rate
  never reaches it; a window that ends first resets the figures, so the cap is not reached
  within the window.
"""

from __future__ import annotations

import bisect
import datetime as dt
import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from falbudget.errors import ConfigurationError, FalbudgetError, install_hint
from falbudget.ledger.base import VISITOR_TAGS, HoldGroup
from falbudget.money import format_usd, from_micros

if TYPE_CHECKING:  # pragma: no cover
    from falbudget.guard.caps import Cap
    from falbudget.ledger.base import Hold, Ledger

DAY_SECONDS = 86_400
DIMENSIONS = ("endpoint", "project", "user", "day")
"""The named dimensions of ``by``; any other tag is ``tag:NAME``."""
DEFAULT_BY: tuple[tuple[str, ...], ...] = (("endpoint",), ("project",), ("user",), ("day",))
DEFAULT_DAYS = 30
"""Without ``since``: the report covers the 30 calendar days up to ``until``."""
BURN_DAYS = 7
"""The burn rate's default span, in days of 24 hours up to now."""
MAX_BURN_DAYS = 3650
"""The longest burn span, in days (ten years)."""
DAILY_SPAN_DAYS = 366
"""A window of up to this many days has every day in its daily series (zeros included); a
longer one lists only the days that hold a hold."""

Outcome = Literal["reached", "will_reach", "not_in_window", "never"]
"""reached: spent + held is at or over the limit now; will_reach: at the burn rate it gets there
at ``reached_at`` (within the window); not_in_window: the window ends first; never: zero rate."""


class PlotUnavailable(FalbudgetError, ImportError):
    """A PNG chart needs matplotlib: ``pip install 'falbudget[plot]'``."""


# --- inputs ------------------------------------------------------------------------------------


def zone(tz: str) -> ZoneInfo:
    """The IANA zone ``tz``, or ConfigurationError naming what is allowed."""
    try:
        if isinstance(tz, str) and tz.strip() == tz and tz:
            return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        pass
    raise ConfigurationError(
        f"tz={tz!r} is not allowed: an IANA time zone name such as 'UTC' or 'Europe/Paris'"
    )


_RESERVED = frozenset({"spent", "held", "requests", "open", "by"})


def parse_by(text: str) -> tuple[str, ...]:
    """One breakdown: 'project' or 'project,day' (a group per combination); 'tag:team' groups
    by any other tag. Returns the tag names, 'endpoint' and 'day' as they are."""
    dims: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        name = item
        if item.startswith("tag:"):
            name = item[4:]
            if not name.isidentifier() or name == "day":
                name = ""
        elif item not in DIMENSIONS:
            name = ""
        if not name or name in _RESERVED:
            raise ConfigurationError(
                f"--by {text!r} is not allowed: endpoint, project, user, day or tag:NAME, several"
                " joined by commas (project,day)"
            )
        if name in dims:
            raise ConfigurationError(f"--by {text!r} is not allowed: {name} is given twice")
        if name in VISITOR_TAGS:
            raise ConfigurationError(_visitor_refusal(f"--by {text!r}", name))
        dims.append(name)
    return tuple(dims)


def parse_scope(text: str) -> tuple[str, str]:
    """'project=alpha' -> ('project', 'alpha'); 'endpoint=fal-ai/x' works too; the older
    'project:alpha' is read as well (one parser with the caps: falbudget.guard.caps)."""
    from falbudget.guard.caps import parse_scope as parse

    tag, value = parse(text, what="--scope", one_value=True)
    if tag in VISITOR_TAGS:
        raise ConfigurationError(_visitor_refusal(f"--scope {text!r}", tag))
    return tag, str(value)


def _visitor_refusal(what: str, tag: str) -> str:
    return (
        f"{what} is not allowed: {tag!r} has a value per visitor (the client's address),"
        " which reports sum together so that they stay small; `falbudget budget history`"
        f" lists each hold with its {tag} and `falbudget budget status` each {tag}'s cap"
    )


def _midnight(day: dt.date, tz: ZoneInfo) -> float:
    return dt.datetime.combine(day, dt.time(0), tzinfo=tz).timestamp()


def _local_day(epoch: float, tz: ZoneInfo) -> dt.date:
    return dt.datetime.fromtimestamp(epoch, tz=tz).date()


EARLIEST = dt.datetime(1, 1, 3, tzinfo=dt.UTC).timestamp()
LATEST = dt.datetime(9999, 12, 29, tzinfo=dt.UTC).timestamp()
"""A report's moments stay within [EARLIEST, LATEST] (UTC), two days inside the calendar's
ends, so that every day, week and month around them has a date in every time zone: a window
reaching further is cut there (no ledger holds a moment beyond), and ``now`` must lie within."""


def default_window(
    now: float, tz: str, *, since: float | None = None, until: float | None = None
) -> tuple[float, float]:
    """[since, until): by default until is the start of the day after ``now`` (in ``tz``) and
    since the midnight ``DEFAULT_DAYS`` calendar days before until. A window reaching before
    EARLIEST or after LATEST is cut there; a ``now`` beyond them is a ConfigurationError."""
    zone_ = zone(tz)
    if not EARLIEST <= now <= LATEST:
        shown = _utc(now) if math.isfinite(now) and abs(now) < 1e12 else repr(now)
        raise ConfigurationError(
            f"now={shown} is not allowed: a moment from {_utc(EARLIEST)} to {_utc(LATEST)} (UTC)"
        )
    if since is not None:
        since = min(max(since, EARLIEST), LATEST)
    if until is not None:
        until = min(max(until, EARLIEST), LATEST)
    if until is None:
        until = _midnight(_local_day(now, zone_) + dt.timedelta(days=1), zone_)
    if since is None:
        end_day = _local_day(until, zone_)
        if _midnight(end_day, zone_) < until:
            end_day += dt.timedelta(days=1)
        first = dt.date.fromordinal(max(1, end_day.toordinal() - DEFAULT_DAYS))
        since = max(EARLIEST, _midnight(first, zone_))
    if since >= until:
        raise ConfigurationError("the report window is empty: --since must be before --until")
    return since, until


def _utc(epoch: float) -> str:
    """'0001-01-03 00:00': the UTC minute of a moment (EARLIEST <= epoch <= LATEST)."""
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC).isoformat(" ", "minutes")[:16]


def window_bounds(cap: Cap, now: float) -> tuple[float | None, float | None]:
    """The start and end (epoch s) of ``cap``'s window holding ``now``; (None, None) for total."""
    if cap.window == "total":
        return None, None
    tz = zone(cap.tz)
    day = _local_day(now, tz)
    if cap.window == "day":
        start, days = day, 1
    elif cap.window == "week":
        start, days = day - dt.timedelta(days=day.weekday()), 7
    else:
        start, days = day.replace(day=1), 32
    if dt.date.max - start < dt.timedelta(days=days):  # the window ends after the year 9999
        return _midnight(start, tz), _midnight(dt.date.max, tz) + DAY_SECONDS
    end = start + dt.timedelta(days=days)
    return _midnight(start, tz), _midnight(end if days != 32 else end.replace(day=1), tz)


def history_start(
    caps: Sequence[Cap], *, now: float, since: float, burn_days: int = BURN_DAYS
) -> float | None:
    """The earliest ``created_at`` a report needs (to ask the ledger for less than everything):
    the window's start, the burn span, each cap's current window; None (all) with a total cap."""
    earliest = min(since, now - burn_days * DAY_SECONDS)
    for cap in caps:
        # the window holding now (forecast) and the one holding since (the chart's first day)
        starts = [window_bounds(cap, moment)[0] for moment in (now, since)]
        for start in starts:
            if start is None:
                return None
            earliest = min(earliest, start)
    return earliest


def _period(tz: ZoneInfo, now: float) -> tuple[int, int]:
    """(period, offset) for :meth:`Ledger.summarize` such that a period lies within one day
    of ``tz`` around ``now``: the largest divisor of a day that divides the zone's offsets from
    UTC over the year of ``now`` (UTC: a day; Paris: an hour; Kolkata: 30 minutes)."""
    year = _local_day(now, tz).year
    period = DAY_SECONDS
    offsets = [dt.datetime.fromtimestamp(now, tz=tz).utcoffset()]
    for month in range(1, 13):
        moment = dt.datetime(year, month, 1, 12, tzinfo=tz)
        offsets.append(moment.utcoffset())
    for delta in offsets:
        if delta is not None:
            period = math.gcd(period, int(delta.total_seconds()) % DAY_SECONDS)
    first = offsets[0]
    return period, 0 if first is None else int(first.total_seconds()) % period


def read_groups(
    ledger: Ledger,
    caps: Sequence[Cap],
    *,
    now: float,
    since: float,
    until: float,
    tz: str = "UTC",
    burn_days: int = BURN_DAYS,
) -> list[HoldGroup]:
    """What :func:`build_report` needs from ``ledger``, summed in the ledger
    (:meth:`Ledger.summarize`) instead of read hold by hold: the groups of holds created since
    :func:`history_start`, each within one day of ``tz`` and on one side of since, until, now
    and the burn span's start. A group that is not (a zone whose midnights are off its usual
    offset, as before 1970) is replaced by its holds, read one by one: exact in every case,
    and the cost follows the ledger's data, not the calendar."""
    zone_ = zone(tz)
    start = history_start(caps, now=now, since=since, burn_days=burn_days)
    cuts = sorted(
        {
            since,
            until,
            math.nextafter(now, math.inf),
            math.nextafter(now - burn_days * DAY_SECONDS, math.inf),
        }
    )
    period, offset = _period(zone_, now)
    groups = ledger.summarize(since=start, period=period, offset=offset, cuts=cuts)

    def clean(group: HoldGroup) -> bool:
        return bisect.bisect_right(cuts, group.first) == bisect.bisect_right(
            cuts, group.last
        ) and _local_day(group.first, zone_) == _local_day(group.last, zone_)

    return _split(ledger, groups, clean)


def _split(
    ledger: Ledger, groups: list[HoldGroup], clean: Callable[[HoldGroup], bool]
) -> list[HoldGroup]:
    """``groups`` with every group that is not ``clean`` replaced by its holds: the spans
    [first, last] of such groups grow, to a fixed point, by every group whose span meets them,
    so that the holds read in those spans are exactly those of the groups taken out."""
    regions = [(g.first, g.last) for g in groups if not clean(g)]
    if not regions:
        return groups
    kept = list(groups)
    while True:
        regions = _merge(regions)
        meets = [g for g in kept if any(g.first <= high and g.last >= low for low, high in regions)]
        if not meets:
            break
        kept = [g for g in kept if not any(g is m for m in meets)]
        regions.extend((g.first, g.last) for g in meets)
    for low, high in regions:
        holds = ledger.holds(since=low, until=math.nextafter(high, math.inf))
        kept.extend(HoldGroup.of(hold) for hold in holds)
    return kept


def _merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for low, high in sorted(spans):
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """Money and counts of one group: spent/held in USD; requests = holds counted as spent
    (``Hold.counts_as_spent``: settled or expired, unless reconciliation adjusted it to 0; a
    released hold adjusted above 0), open = holds held or submitted."""

    spent: Decimal
    held: Decimal
    requests: int
    open: int


@dataclass(frozen=True)
class Group:
    """One row of a breakdown: ``key`` has one value per dimension (None: the tag is absent)."""

    key: tuple[str | None, ...]
    figures: Figures


@dataclass(frozen=True)
class Breakdown:
    by: tuple[str, ...]
    groups: tuple[Group, ...]


@dataclass(frozen=True)
class Totals:
    """Everything in the window: the figures plus how many holds expired and were released, and
    the overruns: ``overruns`` holds counted more as spent than was held (fal billed more than
    quoted), by ``overrun`` USD in all (included in ``figures.spent``)."""

    figures: Figures
    expired: int
    released: int
    overruns: int = 0
    overrun: Decimal = Decimal("0.00")


@dataclass(frozen=True)
class BurnRate:
    """``spent`` by holds created in (since, until], ``until`` being now; ``per_day`` is
    ``spent / days`` rounded to the micro-USD (forecasts use the exact quotient)."""

    days: int
    since: float
    until: float
    spent: Decimal
    per_day: Decimal


@dataclass(frozen=True)
class Forecast:
    """One cap for one scope value, in its window holding now, and where the burn rate takes it.

    ``scope`` is 'global' or 'TAG=VALUE'; ``bucket`` the ledger bucket of the window;
    ``window_end`` None for a total cap. ``reached_at`` (epoch s) is set for will_reach and
    not_in_window (then it is past ``window_end``), unless it falls after the year 9999;
    ``projected`` is spent + held at the window's end at this rate (None for a total cap).
    """

    cap: Cap
    scope: str
    bucket: str
    window_start: float | None
    window_end: float | None
    limit: Decimal
    spent: Decimal
    held: Decimal
    remaining: Decimal
    rate: BurnRate
    outcome: Outcome
    reached_at: float | None
    projected: Decimal | None


@dataclass(frozen=True)
class Day:
    """One calendar day of the report window, in the report's zone (clipped to the window)."""

    day: dt.date
    start: float
    end: float
    spent: Decimal
    held: Decimal


@dataclass(frozen=True)
class CapLine:
    """A cap drawn on the chart: its forecast and, for a week, month or total cap, the spend
    (spent + held) of its window by each day's end (None for a day that starts after now)."""

    forecast: Forecast
    cumulative: tuple[Decimal | None, ...] | None


@dataclass(frozen=True)
class Report:
    tz: str
    now: float
    since: float
    until: float
    scope: tuple[str, str] | None
    totals: Totals
    breakdowns: tuple[Breakdown, ...]
    burn: BurnRate
    forecasts: tuple[Forecast, ...]
    days: tuple[Day, ...]
    chart_caps: tuple[CapLine, ...]
    """The caps of the report's scope (global caps without a scope), in configuration order."""


# --- computation -------------------------------------------------------------------------------


def _spent(hold: HoldGroup) -> int:
    return hold.spent


def _held(hold: HoldGroup) -> int:
    return hold.held


def _tag(hold: HoldGroup, name: str) -> str | None:
    if name == "endpoint":
        return hold.endpoint
    return hold.tags.get(name)


class _Sum:
    __slots__ = ("held", "open", "requests", "spent")

    def __init__(self) -> None:
        self.spent = self.held = self.requests = self.open = 0

    def add(self, hold: HoldGroup) -> None:
        self.spent += hold.spent
        self.held += hold.held
        self.requests += hold.requests
        self.open += hold.open

    def figures(self) -> Figures:
        return Figures(from_micros(self.spent), from_micros(self.held), self.requests, self.open)


def _none_last(key: tuple[str | None, ...]) -> tuple[tuple[bool, str], ...]:
    return tuple((part is None, part or "") for part in key)


def _breakdown(holds: Sequence[HoldGroup], by: tuple[str, ...], tz: ZoneInfo) -> Breakdown:
    sums: dict[tuple[str | None, ...], _Sum] = {}
    for hold in holds:
        key = tuple(
            _local_day(hold.created_at, tz).isoformat() if dim == "day" else _tag(hold, dim)
            for dim in by
        )
        sums.setdefault(key, _Sum()).add(hold)
    items = list(sums.items())
    if "day" in by:
        items.sort(key=lambda item: _none_last(item[0]))
    else:
        items.sort(key=lambda item: (-item[1].spent, -item[1].held, _none_last(item[0])))
    return Breakdown(by, tuple(Group(key, s.figures()) for key, s in items))


def _burn(total: int, now: float, days: int) -> BurnRate:
    per_day = (Decimal(total) / days).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return BurnRate(
        days, now - days * DAY_SECONDS, now, from_micros(total), from_micros(int(per_day))
    )


def _rate(holds: Iterable[HoldGroup], now: float, days: int) -> BurnRate:
    """What holds created in (now - days x 24 h, now] spent."""
    since = now - days * DAY_SECONDS
    return _burn(sum(_spent(h) for h in holds if since < h.created_at <= now), now, days)


def _fixed_scope(cap: Cap) -> str | None:
    """'global' or 'TAG=VALUE' for a cap on one scope; None for a per-value cap."""
    if cap.tag is None:
        return "global"
    return None if cap.scope == cap.tag else cap.scope


def _cap_forecasts(cap: Cap, holds: Sequence[HoldGroup], now: float, days: int) -> list[Forecast]:
    """One pass over the holds: per scope value, what charged the window holding now and what
    was spent within the burn span. A per-value cap lists each value seen in either."""
    window = cap.window_key(now)
    burn_since = now - days * DAY_SECONDS
    fixed = _fixed_scope(cap)
    sums: dict[str, list[int]] = {} if fixed is None else {fixed: [0, 0, 0]}
    for hold in holds:
        scope = cap.scope_value(hold.tags)
        if scope is None or hold.created_at > now:
            continue
        in_window = f"{scope}|{window}" in hold.buckets
        in_burn = hold.created_at > burn_since
        if in_window or in_burn:
            figures = sums.setdefault(scope, [0, 0, 0])
            if in_window:
                figures[0] += _spent(hold)
                figures[1] += _held(hold)
            if in_burn:
                figures[2] += _spent(hold)
    return [
        _forecast(cap, scope, spent, held, rate_total, now, days)
        for scope, (spent, held, rate_total) in sorted(sums.items())
    ]


def _forecast(
    cap: Cap, scope: str, spent: int, held: int, rate_total: int, now: float, days: int
) -> Forecast:
    bucket = f"{scope}|{cap.window_key(now)}"
    rate = _burn(rate_total, now, days)
    start, end = window_bounds(cap, now)
    limit = cap.limit_micros
    remaining = limit - spent - held
    reached_at: float | None = None
    projected: Decimal | None = None
    if end is not None:
        extra = Decimal(rate_total) * (Decimal(end) - Decimal(now)) / (days * DAY_SECONDS)
        micros = int(extra.quantize(Decimal(1), rounding=ROUND_HALF_UP))
        projected = from_micros(spent + held + micros)
    outcome: Outcome
    if remaining <= 0:
        outcome = "reached"
    elif rate_total == 0:
        outcome = "never"
    else:
        # ceil(remaining / (rate_total / span)) seconds, in integers
        seconds = -(-remaining * days * DAY_SECONDS // rate_total)
        outcome = "not_in_window" if end is not None and now + seconds >= end else "will_reach"
        # past the calendar's end (a huge limit at a slow rate) there is no date to give
        reached_at = now + seconds if now + seconds <= LATEST else None
    return Forecast(
        cap=cap,
        scope=scope,
        bucket=bucket,
        window_start=start,
        window_end=end,
        limit=from_micros(limit),
        spent=from_micros(spent),
        held=from_micros(held),
        remaining=from_micros(max(0, remaining)),
        rate=rate,
        outcome=outcome,
        reached_at=reached_at,
        projected=projected,
    )


def _next_midnight(day: dt.date, tz: ZoneInfo, until: float) -> float:
    """The end of ``day`` (the next midnight), or ``until`` when that comes first."""
    if day == dt.date.max:
        return until
    return min(until, _midnight(day + dt.timedelta(days=1), tz))


def _days(holds: Sequence[HoldGroup], since: float, until: float, tz: ZoneInfo) -> list[Day]:
    """The daily series: every day of a window of up to DAILY_SPAN_DAYS days; of a longer
    window only the days that hold a hold, so that its cost follows the ledger's data and not
    the calendar (``--since 0001-01-01`` walks no empty millennia)."""
    first, last = _local_day(since, tz), _local_day(until, tz)
    if _midnight(last, tz) >= until:
        last -= dt.timedelta(days=1)
    if (last - first).days < DAILY_SPAN_DAYS:
        dates = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    else:
        dates = sorted(
            {_local_day(h.created_at, tz) for h in holds if since <= h.created_at < until}
        )
    starts = [max(since, _midnight(d, tz)) for d in dates]
    ends = [_next_midnight(d, tz, until) for d in dates]
    spent = [0] * len(dates)
    held = [0] * len(dates)
    for hold in holds:
        index = bisect.bisect_right(starts, hold.created_at) - 1
        if 0 <= index < len(dates) and hold.created_at < ends[index]:
            spent[index] += _spent(hold)
            held[index] += _held(hold)
    return [
        Day(d, s, e, from_micros(sp), from_micros(h))
        for d, s, e, sp, h in zip(dates, starts, ends, spent, held, strict=True)
    ]


def _cumulative(
    forecast: Forecast, holds: Sequence[HoldGroup], days: Sequence[Day], now: float
) -> tuple[Decimal | None, ...]:
    cap, scope = forecast.cap, forecast.scope
    keys = [f"{scope}|{cap.window_key(day.start)}" for day in days]
    wanted = set(keys)
    starts = [day.start for day in days]
    before: dict[str, int] = {}
    by_day: dict[tuple[str, int], int] = {}
    for hold in holds:
        if hold.created_at > now:
            continue
        used = _spent(hold) + _held(hold)
        for key in hold.buckets:
            if key not in wanted:
                continue
            index = bisect.bisect_right(starts, hold.created_at) - 1
            if index < 0:
                before[key] = before.get(key, 0) + used
            elif hold.created_at < days[index].end:
                by_day[key, index] = by_day.get((key, index), 0) + used
    # each day adds only what charged it: the walk follows the holds, not days x windows
    added: dict[int, list[tuple[str, int]]] = {}
    for (key, index), used in by_day.items():
        added.setdefault(index, []).append((key, used))
    running = dict(before)
    result: list[Decimal | None] = []
    for index, (key, day) in enumerate(zip(keys, days, strict=True)):
        for other, used in added.get(index, ()):
            running[other] = running.get(other, 0) + used
        result.append(None if day.start > now else from_micros(running.get(key, 0)))
    return tuple(result)


def build_report(
    holds: Sequence[Hold | HoldGroup],
    caps: Sequence[Cap],
    *,
    now: float,
    since: float | None = None,
    until: float | None = None,
    tz: str = "UTC",
    by: Sequence[tuple[str, ...]] = DEFAULT_BY,
    scope: tuple[str, str] | None = None,
    burn_days: int = BURN_DAYS,
) -> Report:
    """The report over ``holds`` for the window [since, until) (default: see
    :func:`default_window`), days in ``tz``; ``scope`` ('project', 'alpha') keeps only the holds
    so tagged, and the caps of that scope value. Breakdowns containing 'day' are in day order,
    the others by spent (then held) descending.

    ``holds`` may be ledger holds or groups of them (:func:`read_groups` sums them in the
    ledger): each group must lie within one day of ``tz`` and on one side of every boundary
    (since, until, now, the burn span's start), as :func:`read_groups` makes sure."""
    zone_ = zone(tz)
    if not 1 <= burn_days <= MAX_BURN_DAYS:
        raise ConfigurationError(
            f"burn_days={burn_days} is not allowed: from 1 to {MAX_BURN_DAYS} (ten years)"
        )
    since, until = default_window(now, tz, since=since, until=until)
    groups = [h if isinstance(h, HoldGroup) else HoldGroup.of(h) for h in holds]
    if scope is not None:
        groups = [h for h in groups if _tag(h, scope[0]) == scope[1]]
    in_window = [h for h in groups if since <= h.created_at < until]
    total = _Sum()
    expired = released = overruns = overrun = 0
    for group in in_window:
        total.add(group)
        expired += group.expired
        released += group.released
        overruns += group.overruns
        overrun += group.overrun
    burn = _rate(groups, now, burn_days)
    target = "global" if scope is None else f"{scope[0]}={scope[1]}"
    forecasts = [
        forecast
        for cap in caps
        if cap.tag not in VISITOR_TAGS  # summed over visitors: `budget status` lists them
        for forecast in _cap_forecasts(cap, groups, now, burn_days)
        if scope is None or forecast.scope == target
    ]
    days = _days(in_window, since, until, zone_)
    chart_caps = tuple(
        CapLine(f, None if f.cap.window == "day" else _cumulative(f, groups, days, now))
        for f in forecasts
        if f.scope == target
    )
    return Report(
        tz=tz,
        now=now,
        since=since,
        until=until,
        scope=scope,
        totals=Totals(total.figures(), expired, released, overruns, from_micros(overrun)),
        breakdowns=tuple(_breakdown(in_window, tuple(b), zone_) for b in by),
        burn=burn,
        forecasts=tuple(forecasts),
        days=tuple(days),
        chart_caps=chart_caps,
    )


# --- charts ------------------------------------------------------------------------------------

SPENT_CELL = "█"
HELD_CELL = "░"
CAP_MARK = "│"


def percent_used(used: Decimal, limit: Decimal) -> str:
    if limit == 0:
        return "100.0%" if used > 0 else "0.0%"
    return f"{(used * 100 / limit).quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}%"


def _cells(amount: Decimal, scale: Decimal, width: int) -> int:
    if amount <= 0 or scale <= 0:
        return 0
    return max(1, int((amount * width / scale).quantize(Decimal(1), rounding=ROUND_HALF_UP)))


CHART_CELLS = SPENT_CELL + HELD_CELL + CAP_MARK
ASCII_CELLS = ("#", ".", "|")
"""SPENT_CELL, HELD_CELL and CAP_MARK for a terminal whose encoding lacks them (cp1252)."""


def text_chart(report: Report, *, width: int = 40, ascii_only: bool = False) -> str:
    """Daily spend as one row per day: the day, spent, held, for each week/month/total cap of
    the report's scope the share of it used by the day's end, then a bar (█ spent, ░ held)
    scaled to the largest day or the tightest day cap, marked │ on the bar. ``ascii_only``
    draws with # . | instead."""
    spent_cell, held_cell, cap_mark = (
        ASCII_CELLS if ascii_only else (SPENT_CELL, HELD_CELL, CAP_MARK)
    )
    day_caps = [c.forecast for c in report.chart_caps if c.cumulative is None]
    window_caps = [c for c in report.chart_caps if c.cumulative is not None]
    day_cap = min(day_caps, key=lambda f: f.limit, default=None)
    peak = max((d.spent + d.held for d in report.days), default=Decimal(0))
    scale = max(peak, day_cap.limit if day_cap else Decimal(0))
    legend = f"daily spend in USD, days in {report.tz}: {spent_cell} spent  {held_cell} held"
    if day_cap is not None:
        legend += f"  {cap_mark} {day_cap.cap.label(day_cap.bucket)}"
    lines = [legend]
    lines.extend(
        f"{c.forecast.cap.window}: share of {c.forecast.cap.label(c.forecast.bucket)} used by the"
        " day's end (spent + held)"
        for c in window_caps
    )
    headers = ["day", "spent", "held", *(c.forecast.cap.window for c in window_caps)]
    rows: list[list[str]] = []
    bars: list[str] = []
    mark: int | None = None
    if day_cap is not None:
        ratio = day_cap.limit * width / scale if scale > 0 else Decimal(0)
        mark = int(ratio.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    for index, day in enumerate(report.days):
        shares = []
        for line in window_caps:
            used = line.cumulative[index] if line.cumulative is not None else None
            shares.append("" if used is None else percent_used(used, line.forecast.limit))
        rows.append([day.day.isoformat(), format_usd(day.spent), format_usd(day.held), *shares])
        spent_cells = _cells(day.spent, scale, width)
        total_cells = max(_cells(day.spent + day.held, scale, width), spent_cells)
        if day.held > 0 and total_cells == spent_cells:
            total_cells += 1
        bar = spent_cell * spent_cells + held_cell * (total_cells - spent_cells)
        if mark is not None:
            bar = bar.ljust(mark)
            bar = bar[:mark] + cap_mark + bar[mark:]
        bars.append(bar)
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines.append(_align(headers, widths).rstrip())
    lines.extend(
        f"{_align(row, widths)}  {bar}".rstrip() for row, bar in zip(rows, bars, strict=True)
    )
    return "\n".join(lines)


def _align(cells: Sequence[str], widths: Sequence[int]) -> str:
    """The first cell left-aligned, the others right-aligned, two spaces apart."""
    padded = [
        cell.ljust(width) if index == 0 else cell.rjust(width)
        for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
    ]
    return "  ".join(padded)


def _naive(epoch: float, tz: ZoneInfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, tz=tz).replace(tzinfo=None)


def chart_span(report: Report) -> tuple[float, float]:
    """The stretch of time the PNG shows (epoch s). It starts a day before the first day that
    holds spend (empty weeks before it would take the width), or at the window's start when
    that is later; it ends at the window's end or, when later, at the end of the current window
    of every week or month cap whose forecast line is drawn, so that the line stays within the
    picture."""
    start = report.since
    busy = [day.start for day in report.days if day.spent > 0 or day.held > 0]
    if busy:
        start = max(report.since, busy[0] - DAY_SECONDS)
    end = report.until
    if report.since <= report.now < report.until:
        for line in report.chart_caps:
            forecast = line.forecast
            if (
                line.cumulative is not None
                and forecast.window_end is not None
                and forecast.outcome in ("will_reach", "not_in_window")
            ):
                end = max(end, forecast.window_end)
    return start, end


def png_chart(report: Report, *, title: str | None = None) -> bytes:
    """The chart as PNG bytes (matplotlib's Figure, no pyplot state): daily spend bars (spent and
    held) with each day cap as a dashed line; below, for each week/month/total cap, its window's
    spend (spent + held) by each day's end against the limit, and the burn rate's projection
    from now. Raises PlotUnavailable without matplotlib."""
    try:
        import matplotlib  # first: a missing parent must fail even if a submodule is cached
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotUnavailable(
            f"a PNG chart needs matplotlib: {install_hint('plot')} ({exc})"
        ) from None
    del matplotlib
    tz = zone(report.tz)
    window_caps = [c for c in report.chart_caps if c.cumulative is not None]
    day_caps = [c.forecast for c in report.chart_caps if c.cumulative is None]
    fig = Figure(figsize=(10, 7.5 if window_caps else 4.5), dpi=100, layout="constrained")
    axes = fig.subplots(2 if window_caps else 1, 1, sharex=True, squeeze=False)[:, 0]
    span_start, span_end = chart_span(report)
    start, end, now = (_naive(t, tz) for t in (span_start, span_end, report.now))
    colors = ["#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]

    top = axes[0]
    centers = [
        _naive(d.start, tz) + (_naive(d.end, tz) - _naive(d.start, tz)) / 2 for d in report.days
    ]
    spent = [float(d.spent) for d in report.days]
    held = [float(d.held) for d in report.days]
    top.bar(centers, spent, width=0.8, color="#1f77b4", label="spent")
    if any(held):
        top.bar(centers, held, width=0.8, bottom=spent, color="#aec7e8", label="held")
    for index, forecast in enumerate(day_caps):
        top.axhline(
            float(forecast.limit),
            color=colors[index % len(colors)],
            linestyle="--",
            linewidth=1.5,
            label=forecast.cap.label(forecast.bucket),
        )
    peak = max(
        [*(s + h for s, h in zip(spent, held, strict=True)), *(float(f.limit) for f in day_caps)],
        default=0.0,
    )
    top.set_ylim(0, peak * 1.3 if peak > 0 else 1)
    scope = "" if report.scope is None else f", {report.scope[0]}={report.scope[1]}"
    if report.days:
        first, last = report.days[0].day, report.days[-1].day
    else:  # a long window with no holds in it (its daily series lists only days with holds)
        first, last = start.date(), (_naive(report.until - 1, tz)).date()
    top.set_title(
        title or f"Daily spend{scope}, {first} to {last} ({report.tz}), as of {now:%Y-%m-%d %H:%M}"
    )
    top.set_ylabel("USD per day")
    top.legend(loc="upper left", ncols=3)

    if window_caps:
        low = axes[1]
        top_value = 0.0
        for index, line in enumerate(window_caps):
            forecast = line.forecast
            color = colors[(index + len(day_caps)) % len(colors)]
            points = [
                (min(_naive(d.end, tz), now), float(v))
                for d, v in zip(report.days, line.cumulative or (), strict=True)
                if v is not None
            ]
            label = forecast.cap.label(forecast.bucket)
            low.plot(  # a step at each day's end: a window that resets drops, never slopes
                [x for x, _ in points],
                [y for _, y in points],
                drawstyle="steps-pre",
                marker="o",
                markersize=4,
                color=color,
                label=f"{label}: spent + held",
            )
            low.axhline(float(forecast.limit), color=color, linestyle="--", linewidth=1.5)
            top_value = max(top_value, float(forecast.limit), *(y for _, y in points))
            if start <= now < end and forecast.outcome in ("will_reach", "not_in_window"):
                stop = end
                for moment in (forecast.window_end, forecast.reached_at):
                    if moment is not None:
                        stop = min(stop, _naive(moment, tz))
                used = float(forecast.spent + forecast.held)
                per_second = float(forecast.rate.spent) / (forecast.rate.days * DAY_SECONDS)
                value = used + per_second * (stop - now).total_seconds()
                rate = forecast.rate.per_day.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
                low.plot(
                    [now, stop],
                    [used, value],
                    linestyle=":",
                    linewidth=2,
                    color=color,
                    label=f"at {rate}/day: {describe(forecast)}",
                )
        low.set_ylim(0, top_value * 1.3 if top_value > 0 else 1)
        low.set_ylabel("spent + held this window, USD")
        low.legend(loc="upper left")

    first_day, last_day = start.date(), (end - dt.timedelta(microseconds=1)).date()
    count = (last_day - first_day).days + 1
    step = max(1, -(-count // 12))
    ticks = [
        dt.datetime.combine(first_day + dt.timedelta(days=i), dt.time(0))
        for i in range(0, count, step)
    ]
    for ax in axes:
        ax.set_xlim(start, end)
        ax.grid(axis="y", alpha=0.3)
        if start <= now <= end:
            ax.axvline(now, color="grey", linestyle=":", linewidth=1)
        ax.set_xticks(ticks, labels=[f"{t:%b %d}" for t in ticks])
    axes[-1].set_xlabel(f"day ({report.tz}); dotted vertical line: now")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def local_time(epoch: float, tz: str) -> str:
    """'2026-11-28 14:22 CET': minutes, in ``tz``."""
    return dt.datetime.fromtimestamp(epoch, tz=zone(tz)).strftime("%Y-%m-%d %H:%M %Z")


def describe(forecast: Forecast) -> str:
    """The forecast in words: 'reached', 'reached 2026-11-28 14:22 CET at this rate', ..."""
    if forecast.outcome == "reached":
        return "reached"
    if forecast.outcome == "never":
        return "never at this rate (nothing spent lately)"
    if forecast.outcome == "will_reach" and forecast.reached_at is None:
        return "reached after the year 9999 at this rate"
    if forecast.outcome == "will_reach":
        assert forecast.reached_at is not None
        return f"reached {local_time(forecast.reached_at, forecast.cap.tz)} at this rate"
    assert forecast.window_end is not None and forecast.projected is not None
    projected = forecast.projected.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return (
        f"not reached before the window ends {local_time(forecast.window_end, forecast.cap.tz)}"
        f" ({projected} by then at this rate)"
    )
