"""The ledger contract (falbudget.ledger.base), run against every backend.

Every expected figure is written out by hand. Times are explicit ``now`` values, never the clock.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import math
import re
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from falbudget.errors import HoldNotFound, LedgerError
from falbudget.ledger import (
    Adjustment,
    Admission,
    BucketCharge,
    BucketTotals,
    Hold,
    HoldGroup,
    Ledger,
)
from ledger_backends import ENDPOINT

T0 = 1_750_000_000.0
TTL = 600.0
SHA = "ab" * 32


@pytest.fixture
def ledger(ledger_factory: Callable[[], Ledger]) -> Ledger:
    return ledger_factory()


def cap(key: str, limit: int | None) -> BucketCharge:
    return BucketCharge(key, limit)


def reserve(
    ledger: Ledger,
    hold_id: str,
    amount: int,
    charges: list[BucketCharge],
    *,
    now: float = T0,
    ttl: float = TTL,
    **extra: Any,
) -> Admission:
    return ledger.reserve(
        hold_id=hold_id,
        endpoint=ENDPOINT,
        amount=amount,
        charges=charges,
        now=now,
        expires_at=now + ttl,
        **extra,
    )


def admitted(result: Admission) -> Hold:
    assert result.admitted, result
    assert result.hold is not None
    return result.hold


# -- admission ------------------------------------------------------------------------------------
def test_reserve_within_the_limit_records_the_hold(ledger: Ledger) -> None:
    assert isinstance(ledger, Ledger)
    result = reserve(
        ledger,
        "h1",
        400_000,
        [cap("global|2025-06", 1_000_000)],
        tags={"project": "demo"},
        table_version="2025-06-01",
        table_sha256=SHA,
    )
    expected = Hold(
        id="h1",
        endpoint=ENDPOINT,
        amount=400_000,
        state="held",
        buckets=("global|2025-06",),
        created_at=T0,
        expires_at=T0 + 600,
        updated_at=T0,
        idempotency_key=None,
        request_id=None,
        settled_amount=None,
        tags={"project": "demo"},
        table_version="2025-06-01",
        table_sha256=SHA,
    )
    assert result == Admission(admitted=True, hold=expected, replayed=False)
    assert ledger.get_hold("h1") == expected
    assert ledger.totals(["global|2025-06"]) == [BucketTotals("global|2025-06", 0, 400_000)]


def test_a_holds_tags_are_a_plain_mapping_a_caller_cannot_change_in_the_ledger(
    ledger: Ledger,
) -> None:
    """Every backend hands out tags that serialise as JSON and compare as a dict, and changing
    what was handed out (where that is allowed at all) never changes what the ledger keeps."""
    tags = {"project": "demo", "user": "ann"}
    hold = admitted(reserve(ledger, "h1", 1, [cap("A", 10)], tags=tags))
    tags["project"] = "changed after the call"
    assert json.loads(json.dumps(hold.tags)) == {"project": "demo", "user": "ann"}
    assert isinstance(hold.tags, dict)
    assert copy.deepcopy(hold.tags) == {"project": "demo", "user": "ann"}
    with contextlib.suppress(TypeError):  # read-only where the ledger shares its stored record
        hold.tags["project"] = "x"  # type: ignore[index]
    assert ledger.get_hold("h1").tags == {"project": "demo", "user": "ann"}


def test_the_limit_is_inclusive_and_one_micro_over_is_refused(ledger: Ledger) -> None:
    charges = [cap("g", 1_000_000)]
    admitted(reserve(ledger, "a", 600_000, charges))
    assert reserve(ledger, "b", 400_001, charges) == Admission(
        admitted=False, refused_by="g", totals=BucketTotals("g", 0, 600_000)
    )
    with pytest.raises(HoldNotFound):
        ledger.get_hold("b")
    admitted(reserve(ledger, "c", 400_000, charges))  # 600_000 + 400_000 == the limit
    assert ledger.totals(["g"]) == [BucketTotals("g", 0, 1_000_000)]
    assert reserve(ledger, "d", 1, charges).refused_by == "g"
    admitted(reserve(ledger, "e", 0, charges))  # nothing still fits

    # settled money counts too: 500_000 settled + 400_000 held leaves 100_000
    ledger.settle("a", 500_000, now=T0 + 1)
    assert ledger.totals(["g"]) == [BucketTotals("g", 500_000, 400_000)]
    assert reserve(ledger, "f", 100_001, charges) == Admission(
        admitted=False, refused_by="g", totals=BucketTotals("g", 500_000, 400_000)
    )
    admitted(reserve(ledger, "f", 100_000, charges))
    assert ledger.totals(["g"]) == [BucketTotals("g", 500_000, 500_000)]


def test_a_refusal_by_a_later_bucket_writes_nothing(ledger: Ledger) -> None:
    admitted(reserve(ledger, "first", 700_000, [cap("global|2025-06", 1_000_000)]))
    charges = [
        cap("project=demo|2025-06", 5_000_000),
        cap("global|2025-06", 1_000_000),
        cap("endpoint=magi|2025-06", None),
    ]
    assert reserve(ledger, "x", 400_000, charges) == Admission(
        admitted=False,
        refused_by="global|2025-06",
        totals=BucketTotals("global|2025-06", 0, 700_000),
    )
    assert ledger.totals(["project=demo|2025-06", "global|2025-06", "endpoint=magi|2025-06"]) == [
        BucketTotals("project=demo|2025-06", 0, 0),
        BucketTotals("global|2025-06", 0, 700_000),
        BucketTotals("endpoint=magi|2025-06", 0, 0),
    ]
    with pytest.raises(HoldNotFound):
        ledger.get_hold("x")
    assert [h.id for h in ledger.holds()] == ["first"]


def test_the_first_refusing_bucket_in_the_given_order_is_named(ledger: Ledger) -> None:
    admitted(reserve(ledger, "a", 900_000, [cap("one", 1_000_000), cap("two", 1_000_000)]))
    result = reserve(ledger, "b", 200_000, [cap("two", 1_000_000), cap("one", 1_000_000)])
    assert (result.admitted, result.refused_by) == (False, "two")
    result = reserve(ledger, "b", 200_000, [cap("one", 1_000_000), cap("two", 1_000_000)])
    assert (result.admitted, result.refused_by) == (False, "one")


def test_unlimited_trackers_count_exactly_without_a_limit(ledger: Ledger) -> None:
    tracker = [cap("endpoint=magi|all", None)]
    admitted(reserve(ledger, "a", 2**53 + 1, tracker))  # beyond what a float holds exactly
    admitted(reserve(ledger, "b", 2**53 + 3, tracker))
    assert ledger.totals(["endpoint=magi|all"]) == [
        BucketTotals("endpoint=magi|all", 0, 18_014_398_509_481_988)
    ]
    ledger.settle("a", 9_007_199_254_740_993, now=T0 + 1)
    assert ledger.totals(["endpoint=magi|all"]) == [
        BucketTotals("endpoint=magi|all", 9_007_199_254_740_993, 9_007_199_254_740_995)
    ]


def test_a_hold_id_cannot_be_reused(ledger: Ledger) -> None:
    admitted(reserve(ledger, "h1", 100, [cap("g", 1_000)]))
    with pytest.raises(LedgerError):
        reserve(ledger, "h1", 100, [cap("g", 1_000)])
    assert ledger.totals(["g"]) == [BucketTotals("g", 0, 100)]


@pytest.mark.parametrize(
    "bad",
    [
        {"amount": 0.8},
        {"amount": True},
        {"amount": -1},
        {"amount": 2**63},
        {"charges": [BucketCharge("g", 10.0)]},  # type: ignore[arg-type]
        {"charges": []},
    ],
    ids=["float", "bool", "negative", "over-64-bit", "float-limit", "no-charges"],
)
def test_money_must_be_integer_micro_usd(ledger: Ledger, bad: dict[str, Any]) -> None:
    args: dict[str, Any] = {"amount": 800_000, "charges": [cap("g", 10_000_000)]} | bad
    with pytest.raises(LedgerError):
        reserve(ledger, "h", args["amount"], args["charges"])
    assert ledger.totals(["g"]) == [BucketTotals("g", 0, 0)]
    assert ledger.holds() == []
    admitted(reserve(ledger, "ok", 800_000, [cap("g", 10_000_000)]))
    with pytest.raises(LedgerError):
        ledger.settle("ok", 1.5, now=T0)  # type: ignore[arg-type]
    assert ledger.get_hold("ok").state == "held"


# -- closing holds --------------------------------------------------------------------------------
def test_settle_at_the_held_amount(ledger: Ledger) -> None:
    charges = [cap("g", 10_000_000), cap("t", None)]
    admitted(reserve(ledger, "h", 800_000, charges))
    hold = ledger.settle("h", None, now=T0 + 5)
    assert (hold.state, hold.settled_amount, hold.amount, hold.updated_at) == (
        "settled",
        800_000,
        800_000,
        T0 + 5,
    )
    assert ledger.totals(["g", "t"]) == [
        BucketTotals("g", 800_000, 0),
        BucketTotals("t", 800_000, 0),
    ]


def test_settle_at_a_different_amount(ledger: Ledger) -> None:
    charges = [cap("g", 10_000_000)]
    admitted(reserve(ledger, "less", 800_000, charges))
    admitted(reserve(ledger, "more", 800_000, charges))
    assert ledger.settle("less", 650_000, now=T0 + 1).settled_amount == 650_000
    assert ledger.totals(["g"]) == [BucketTotals("g", 650_000, 800_000)]
    assert ledger.settle("more", 900_000, now=T0 + 1).settled_amount == 900_000
    assert ledger.totals(["g"]) == [BucketTotals("g", 1_550_000, 0)]
    assert ledger.get_hold("more").amount == 800_000  # the quote stays as it was


def test_release_gives_the_budget_back(ledger: Ledger) -> None:
    charges = [cap("g", 1_000_000)]
    admitted(reserve(ledger, "h", 800_000, charges))
    hold = ledger.release("h", now=T0 + 2)
    assert (hold.state, hold.settled_amount, hold.updated_at) == ("released", None, T0 + 2)
    assert ledger.totals(["g"]) == [BucketTotals("g", 0, 0)]
    admitted(reserve(ledger, "full", 1_000_000, charges))


def test_settle_and_release_are_idempotent(ledger: Ledger) -> None:
    charges = [cap("g", 10_000_000)]
    admitted(reserve(ledger, "s", 800_000, charges))
    admitted(reserve(ledger, "r", 300_000, charges))
    settled = ledger.settle("s", 700_000, now=T0 + 1)
    assert ledger.settle("s", 100, now=T0 + 2) == settled
    assert ledger.settle("s", None, now=T0 + 2) == settled
    assert ledger.release("s", now=T0 + 2) == settled
    released = ledger.release("r", now=T0 + 1)
    assert ledger.release("r", now=T0 + 2) == released
    assert ledger.settle("r", 300_000, now=T0 + 2) == released
    assert ledger.totals(["g"]) == [BucketTotals("g", 700_000, 0)]


def test_mark_submitted(ledger: Ledger) -> None:
    admitted(reserve(ledger, "h", 800_000, [cap("g", 10_000_000)]))
    hold = ledger.mark_submitted("h", "req-1", now=T0 + 1)
    assert (hold.state, hold.request_id, hold.updated_at) == ("submitted", "req-1", T0 + 1)
    assert ledger.totals(["g"]) == [BucketTotals("g", 0, 800_000)]  # still held
    settled = ledger.settle("h", None, now=T0 + 2)
    assert (settled.state, settled.request_id) == ("settled", "req-1")
    assert ledger.mark_submitted("h", "req-2", now=T0 + 3) == settled


def test_mark_submitted_before_the_request_id_is_known(ledger: Ledger) -> None:
    charges = [cap("g", 10_000_000)]
    admitted(reserve(ledger, "h", 800_000, charges, ttl=10))
    hold = ledger.mark_submitted("h", None, now=T0 + 1)  # the request is about to leave
    assert (hold.state, hold.request_id, hold.updated_at) == ("submitted", None, T0 + 1)
    assert ledger.mark_submitted("h", "req-1", now=T0 + 2).request_id == "req-1"
    assert ledger.mark_submitted("h", None, now=T0 + 3).request_id == "req-1"  # kept
    for bad in ("", "  ", 7):
        with pytest.raises(LedgerError, match="request_id"):
            ledger.mark_submitted("h", bad, now=T0 + 4)  # type: ignore[arg-type]
    admitted(reserve(ledger, "sent", 300_000, charges, ttl=10))
    ledger.mark_submitted("sent", None, now=T0 + 1)
    # both expire as spent, with or without a request id
    closed = {h.id: h for h in ledger.expire(now=T0 + 11)}
    assert {k: (h.state, h.settled_amount, h.request_id) for k, h in closed.items()} == {
        "h": ("expired", 800_000, "req-1"),
        "sent": ("expired", 300_000, None),
    }
    assert ledger.totals(["g"]) == [BucketTotals("g", 1_100_000, 0)]


def test_overrun_is_what_a_hold_counts_above_the_amount_held(ledger: Ledger) -> None:
    charges = [cap("g", 10_000_000)]
    for hold_id in ("more", "less", "open"):
        admitted(reserve(ledger, hold_id, 800_000, charges))
    assert ledger.settle("more", 1_100_000, now=T0 + 1).overrun == 300_000
    assert ledger.settle("less", 650_000, now=T0 + 1).overrun == 0
    assert ledger.get_hold("open").overrun == 0
    ledger.adjust("less", 900_000, now=T0 + 2, reason="billed more", source="test")
    assert ledger.get_hold("less").overrun == 100_000  # counted 0.90 of 0.80 held


def test_renew_moves_the_expiry_of_an_open_hold(ledger: Ledger) -> None:
    admitted(reserve(ledger, "h", 800_000, [cap("g", 10_000_000)], ttl=10))
    hold = ledger.renew("h", now=T0 + 5, expires_at=T0 + 100)
    assert (hold.expires_at, hold.updated_at, hold.state) == (T0 + 100, T0 + 5, "held")
    assert ledger.expire(now=T0 + 50) == []
    assert ledger.get_hold("h").state == "held"
    assert [h.id for h in ledger.expire(now=T0 + 101)] == ["h"]
    closed = ledger.get_hold("h")
    assert ledger.renew("h", now=T0 + 102, expires_at=T0 + 1000) == closed


# -- expiry ---------------------------------------------------------------------------------------
def test_expire_releases_held_and_spends_submitted_holds(ledger: Ledger) -> None:
    charges = [cap("g", 10_000_000)]
    admitted(reserve(ledger, "a", 100_000, charges, ttl=10))
    admitted(reserve(ledger, "b", 200_000, charges, ttl=10))
    admitted(reserve(ledger, "c", 300_000, charges, ttl=20))
    admitted(reserve(ledger, "d", 400_000, charges, ttl=15))
    ledger.mark_submitted("b", "req-b", now=T0 + 1)
    assert ledger.totals(["g"]) == [BucketTotals("g", 0, 1_000_000)]

    closed = {h.id: h for h in ledger.expire(now=T0 + 15)}  # d expires at T0 + 15: not yet
    assert sorted(closed) == ["a", "b"]
    assert (closed["a"].state, closed["a"].settled_amount, closed["a"].updated_at) == (
        "released",
        None,
        T0 + 15,
    )
    assert (closed["b"].state, closed["b"].settled_amount, closed["b"].request_id) == (
        "expired",
        200_000,
        "req-b",
    )
    assert ledger.totals(["g"]) == [BucketTotals("g", 200_000, 700_000)]
    assert ledger.expire(now=T0 + 15) == []
    assert [h.id for h in ledger.holds(states=["expired"])] == ["b"]
    assert ledger.settle("b", 1, now=T0 + 16).state == "expired"  # closed: unchanged
    assert sorted(h.id for h in ledger.expire(now=T0 + 21)) == ["c", "d"]
    assert ledger.totals(["g"]) == [BucketTotals("g", 200_000, 0)]


def test_a_later_reserve_expires_overdue_holds_first(ledger: Ledger) -> None:
    charges = [cap("g", 1_000_000)]
    admitted(reserve(ledger, "a", 1_000_000, charges, ttl=10))
    assert reserve(ledger, "b", 1, charges, now=T0 + 5).totals == BucketTotals("g", 0, 1_000_000)
    admitted(reserve(ledger, "b", 1_000_000, charges, now=T0 + 11))
    a = ledger.get_hold("a")
    assert (a.state, a.updated_at) == ("released", T0 + 11)
    assert ledger.totals(["g"]) == [BucketTotals("g", 0, 1_000_000)]


def test_an_expired_submitted_hold_counts_as_spent_at_admission(ledger: Ledger) -> None:
    charges = [cap("g", 1_000_000)]
    admitted(reserve(ledger, "x", 600_000, charges, ttl=10))
    ledger.mark_submitted("x", "req-x", now=T0 + 1)
    assert reserve(ledger, "y", 500_000, charges, now=T0 + 11) == Admission(
        admitted=False, refused_by="g", totals=BucketTotals("g", 600_000, 0)
    )
    ledger.expire(now=T0 + 11)
    assert ledger.get_hold("x").state == "expired"
    admitted(reserve(ledger, "y", 400_000, charges, now=T0 + 12))
    assert ledger.totals(["g"]) == [BucketTotals("g", 600_000, 400_000)]


# -- idempotency keys -----------------------------------------------------------------------------
def test_a_repeated_idempotency_key_replays_and_charges_once(ledger: Ledger) -> None:
    charges = [cap("g", 1_000_000)]
    first = admitted(reserve(ledger, "h1", 300_000, charges, idempotency_key="k1"))
    assert first.idempotency_key == "k1"
    again = reserve(ledger, "h2", 300_000, charges, idempotency_key="k1", now=T0 + 1)
    assert again == Admission(admitted=True, hold=first, replayed=True)
    with pytest.raises(HoldNotFound):
        ledger.get_hold("h2")
    assert ledger.totals(["g"]) == [BucketTotals("g", 0, 300_000)]

    admitted(reserve(ledger, "filler", 700_000, charges))  # the cap is now full
    assert reserve(ledger, "h3", 300_000, charges, idempotency_key="k1").replayed

    submitted = ledger.mark_submitted("h1", "req-1", now=T0 + 2)
    assert reserve(ledger, "h4", 300_000, charges, idempotency_key="k1").hold == submitted
    settled = ledger.settle("h1", None, now=T0 + 3)
    replay = reserve(ledger, "h5", 300_000, charges, idempotency_key="k1", now=T0 + 4)
    assert (replay.admitted, replay.replayed, replay.hold) == (True, True, settled)
    assert ledger.totals(["g"]) == [BucketTotals("g", 300_000, 700_000)]


def test_an_expired_key_replays(ledger: Ledger) -> None:
    charges = [cap("g", 1_000_000)]
    admitted(reserve(ledger, "h1", 300_000, charges, idempotency_key="k", ttl=10))
    ledger.mark_submitted("h1", "req", now=T0 + 1)
    replay = reserve(ledger, "h2", 300_000, charges, idempotency_key="k", now=T0 + 20)
    assert replay.replayed
    assert replay.hold is not None
    assert (replay.hold.id, replay.hold.state) == ("h1", "expired")
    assert ledger.totals(["g"]) == [BucketTotals("g", 300_000, 0)]


def test_a_released_key_is_admitted_afresh_on_the_same_row(ledger: Ledger) -> None:
    admitted(
        reserve(
            ledger, "h1", 300_000, [cap("A", 1_000_000)], idempotency_key="k", tags={"try": "1"}
        )
    )
    ledger.mark_submitted("h1", "req-1", now=T0 + 1)
    ledger.release("h1", now=T0 + 1)
    result = reserve(
        ledger,
        "h2",
        500_000,
        [cap("B", 1_000_000), cap("T", None)],
        idempotency_key="k",
        now=T0 + 2,
        tags={"try": "2"},
        table_version="v2",
    )
    assert result == Admission(
        admitted=True,
        replayed=False,
        hold=Hold(
            id="h1",
            endpoint=ENDPOINT,
            amount=500_000,
            state="held",
            buckets=("B", "T"),
            created_at=T0 + 2,
            expires_at=T0 + 602,
            updated_at=T0 + 2,
            idempotency_key="k",
            request_id=None,
            settled_amount=None,
            tags={"try": "2"},
            table_version="v2",
        ),
    )
    assert ledger.totals(["A", "B", "T"]) == [
        BucketTotals("A", 0, 0),
        BucketTotals("B", 0, 500_000),
        BucketTotals("T", 0, 500_000),
    ]
    assert ledger.holds(bucket="A") == []
    assert [h.id for h in ledger.holds(bucket="B")] == ["h1"]
    assert [h.id for h in ledger.holds()] == ["h1"]


def test_a_released_key_that_no_longer_fits_is_refused_and_stays_released(ledger: Ledger) -> None:
    charges = [cap("g", 1_000_000)]
    admitted(reserve(ledger, "h1", 300_000, charges, idempotency_key="k"))
    released = ledger.release("h1", now=T0 + 1)
    admitted(reserve(ledger, "other", 800_000, charges))
    result = reserve(ledger, "h2", 300_000, charges, idempotency_key="k", now=T0 + 2)
    assert (result.admitted, result.refused_by) == (False, "g")
    assert ledger.get_hold("h1") == released
    assert ledger.totals(["g"]) == [BucketTotals("g", 0, 800_000)]


def test_a_key_reused_with_another_fingerprint_is_a_conflict_and_writes_nothing(
    ledger: Ledger,
) -> None:
    charges = [cap("g", 1_000_000)]
    first = admitted(
        reserve(ledger, "h1", 300_000, charges, idempotency_key="k", fingerprint="fp-a")
    )
    assert first.fingerprint == "fp-a"
    for other in ("fp-b", None):
        result = reserve(ledger, "h2", 900_000, charges, idempotency_key="k", fingerprint=other)
        assert result == Admission(admitted=False, hold=first, conflict=True)
    with pytest.raises(HoldNotFound):
        ledger.get_hold("h2")
    assert ledger.totals(["g"]) == [BucketTotals("g", 0, 300_000)]
    # settled, the key still stands for its request only
    settled = ledger.settle("h1", None, now=T0 + 1)
    result = reserve(ledger, "h3", 300_000, charges, idempotency_key="k", fingerprint="fp-b")
    assert result == Admission(admitted=False, hold=settled, conflict=True)
    replay = reserve(ledger, "h4", 300_000, charges, idempotency_key="k", fingerprint="fp-a")
    assert replay == Admission(admitted=True, hold=settled, replayed=True)
    assert ledger.totals(["g"]) == [BucketTotals("g", 300_000, 0)]
    assert [h.id for h in ledger.holds()] == ["h1"]


def test_a_released_key_is_retried_only_for_its_own_request(ledger: Ledger) -> None:
    charges = [cap("g", 1_000_000)]
    admitted(reserve(ledger, "h1", 300_000, charges, idempotency_key="k", fingerprint="fp-a"))
    released = ledger.release("h1", now=T0 + 1)
    other = reserve(ledger, "h2", 300_000, charges, idempotency_key="k", fingerprint="fp-b")
    assert other == Admission(admitted=False, hold=released, conflict=True)
    assert ledger.get_hold("h1") == released
    again = admitted(
        reserve(
            ledger,
            "h3",
            400_000,  # the same request priced anew (a new price took effect)
            charges,
            idempotency_key="k",
            fingerprint="fp-a",
            idempotency_ttl=7_200.0,
            now=T0 + 2,
        )
    )
    assert (again.id, again.state, again.amount, again.fingerprint, again.idempotency_ttl) == (
        "h1",
        "held",
        400_000,
        "fp-a",
        7_200.0,
    )
    assert ledger.totals(["g"]) == [BucketTotals("g", 0, 400_000)]


def test_a_key_is_forgotten_only_once_its_lifetime_after_the_close_has_passed(
    ledger: Ledger,
) -> None:
    charges = [cap("g", 1_000_000)]
    first = admitted(
        reserve(
            ledger,
            "h1",
            300_000,
            charges,
            idempotency_key="k",
            fingerprint="fp-a",
            idempotency_ttl=100.0,
            ttl=10_000,
        )
    )
    assert first.idempotency_ttl == 100.0
    # open holds keep their key however long they stay open
    late = reserve(ledger, "x", 1, charges, idempotency_key="k", fingerprint="fp-b", now=T0 + 500)
    assert (late.conflict, late.hold) == (True, first)
    settled = ledger.settle("h1", None, now=T0 + 1_000)  # closes at T0 + 1000
    at_the_end = T0 + 1_100  # 1000 + 100: still remembered
    for fp, admission in (
        ("fp-b", Admission(admitted=False, hold=settled, conflict=True)),
        ("fp-a", Admission(admitted=True, hold=settled, replayed=True)),
    ):
        result = reserve(
            ledger, "x", 1, charges, idempotency_key="k", fingerprint=fp, now=at_the_end
        )
        assert result == admission
    # a moment later the key is free: a new request, a new hold, a new charge
    fresh = admitted(
        reserve(
            ledger,
            "h2",
            500_000,
            charges,
            idempotency_key="k",
            fingerprint="fp-b",
            idempotency_ttl=100.0,
            now=T0 + 1_100.5,
        )
    )
    assert (fresh.id, fresh.state, fresh.fingerprint) == ("h2", "held", "fp-b")
    assert ledger.totals(["g"]) == [BucketTotals("g", 300_000, 500_000)]
    # the key is bound to the new hold now; the old one keeps it in the history
    replay = reserve(
        ledger, "x", 1, charges, idempotency_key="k", fingerprint="fp-b", now=T0 + 1_101
    )
    assert (replay.replayed, replay.hold) == (True, fresh)
    old = reserve(ledger, "x", 1, charges, idempotency_key="k", fingerprint="fp-a", now=T0 + 1_101)
    assert (old.conflict, old.hold) == (True, fresh)
    assert [(h.id, h.idempotency_key) for h in ledger.holds()] == [("h2", "k"), ("h1", "k")]
    assert ledger.get_hold("h1") == settled


def test_a_forgotten_key_whose_new_request_does_not_fit_is_refused_and_stays_as_it_was(
    ledger: Ledger,
) -> None:
    charges = [cap("g", 1_000_000)]
    admitted(reserve(ledger, "h1", 600_000, charges, idempotency_key="k", idempotency_ttl=50.0))
    settled = ledger.settle("h1", None, now=T0 + 1)
    refused = reserve(ledger, "h2", 500_000, charges, idempotency_key="k", now=T0 + 100)
    assert (refused.admitted, refused.refused_by, refused.conflict) == (False, "g", False)
    with pytest.raises(HoldNotFound):
        ledger.get_hold("h2")
    assert ledger.get_hold("h1") == settled
    fits = admitted(reserve(ledger, "h3", 400_000, charges, idempotency_key="k", now=T0 + 101))
    assert fits.id == "h3"
    assert ledger.totals(["g"]) == [BucketTotals("g", 600_000, 400_000)]


def test_an_expired_hold_keeps_its_key_for_its_lifetime_from_the_expiry(ledger: Ledger) -> None:
    charges = [cap("g", 1_000_000)]
    admitted(
        reserve(ledger, "h1", 300_000, charges, ttl=10, idempotency_key="k", idempotency_ttl=60.0)
    )
    ledger.mark_submitted("h1", "req-1", now=T0 + 1)
    # this reservation's expiry step closes h1 at T0 + 20, then replays it
    replay = reserve(ledger, "x", 300_000, charges, idempotency_key="k", now=T0 + 20)
    assert replay.hold is not None
    assert (replay.replayed, replay.hold.state, replay.hold.updated_at) == (
        True,
        "expired",
        T0 + 20,
    )
    assert reserve(ledger, "x", 300_000, charges, idempotency_key="k", now=T0 + 80).replayed
    fresh = reserve(ledger, "h2", 300_000, charges, idempotency_key="k", now=T0 + 80.5)
    assert (fresh.admitted, fresh.replayed) == (True, False)
    assert fresh.hold is not None and fresh.hold.id == "h2"


def test_a_key_without_a_lifetime_is_remembered_for_ever(ledger: Ledger) -> None:
    charges = [cap("g", 1_000_000)]
    first = admitted(reserve(ledger, "h1", 300_000, charges, idempotency_key="k"))
    assert first.idempotency_ttl is None
    settled = ledger.settle("h1", None, now=T0 + 1)
    ten_years = T0 + 10 * 366 * 86_400
    replay = reserve(ledger, "h2", 300_000, charges, idempotency_key="k", now=ten_years)
    assert (replay.replayed, replay.hold) == (True, settled)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"idempotency_key": ""}, "idempotency_key must be None or a non-empty string, got ''"),
        ({"idempotency_key": 7}, "idempotency_key must be None or a non-empty string, got 7"),
        ({"fingerprint": b"x"}, "fingerprint must be None or a string, got b'x'"),
        ({"idempotency_ttl": 0}, "idempotency_ttl must be None or seconds above 0, got 0.0"),
        ({"idempotency_ttl": -5.0}, "idempotency_ttl must be None or seconds above 0, got -5.0"),
        ({"idempotency_ttl": float("inf")}, "idempotency_ttl must be a finite number"),
        ({"idempotency_ttl": True}, "idempotency_ttl must be a finite number"),
    ],
)
def test_bad_idempotency_arguments_are_refused_before_anything_is_written(
    ledger: Ledger, bad: dict[str, Any], message: str
) -> None:
    with pytest.raises(LedgerError, match=re.escape(message)):
        reserve(ledger, "h1", 300_000, [cap("g", 1_000_000)], **bad)
    assert ledger.holds() == []
    assert ledger.totals(["g"]) == [BucketTotals("g", 0, 0)]


def test_concurrent_reuses_of_a_forgotten_key_make_one_new_hold(
    ledger_factory: Callable[[], Ledger],
) -> None:
    setup = ledger_factory()
    charges = [cap("g", 10_000_000)]
    admitted(reserve(setup, "old", 800_000, charges, idempotency_key="k", idempotency_ttl=10.0))
    setup.settle("old", None, now=T0 + 1)
    workers = [ledger_factory() for _ in range(6)]
    barrier = threading.Barrier(len(workers))
    results: list[Admission] = []
    errors: list[BaseException] = []

    def retry(n: int, ledger: Ledger) -> None:
        try:
            barrier.wait(timeout=30)
            results.append(
                reserve(
                    ledger,
                    f"new-{n}",
                    700_000,
                    charges,
                    idempotency_key="k",
                    idempotency_ttl=10.0,
                    now=T0 + 60,
                )
            )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=retry, args=(n, w)) for n, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(r.replayed for r in results) == [False] + [True] * 5
    assert len({r.hold.id for r in results if r.hold is not None}) == 1
    assert setup.totals(["g"]) == [BucketTotals("g", 800_000, 700_000)]
    assert len(setup.holds()) == 2


# -- alerts, lookups, history ---------------------------------------------------------------------
def test_claim_alert_is_true_only_once(ledger_factory: Callable[[], Ledger]) -> None:
    first, second = ledger_factory(), ledger_factory()
    assert first.claim_alert("global|2025-06", "0.8@10.00") is True
    assert first.claim_alert("global|2025-06", "0.8@10.00") is False
    assert second.claim_alert("global|2025-06", "0.8@10.00") is False
    assert second.claim_alert("global|2025-06", "0.9@10.00") is True
    assert first.claim_alert("global|2025-07", "0.8@10.00") is True


def test_an_unknown_hold_raises_hold_not_found(ledger: Ledger) -> None:
    calls: list[Callable[[], object]] = [
        lambda: ledger.get_hold("nope"),
        lambda: ledger.mark_submitted("nope", "req", now=T0),
        lambda: ledger.renew("nope", now=T0, expires_at=T0 + 1),
        lambda: ledger.settle("nope", None, now=T0),
        lambda: ledger.release("nope", now=T0),
    ]
    for call in calls:
        with pytest.raises(HoldNotFound) as info:
            call()
        assert isinstance(info.value, LedgerError)
        assert isinstance(info.value, LookupError)


def test_totals_of_unknown_buckets_read_zero_in_the_given_order(ledger: Ledger) -> None:
    admitted(reserve(ledger, "h", 5, [cap("b", None)]))
    assert ledger.totals(["x", "b", "x"]) == [
        BucketTotals("x", 0, 0),
        BucketTotals("b", 0, 5),
        BucketTotals("x", 0, 0),
    ]
    assert ledger.totals([]) == []


def test_holds_filters_and_orders_newest_first(ledger: Ledger) -> None:
    a, b = cap("a", None), cap("b", None)
    admitted(reserve(ledger, "h1", 1, [a], now=T0 + 1))
    admitted(reserve(ledger, "h2", 2, [a, b], now=T0 + 2))
    admitted(reserve(ledger, "h3", 3, [b], now=T0 + 3))
    admitted(reserve(ledger, "h4", 4, [a], now=T0 + 4))
    admitted(reserve(ledger, "h5", 5, [b], now=T0 + 5))
    ledger.settle("h1", None, now=T0 + 6)
    ledger.release("h3", now=T0 + 6)
    ledger.mark_submitted("h4", "req-4", now=T0 + 6)

    def ids(**query: Any) -> list[str]:
        return [h.id for h in ledger.holds(**query)]

    assert ids() == ["h5", "h4", "h3", "h2", "h1"]
    assert ids(states=["held", "submitted"]) == ["h5", "h4", "h2"]
    assert ids(states=["settled", "released"]) == ["h3", "h1"]
    assert ids(states=[]) == []
    assert ids(bucket="a") == ["h4", "h2", "h1"]
    assert ids(bucket="b", states=["held"]) == ["h5", "h2"]
    assert ids(since=T0 + 2, until=T0 + 4) == ["h3", "h2"]
    assert ids(bucket="a", since=T0 + 2) == ["h4", "h2"]
    assert ids(until=T0 + 1) == []
    assert ids(limit=2) == ["h5", "h4"]
    assert ids(bucket="b", limit=1) == ["h5"]
    assert ids(bucket="nowhere") == []
    assert ledger.holds(bucket="a", limit=1)[0] == ledger.get_hold("h4")


def test_buckets_by_prefix(ledger: Ledger) -> None:
    """``buckets(prefix=)``: not in base.Ledger, but the guard's cap status needs it."""
    admitted(reserve(ledger, "h1", 7, [cap("project=a|2025-06", None), cap("global|2025-06", 100)]))
    admitted(reserve(ledger, "h2", 9, [cap("project=b|2025-06", None)]))
    ledger.settle("h2", 8, now=T0 + 1)
    list_buckets: Any = ledger.buckets  # type: ignore[attr-defined]
    assert list_buckets(prefix="project=") == [
        BucketTotals("project=a|2025-06", 0, 7),
        BucketTotals("project=b|2025-06", 8, 0),
    ]
    assert list_buckets(prefix="global|") == [BucketTotals("global|2025-06", 0, 7)]
    assert list_buckets(prefix="nothing") == []
    assert [t.key for t in list_buckets()] == [
        "global|2025-06",
        "project=a|2025-06",
        "project=b|2025-06",
    ]


