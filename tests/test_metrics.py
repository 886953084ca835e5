"""Prometheus metrics read from the ledger at scrape time: the exposition is parsed with
prometheus_client's parser and every figure checked against one computed by hand.

MAGI-1 prices (docs/pricing.md): the defaults (96 frames, 720p) cost 0.80 USD.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from falbudget import BudgetExceeded, Cap, Guard
from falbudget.errors import ConfigurationError, LedgerUnavailable
from falbudget.ledger import Ledger, open_ledger
from falbudget.metrics import Metrics
from ledger_backends import PROCESS_BACKENDS, backend_params, store_url

MAGI = "fal-ai/magi/image-to-video"
REQ = {"prompt": "a cat", "image_url": "https://example.invalid/cat.png"}
NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC).timestamp()
DAY = "day@UTC:2026-11-24"
MONTH = "month@UTC:2026-11"
USER_CAP = "user day cap 1.00"  # Cap.label() of the unnamed per-user cap below


def caps() -> list[Cap]:
    return [
        Cap("10.00", window="month", name="monthly"),
        Cap("1.00", scope="user", window="day"),
    ]


def scrape(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition: (sample name, labels) -> value."""
    text = metrics.exposition().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def cap_labels(cap: str, scope: str, window: str, bucket: str) -> frozenset[tuple[str, str]]:
    return frozenset({"cap": cap, "scope": scope, "window": window, "bucket": bucket}.items())


def spend(guard: Guard) -> None:
    """ann 0.80 settled; ann again refused by her day cap (0.80 + 0.80 > 1.00); bob 0.80 held
    (open); carol 0.80 held and settled at 0.95 (an overrun of 0.15)."""
    with guard.reserve(MAGI, REQ, user="ann"):
        pass
    with pytest.raises(BudgetExceeded):
        guard.reserve(MAGI, REQ, user="ann").acquire()
    guard.reserve(MAGI, REQ, user="bob").acquire()
    guard.reserve(MAGI, REQ, user="carol").acquire().settle("0.95")


def expected() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    by_endpoint = frozenset({"endpoint": MAGI}.items())
    return {
        # monthly: spent 0.80 + 0.95 = 1.75, held 0.80 (bob), remaining 10 - 1.75 - 0.80 = 7.45
        (
            "falbudget_cap_spent_usd",
            cap_labels("monthly", "global", "month", f"global|{MONTH}"),
        ): 1.75,
        (
            "falbudget_cap_held_usd",
            cap_labels("monthly", "global", "month", f"global|{MONTH}"),
        ): 0.80,
        (
            "falbudget_cap_remaining_usd",
            cap_labels("monthly", "global", "month", f"global|{MONTH}"),
        ): 7.45,
        (
            "falbudget_cap_limit_usd",
            cap_labels("monthly", "global", "month", f"global|{MONTH}"),
        ): 10.0,
        # per user, a day: ann 0.80 spent (0.20 left), bob 0.80 held (0.20 left),
        # carol 0.95 spent (0.05 left)
        (
            "falbudget_cap_spent_usd",
            cap_labels(USER_CAP, "user=ann", "day", f"user=ann|{DAY}"),
        ): 0.80,
        (
            "falbudget_cap_remaining_usd",
            cap_labels(USER_CAP, "user=ann", "day", f"user=ann|{DAY}"),
        ): 0.20,
        (
            "falbudget_cap_held_usd",
            cap_labels(USER_CAP, "user=bob", "day", f"user=bob|{DAY}"),
        ): 0.80,
        (
            "falbudget_cap_remaining_usd",
            cap_labels(USER_CAP, "user=bob", "day", f"user=bob|{DAY}"),
        ): 0.20,
        (
            "falbudget_cap_spent_usd",
            cap_labels(USER_CAP, "user=carol", "day", f"user=carol|{DAY}"),
        ): 0.95,
        (
            "falbudget_cap_remaining_usd",
            cap_labels(USER_CAP, "user=carol", "day", f"user=carol|{DAY}"),
        ): 0.05,
        (
            "falbudget_cap_limit_usd",
            cap_labels(USER_CAP, "user=carol", "day", f"user=carol|{DAY}"),
        ): 1.0,
        # every request: 1.75 spent, 0.80 held
        ("falbudget_spent_usd", frozenset()): 1.75,
        ("falbudget_held_usd", frozenset()): 0.80,
        # three holds (ann, bob, carol), each under both caps; one refusal, by the user cap
        ("falbudget_admissions_recent", frozenset({"endpoint": MAGI, "cap": "monthly"}.items())): 3,
        ("falbudget_admissions_recent", frozenset({"endpoint": MAGI, "cap": USER_CAP}.items())): 3,
        ("falbudget_refusals_recent", frozenset({"endpoint": MAGI, "cap": USER_CAP}.items())): 1,
        ("falbudget_overruns_recent", by_endpoint): 1,
        ("falbudget_overrun_usd_recent", by_endpoint): 0.15,  # 0.95 - 0.80
        ("falbudget_expired_holds_recent", by_endpoint): 0,
        ("falbudget_ledger_up", frozenset()): 1,
    }


