"""Exact admission under contention: a $10.00 cap and $0.80 requests admit exactly 12, whether
the requests come from threads or processes; and a killed holder only delays the budget until its
hold expires.

Every refusal must report totals of exactly 12 x $0.80: a refusal with room left would be a false
denial, a 13th admission an overspend.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
from pathlib import Path

import pytest

from falbudget.ledger import Admission, BucketCharge, BucketTotals, open_ledger
from ledger_backends import (
    BACKENDS,
    ENDPOINT,
    PROCESS_BACKENDS,
    admit_in_process,
    backend_params,
    hold_then_hang,
    make_ledger_factory,
    store_url,
)

CAP = 10_000_000  # $10.00
PRICE = 800_000  # $0.80
ADMITS = 12  # 12 x 0.80 = 9.60 <= 10.00 < 13 x 0.80 = 10.40
T0 = 1_750_000_000.0
GLOBAL = "global|2025-06"
TRACKER = "endpoint=fal-ai/magi/image-to-video|2025-06"
CHARGES = [BucketCharge(GLOBAL, CAP), BucketCharge(TRACKER, None)]


VISITOR = "ip=10.0.0.7|day@UTC:2025-06-15"
"""A cap per client address: a visitor bucket, which a ledger keeps with each hold."""


@pytest.mark.parametrize("capped", [GLOBAL, VISITOR])
@pytest.mark.parametrize("sharing", ["object-per-thread", "one-shared-object"])
@pytest.mark.parametrize("kind", backend_params(BACKENDS))
def test_threads_admit_exactly_what_fits(
    kind: str, sharing: str, capped: str, tmp_path: Path
) -> None:
    threads, attempts = 8, 6  # 48 attempts for 12 places
    charges = [BucketCharge(capped, CAP), BucketCharge(TRACKER, None)]
    tags = {"ip": "10.0.0.7"} if capped == VISITOR else None
    factory = make_ledger_factory(kind, tmp_path)
    if sharing == "object-per-thread":
        ledgers = [factory() for _ in range(threads)]
    else:
        ledgers = [factory()] * threads
    barrier = threading.Barrier(threads)
    results: list[list[Admission]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            for attempt in range(attempts):
                results[n].append(
                    ledgers[n].reserve(
                        hold_id=f"t{n}-{attempt}",
                        endpoint=ENDPOINT,
                        amount=PRICE,
                        charges=charges,
                        now=T0,
                        expires_at=T0 + 3600,
                        tags=tags,
                    )
                )
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert errors == []
    flat = [result for per_thread in results for result in per_thread]
    assert len(flat) == 48
    held_ids = [r.hold.id for r in flat if r.admitted and r.hold is not None]
    assert len(held_ids) == ADMITS
    assert len(set(held_ids)) == ADMITS
    refusals = [r for r in flat if not r.admitted]
    assert len(refusals) == 36
    assert {(r.refused_by, r.totals) for r in refusals} == {
        (capped, BucketTotals(capped, 0, 9_600_000))
    }
    check = factory()
    assert check.totals([capped, TRACKER]) == [
        BucketTotals(capped, 0, 9_600_000),
        BucketTotals(TRACKER, 0, 9_600_000),
    ]
    for hold_id in held_ids:
        check.settle(hold_id, None, now=T0 + 1)
    assert check.totals([capped, TRACKER]) == [
        BucketTotals(capped, 9_600_000, 0),
        BucketTotals(TRACKER, 9_600_000, 0),
    ]
    # each hold reads back with its own bucket and tags, and the history by the bucket finds
    # exactly the admitted ones
    assert sorted(h.id for h in check.holds(bucket=capped)) == sorted(held_ids)
    assert {(h.buckets, tuple(h.tags.items())) for h in check.holds()} == {
        ((capped, TRACKER), tuple((tags or {}).items()))
    }
    for ledger in [*ledgers, check]:
        ledger.close()


@pytest.mark.parametrize("kind", backend_params(PROCESS_BACKENDS))
def test_processes_admit_exactly_what_fits(kind: str, tmp_path: Path) -> None:
    processes, attempts = 6, 5  # 30 attempts for 12 places; each admitted one settled at once
    url = store_url(kind, tmp_path)
    open_ledger(url).close()  # create the store before the race
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    children = [
        ctx.Process(
            target=admit_in_process,
            args=(url, n, attempts, CHARGES, PRICE, T0, barrier, results),
        )
        for n in range(processes)
    ]
    for child in children:
        child.start()
    try:
        reports = [results.get(timeout=60) for _ in children]
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():  # pragma: no cover - only when the test is already failing
                child.kill()
    assert [error for *_, error in reports if error is not None] == []
    admitted = [hold_id for _, ids, _, _ in reports for hold_id in ids]
    assert len(admitted) == ADMITS
    assert len(set(admitted)) == ADMITS
    refused = [totals for _, _, per_worker, _ in reports for totals in per_worker]
    assert len(refused) == 18
    # settled and held add up to 12 x 0.80 at every refusal: none came while room was left
    assert {settled + held for settled, held in refused} == {9_600_000}
    ledger = open_ledger(url)
    assert ledger.totals([GLOBAL, TRACKER]) == [
        BucketTotals(GLOBAL, 9_600_000, 0),
        BucketTotals(TRACKER, 9_600_000, 0),
    ]
    assert sorted(h.id for h in ledger.holds(states=["settled"])) == sorted(admitted)
    ledger.close()


@pytest.mark.parametrize("kind", backend_params(PROCESS_BACKENDS))
def test_a_killed_holder_blocks_the_budget_until_its_hold_expires(
    kind: str, tmp_path: Path
) -> None:
    url = store_url(kind, tmp_path)
    charges = [BucketCharge(GLOBAL, 1_000_000)]
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    child = ctx.Process(
        target=hold_then_hang,
        args=(url, charges, 800_000, T0, 2.0, kind == "sqlite", ready),
    )
    child.start()
    try:
        assert ready.wait(timeout=60), "the child never reserved"
        os.kill(child.pid or 0, signal.SIGKILL)
        child.join(timeout=30)
    finally:
        if child.is_alive():  # pragma: no cover - only when the test is already failing
            child.kill()
    assert child.exitcode == -signal.SIGKILL

    ledger = open_ledger(url)

    def attempt(hold_id: str, now: float) -> Admission:
        return ledger.reserve(
            hold_id=hold_id,
            endpoint=ENDPOINT,
            amount=800_000,
            charges=charges,
            now=now,
            expires_at=now + 60,
        )

    # the dead process's hold still counts; its uncommitted write (SQLite) is gone
    assert attempt("a", T0 + 1) == Admission(
        admitted=False, refused_by=GLOBAL, totals=BucketTotals(GLOBAL, 0, 800_000)
    )
    assert attempt("b", T0 + 2).refused_by == GLOBAL  # expires_at == now: not yet overdue
    result = attempt("c", T0 + 2.5)
    assert result.admitted
    doomed = ledger.get_hold("doomed")
    assert (doomed.state, doomed.updated_at) == ("released", T0 + 2.5)
    assert ledger.totals([GLOBAL]) == [BucketTotals(GLOBAL, 0, 800_000)]
    ledger.close()
    if kind == "sqlite":
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            conn.close()