def test_a_second_ledger_object_sees_the_same_store(ledger_factory: Callable[[], Ledger]) -> None:
    first = ledger_factory()
    charges = [cap("g", 1_000_000)]
    admitted(reserve(first, "h1", 600_000, charges))
    second = ledger_factory()
    assert second.totals(["g"]) == [BucketTotals("g", 0, 600_000)]
    assert second.get_hold("h1") == first.get_hold("h1")
    assert reserve(second, "h2", 400_001, charges).refused_by == "g"
    second.settle("h1", 550_000, now=T0 + 1)
    assert first.totals(["g"]) == [BucketTotals("g", 550_000, 0)]
    assert first.get_hold("h1").state == "settled"
    admitted(reserve(first, "h3", 450_000, charges))
    assert reserve(second, "h4", 1, charges).refused_by == "g"


# -- adjustments (reconciliation with fal's records) ---------------------------------------------
def test_adjust_a_settled_hold_down_then_up(ledger: Ledger) -> None:
    charges = [cap("g", 10_000_000), cap("t", None)]
    admitted(reserve(ledger, "h", 800_000, charges))
    settled = ledger.settle("h", None, now=T0 + 5)
    down = ledger.adjust("h", 650_000, now=T0 + 100, reason="fal billed 0.65", source="file.json")
    # 650_000 - 800_000 = -150_000 in every bucket of the hold
    assert down == Adjustment(
        id=1,
        hold_id="h",
        previous=800_000,
        amount=650_000,
        delta=-150_000,
        reason="fal billed 0.65",
        source="file.json",
        created_at=T0 + 100,
    )
    assert ledger.totals(["g", "t"]) == [
        BucketTotals("g", 650_000, 0),
        BucketTotals("t", 650_000, 0),
    ]
    hold = ledger.get_hold("h")
    # the history stays: state, settled amount and times as settle left them
    assert hold == replace(settled, adjusted_amount=650_000)
    assert (hold.settled_amount, hold.spent_amount, hold.counts_as_spent) == (
        800_000,
        650_000,
        True,
    )
    up = ledger.adjust("h", 900_000, now=T0 + 200, reason="revised", source="api")
    assert up is not None
    # 900_000 - 650_000 = +250_000
    assert (up.id, up.previous, up.amount, up.delta) == (2, 650_000, 900_000, 250_000)
    assert ledger.totals(["g", "t"]) == [
        BucketTotals("g", 900_000, 0),
        BucketTotals("t", 900_000, 0),
    ]
    assert ledger.get_hold("h").adjusted_amount == 900_000
    assert ledger.adjustments("h") == [down, up]
    assert ledger.adjustments() == [down, up]


