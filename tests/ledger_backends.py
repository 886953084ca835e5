"""The ledger backends the ledger tests run against, and how to open one store several times.

Also the functions the multi-process tests run in child processes (spawned, so they live in an
importable module, not in a test file).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from falbudget.ledger import BucketCharge, Ledger, MemoryLedger, open_ledger

BACKENDS = ["memory", "sqlite", "postgres"]
PROCESS_BACKENDS = ["sqlite", "postgres"]
"""Backends one store of which several processes can share."""

ENDPOINT = "fal-ai/magi/image-to-video"


def backend_params(kinds: Iterable[str]) -> list[Any]:
    """``kinds`` as pytest params, the postgres one marked ``postgres``."""
    return [
        pytest.param(kind, id=kind, marks=[pytest.mark.postgres] if kind == "postgres" else [])
        for kind in kinds
    ]


def store_url(kind: str, tmp_path: Path) -> str:
    """The URL of a fresh store of backend ``kind`` for one test (not memory: it is per process)."""
    if kind == "sqlite":
        return "sqlite:///" + str(tmp_path / "ledger.db")
    if kind == "postgres":
        from pgutil import postgres_test_url

        return postgres_test_url()
    raise ValueError(f"no shareable store for backend {kind!r}")


def make_ledger_factory(kind: str, tmp_path: Path) -> Callable[[], Ledger]:
    """A zero-argument callable opening a new ledger object on one store (memory: one object)."""
    if kind == "memory":
        shared = MemoryLedger()
        return lambda: shared
    url = store_url(kind, tmp_path)
    return lambda: open_ledger(url)


# -- run in child processes ---------------------------------------------------------------------
def admit_in_process(
    url: str,
    worker: int,
    attempts: int,
    charges: list[BucketCharge],
    amount: int,
    now: float,
    barrier: Any,
    results: Any,
) -> None:
    """Open the ledger, wait for every worker, try ``attempts`` reservations and settle each
    admitted one at once; put (worker, admitted ids, refused totals, error) on ``results``."""
    admitted: list[str] = []
    refused: list[tuple[int, int]] = []
    try:
        ledger = open_ledger(url)
        barrier.wait(timeout=60)
        for attempt in range(attempts):
            result = ledger.reserve(
                hold_id=f"p{worker}-{attempt}",
                endpoint=ENDPOINT,
                amount=amount,
                charges=charges,
                now=now,
                expires_at=now + 3600,
            )
            if result.admitted:
                assert result.hold is not None
                admitted.append(result.hold.id)
                ledger.settle(result.hold.id, None, now=now + 1)
            else:
                assert result.totals is not None
                refused.append((result.totals.settled, result.totals.held))
        ledger.close()
        results.put((worker, admitted, refused, None))
    except BaseException as exc:  # report it to the parent rather than die silently
        results.put((worker, admitted, refused, repr(exc)))


def hold_then_hang(
    url: str,
    charges: list[BucketCharge],
    amount: int,
    now: float,
    ttl: float,
    lock_sqlite_file: bool,
    ready: Any,
) -> None:
    """Reserve hold ``doomed``; for SQLite also leave a write transaction open with an
    uncommitted change; then signal ``ready`` and wait to be killed."""
    ledger = open_ledger(url)
    result = ledger.reserve(
        hold_id="doomed",
        endpoint=ENDPOINT,
        amount=amount,
        charges=charges,
        now=now,
        expires_at=now + ttl,
    )
    assert result.admitted
    if lock_sqlite_file:
        path = url.removeprefix("sqlite:///")
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE buckets SET held = held + 999")
    ready.set()
    time.sleep(120)
    os._exit(3)  # pragma: no cover - the test kills the process long before


def submit_then_die(
    url: str,
    caps: list[tuple[str, str, str]],
    arguments: dict[str, Any],
    tags: dict[str, str],
    now: float,
    ttl: float,
    request_id: str,
) -> None:
    """A worker that reserves through a Guard (caps as (limit, scope, window); clock fixed at
    ``now``), learns fal's request id, marks the hold submitted and dies before it can settle:
    the crash that leaves a submitted hold to expire and be counted as spent at its quote."""
    from falbudget import Cap, Guard

    guard = Guard(
        url,
        [Cap(limit, scope=scope, window=window) for limit, scope, window in caps],
        clock=lambda: now,
        hold_ttl=ttl,
    )
    hold = guard.reserve(ENDPOINT, arguments, **tags).acquire()
    hold.mark_submitted(request_id)
    os._exit(7)  # no settle, no release, no cleanup: the process is gone


def settle_under_key(
    url: str,
    arguments: dict[str, Any],
    key: str,
    now: float,
    idempotency_ttl: float,
) -> None:
    """A worker that reserves ``arguments`` through a Guard under idempotency ``key`` (clock
    fixed at ``now``) and settles the hold: the first use of a key, in another process."""
    from falbudget import Cap, Guard

    guard = Guard(url, [Cap("10.00")], clock=lambda: now, idempotency_ttl=idempotency_ttl)
    with guard.reserve(ENDPOINT, arguments, idempotency_key=key):
        pass
    guard.close()
