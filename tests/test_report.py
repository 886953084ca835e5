"""Reports over the ledger (falbudget.report and `falbudget report`): expectations by hand.

MAGI-1 prices (docs/pricing.md): defaults = 0.80; 144 frames = 1.20; 144 frames at 480p =
0.60; 192 frames = 1.60. The ledger every test reads, built through a Guard with a fake clock
(times UTC; hold_ttl 3600 s; "now" is 2026-11-23 18:00 UTC, a Monday):

    #  created            user  project  request         what happened           counts as
    1  11-20 10:00        ann   alpha    default  0.80   settled                 spent 0.80
    2  11-20 15:00        bob   alpha    144      1.20   settled at 1.00         spent 1.00
    3  11-21 09:00        ann   beta     144@480p 0.60   settled                 spent 0.60
    4  11-21 23:30        cy    beta     default  0.80   released                nothing
    5  11-22 08:00        ann   alpha    192      1.60   submitted, then expired spent 1.60
    6  11-22 23:30        cy    -        default  0.80   settled (expires #5)    spent 0.80
    7  11-23 17:00        bob   alpha    144      1.20   held                    held 1.20
    8  11-23 17:30        ann   beta     default  0.80   submitted               held 0.80

Caps: global day 5.00, global month 10.00, each project 10.00 (total), project gamma 5.00
(total, never used), user bob 1.20 a week (his hold #7 fills it exactly). The project caps let
a request without a project past them (untagged: skip), as #6 is.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import runpy
import shlex
import subprocess
import sys
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from falbudget import Cap, ConfigurationError, Guard
from falbudget.cli import main
from falbudget.ledger import open_ledger
from falbudget.ledger.base import Hold
from falbudget.report import (
    DEFAULT_BY,
    PlotUnavailable,
    Report,
    build_report,
    chart_span,
    default_window,
    history_start,
    parse_by,
    parse_scope,
    png_chart,
    text_chart,
)

MAGI = "fal-ai/magi/image-to-video"
REQ = {"prompt": "a cat", "image_url": "https://example.invalid/cat.png"}
DOCS = Path(__file__).resolve().parent.parent / "docs" / "reports.md"

CAPS_YAML = """\
caps:
  - {limit: "5.00", window: day}
  - {limit: "10.00", window: month}
  - {limit: "10.00", scope: project, untagged: skip}
  - {limit: "5.00", scope: "project=gamma", untagged: skip}
  - {limit: "1.20", scope: "user=bob", window: week}