def check(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> None:
    for key, value in expected().items():
        assert key in samples, key
        assert samples[key] == pytest.approx(value, abs=1e-9), key
    # only the three users' buckets and the monthly one: no stray series
    buckets = {
        dict(labels)["bucket"] for name, labels in samples if name == "falbudget_cap_spent_usd"
    }
    assert buckets == {f"global|{MONTH}", f"user=ann|{DAY}", f"user=bob|{DAY}", f"user=carol|{DAY}"}
    for (name, labels), value in samples.items():
        assert math.isfinite(value), (name, labels)


def test_the_exposition_shows_the_ledger_figures(ledger_factory: Callable[[], Ledger]) -> None:
    guard = Guard(ledger_factory(), caps(), clock=lambda: NOW)
    spend(guard)
    check(scrape(Metrics(guard)))


def test_two_handles_on_one_ledger_report_the_same_totals(
    ledger_factory: Callable[[], Ledger],
) -> None:
    writer = Guard(ledger_factory(), caps(), clock=lambda: NOW)
    reader = Guard(ledger_factory(), caps(), clock=lambda: NOW)
    spend(writer)
    check(scrape(Metrics(reader)))
    assert scrape(Metrics(reader)) == scrape(Metrics(writer))


_CHILD = """
import sys
from falbudget import Cap, Guard
from falbudget.metrics import Metrics
url, now = sys.argv[1], float(sys.argv[2])
guard = Guard(url, [Cap("10.00", window="month", name="monthly"),
                    Cap("1.00", scope="user", window="day")], clock=lambda: now)
sys.stdout.write(Metrics(guard).exposition().decode())
"""


@pytest.mark.parametrize("kind", backend_params(PROCESS_BACKENDS))
def test_another_process_reports_the_same_totals(kind: str, tmp_path: Path) -> None:
    url = store_url(kind, tmp_path)
    guard = Guard(open_ledger(url), caps(), clock=lambda: NOW)
    try:
        spend(guard)
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, url, repr(NOW)],
            capture_output=True,
            text=True,
            check=True,
        )
        theirs = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(child.stdout)
            for s in family.samples
        }
        check(theirs)
        ours = scrape(Metrics(guard))
        ledger_samples = [k for k in ours if not k[0].startswith("falbudget_ledger_latency")]
        assert {k: ours[k] for k in ledger_samples} == {
            k: theirs[k] for k in theirs if not k[0].startswith("falbudget_ledger_latency")
        }
    finally:
        guard.close()


def test_expired_holds_are_counted(ledger_factory: Callable[[], Ledger]) -> None:
    clock = [NOW]
    guard = Guard(ledger_factory(), caps(), clock=lambda: clock[0], hold_ttl=60)
    hold = guard.reserve(MAGI, REQ, user="dan").acquire()
    hold.mark_submitted("req-1")
    clock[0] = NOW + 61  # past the 60 s ttl, still inside the last hour
    guard.release_expired()
    samples = scrape(Metrics(guard))
    assert samples[("falbudget_expired_holds_recent", frozenset({"endpoint": MAGI}.items()))] == 1
    # an expired submitted hold counts as spent at its held amount: 0.80
    assert samples[("falbudget_spent_usd", frozenset())] == pytest.approx(0.80)
    clock[0] = NOW + 3601  # the hold was created more than an hour ago: out of the window
    samples = scrape(Metrics(guard))
    assert ("falbudget_expired_holds_recent", frozenset({"endpoint": MAGI}.items())) not in samples


