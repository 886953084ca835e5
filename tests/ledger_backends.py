"""The ledger backends the ledger tests run against, and how to open one store several times.

Also the functions the multi-process tests run in child processes (spawned, so they live in an
importable module, not in a test file).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
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


@pytest.fixture(params=backend_params(BACKENDS))
def ledger_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], Ledger]]:
    """Opens a new ledger object on this test's store (memory: the same object) on each call, on
    every backend; closes them all when the test ends. (This module is a pytest plugin: see
    conftest.py.)"""
    make = make_ledger_factory(request.param, tmp_path)
    opened: list[Ledger] = []

    def factory() -> Ledger:
        ledger = make()
        opened.append(ledger)
        return ledger

    yield factory
    for ledger in opened:
        ledger.close()


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


def send_then_die(
    url: str,
    patches: dict[str, Any],
    env: dict[str, str],
    call: str,
    now: float,
    ttl: float,
) -> None:
    """A worker whose guarded fal_client call is under way when the test kills it: fal_client
    points at the test's fake fal (``patches`` for ``fal_client.client``, ``env``), which holds
    the answer back. ``call``: run, arun (AsyncClient.run), stream, subscribe or call
    (``guard.call`` around the bare client's run). No settle, no release, no cleanup runs."""
    import asyncio

    import fal_client
    import fal_client.client as fc

    from falbudget import Cap, Guard

    for name, value in patches.items():
        setattr(fc, name, value)
    os.environ.update(env)
    guard = Guard(url, [Cap("10.00")], clock=lambda: now, hold_ttl=ttl)
    arguments = {"prompt": "a fox", "image_url": "https://example.invalid/fox.png"}
    client = fal_client.SyncClient(key=env["FAL_KEY"])
    fal = guard.wrap(client)
    if call == "run":
        fal.run(ENDPOINT, arguments)
    elif call == "arun":

        async def run_async() -> None:
            await guard.wrap(fal_client.AsyncClient(key=env["FAL_KEY"])).run(ENDPOINT, arguments)

        asyncio.run(run_async())
    elif call == "stream":
        list(fal.stream(ENDPOINT, arguments))
    elif call == "subscribe":
        fal.subscribe(ENDPOINT, arguments, interval=0.01)
    elif call == "call":
        guard.call(lambda endpoint, args: client.run(endpoint, args), ENDPOINT, arguments)
    os._exit(3)  # pragma: no cover - the test kills the process while fal holds the answer


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


# -- a ledger of schema version 2 with rows of every kind (for the upgrade to version 3) --------
V2_T0 = 1_750_000_000.0
V2_SHA = "ab" * 32
V2_HOLD_COLUMNS = (
    "id",
    "idempotency_key",
    "endpoint",
    "amount",
    "state",
    "buckets",
    "request_id",
    "created_at",
    "expires_at",
    "updated_at",
    "settled_amount",
    "tags",
    "table_version",
    "table_sha256",
    "adjusted_amount",
)
_G, _P = "global|total", "project=a|total"
V2_HOLDS: list[tuple[Any, ...]] = [
    # id, key, endpoint, amount, state, buckets, request_id, created, expires, updated, settled,
    # tags, table_version, table_sha256, adjusted
    ("h-held", "k-held", ENDPOINT, 300_000, "held", [_G, _P], None, V2_T0, V2_T0 + 600,
     V2_T0, None, {"endpoint": ENDPOINT, "project": "a"}, "2026.11.30", V2_SHA, None),
    ("h-sub", "k-sub", ENDPOINT, 400_000, "submitted", [_G], "req-sub", V2_T0 + 1, V2_T0 + 601,
     V2_T0 + 2, None, {"endpoint": ENDPOINT}, "2026.11.30@2026-12-01", V2_SHA, None),
    ("h-set", None, ENDPOINT, 350_000, "settled", [_G], "req-set", V2_T0 + 2, V2_T0 + 602,
     V2_T0 + 3, 350_000, {"endpoint": ENDPOINT}, None, None, None),
    ("h-rel", "k-rel", ENDPOINT, 600_000, "released", [_G], None, V2_T0 + 3, V2_T0 + 603,
     V2_T0 + 5, None, {"endpoint": ENDPOINT, "user": "ann"}, "2026.11.30", V2_SHA, None),
    ("h-exp", None, ENDPOINT, 500_000, "expired", [_G], "req-exp", V2_T0 + 4, V2_T0 + 10,
     V2_T0 + 11, 500_000, {"endpoint": ENDPOINT}, "2026.11.30", V2_SHA, 450_000),
    ("h-reladj", "k-reladj", ENDPOINT, 800_000, "released", [_G], "req-reladj", V2_T0 + 5,
     V2_T0 + 605, V2_T0 + 6, None, {"endpoint": ENDPOINT}, "2026.11.30", V2_SHA, 200_000),
]  # fmt: skip
V2_BUCKETS = [(_G, 1_000_000, 700_000), (_P, 0, 300_000)]
"""settled 350_000 + 450_000 + 200_000; held 300_000 + 400_000 (h-held alone in project=a)."""
V2_ADJUSTMENTS = [
    # id, hold_id, previous, amount, delta, reason, source, created_at
    (1, "h-exp", 500_000, 450_000, -50_000, "billed less", "billing.csv", V2_T0 + 100),
    (2, "h-reladj", 0, 200_000, 200_000, "billed after all", "api", V2_T0 + 101),
]
V2_ALERTS = [(_G, "0.5@2.00")]


def v2_hold_links() -> list[tuple[str, str, float]]:
    """The hold_buckets rows of V2_HOLDS: (hold_id, bucket_key, created_at)."""
    return [(row[0], key, row[7]) for row in V2_HOLDS for key in row[5]]


def v2_expected_holds() -> dict[str, Any]:
    """V2_HOLDS as this falbudget reads them after the upgrade: keys of the old holds have no
    fingerprint and the default lifetime (24 h after the close)."""
    from falbudget.ledger import Hold

    out = {}
    for row in V2_HOLDS:
        values = dict(zip(V2_HOLD_COLUMNS, row, strict=True))
        values["buckets"] = tuple(values["buckets"])
        values["idempotency_ttl"] = 86_400.0 if values["idempotency_key"] else None
        out[values["id"]] = Hold(**values)
    return out


def check_v2_upgraded(ledger: Ledger) -> None:
    """What a ledger upgraded from V2_* must show: every hold, total, link, adjustment and alert
    as it was, and the old keys bound to no request (a fingerprinted reuse is a conflict, the
    same key without one replays) until 24 h after their hold closed."""
    from falbudget.ledger import BucketTotals

    expected = v2_expected_holds()
    for hold_id, hold in expected.items():
        assert ledger.get_hold(hold_id) == hold, hold_id
    assert [h.id for h in ledger.holds()] == [row[0] for row in reversed(V2_HOLDS)]
    assert [h.id for h in ledger.holds(bucket=_P)] == ["h-held"]
    assert ledger.totals([_G, _P]) == [BucketTotals(*row) for row in V2_BUCKETS]
    assert [
        (a.id, a.hold_id, a.previous, a.amount, a.delta, a.reason, a.source, a.created_at)
        for a in ledger.adjustments()
    ] == V2_ADJUSTMENTS
    assert ledger.claim_alert(*V2_ALERTS[0]) is False
    assert ledger.holds_by_request_id(["req-exp", "req-sub"]) == [
        expected["h-sub"],
        expected["h-exp"],
    ]

    def reserve(hold_id: str, key: str, fingerprint: str | None, now: float) -> Any:
        return ledger.reserve(
            hold_id=hold_id,
            endpoint=ENDPOINT,
            amount=100_000,
            charges=[BucketCharge(_G, None)],
            now=now,
            expires_at=now + 600,
            idempotency_key=key,
            fingerprint=fingerprint,
            idempotency_ttl=3_600.0,
        )

    conflict = reserve("x", "k-held", "fp", V2_T0 + 100)
    assert (conflict.admitted, conflict.conflict, conflict.hold) == (
        False,
        True,
        expected["h-held"],
    )
    replay = reserve("x", "k-sub", None, V2_T0 + 100)
    assert (replay.replayed, replay.hold) == (True, expected["h-sub"])
    remembered = reserve("x", "k-rel", "fp", V2_T0 + 5 + 86_400)  # closed at V2_T0 + 5
    assert (remembered.conflict, remembered.hold) == (True, expected["h-rel"])
    fresh = reserve("new", "k-rel", "fp", V2_T0 + 5 + 86_400.5)
    assert fresh.admitted and not fresh.replayed and fresh.hold is not None
    assert (fresh.hold.id, fresh.hold.fingerprint) == ("new", "fp")
    assert ledger.get_hold("h-rel").idempotency_key == "k-rel"  # kept in the history
