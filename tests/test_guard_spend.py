"""Spend is never lost, and closed holds say so: settle, release and expiry through the Guard on
every backend (memory, SQLite, PostgreSQL). Expectations by hand; the clock is injected.

MAGI-1 prices (docs/pricing.md): defaults (96 frames, 720p, 16 steps) = 0.80; 144 frames =
0.80 + 2 x 0.20 = 1.20.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import warnings
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

import falbudget
from falbudget import BudgetExceeded, Cap, FalbudgetError, Guard, HoldClosed
from falbudget.guard.core import Alert
from ledger_backends import BACKENDS, backend_params, store_url

MAGI = "fal-ai/magi/image-to-video"
REQ = {"prompt": "a cat", "image_url": "https://example.invalid/cat.png"}
REQ_120 = {**REQ, "num_frames": 144}
T0 = dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC).timestamp()
TTL = 600.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=backend_params(BACKENDS))
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else store_url(request.param, tmp_path)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def alerts() -> list[Alert]:
    return []


@pytest.fixture
def guard(url: str, clock: Clock, alerts: list[Alert]) -> Iterator[Guard]:
    cap = Cap("10.00", alert_at=(Decimal("0.1"),))  # the alert fires at 1.00 spent
    guard = Guard(url, [cap], clock=clock, hold_ttl=TTL, on_alert=alerts.append)
    yield guard
    guard.close()


def expire(guard: Guard, clock: Clock) -> None:
    clock.now += TTL + 1
    guard.release_expired()


# -- settle after expiry: the spend is recorded, never dropped ---------------------------------


def test_settling_a_hold_that_expired_unsent_records_the_spend(
    guard: Guard, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    hold = guard.reserve(MAGI, REQ).acquire()  # never marked: expiry releases it
    expire(guard, clock)
    assert guard.ledger.get_hold(hold.id).state == "released" and guard.spent() == 0
    with caplog.at_level(logging.WARNING, logger="falbudget.guard"):
        hold.settle()  # the slow call came back after all: fal billed it
    assert guard.spent() == Decimal("0.80") and guard.held() == 0
    assert (hold.state, hold.spent, hold.closed) == ("released", Decimal("0.80"), True)
    (adjustment,) = guard.ledger.adjustments(hold.id)
    assert (adjustment.previous, adjustment.amount, adjustment.delta) == (0, 800_000, 800_000)
    assert adjustment.reason == "settled at 0.80 after the hold was released"
    assert adjustment.source == "guard: Hold.settle"
    assert adjustment.created_at == T0 + TTL + 1
    assert f"hold {hold.id} was released before it was settled" in caplog.text
    hold.settle()  # a retry: nothing more
    assert guard.spent() == Decimal("0.80") and len(guard.ledger.adjustments()) == 1


def test_settling_a_submitted_hold_that_expired_at_another_amount(
    guard: Guard, clock: Clock
) -> None:
    hold = guard.reserve(MAGI, REQ).acquire()
    hold.mark_submitted("req-1")
    expire(guard, clock)  # counted as spent at the quote, 0.80
    assert guard.spent() == Decimal("0.80")
    hold.settle("0.50")  # what fal billed
    assert guard.spent() == Decimal("0.50")
    (adjustment,) = guard.ledger.adjustments(hold.id)
    assert (adjustment.previous, adjustment.amount) == (800_000, 500_000)
    assert adjustment.reason == "settled at 0.50 after the hold expired"
    assert (hold.state, hold.spent) == ("expired", Decimal("0.50"))


def test_settling_an_expired_hold_at_what_it_counts_already_writes_nothing(
    guard: Guard, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    hold = guard.reserve(MAGI, REQ).acquire()
    hold.mark_submitted()
    expire(guard, clock)
    with caplog.at_level(logging.WARNING, logger="falbudget.guard"):
        hold.settle()
    assert guard.spent() == Decimal("0.80") and guard.ledger.adjustments() == []
    assert "(unchanged: it counted that already)" in caplog.text  # said, not silent


# -- settle and release on a settled hold ------------------------------------------------------


def test_settling_again_at_the_same_amount_is_a_safe_retry(guard: Guard) -> None:
    hold = guard.reserve(MAGI, REQ).acquire()
    hold.settle("0.70")
    hold.settle("0.70")
    hold.settle(Decimal("0.7"))  # the same amount, written otherwise
    other = guard.reserve(MAGI, REQ).acquire()
    other.settle()
    other.settle()
    other.settle("0.80")  # the default is the amount held
    assert guard.spent() == Decimal("1.50") and guard.ledger.adjustments() == []


@pytest.mark.parametrize("again", ["0.80", None, "0.69"])
def test_settling_again_at_another_amount_raises_hold_closed(
    guard: Guard, again: str | None
) -> None:
    hold = guard.reserve(MAGI, REQ).acquire()
    hold.settle("0.70")
    with pytest.raises(HoldClosed) as info:
        hold.settle(again)
    err = info.value
    asked = Decimal("0.80") if again is None else Decimal(again)
    assert (err.hold_id, err.state, err.action) == (hold.id, "settled", "settle")
    assert (err.amount, err.counted) == (asked, Decimal("0.70"))
    assert str(err).startswith(f"hold {hold.id} ({MAGI}) is already settled and counts 0.70")
    assert guard.spent() == Decimal("0.70") and guard.ledger.adjustments() == []


def test_release_after_settle_raises_hold_closed(guard: Guard) -> None:
    hold = guard.reserve(MAGI, REQ).acquire()
    hold.settle()
    with pytest.raises(HoldClosed) as info:
        hold.release()
    assert (info.value.action, info.value.amount, info.value.counted) == (
        "release",
        None,
        Decimal("0.80"),
    )
    assert "cannot release it" in str(info.value)
    free = guard.reserve(MAGI, REQ).acquire()
    free.settle("0")  # settled at 0.00 is settled all the same
    with pytest.raises(HoldClosed):
        free.release()
    assert guard.spent() == Decimal("0.80") and guard.ledger.get_hold(hold.id).state == "settled"


def test_release_after_expiry_as_spent_raises_and_after_release_is_a_no_op(
    guard: Guard, clock: Clock
) -> None:
    sent = guard.reserve(MAGI, REQ).acquire()
    sent.mark_submitted()
    unsent = guard.reserve(MAGI, REQ).acquire()
    released = guard.reserve(MAGI, REQ).acquire()
    released.release()
    expire(guard, clock)
    with pytest.raises(HoldClosed, match=r"already expired and counts 0\.80"):
        sent.release()
    unsent.release()  # it expired unsent, released: the same outcome
    released.release()
    assert guard.spent() == Decimal("0.80") and guard.held() == 0


def test_hold_closed_comes_from_the_ledger_not_the_object(url: str, clock: Clock) -> None:
    """Another guard (another process, on a shared store) that settled the same hold under the
    same idempotency key: the second settle sees the ledger's record, not its own object's."""
    first = Guard(url, clock=clock, hold_ttl=TTL)
    second = first if url == "memory://" else Guard(url, clock=clock, hold_ttl=TTL)
    hold = first.reserve(MAGI, REQ, idempotency_key="job-1").acquire()
    replay = second.reserve(MAGI, REQ, idempotency_key="job-1").acquire()
    assert replay.replayed and replay.state == "held"
    hold.settle("0.60")
    replay.settle("0.60")  # the same amount: a retry
    with pytest.raises(HoldClosed):
        replay.settle()
    assert second.spent() == Decimal("0.60")
    first.close()
    second.close()


def test_hold_closed_is_exported_and_a_falbudget_error() -> None:
    assert falbudget.HoldClosed is HoldClosed and "HoldClosed" in falbudget.__all__
    assert issubclass(HoldClosed, FalbudgetError)


def test_a_failed_block_does_not_mask_its_error_when_the_hold_expired_as_spent(
    guard: Guard, clock: Clock
) -> None:
    with pytest.raises(RuntimeError, match="the call failed"), guard.reserve(MAGI, REQ) as hold:
        hold.mark_submitted()
        expire(guard, clock)  # counted as spent meanwhile
        raise RuntimeError("the call failed")
    assert guard.spent() == Decimal("0.80") and hold.state == "expired"


# -- overruns -------------------------------------------------------------------------------------


def test_settling_above_the_held_amount_is_an_overrun(
    guard: Guard, alerts: list[Alert], caplog: pytest.LogCaptureFixture
) -> None:
    hold = guard.reserve(MAGI, REQ).acquire()
    with caplog.at_level(logging.WARNING, logger="falbudget.guard"):
        hold.settle("1.10")  # fal billed more than the 0.80 quoted
    assert (hold.amount, hold.spent, hold.overrun) == (
        Decimal("0.80"),
        Decimal("1.10"),
        Decimal("0.30"),
    )
    assert guard.spent() == Decimal("1.10") and guard.held() == 0
    assert [h.id for h in guard.overruns()] == [hold.id]
    assert guard.ledger.get_hold(hold.id).overrun == 300_000
    assert f"overrun: hold {hold.id} ({MAGI}) counts 1.10 as spent, 0.30 more than" in caplog.text
    # the alert at a tenth of 10.00 fires on 1.10, which the 0.80 quoted alone would not reach
    assert [(a.fraction, a.spent) for a in alerts] == [(Decimal("0.1"), Decimal("1.10"))]
    assert guard.remaining() == Decimal("8.90")  # the overrun counts against the cap


def test_an_overrun_recorded_after_expiry_fires_alerts(
    guard: Guard, clock: Clock, alerts: list[Alert]
) -> None:
    hold = guard.reserve(MAGI, REQ).acquire()
    expire(guard, clock)  # released unsent
    hold.settle("1.00")
    assert (hold.spent, hold.overrun) == (Decimal("1.00"), Decimal("0.20"))
    assert [(a.fraction, a.spent) for a in alerts] == [(Decimal("0.1"), Decimal("1.00"))]
    assert [h.id for h in guard.overruns()] == [hold.id]


def test_overruns_lists_only_holds_counted_above_their_quote(guard: Guard, clock: Clock) -> None:
    over = guard.reserve(MAGI, REQ).acquire()
    over.settle("0.81")
    guard.reserve(MAGI, REQ).acquire().settle("0.79")
    guard.reserve(MAGI, REQ).acquire().settle()
    guard.reserve(MAGI, REQ).acquire()  # open
    clock.now += 10
    later = guard.reserve(MAGI, REQ).acquire()
    later.settle("0.90")
    assert [h.id for h in guard.overruns()] == [later.id, over.id]  # newest first
    assert [h.id for h in guard.overruns(since=T0 + 10)] == [later.id]
    assert [h.id for h in guard.overruns(until=T0 + 10)] == [over.id]


def test_overruns_asks_the_ledger_for_the_holds_with_an_overrun_only(
    guard: Guard, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One read of the ledger's holds with an overrun (an index of them on SQLite and
    PostgreSQL), not a sum of the history: bob's hold settled above its quote is the one."""
    for _ in range(3):
        guard.reserve(MAGI, REQ, user="ann").acquire().settle()
    clock.now = T0 + 5
    over = guard.reserve(MAGI, REQ, user="bob").acquire()
    over.settle("0.95")
    clock.now = T0 + 7
    guard.reserve(MAGI, REQ, user="bob").acquire().settle("0.50")
    clock.now = T0 + 9
    guard.reserve(MAGI, REQ, user="ann").acquire().settle()
    reads: list[dict[str, object]] = []
    original = guard.ledger.holds

    def spy(**kw: object) -> list[object]:
        reads.append(kw)
        return original(**kw)  # type: ignore[arg-type]

    monkeypatch.setattr(guard.ledger, "holds", spy)
    monkeypatch.setattr(guard.ledger, "summarize", None)  # nothing is summed
    assert [h.id for h in guard.overruns()] == [over.id]
    assert reads == [{"since": None, "until": None, "overrun": True}]


