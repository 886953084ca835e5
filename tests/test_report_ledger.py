"""Reports summed in the ledger (falbudget.report.read_groups over Ledger.summarize), on every
backend: the same figures as the per-hold report of tests/test_report.py, written out by hand
again here, without reading one hold into Python where the groups are exact."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from falbudget import Guard
from falbudget.ledger import Hold, HoldGroup, Ledger, MemoryLedger, open_ledger
from falbudget.report import Report, build_report, default_window, read_groups
from ledger_backends import BACKENDS, backend_params, store_url
from test_report import MAGI, NOW, REQ, Clock, caps, fill, rows, utc


@pytest.fixture(params=backend_params(BACKENDS))
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    opened = (
        MemoryLedger()
        if request.param == "memory"
        else open_ledger(store_url(request.param, tmp_path))
    )
    clock = Clock(NOW)
    guard = Guard(opened, caps(), clock=clock, hold_ttl=3600)
    fill(guard, clock)
    yield opened
    opened.close()


class NoHolds:
    """A ledger whose holds cannot be read one by one: a report must sum in the ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self.read: list[tuple[float | None, float | None]] = []

    def summarize(self, **kw: Any) -> list[HoldGroup]:
        return self._ledger.summarize(**kw)

    def holds(self, **kw: Any) -> list[Hold]:
        self.read.append((kw.get("since"), kw.get("until")))
        return self._ledger.holds(**kw)


def summed(ledger: Ledger | NoHolds, tz: str = "UTC", **kw: Any) -> Report:
    since, until = default_window(NOW, tz, since=kw.pop("since", None), until=kw.pop("until", None))
    groups = read_groups(ledger, caps(), now=NOW, since=since, until=until, tz=tz)  # type: ignore[arg-type]
    return build_report(groups, caps(), now=NOW, since=since, until=until, tz=tz, **kw)


def test_a_report_from_the_ledgers_sums_has_the_figures_by_hand(ledger: Ledger) -> None:
    spy = NoHolds(ledger)
    result = summed(spy)
    assert spy.read == []  # every group was exact: no hold was read one by one
    totals = result.totals
    assert (totals.figures.spent, totals.figures.held) == (Decimal("4.80"), Decimal("2.00"))
    assert (totals.figures.requests, totals.figures.open) == (5, 2)
    assert (totals.expired, totals.released) == (1, 1)
    assert rows(result, 1) == [
        ("alpha", "3.40", "1.20", 3, 1),
        (None, "0.80", "0.00", 1, 0),
        ("beta", "0.60", "0.80", 1, 1),
    ]
    assert rows(result, 3) == [
        ("2026-11-20", "1.80", "0.00", 2, 0),
        ("2026-11-21", "0.60", "0.00", 1, 0),
        ("2026-11-22", "2.40", "0.00", 2, 0),
        ("2026-11-23", "0.00", "2.00", 0, 2),
    ]
    # burn: the 7 days to now spent 0.80 + 1.00 + 0.60 + 1.60 + 0.80 = 4.80, 0.685714/day
    assert (result.burn.spent, result.burn.per_day) == (Decimal("4.80"), Decimal("0.685714"))
    # the caps' windows: the day cap's day (11-23) holds #7 and #8, the month all eight
    figures = {(f.cap.window, f.scope): (f.spent, f.held) for f in result.forecasts}
    assert figures[("day", "global")] == (Decimal("0.00"), Decimal("2.00"))
    assert figures[("month", "global")] == (Decimal("4.80"), Decimal("2.00"))
    assert figures[("week", "user=bob")] == (Decimal("0.00"), Decimal("1.20"))