def test_a_cap_with_no_spend_yet_shows_its_whole_limit() -> None:
    guard = Guard("memory://", caps(), clock=lambda: NOW)
    samples = scrape(Metrics(guard))
    # the per-user cap has no user yet: one series for the tag, nothing spent, 1.00 left
    labels = cap_labels(USER_CAP, "user", "day", f"user|{DAY}")
    assert samples[("falbudget_cap_remaining_usd", labels)] == 1.0
    assert samples[("falbudget_cap_spent_usd", labels)] == 0.0
    # the global tracker has no limit: no limit or remaining series without a cap
    assert samples[("falbudget_spent_usd", frozenset())] == 0.0
    assert not any(name == "falbudget_remaining_usd" for name, _ in samples)


class _Down:
    """A ledger that cannot be reached."""

    url = "memory://down"

    def __getattr__(self, name: str) -> Any:
        def fail(*args: object, **kwargs: object) -> Any:
            raise LedgerUnavailable("connection refused")

        return fail


def test_a_ledger_that_cannot_be_read_reports_up_0() -> None:
    guard = Guard(_Down(), caps(), clock=lambda: NOW)  # type: ignore[arg-type]
    samples = scrape(Metrics(guard))
    assert samples[("falbudget_ledger_up", frozenset())] == 0
    assert not any(name.startswith("falbudget_cap_") for name, _ in samples)


def test_ledger_latency_counts_each_call_of_this_process() -> None:
    guard = Guard("memory://", caps(), clock=lambda: NOW)
    metrics = Metrics(guard)
    metrics.instrument()
    metrics.instrument()  # a second call does not wrap twice
    with guard.reserve(MAGI, REQ, user="ann"):
        pass
    samples = scrape(metrics)
    reserve = frozenset({"operation": "reserve"}.items())
    settle = frozenset({"operation": "settle"}.items())
    assert samples[("falbudget_ledger_latency_seconds_count", reserve)] == 1
    assert samples[("falbudget_ledger_latency_seconds_count", settle)] == 1
    # the scrape itself read the ledger through the wrapper too (after the figures were taken)
    assert samples[("falbudget_ledger_latency_seconds_bucket", reserve | {("le", "+Inf")})] == 1


@pytest.mark.parametrize("recent", [0, -1, math.nan, math.inf, True, "60"])
def test_a_bad_window_is_refused(recent: Any) -> None:
    guard = Guard("memory://", caps(), clock=lambda: NOW)
    with pytest.raises(ConfigurationError, match=r"recent=.* is not allowed"):
        Metrics(guard, recent=recent)