"""


def caps() -> list[Cap]:
    return [
        Cap("5.00", window="day"),
        Cap("10.00", window="month"),
        Cap("10.00", scope="project", untagged="skip"),
        Cap("5.00", scope="project=gamma", untagged="skip"),
        Cap("1.20", scope="user=bob", window="week"),
    ]


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def utc(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()


NOW = utc(2026, 11, 23, 18, 0)


def fill(guard: Guard, clock: Clock) -> None:
    """The eight holds of the module docstring."""

    def at(*args: int) -> None:
        clock.now = utc(2026, 11, *args)

    at(20, 10)
    with guard.reserve(MAGI, REQ, user="ann", project="alpha"):
        pass
    at(20, 15)
    with guard.reserve(MAGI, {**REQ, "num_frames": 144}, user="bob", project="alpha") as hold:
        hold.settle("1.00")
    at(21, 9)
    with guard.reserve(
        MAGI, {**REQ, "num_frames": 144, "resolution": "480p"}, user="ann", project="beta"
    ):
        pass
    at(21, 23, 30)
    guard.reserve(MAGI, REQ, user="cy", project="beta").acquire().release()
    at(22, 8)
    lost = guard.reserve(MAGI, {**REQ, "num_frames": 192}, user="ann", project="alpha")
    lost.acquire().mark_submitted("req-lost")  # then the process dies
    at(22, 23, 30)
    with guard.reserve(MAGI, REQ, user="cy"):  # this reservation expires #5 first
        pass
    at(23, 17)
    guard.reserve(MAGI, {**REQ, "num_frames": 144}, user="bob", project="alpha").acquire()
    at(23, 17, 30)
    guard.reserve(MAGI, REQ, user="ann", project="beta").acquire().mark_submitted("req-8")
    clock.now = NOW


@pytest.fixture(params=["memory", "sqlite"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    return f"sqlite:///{tmp_path / 'spend.db'}"


@pytest.fixture
def guard(ledger_url: str) -> Guard:
    clock = Clock(NOW)
    guard = Guard(open_ledger(ledger_url), caps(), clock=clock, hold_ttl=3600)
    fill(guard, clock)
    return guard


@pytest.fixture
def holds(guard: Guard) -> list[Hold]:
    return guard.ledger.holds()


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FALBUDGET_CONFIG", "FALBUDGET_LEDGER", "FALBUDGET_PRICING"):
        monkeypatch.delenv(name, raising=False)


def report(holds: list[Hold], **kw: Any) -> Report:
    kw.setdefault("now", NOW)
    return build_report(holds, caps(), **kw)


def rows(result: Report, index: int) -> list[tuple[Any, ...]]:
    """A breakdown as (key..., spent, held, requests, open) with money as strings."""
    return [
        (*g.key, str(g.figures.spent), str(g.figures.held), g.figures.requests, g.figures.open)
        for g in result.breakdowns[index].groups
    ]


# --- the computations ----------------------------------------------------------------------------


def test_the_ledger_is_as_the_docstring_says(holds: list[Hold]) -> None:
    states = sorted((h.created_at, h.state, h.amount, h.settled_amount) for h in holds)
    assert [s[1:] for s in states] == [
        ("settled", 800_000, 800_000),
        ("settled", 1_200_000, 1_000_000),
        ("settled", 600_000, 600_000),
        ("released", 800_000, None),
        ("expired", 1_600_000, 1_600_000),
        ("settled", 800_000, 800_000),
        ("held", 1_200_000, None),
        ("submitted", 800_000, None),
    ]


def test_spend_by_endpoint_project_user_and_day(holds: list[Hold]) -> None:
    result = report(holds)
    assert result.since == utc(2026, 10, 25)  # 30 days up to the end of today
    assert result.until == utc(2026, 11, 24)
    totals = result.totals
    assert (totals.figures.spent, totals.figures.held) == (Decimal("4.80"), Decimal("2.00"))
    assert (totals.figures.requests, totals.figures.open) == (5, 2)
    assert (totals.expired, totals.released) == (1, 1)
    assert [b.by for b in result.breakdowns] == list(DEFAULT_BY)
    assert rows(result, 0) == [(MAGI, "4.80", "2.00", 5, 2)]
    # by spent, descending; the untagged request (cy's #6) is a group of its own
    assert rows(result, 1) == [
        ("alpha", "3.40", "1.20", 3, 1),
        (None, "0.80", "0.00", 1, 0),
        ("beta", "0.60", "0.80", 1, 1),
    ]
    assert rows(result, 2) == [
        ("ann", "3.00", "0.80", 3, 1),
        ("bob", "1.00", "1.20", 1, 1),
        ("cy", "0.80", "0.00", 1, 0),
    ]
    # days in order; only days with holds
    assert rows(result, 3) == [
        ("2026-11-20", "1.80", "0.00", 2, 0),
        ("2026-11-21", "0.60", "0.00", 1, 0),
        ("2026-11-22", "2.40", "0.00", 2, 0),
        ("2026-11-23", "0.00", "2.00", 0, 2),
    ]
    # the daily series has every day of the window, zeros included
    assert len(result.days) == 30
    assert result.days[0].day == dt.date(2026, 10, 25)
    assert [(d.spent, d.held) for d in result.days[-4:]] == [
        (Decimal("1.80"), Decimal("0.00")),
        (Decimal("0.60"), Decimal("0.00")),
        (Decimal("2.40"), Decimal("0.00")),
        (Decimal("0.00"), Decimal("2.00")),
    ]


def test_days_follow_the_time_zone(holds: list[Hold]) -> None:
    """Paris is UTC+1 in November: #4 (released) and #6 (cy, 23:30 UTC) move a day later."""
    result = report(holds, tz="Europe/Paris", by=[("day",), ("project", "day")])
    assert (
        result.until
        == dt.datetime(2026, 11, 24, tzinfo=dt.timezone(dt.timedelta(hours=1))).timestamp()
    )
    assert rows(result, 0) == [
        ("2026-11-20", "1.80", "0.00", 2, 0),
        ("2026-11-21", "0.60", "0.00", 1, 0),
        ("2026-11-22", "1.60", "0.00", 1, 0),
        ("2026-11-23", "0.80", "2.00", 1, 2),
    ]
    # a combined breakdown: one group per (project, day) seen, in key order (untagged last)
    assert rows(result, 1) == [
        ("alpha", "2026-11-20", "1.80", "0.00", 2, 0),
        ("alpha", "2026-11-22", "1.60", "0.00", 1, 0),
        ("alpha", "2026-11-23", "0.00", "1.20", 0, 1),
        ("beta", "2026-11-21", "0.60", "0.00", 1, 0),
        ("beta", "2026-11-22", "0.00", "0.00", 0, 0),  # #4, released: counted for nothing
        ("beta", "2026-11-23", "0.00", "0.80", 0, 1),
        (None, "2026-11-23", "0.80", "0.00", 1, 0),
    ]


def test_window_since_until(holds: list[Hold]) -> None:
    result = report(holds, since=utc(2026, 11, 21), until=utc(2026, 11, 22, 12), by=[("user",)])
    # #3 (ann, 0.60), #4 (cy, released), #5 (ann, expired 1.60)
    assert rows(result, 0) == [("ann", "2.20", "0.00", 2, 0), ("cy", "0.00", "0.00", 0, 0)]
    assert [(d.day.isoformat(), str(d.spent)) for d in result.days] == [
        ("2026-11-21", "0.60"),
        ("2026-11-22", "1.60"),
    ]
    assert result.days[-1].end == utc(2026, 11, 22, 12)  # clipped to the window
    with pytest.raises(ConfigurationError, match="--since must be before --until"):
        report(holds, since=utc(2026, 11, 22), until=utc(2026, 11, 22))


def test_burn_rate(holds: list[Hold]) -> None:
    result = report(holds)
    # everything spent is within the 7 days to now: 4.80 / 7 = 0.6857142... -> 0.685714
    assert (result.burn.days, result.burn.spent, result.burn.per_day) == (
        7,
        Decimal("4.80"),
        Decimal("0.685714"),
    )
    assert (result.burn.since, result.burn.until) == (NOW - 7 * 86400, NOW)
    # one day: (11-22 18:00, 11-23 18:00] holds only #6 (0.80); #7 and #8 are not spent yet
    one = report(holds, burn_days=1)
    assert (one.burn.spent, one.burn.per_day) == (Decimal("0.80"), Decimal("0.80"))
    # 2 days: #5 (11-22 08:00) and #6: 2.40 / 2
    assert report(holds, burn_days=2).burn.per_day == Decimal("1.20")


