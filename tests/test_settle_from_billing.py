"""Settling from fal's bill: with settle_from="billing" (or a quote that is a ceiling) a hold
that fal answered settles at what fal's billing events record for its request id; when they do
not show it yet, or cannot be read, at the amount held (reconcile --apply corrects it later).
The real fal_client wrapper against the local fake fal server, and the fake Platform API for
the bill. MAGI defaults quote 0.80 (docs/pricing.md); figures by hand."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import fal_client
import pytest

from fakebilling import ADMIN_KEY, FakeBilling, event
from fakefal import FakeFal
from falbudget import Cap, Guard
from falbudget.errors import ConfigurationError
from falbudget.guard.config import load_config
from falbudget.pricing import parse_table
from falbudget.reconcile import BillingApiError, bill_lookup

MAGI = "fal-ai/magi/image-to-video"
ARGS = {"prompt": "a fox", "image_url": "https://example.invalid/fox.png"}
LLM = "fal-ai/any-llm"
T0 = 1_796_558_400.0  # 2026-12-06 12:00 UTC
CEILING_TABLE = """\
schema_version: 1
table_version: "mine-1"
effective_date: 2026-12-01
currency: USD
endpoints:
  fal-ai/any-llm:
    source_url: https://fal.ai/models/fal-ai/any-llm
    price_read_on: 2026-12-06
    inputs: {prompt: {type: string, required: true}}
    after_call: {ceiling: "0.50"}
