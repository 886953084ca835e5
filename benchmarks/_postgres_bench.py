"""PostgreSQL ledger figures for bench_guard.py, with the same measures for SQLite beside them.

    python benchmarks/_postgres_bench.py [--url URL] [--n N] [--history H] [--workers W]

``reserve_settle_us(url, n)``: microseconds per reserve + settle on one connection, in a fresh
schema. ``admissions_per_second(url, workers, seconds)``: admissions per second when ``workers``
processes, each with its own connection, reserve and settle against one shared budget (every
reservation charges the same global cap, a per-endpoint tracker and the worker's project cap, so
they all contend for the global cap's row). The schema is dropped afterwards. ``sqlite_*`` do the
same on a fresh SQLite file. ``race(worker, store, workers, seconds)`` is the process race
both use (bench_guard.py runs a raw-sqlite3 floor through it too). The URL defaults to
FALBUDGET_BENCH_POSTGRES_URL, else FALBUDGET_TEST_POSTGRES_URL, else
``postgresql://postgres@127.0.0.1:5432/test``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"
try:
    from falbudget.ledger import BucketCharge, Ledger, open_ledger
except ImportError:  # not installed: run from the checkout
    sys.path.insert(0, str(SRC))
    from falbudget.ledger import BucketCharge, Ledger, open_ledger

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
ENDPOINT = "fal-ai/magi/image-to-video"
PRICE = 800_000  # $0.80 in micro-USD
BIG = 10**15  # a cap never reached during a run


def default_url() -> str:
    for name in ("FALBUDGET_BENCH_POSTGRES_URL", "FALBUDGET_TEST_POSTGRES_URL"):
        url = os.environ.get(name, "").strip()
        if url:
            return url
    return DEFAULT_URL


def server_version(url: str, timeout_s: int = 3) -> str:
    """The version of the server at ``url`` (no schema); raises when none answers in time."""
    import psycopg

    with psycopg.connect(url, connect_timeout=timeout_s, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"


def _charges(project: str) -> list[BucketCharge]:
    return [
        BucketCharge("global|2025-06", BIG),
        BucketCharge(f"endpoint={ENDPOINT}|2025-06", None),
        BucketCharge(f"project={project}|2025-06", BIG),
    ]


def _cycle(ledger: Ledger, hold_id: str, charges: list[BucketCharge]) -> bool:
    now = time.time()
    result = ledger.reserve(
        hold_id=hold_id,
        endpoint=ENDPOINT,
        amount=PRICE,
        charges=charges,
        now=now,
        expires_at=now + 3600,
    )
    if result.admitted and result.hold is not None:
        ledger.settle(result.hold.id, None, now=now)
        return True
    return False


# -- stores ------------------------------------------------------------------------------------
@contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """``url`` with a new schema of its own (created on first use), dropped at the end."""
    import psycopg
    from psycopg import sql

    schema = f"fb_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        yield url + ("&" if "?" in url else "?") + "schema=" + schema
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def fresh_sqlite() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="fb_bench_") as directory:
        yield "sqlite:///" + os.path.join(directory, "ledger.db")


# -- one connection: microseconds per reserve + settle -----------------------------------------
def _add_history(store_url: str, rows: int) -> None:
    """``rows`` settled holds on the benchmark's buckets, written straight into the schema."""
    import psycopg
    from psycopg import sql

    from falbudget.ledger.postgres import schema_name

    base, _, query = store_url.partition("?")
    kept = "&".join(p for p in query.split("&") if not p.startswith("schema="))
    schema = sql.Identifier(schema_name(store_url))
    keys = [c.key for c in _charges("solo")]
    with psycopg.connect(base + ("?" + kept if kept else ""), autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {s}.holds (id, endpoint, amount, state, buckets, created_at,"
                " expires_at, updated_at, settled_amount)"
                " SELECT 'old-' || n, %s, 1, 'settled', %s, n, n + 3600, n, 1"
                " FROM generate_series(1, %s) AS n"
            ).format(s=schema),
            (ENDPOINT, keys, rows),
        )
        conn.execute(sql.SQL("ANALYZE {s}.holds").format(s=schema))


def _reserve_settle_us(store_url: str, n: int, history: int = 0) -> float:
    ledger = open_ledger(store_url)
    try:
        charges = _charges("solo")
        for i in range(min(200, n)):  # warm up: connect, create the schema, prepare
            _cycle(ledger, f"warm-{i}", charges)
        if history:
            _add_history(store_url, history)
        started = time.perf_counter()
        for i in range(n):
            _cycle(ledger, f"h-{i}", charges)
        return (time.perf_counter() - started) / n * 1e6
    finally:
        ledger.close()


def reserve_settle_us(url: str, n: int = 2000, history: int = 0) -> float:
    """Microseconds per reserve + settle on one PostgreSQL connection, in a fresh schema
    (holding ``history`` settled holds first, to show that the cost does not depend on it)."""
    with fresh_schema(url) as store:
        return _reserve_settle_us(store, n, history)


def sqlite_reserve_settle_us(n: int = 2000) -> float:
    """The same on a fresh SQLite file."""
    with fresh_sqlite() as store:
        return _reserve_settle_us(store, n)


