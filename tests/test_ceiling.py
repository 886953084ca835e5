"""Endpoints priced only after the call (compute seconds, tokens): the table says so with
``after_call``, the user sets a ``ceiling``, a quote is that ceiling and says it is one, the
guard holds it, and a cap is never passed on a guess, under concurrency too (exactly 12 of 30
at $0.50 against $6.00, on SQLite and PostgreSQL). Without a ceiling the endpoint cannot be
quoted, and `pricing validate` names it. Expectations by hand; the clock is injected."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from fakebilling import ADMIN_KEY, FakeBilling, event
from falbudget import BudgetExceeded, Cap, Guard
from falbudget.cli.app import main
from falbudget.errors import PriceTableError
from falbudget.pricing import parse_table
from falbudget.reconcile import apply_corrections, fetch_billing_events, reconcile
from ledger_backends import BACKENDS, PROCESS_BACKENDS, backend_params, store_url
from pgutil import _drop_postgres_schemas  # noqa: F401 - autouse: drops this module's schemas

LLM = "fal-ai/any-llm"
T0 = dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC).timestamp()

TABLE = """\
schema_version: 1
table_version: "mine-1"
effective_date: 2026-12-01
currency: USD
endpoints:
  fal-ai/any-llm:
    source_url: https://fal.ai/models/fal-ai/any-llm
    price_read_on: 2026-12-06
    inputs:
      prompt: {type: string, required: true}
      model: {type: string, default: "google/gemini-flash-1.5"}
      messages: {type: json}
    after_call:
      ceiling: "0.50"
      description: tokens are billed after the call; at most 0.50 a request here