# -- in the proxy --------------------------------------------------------------------------------
@pytest.fixture
def serve(fake_fal: Any) -> Iterator[Any]:
    from proxyserver import ProxyServer, settings_for

    servers: list[Any] = []

    def start(guard: Guard, **section: Any) -> Any:
        server = ProxyServer(guard, settings_for(fake_fal, **section)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_the_proxy_serves_metrics_with_requests_by_outcome(serve: Any) -> None:
    from proxyserver import QUEUE, target_headers

    guard = Guard("memory://", [Cap("1.00")], clock=lambda: NOW)
    server = serve(guard)
    body = json.dumps(REQ).encode()
    headers = target_headers(f"{QUEUE}/{MAGI}")
    assert httpx.post(server.url, content=body, headers=headers).status_code == 200
    assert httpx.post(server.url, content=body, headers=headers).status_code == 402  # 1.60 > 1
    answer = httpx.get(f"{server.base}/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }
    submitted = frozenset({"outcome": "submitted", "reason": ""}.items())
    refused = frozenset({"outcome": "refused", "reason": "budget_exceeded"}.items())
    assert samples[("falbudget_proxy_requests_total", submitted)] == 1
    assert samples[("falbudget_proxy_requests_total", refused)] == 1
    assert (
        samples[
            (
                "falbudget_refusals_recent",
                frozenset({"endpoint": MAGI, "cap": "global total cap 1.00"}.items()),
            )
        ]
        == 1
    )
    assert samples[("falbudget_held_usd", frozenset())] + samples[
        ("falbudget_spent_usd", frozenset())
    ] == pytest.approx(0.80)  # the one admitted request, held or settled by now
    assert (
        samples[
            ("falbudget_ledger_latency_seconds_count", frozenset({"operation": "reserve"}.items()))
        ]
        == 2
    )


def test_the_proxy_refuses_metrics_to_other_networks(serve: Any) -> None:
    guard = Guard("memory://", [Cap("1.00")], clock=lambda: NOW)
    # the peer (127.0.0.1) is a trusted proxy: the caller is the forwarded address
    server = serve(guard, trusted_proxies=["127.0.0.1/32"])
    far = httpx.get(f"{server.base}/metrics", headers={"x-forwarded-for": "203.0.113.5"})
    assert far.status_code == 403
    assert "203.0.113.5" in far.json()["detail"]
    allowed = serve(guard, trusted_proxies=["127.0.0.1/32"], metrics_allow=["203.0.113.0/24"])
    near = httpx.get(f"{allowed.base}/metrics", headers={"x-forwarded-for": "203.0.113.5"})
    assert near.status_code == 200


def test_metrics_can_be_turned_off_and_a_bad_path_is_refused(serve: Any) -> None:
    from falbudget.proxy.config import parse_settings

    guard = Guard("memory://", [Cap("1.00")], clock=lambda: NOW)
    server = serve(guard, metrics_path=None)
    assert httpx.get(f"{server.base}/metrics").status_code == 404
    with pytest.raises(ConfigurationError, match=r"proxy.metrics_path='metrics' is not allowed"):
        parse_settings({"metrics_path": "metrics"}, "<test>")
    with pytest.raises(ConfigurationError, match=r"proxy.metrics_allow: 'nowhere' is not allowed"):
        parse_settings({"metrics_allow": ["nowhere"]}, "<test>")


def test_money_is_reported_from_exact_micro_usd() -> None:
    guard = Guard("memory://", [Cap("10.00")], clock=lambda: NOW)
    guard.reserve(MAGI, REQ).acquire().settle(Decimal("0.000001"))
    samples = scrape(Metrics(guard))
    assert samples[("falbudget_spent_usd", frozenset())] == 1e-6  # one micro-USD, exactly


def test_admissions_count_under_a_cap_on_the_visitors_address() -> None:
    # the proxy tags each request with its client's ip; the ledger's summaries group without it
    # (one group for every visitor), so a per-ip cap never matched a group: its admissions were
    # counted under the other caps only, or under cap "" when it was the only cap
    per_ip = Cap("5.00", scope="ip", window="day")
    guard = Guard("memory://", [per_ip], clock=lambda: NOW)
    for ip in ("203.0.113.1", "203.0.113.2", "203.0.113.1"):
        with guard.reserve(MAGI, REQ, ip=ip):
            pass
    samples = scrape(Metrics(guard))
    admitted = {
        dict(labels)["cap"]: value
        for (name, labels), value in samples.items()
        if name == "falbudget_admissions_recent"
    }
    assert admitted == {"ip day cap 5.00": 3}  # three holds, each under the per-ip cap


class _Broken:
    """A ledger whose driver raises its own error, not a falbudget one (a third-party Ledger, a
    row that does not decode)."""

    url = "memory://broken"

    def __getattr__(self, name: str) -> Any:
        def fail(*args: object, **kwargs: object) -> Any:
            raise sqlite3.DatabaseError("database disk image is malformed")

        return fail


def test_a_ledger_error_of_any_kind_reports_up_0_not_a_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = Guard(_Broken(), caps(), clock=lambda: NOW)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="falbudget.metrics"):
        samples = scrape(Metrics(guard))  # raised: the route answered 500 with no figure at all
    assert samples[("falbudget_ledger_up", frozenset())] == 0
    assert not any(name.startswith("falbudget_cap_") for name, _ in samples)
    assert "database disk image is malformed" in caplog.text