# -- many processes: admissions per second -----------------------------------------------------
def _worker(store_url: str, worker: int, seconds: float, barrier: Any, results: Any) -> None:
    _run_worker(store_url, worker, seconds, barrier, results, settle=True)


def _reserve_worker(
    store_url: str, worker: int, seconds: float, barrier: Any, results: Any
) -> None:
    """As :func:`_worker`, reserving only (the holds stay open)."""
    _run_worker(store_url, worker, seconds, barrier, results, settle=False)


def _run_worker(
    store_url: str, worker: int, seconds: float, barrier: Any, results: Any, *, settle: bool
) -> None:
    try:
        ledger = open_ledger(store_url)
        charges = _charges(f"p{worker % 4}")
        _cycle(ledger, f"warm-{worker}", charges)  # connect before the clock starts
        barrier.wait(timeout=120)
        admitted = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            if settle:
                admitted += _cycle(ledger, f"w{worker}-{admitted}", charges)
            else:
                now = time.time()
                admitted += ledger.reserve(
                    hold_id=f"w{worker}-{admitted}",
                    endpoint=ENDPOINT,
                    amount=PRICE,
                    charges=charges,
                    now=now,
                    expires_at=now + 3600,
                ).admitted
        ledger.close()
        results.put((admitted, None))
    except BaseException as exc:  # report it rather than hang the parent
        results.put((0, repr(exc)))


# -- the floor: what PostgreSQL itself can do ---------------------------------------------------
FLOOR_RESERVE = """WITH locked AS MATERIALIZED (
    SELECT key FROM {s}.fl_buckets
    WHERE key = ANY(%(keys)s::text[]) AND settled + held + %(amount)s::bigint <= %(limit)s::bigint
    ORDER BY key FOR UPDATE
), charged AS (
    UPDATE {s}.fl_buckets AS b SET held = b.held + %(amount)s::bigint
    FROM locked AS l WHERE b.key = l.key
    RETURNING b.key
), hold AS (
    INSERT INTO {s}.fl_holds (id, amount, state, buckets, created_at, expires_at)
    SELECT %(id)s::text, %(amount)s::bigint, 'held', %(keys)s::text[], %(now)s::float8,
        %(now)s::float8 + 3600
    WHERE (SELECT count(*) FROM charged) = cardinality(%(keys)s::text[])
    RETURNING 1
)
SELECT count(*) FROM hold"""
"""The one-statement floor of an admission: every bucket locked in key order (as the ledger
locks them: no deadlock), checked against its limit and charged, and the hold recorded, in one
statement (one round trip, prepared)."""
FLOOR_SETTLE = """WITH closed AS (
    UPDATE {s}.fl_holds SET state = 'settled' WHERE id = %(id)s::text AND state = 'held'
    RETURNING amount, buckets
), locked AS MATERIALIZED (
    SELECT b.key, c.amount FROM {s}.fl_buckets AS b JOIN closed AS c ON b.key = ANY(c.buckets)
    ORDER BY b.key FOR UPDATE OF b
)
UPDATE {s}.fl_buckets AS b SET held = b.held - l.amount, settled = b.settled + l.amount
FROM locked AS l WHERE b.key = l.key"""


def floor_schema(store_url: str) -> None:
    """The floor's two tables in ``store_url``'s schema: buckets (every key of the race made
    up front) and holds with their primary key and an index by creation time."""
    import psycopg
    from psycopg import sql

    base, schema = _split_schema(store_url)
    s = sql.Identifier(schema)
    keys = sorted({c.key for project in range(4) for c in _charges(f"p{project}")})
    with psycopg.connect(base, autocommit=True) as conn:
        for statement in (
            "CREATE SCHEMA IF NOT EXISTS {s}",
            'CREATE TABLE {s}.fl_buckets (key TEXT COLLATE "C" PRIMARY KEY,'
            " settled BIGINT NOT NULL DEFAULT 0, held BIGINT NOT NULL DEFAULT 0)",
            "CREATE TABLE {s}.fl_holds (id TEXT PRIMARY KEY, amount BIGINT NOT NULL,"
            " state TEXT NOT NULL, buckets TEXT[] NOT NULL, created_at DOUBLE PRECISION NOT NULL,"
            " expires_at DOUBLE PRECISION NOT NULL)",
            "CREATE INDEX fl_holds_by_created ON {s}.fl_holds (created_at)",
        ):
            conn.execute(sql.SQL(statement).format(s=s))
        conn.execute(
            sql.SQL("INSERT INTO {s}.fl_buckets (key) SELECT unnest(%s::text[])").format(s=s),
            (keys,),
        )


def _split_schema(store_url: str) -> tuple[str, str]:
    from falbudget.ledger.postgres import schema_name

    base, _, query = store_url.partition("?")
    kept = "&".join(p for p in query.split("&") if not p.startswith("schema="))
    return base + ("?" + kept if kept else ""), schema_name(store_url)


def _floor_worker(store_url: str, worker: int, seconds: float, barrier: Any, results: Any) -> None:
    _run_floor(store_url, worker, seconds, barrier, results, settle=True)