def test_adjust_an_expired_hold_down_to_zero_in_every_bucket(ledger: Ledger) -> None:
    charges = [cap("a", 5_000_000), cap("b", 5_000_000), cap("t", None)]
    admitted(reserve(ledger, "other", 300_000, charges))
    ledger.settle("other", None, now=T0 + 1)
    admitted(reserve(ledger, "lost", 600_000, charges, ttl=10))
    ledger.mark_submitted("lost", "req-lost", now=T0 + 1)
    ledger.expire(now=T0 + 20)  # the process died: counted as spent at the quote
    assert ledger.totals(["a"]) == [BucketTotals("a", 900_000, 0)]  # 300_000 + 600_000
    row = ledger.adjust("lost", 0, now=T0 + 30, reason="never billed", source="billing.csv")
    assert row is not None and (row.previous, row.amount, row.delta) == (600_000, 0, -600_000)
    assert ledger.totals(["a", "b", "t"]) == [
        BucketTotals("a", 300_000, 0),
        BucketTotals("b", 300_000, 0),
        BucketTotals("t", 300_000, 0),
    ]
    hold = ledger.get_hold("lost")
    assert (hold.state, hold.settled_amount, hold.adjusted_amount, hold.spent_amount) == (
        "expired",
        600_000,
        0,
        0,
    )
    # the room is back: 5_000_000 - 300_000 = 4_700_000 fits, one more micro does not
    assert reserve(ledger, "big", 4_700_001, charges).refused_by == "a"
    admitted(reserve(ledger, "big", 4_700_000, charges))


