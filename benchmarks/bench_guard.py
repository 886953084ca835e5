"""What admission costs in each ledger, beside floors measured in the same run.

    python benchmarks/bench_guard.py [--quick] [--history N] [--url URL]

Prints, each as the median of several repeats, with the baseline it is measured against:

- reserve + settle, microseconds per operation, straight on the ledger (the figure the goals are
  about) and through ``with guard.reserve(...)`` (quote, plan and ledger: for information):
  memory (goal: <= 3x the floor: dicts behind a lock doing the same arithmetic) and SQLite
  (goal: <= 3x the floor: raw sqlite3 with the ledger's pragmas, WAL, synchronous=FULL,
  busy_timeout, doing two single-row conditional UPDATE commits, each its own BEGIN IMMEDIATE);
- SQLite admission (``reserve``) time on a file holding 1,000,000 holds of history (bulk-loaded
  straight into the ledger's tables in seconds; the measured operations go through the API)
  beside a fresh file (goal: <= 1.1x);
- admissions per second of 6 processes on one SQLite file, beside the floor with 6 processes;
- PostgreSQL (FALBUDGET_BENCH_POSTGRES_URL, else FALBUDGET_TEST_POSTGRES_URL, else
  postgresql://postgres@127.0.0.1:5432/test, in a throwaway schema dropped afterwards):
  reserve + settle on one connection beside SQLite's; reserve + settle and reserve alone per
  second of 8 processes, each beside the floor measured in the same run: the one-statement CTE
  that checks every limit and records the hold (and the one-statement settle), prepared, over
  the same processes (goals: >= 0.8x and >= 0.9x); when no server answers, a "PostgreSQL:
  skipped (reason)" line.

``--quick`` (under a minute): 100,000 holds of history, fewer operations and repeats. Timing never
fails the run: each goal is printed as met or missed.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import _postgres_bench as pgb  # first: it puts src/ on the path when falbudget is not installed
import falbudget
from falbudget import Cap, Guard
from falbudget.ledger import BucketCharge, Ledger, MemoryLedger, SQLiteLedger, open_ledger
from falbudget.ledger import sqlite as sqlite_ledger

ENDPOINT = pgb.ENDPOINT
PRICE = pgb.PRICE  # micro-USD held and settled per operation
BIG = pgb.BIG  # a limit never reached during a run
CHARGES = pgb._charges("solo")  # two capped buckets and a tracker, as a guard with two caps
ARGUMENTS: dict[str, Any] = {
    "prompt": "A snowboarder carves through fresh powder under a cerulean sky.",
    "image_url": "https://v3.fal.media/files/kangaroo/maxresdefault.jpg",
    "num_frames": 144,
    "resolution": "480p",
}
CAPS = [Cap("1000000000", window="month"), Cap("1000000000", scope="project", window="day")]

MEMORY_GOAL_X = 3.0
SQLITE_GOAL_X = 3.0
HISTORY_GOAL_X = 1.1
POSTGRES_CYCLE_GOAL_X = 0.8
POSTGRES_RESERVE_GOAL_X = 0.9
SQLITE_PROCESSES = 6
POSTGRES_PROCESSES = 8


@dataclass(frozen=True)
class Settings:
    repeats: int
    race_repeats: int
    memory_ops: int
    sqlite_ops: int
    history: int
    seconds: float
    warmup: int


FULL = Settings(
    repeats=5,
    race_repeats=3,
    memory_ops=50_000,
    sqlite_ops=1000,
    history=1_000_000,
    seconds=3.0,
    warmup=200,
)
QUICK = Settings(
    repeats=3,
    race_repeats=1,
    memory_ops=10_000,
    sqlite_ops=200,
    history=100_000,
    seconds=1.0,
    warmup=50,
)


def median(measure: Callable[[], float], repeats: int) -> float:
    return statistics.median(measure() for _ in range(repeats))


def medians(measures: Sequence[Callable[[], float]], repeats: int) -> list[float]:
    """The median of each measure, the measures taking turns so that drift hits them alike."""
    runs: list[list[float]] = [[] for _ in measures]
    for _ in range(repeats):
        for run, measure in zip(runs, measures, strict=True):
            run.append(measure())
    return [statistics.median(run) for run in runs]


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fb_bench_") as directory:
        yield Path(directory)


# ----------------------------------------------------------------------------- ledger timing


def time_cycles(ledger: Ledger, n: int, *, split: bool = False) -> tuple[float, float]:
    """(reserve us, reserve + settle us) per operation over ``n`` operations on ``ledger``.

    Hold ids are uuid4 hex, as the guard makes them, generated before the clock starts. Without
    ``split`` the reserve alone is not timed (nan), so the loop carries no extra clock reads.
    """
    ids = [uuid.uuid4().hex for _ in range(n)]
    reserve, settle, wall, clock = ledger.reserve, ledger.settle, time.time, time.perf_counter
    reserving = 0.0
    started = clock()
    for hold_id in ids:
        now = wall()
        before = clock() if split else 0.0
        admission = reserve(
            hold_id=hold_id,
            endpoint=ENDPOINT,
            amount=PRICE,
            charges=CHARGES,
            now=now,
            expires_at=now + 3600,
        )
        if split:
            reserving += clock() - before
        if not admission.admitted:
            raise RuntimeError(f"{ledger.url} refused a reservation: {admission}")
        settle(hold_id, None, now=now)
    total = clock() - started
    return (reserving / n * 1e6 if split else float("nan")), total / n * 1e6


def cycle_us(ledger: Ledger, n: int) -> float:
    return time_cycles(ledger, n)[1]


def warm(ledger: Ledger, n: int) -> Ledger:
    """A few operations first: the connection, the schema, the bucket rows, the caches."""
    time_cycles(ledger, n)
    return ledger


def guard_us(guard: Guard, n: int) -> float:
    """Microseconds per ``with guard.reserve(...)`` block (quote, hold, settle)."""
    reserve, clock = guard.reserve, time.perf_counter
    started = clock()
    for _ in range(n):
        with reserve(ENDPOINT, ARGUMENTS, project="alpha"):
            pass
    return (clock() - started) / n * 1e6


# ----------------------------------------------------------------------------- the floors


class DictFloor:
    """The memory ledger's work and nothing around it: dicts of totals behind a lock, the
    inputs checked (amount, each charge's key and limit, the times), each hold kept as a tuple
    of the fields a Hold has (the history stays after the settle, as the ledger's does), the
    heap of expiries pushed and peeked, and the hold returned."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settled: dict[str, int] = {}
        self._held: dict[str, int] = {}
        self._holds: dict[str, tuple[Any, ...]] = {}
        self._expiry: list[tuple[float, int, str]] = []
        self._seq = itertools.count()

    def reserve(
        self,
        hold_id: str,
        amount: int,
        charges: Sequence[BucketCharge],
        now: float,
        expires_at: float,
    ) -> tuple[Any, ...] | None:
        if type(amount) is not int or not 0 <= amount < 2**63:
            raise ValueError(f"amount must be micro-USD, got {amount!r}")
        for moment in (now, expires_at):
            if type(moment) is not float or not math.isfinite(moment):
                raise ValueError(f"a time must be finite epoch seconds, got {moment!r}")
        keys: dict[str, None] = {}
        for charge in charges:
            key, limit = charge.key, charge.limit
            if type(key) is not str or not key:
                raise ValueError(f"a bucket key must be a non-empty string, got {key!r}")
            if limit is not None and (type(limit) is not int or not 0 <= limit < 2**63):
                raise ValueError(f"a limit must be micro-USD, got {limit!r}")
            keys[key] = None
        with self._lock:
            if self._expiry and self._expiry[0][0] < now:
                raise RuntimeError("the floor never expires holds")
            settled, held = self._settled, self._held
            for charge in charges:
                key = charge.key
                if (
                    charge.limit is not None
                    and settled.get(key, 0) + held.get(key, 0) + amount > charge.limit
                ):
                    return None
            for key in keys:
                settled.setdefault(key, 0)
                held[key] = held.get(key, 0) + amount
            hold = (hold_id, ENDPOINT, amount, "held", tuple(keys), now, expires_at, now, None)
            self._holds[hold_id] = hold
            heapq.heappush(self._expiry, (expires_at, next(self._seq), hold_id))
            return hold

    def settle(self, hold_id: str, now: float) -> tuple[Any, ...]:
        if type(now) is not float or not math.isfinite(now):
            raise ValueError(f"now must be finite epoch seconds, got {now!r}")
        with self._lock:
            hold = self._holds[hold_id]
            amount, keys = hold[2], hold[4]
            if hold[3] != "held":
                return hold
            for key in keys:
                self._held[key] -= amount
                self._settled[key] += amount
            hold = (*hold[:3], "settled", *hold[4:7], now, amount)
            self._holds[hold_id] = hold
            return hold


def dict_floor_us(n: int) -> float:
    """Microseconds per reserve + settle of :class:`DictFloor`, timed as :func:`time_cycles`
    times a ledger (the same ids, clock reads and arguments)."""
    floor = DictFloor()
    ids = [uuid.uuid4().hex for _ in range(n)]
    reserve, settle, wall, clock = floor.reserve, floor.settle, time.time, time.perf_counter
    started = clock()
    for hold_id in ids:
        now = wall()
        if reserve(hold_id, PRICE, CHARGES, now, now + 3600) is None:
            raise RuntimeError("the dict floor refused a reservation")
        settle(hold_id, now)
    return (clock() - started) / n * 1e6


BUSY_TIMEOUT_S = 30.0  # SQLiteLedger's default busy_timeout_s
FLOOR_KEY = "global|floor"
FLOOR_RESERVE = "UPDATE bucket SET held = held + ? WHERE key = ? AND settled + held + ? <= lim"
FLOOR_SETTLE = "UPDATE bucket SET held = held - ?, settled = settled + ? WHERE key = ?"


def floor_connect(path: str) -> sqlite3.Connection:
    """A connection set up as SQLiteLedger sets up its own (sqlite.py, ``_connection``)."""
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def floor_create(path: str) -> str:
    conn = floor_connect(path)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS bucket (key TEXT PRIMARY KEY,"
        " settled INTEGER NOT NULL DEFAULT 0, held INTEGER NOT NULL DEFAULT 0,"
        " lim INTEGER NOT NULL) WITHOUT ROWID"
    )
    conn.execute("INSERT OR IGNORE INTO bucket (key, lim) VALUES (?, ?)", (FLOOR_KEY, BIG))
    conn.close()
    return path


def floor_cycle(conn: sqlite3.Connection) -> bool:
    """Reserve then settle: two single-row conditional UPDATEs, each committed on its own."""
    conn.execute("BEGIN IMMEDIATE")
    admitted = conn.execute(FLOOR_RESERVE, (PRICE, FLOOR_KEY, PRICE)).rowcount == 1
    conn.execute("COMMIT")
    if admitted:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(FLOOR_SETTLE, (PRICE, PRICE, FLOOR_KEY))
        conn.execute("COMMIT")
    return admitted


def floor_us(conn: sqlite3.Connection, n: int) -> float:
    clock = time.perf_counter
    started = clock()
    for _ in range(n):
        if not floor_cycle(conn):
            raise RuntimeError("the sqlite3 floor refused a reservation")
    return (clock() - started) / n * 1e6


def floor_worker(path: str, worker: int, seconds: float, barrier: Any, results: Any) -> None:
    """The floor in a spawned process, for ``pgb.race``."""
    try:
        conn = floor_connect(path)
        floor_cycle(conn)
        barrier.wait(timeout=120)
        admitted = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            admitted += floor_cycle(conn)
        conn.close()
        results.put((admitted, None))
    except BaseException as exc:  # report it rather than hang the parent
        results.put((0, repr(exc)))


def pragmas(conn: sqlite3.Connection) -> tuple[str, ...]:
    return tuple(
        f"{name}={conn.execute(f'PRAGMA {name}').fetchone()[0]}"
        for name in ("journal_mode", "synchronous", "busy_timeout")
    )


def ledger_pragmas(ledger: SQLiteLedger) -> tuple[str, ...]:
    """The pragmas of the ledger's own connection (a private attribute: a benchmark's check)."""
    return pragmas(ledger._connection())


# ----------------------------------------------------------------------------- history


def add_history(path: str, rows: int) -> None:
    """``rows`` closed holds over the year to 2025-06-30, written straight into the ledger's
    tables (the ledger closed): random uuid-like ids, mostly settled, some released or expired;
    each charges its month's global, endpoint and project bucket (50 projects), with the running
    totals to match. Bulk-loaded with the rollback journal, then back to WAL."""
    end = 1751328000.0  # 2025-07-01 00:00 UTC
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -524288")  # 512 MiB, for the build only
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "CREATE TEMP TABLE hist AS"
            " WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ? - 1)"
            " SELECT i, lower(hex(randomblob(16))) AS id, ? - (? - i) * ? AS t,"
            " CASE WHEN i % 20 = 0 THEN 'released' WHEN i % 101 = 0 THEN 'expired'"
            " ELSE 'settled' END AS state,"
            " CASE WHEN i % 20 = 0 THEN NULL ELSE ? END AS spent,"
            " 'p' || (i % 50) AS project FROM n",
            (rows, end, rows, 365 * 86400 / rows, PRICE),
        )
        conn.execute(
            "CREATE TEMP TABLE keyed AS SELECT i, id, t, spent, project,"
            " 'endpoint=' || ? || '|' || strftime('%Y-%m', t, 'unixepoch') AS e,"
            " 'global|' || strftime('%Y-%m', t, 'unixepoch') AS g,"
            " 'project=' || project || '|' || strftime('%Y-%m', t, 'unixepoch') AS p,"
            " state FROM hist",
            (ENDPOINT,),
        )
        # each hold's kind (endpoint, buckets, tags, table), found or made as a reserve does
        conn.execute("CREATE TEMP TABLE kinds (e, g, p, project, kind)")
        for e, g, p, project in conn.execute(
            "SELECT DISTINCT e, g, p, project FROM keyed"
        ).fetchall():
            buckets = json.dumps([e, g, p])
            tags = json.dumps({"endpoint": ENDPOINT, "project": project}, sort_keys=True)
            kind = sqlite_ledger._kind(conn, (ENDPOINT, buckets, tags, "2025-01", "0" * 64))
            conn.execute("INSERT INTO kinds VALUES (?, ?, ?, ?, ?)", (e, g, p, project, kind))
        conn.execute("CREATE INDEX temp.kinds_by_value ON kinds (e, g, p, project)")
        conn.execute(
            "INSERT INTO holds (id, kind, amount, state, created_at, expires_at, updated_at,"
            " settled_amount)"
            " SELECT id, kinds.kind, ?, state, t, t + 3600, t + 60, spent FROM keyed"
            " JOIN kinds USING (e, g, p, project) ORDER BY i",
            (PRICE,),
        )
        links = (
            "SELECT id, t, spent, e AS key FROM keyed UNION ALL SELECT id, t, spent, g FROM keyed"
            " UNION ALL SELECT id, t, spent, p FROM keyed"
        )
        conn.execute(
            "INSERT INTO buckets (key, settled, held)"
            f" SELECT key, SUM(COALESCE(spent, 0)), 0 FROM ({links}) WHERE true GROUP BY key"
            " ON CONFLICT (key) DO UPDATE SET settled = settled + excluded.settled"
        )
        conn.execute("COMMIT")
        conn.execute("DROP TABLE kinds")
        conn.execute("DROP TABLE keyed")
        conn.execute("DROP TABLE hist")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"could not put the history file back in WAL mode ({mode})")
    finally:
        conn.close()


