"""What `falbudget proxy` adds to a submit, beside the same submit sent straight to fal's stand-in.

    python benchmarks/bench_proxy.py [--quick]

Starts the fake fal server of the tests (tests/fakefal.py) and `falbudget proxy` in front of it
with a SQLite ledger, then prints, in one run:

- the latency of a queue submit sent straight to the fake and the same submit through the proxy
  (1 worker, one keep-alive connection, one request at a time): p50 and p99, and what the proxy
  adds (goal: at most 3 ms at p50);
- admitted submits per second through the proxy with 2 workers, from 64 connections at once,
  against a cap that admits exactly N (goal: at least 300 a second), beside the fake's own rate
  with the same load, and whether exactly N reached fal.

Timing never fails the run: each goal is printed as met or missed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

import httpx  # noqa: E402
import yaml  # noqa: E402

from proxyserver import FAL_KEY, QUEUE, cli_proxy, target_headers  # noqa: E402

MAGI = "fal-ai/magi/image-to-video"
ARGS = {"prompt": "a fox", "image_url": "https://example.invalid/fox.png"}
BODY = json.dumps(ARGS).encode()
P50_GOAL_MS = 3.0
RATE_GOAL = 300.0
CONNECTIONS = 64


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latencies(url: str, headers: dict[str, str], count: int) -> list[float]:
    with httpx.Client(timeout=30) as client:
        for _ in range(20):  # warm up the connection and the server
            client.post(url, content=BODY, headers=headers)
        seen = []
        for _ in range(count):
            started = time.perf_counter()
            answer = client.post(url, content=BODY, headers=headers)
            seen.append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200, answer.text
    return seen


def burst(url: str, headers: dict[str, str], count: int) -> tuple[float, list[int]]:
    """``count`` submits from CONNECTIONS threads, each with its own keep-alive connection."""
    per_thread = [count // CONNECTIONS + (i < count % CONNECTIONS) for i in range(CONNECTIONS)]
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(CONNECTIONS + 1)

    def work(n: int) -> None:
        with httpx.Client(timeout=120) as client:
            start.wait()
            seen = [client.post(url, content=BODY, headers=headers).status_code for _ in range(n)]
        with lock:
            statuses.extend(seen)

    threads = [threading.Thread(target=work, args=(n,)) for n in per_thread]
    for thread in threads:
        thread.start()
    start.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, statuses


def config(folder: str, fake: RemoteFake, limit: str) -> str:
    path = os.path.join(folder, f"falbudget-{limit}.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(
            {
                "ledger": "sqlite:///" + os.path.join(folder, f"ledger-{limit}.db"),
                "caps": [{"limit": limit}],
                "proxy": {
                    "upstreams": {
                        "fal.run": f"{fake.url}/run",
                        "queue.fal.run": f"{fake.url}/queue",
                    },
                    "anonymous": True,
                    "follow_interval": 3600,
                },
            },
            handle,
        )
    return path


CHILD = """
import sys
from fakefal import FakeFal
fake = FakeFal()
fake.start()
print(fake.url, flush=True)
for line in sys.stdin:
    if line.strip() == "count":
        print(fake.count("submit"), flush=True)
    elif line.strip() == "reset":
        fake.reset()
        print("ok", flush=True)
"""


class RemoteFake:
    """The fake fal server in a process of its own, so that its threads do not share a GIL
    with the load generator."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None and self.process.stdin is not None
        self.url = self.process.stdout.readline().strip()
        self.queue_url = f"{self.url}/queue/"

    def ask(self, what: str) -> str:
        assert self.process.stdout is not None and self.process.stdin is not None
        self.process.stdin.write(what + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def count(self) -> int:
        return int(self.ask("count"))

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    args = parser.parse_args()
    count = 300 if args.quick else 2000
    admitted = 500 if args.quick else 2000
    env = {"FAL_KEY": FAL_KEY, "NO_PROXY": "127.0.0.1"}
    fake = RemoteFake()
    with tempfile.TemporaryDirectory() as folder:
        direct_url = f"{fake.queue_url}{MAGI}"
        direct_headers = {"content-type": "application/json", "authorization": f"Key {FAL_KEY}"}
        proxy_headers = target_headers(f"{QUEUE}/{MAGI}")

        direct = latencies(direct_url, direct_headers, count)
        with cli_proxy(config(folder, fake, "100000000"), 1, env) as url:
            proxied = latencies(url, proxy_headers, count)
        d50, d99 = percentile(direct, 0.5), percentile(direct, 0.99)
        p50, p99 = percentile(proxied, 0.5), percentile(proxied, 0.99)
        print(f"submit latency, {count} one at a time, ms:")
        print(f"  straight to the fake fal server: p50 {d50:.2f}  p99 {d99:.2f}")
        print(f"  through falbudget proxy (SQLite): p50 {p50:.2f}  p99 {p99:.2f}")
        added = p50 - d50
        verdict = "met" if added <= P50_GOAL_MS else "missed"
        print(
            f"  added: p50 {added:.2f}  p99 {p99 - d99:.2f}"
            f"  (goal p50 <= {P50_GOAL_MS:g} ms: {verdict})"
        )

        attempts = admitted + admitted // 5
        elapsed, _ = burst(direct_url, direct_headers, attempts)
        fake_rate = attempts / elapsed
        fake.ask("reset")
        limit = str(Decimal("0.80") * admitted)  # 0.80 a submit: exactly `admitted` fit
        with cli_proxy(config(folder, fake, limit), 2, env) as url:
            elapsed, statuses = burst(url, proxy_headers, attempts)
        ok = statuses.count(200)
        rate = ok / elapsed
        exact = ok == admitted and fake.count() == admitted
        exact &= statuses.count(402) == attempts - admitted
        print(
            f"\nthroughput, {attempts} submits from {CONNECTIONS} threads with a connection each:"
        )
        print(f"  straight to the fake fal server: {fake_rate:.0f} a second")
        print(
            f"  through falbudget proxy, 2 workers, SQLite: {rate:.0f} admitted a second"
            f" (goal >= {RATE_GOAL:g}: {'met' if rate >= RATE_GOAL else 'missed'})"
        )
        print(
            f"  admitted {ok} of a cap for {admitted}, {fake.count()} reached fal,"
            f" {statuses.count(402)} refused with 402: {'exact' if exact else 'NOT EXACT'}"
        )
    fake.close()


if __name__ == "__main__":
    main()