def test_adjust_a_released_hold_that_fal_billed(ledger: Ledger) -> None:
    charges = [cap("g", 10_000_000)]
    admitted(reserve(ledger, "h1", 800_000, charges, idempotency_key="job-1"))
    ledger.mark_submitted("h1", "req-1", now=T0 + 1)
    released = ledger.release("h1", now=T0 + 2)
    assert (released.spent_amount, released.counts_as_spent) == (0, False)
    row = ledger.adjust("h1", 400_000, now=T0 + 50, reason="billed", source="api")
    assert row is not None and (row.previous, row.amount, row.delta) == (0, 400_000, 400_000)
    assert ledger.totals(["g"]) == [BucketTotals("g", 400_000, 0)]
    hold = ledger.get_hold("h1")
    assert (hold.state, hold.settled_amount, hold.adjusted_amount) == ("released", None, 400_000)
    assert (hold.spent_amount, hold.counts_as_spent) == (400_000, True)
    # fal ran it: a retry with the same key replays it instead of sending it again
    again = reserve(ledger, "h2", 800_000, charges, idempotency_key="job-1", now=T0 + 60)
    assert (again.admitted, again.replayed, again.hold) == (True, True, hold)
    assert ledger.totals(["g"]) == [BucketTotals("g", 400_000, 0)]