def fresh_admission_us(directory: Path, n: int, warmup: int) -> float:
    """Admission time on a new, empty ledger file (``warmup`` operations first)."""
    path = directory / f"fresh-{uuid.uuid4().hex[:8]}.db"
    ledger = SQLiteLedger(path)
    try:
        return time_cycles(warm(ledger, warmup), n, split=True)[0]
    finally:
        ledger.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the report


@dataclass
class Row:
    measure: str
    falbudget: float
    baseline: float
    baseline_is: str
    unit: str  # "us" or "/s"
    goal: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float:
        return self.falbudget / self.baseline

    def cells(self) -> list[str]:
        verdict = "" if self.met is None else ("goal met" if self.met else "goal missed")
        return [
            self.measure,
            figure(self.falbudget, self.unit),
            figure(self.baseline, self.unit),
            self.baseline_is,
            f"{self.ratio:.2f}x",
            self.goal,
            verdict,
        ]


def figure(value: float, unit: str) -> str:
    if unit == "/s":
        return f"{value:,.0f} /s"
    return f"{value:,.2f} us" if value < 100 else f"{value:,.0f} us"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def postgres_rows(url: str, settings: Settings, sqlite_cycle: float, notes: list[str]) -> list[Row]:
    """PostgreSQL beside SQLite; a "skipped" line and no rows when no server answers."""
    try:
        from falbudget.ledger.postgres import redact_url

        shown = redact_url(url)
        version = pgb.server_version(url)
    except Exception as exc:  # no driver, no server, refused login...
        notes.append(f"PostgreSQL: skipped ({first_line(exc)})")
        print(notes[-1], flush=True)
        return []
    print(f"PostgreSQL {version} at {shown}: measuring...", flush=True)
    try:
        with pgb.fresh_schema(url) as store:
            ledger = warm(open_ledger(store), settings.warmup)
            try:
                pg_cycle = median(lambda: cycle_us(ledger, settings.sqlite_ops), settings.repeats)
            finally:
                ledger.close()
        pg_rate, floor_rate, pg_reserve, floor_reserve = medians(
            [
                lambda: pgb.admissions_per_second(url, POSTGRES_PROCESSES, settings.seconds),
                lambda: pgb.floor_per_second(url, POSTGRES_PROCESSES, settings.seconds),
                lambda: pgb.admissions_per_second(
                    url, POSTGRES_PROCESSES, settings.seconds, settle=False
                ),
                lambda: pgb.floor_per_second(
                    url, POSTGRES_PROCESSES, settings.seconds, settle=False
                ),
            ],
            settings.race_repeats,
        )
    except Exception as exc:  # the server went away mid-run: keep the SQLite figures
        notes.append(f"PostgreSQL: stopped ({first_line(exc)})")
        print(notes[-1], flush=True)
        return []
    notes.append(f"PostgreSQL {version} at {shown}, a throwaway schema per measure (dropped)")
    return [
        Row(
            "PostgreSQL: ledger reserve+settle, one connection",
            pg_cycle,
            sqlite_cycle,
            "SQLite ledger (above)",
            "us",
        ),
        Row(
            f"PostgreSQL: reserve+settle/s, {POSTGRES_PROCESSES} processes, one budget",
            pg_rate,
            floor_rate,
            "one-statement CTE floor, same processes",
            "/s",
            f">= {POSTGRES_CYCLE_GOAL_X:g}x floor",
            pg_rate >= POSTGRES_CYCLE_GOAL_X * floor_rate,
        ),
        Row(
            f"PostgreSQL: reserve only/s, {POSTGRES_PROCESSES} processes, one budget",
            pg_reserve,
            floor_reserve,
            "one-statement CTE floor, same processes",
            "/s",
            f">= {POSTGRES_RESERVE_GOAL_X:g}x floor",
            pg_reserve >= POSTGRES_RESERVE_GOAL_X * floor_reserve,
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer operations and history")
    parser.add_argument("--history", type=int, help="holds of history (default 1,000,000)")
    parser.add_argument("--url", default=pgb.default_url(), help="PostgreSQL server, no schema")
    options = parser.parse_args(argv)
    settings = QUICK if options.quick else FULL
    if options.history is not None:
        if options.history < 1:
            parser.error(f"--history {options.history} is not allowed: 1 or more holds")
        settings = replace(settings, history=options.history)

    from tabulate import tabulate

    started = time.perf_counter()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"falbudget {falbudget.__version__}, Python {sys.version.split()[0]}, SQLite"
        f" {sqlite3.sqlite_version}, {os.cpu_count()} CPUs, load {load}"
        f"{' (--quick)' if options.quick else ''}",
        flush=True,
    )
    rows: list[Row] = []
    notes: list[str] = []

    # -- memory --------------------------------------------------------------------------------
    # a fresh ledger (and guard) each repeat, so that holds do not pile up in RAM
    def memory_guard_us(n: int) -> float:
        guard = Guard(MemoryLedger(), CAPS)
        guard_us(guard, settings.warmup)
        return guard_us(guard, n)

    n = settings.memory_ops
    mem_cycle, mem_floor, mem_guard = medians(
        [
            lambda: cycle_us(warm(MemoryLedger(), settings.warmup), n),
            lambda: dict_floor_us(n),
            lambda: memory_guard_us(n // 2),
        ],
        settings.repeats,
    )
    rows.append(
        Row(
            "memory: ledger reserve+settle",
            mem_cycle,
            mem_floor,
            "dicts + lock, same checks, history and expiry heap",
            "us",
            f"<= {MEMORY_GOAL_X:g}x floor",
            mem_cycle <= MEMORY_GOAL_X * mem_floor,
        )
    )
    rows.append(
        Row("memory: with guard.reserve(...)", mem_guard, mem_cycle, "memory ledger (above)", "us")
    )

    with scratch() as directory:
        # -- SQLite, one connection -----------------------------------------------------------
        lite = SQLiteLedger(directory / "ledger.db")
        warm(lite, settings.warmup)
        floor = floor_connect(floor_create(str(directory / "floor.db")))
        floor_us(floor, settings.warmup)
        if pragmas(floor) != ledger_pragmas(lite):
            notes.append(f"the floor's pragmas {pragmas(floor)} differ: {ledger_pragmas(lite)}")
        lite_guard = Guard("sqlite:///" + str(directory / "guard.db"), CAPS)
        guard_us(lite_guard, settings.warmup)
        n = settings.sqlite_ops
        lite_cycle, lite_floor, lite_guard_us = medians(
            [
                lambda: cycle_us(lite, n),
                lambda: floor_us(floor, n),
                lambda: guard_us(lite_guard, n),
            ],
            settings.repeats,
        )
        notes.append("SQLite floor pragmas, as the ledger's: " + ", ".join(pragmas(floor)))
        lite.close()
        lite_guard.close()
        floor.close()
        rows.append(
            Row(
                "SQLite: ledger reserve+settle",
                lite_cycle,
                lite_floor,
                "raw sqlite3: 2 conditional UPDATE commits",
                "us",
                f"<= {SQLITE_GOAL_X:g}x floor",
                lite_cycle <= SQLITE_GOAL_X * lite_floor,
            )
        )
        rows.append(
            Row("SQLite: with guard.reserve(...)", lite_guard_us, lite_cycle, "SQLite ledger", "us")
        )

        # -- SQLite, history --------------------------------------------------------------------
        print(f"writing {settings.history:,} holds of history...", flush=True)
        history_path = directory / "history.db"
        SQLiteLedger(history_path).close()  # the ledger makes its tables
        built = time.perf_counter()
        add_history(str(history_path), settings.history)
        built = time.perf_counter() - built
        size = history_path.stat().st_size / 1e6
        notes.append(
            f"history: {settings.history:,} holds (each charging 3 buckets), bulk-loaded in"
            f" {built:.0f} s; the file is {size:,.0f} MB, {size * 1e6 / settings.history:,.0f}"
            " bytes a hold"
        )
        aged = SQLiteLedger(history_path)
        warm(aged, settings.warmup)
        old_us, new_us = medians(
            [
                lambda: time_cycles(aged, n, split=True)[0],
                lambda: fresh_admission_us(directory, n, settings.warmup),
            ],
            settings.repeats,
        )
        aged.close()
        rows.append(
            Row(
                f"SQLite: admission, {settings.history:,} holds of history",
                old_us,
                new_us,
                "admission on a fresh file",
                "us",
                f"<= {HISTORY_GOAL_X:g}x",
                old_us <= HISTORY_GOAL_X * new_us,
            )
        )
        history_path.unlink()

    # -- SQLite, processes ----------------------------------------------------------------------
    print(f"{SQLITE_PROCESSES} processes on one SQLite file...", flush=True)

    def floor_race() -> float:
        with scratch() as place:
            path = floor_create(str(place / "floor.db"))
            return pgb.race(floor_worker, path, SQLITE_PROCESSES, settings.seconds)

    lite_rate, floor_rate = medians(
        [lambda: pgb.sqlite_admissions_per_second(SQLITE_PROCESSES, settings.seconds), floor_race],
        settings.race_repeats,
    )
    rows.append(
        Row(
            f"SQLite: admissions/s, {SQLITE_PROCESSES} processes, one file",
            lite_rate,
            floor_rate,
            f"raw sqlite3 floor, {SQLITE_PROCESSES} processes",
            "/s",
        )
    )

    # -- PostgreSQL -----------------------------------------------------------------------------
    rows.extend(postgres_rows(options.url, settings, lite_cycle, notes))

    print()
    print(
        tabulate(
            [row.cells() for row in rows],
            headers=["measure", "falbudget", "baseline", "baseline is", "ratio", "goal", "verdict"],
            disable_numparse=True,
            colalign=("left", "right", "right", "left", "right", "left", "left"),
        )
    )
    print()
    print(
        f"medians of {settings.repeats} repeats ({settings.race_repeats} for processes,"
        f" {settings.seconds:g} s each); ratio = falbudget / baseline; us per operation"
        f" ({settings.memory_ops:,} memory, {settings.sqlite_ops:,} SQLite/PostgreSQL ops a repeat)"
    )
    for note in notes:
        print(note)
    goals = [row.met for row in rows if row.met is not None]
    print(
        f"goals: {sum(goals)} met, {len(goals) - sum(goals)} missed;"
        f" {time.perf_counter() - started:.0f} s in all"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