def forecast_rows(result: Report) -> list[tuple[Any, ...]]:
    return [
        (
            f.cap.label(f.bucket),
            f.bucket,
            str(f.spent),
            str(f.held),
            str(f.remaining),
            str(f.rate.per_day),
            f.outcome,
            None
            if f.reached_at is None
            else dt.datetime.fromtimestamp(f.reached_at, dt.UTC).isoformat(),
            None if f.projected is None else str(f.projected),
        )
        for f in result.forecasts
    ]


def test_forecasts_by_hand(holds: list[Hold]) -> None:
    """seconds to the limit = ceil(remaining x 7 x 86400 / spent in the 7 days)."""
    assert forecast_rows(report(holds)) == [
        # day: 2.00 held, 3.00 left; 3.00 x 604800 / 4.80 = 378000 s = 4 d 9 h, after midnight.
        # By the window's end (6 h): 2.00 + 4.80 x 21600 / 604800 = 2.00 + 0.171429
        (
            "global day cap 5.00",
            "global|day@UTC:2026-11-23",
            "0.00",
            "2.00",
            "3.00",
            "0.685714",
            "not_in_window",
            "2026-11-28T03:00:00+00:00",
            "2.171429",
        ),
        # month: 4.80 + 2.00 used, 3.20 left; 3.20 x 604800 / 4.80 = 403200 s = 4 d 16 h.
        # By 12-01 00:00 (7 d 6 h): 6.80 + 4.80 x 626400 / 604800 = 6.80 + 4.971429
        (
            "global month cap 10.00",
            "global|month@UTC:2026-11",
            "4.80",
            "2.00",
            "3.20",
            "0.685714",
            "will_reach",
            "2026-11-28T10:00:00+00:00",
            "11.771429",
        ),
        # alpha: 3.40 + 1.20 used, 5.40 left at 3.40 a week: ceil(5.4 x 604800 / 3.4) =
        # ceil(960564.70...) = 960565 s = 11 d 2 h 49 min 25 s
        (
            "project=alpha total cap 10.00",
            "project=alpha|total",
            "3.40",
            "1.20",
            "5.40",
            "0.485714",
            "will_reach",
            "2026-12-04T20:49:25+00:00",
            None,
        ),
        # beta: 0.60 + 0.80 used, 8.60 left at 0.60 a week: 8.6 x 604800 / 0.6 = 8668800 s =
        # 100 d 8 h: 2026-11-23 18:00 + 100 d = 2027-03-03 18:00, + 8 h
        (
            "project=beta total cap 10.00",
            "project=beta|total",
            "0.60",
            "0.80",
            "8.60",
            "0.085714",
            "will_reach",
            "2027-03-04T02:00:00+00:00",
            None,
        ),
        # gamma: nothing spent, no rate
        (
            "project=gamma total cap 5.00",
            "project=gamma|total",
            "0.00",
            "0.00",
            "5.00",
            "0.00",
            "never",
            None,
            None,
        ),
        # bob's week (from Monday 11-23): #7 holds all 1.20. By 11-30 00:00 (6 d 6 h) at bob's
        # 1.00 a week: 1.20 + 1.00 x 540000 / 604800 = 1.20 + 0.892857
        (
            "user=bob week cap 1.20",
            "user=bob|week@UTC:2026-11-23",
            "0.00",
            "1.20",
            "0.00",
            "0.142857",
            "reached",
            None,
            "2.092857",
        ),
    ]


def test_forecast_figures_match_the_guard(guard: Guard, holds: list[Hold]) -> None:
    """A cap's spent and held are the guard's own (the holds that charged its bucket)."""
    status = {(s.cap, s.bucket): (s.spent, s.held) for s in guard.status()}
    forecasts = {(f.cap, f.bucket): (f.spent, f.held) for f in report(holds).forecasts}
    assert forecasts == status


def test_adjusted_holds_count_at_their_adjusted_amount(guard: Guard) -> None:
    """Reconciliation adjusted #5 (the lost 1.60, which fal never billed) to 0 and #4 (cy's
    released 0.80, which fal billed 0.50 after all) to 0.50: the report counts what the holds
    count now, as the guard's buckets do."""
    by_state = {h.state: h for h in guard.ledger.holds()}
    lost, released = by_state["expired"], by_state["released"]
    assert guard.ledger.adjust(lost.id, 0, now=NOW, reason="not billed", source="t") is not None
    assert guard.ledger.adjust(released.id, 500_000, now=NOW, reason="billed", source="t")
    result = report(guard.ledger.holds())
    totals = result.totals
    # 4.80 - 1.60 + 0.50 = 3.70; #4 is a request now and no longer a released one, #5 (fal
    # billed nothing) no longer one: #1 #2 #3 #4 #6
    assert (totals.figures.spent, totals.figures.held) == (Decimal("3.70"), Decimal("2.00"))
    assert (totals.figures.requests, totals.figures.open) == (5, 2)
    assert (totals.expired, totals.released) == (1, 0)
    # alpha 3.40 - 1.60 = 1.80 (#1 #2); beta 0.60 + 0.50 = 1.10 (#3 #4); untagged #6 0.80
    assert rows(result, 1) == [
        ("alpha", "1.80", "1.20", 2, 1),
        ("beta", "1.10", "0.80", 2, 1),
        (None, "0.80", "0.00", 1, 0),
    ]
    # ann 3.00 - 1.60 = 1.40 (#1 #3); cy 0.80 + 0.50 = 1.30 (#4 #6); bob 1.00 (#2)
    assert rows(result, 2) == [
        ("ann", "1.40", "0.80", 2, 1),
        ("cy", "1.30", "0.00", 2, 0),
        ("bob", "1.00", "1.20", 1, 1),
    ]
    status = {(s.cap, s.bucket): (s.spent, s.held) for s in guard.status()}
    assert {(f.cap, f.bucket): (f.spent, f.held) for f in result.forecasts} == status
    assert status[caps()[1], "global|month@UTC:2026-11"] == (Decimal("3.70"), Decimal("2.00"))
    # a later record shows fal billed #4 nothing after all: released again, not a request
    assert guard.ledger.adjust(released.id, 0, now=NOW, reason="not billed", source="t")
    again = report(guard.ledger.holds()).totals
    # 3.70 - 0.50 = 3.20; #1 #2 #3 #6
    assert (again.figures.spent, again.figures.requests) == (Decimal("3.20"), 4)
    assert (again.expired, again.released) == (1, 1)


