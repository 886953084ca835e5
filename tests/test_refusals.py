"""The guard records every admission it refuses in the ledger (a :class:`Refusal`), on every
backend, and a failed record never turns a refusal into an admission nor hides its error.

MAGI-1 prices (docs/pricing.md): defaults (96 frames, 720p) = 0.80 USD = 800_000 micro-USD;
144 frames = 0.80 + 2 x 0.20 = 1.20 USD.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from fakefal import FakeFal
from falbudget import BudgetExceeded, Cap, Guard, InvalidArguments
from falbudget.errors import IdempotencyConflict, LedgerError, MissingTag, UnknownEndpoint
from falbudget.ledger import Ledger, Refusal
from falbudget.ledger.memory import MemoryLedger

MAGI = "fal-ai/magi/image-to-video"
REQ = {"prompt": "a cat", "image_url": "https://example.invalid/cat.png"}
NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC).timestamp()


def guard_on(ledger: Ledger, caps: list[Cap]) -> Guard:
    return Guard(ledger, caps, clock=lambda: NOW)


def test_each_kind_of_refusal_is_recorded_with_its_cap(
    ledger_factory: Callable[[], Ledger],
) -> None:
    ledger = ledger_factory()
    day = Cap("1.00", scope="user", window="day", name="daily per user")
    per_request = Cap("100.00", max_per_request="1.00")
    guard = guard_on(ledger, [day, per_request])
    with guard.reserve(MAGI, REQ, user="ann"):  # 0.80 of ann's 1.00
        pass
    with pytest.raises(BudgetExceeded), guard.reserve(MAGI, REQ, user="ann"):  # 1.60 > 1.00
        pass
    with pytest.raises(BudgetExceeded):  # 1.20 alone > max_per_request 1.00
        guard.reserve(MAGI, {**REQ, "num_frames": 144}, user="bob")
    with pytest.raises(MissingTag):
        guard.reserve(MAGI, REQ)
    with pytest.raises(UnknownEndpoint):
        guard.reserve("fal-ai/nope", {}, user="ann")
    with pytest.raises(InvalidArguments):
        guard.reserve(MAGI, {**REQ, "num_frames": "many"}, user="ann")
    # a check() refuses nothing (it admits nothing either): no row
    assert not guard.check(MAGI, REQ, user="ann").allowed
    got = ledger.refusals()
    assert [(r.reason, r.cap, r.amount) for r in got] == [
        ("invalid_arguments", None, 0),
        ("unknown_endpoint", None, 0),
        ("missing_tag", "daily per user", 0),
        ("max_per_request", per_request.label(), 1_200_000),
        ("cap_exceeded", "daily per user", 800_000),
    ]
    assert per_request.label() == "global total cap 100.00"  # the label of an unnamed cap
    assert all(r.at == NOW for r in got)
    assert got[-1] == Refusal(
        NOW, MAGI, "cap_exceeded", "daily per user", 800_000, {"user": "ann", "endpoint": MAGI}
    )
    assert ledger.refusal_counts() == {
        ("fal-ai/nope", None): 1,
        (MAGI, None): 1,
        (MAGI, "daily per user"): 2,
        (MAGI, per_request.label()): 1,
    }


def test_an_idempotency_conflict_is_recorded(ledger_factory: Callable[[], Ledger]) -> None:
    ledger = ledger_factory()
    guard = guard_on(ledger, [Cap("10.00")])
    with guard.reserve(MAGI, REQ, idempotency_key="k1", user="ann"):
        pass
    with pytest.raises(IdempotencyConflict):
        guard.reserve(MAGI, REQ, idempotency_key="k1", user="bob").acquire()
    assert [(r.reason, r.cap, r.amount) for r in ledger.refusals()] == [
        ("idempotency_conflict", None, 800_000)
    ]


def test_admissions_record_nothing(ledger_factory: Callable[[], Ledger]) -> None:
    ledger = ledger_factory()
    guard = guard_on(ledger, [Cap("10.00")])
    for _ in range(3):
        with guard.reserve(MAGI, REQ):
            pass
    assert ledger.refusals() == []


class _Broken:
    """A ledger whose refusal record fails; everything else is the real ledger's."""

    def __init__(self, inner: Ledger) -> None:
        self._inner = inner

    def record_refusal(self, refusal: Refusal) -> None:
        raise LedgerError("disk full")

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def test_a_failed_record_keeps_the_refusal_and_says_so(
    ledger_factory: Callable[[], Ledger], caplog: pytest.LogCaptureFixture
) -> None:
    ledger = ledger_factory()
    seen: list[Refusal] = []
    guard = Guard(_Broken(ledger), [Cap("1.00")], clock=lambda: NOW)  # type: ignore[arg-type]
    guard.on_refusal = seen.append
    with guard.reserve(MAGI, REQ):
        pass
    with (
        caplog.at_level(logging.ERROR, logger="falbudget.guard"),
        pytest.raises(BudgetExceeded) as info,
        guard.reserve(MAGI, REQ),  # 0.80 + 0.80 > 1.00
    ):
        pass
    assert "could not record this refusal in the ledger: disk full" in info.value.__notes__[0]
    assert any(
        r.levelno == logging.ERROR and "could not record the refusal" in r.getMessage()
        for r in caplog.records
    )
    # nothing more was held: the ledger still holds the first 0.80 as spent only
    assert ledger.totals(["global|total"])[0].settled == 800_000
    assert ledger.totals(["global|total"])[0].held == 0
    assert [r.reason for r in seen] == ["cap_exceeded"]  # the observer still hears of it