"""
NO_CEILING = TABLE.replace('      ceiling: "0.50"\n', "")


def test_a_quote_is_the_ceiling_and_says_it_is_one() -> None:
    table = parse_table(TABLE)
    quote = table.quote(LLM, {"model": "x", "messages": [{"role": "user", "content": "hi"}]})
    assert quote.total == Decimal("0.50")
    assert quote.is_ceiling
    assert [(i.rule, i.kind, i.amount) for i in quote.line_items] == [
        ("ceiling", "ceiling", Decimal("0.50"))
    ]
    assert str(quote) == (
        "fal-ai/any-llm costs at most 0.50 USD, a ceiling: its price is known only after the"
        " call (price table mine-1)"
    )
    assert quote.to_dict()["ceiling"] is True
    assert (
        "ceiling" not in parse_table(_magi_only()).quote("fal-ai/magi/image-to-video", {}).to_dict()
    )


def _magi_only() -> str:
    from falbudget.pricing import packaged_table_path

    return packaged_table_path().read_text()


def test_without_a_ceiling_nothing_is_quoted_and_validate_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = parse_table(NO_CEILING)
    assert table.endpoints[LLM].needs_ceiling
    with pytest.raises(PriceTableError) as info:
        table.quote(LLM, {})
    assert (info.value.endpoint, info.value.field) == (LLM, "after_call.ceiling")
    assert "known only after the call and no ceiling is set" in str(info.value)
    path = tmp_path / "t.yaml"
    path.write_text(NO_CEILING)
    assert main(["pricing", "validate", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().endswith(
        "1 endpoint priced only after the call needs a ceiling: fal-ai/any-llm"
    )
    assert "not listed (priced only after the call; needs a ceiling)" in captured.out
    assert main(["quote", "--pricing", str(path), LLM]) == 2
    assert "no ceiling is set" in capsys.readouterr().err


def test_rules_and_after_call_together_are_refused() -> None:
    both = TABLE.replace("    after_call:\n", "    rules: [{name: b, kind: base, amount: '1'}]\n"
                         "    after_call:\n")  # fmt: skip
    with pytest.raises(PriceTableError, match="after_call: an endpoint priced only after"):
        parse_table(both)


def test_the_quote_command_shows_the_ceiling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(TABLE)
    assert main(["quote", "--pricing", str(path), LLM]) == 0
    out = capsys.readouterr().out
    assert "ceiling" in out.splitlines()[3]
    assert out.rstrip().endswith(
        "the total is a ceiling: the price is known only after the call; a guard holds 0.50"
        " USD until fal's bill says what it cost"
    )


def test_the_guard_holds_the_ceiling_and_check_says_it_is_one() -> None:
    guard = Guard("memory://", [Cap("1.20")], table=parse_table(TABLE), clock=lambda: T0)
    decision = guard.check(LLM, {})
    assert decision.allowed and decision.quote is not None and decision.quote.is_ceiling
    first = guard.reserve(LLM, {"prompt": "a"}).acquire()
    second = guard.reserve(LLM, {"prompt": "b"}).acquire()
    assert guard.held() == Decimal("1.00")  # two ceilings of 0.50
    with pytest.raises(BudgetExceeded):  # 1.00 + 0.50 > 1.20: refused on the ceiling
        guard.reserve(LLM, {"prompt": "c"}).acquire()
    first.settle()  # without a bill: the hold counts at its ceiling
    assert guard.spent() == Decimal("0.50")
    second.settle(Decimal("0.0123"))  # the bill said 0.0123
    assert guard.spent() == Decimal("0.5123")
    guard.close()


@pytest.fixture(params=backend_params(PROCESS_BACKENDS))
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield store_url(request.param, tmp_path)


def test_the_ceiling_never_admits_past_a_cap_under_threads(url: str) -> None:
    """8 threads, 30 attempts at a 0.50 ceiling against 6.00: exactly 12 admitted."""
    guard = Guard(url, [Cap("6.00")], table=parse_table(TABLE), clock=lambda: T0)
    barrier = threading.Barrier(8)
    admitted: list[str] = []
    refused: list[int] = []
    lock = threading.Lock()
    tickets = iter(range(30))

    def worker() -> None:
        barrier.wait(timeout=60)
        while True:
            with lock:
                n = next(tickets, None)
            if n is None:
                return
            try:
                hold = guard.reserve(LLM, {"prompt": f"p{n}"}).acquire()
            except BudgetExceeded:
                with lock:
                    refused.append(n)
                continue
            with lock:
                admitted.append(hold.id)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert (len(admitted), len(refused)) == (12, 18)
    assert guard.held() == Decimal("6.00")
    guard.close()


# -- the bill settles it: a hold counted at its ceiling, corrected to what fal billed ----------
@pytest.fixture(params=backend_params(BACKENDS))
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else store_url(request.param, tmp_path)


def test_reconcile_apply_settles_a_ceiling_hold_to_the_bill_by_request_id(
    any_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    guard = Guard(any_url, [Cap("1.00")], table=parse_table(TABLE), clock=lambda: T0)
    hold = guard.reserve(LLM, {"prompt": "a"}).acquire()
    hold.mark_submitted("req-llm-1")
    hold.settle()  # no bill yet: counted at the ceiling
    assert guard.spent() == Decimal("0.50")
    other = guard.reserve(LLM, {"prompt": "b"}).acquire()
    other.mark_submitted("req-llm-2")
    other.settle()
    with FakeBilling() as billing:
        # fal billed 12,345,678 nano-USD (0.012345678) for the first, 0.50 for the second,
        # and a request of another account in the same range
        billing.events = [
            event("req-llm-1", "2026-12-06T12:00:05Z", 12_345_678, endpoint=LLM),
            event("req-llm-2", "2026-12-06T12:00:06Z", 500_000_000, endpoint=LLM),
            event("req-other", "2026-12-06T12:00:07Z", 7, endpoint=LLM),
        ]
        records = fetch_billing_events(
            ADMIN_KEY,
            dt.datetime(2026, 12, 6, tzinfo=dt.UTC),
            dt.datetime(2026, 12, 7, tzinfo=dt.UTC),
            base_url=billing.base_url,
            request_ids=["req-llm-1", "req-llm-2"],
        )
        assert billing.requests[0].query["request_id"] == ["req-llm-1,req-llm-2"]
    assert sorted(r.request_id for r in records.records) == ["req-llm-1", "req-llm-2"]
    result = apply_corrections(guard.ledger, reconcile(guard.ledger, records, now=T0 + 60))
    # 0.012345678 rounded up to the micro-USD is 0.012346; the second matched its ceiling
    assert [(line.request_id, line.kind) for line in result.lines] == [
        ("req-llm-1", "different_amount"),
        ("req-llm-2", "matched"),
    ]
    assert guard.spent() == Decimal("0.512346")
    guard.close()