def test_a_released_hold_adjusted_back_to_zero_is_released_again(ledger: Ledger) -> None:
    charges = [cap("g", 10_000_000)]
    admitted(reserve(ledger, "h1", 800_000, charges, idempotency_key="job-1"))
    ledger.mark_submitted("h1", "req-1", now=T0 + 1)
    ledger.release("h1", now=T0 + 2)
    up = ledger.adjust("h1", 400_000, now=T0 + 50, reason="billed", source="a.csv")
    down = ledger.adjust("h1", 0, now=T0 + 51, reason="not billed after all", source="b.csv")
    assert up is not None and down is not None
    assert (down.previous, down.amount, down.delta) == (400_000, 0, -400_000)
    hold = ledger.get_hold("h1")
    # fal billed nothing: not a request, as before the first adjustment
    assert (hold.state, hold.adjusted_amount, hold.spent_amount, hold.counts_as_spent) == (
        "released",
        0,
        0,
        False,
    )
    assert ledger.totals(["g"]) == [BucketTotals("g", 0, 0)]  # + 400_000 - 400_000
    # so its key is admitted afresh, on the same row, without the old adjusted amount
    again = admitted(reserve(ledger, "h2", 700_000, charges, idempotency_key="job-1", now=T0 + 60))
    assert (again.id, again.state, again.amount, again.adjusted_amount) == (
        "h1",
        "held",
        700_000,
        None,
    )
    assert ledger.get_hold("h1").adjusted_amount is None
    assert ledger.totals(["g"]) == [BucketTotals("g", 0, 700_000)]
    settled = ledger.settle("h1", None, now=T0 + 61)
    # counted at its new settlement, in the hold and in its bucket alike
    assert (settled.spent_amount, settled.counts_as_spent) == (700_000, True)
    assert ledger.totals(["g"]) == [BucketTotals("g", 700_000, 0)]
    assert ledger.adjustments("h1") == [up, down]  # the audit trail of its first life stays


def test_a_hold_adjusted_to_zero_no_longer_counts_as_a_request(ledger: Ledger) -> None:
    charges = [cap("g", 10_000_000)]
    admitted(reserve(ledger, "lost", 600_000, charges, ttl=10, idempotency_key="job-2"))
    ledger.mark_submitted("lost", "req-lost", now=T0 + 1)
    ledger.expire(now=T0 + 20)
    assert ledger.get_hold("lost").counts_as_spent
    ledger.adjust("lost", 0, now=T0 + 30, reason="never billed", source="billing.csv")
    hold = ledger.get_hold("lost")
    assert (hold.state, hold.spent_amount, hold.counts_as_spent) == ("expired", 0, False)
    # an expired hold is not re-admitted: fal accepted the request; its key replays
    replay = reserve(ledger, "next", 600_000, charges, idempotency_key="job-2", now=T0 + 40)
    assert (replay.admitted, replay.replayed, replay.hold) == (True, True, hold)


def test_the_same_adjustment_twice_writes_nothing(ledger: Ledger) -> None:
    charges = [cap("g", 10_000_000)]
    admitted(reserve(ledger, "h", 800_000, charges))
    ledger.settle("h", 700_000, now=T0 + 1)
    assert ledger.adjust("h", 700_000, now=T0 + 2, reason="same", source="f") is None
    first = ledger.adjust("h", 550_000, now=T0 + 3, reason="billed", source="f")
    assert first is not None
    assert ledger.adjust("h", 550_000, now=T0 + 4, reason="billed", source="f") is None
    assert ledger.adjust("h", 550_000, now=T0 + 5, reason="again", source="other") is None
    assert ledger.adjustments() == [first]
    assert ledger.totals(["g"]) == [BucketTotals("g", 550_000, 0)]
    admitted(reserve(ledger, "r", 100, charges))
    ledger.release("r", now=T0 + 6)
    assert ledger.adjust("r", 0, now=T0 + 7, reason="nothing billed", source="f") is None
    assert ledger.adjustments() == [first]


def test_an_adjustment_may_go_over_the_limit_and_then_refuses(ledger: Ledger) -> None:
    charges = [cap("g", 1_000_000)]
    admitted(reserve(ledger, "h", 800_000, charges))
    ledger.settle("h", None, now=T0 + 1)
    assert ledger.adjust("h", 1_100_000, now=T0 + 2, reason="billed", source="f") is not None
    assert ledger.totals(["g"]) == [BucketTotals("g", 1_100_000, 0)]
    assert reserve(ledger, "next", 0, charges) == Admission(
        admitted=False, refused_by="g", totals=BucketTotals("g", 1_100_000, 0)
    )


@pytest.mark.parametrize(
    ("hold_id", "amount", "reason", "source", "error"),
    [
        ("open", 1, "r", "s", LedgerError),
        ("sent", 1, "r", "s", LedgerError),
        ("nope", 1, "r", "s", HoldNotFound),
        ("done", -1, "r", "s", LedgerError),
        ("done", 0.5, "r", "s", LedgerError),
        ("done", True, "r", "s", LedgerError),
        ("done", 2**63, "r", "s", LedgerError),
        ("done", 1, "", "s", LedgerError),
        ("done", 1, "r", " ", LedgerError),
        ("done", 1, None, "s", LedgerError),
    ],
    ids=[
        "held",
        "submitted",
        "unknown",
        "negative",
        "float",
        "bool",
        "over-64-bit",
        "no-reason",
        "blank-source",
        "reason-none",
    ],
)
def test_adjust_refuses_bad_holds_and_values(
    ledger: Ledger, hold_id: str, amount: Any, reason: Any, source: Any, error: type[Exception]
) -> None:
    charges = [cap("g", 10_000_000)]
    admitted(reserve(ledger, "open", 100_000, charges))
    admitted(reserve(ledger, "sent", 200_000, charges))
    ledger.mark_submitted("sent", "req-sent", now=T0 + 1)
    admitted(reserve(ledger, "done", 300_000, charges))
    ledger.settle("done", None, now=T0 + 1)
    before = [ledger.get_hold(h) for h in ("open", "sent", "done")]
    with pytest.raises(error) as info:
        ledger.adjust(hold_id, amount, now=T0 + 2, reason=reason, source=source)
    if hold_id in ("open", "sent"):
        assert "settle or release it first" in str(info.value)
    assert ledger.adjustments() == []
    assert ledger.totals(["g"]) == [BucketTotals("g", 300_000, 300_000)]
    assert [ledger.get_hold(h) for h in ("open", "sent", "done")] == before


def test_an_adjustment_past_the_largest_total_is_refused(ledger: Ledger) -> None:
    top = 2**63 - 1  # the largest total a ledger stores
    admitted(reserve(ledger, "big", top - 10, [cap("t", None)]))
    admitted(reserve(ledger, "small", 10, [cap("t", None)]))
    ledger.settle("big", None, now=T0 + 1)
    ledger.settle("small", None, now=T0 + 1)
    with pytest.raises(LedgerError, match="would exceed"):
        ledger.adjust("small", 11, now=T0 + 2, reason="r", source="s")
    assert ledger.totals(["t"]) == [BucketTotals("t", top, 0)]
    assert ledger.adjustments() == []
    assert ledger.get_hold("small").adjusted_amount is None


def test_the_audit_trail_is_in_order_and_per_hold(ledger_factory: Callable[[], Ledger]) -> None:
    first = ledger_factory()
    charges = [cap("g", 10_000_000)]
    for hold_id in ("h1", "h2"):
        admitted(reserve(first, hold_id, 500_000, charges))
        first.settle(hold_id, None, now=T0 + 1)
    a = first.adjust("h1", 400_000, now=T0 + 10, reason="one", source="s1")
    b = first.adjust("h2", 600_000, now=T0 + 11, reason="two", source="s2")
    second = ledger_factory()
    c = second.adjust("h1", 450_000, now=T0 + 12, reason="three", source="s3")
    assert a is not None and b is not None and c is not None
    assert [x.id for x in (a, b, c)] == [1, 2, 3]
    assert (c.previous, c.delta) == (400_000, 50_000)
    assert first.adjustments() == [a, b, c]
    assert second.adjustments("h1") == [a, c]
    assert second.adjustments("h2") == [b]
    assert second.adjustments("nope") == []
    # 450_000 + 600_000
    assert first.totals(["g"]) == [BucketTotals("g", 1_050_000, 0)]


