"""The catalog end to end, against the fake Platform API (tests/fakeplatform.py, which serves
billing events too) and the fake fal server: sync a table, quote from it, reserve and call
through the real fal_client wrapper, settle from the bill; and the client's bounds on a slow or
oversized catalog answer. Figures by hand; "now" fixed."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import fal_client
import pytest

from fakebilling import ADMIN_KEY, event
from fakefal import FakeFal
from fakeplatform import IMAGE_SIZE, NUM_IMAGES, PROMPT, FakePlatform
from falbudget import Guard, catalog, platform
from falbudget.cli.app import main
from falbudget.pricing import load_table
from falbudget.reconcile import bill_lookup

FLUX = "fal-ai/flux/dev"
LLM = "fal-ai/any-llm"
T0 = 1_796_558_400.0  # 2026-12-06 12:00 UTC


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePlatform]:
    with FakePlatform() as fake:
        fake.add(
            FLUX,
            "0.025",
            "megapixels",
            {"prompt": PROMPT, "image_size": IMAGE_SIZE, "num_images": NUM_IMAGES},
        )
        fake.add(LLM, "0.0000025", "tokens", {"prompt": PROMPT})
        monkeypatch.setenv("FAL_KEY", ADMIN_KEY)
        monkeypatch.setenv("FALBUDGET_FAL_API_URL", fake.base_url)
        monkeypatch.setenv("FALBUDGET_NOW", "2026-12-06T12:00:00Z")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        yield fake


def test_sync_quote_reserve_call_and_settle_from_the_bill(
    api: FakePlatform,
    fake_fal: FakeFal,
    fal_sync_client: fal_client.SyncClient,
    tmp_path: Path,
) -> None:
    api.key = os.environ["FAL_KEY"]  # the fake fal fixture's dummy key: one key for both fakes
    synced = tmp_path / "fal-sync.yaml"
    assert main(["pricing", "sync", FLUX, LLM, "--output", str(synced)]) == 0
    mine = tmp_path / "mine.yaml"  # the user's ceiling for the endpoint billed after the call
    mine.write_text(
        'schema_version: 1\ntable_version: "mine"\neffective_date: 2026-12-01\ncurrency: USD\n'
        "endpoints:\n  fal-ai/any-llm:\n    source_url: https://fal.ai/models/fal-ai/any-llm\n"
        "    price_read_on: 2026-12-06\n    inputs: {prompt: {type: string, required: true}}\n"
        '    after_call: {ceiling: "0.30"}\n'
    )
    config = tmp_path / "falbudget.yaml"
    config.write_text("ledger: memory://\npricing: [fal-sync.yaml, mine.yaml]\ncaps:\n"
                      '  - limit: "1.00"\n')  # fmt: skip
    assert main(["quote", "--config", str(config), LLM]) == 0  # the ceiling, said to be one
    guard = Guard.from_config(str(config), clock=lambda: T0, billing=bill_lookup(clock=lambda: T0))
    assert guard.table.source_of(LLM) == str(mine)
    assert guard.table.quote(FLUX, {"num_images": 2}).total == Decimal("0.05")  # 1 MP x 2
    fal = guard.wrap(fal_sync_client)

    def bill(cost_nano: int) -> object:
        def on_enqueue(request_id: str) -> None:
            api.events.append(event(request_id, "2026-12-06T12:00:01Z", cost_nano))

        return on_enqueue

    # FLUX: quoted 0.05 exactly, settled from the quote (settle_from: quote)
    fal.subscribe(FLUX, {"prompt": "a fox", "num_images": 2}, interval=0.001)
    assert guard.spent() == Decimal("0.05")
    # the LLM: held at its 0.30 ceiling, settled at the 0.004 fal billed (4,000,000 nano-USD)
    fal.subscribe(LLM, {"prompt": "hi"}, interval=0.001, on_enqueue=bill(4_000_000))
    assert guard.spent() == Decimal("0.054") and guard.held() == 0
    asked = [r for r in api.requests if r.path == "/v1/models/billing-events"]
    assert [r.query["request_id"] for r in asked] == [[fake_fal.jobs[-1].request_id]]
    guard.close()


def test_a_slow_or_oversized_catalog_answer_ends_in_bounded_time(api: FakePlatform) -> None:
    api.delay()
    with (
        platform.PlatformClient(ADMIN_KEY, base_url=api.base_url, timeout_s=0.3) as client,
        pytest.raises(platform.PlatformApiError, match=r"no complete answer within 0\.3 s"),
    ):
        catalog.sync(client, [FLUX], key_id="k", read_on=dt.date(2026, 12, 6))
    api.reset()
    api.raw_answer = b'{"prices": [], "has_more": false, "pad": "' + b"x" * 500 + b'"}'
    with (
        platform.PlatformClient(ADMIN_KEY, base_url=api.base_url, max_answer_bytes=100) as client,
        pytest.raises(platform.PlatformApiError, match="larger than 100 bytes"),
    ):
        catalog.sync(client, [FLUX], key_id="k", read_on=dt.date(2026, 12, 6))


def test_a_synced_table_loads_as_any_other(api: FakePlatform, tmp_path: Path) -> None:
    out = tmp_path / "t.yaml"
    assert main(["pricing", "sync", FLUX, "--output", str(out)]) == 0
    assert load_table(out).quote(FLUX, {"image_size": "square"}).total == Decimal("0.025")