class _ThreadNoting(MemoryLedger):
    """A memory ledger noting the thread of each refusal it records."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def record_refusal(self, refusal: Refusal) -> None:
        self.threads.append(threading.get_ident())
        super().record_refusal(refusal)


async def _unpriced(endpoint: str, arguments: object) -> None:  # pragma: no cover - never sent
    raise AssertionError("a refused request was sent")


def test_acall_records_its_refusals_off_the_event_loop() -> None:
    # the docs promise a slow ledger never blocks the loop: the refusal's record (a ledger write,
    # a round trip on PostgreSQL) ran on it
    ledger = _ThreadNoting()
    guard = guard_on(ledger, [Cap("100.00", max_per_request="1.00")])

    async def scenario() -> int:
        with pytest.raises(UnknownEndpoint):
            await guard.acall(_unpriced, "fal-ai/nope", {})
        with pytest.raises(BudgetExceeded):  # 1.20 > max_per_request 1.00
            await guard.acall(_unpriced, MAGI, {**REQ, "num_frames": 144})
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert len(ledger.threads) == 2
    assert loop_thread not in ledger.threads
    assert [r.reason for r in ledger.refusals()] == ["max_per_request", "unknown_endpoint"]


def test_the_async_client_records_its_refusals_off_the_event_loop(
    fake_fal: FakeFal, fal_async_client: Callable[[], Any]
) -> None:
    ledger = _ThreadNoting()
    guard = guard_on(ledger, [Cap("100.00")])

    async def scenario() -> int:
        fal = guard.wrap(fal_async_client())
        with pytest.raises(UnknownEndpoint):
            await fal.run("fal-ai/nope", {"prompt": "x"})
        with pytest.raises(InvalidArguments):
            await fal.subscribe(MAGI, {"image_url": "https://example.invalid/x.png"})
        with pytest.raises(UnknownEndpoint):
            async for _ in fal.stream("fal-ai/nope", {"prompt": "x"}):
                pass
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert len(ledger.threads) == 3
    assert loop_thread not in ledger.threads
    assert fake_fal.count() == 0


def test_a_refused_realtime_connection_is_recorded(fake_fal: FakeFal, fal_sync_client: Any) -> None:
    ledger = MemoryLedger()
    guard = guard_on(ledger, [Cap("100.00")])
    fal = guard.wrap(fal_sync_client, user="ann")
    with pytest.raises(UnknownEndpoint), fal.realtime("fal-ai/unpriced-realtime"):
        pass
    assert ledger.refusals() == [
        Refusal(
            NOW,
            "fal-ai/unpriced-realtime",
            "unknown_endpoint",
            None,
            0,
            {"user": "ann", "endpoint": "fal-ai/unpriced-realtime"},
        )
    ]
    assert fake_fal.count() == 0