def test_days_in_another_zone_from_the_ledgers_sums(ledger: Ledger) -> None:
    """Paris is UTC+1 in November (groups of an hour): #4 and #6 move a day later."""
    spy = NoHolds(ledger)
    result = summed(spy, tz="Europe/Paris", by=[("day",)])
    assert spy.read == []
    assert rows(result, 0) == [
        ("2026-11-20", "1.80", "0.00", 2, 0),
        ("2026-11-21", "0.60", "0.00", 1, 0),
        ("2026-11-22", "1.60", "0.00", 1, 0),
        ("2026-11-23", "0.80", "2.00", 1, 2),
    ]
    # Kolkata is UTC+5:30 (groups of 30 minutes): #4 and #6 (23:30 UTC) are 05:00 a day later
    result = summed(spy, tz="Asia/Kolkata", by=[("day",)])
    assert spy.read == []
    assert rows(result, 0) == [
        ("2026-11-20", "1.80", "0.00", 2, 0),
        ("2026-11-21", "0.60", "0.00", 1, 0),
        ("2026-11-22", "1.60", "0.00", 1, 0),
        ("2026-11-23", "0.80", "2.00", 1, 2),
    ]


def test_a_window_edge_inside_a_group_period_splits_it_exactly(ledger: Ledger) -> None:
    """--until 11-22 12:00 falls inside the UTC day; the cut keeps #5 (08:00) and leaves #6."""
    spy = NoHolds(ledger)
    result = summed(spy, since=utc(2026, 11, 21), until=utc(2026, 11, 22, 12), by=[("user",)])
    assert spy.read == []
    assert rows(result, 0) == [("ann", "2.20", "0.00", 2, 0), ("cy", "0.00", "0.00", 0, 0)]


def test_a_group_across_a_midnight_of_old_local_time_is_read_hold_by_hold(
    ledger: Ledger,
) -> None:
    """Paris kept local mean time (UTC+0:09:21) until 1911: its midnight of 1900-01-02 is
    1900-01-01 23:50:39 UTC, inside the hour the ledger groups by. The two holds of that hour
    (23:45 and 23:55 UTC) fall on two local days, so that hour is read hold by hold."""
    clock = Clock(utc(1900, 1, 1, 23, 45))
    guard = Guard(ledger, [], clock=clock, hold_ttl=3600)
    with guard.reserve(MAGI, REQ, project="old"):
        pass
    clock.now = utc(1900, 1, 1, 23, 55)
    with guard.reserve(MAGI, {**REQ, "num_frames": 144}, project="old"):
        pass
    spy = NoHolds(ledger)
    since, until = utc(1899, 12, 31), utc(1900, 1, 3)
    groups = read_groups(spy, [], now=NOW, since=since, until=until, tz="Europe/Paris")  # type: ignore[arg-type]
    assert len(spy.read) == 1
    low, high = spy.read[0]
    assert low == utc(1900, 1, 1, 23, 45) and high is not None and high > utc(1900, 1, 1, 23, 55)
    result = build_report(
        groups, [], now=NOW, since=since, until=until, tz="Europe/Paris", by=[("day",)]
    )
    assert rows(result, 0) == [
        ("1900-01-01", "0.80", "0.00", 1, 0),
        ("1900-01-02", "1.20", "0.00", 1, 0),
    ]


def test_the_cli_report_and_status_do_not_read_holds_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`falbudget report` and `budget status` sum in the ledger: with Ledger.holds broken (but
    for the holds with an overrun, read through their index) they still answer, with the
    figures by hand."""
    import json

    from falbudget.cli import main
    from falbudget.ledger.sqlite import SQLiteLedger

    url = f"sqlite:///{tmp_path / 'spend.db'}"
    clock = Clock(NOW)
    guard = Guard(url, caps(), clock=clock, hold_ttl=3600)
    fill(guard, clock)
    guard.close()

    original = SQLiteLedger.holds

    def broken(self: SQLiteLedger, **kw: Any) -> list[Hold]:
        if kw.get("overrun") is True:
            return original(self, **kw)
        raise AssertionError("a report read holds one by one")

    monkeypatch.setattr(SQLiteLedger, "holds", broken)
    code = main(["report", "--ledger", url, "--now", "2026-11-23T18:00+00:00", "--format", "json"])
    out = capsys.readouterr().out
    assert code == 0
    assert json.loads(out)["totals"]["spent"] == "4.80"
    code = main(["budget", "status", "--ledger", url, "--format", "json"])
    out = capsys.readouterr().out
    assert code == 0
    assert json.loads(out)["global"] == {
        "spent": "4.80",
        "held": "2.00",
        "overruns": 0,
        "overrun": "0.00",
    }
