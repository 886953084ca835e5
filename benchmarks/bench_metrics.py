"""What a Prometheus scrape of ``/metrics`` costs, and that it does not grow with the history.

    python benchmarks/bench_metrics.py [--quick]

Two SQLite ledgers with the same last hour (HOUR holds reserved and settled through the ledger,
a few refused by a cap, so every family has series) and the same caps; one also holds a long
history (HISTORY settled holds and as many refusals over the 30 days before, written with SQL
for speed: the scrape reads them as any history). Prints, in one run, the median time of a
scrape (``Metrics.exposition()``) of each, beside ``guard.status()`` (what ``falbudget status``
reads) as a reference, and the ratio of the two scrapes.

Goal: the scrape over the long history takes at most 2x the scrape over the short one (the
trailing-window families read the ledgers' time indexes, never the whole history). Timing
never fails the run: the goal is printed as met or missed.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from falbudget import BudgetExceeded, Cap, Guard  # noqa: E402
from falbudget.ledger import open_ledger  # noqa: E402
from falbudget.metrics import Metrics  # noqa: E402

MAGI = "fal-ai/magi/image-to-video"
REQ = {"prompt": "a cat", "image_url": "https://example.invalid/cat.png"}
NOW = 1_795_000_000.0
GOAL = 2.0


def caps() -> list[Cap]:
    return [Cap("1000000.00", window="month", name="monthly"), Cap("4.00", scope="user")]


def build(path: Path, hour: int, history: int) -> Guard:
    clock = [NOW - 3000.0]
    guard = Guard(open_ledger(f"sqlite:///{path}"), caps(), clock=lambda: clock[0])
    for index in range(hour):
        clock[0] = NOW - 3000.0 + index
        try:
            with guard.reserve(MAGI, REQ, user=f"u{index % 20}"):
                pass
        except BudgetExceeded:
            pass  # each user's 4.00 admits five requests of 0.80: the rest are refusals
    guard.ledger.close()
    db = sqlite3.connect(path)  # closing it last checkpoints the WAL: both files read alike
    if history:
        kind = db.execute("SELECT kind FROM holds LIMIT 1").fetchone()[0]
        start, step = NOW - 30 * 86400, (30 * 86400 - 7200) / history
        db.execute(
            """WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
            INSERT INTO holds (id, kind, amount, state, created_at, expires_at, updated_at,
                settled_amount)
            SELECT 'history-' || i, ?, 800000, 'settled', ? + i * ?, ? + i * ? + 3600,
                ? + i * ?, 800000 FROM n""",
            (history, kind, start, step, start, step, start, step),
        )
        db.execute(
            """WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
            INSERT INTO refusals (at, endpoint, reason, cap, amount, tags)
            SELECT ? + i * ?, ?, 'cap_exceeded', 'monthly', 800000, '{}' FROM n""",
            (history, start, step, MAGI),
        )
        db.commit()
    db.close()
    return Guard(open_ledger(f"sqlite:///{path}"), caps(), clock=lambda: NOW)


def median_ms(action: object, times: int) -> float:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        action()  # type: ignore[operator]
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a smaller history (CI)")
    quick = parser.parse_args().quick
    hour, history, times = (100, 20_000, 9) if quick else (200, 200_000, 31)
    with tempfile.TemporaryDirectory() as folder:
        print(f"building: {hour} requests in the last hour; {history:,} holds of history...")
        short = build(Path(folder) / "short.db", hour, 0)
        long = build(Path(folder) / "long.db", hour, history)
        short_metrics, long_metrics = Metrics(short), Metrics(long)
        short_metrics.exposition(), long_metrics.exposition()  # warm both files' caches
        shorts: list[float] = []
        longs: list[float] = []
        for _ in range(times):  # interleaved: a busy moment of the machine hits both alike
            shorts.append(median_ms(short_metrics.exposition, 1))
            longs.append(median_ms(long_metrics.exposition, 1))
        scrape_short, scrape_long = statistics.median(shorts), statistics.median(longs)
        status_long = median_ms(long.status, times)
        ratio = scrape_long / scrape_short
        print(f"\nmedian of {times}, ms:")
        print(f"  scrape, last hour only (baseline):     {scrape_short:8.2f}")
        print(f"  scrape, with {history:>9,} holds of history: {scrape_long:8.2f}")
        print(f"  guard.status() alone, long history:    {status_long:8.2f}  (reference)")
        verdict = "met" if ratio <= GOAL else "missed"
        print(f"  ratio long / short: {ratio:.2f}  (goal <= {GOAL:g}: {verdict})")
        short.close()
        long.close()


if __name__ == "__main__":
    main()