def test_concurrent_identical_adjustments_write_one_row(
    ledger_factory: Callable[[], Ledger],
) -> None:
    """Two reconcilers applying the same file at once: one adjustment, counted once."""
    setup = ledger_factory()
    admitted(reserve(setup, "h", 800_000, [cap("g", 10_000_000)]))
    setup.settle("h", None, now=T0 + 1)
    workers = [ledger_factory() for _ in range(6)]
    barrier = threading.Barrier(len(workers))
    results: list[Adjustment | None] = []
    errors: list[BaseException] = []

    def apply(ledger: Ledger) -> None:
        try:
            barrier.wait(timeout=30)
            results.append(ledger.adjust("h", 550_000, now=T0 + 2, reason="r", source="s"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=apply, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    written = [r for r in results if r is not None]
    assert len(results) == 6 and len(written) == 1
    assert setup.adjustments() == written
    assert setup.totals(["g"]) == [BucketTotals("g", 550_000, 0)]


def test_holds_by_request_id(ledger: Ledger) -> None:
    charges = [cap("g", None)]
    for n in (1, 2, 3):
        admitted(reserve(ledger, f"h{n}", n, charges, now=T0 + n))
    ledger.mark_submitted("h3", "req-3", now=T0 + 4)
    ledger.mark_submitted("h1", "req-1", now=T0 + 4)
    ledger.settle("h1", None, now=T0 + 5)
    found = ledger.holds_by_request_id(["req-3", "nope", "req-1", "req-1"])
    assert found == [ledger.get_hold("h1"), ledger.get_hold("h3")]  # oldest first
    assert ledger.holds_by_request_id([]) == []
    assert ledger.holds_by_request_id(["nope"]) == []
    with pytest.raises(LedgerError):
        ledger.holds_by_request_id("req-1")
    many = [f"req-{n}" for n in range(1_200)]  # more than one statement's worth
    assert [h.id for h in ledger.holds_by_request_id(many)] == ["h1", "h3"]


# -- a random walk against a model written for the test -------------------------------------------
LIMITS: dict[str, int | None] = {"a": 1_000_000, "b": 1_500_000, "t": None}
EXAMPLES = itertools.count()

operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("reserve"),
            st.sampled_from([0, 1, 250_000, 500_000, 750_000]) | st.integers(0, 700_000),
            st.sampled_from([("a",), ("b",), ("a", "b"), ("b", "a", "t"), ("t",)]),
            st.sampled_from([None, "k1", "k1", "k2"]),
            st.sampled_from([5.0, 20.0]),
            st.sampled_from(["f1", "f1", "f2"]),  # the fingerprint: what the key stands for
            st.sampled_from([None, 10.0, 10.0]),  # the key's lifetime after its hold closes
        ),
        st.tuples(st.just("settle"), st.integers(0, 30), st.none() | st.integers(0, 900_000)),
        st.tuples(st.just("release"), st.integers(0, 30)),
        st.tuples(st.just("submit"), st.integers(0, 30)),
        st.tuples(st.just("renew"), st.integers(0, 30), st.sampled_from([3.0, 30.0])),
        st.tuples(st.just("tick"), st.sampled_from([1.0, 7.0, 30.0])),
        st.tuples(st.just("adjust"), st.integers(0, 30), st.integers(0, 900_000)),
        st.tuples(st.just("expire")),
    ),
    min_size=4,
    max_size=30,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
def test_random_operations_match_a_model(ledger: Ledger, ops: list[tuple[Any, ...]]) -> None:
    """Each example works in its own bucket and hold namespace on the shared store."""
    ns = f"ex{next(EXAMPLES)}:"
    now = T0
    model: dict[str, dict[str, Any]] = {}
    """hold id -> state, amount, buckets, expires_at, spent (as closed), adjusted, fp (the
    fingerprint), kttl (the key's lifetime), closed_at"""
    by_key: dict[str, str] = {}
    order: list[str] = []

    def model_expire() -> set[str]:
        closed = set()
        for hold_id, h in model.items():
            if h["state"] in ("held", "submitted") and h["expires_at"] < now:
                h["spent"] = h["amount"] if h["state"] == "submitted" else None
                h["state"] = "expired" if h["state"] == "submitted" else "released"
                h["closed_at"] = now
                closed.add(hold_id)
        return closed

    def spent_of(h: dict[str, Any]) -> int:
        return int(h["adjusted"] if h["adjusted"] is not None else h["spent"] or 0)

    def model_totals(bucket: str) -> tuple[int, int]:
        settled = sum(spent_of(h) for h in model.values() if bucket in h["buckets"])
        held = sum(
            h["amount"]
            for h in model.values()
            if bucket in h["buckets"] and h["state"] in ("held", "submitted")
        )
        return settled, held

    # the walk always ends by expiring every hold still open
    for step, op in enumerate([*ops, ("tick", 100.0), ("expire",)]):
        kind = op[0]
        picks_a_hold = kind in ("settle", "release", "submit", "renew", "adjust") and order
        target = ns + order[op[1] % len(order)] if picks_a_hold else None
        if kind == "reserve":
            _, amount, buckets, key, ttl, fp, kttl = op
            model_expire()
            hold_id = f"h{step}"
            result = ledger.reserve(
                hold_id=ns + hold_id,
                endpoint=ENDPOINT,
                amount=amount,
                charges=[BucketCharge(ns + b, LIMITS[b]) for b in buckets],
                now=now,
                expires_at=now + ttl,
                idempotency_key=None if key is None else ns + key,
                fingerprint=fp,
                idempotency_ttl=kttl,
            )
            existing = by_key.get(key) if key is not None else None
            if existing is not None:
                old = model[existing]
                if old["state"] not in ("held", "submitted") and (
                    old["kttl"] is not None and old["closed_at"] + old["kttl"] < now
                ):
                    existing = None  # forgotten: a new request
                elif old["fp"] != fp:
                    assert (result.admitted, result.conflict) == (False, True), result
                    assert result.hold is not None and result.hold.id == ns + existing
                    continue
            replays = existing is not None and (
                model[existing]["state"] != "released" or (model[existing]["adjusted"] or 0) > 0
            )
            if replays:
                assert (result.admitted, result.replayed) == (True, True)
                assert result.hold is not None and result.hold.id == ns + existing
                continue
            refusing = [
                b
                for b in buckets
                if (limit := LIMITS[b]) is not None and sum(model_totals(b)) + amount > limit
            ]
            if refusing:
                assert result.refused_by == ns + refusing[0]
                assert result.totals == BucketTotals(ns + refusing[0], *model_totals(refusing[0]))
                continue
            assert (result.admitted, result.replayed) == (True, False), result
            row_id = existing if existing is not None else hold_id
            model[row_id] = {
                "state": "held",
                "amount": amount,
                "buckets": set(buckets),
                "expires_at": now + ttl,
                "spent": None,
                "adjusted": None,
                "fp": fp,
                "kttl": kttl,
                "closed_at": None,
            }
            if existing is None:
                order.append(hold_id)
            if key is not None:
                by_key[key] = row_id
        elif kind == "tick":
            now += op[1]
        elif kind == "expire":
            closed = {h.id for h in ledger.expire(now=now) if h.id.startswith(ns)}
            assert closed == {ns + i for i in model_expire()}
        elif target is not None:
            h = model[target.removeprefix(ns)]
            is_open = h["state"] in ("held", "submitted")
            if kind == "settle":
                ledger.settle(target, op[2], now=now)
                if is_open:
                    h["state"], h["spent"] = "settled", h["amount"] if op[2] is None else op[2]
                    h["closed_at"] = now
            elif kind == "release":
                ledger.release(target, now=now)
                if is_open:
                    h["state"], h["closed_at"] = "released", now
            elif kind == "submit":
                ledger.mark_submitted(target, "req", now=now)
                if is_open:
                    h["state"] = "submitted"
            elif kind == "renew":
                ledger.renew(target, now=now, expires_at=now + op[2])
                if is_open:
                    h["expires_at"] = now + op[2]
            elif kind == "adjust":
                if is_open:
                    with pytest.raises(LedgerError):
                        ledger.adjust(target, op[2], now=now, reason="walk", source="model")
                    continue
                before = spent_of(h)
                row = ledger.adjust(target, op[2], now=now, reason="walk", source="model")
                if before == op[2]:
                    assert row is None
                else:
                    assert row is not None
                    assert (row.hold_id, row.previous, row.amount) == (target, before, op[2])
                    h["adjusted"] = op[2]

    for b in LIMITS:
        assert ledger.totals([ns + b]) == [BucketTotals(ns + b, *model_totals(b))]
    for hold_id, h in model.items():
        row = ledger.get_hold(ns + hold_id)
        assert (row.state, row.amount, row.settled_amount, row.adjusted_amount) == (
            h["state"],
            h["amount"],
            h["spent"],
            h["adjusted"],
        )
        assert set(row.buckets) == {ns + b for b in h["buckets"]}
        assert (row.fingerprint, row.idempotency_ttl) == (h["fp"], h["kttl"])


# -- summarize: reports computed in the ledger ---------------------------------------------------
def _every_kind_of_hold(ledger: Ledger) -> None:
    """Eight holds of one endpoint, tags and bucket (created T0+1 .. T0+8) and one of project b;
    their figures are written out in the summarize tests."""
    g = [cap("global|total", None)]
    a = {"project": "a"}
    reserve(ledger, "settled", 1_000, g, now=T0 + 1, tags=a)
    ledger.settle("settled", 700, now=T0 + 1)  # spent 700
    reserve(ledger, "held", 500, g, now=T0 + 2, tags=a)  # held 500, open
    reserve(ledger, "expired", 300, g, now=T0 + 3, tags=a, ttl=1.0)
    ledger.mark_submitted("expired", "req-3", now=T0 + 3)
    reserve(ledger, "released", 400, g, now=T0 + 4, tags=a)
    ledger.release("released", now=T0 + 4)  # nothing
    reserve(ledger, "over", 1_000, g, now=T0 + 5, tags=a)
    ledger.settle("over", None, now=T0 + 5)
    ledger.adjust("over", 1_500, now=T0 + 5, reason="bill", source="test")  # spent 1500, +500
    reserve(ledger, "billed", 400, g, now=T0 + 6, tags=a)
    ledger.release("billed", now=T0 + 6)
    ledger.adjust("billed", 200, now=T0 + 6, reason="bill", source="test")  # spent 200, counts
    reserve(ledger, "zeroed", 600, g, now=T0 + 7, tags=a)
    ledger.settle("zeroed", 600, now=T0 + 7)
    ledger.adjust("zeroed", 0, now=T0 + 7, reason="bill", source="test")  # spent 0, no request
    reserve(ledger, "sub", 250, g, now=T0 + 8, tags=a)
    ledger.mark_submitted("sub", "req-8", now=T0 + 8)  # held 250, open
    reserve(ledger, "other", 90, g, now=T0 + 8, tags={"project": "b"})
    ledger.settle("other", None, now=T0 + 8)
    ledger.expire(now=T0 + 100)  # "expired" (ttl 1 s, submitted) -> expired, spent 300