def test_async_twins_follow_the_same_rules(guard: Guard, clock: Clock) -> None:
    async def scenario() -> None:
        hold = await guard.areserve(MAGI, REQ).aacquire()
        await hold.amark_submitted()
        expire(guard, clock)
        await hold.asettle("0.90")
        with pytest.raises(HoldClosed):
            await hold.arelease()

    asyncio.run(scenario())
    assert guard.spent() == Decimal("0.90")


# -- a reservation used without `with` or acquire() ----------------------------------------------


def test_a_reservation_dropped_unused_warns(guard: Guard) -> None:
    reservation = guard.reserve(MAGI, REQ, project="alpha")
    with pytest.warns(ResourceWarning, match=r"guard.reserve\('fal-ai/magi/image-to-video'\)"):
        del reservation
        gc.collect()
    assert guard.held() == 0 and guard.ledger.holds() == []


def test_a_reservation_used_any_way_does_not_warn(guard: Guard, clock: Clock) -> None:
    tight = Guard(guard.ledger, [Cap("0.50")], clock=clock)  # admits nothing at 0.80

    async def asynchronous() -> None:
        async with guard.areserve(MAGI, REQ):
            pass
        await guard.areserve(MAGI, REQ).aacquire()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with guard.reserve(MAGI, REQ):
            pass
        guard.reserve(MAGI, REQ).acquire().release()
        asyncio.run(asynchronous())
        with pytest.raises(BudgetExceeded):  # refused: it was used all the same
            tight.reserve(MAGI, REQ).acquire()
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_a_late_settle_is_recorded_once_and_another_amount_after_it_is_refused(
    guard: Guard, clock: Clock
) -> None:
    hold = guard.reserve(MAGI, REQ).acquire()  # never marked: expiry releases it
    expire(guard, clock)
    hold.settle("0.50")  # the slow call came back: fal billed 0.50
    assert guard.spent() == Decimal("0.50")
    hold.settle("0.50")  # a retry: nothing more
    with pytest.raises(HoldClosed) as info:
        hold.settle("3.00")  # a second, different settle is not a correction path
    assert (info.value.action, info.value.amount) == ("settle", Decimal("3.00"))
    assert guard.spent() == Decimal("0.50") and len(guard.ledger.adjustments(hold.id)) == 1
    assert (
        repr(hold)
        == f"<Hold {hold.id}: 0.80 USD for {MAGI}, released, then counted 0.50 USD as spent>"
    )


def test_a_request_is_not_sent_under_a_hold_that_closed_before_it_left(
    guard: Guard, clock: Clock
) -> None:
    hold = guard.reserve(MAGI, REQ).acquire()
    expire(guard, clock)  # a slow caller: the hold expired, released, before the request left
    with pytest.raises(HoldClosed) as info:
        hold.mark_submitted()  # just before sending: refused, so nothing is sent
    assert (info.value.action, info.value.state) == ("mark_submitted", "released")
    assert guard.ledger.get_hold(hold.id).state == "released" and guard.spent() == 0
    hold.mark_submitted("req-9")  # it left already (a request id came back): no refusal
    hold.settle()  # and the bill is recorded
    assert guard.spent() == Decimal("0.80")
