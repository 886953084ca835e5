"""How long the dashboard takes over a large ledger, beside the report query measured in the
same run.

    python benchmarks/bench_dashboard.py [--quick] [--holds N]

A SQLite ledger of ``N`` holds (default 1,000,000; ``--quick``: 100,000) is bulk-loaded by
bench_guard.py's loader (a year of holds to 2025-06-30, 50 projects, three buckets each), plus
20 holds in flight, 5 refusals and an adjustment made through the API; "now" is 2025-06-30 12:00
UTC and the caps are bench_guard's (a global month cap and a per-project day cap). Each page and
API answer is fetched through the ASGI app in process (no network), the median of 5 fetches.

The baseline is what ``falbudget report`` computes for the same window (the default: the 30
days to the end of today): ``report.read_groups`` (the ledger's ``summarize``) and
``build_report``, the aggregate query the spend page is built on. Each row prints the page's
time, the baseline's, their ratio and the verdict against the goal of issue 13: every page
within 1 s. Timing never fails the run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from bench_guard import CAPS, ENDPOINT, add_history, scratch
from falbudget import Guard
from falbudget import report as rp
from falbudget.ledger import Refusal, SQLiteLedger
from falbudget.ledger.base import BucketCharge

NOW = 1751284800.0  # 2025-06-30 12:00 UTC
GOAL_S = 1.0
REPEATS = 5
PAGES = [
    ("caps page /", "/"),
    ("spend page /spend", "/spend"),
    ("activity page /activity", "/activity"),
    ("keys page /keys", "/keys"),
    ("GET /api/v1/status", "/api/v1/status"),
    ("GET /api/v1/report", "/api/v1/report"),
    ("GET /api/v1/holds", "/api/v1/holds"),
    ("GET /api/v1/history (first page)", "/api/v1/history"),
    ("GET /api/v1/refusals", "/api/v1/refusals"),
]


def median_s(measure: Callable[[], object], repeats: int = REPEATS) -> float:
    measure()  # warm: the first fetch also compiles templates
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        measure()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build(path: Path, holds: int) -> None:
    SQLiteLedger(path).close()  # the schema
    started = time.perf_counter()
    add_history(str(path), holds)
    print(f"bulk-loaded {holds:,} holds in {time.perf_counter() - started:.1f} s")
    ledger = SQLiteLedger(path)
    try:
        charge = [BucketCharge("global|open", None)]
        for index in range(20):
            ledger.reserve(
                hold_id=f"open-{index}",
                endpoint=ENDPOINT,
                amount=800_000,
                charges=charge,
                now=NOW - 60 * index,
                expires_at=NOW + 3600,
                tags={"project": f"p{index % 5}"},
            )
        for index in range(5):
            ledger.record_refusal(
                Refusal(NOW - index, ENDPOINT, "cap_exceeded", "global month cap", 800_000, {})
            )
        first = ledger.holds(states=["settled"], limit=1)[0]
        ledger.adjust(first.id, 900_000, now=NOW, reason="bench", source="bench")
    finally:
        ledger.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 holds")
    parser.add_argument("--holds", type=int, default=None, help="holds of history")
    args = parser.parse_args(argv)
    holds = args.holds or (100_000 if args.quick else 1_000_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from falbudget.dashboard.app import create_dashboard

    with scratch() as directory:
        path = directory / "ledger.db"
        build(path, holds)
        ledger = SQLiteLedger(path)
        guard = Guard(ledger, CAPS, clock=lambda: NOW)
        client = TestClient(
            create_dashboard(guard), base_url="http://127.0.0.1:8788", client=("127.0.0.1", 1)
        )

        def report_query() -> object:
            since, until = rp.default_window(NOW, "UTC")
            groups = rp.read_groups(ledger, CAPS, now=NOW, since=since, until=until)
            return rp.build_report(groups, CAPS, now=NOW, since=since, until=until)

        baseline = median_s(report_query)
        rows = []
        for name, url in PAGES:

            def fetch(url: str = url) -> object:
                answer = client.get(url)
                if answer.status_code != 200:
                    raise RuntimeError(f"{url}: HTTP {answer.status_code}: {answer.text[:200]}")
                return answer

            rows.append((name, median_s(fetch)))
        ledger.close()
    print(
        f"\n{holds:,} holds; baseline: the report's aggregate query (read_groups + build_report,"
        f" the default 30-day window) {baseline * 1000:.0f} ms; goal: every page within"
        f" {GOAL_S:.0f} s\n"
    )
    print(f"{'measure':36} {'dashboard':>10} {'baseline':>10} {'ratio':>7}  verdict")
    for name, seconds in rows:
        verdict = "goal met" if seconds <= GOAL_S else "goal missed"
        print(
            f"{name:36} {seconds * 1000:>7.0f} ms {baseline * 1000:>7.0f} ms"
            f" {seconds / baseline:>6.2f}x  {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