def test_summarize_sums_every_kind_of_hold_in_the_ledger(ledger: Ledger) -> None:
    _every_kind_of_hold(ledger)
    groups = sorted(ledger.summarize(), key=lambda g: g.tags["project"])
    assert len(groups) == 2
    a, b = groups
    assert (a.endpoint, dict(a.tags), a.buckets) == (ENDPOINT, {"project": "a"}, ("global|total",))
    assert (a.first, a.last, a.holds) == (T0 + 1, T0 + 8, 8)
    # spent 700 + 300 + 1500 + 200 + 0; held 500 + 250
    assert (a.spent, a.held) == (2_700, 750)
    # requests: settled, expired, over, billed; open: held, sub
    assert (a.requests, a.open, a.expired, a.released) == (4, 2, 1, 1)
    assert (a.overruns, a.overrun) == (1, 500)
    assert (b.holds, b.spent, b.held, b.requests, b.first, b.last) == (1, 90, 0, 1, T0 + 8, T0 + 8)


def test_summarize_agrees_with_holds_read_one_by_one(ledger: Ledger) -> None:
    _every_kind_of_hold(ledger)
    one_by_one = {hold.id: HoldGroup.of(hold) for hold in ledger.holds()}
    # a period of one second and T0 an integer: every hold of project a is its own group
    summed = ledger.summarize(period=1)
    assert len(summed) == 9  # eight of project a, one of project b
    by_moment = {(g.first, g.tags["project"]): g for g in summed}
    for hold in ledger.holds():
        assert by_moment[hold.created_at, hold.tags["project"]] == one_by_one[hold.id]


def test_summarize_groups_by_period_and_cut_and_keeps_to_the_range(ledger: Ledger) -> None:
    _every_kind_of_hold(ledger)
    # periods of 4 s from T0 (a multiple of 4): [T0, T0+4) and [T0+4, T0+8) and [T0+8, ...)
    a_groups = sorted(
        (g.first, g.last, g.holds) for g in ledger.summarize(period=4) if g.tags["project"] == "a"
    )
    assert a_groups == [(T0 + 1, T0 + 3, 3), (T0 + 4, T0 + 7, 4), (T0 + 8, T0 + 8, 1)]
    # a cut at T0 + 2.5 splits the first day's group; the offset moves the periods' edges
    cut = sorted(
        (g.first, g.last, g.holds)
        for g in ledger.summarize(period=86_400, offset=-int(T0), cuts=[T0 + 2.5])
        if g.tags["project"] == "a"
    )
    assert cut == [(T0 + 1, T0 + 2, 2), (T0 + 3, T0 + 8, 6)]
    # since included, until excluded
    ranged = ledger.summarize(since=T0 + 2, until=T0 + 8)
    assert [(g.first, g.last, g.holds, g.spent) for g in ranged] == [
        (T0 + 2, T0 + 7, 6, 300 + 1_500 + 200)
    ]


def test_holds_of_many_visitors_keep_their_own_tags_and_buckets_and_sum_into_one_group(
    ledger: Ledger,
) -> None:
    """The proxy tags each request with the client's address (``ip``) and virtual key
    (``key``), and caps per address charge a bucket per address: a hold reads back with its
    own tags and buckets in their order, the history by a visitor's bucket finds its holds,
    and the summary groups what the holds share (50 addresses: one group, not 50)."""
    day = "day@UTC:2025-06-15"
    for n in range(50):
        ip = f"10.0.0.{n}"
        charges = [
            cap("global|total", None),
            cap(f"ip={ip}|{day}", 1_000),
            cap("project=a|total", None),
            cap(f"key=k{n % 2}|total", None),
        ]
        tags = {"project": "a", "ip": ip, "key": f"k{n % 2}"}
        hold = admitted(reserve(ledger, f"h{n}", 100 + n, charges, now=T0 + n, tags=tags))
        assert hold.buckets == tuple(c.key for c in charges)
        assert dict(hold.tags) == tags
        ledger.settle(f"h{n}", None, now=T0 + n)
    again = ledger.get_hold("h7")
    assert again.buckets == (
        "global|total",
        f"ip=10.0.0.7|{day}",
        "project=a|total",
        "key=k1|total",
    )
    assert dict(again.tags) == {"project": "a", "ip": "10.0.0.7", "key": "k1"}
    assert [h.id for h in ledger.holds(bucket=f"ip=10.0.0.7|{day}")] == ["h7"]
    assert [h.id for h in ledger.holds(bucket="key=k1|total", limit=2)] == ["h49", "h47"]
    # an address's cap admits up to its limit: 10.0.0.7 spent 107 of 1,000, 894 more is refused
    refused = reserve(ledger, "x", 894, [cap(f"ip=10.0.0.7|{day}", 1_000)], now=T0 + 60)
    assert not refused.admitted and refused.refused_by == f"ip=10.0.0.7|{day}"
    # the address is left out of the groups, the virtual key (made by an operator) is not:
    # two groups, not 50
    groups = sorted(ledger.summarize(period=10**9), key=lambda g: g.tags["key"])
    assert [(g.endpoint, dict(g.tags), g.buckets) for g in groups] == [
        (
            ENDPOINT,
            {"project": "a", "key": k},
            ("global|total", "project=a|total", f"key={k}|total"),
        )
        for k in ("k0", "k1")
    ]
    # k0, the even n: 100 + 102 + ... + 148 = 25 * (100 + 148) / 2 = 3,100;
    # k1, the odd n: 101 + 103 + ... + 149 = 25 * (101 + 149) / 2 = 3,125 (6,225 in all)
    assert [(g.holds, g.spent, g.requests, g.first, g.last) for g in groups] == [
        (25, 3_100, 25, T0, T0 + 48),
        (25, 3_125, 25, T0 + 1, T0 + 49),
    ]
    assert HoldGroup.of(again).tags == {"project": "a", "key": "k1"}


@pytest.mark.parametrize(
    "bad",
    [{"period": 0}, {"period": 1.5}, {"offset": "1"}, {"cuts": "1"}, {"cuts": [math.nan]}],
)
def test_summarize_refuses_bad_arguments(ledger: Ledger, bad: dict[str, Any]) -> None:
    with pytest.raises(LedgerError, match=next(iter(bad))):
        ledger.summarize(**bad)