def test_a_window_cap_ends_and_a_total_cap_goes_on(holds: list[Hold]) -> None:
    """After the month rolls over, November's spend no longer counts against the month cap."""
    later = utc(2026, 12, 2, 12)
    result = report(holds, now=later)
    month = next(f for f in result.forecasts if f.cap.window == "month")
    assert (month.bucket, month.spent, month.held, month.outcome) == (
        "global|month@UTC:2026-12",
        Decimal("0.00"),
        Decimal("0.00"),
        "never",  # nothing spent in the 7 days to 12-02 12:00 (11-25 12:00 onwards)
    )
    alpha = next(f for f in result.forecasts if f.scope == "project=alpha")
    assert (alpha.spent, alpha.held) == (Decimal("3.40"), Decimal("1.20"))


def test_scope_keeps_its_holds_and_its_caps(holds: list[Hold]) -> None:
    result = report(holds, scope=("project", "alpha"), by=[("user",)])
    assert rows(result, 0) == [("ann", "2.40", "0.00", 2, 0), ("bob", "1.00", "1.20", 1, 1)]
    assert result.burn.per_day == Decimal("0.485714")  # 3.40 / 7
    assert [f.scope for f in result.forecasts] == ["project=alpha"]
    (line,) = result.chart_caps
    assert line.forecast.scope == "project=alpha"
    # a total cap: the running spent + held by each day's end (before 11-20: nothing)
    assert line.cumulative is not None
    assert [None if v is None else str(v) for v in line.cumulative[-4:]] == [
        "1.80",
        "1.80",
        "3.40",
        "4.60",
    ]


def test_dimensions_and_tags(holds: list[Hold]) -> None:
    assert parse_by("project,day") == ("project", "day")
    assert parse_by("tag:team") == ("team",)
    result = report(holds, by=[parse_by("tag:user,endpoint")])
    assert rows(result, 0)[0] == ("ann", MAGI, "3.00", "0.80", 3, 1)
    for bad in ("", "projects", "day,day", "tag:", "tag:day", "tag:spent", "tag:a-b"):
        with pytest.raises(ConfigurationError, match="--by"):
            parse_by(bad)


def test_visitor_tags_are_summed_over_and_their_caps_left_to_budget_status(
    holds: list[Hold],
) -> None:
    """The proxy's ``ip`` tag has a value per caller: reports sum over it (the ledger's groups
    leave it out, so a report stays small with thousands of addresses), so a breakdown or scope
    by it is refused with the commands that show it, and a cap per address is not forecast (it
    would read as nothing spent). The ``key`` tag of virtual keys is reported as any tag."""
    for bad in ("tag:ip", "project,tag:ip"):
        with pytest.raises(ConfigurationError) as info:
            parse_by(bad)
        assert "'ip' has a value per visitor (the client's address)" in str(info.value)
        assert "falbudget budget status" in str(info.value)
    parse_by("project,tag:key")  # allowed: no error
    with pytest.raises(ConfigurationError, match=r"--scope 'ip=10.0.0.1' is not allowed"):
        parse_scope("ip=10.0.0.1")
    tagged = [replace(h, tags={**h.tags, "ip": f"10.0.0.{n}"}) for n, h in enumerate(holds)]
    with_visitor_caps = [*caps(), Cap("1.00", scope="ip"), Cap("1.00", scope="ip=10.0.0.1")]
    plain = build_report(holds, caps(), now=NOW)
    summed = build_report(tagged, with_visitor_caps, now=NOW)
    assert summed == replace(plain, forecasts=summed.forecasts, chart_caps=summed.chart_caps)
    assert [f.scope for f in summed.forecasts] == [f.scope for f in plain.forecasts]


def test_history_start() -> None:
    since = utc(2026, 11, 10)
    # a month cap: its windows holding now (11-01) and since (11-01)
    assert history_start([Cap("1", window="month")], now=NOW, since=since) == utc(2026, 11, 1)
    # no caps: the window or the burn span, whichever starts first
    assert history_start([], now=NOW, since=since) == since
    assert history_start([], now=NOW, since=utc(2026, 11, 20)) == NOW - 7 * 86400
    # a total cap needs every hold
    assert history_start([Cap("1")], now=NOW, since=since) is None


def test_default_window() -> None:
    assert default_window(NOW, "UTC") == (utc(2026, 10, 25), utc(2026, 11, 24))
    # until mid-day: the 30 calendar days end with that day (10-12 to 11-10)
    assert default_window(NOW, "UTC", until=utc(2026, 11, 10, 6)) == (
        utc(2026, 10, 12),
        utc(2026, 11, 10, 6),
    )
    with pytest.raises(ConfigurationError, match="tz='Mars/Base'"):
        default_window(NOW, "Mars/Base")


# --- the text chart ------------------------------------------------------------------------------