"""


class Bill:
    """A billing lookup that records what it was asked and answers from ``costs``."""

    def __init__(self, fake_fal: FakeFal, cost: str | None) -> None:
        self.fake_fal = fake_fal
        self.cost = cost
        self.asked: list[str] = []

    def __call__(self, request_id: str, reserved_at: float) -> Decimal | None:
        self.asked.append(request_id)
        assert request_id in [job.request_id for job in self.fake_fal.jobs]
        return None if self.cost is None else Decimal(self.cost)


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'fal.db'}"


def test_subscribe_settles_at_the_billed_amount(
    url: str, fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    bill = Bill(fake_fal, "0.55")
    guard = Guard(url, [Cap("2.00")], settle_from="billing", billing=bill)
    guard.wrap(fal_sync_client).subscribe(MAGI, ARGS, interval=0.001)
    assert len(bill.asked) == 1
    assert guard.spent() == Decimal("0.55") and guard.held() == 0  # not the quote's 0.80


def test_submit_then_get_settles_at_the_billed_amount(
    url: str, fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    bill = Bill(fake_fal, "1.10")  # fal billed more than quoted: an overrun, counted
    guard = Guard(url, [Cap("2.00")], settle_from="billing", billing=bill)
    handle = guard.wrap(fal_sync_client).submit(MAGI, ARGS)
    handle.get()
    assert guard.spent() == Decimal("1.10")


def test_async_subscribe_settles_at_the_billed_amount(
    url: str, fake_fal: FakeFal, fal_async_client: Any
) -> None:
    bill = Bill(fake_fal, "0.61")
    guard = Guard(url, [Cap("2.00")], settle_from="billing", billing=bill)

    async def scenario() -> None:
        await guard.wrap(fal_async_client()).subscribe(MAGI, ARGS, interval=0.001)

    asyncio.run(scenario())
    assert guard.spent() == Decimal("0.61")


def test_no_bill_yet_or_an_unreadable_one_counts_the_amount_held(
    fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    guard = Guard("memory://", [Cap("2.00")], settle_from="billing", billing=Bill(fake_fal, None))
    guard.wrap(fal_sync_client).subscribe(MAGI, ARGS, interval=0.001)
    assert guard.spent() == Decimal("0.80")

    def broken(request_id: str, reserved_at: float) -> Decimal | None:
        raise BillingApiError("fal's billing API failed (HTTP 503): try again later", status=503)

    guard = Guard("memory://", [Cap("2.00")], settle_from="billing", billing=broken)
    with caplog.at_level(logging.WARNING, logger="falbudget.guard"):
        guard.wrap(fal_sync_client).subscribe(MAGI, ARGS, interval=0.001)
    assert guard.spent() == Decimal("0.80")
    assert "could not be read: fal's billing API failed (HTTP 503)" in caplog.text
    assert "counted at 0.80 USD until reconciled" in caplog.text


def test_the_quote_is_kept_by_default_and_run_has_no_request_id(
    fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    bill = Bill(fake_fal, "0.55")
    guard = Guard("memory://", [Cap("2.00")], billing=bill)  # settle_from="quote"
    guard.wrap(fal_sync_client).subscribe(MAGI, ARGS, interval=0.001)
    assert (bill.asked, guard.spent()) == ([], Decimal("0.80"))
    guard = Guard("memory://", [Cap("2.00")], settle_from="billing", billing=bill)
    guard.wrap(fal_sync_client).run(MAGI, ARGS)  # fal.run gives no request id to look up
    assert (bill.asked, guard.spent()) == ([], Decimal("0.80"))


def test_a_ceiling_hold_reads_the_bill_whatever_settle_from_says(
    fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    bill = Bill(fake_fal, "0.0123")
    guard = Guard("memory://", [Cap("1.00")], table=parse_table(CEILING_TABLE), billing=bill)
    guard.wrap(fal_sync_client).subscribe(LLM, {"prompt": "hi"}, interval=0.001)
    assert len(bill.asked) == 1
    assert guard.spent() == Decimal("0.0123")  # not the ceiling's 0.50


@pytest.fixture
def billing_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBilling]:
    with FakeBilling() as server:
        monkeypatch.setenv("FALBUDGET_FAL_API_URL", server.base_url)
        monkeypatch.setenv("FAL_KEY", ADMIN_KEY)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        yield server


def test_the_default_lookup_asks_fal_s_billing_events_by_request_id(
    billing_api: FakeBilling,
    fake_fal: FakeFal,
    fal_sync_client: fal_client.SyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAL_KEY", ADMIN_KEY)  # the fake fal server takes any key
    guard = Guard(
        "memory://",
        [Cap("2.00")],
        settle_from="billing",
        clock=lambda: T0,
        billing=bill_lookup(clock=lambda: T0),  # what Guard builds by default, its clock fixed
    )

    def billed_at_once(request_id: str) -> None:  # fal records the bill as the job starts
        billing_api.events.append(event(request_id, "2026-12-06T12:00:00Z", 420_000_001))
        billing_api.events.append(event(request_id, "2026-12-06T12:00:00Z", 420_000_001))

    guard.wrap(fal_sync_client).subscribe(MAGI, ARGS, interval=0.001, on_enqueue=billed_at_once)
    asked = billing_api.requests
    assert len(asked) == 1 and asked[0].query["request_id"] == [fake_fal.jobs[0].request_id]
    # 420,000,001 nano-USD, the repeat counted once, rounded up to the micro-USD: 0.420001
    assert guard.spent() == Decimal("0.420001")


def test_bill_lookup_without_a_record_is_none(billing_api: FakeBilling) -> None:
    lookup = bill_lookup(clock=lambda: T0)
    assert lookup("req-unknown", T0) is None
    assert billing_api.requests[0].query["request_id"] == ["req-unknown"]
    assert billing_api.requests[0].query["start"] == ["2026-12-06T11:00:00Z"]
    assert billing_api.requests[0].query["end"] == ["2026-12-06T13:00:00Z"]


def test_settle_from_is_checked_and_read_from_a_configuration(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="settle_from='bill' is not allowed"):
        Guard("memory://", settle_from="bill")  # type: ignore[arg-type]
    config = tmp_path / "falbudget.yaml"
    config.write_text("ledger: memory://\nsettle_from: billing\n")
    guard = load_config(str(config)).build_guard()
    assert guard.settle_from == "billing"
    config.write_text("ledger: memory://\nsettle_from: invoice\n")
    with pytest.raises(ConfigurationError, match="settle_from"):
        load_config(str(config))