def test_iter_holds_streams_the_history_newest_first_across_pages(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seven holds, three created at the same moment (ties: the later reservation first); on
    PostgreSQL pages of two holds, so the page edges fall inside the tie."""
    from falbudget.ledger import postgres

    monkeypatch.setattr(postgres, "PAGE", 2)
    a = [cap("a", None)]
    moments = [T0 + 1, T0 + 2, T0 + 2, T0 + 2, T0 + 3, T0 + 4, T0 + 5]
    for number, moment in enumerate(moments, start=1):
        admitted(reserve(ledger, f"h{number}", number, a, now=moment))
    ledger.settle("h2", None, now=T0 + 6)
    ledger.release("h6", now=T0 + 6)

    def ids(**query: Any) -> list[str]:
        stream = ledger.iter_holds(**query)
        assert not isinstance(stream, list)  # a stream, not a list read at once
        return [h.id for h in stream]

    assert ids() == ["h7", "h6", "h5", "h4", "h3", "h2", "h1"]
    assert ids() == [h.id for h in ledger.holds()]
    assert ids(states=["held"]) == ["h7", "h5", "h4", "h3", "h1"]
    assert ids(states=["settled", "released"]) == ["h6", "h2"]
    assert ids(states=[]) == []
    assert ids(since=T0 + 2, until=T0 + 4) == ["h5", "h4", "h3", "h2"]
    first = next(iter(ledger.iter_holds()))
    assert (first.id, first.amount, first.state) == ("h7", 7, "held")


# -- refusals (what the guard refused: metrics, alerts and the dashboard read them) -------------
def refusal(at: float, endpoint: str = ENDPOINT, cap: str | None = "day cap", **extra: Any) -> Any:
    from falbudget.ledger import Refusal

    fields: dict[str, Any] = {
        "reason": "cap_exceeded",
        "amount": 800_000,
        "tags": {"user": "ann", "endpoint": endpoint},
    }
    fields.update(extra)
    return Refusal(at=at, endpoint=endpoint, cap=cap, **fields)


def test_refusals_are_listed_newest_first_from_any_handle(
    ledger_factory: Callable[[], Ledger],
) -> None:
    first, second = ledger_factory(), ledger_factory()
    a = refusal(T0)
    b = refusal(T0 + 10, "fal-ai/flux/dev", None, reason="unknown_endpoint", amount=0)
    c = refusal(T0 + 20, reason="missing_tag", tags={})
    first.record_refusal(a)
    second.record_refusal(b)
    first.record_refusal(c)
    assert second.refusals() == [c, b, a]
    assert first.refusals(limit=2) == [c, b]
    assert first.refusals(since=T0 + 10) == [c, b]  # since is inclusive
    assert first.refusals(until=T0 + 10) == [a]  # until is exclusive
    assert first.refusals(limit=0) == []
    listed = second.refusals()[1]
    assert listed.tags == {"user": "ann", "endpoint": "fal-ai/flux/dev"}
    assert isinstance(listed.amount, int) and listed.cap is None


def test_refusal_counts_group_by_endpoint_and_cap(ledger_factory: Callable[[], Ledger]) -> None:
    first, second = ledger_factory(), ledger_factory()
    for at in (T0, T0 + 1, T0 + 2):
        first.record_refusal(refusal(at))
    second.record_refusal(refusal(T0 + 3, cap="month cap"))
    second.record_refusal(refusal(T0 + 4, "fal-ai/flux/dev", None, reason="unknown_endpoint"))
    assert (
        first.refusal_counts()
        == second.refusal_counts()
        == {
            (ENDPOINT, "day cap"): 3,
            (ENDPOINT, "month cap"): 1,
            ("fal-ai/flux/dev", None): 1,
        }
    )
    # [T0 + 1, T0 + 4): the day cap's refusals at T0+1 and T0+2, the month cap's at T0+3
    assert first.refusal_counts(since=T0 + 1, until=T0 + 4) == {
        (ENDPOINT, "day cap"): 2,
        (ENDPOINT, "month cap"): 1,
    }
    assert first.refusal_counts(since=T0 + 100) == {}


def test_an_admission_records_no_refusal(ledger: Ledger) -> None:
    assert reserve(ledger, "h1", 500, [cap("b", 1000)]).admitted
    assert not reserve(ledger, "h2", 600, [cap("b", 1000)]).admitted  # the ledger's own refusal
    # recording is the guard's step: the ledger's reserve writes no refusal row either way
    assert ledger.refusals() == [] and ledger.refusal_counts() == {}


def test_refusals_older_than_the_retention_are_pruned(ledger: Ledger) -> None:
    from falbudget.ledger.base import REFUSAL_RETENTION

    assert REFUSAL_RETENTION == 31 * 86_400  # 31 days, documented in docs/metrics.md
    ledger.record_refusal(refusal(T0))
    ledger.record_refusal(refusal(T0 + 1))
    # exactly 31 days after the first: the first is at the cutoff, kept (older than it goes)
    ledger.record_refusal(refusal(T0 + REFUSAL_RETENTION))
    assert [r.at for r in ledger.refusals()] == [T0 + REFUSAL_RETENTION, T0 + 1, T0]
    ledger.record_refusal(refusal(T0 + REFUSAL_RETENTION + 1))  # the cutoff passes T0
    assert [r.at for r in ledger.refusals()] == [
        T0 + REFUSAL_RETENTION + 1,
        T0 + REFUSAL_RETENTION,
        T0 + 1,
    ]


def test_refusals_past_the_row_bound_are_pruned_oldest_first(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    import falbudget.ledger.memory
    import falbudget.ledger.sqlite

    modules: list[Any] = [falbudget.ledger.memory, falbudget.ledger.sqlite]
    with contextlib.suppress(ImportError):
        import falbudget.ledger.postgres

        modules.append(falbudget.ledger.postgres)
    for module in modules:
        monkeypatch.setattr(module, "REFUSAL_MAX_ROWS", 3)
    for i in range(5):
        ledger.record_refusal(refusal(T0 + i))
    # 5 recorded, the bound is 3: the first two (T0, T0 + 1) are gone
    assert [r.at for r in ledger.refusals()] == [T0 + 4, T0 + 3, T0 + 2]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": -1}, "refusal.amount"),
        ({"amount": 0.5}, "refusal.amount"),
        ({"reason": ""}, "refusal.reason"),
        ({"endpoint": ""}, "refusal.endpoint"),
        ({"cap": ""}, "refusal.cap"),
        ({"at": math.nan}, "refusal.at"),
        ({"tags": {"user": 1}}, "tags"),
    ],
)
def test_a_malformed_refusal_is_a_ledger_error(
    ledger: Ledger, change: dict[str, Any], field: str
) -> None:
    bad = replace(refusal(T0), **change)
    with pytest.raises(LedgerError, match=re.escape(field)):
        ledger.record_refusal(bad)
    assert ledger.refusals() == []


def _more_kinds_of_hold(ledger: Ledger) -> None:
    """Holds of project c (created T0+10 .. T0+17) whose overrun comes and goes: settled above
    what was held, settled above then adjusted down below it or to it, settled below then
    adjusted above, released and expired then billed above; and two table versions and two
    places of a visitor's bucket, which a group does not tell apart."""
    g = cap("global|total", None)
    c = {"project": "c"}
    reserve(ledger, "c-above", 1_000, [g], now=T0 + 10, tags=c)
    ledger.settle("c-above", 1_300, now=T0 + 10)  # spent 1300, overrun 300
    reserve(ledger, "c-down", 1_000, [g], now=T0 + 11, tags=c)
    ledger.settle("c-down", 1_400, now=T0 + 11)
    ledger.adjust("c-down", 900, now=T0 + 11, reason="bill", source="test")  # spent 900, none
    reserve(ledger, "c-at", 1_000, [g], now=T0 + 12, tags=c)
    ledger.settle("c-at", 1_200, now=T0 + 12)
    ledger.adjust("c-at", 1_000, now=T0 + 12, reason="bill", source="test")  # spent 1000, none
    reserve(ledger, "c-up", 1_000, [g], now=T0 + 13, tags=c)
    ledger.settle("c-up", 800, now=T0 + 13)
    ledger.adjust("c-up", 1_100, now=T0 + 13, reason="bill", source="test")  # 1100, overrun 100
    reserve(ledger, "c-released", 100, [g], now=T0 + 14, tags=c)
    ledger.release("c-released", now=T0 + 14)
    ledger.adjust("c-released", 250, now=T0 + 14, reason="bill", source="test")  # overrun 150
    reserve(ledger, "c-expired", 200, [g], now=T0 + 15, tags=c, ttl=1.0)
    ledger.mark_submitted("c-expired", "req-15", now=T0 + 15)
    ledger.expire(now=T0 + 17)  # spent 200 (what was held)
    ledger.adjust("c-expired", 260, now=T0 + 17, reason="bill", source="test")  # overrun 60
    reserve(ledger, "c-v2", 50, [g], now=T0 + 16, tags=c, table_version="2")
    ledger.settle("c-v2", None, now=T0 + 16)  # spent 50; same group as the others
    day = "day@UTC:2025-06-15"
    for n in range(2):  # the address's bucket after the global one, then before it
        ip = f"10.0.0.{n}"
        charges = [g, cap(f"ip={ip}|{day}", None)]
        charges = charges if n == 0 else charges[::-1]
        reserve(ledger, f"c-ip{n}", 70, charges, now=T0 + 17, tags={**c, "ip": ip})
        ledger.settle(f"c-ip{n}", None, now=T0 + 17)  # spent 70 each; one group of project c


def _by_key(groups: list[HoldGroup]) -> dict[tuple[object, ...], tuple[object, ...]]:
    out: dict[tuple[object, ...], tuple[object, ...]] = {}
    for g in groups:
        key = (g.endpoint, tuple(sorted(g.tags.items())), g.buckets, int(g.first // 10))
        assert key not in out, f"two groups for {key}"
        out[key] = (g.first, g.last, g.holds, g.spent, g.held, g.requests, g.open, g.expired)
        out[key] += (g.released, g.overruns, g.overrun)
    return out


def test_summarize_is_holdgroup_of_summed_per_hold_for_every_kind_of_hold(ledger: Ledger) -> None:
    """One group per endpoint, shared tags and buckets and period, whatever the table version or
    the place of a visitor's bucket, each the sum of HoldGroup.of over its holds."""
    _every_kind_of_hold(ledger)
    _more_kinds_of_hold(ledger)
    by_hand: dict[tuple[object, ...], list[Any]] = {}
    for hold in ledger.holds():
        one = HoldGroup.of(hold)
        key = (one.endpoint, tuple(sorted(one.tags.items())), one.buckets, int(one.first // 10))
        figures = [one.first, one.last, one.holds, one.spent, one.held, one.requests, one.open]
        figures += [one.expired, one.released, one.overruns, one.overrun]
        sums = by_hand.get(key)
        if sums is None:
            by_hand[key] = figures
            continue
        sums[0], sums[1] = min(sums[0], one.first), max(sums[1], one.last)
        for index in range(2, len(figures)):
            sums[index] += figures[index]
    # periods of 10 s from 0 (T0 a multiple of 10): project a [T0, T0+10), c [T0+10, T0+20)
    assert _by_key(ledger.summarize(period=10)) == {k: tuple(v) for k, v in by_hand.items()}
    c = [g for g in ledger.summarize(period=10) if g.tags["project"] == "c"]
    assert len(c) == 1
    # by hand: spent 1300 + 900 + 1000 + 1100 + 250 + 260 + 50 + 70 + 70 = 5,000; overruns
    # c-above 300, c-up 100, c-released 150, c-expired 60 = 610 in 4 holds
    assert (c[0].holds, c[0].spent, c[0].requests, c[0].overruns, c[0].overrun) == (
        9,
        5_000,
        9,
        4,
        610,
    )


def test_holds_with_an_overrun_are_exactly_those_that_have_one(ledger: Ledger) -> None:
    """holds(overrun=True) (an index on SQLite and PostgreSQL) lists exactly the holds whose
    Hold.overrun is above 0, newest first, within since/until."""
    _every_kind_of_hold(ledger)
    _more_kinds_of_hold(ledger)
    expected = {h.id: h.overrun for h in ledger.holds() if h.overrun > 0}
    # by hand: over +500 (T0+5); c-above +300, c-up +100, c-released +150, c-expired +60
    assert expected == {
        "over": 500,
        "c-above": 300,
        "c-up": 100,
        "c-released": 150,
        "c-expired": 60,
    }
    found = ledger.holds(overrun=True)
    assert {h.id: h.overrun for h in found} == expected
    assert [h.id for h in found] == ["c-expired", "c-released", "c-up", "c-above", "over"]
    ranged = ledger.holds(overrun=True, since=T0 + 10, until=T0 + 14)
    assert [h.id for h in ranged] == ["c-up", "c-above"]