def test_text_chart_exact(holds: list[Hold]) -> None:
    """Scale: the day cap 5.00 (above the biggest day, 2.40) is 40 cells, 8 cells a dollar:
    1.80 -> 14.4 -> 14 cells, 0.60 -> 4.8 -> 5, 2.40 -> 19.2 -> 19, 2.00 held -> 16; the
    cap's mark after cell 40. Month: spent + held by each day's end of 10.00: 1.80, 2.40,
    4.80, 6.80 (the 23rd up to now, its open holds included)."""
    result = report(holds, since=utc(2026, 11, 20), until=utc(2026, 11, 24))
    assert text_chart(result) == "\n".join(
        [
            "daily spend in USD, days in UTC: █ spent  ░ held  │ global day cap 5.00",
            "month: share of global month cap 10.00 used by the day's end (spent + held)",
            "day         spent  held  month",
            "2026-11-20   1.80  0.00  18.0%  " + "█" * 14 + " " * 26 + "│",
            "2026-11-21   0.60  0.00  24.0%  " + "█" * 5 + " " * 35 + "│",
            "2026-11-22   2.40  0.00  48.0%  " + "█" * 19 + " " * 21 + "│",
            "2026-11-23   0.00  2.00  68.0%  " + "░" * 16 + " " * 24 + "│",
        ]
    )


def test_text_chart_without_caps_scales_to_the_biggest_day(holds: list[Hold]) -> None:
    """No cap: 2.40 is the 10 cells; a small held amount still shows one cell; a day with
    nothing has no bar; a future day has no share."""
    result = build_report(holds, [], now=NOW, since=utc(2026, 11, 22), until=utc(2026, 11, 25))
    assert text_chart(result, width=10) == "\n".join(
        [
            "daily spend in USD, days in UTC: █ spent  ░ held",
            "day         spent  held",
            "2026-11-22   2.40  0.00  " + "█" * 10,
            "2026-11-23   0.00  2.00  " + "░" * 8,
            "2026-11-24   0.00  0.00",
        ]
    )


def test_text_chart_over_the_cap() -> None:
    """A day over its cap: the bar passes the mark (scale = the biggest day)."""
    clock = Clock(utc(2026, 11, 23, 9))
    guard = Guard("memory://", [Cap("1.60", window="day")], clock=clock)
    with guard.reserve(MAGI, {**REQ, "num_frames": 144}) as hold:
        hold.settle("2.00")  # fal billed more than the quote: over the cap after the fact
    result = build_report(
        guard.ledger.holds(), guard.caps, now=NOW, since=utc(2026, 11, 23), until=utc(2026, 11, 24)
    )
    # 2.00 is 10 cells; 1.60 -> 8
    assert text_chart(result, width=10).splitlines()[-1] == "2026-11-23   2.00  0.00  ████████│██"


# --- the PNG -------------------------------------------------------------------------------------


def test_png_chart(holds: list[Hold]) -> None:
    pytest.importorskip("matplotlib")
    data = png_chart(report(holds))
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000


def test_the_chart_spans_the_spend_and_the_current_windows(holds: list[Hold]) -> None:
    """The window is 10-25 to 11-24 but the first spend is on 11-20: the chart starts a day
    before (11-19), not with weeks of empty days; the month cap (10.00, reached 11-28 10:00 at
    this rate) is forecast within its window, which ends 12-01: the chart runs to 12-01."""
    assert chart_span(report(holds)) == (utc(2026, 11, 19), utc(2026, 12, 1))
    # without caps nothing is forecast: the chart ends with the window
    plain = build_report(holds, [], now=NOW)
    assert chart_span(plain) == (utc(2026, 11, 19), utc(2026, 11, 24))


