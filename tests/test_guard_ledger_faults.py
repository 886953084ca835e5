"""The guard when the ledger's answer is lost (issue 9, item 6): explicit, on every backend.

A ledger call that raises LedgerUnavailable may have taken effect all the same: on PostgreSQL a
connection lost after the request left is committed by the server if the request reached it
(tests/test_postgres_faults.py shows it through a proxy that drops the replies). The guard:

* reserve: looks the hold up by the id it chose. Recorded without an idempotency key: released at
  once (nobody else knows that id). With a key: left alone, a retry with the key returns it. Not
  found, or the ledger still silent: LedgerUnavailable saying so. Nothing is sent either way.
* settle, release, mark_submitted: idempotent, tried once more; never counted twice.

``LostReply`` wraps a real ledger (memory, SQLite, PostgreSQL) and makes chosen calls do their
work and then raise LedgerUnavailable, as a lost reply does, or raise without doing it.
Expectations by hand: the request costs 0.80 (MAGI-1 at its defaults).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from falbudget import Cap, Guard
from falbudget.errors import LedgerUnavailable
from falbudget.ledger import BucketTotals, Ledger
from ledger_backends import BACKENDS, backend_params, make_ledger_factory
from pgutil import _drop_postgres_schemas  # noqa: F401 - autouse: drops this module's schemas

MAGI = "fal-ai/magi/image-to-video"
REQ = {"prompt": "a cat", "image_url": "https://example.invalid/cat.png"}  # 0.80
T0 = dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC).timestamp()
GLOBAL = "global|total"


class LostReply:
    """A ledger whose next ``lose[name]`` calls of ``name`` take effect and then raise
    LedgerUnavailable, and whose next ``fail[name]`` calls raise without taking effect (``*``:
    every method)."""

    def __init__(self, inner: Ledger) -> None:
        self.inner = inner
        self.lose: dict[str, int] = {}
        self.fail: dict[str, int] = {}
        self.calls: list[str] = []

    def _take(self, table: dict[str, int], name: str) -> bool:
        for key in (name, "*"):
            if table.get(key, 0) > 0:
                table[key] -= 1
                return True
        return False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if not callable(method) or name in ("close", "url"):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if self._take(self.fail, name):
                raise LedgerUnavailable(f"{name}: the server cannot be reached (injected)")
            result = method(*args, **kwargs)
            if self._take(self.lose, name):
                raise LedgerUnavailable(f"{name}: the connection was lost (injected, after it)")
            return result

        return call


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=backend_params(BACKENDS))
def faulty(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LostReply]:
    ledger = LostReply(make_ledger_factory(request.param, tmp_path)())
    yield ledger
    ledger.inner.close()


@pytest.fixture(params=["sync", "async"])
def face(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make(ledger: LostReply, clock: Clock) -> Guard:
    return Guard(ledger, [Cap("10.00")], clock=clock, hold_ttl=600)  # type: ignore[arg-type]


def enter(guard: Guard, face: str, **kwargs: Any) -> Any:
    """Enter a reservation through the sync or the async face; what it raised, or its hold."""
    try:
        if face == "sync":
            return guard.reserve(MAGI, REQ, **kwargs).acquire()
        return asyncio.run(guard.areserve(MAGI, REQ, **kwargs).aacquire())
    except LedgerUnavailable as exc:
        return exc


def on_face(face: str, step: Callable[[], None], astep: Callable[[], Any]) -> None:
    if face == "sync":
        step()
    else:
        asyncio.run(astep())


def totals(ledger: LostReply) -> BucketTotals:
    return ledger.inner.totals([GLOBAL])[0]


# -- reserve --------------------------------------------------------------------------------------
def test_a_reservation_recorded_but_unconfirmed_is_released_at_once(
    faulty: LostReply, face: str
) -> None:
    guard = make(faulty, Clock())
    faulty.lose["reserve"] = 1
    raised = enter(guard, face)
    assert isinstance(raised, LedgerUnavailable)
    assert "has been released: nothing is held" in str(raised)
    (hold,) = faulty.inner.holds()
    assert hold.state == "released"
    assert str(hold.id) in str(raised)
    assert totals(faulty) == BucketTotals(GLOBAL, 0, 0)
    assert faulty.calls == ["reserve", "get_hold", "release"]


def test_a_reservation_under_a_key_whose_answer_is_lost_is_retried_and_is_its_own(
    faulty: LostReply, face: str
) -> None:
    guard = make(faulty, Clock())
    faulty.lose["reserve"] = 1  # recorded, then the answer is lost
    hold = enter(guard, face, idempotency_key="job-1")
    (recorded,) = faulty.inner.holds()
    # the retry found the hold made under its own id: this reservation's own, not a replay, so
    # the caller sends and settles through it as usual
    assert (hold.id, hold.replayed, recorded.state) == (recorded.id, False, "held")
    assert faulty.calls == ["reserve", "reserve"]
    assert totals(faulty) == BucketTotals(GLOBAL, 0, 800_000)  # charged once
    hold.settle()
    assert totals(faulty) == BucketTotals(GLOBAL, 800_000, 0)


def test_a_reservation_under_a_key_never_recorded_is_recorded_by_the_retry(
    faulty: LostReply, face: str
) -> None:
    guard = make(faulty, Clock())
    faulty.fail["reserve"] = 1  # not recorded
    hold = enter(guard, face, idempotency_key="job-1")
    assert hold.replayed is False
    assert [h.id for h in faulty.inner.holds()] == [hold.id]
    assert totals(faulty) == BucketTotals(GLOBAL, 0, 800_000)


def test_a_reservation_under_a_key_still_unconfirmed_says_so_and_expires_unspent(
    faulty: LostReply, face: str
) -> None:
    clock = Clock()
    guard = make(faulty, clock)
    faulty.lose["reserve"] = 2  # recorded; the retry finds it, and its answer is lost too
    raised = enter(guard, face, idempotency_key="job-1")
    assert isinstance(raised, LedgerUnavailable)
    assert "under idempotency key 'job-1' may have been recorded as hold" in str(raised)
    assert "releases it, never counted as spent; retry with the same key" in str(raised)
    (recorded,) = faulty.inner.holds()
    assert recorded.state == "held"
    hold = enter(guard, face, idempotency_key="job-1")  # a later retry: a replay, sends nothing
    assert (hold.id, hold.replayed) == (recorded.id, True)
    clock.now += 601
    guard.release_expired()
    assert totals(faulty) == BucketTotals(GLOBAL, 0, 0)  # never counted as spent


def test_a_reservation_never_recorded_says_nothing_is_held(faulty: LostReply, face: str) -> None:
    guard = make(faulty, Clock())
    faulty.fail["reserve"] = 1
    raised = enter(guard, face)
    assert isinstance(raised, LedgerUnavailable)
    assert "the reservation is not recorded" in str(raised)
    assert "nothing is held" in str(raised)
    assert faulty.inner.holds() == []
    assert faulty.calls == ["reserve", "get_hold"]


def test_a_silent_ledger_leaves_the_hold_to_its_expiry_which_never_counts_it_as_spent(
    faulty: LostReply, face: str
) -> None:
    clock = Clock()
    guard = make(faulty, clock)
    faulty.lose["reserve"] = 1
    faulty.fail["get_hold"] = 1  # the look-up finds the ledger still unavailable
    raised = enter(guard, face)
    assert isinstance(raised, LedgerUnavailable)
    assert "may have been recorded as hold" in str(raised)
    assert "released when it expires (hold_ttl 600 s), never counted as spent" in str(raised)
    assert totals(faulty) == BucketTotals(GLOBAL, 0, 800_000)
    clock.now += 601
    (expired,) = guard.release_expired()
    assert expired.state == "released"
    assert totals(faulty) == BucketTotals(GLOBAL, 0, 0)


# -- settle, release, mark_submitted ---------------------------------------------------------------
@pytest.mark.parametrize("outcome", ["lost", "failed"])
def test_a_settle_whose_answer_is_lost_is_tried_again_and_counted_once(
    faulty: LostReply, face: str, outcome: str
) -> None:
    guard = make(faulty, Clock())
    hold = enter(guard, face)
    (faulty.lose if outcome == "lost" else faulty.fail)["settle"] = 1
    on_face(face, lambda: hold.settle("0.70"), lambda: hold.asettle("0.70"))
    assert hold.state == "settled"
    assert totals(faulty) == BucketTotals(GLOBAL, 700_000, 0)
    assert faulty.calls.count("settle") == 2
    assert guard.spent() == Decimal("0.70")


def test_a_settle_that_fails_twice_says_to_call_it_again_and_never_counts_twice(
    faulty: LostReply, face: str
) -> None:
    guard = make(faulty, Clock())
    hold = enter(guard, face)
    faulty.lose["settle"] = 1  # the first try takes effect, its answer is lost
    faulty.fail["settle"] = 1  # the second finds the ledger unavailable
    with pytest.raises(LedgerUnavailable, match=r"whether settle took effect is not known; call"):
        on_face(face, hold.settle, hold.asettle)
    assert totals(faulty) == BucketTotals(GLOBAL, 800_000, 0)
    on_face(face, hold.settle, hold.asettle)  # again, as the message says
    assert hold.state == "settled"
    assert totals(faulty) == BucketTotals(GLOBAL, 800_000, 0)


def test_a_release_or_submit_whose_answer_is_lost_is_tried_again(
    faulty: LostReply, face: str
) -> None:
    guard = make(faulty, Clock())
    first, second = enter(guard, face), enter(guard, face)
    faulty.lose["release"] = 1
    faulty.lose["mark_submitted"] = 1
    on_face(face, first.release, first.arelease)
    on_face(face, lambda: second.mark_submitted("req-2"), lambda: second.amark_submitted("req-2"))
    assert (first.state, second.state, second.request_id) == ("released", "submitted", "req-2")
    assert totals(faulty) == BucketTotals(GLOBAL, 0, 800_000)
    assert faulty.calls.count("release") == 2 and faulty.calls.count("mark_submitted") == 2