def _floor_reserve_worker(
    store_url: str, worker: int, seconds: float, barrier: Any, results: Any
) -> None:
    _run_floor(store_url, worker, seconds, barrier, results, settle=False)


def _run_floor(
    store_url: str, worker: int, seconds: float, barrier: Any, results: Any, *, settle: bool
) -> None:
    try:
        import psycopg
        from psycopg import sql

        base, schema = _split_schema(store_url)
        s = sql.Identifier(schema)
        reserve = sql.SQL(FLOOR_RESERVE).format(s=s)
        settle_sql = sql.SQL(FLOOR_SETTLE).format(s=s)
        keys = sorted(c.key for c in _charges(f"p{worker % 4}"))
        with psycopg.connect(base, autocommit=True, prepare_threshold=0) as conn:
            barrier.wait(timeout=120)
            admitted = 0
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                hold_id = f"w{worker}-{admitted}"
                params = {
                    "id": hold_id,
                    "amount": PRICE,
                    "keys": keys,
                    "limit": BIG,
                    "now": time.time(),
                }
                row = conn.execute(reserve, params).fetchone()
                if row and row[0]:
                    if settle:
                        conn.execute(settle_sql, {"id": hold_id})
                    admitted += 1
        results.put((admitted, None))
    except BaseException as exc:  # report it rather than hang the parent
        results.put((0, repr(exc)))


Worker = Callable[[str, int, float, Any, Any], None]
"""``worker(store, n, seconds, barrier, results)``: run for ``seconds`` after the barrier, then
put ``(count, None)`` (or ``(0, error)``) on ``results``. Top-level, so spawn can import it."""


def race(worker: Worker, store: str, workers: int, seconds: float) -> float:
    """Counts per second of ``workers`` spawned processes running ``worker`` on ``store``
    together for ``seconds`` (the clock starts when they all are ready)."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    children = [
        ctx.Process(target=worker, args=(store, n, seconds, barrier, results))
        for n in range(workers)
    ]
    for child in children:
        child.start()
    try:
        reports: list[tuple[int, str | None]] = [
            results.get(timeout=120 + seconds) for _ in children
        ]
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
    errors = [error for _, error in reports if error]
    if errors:
        raise RuntimeError(f"a worker failed: {errors[0]}")
    return sum(count for count, _ in reports) / seconds


def _admissions_per_second(store_url: str, workers: int, seconds: float) -> float:
    open_ledger(store_url).close()  # create the store before the race
    return race(_worker, store_url, workers, seconds)


def admissions_per_second(
    url: str, workers: int = 8, seconds: float = 3.0, *, settle: bool = True
) -> float:
    """Admissions (each settled at once, unless ``settle`` is False) per second of ``workers``
    processes, each with its own connection, against one budget in a fresh PostgreSQL schema."""
    with fresh_schema(url) as store:
        open_ledger(store).close()  # create the store before the race
        return race(_worker if settle else _reserve_worker, store, workers, seconds)


def floor_per_second(
    url: str, workers: int = 8, seconds: float = 3.0, *, settle: bool = True
) -> float:
    """The same race on the floor: the one-statement CTE that checks the limits and records
    the hold (then the one-statement settle), prepared, in a fresh schema."""
    with fresh_schema(url) as store:
        floor_schema(store)
        return race(_floor_worker if settle else _floor_reserve_worker, store, workers, seconds)


def sqlite_admissions_per_second(workers: int = 8, seconds: float = 3.0) -> float:
    """The same on a fresh SQLite file."""
    with fresh_sqlite() as store:
        return _admissions_per_second(store, workers, seconds)


# -- as a script -------------------------------------------------------------------------------
def _median(measure: Callable[[], float], runs: int) -> float:
    return statistics.median(measure() for _ in range(runs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=default_url(), help="PostgreSQL server (no schema)")
    parser.add_argument("--n", type=int, default=2000, help="reserve+settle cycles per run")
    parser.add_argument("--runs", type=int, default=3, help="runs of the one-connection figure")
    parser.add_argument("--history", type=int, default=100_000, help="holds of history")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)

    pg_us = _median(lambda: reserve_settle_us(args.url, args.n), args.runs)
    pg_history_us = _median(lambda: reserve_settle_us(args.url, args.n, args.history), args.runs)
    sq_us = _median(lambda: sqlite_reserve_settle_us(args.n), args.runs)
    pg_rate = admissions_per_second(args.url, args.workers, args.seconds)
    sq_rate = sqlite_admissions_per_second(args.workers, args.seconds)
    print(f"reserve+settle, one connection (median of {args.runs} x {args.n}):")
    print(f"  postgresql  {pg_us:8.0f} us")
    print(f"  postgresql  {pg_history_us:8.0f} us  with {args.history:,} holds of history")
    print(f"  sqlite      {sq_us:8.0f} us")
    print(f"admissions/s, {args.workers} processes on one budget ({args.seconds:g} s, settled):")
    print(f"  postgresql  {pg_rate:8.0f} /s")
    print(f"  sqlite      {sq_rate:8.0f} /s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