def test_the_png_draws_steps_and_the_forecast_to_where_it_lands(
    holds: list[Hold], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the PNG draws, read from matplotlib's calls: the window's spend as steps (a
    window that resets drops at a day's end, never a diagonal), the forecast line from now to
    the moment the month cap is reached (11-28 10:00, past the report's 11-24), the x axis
    over chart_span."""
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    plots: list[tuple[list[Any], dict[str, Any]]] = []
    limits: list[tuple[Any, ...]] = []
    original_plot, original_xlim = Axes.plot, Axes.set_xlim

    def plot(self: Axes, *args: Any, **kwargs: Any) -> Any:
        plots.append((list(args), kwargs))
        return original_plot(self, *args, **kwargs)

    def set_xlim(self: Axes, *args: Any, **kwargs: Any) -> Any:
        limits.append(args)
        return original_xlim(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", plot)
    monkeypatch.setattr(Axes, "set_xlim", set_xlim)
    png_chart(report(holds))
    spend = [k for _, k in plots if str(k.get("label", "")).endswith("spent + held")]
    assert spend and all(k["drawstyle"] == "steps-pre" for k in spend)
    month = [a for a, k in plots if str(k.get("label", "")).startswith("at 0.69/day: reached")]
    assert [a[0] for a in month] == [[dt.datetime(2026, 11, 23, 18), dt.datetime(2026, 11, 28, 10)]]
    ours = [limit for limit in limits if isinstance(limit[0], dt.datetime)]  # not autoscale's
    assert ours and all(
        limit == (dt.datetime(2026, 11, 19), dt.datetime(2026, 12, 1)) for limit in ours
    ), limits


def test_png_chart_without_matplotlib(holds: list[Hold], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(
        PlotUnavailable,
        match=r"pip install 'falbudget\[plot\]' "
        r"\(from a clone of falbudget: pip install '\.\[plot\]'\)",
    ):
        png_chart(report(holds))


# --- the command line ----------------------------------------------------------------------------


@pytest.fixture
def cli_ledger(tmp_path: Path) -> tuple[str, str]:
    """A SQLite ledger with the eight holds, and a configuration file with the five caps."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    clock = Clock(NOW)
    guard = Guard(url, caps(), clock=clock, hold_ttl=3600)
    fill(guard, clock)
    guard.close()
    config = tmp_path / "falbudget.yaml"
    config.write_text(CAPS_YAML, encoding="utf-8")
    return url, str(config)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def report_cli(capsys: pytest.CaptureFixture[str], cli_ledger: tuple[str, str], *argv: str) -> str:
    url, config = cli_ledger
    code, out, err = run(
        capsys,
        "report",
        "--ledger",
        url,
        "--config",
        config,
        "--now",
        "2026-11-23T18:00+00:00",
        *argv,
    )
    assert (code, err) == (0, ""), err
    return out


def test_cli_json(capsys: pytest.CaptureFixture[str], cli_ledger: tuple[str, str]) -> None:
    out = report_cli(capsys, cli_ledger, "--format", "json", "--by", "project", "--by", "day")
    assert out.count("\n") == 1
    data = json.loads(out)
    assert {k: data[k] for k in ("currency", "tz", "now", "since", "until", "scope")} == {
        "currency": "USD",
        "tz": "UTC",
        "now": "2026-11-23T18:00:00+00:00",
        "since": "2026-10-25T00:00:00+00:00",
        "until": "2026-11-24T00:00:00+00:00",
        "scope": None,
    }
    assert data["totals"] == {
        "spent": "4.80",
        "held": "2.00",
        "requests": 5,
        "open": 2,
        "expired": 1,
        "released": 1,
        "overruns": 0,
        "overrun": "0.00",
    }
    assert data["breakdowns"][0] == {
        "by": ["project"],
        "rows": [
            {"project": "alpha", "spent": "3.40", "held": "1.20", "requests": 3, "open": 1},
            {"project": None, "spent": "0.80", "held": "0.00", "requests": 1, "open": 0},
            {"project": "beta", "spent": "0.60", "held": "0.80", "requests": 1, "open": 1},
        ],
    }
    assert [r["day"] for r in data["breakdowns"][1]["rows"]] == [
        "2026-11-20",
        "2026-11-21",
        "2026-11-22",
        "2026-11-23",
    ]
    assert data["burn_rate"] == {
        "days": 7,
        "since": "2026-11-16T18:00:00+00:00",
        "until": "2026-11-23T18:00:00+00:00",
        "spent": "4.80",
        "per_day": "0.685714",
    }
    month = data["caps"][1]
    assert month == {
        "cap": "global month cap 10.00",
        "scope": "global",
        "window": "month",
        "window_key": "month@UTC:2026-11",
        "tz": "UTC",
        "window_start": "2026-11-01T00:00:00+00:00",
        "window_end": "2026-12-01T00:00:00+00:00",
        "limit": "10.00",
        "spent": "4.80",
        "held": "2.00",
        "remaining": "3.20",
        "used": "68.0%",
        "per_day": "0.685714",
        "outcome": "will_reach",
        "reached_at": "2026-11-28T10:00:00+00:00",
        "projected": "11.771429",
        "forecast": "reached 2026-11-28 10:00 UTC at this rate",
    }
    assert [(c["cap"], c["outcome"]) for c in data["caps"]] == [
        ("global day cap 5.00", "not_in_window"),
        ("global month cap 10.00", "will_reach"),
        ("project=alpha total cap 10.00", "will_reach"),
        ("project=beta total cap 10.00", "will_reach"),
        ("project=gamma total cap 5.00", "never"),
        ("user=bob week cap 1.20", "reached"),
    ]
    assert data["caps"][0]["forecast"] == (  # the sentence to the cent; "projected" exact
        "not reached before the window ends 2026-11-24 00:00 UTC (2.17 by then at this rate)"
    )
    assert len(data["daily"]) == 30
    assert data["daily"][-1] == {"day": "2026-11-23", "spent": "0.00", "held": "2.00"}


def test_cli_csv_is_tidy(capsys: pytest.CaptureFixture[str], cli_ledger: tuple[str, str]) -> None:
    out = report_cli(capsys, cli_ledger, "--format", "csv", "--by", "project", "--by", "user,day")
    assert list(csv.reader(io.StringIO(out))) == [
        ["by", "project", "user", "day", "spent", "held", "requests", "open"],
        ["project", "alpha", "", "", "3.40", "1.20", "3", "1"],
        ["project", "", "", "", "0.80", "0.00", "1", "0"],
        ["project", "beta", "", "", "0.60", "0.80", "1", "1"],
        ["user+day", "", "ann", "2026-11-20", "0.80", "0.00", "1", "0"],
        ["user+day", "", "ann", "2026-11-21", "0.60", "0.00", "1", "0"],
        ["user+day", "", "ann", "2026-11-22", "1.60", "0.00", "1", "0"],
        ["user+day", "", "ann", "2026-11-23", "0.00", "0.80", "0", "1"],
        ["user+day", "", "bob", "2026-11-20", "1.00", "0.00", "1", "0"],
        ["user+day", "", "bob", "2026-11-23", "0.00", "1.20", "0", "1"],
        ["user+day", "", "cy", "2026-11-21", "0.00", "0.00", "0", "0"],
        ["user+day", "", "cy", "2026-11-22", "0.80", "0.00", "1", "0"],
    ]


def test_cli_table_and_chart(
    capsys: pytest.CaptureFixture[str], cli_ledger: tuple[str, str], holds: list[Hold]
) -> None:
    out = report_cli(
        capsys,
        cli_ledger,
        "--by",
        "user",
        "--since",
        "2026-11-20",
        "--until",
        "2026-11-24",
        "--chart",
    )
    lines = out.splitlines()
    assert lines[:2] == [
        "spend from 2026-11-20 00:00 to 2026-11-24 00:00 (UTC), as of 2026-11-23 18:00",
        "spent 4.80 USD, held 2.00; 5 requests (1 expired), 2 open, 1 released",
    ]
    assert lines[3] == "by user"
    assert re.match(r"ann +3\.00 +0\.80 +3 +1$", lines[6])
    # money to the cent in tables: 4.80 / 7 = 0.685714... a day
    assert "burn rate: 0.69 USD/day (4.80 spent in the 7 days to 2026-11-23 18:00)" in lines
    caps_at = lines.index("caps")
    assert re.match(
        r"cap +window +limit +spent +held +remaining +used +per day$", lines[caps_at + 1]
    )
    # the day cap: 5.00, #7 and #8 held (2.00) on 11-23; the window in plain words
    assert re.match(
        r"global day +2026-11-23 +5\.00 +0\.00 +2\.00 +3\.00 +40\.0% +0\.69$", lines[caps_at + 3]
    )
    assert re.match(r"user=bob week +week of 2026-11-23 +1\.20 ", lines[caps_at + 8])
    assert re.match(r"project=gamma total +all time +5\.00 ", lines[caps_at + 7])
    forecasts_at = lines.index("forecasts at the burn rate of each cap's scope")
    # 2.00 held + 0.685714 x 6 h / 24 h = 2.171428...: 2.17 by midnight
    assert lines[forecasts_at + 1] == (
        "global day: not reached before the window ends 2026-11-24 00:00 UTC"
        " (2.17 by then at this rate)"
    )
    assert all(
        len(line) <= 100
        for line in lines[
            : lines.index("daily spend in USD, days in UTC: █ spent  ░ held  │ global day cap 5.00")
        ]
    )
    chart = text_chart(report(holds, since=utc(2026, 11, 20), until=utc(2026, 11, 24)))
    assert out.endswith("\n\n" + chart + "\n")


def test_the_table_fits_the_width_cutting_long_names_and_wrapping_forecasts(
    capsys: pytest.CaptureFixture[str],
    cli_ledger: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cap named at length: at COLUMNS=100 (the default too) its name is cut with '~' in the
    table and its forecast wrapped; at COLUMNS=80 every line still fits."""
    url, _ = cli_ledger
    config = tmp_path / "long.yaml"
    long_name = "the monthly allowance of the whole video team across every project we run"
    config.write_text(
        f'caps:\n  - {{limit: "10.00", window: month, name: "{long_name}"}}\n', encoding="utf-8"
    )
    for columns, width in ((None, 100), ("80", 80)):
        if columns is None:
            monkeypatch.delenv("COLUMNS", raising=False)
        else:
            monkeypatch.setenv("COLUMNS", columns)
        out = report_cli(capsys, (url, str(config)), "--by", "user")
        lines = out.splitlines()
        assert max(len(line) for line in lines) <= width, out
        row = lines[lines.index("caps") + 3]
        assert row.startswith("the monthly") and "~" in row
        assert row.endswith("0.69")  # per day, to the cent
        forecast_at = lines.index("forecasts at the burn rate of each cap's scope") + 1
        assert lines[forecast_at].startswith(f"{long_name[: width - 5]}")
        assert lines[forecast_at + 1].startswith("  ")  # wrapped, indented


def test_cli_shows_overruns(
    capsys: pytest.CaptureFixture[str], cli_ledger: tuple[str, str]
) -> None:
    url, _ = cli_ledger
    clock = Clock(utc(2026, 11, 23, 17, 45))
    guard = Guard(url, caps(), clock=clock, hold_ttl=3600)
    guard.reserve(MAGI, REQ, user="cy", project="beta").acquire().settle("0.95")  # 0.15 over
    guard.close()
    # the window's totals: spent 4.80 + 0.95 = 5.75; 6 requests; one overrun of 0.95 - 0.80
    out = report_cli(capsys, cli_ledger, "--by", "user")
    assert out.splitlines()[1:3] == [
        "spent 5.75 USD, held 2.00; 6 requests (1 expired), 2 open, 1 released",
        "overruns: 1 request counted 0.15 USD more than quoted",
    ]
    totals = json.loads(report_cli(capsys, cli_ledger, "--format", "json"))["totals"]
    assert (totals["spent"], totals["overruns"], totals["overrun"]) == ("5.75", 1, "0.15")
    # a window without it: no overrun, and no line
    out = report_cli(capsys, cli_ledger, "--since", "2026-11-20", "--until", "2026-11-23")
    assert "overruns" not in out


@pytest.mark.parametrize("spelling", ["user=cy", "user:cy"])  # user:cy: the older spelling
def test_cli_scope_and_tz(
    capsys: pytest.CaptureFixture[str], cli_ledger: tuple[str, str], spelling: str
) -> None:
    out = report_cli(
        capsys,
        cli_ledger,
        "--scope",
        spelling,
        "--tz",
        "Europe/Paris",
        "--by",
        "day",
        "--format",
        "json",
    )
    data = json.loads(out)
    assert data["scope"] == "user=cy"  # one spelling in the output, whichever was given
    assert data["now"] == "2026-11-23T19:00:00+01:00"
    assert data["breakdowns"][0]["rows"] == [
        {"day": "2026-11-22", "spent": "0.00", "held": "0.00", "requests": 0, "open": 0},
        {"day": "2026-11-23", "spent": "0.80", "held": "0.00", "requests": 1, "open": 0},
    ]
    assert data["caps"] == []  # no cap is on user cy alone
    # --since without an offset is read in --tz: 11-23 00:00 Paris is 11-22 23:00 UTC
    out = report_cli(
        capsys, cli_ledger, "--since", "2026-11-23", "--tz", "Europe/Paris", "--format", "json"
    )
    assert json.loads(out)["totals"]["spent"] == "0.80"


def test_cli_without_config_reads_the_ledger_alone(
    capsys: pytest.CaptureFixture[str], cli_ledger: tuple[str, str]
) -> None:
    url, _ = cli_ledger
    code, out, err = run(
        capsys, "report", "--ledger", url, "--now", "2026-11-23T18:00", "--by", "endpoint"
    )
    assert (code, err) == (0, "")
    assert out.rstrip("\n").endswith("caps: none (give --config PATH or set FALBUDGET_CONFIG)")


def test_cli_png(
    capsys: pytest.CaptureFixture[str], cli_ledger: tuple[str, str], tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "chart.png"
    out = report_cli(capsys, cli_ledger, "--by", "day", "--png", str(target))
    assert out.rstrip("\n").endswith(f"chart written to {target}")
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000
    # with --format json, stdout stays one JSON document
    out = report_cli(capsys, cli_ledger, "--format", "json", "--png", str(tmp_path / "b.png"))
    json.loads(out)
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_png_without_matplotlib(
    capsys: pytest.CaptureFixture[str],
    cli_ledger: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    url, config = cli_ledger
    target = tmp_path / "chart.png"
    code, out, err = run(
        capsys, "report", "--ledger", url, "--config", config, "--png", str(target)
    )
    assert (code, out) == (2, "")
    assert err.startswith(
        "falbudget: error: a PNG chart needs matplotlib: pip install 'falbudget[plot]'"
        " (from a clone of falbudget: pip install '.[plot]')"
    )
    assert err.count("\n") == 1
    assert not target.exists()
    # everything else works without matplotlib
    out = report_cli(capsys, cli_ledger, "--chart")
    assert "daily spend in USD" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--tz", "Mars/Base"], "tz='Mars/Base' is not allowed"),
        (["--since", "yesterday"], "--since='yesterday' is not allowed"),
        (["--until", "2026-13-01"], "--until='2026-13-01' is not allowed"),
        (["--now", "soon"], "--now='soon' is not allowed"),
        (["--since", "2026-11-20", "--until", "2026-11-20"], "--since must be before --until"),
        (["--by", "month"], "--by 'month' is not allowed"),
        (["--by", "user,user"], "user is given twice"),
        (["--scope", "alpha"], "--scope='alpha' is not allowed: TAG=VALUE"),
        (["--burn-days", "0"], "--burn-days=0 is not allowed"),
        (["--burn-days", "x"], "invalid int value"),
        (["--format", "xml"], "invalid choice"),
        (["--chart", "--format", "json"], "--chart draws in the terminal"),
        (["--ledger", "nope://"], "ledger URL 'nope://' is not allowed"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    code, out, err = run(capsys, "report", "--ledger", "memory://", *argv)
    assert (code, out) == (2, ""), err
    assert err.startswith("falbudget: error: ") and err.count("\n") == 1, err
    assert needle in err, err


def test_cli_help_lists_report(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "report" in out
    code, out, _ = run(capsys, "report", "--help")
    assert code == 0
    for option in (
        "--since",
        "--until",
        "--by",
        "--scope",
        "--tz",
        "--burn-days",
        "--now",
        "--format",
        "--chart",
        "--png",
        "--config",
        "--ledger",
    ):
        assert option in out


# --- the examples in docs/reports.md run as written ----------------------------------------------


def doc_blocks(kind: str) -> list[str]:
    text = DOCS.read_text(encoding="utf-8")
    blocks: list[str] = re.findall(rf"^```{kind}\n(.*?)^```$", text, flags=re.S | re.M)
    return blocks


def test_docs_examples_run_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each ``$ ...`` line of a console block, in order, in one directory: ``python NAME.py``
    runs the python block that starts with ``# NAME.py``; ``falbudget ...`` runs the CLI. The
    output must be as pasted (a PNG command is skipped without matplotlib)."""
    monkeypatch.chdir(tmp_path)
    scripts = {}
    for block in doc_blocks("python"):
        name = re.match(r"# (\S+\.py)", block)
        if name:
            scripts[name.group(1)] = block
    try:
        import matplotlib  # noqa: F401

        plotting = True
    except ImportError:
        plotting = False
    checked = []
    for block in doc_blocks("console"):
        for command in re.split(r"^\$ ", block, flags=re.M)[1:]:
            line, _, expected = command.partition("\n")
            argv = shlex.split(line)
            if argv[0] == "python":
                (tmp_path / argv[1]).write_text(scripts[argv[1]], encoding="utf-8")
                runpy.run_path(argv[1], run_name="__main__")
                out = capsys.readouterr().out
            else:
                assert argv[0] == "falbudget", line
                if "--png" in argv and not plotting:
                    continue
                code, out, err = run(capsys, *argv[1:])
                assert (code, err) == (0, ""), (line, err)
            assert out == expected, line
            checked.append(argv[0])
    assert checked.count("falbudget") >= 5 and checked.count("python") == 2


def test_the_report_does_not_load_matplotlib() -> None:
    code = (
        "import sys, falbudget, falbudget.report, falbudget.cli.app;"
        " print('matplotlib' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "False\n"


def test_cli_one_request_is_singular(
    capsys: pytest.CaptureFixture[str], cli_ledger: tuple[str, str]
) -> None:
    # Before noon on the 20th only ann's first request was made: 96 frames at 720p, 0.80.
    out = report_cli(capsys, cli_ledger, "--since", "2026-11-20", "--until", "2026-11-20T12:00")
    assert (
        out.splitlines()[1]
        == "spent 0.80 USD, held 0.00; 1 request (0 expired), 0 open, 0 released"
    )
