"""Reconciliation with fal's billing records: reading exports, the four classes, --apply and its
audit trail, the fetcher against a local fake of fal's billing API, and the CLI.

Every expected figure is worked out by hand in a comment. Times are explicit, never the clock.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from fakebilling import ADMIN_KEY, FakeBilling, cursor_for, event
from falbudget import Cap, Guard
from falbudget.cli.app import main
from falbudget.ledger import BucketCharge, BucketTotals, Ledger, MemoryLedger, open_ledger
from falbudget.money import format_usd, from_micros, to_micros
from falbudget.reconcile import (
    BillingApiError,
    BillingRecord,
    BillingRecords,
    ReconcileError,
    ZeroingRefused,
    apply_corrections,
    fetch_billing_events,
    load_billing_file,
    parse_csv,
    parse_json,
    parse_jsonl,
    reconcile,
)
from ledger_backends import (
    ENDPOINT,
    PROCESS_BACKENDS,
    backend_params,
    store_url,
    submit_then_die,
)
from pgutil import _drop_postgres_schemas  # noqa: F401 - autouse: drops this module's schemas

FLUX = "fal-ai/flux/dev"
UTC = dt.UTC


def at(day: int, hour: int = 0, minute: int = 0) -> float:
    """Epoch seconds of 2026-11-<day> <hour>:<minute> UTC."""
    return dt.datetime(2026, 11, day, hour, minute, tzinfo=UTC).timestamp()


def stamp(day: int, hour: int = 0, minute: int = 0) -> str:
    return f"2026-11-{day:02d}T{hour:02d}:{minute:02d}:00Z"


def record(request_id: str, cost: str, when: float, endpoint: str = ENDPOINT) -> BillingRecord:
    return BillingRecord(request_id, endpoint, when, Decimal(cost), None, f"test: {request_id}")


# -- reading export files -------------------------------------------------------------------------
API_PAGE = {
    "billing_events": [
        {
            "request_id": "abc123",
            "endpoint_id": "fal-ai/flux/dev",
            "timestamp": "2025-01-15T10:30:45Z",
            "output_units": 1.5,
            "unit_price": 0.001,
            "percent_discount": None,
            "cost_estimate_nano_usd": 1500000,
        },
        {
            "request_id": "def456",
            "endpoint_id": "fal-ai/flux/dev",
            "timestamp": "2025-01-15T10:25:30Z",
            "output_units": 2,
            "unit_price": 0.001,
            "percent_discount": 10,
            "cost_estimate_nano_usd": 1800000,
        },
    ],
    "next_cursor": None,
    "has_more": False,
}
"""The example answer of fal's documentation (has_more made false: the whole answer)."""


def test_the_documented_api_answer_reads_exactly() -> None:
    records = parse_json(json.dumps(API_PAGE), "page.json")
    # 1_500_000 nano-USD = 0.0015 USD; 1_800_000 nano-USD = 0.0018 USD
    assert records == [
        BillingRecord(
            "abc123",
            FLUX,
            dt.datetime(2025, 1, 15, 10, 30, 45, tzinfo=UTC).timestamp(),
            Decimal("0.0015"),
            Decimal("1.5"),
            "page.json: billing_events[0]",
        ),
        BillingRecord(
            "def456",
            FLUX,
            dt.datetime(2025, 1, 15, 10, 25, 30, tzinfo=UTC).timestamp(),
            Decimal("0.0018"),
            Decimal("2"),
            "page.json: billing_events[1]",
        ),
    ]


def test_a_list_json_lines_and_csv_read_the_same_records(tmp_path: Path) -> None:
    events = [
        {"request_id": "r1", "timestamp": "2026-11-02T10:00:00Z", "cost_estimate_nano_usd": 800},
        {"request_id": "r2", "timestamp": "2026-11-02T11:00:00", "cost_total": "0.95"},
    ]
    (tmp_path / "list.json").write_text(json.dumps(events))
    (tmp_path / "lines.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n\n")
    (tmp_path / "export.csv").write_text(
        "timestamp,extra,request_id,cost_total,cost_estimate_nano_usd,endpoint_id\n"
        "2026-11-02T10:00:00Z,x, r1 ,,800,\n"
        "2026-11-02T11:00:00,y,r2,0.95,,fal-ai/magi/image-to-video\n"
        ",,,,,\n"
    )
    # 800 nano-USD = 0.0000008 USD; a time without an offset is UTC
    expected = [
        ("r1", None, at(2, 10), Decimal("0.0000008")),
        ("r2", None, at(2, 11), Decimal("0.95")),
    ]
    for name in ("list.json", "lines.jsonl", "export.csv"):
        got = load_billing_file(str(tmp_path / name))
        assert [(r.request_id, r.timestamp, r.cost) for r in got] == [
            (e[0], e[2], e[3]) for e in expected
        ], name
    csv_records = load_billing_file(str(tmp_path / "export.csv"))
    assert [r.endpoint for r in csv_records] == [None, ENDPOINT]
    assert [r.where for r in csv_records] == [
        f"{tmp_path / 'export.csv'}: line 2",
        f"{tmp_path / 'export.csv'}: line 3",
    ]
    (tmp_path / "noext").write_text(json.dumps(events))
    assert len(load_billing_file(str(tmp_path / "noext"), "json")) == 2


def test_nano_and_total_may_both_be_given_when_they_agree() -> None:
    agree = {
        "request_id": "r",
        "timestamp": "2026-11-02",
        "cost_estimate_nano_usd": 600_000_000,
        "cost_total": 0.6,
    }
    # 600_000_000 nano-USD = 0.6 USD
    assert parse_json(json.dumps([agree]), "f.json")[0].cost == Decimal("0.6")
    with pytest.raises(ReconcileError) as info:
        parse_json(json.dumps([{**agree, "cost_total": 0.61}]), "f.json")
    assert str(info.value) == (
        "f.json: [0]: cost_estimate_nano_usd=600000000 (0.60 USD) and cost_total=Decimal('0.61')"
        " disagree; fix the export or keep one of them"
    )


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        (
            '{"billing_events": [], "has_more": true, "next_cursor": "Mg=="}',
            "json",
            "f: has_more is true: this is one page of a longer answer",
        ),
        (
            '{"billing_events": [], "has_more": "true", "next_cursor": "Mg=="}',
            "json",
            "f: has_more='true' is not allowed: true or false (a JSON boolean, as fal gives it)",
        ),
        ('{"events": []}', "json", "f: billing_events=None is not allowed"),
        ('"hello"', "json", "f: a str is not allowed: fal's billing-events answer"),
        ("[1, 2", "json", "f: line 1: not valid JSON"),
        (
            '[{"timestamp": "2026-11-02", "cost_total": "1"}]',
            "json",
            "f: [0]: request_id is missing: fal's request id, a non-empty string",
        ),
        (
            '[{"request_id": 7, "timestamp": "2026-11-02", "cost_total": "1"}]',
            "json",
            "f: [0]: request_id=7 is not allowed: a non-empty string",
        ),
        (
            '[{"request_id": "r", "timestamp": "yesterday", "cost_total": "1"}]',
            "json",
            "f: [0]: timestamp='yesterday' is not allowed: an ISO 8601 date or time",
        ),
        (
            '[{"request_id": "r", "timestamp": "2026-11-02"}]',
            "json",
            "f: [0]: the cost is missing: cost_estimate_nano_usd (integer nano-USD) or cost_total",
        ),
        (
            '[{"request_id": "r", "timestamp": "2026-11-02", "cost_estimate_nano_usd": 1.5}]',
            "json",
            "f: [0]: cost_estimate_nano_usd=Decimal('1.5') is not allowed: an integer number of"
            " nano-USD >= 0",
        ),
        (
            '[{"request_id": "r", "timestamp": "2026-11-02", "cost_estimate_nano_usd": true}]',
            "json",
            "f: [0]: cost_estimate_nano_usd=True is not allowed",
        ),
        (
            '[{"request_id": "r", "timestamp": "2026-11-02", "cost_estimate_nano_usd": -5}]',
            "json",
            "f: [0]: cost_estimate_nano_usd=-5 is not allowed",
        ),
        (
            '[{"request_id": "r", "timestamp": "2026-11-02", "cost_total": "-0.10"}]',
            "json",
            "f: [0]: cost_total='-0.10' is not allowed: a decimal amount of USD >= 0",
        ),
        (
            '[{"request_id": "r", "timestamp": "2026-11-02", "cost_total": "NaN"}]',
            "json",
            "f: [0]: cost_total='NaN' is not allowed",
        ),
        ("[7]", "json", "f: [0]: a billing record must be an object, got 7"),
        (
            '{"request_id": "r", "timestamp": "2026-11-02", "cost_total": "1"}\n{oops}\n',
            "jsonl",
            "f: line 2: not valid JSON",
        ),
        ("", "csv", "f: empty file: a header row naming the columns is needed"),
        (
            "request_id,cost_total\nr,1\n",
            "csv",
            "f: line 1: the header lacks timestamp; the columns are request_id, endpoint_id,",
        ),
        (
            "request_id,timestamp\nr,2026-11-02\n",
            "csv",
            "f: line 1: the header lacks cost_estimate_nano_usd (or cost_total)",
        ),
        (
            "request_id,timestamp,cost_estimate_nano_usd\nr1,2026-11-02,5\nr2,2026-11-02,1.5\n",
            "csv",
            "f: line 3: cost_estimate_nano_usd='1.5' is not allowed: an integer number of nano-USD",
        ),
        (
            "request_id,timestamp,cost_total\nr1,2026-11-02,5,6\n",
            "csv",
            "f: line 2: more cells than the header has columns",
        ),
    ],
)
def test_bad_records_name_the_file_the_place_the_field_and_the_value(
    text: str, kind: str, message: str
) -> None:
    parse = {"json": parse_json, "jsonl": parse_jsonl, "csv": parse_csv}[kind]
    with pytest.raises(ReconcileError) as info:
        parse(text, "f")
    assert str(info.value).startswith(message), str(info.value)


def test_an_unknown_suffix_and_an_unreadable_file_are_refused(tmp_path: Path) -> None:
    (tmp_path / "records.txt").write_text("[]")
    with pytest.raises(
        ReconcileError, match=r"records.txt: cannot tell the format.*--input-format"
    ):
        load_billing_file(str(tmp_path / "records.txt"))
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe[]")
    with pytest.raises(ReconcileError, match="not UTF-8"):
        load_billing_file(str(tmp_path / "bad.json"))


# -- money: exact, rounded up once per request ---------------------------------------------------
def test_billed_amounts_are_summed_exactly_then_rounded_up_to_the_micro() -> None:
    ledger = MemoryLedger()
    records = [
        record("two", "0.4000005", at(2, 10)),  # 400_000_500 nano-USD
        record("two", "0.1999995", at(2, 10, 5)),  # 199_999_500 nano-USD
        record("tiny", "0.000000001", at(2, 11)),  # 1 nano-USD
        record("half", "0.0015005", at(2, 12)),  # 1500.5 micro-USD
        record("free", "0", at(2, 13)),
    ]
    result = reconcile(ledger, BillingRecords(tuple(records), "t"), now=at(9))
    billed = {line.request_id: (line.billed, line.billed_micros) for line in result.lines}
    assert billed == {
        # 0.4000005 + 0.1999995 = 0.6000000 exactly: 600_000 micro-USD (rounding each record
        # first would have made 400_001 + 200_000 = 600_001)
        "two": (Decimal("0.6000000"), 600_000),
        "tiny": (Decimal("0.000000001"), 1),  # any fraction of a micro-USD counts as one
        "half": (Decimal("0.0015005"), 1_501),
        "free": (Decimal("0"), 0),
    }


# -- the four classes -----------------------------------------------------------------------------
def _hold(
    ledger: Ledger,
    hold_id: str,
    amount: int,
    created: float,
    *,
    request_id: str | None,
    close: str | None,
    closed: float | None = None,
    endpoint: str = ENDPOINT,
) -> None:
    """A hold charging its own bucket and the shared tracker 'all', closed as ``close`` says
    (settle, expire, release, or None: left open) at ``closed``."""
    result = ledger.reserve(
        hold_id=hold_id,
        endpoint=endpoint,
        amount=amount,
        charges=[BucketCharge(f"own:{hold_id}", None), BucketCharge("all", None)],
        now=created,
        expires_at=(closed if close == "expire" and closed is not None else created + 10**6) - 1,
    )
    assert result.admitted
    if request_id is not None:
        ledger.mark_submitted(hold_id, request_id, now=created + 1)
    if close == "settle":
        ledger.settle(hold_id, None, now=closed or created + 60)
    elif close == "release":
        ledger.release(hold_id, now=closed or created + 60)
    elif close == "expire":
        assert closed is not None
        closed_holds = ledger.expire(now=closed)
        assert [h.id for h in closed_holds] == [hold_id]


@pytest.fixture
def scenario() -> tuple[MemoryLedger, BillingRecords]:
    """Holds and records over the range [Nov 1, Nov 4); see the comments for each."""
    ledger = MemoryLedger()
    h = _hold
    h(ledger, "a", 800_000, at(1, 10), request_id="req-a", close="settle")  # billed 0.80
    h(ledger, "b", 800_000, at(1, 11), request_id="req-b", close="settle")  # billed 0.40 + 0.25
    h(ledger, "c", 1_200_000, at(1, 12), request_id="req-c", close="expire", closed=at(1, 13))
    h(ledger, "d", 400_000, at(3, 20), request_id="req-d", close="settle", closed=at(3, 20, 10))
    h(ledger, "e", 800_000, at(1) - 3600, request_id="req-e", close="settle")  # before since
    h(ledger, "f", 600_000, at(3, 23, 50), request_id="req-f", close="expire", closed=at(4, 0, 30))
    h(ledger, "g", 500_000, at(1, 14), request_id=None, close="settle")  # no request id
    h(ledger, "h", 300_000, at(1, 15), request_id="req-h", close="release")  # 5xx, not billed
    h(ledger, "i", 300_000, at(1, 16), request_id="req-i", close="release")  # billed 0.30
    h(ledger, "j", 800_000, at(1, 17), request_id="req-j", close=None)  # still submitted
    h(ledger, "k1", 800_000, at(1, 18), request_id="req-k", close="settle")  # one request id,
    h(ledger, "k2", 800_000, at(1, 19), request_id="req-k", close="settle")  # two holds
    h(ledger, "z", 200_000, at(1, 20), request_id="req-z", close="release")  # billed 0.00
    records = (
        record("req-a", "0.80", at(1, 10, 5)),
        record("req-b", "0.40", at(1, 11, 5)),
        record("req-x", "0.40", at(1, 11, 30), endpoint=FLUX),  # no hold: made elsewhere
        record("req-b", "0.25", at(1, 11, 6)),
        record("req-i", "0.30", at(1, 16, 5)),
        record("req-j", "0.70", at(1, 17, 5)),
        record("req-k", "1.50", at(1, 19, 5)),
        record("req-z", "0", at(1, 20, 5)),
    )
    return ledger, BillingRecords(records, "nov.json", at(1), at(4))


def test_every_request_lands_in_its_class(scenario: tuple[MemoryLedger, BillingRecords]) -> None:
    ledger, billing = scenario
    result = reconcile(ledger, billing, now=at(10))  # grace 24 h: cutoff min(Nov 4, Nov 10) - 24 h
    summary = [
        (line.kind, line.request_id, line.counted, line.billed_micros, line.target, line.pending)
        for line in result.lines
    ]
    assert summary == [
        # 0.40 + 0.25 = 0.65 billed against the 0.80 quote
        ("different_amount", "req-b", 800_000, 650_000, 650_000, False),
        # released (counted 0), yet fal billed 0.30
        ("different_amount", "req-i", 0, 300_000, 300_000, False),
        # open: the amount held (0.80) is what the ledger counts; not correctable yet
        ("different_amount", "req-j", 800_000, 700_000, None, False),
        # two holds of 0.80 each: 1.60 against 1.50; not correctable automatically
        ("different_amount", "req-k", 1_600_000, 1_500_000, None, False),
        ("billed_not_in_ledger", "req-x", 0, 400_000, None, False),
        # reserved Nov 1 12:00, expired (counted 1.20) at 13:00: no record in the range
        ("held_not_billed", "req-c", 1_200_000, None, 0, False),
        # closed Nov 3 20:10, after the cutoff Nov 4 - 24 h = Nov 3 00:00: pending
        ("held_not_billed", "req-d", 400_000, None, 0, True),
        ("matched", "req-a", 800_000, 800_000, None, False),
        ("matched", "req-z", 0, 0, None, False),  # released, and fal billed nothing
    ]
    # e (reserved before the range), f (closed after it), g (no request id) and h (released,
    # not billed) are not listed
    assert (result.count("matched"), result.count("different_amount")) == (2, 4)
    assert (result.count("billed_not_in_ledger"), result.count("held_not_billed")) == (1, 2)
    assert (result.pending, result.discrepancies) == (1, 6)  # 4 + 1 + 1 (req-d is pending)
    assert [line.request_id for line in result.corrections] == ["req-b", "req-i", "req-c"]
    notes = {line.request_id: line.note for line in result.lines}
    assert notes["req-j"] == (
        "the hold is still submitted: settle or release it (or let it expire), then reconcile again"
    )
    assert notes["req-k"] == "2 holds carry this request id; correct them by hand"
    # 0.80 + 0.40 + 0.25 + 0.40 + 0.30 + 0.70 + 1.50 + 0
    assert result.billed_total == Decimal("4.35")
    assert (result.since, result.until, result.records) == (at(1), at(4), 8)


def test_the_range_is_read_as_a_stream_and_keeps_the_order_of_creation(
    scenario: tuple[MemoryLedger, BillingRecords], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holds of the billing range are read one at a time (Ledger.iter_holds, newest
    first), never listed whole; the unbilled ones still come oldest first: req-c (Nov 1)
    before req-d (Nov 3)."""
    ledger, billing = scenario

    def listed(**kw: object) -> list[object]:
        raise AssertionError("reconcile listed the range's holds at once")

    monkeypatch.setattr(ledger, "holds", listed)
    result = reconcile(ledger, billing, now=at(10))
    assert [line.request_id for line in result.lines if line.kind == "held_not_billed"] == [
        "req-c",
        "req-d",
    ]


def test_a_shorter_grace_and_an_endpoint_filter(
    scenario: tuple[MemoryLedger, BillingRecords],
) -> None:
    ledger, billing = scenario
    result = reconcile(ledger, billing, now=at(10), grace_s=3600, endpoints=[ENDPOINT])
    # cutoff Nov 4 - 1 h = Nov 3 23:00: req-d (closed Nov 3 20:10) is no longer pending;
    # req-x (flux) is left out with its endpoint
    assert [
        (line.kind, line.request_id, line.pending)
        for line in result.lines
        if line.kind in ("billed_not_in_ledger", "held_not_billed")
    ] == [
        ("held_not_billed", "req-c", False),
        ("held_not_billed", "req-d", False),
    ]
    assert result.records == 7
    # the clock, when earlier than the range's end, sets the cutoff: now - 1 h
    early = reconcile(ledger, billing, now=at(3, 21, 30), grace_s=3600)  # cutoff 20:30
    assert [line.pending for line in early.lines if line.request_id == "req-d"] == [False]
    earlier = reconcile(ledger, billing, now=at(3, 21), grace_s=3600)  # cutoff 20:00 < 20:10
    assert [line.pending for line in earlier.lines if line.request_id == "req-d"] == [True]
    with pytest.raises(ReconcileError, match="grace=-1 is not allowed"):
        reconcile(ledger, billing, now=at(10), grace_s=-1)


def test_without_a_range_the_records_span_is_used(
    scenario: tuple[MemoryLedger, BillingRecords],
) -> None:
    ledger, billing = scenario
    result = reconcile(ledger, BillingRecords(billing.records, "nov.json"), now=at(10))
    # the first record is at Nov 1 10:05, the last at Nov 1 20:05: req-c (reserved 12:00,
    # closed 13:00) is inside; req-d (Nov 3) is not
    assert (result.since, result.until) == (at(1, 10, 5), at(1, 20, 5))
    assert [line.request_id for line in result.lines if line.kind == "held_not_billed"] == ["req-c"]
    empty = reconcile(ledger, BillingRecords((), "none.json"), now=at(10))
    assert (empty.since, empty.until, empty.lines) == (None, None, ())


def test_apply_corrects_with_an_audit_row_and_a_second_apply_writes_nothing(
    scenario: tuple[MemoryLedger, BillingRecords],
) -> None:
    ledger, billing = scenario
    # settled in 'all': a .80 + b .80 + c 1.20 + d .40 + e .80 + f .60 + g .50 + k1 .80
    # + k2 .80 = 6.70; held: j .80
    assert ledger.totals(["all"])[0].settled == 6_700_000
    applied = apply_corrections(ledger, reconcile(ledger, billing, now=at(10)))
    rows = ledger.adjustments()
    assert [(a.id, a.hold_id, a.previous, a.amount, a.delta) for a in rows] == [
        (1, "b", 800_000, 650_000, -150_000),
        (2, "i", 0, 300_000, 300_000),
        (3, "c", 1_200_000, 0, -1_200_000),
    ]
    assert [a.created_at for a in rows] == [at(10)] * 3
    assert rows[0].reason == "billed 0.65; counted 0.80"
    assert rows[0].source == "test: req-b; test: req-b"
    assert rows[2].reason == (
        "not billed from 2026-11-01T00:00:00Z to 2026-11-04T00:00:00Z; counted 1.20"
    )
    assert rows[2].source == "nov.json"
    assert [line.adjustment for line in applied.lines if line.adjustment] == rows
    # 6_700_000 - 150_000 + 300_000 - 1_200_000 = 5_650_000; every bucket of each hold moved
    assert ledger.totals(["all", "own:b", "own:i", "own:c"]) == [
        BucketTotals("all", 5_650_000, 800_000),
        BucketTotals("own:b", 650_000, 0),
        BucketTotals("own:i", 300_000, 0),
        BucketTotals("own:c", 0, 0),
    ]
    c = ledger.get_hold("c")
    assert (c.state, c.settled_amount, c.adjusted_amount) == ("expired", 1_200_000, 0)

    again = reconcile(ledger, billing, now=at(11))
    assert [line.request_id for line in again.corrections] == []
    assert [(line.kind, line.request_id) for line in again.lines] == [
        ("different_amount", "req-j"),
        ("different_amount", "req-k"),
        ("billed_not_in_ledger", "req-x"),
        ("held_not_billed", "req-d"),  # still pending
        ("matched", "req-a"),
        ("matched", "req-b"),
        ("matched", "req-i"),
        ("matched", "req-z"),
    ]
    apply_corrections(ledger, again)
    assert ledger.adjustments() == rows
    assert ledger.totals(["all"])[0].settled == 5_650_000


def test_apply_leaves_a_line_another_reconciler_already_applied(
    scenario: tuple[MemoryLedger, BillingRecords],
) -> None:
    ledger, billing = scenario
    seen = reconcile(ledger, billing, now=at(10))
    first = apply_corrections(ledger, seen)
    second = apply_corrections(ledger, seen)  # the same (stale) reconciliation, applied again
    assert [line.adjustment is not None for line in first.corrections] == [True] * 3
    assert [line.adjustment for line in second.corrections] == [None] * 3
    assert len(ledger.adjustments()) == 3


# -- the crash story, end to end on real stores --------------------------------------------------
CRASH_CAPS = [("5.00", "user", "day"), ("50.00", "global", "month")]
ARGS = {"prompt": "a red fox", "image_url": "https://example.com/fox.png"}


def crash(url: str, frames: int, request_id: str, now: float) -> None:
    """A worker process that submits a request and dies before settling."""
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(
        target=submit_then_die,
        args=(
            url,
            CRASH_CAPS,
            {**ARGS, "num_frames": frames},
            {"user": "ann"},
            now,
            600.0,
            request_id,
        ),
    )
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 7


def crash_caps() -> list[Cap]:
    return [Cap(limit, scope=scope, window=window) for limit, scope, window in CRASH_CAPS]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("kind", backend_params(PROCESS_BACKENDS))
def test_the_crash_story_end_to_end(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = store_url(kind, tmp_path)
    t0 = at(2, 10)
    crash(url, 144, "req-crash-a", t0)  # 144 frames, 720p: 0.80 + 2 x 0.20 = 1.20
    crash(url, 120, "req-crash-b", t0 + 30)  # 120 frames: 0.80 + 1 x 0.20 = 1.00
    clock = Clock(t0 + 60)
    guard = Guard(url, crash_caps(), clock=clock, hold_ttl=600)
    with guard.reserve(ENDPOINT, {**ARGS, "num_frames": 96}, user="ann") as hold:
        hold.mark_submitted("req-ok")  # 96 frames: 0.80, settled at the quote
    clock.now = t0 + 700  # both dead workers' holds are past their 600 s
    expired = guard.release_expired()
    assert sorted((h.request_id, h.state, h.settled_amount) for h in expired) == [
        ("req-crash-a", "expired", 1_200_000),
        ("req-crash-b", "expired", 1_000_000),
    ]
    # counted as spent at the quotes: 0.80 + 1.20 + 1.00 = 3.00
    assert guard.spent("user:ann", window="day") == Decimal("3.00")
    assert guard.spent("global", window="month") == Decimal("3.00")
    assert guard.spent() == Decimal("3.00")
    guard.close()

    billing = tmp_path / "billing.json"
    billing.write_text(
        json.dumps(
            {
                "billing_events": [
                    event("req-ok", stamp(2, 10, 2), 800_000_000),
                    event("req-crash-a", stamp(2, 10, 3), 950_000_000),  # fal: 0.95
                    event("req-other", stamp(2, 11), 400_000_000, endpoint=FLUX),
                ],
                "next_cursor": None,
                "has_more": False,
            }
        )
    )
    common = [
        "--ledger",
        url,
        "--since",
        "2026-11-02",
        "--until",
        "2026-11-04",
        "--now",
        "2026-11-04T12:00:00Z",
    ]

    assert main(["reconcile", str(billing), *common, "--format", "json"]) == 1
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["counts"] == {
        "matched": 1,
        "different_amount": 1,
        "billed_not_in_ledger": 1,
        "held_not_billed": 1,
        "pending": 0,
        "discrepancies": 3,
        "corrections": 2,
    }
    assert err == (
        "falbudget: 3 discrepancies with fal's billing records; --apply would correct 2; 1 needs"
        " a person (see the notes)\n"
    )
    reopened = open_ledger(url)
    assert reopened.adjustments() == []  # reading changes nothing
    reopened.close()

    assert main(["reconcile", str(billing), *common, "--apply", "--format", "json"]) == 1
    out, err = capsys.readouterr()
    lines = {line["request_id"]: line for line in json.loads(out)["lines"]}
    assert lines["req-crash-a"]["adjustment"]["delta"] == "-0.25"  # 0.95 - 1.20
    assert lines["req-crash-b"]["adjustment"]["delta"] == "-1.00"  # 0 - 1.00
    assert "--apply corrected 2" in err

    guard = Guard(url, crash_caps(), clock=clock)
    # 3.00 - 0.25 - 1.00 = 1.75 = what fal billed for ann: 0.80 + 0.95
    assert guard.spent("user:ann", window="day") == Decimal("1.75")
    assert guard.spent("global", window="month") == Decimal("1.75")
    assert guard.spent() == Decimal("1.75")
    audit = guard.ledger.adjustments()
    assert [(a.previous, a.amount, a.delta) for a in audit] == [
        (1_200_000, 950_000, -250_000),
        (1_000_000, 0, -1_000_000),
    ]
    lost = guard.ledger.holds_by_request_id(["req-crash-a"])[0]
    assert (lost.state, lost.settled_amount, lost.adjusted_amount) == (
        "expired",
        1_200_000,
        950_000,
    )
    guard.close()

    # a second --apply with the same input changes nothing; only req-other is left
    assert main(["reconcile", str(billing), *common, "--apply"]) == 1
    out, err = capsys.readouterr()
    assert "billed but not in the ledger 1" in out and out.endswith("\n\nnothing to correct\n")
    assert err == (
        "falbudget: 1 discrepancy with fal's billing records; --apply corrected 0; 1 needs a"
        " person (see the notes)\n"
    )
    assert main(["reconcile", str(billing), *common, "--apply", "--endpoint", ENDPOINT]) == 0
    out, err = capsys.readouterr()
    assert "every request matched" in out and err == ""
    reopened = open_ledger(url)
    assert reopened.adjustments() == audit
    reopened.close()

    assert main(["ledger", "adjustments", "--ledger", url, "--format", "csv"]) == 0
    out, _ = capsys.readouterr()
    rows = out.splitlines()
    assert rows[0] == "id,created_at,hold_id,previous,amount,delta,reason,source"
    assert rows[1].startswith(f"1,2026-11-04T12:00:00Z,{lost.id},1.20,0.95,-0.25,")
    assert len(rows) == 3


# -- the fetcher, against a local fake of fal's billing API --------------------------------------
@pytest.fixture(scope="module")
def billing_server() -> Iterator[FakeBilling]:
    with FakeBilling() as server:
        yield server


@pytest.fixture
def fake_billing(
    billing_server: FakeBilling, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeBilling]:
    billing_server.reset()
    monkeypatch.setattr("falbudget.platform._sleep", lambda s: None)  # retries wait for nothing
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    yield billing_server
    billing_server.reset()


NOV1 = dt.datetime(2026, 11, 1, tzinfo=UTC)
NOV8 = dt.datetime(2026, 11, 8, tzinfo=UTC)


def test_the_fetcher_follows_the_cursor_across_pages(fake_billing: FakeBilling) -> None:
    fake_billing.events = [
        event(f"r{n}", stamp(n + 1, 9), 100_000_000 * n)
        for n in range(1, 6)  # Nov 2 to Nov 6
    ] + [event("late", stamp(8), 1), event("early", "2026-10-31T23:59:59Z", 1)]  # outside
    got = fetch_billing_events(ADMIN_KEY, NOV1, NOV8, base_url=fake_billing.base_url, page_limit=2)
    # newest first, two per page: r5 r4 | r3 r2 | r1
    assert [r.request_id for r in got.records] == ["r5", "r4", "r3", "r2", "r1"]
    assert [r.cost for r in got.records] == [Decimal(n) / 10 for n in (5, 4, 3, 2, 1)]
    assert [r.where for r in got.records][:3] == [
        "fal API page 1: billing_events[0]",
        "fal API page 1: billing_events[1]",
        "fal API page 2: billing_events[0]",
    ]
    assert (got.since, got.until) == (NOV1.timestamp(), NOV8.timestamp())
    assert got.origin == "fal billing-events API 2026-11-01T00:00:00Z to 2026-11-08T00:00:00Z"
    requests = fake_billing.requests
    assert [r.query.get("cursor") for r in requests] == [None, [cursor_for(2)], [cursor_for(3)]]
    assert requests[0].path == "/v1/models/billing-events"
    assert requests[0].query == {
        "start": ["2026-11-01T00:00:00Z"],
        "end": ["2026-11-08T00:00:00Z"],
        "limit": ["2"],
    }
    assert {r.headers["authorization"] for r in requests} == {f"Key {ADMIN_KEY}"}


def test_the_fetcher_reads_the_base_url_from_the_environment_and_filters_endpoints(
    fake_billing: FakeBilling, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_billing.events = [
        event("m", stamp(2), 5, endpoint=ENDPOINT),
        event("f", stamp(3), 7, endpoint=FLUX),
    ]
    monkeypatch.setenv("FALBUDGET_FAL_API_URL", fake_billing.base_url + "/")
    got = fetch_billing_events(ADMIN_KEY, NOV1, NOV8, endpoints=[ENDPOINT, "x/y"])
    assert [r.request_id for r in got.records] == ["m"]
    assert fake_billing.requests[0].query["endpoint_id"] == [f"{ENDPOINT},x/y"]


@pytest.mark.parametrize(
    ("setup", "status", "message"),
    [
        ("wrong key", 401, "fal refused the API key (HTTP 401) (Invalid API key: Key ***): check"),
        ("read-only key", 403, "billing events need an admin API key"),
        (
            "429",
            429,
            "limits the rate (HTTP 429) (fake error 429 for Key ***); fal asks to retry"
            " after 7 s: try again later",
        ),
        ("500", 500, "fal's billing API failed (HTTP 500) (fake error 500 for Key ***): try again"),
        ("503 text", 503, "fal's billing API failed (HTTP 503) (upstream down): try again later"),
        ("400", 400, "fal's billing API refused the request (HTTP 400)"),
    ],
)
def test_the_fetcher_explains_http_errors_without_the_key(
    fake_billing: FakeBilling, setup: str, status: int, message: str
) -> None:
    fake_billing.echo_key = True  # the fake repeats the Authorization header in its errors
    key = ADMIN_KEY
    if setup == "wrong key":
        key = "wrong-secret-key"
    elif setup == "read-only key":
        key = "read-only-secret"
        fake_billing.read_only_keys.add(key)
    elif setup == "429":
        fake_billing.fail(429, headers={"Retry-After": "7"})
    elif setup == "503 text":
        fake_billing.fail(503, "upstream down")
    else:
        fake_billing.fail(status)
    with pytest.raises(BillingApiError) as info:
        fetch_billing_events(key, NOV1, NOV8, base_url=fake_billing.base_url)
    assert info.value.status == status
    assert message in str(info.value)
    assert key not in str(info.value)
    assert str(info.value).startswith(f"{fake_billing.base_url}/models/billing-events: ")


def test_the_fetcher_refuses_broken_answers_and_bad_arguments(fake_billing: FakeBilling) -> None:
    base = fake_billing.base_url
    fake_billing.events = [event(f"r{n}", stamp(2, n), 1) for n in range(3)]
    fake_billing.next_cursor_override = cursor_for(2)  # a server stuck on page 2
    with pytest.raises(BillingApiError, match="page 2 repeats cursor 'Mg=='; stopping"):
        fetch_billing_events(ADMIN_KEY, NOV1, NOV8, base_url=base, page_limit=1)
    fake_billing.next_cursor_override = None
    fake_billing.raw_answer = b"<html>not json</html>"
    with pytest.raises(BillingApiError, match="the answer is not JSON"):
        fetch_billing_events(ADMIN_KEY, NOV1, NOV8, base_url=base)
    fake_billing.raw_answer = b'{"events": []}'
    with pytest.raises(BillingApiError, match="page 1 is not a billing-events answer"):
        fetch_billing_events(ADMIN_KEY, NOV1, NOV8, base_url=base)
    fake_billing.raw_answer = b'{"billing_events": [], "has_more": true}'
    with pytest.raises(BillingApiError, match="page 1 says has_more but gives no next_cursor"):
        fetch_billing_events(ADMIN_KEY, NOV1, NOV8, base_url=base)
    fake_billing.raw_answer = b'{"billing_events": [{"request_id": "r"}], "has_more": false}'
    with pytest.raises(ReconcileError, match=r"fal API page 1: billing_events\[0\]: timestamp"):
        fetch_billing_events(ADMIN_KEY, NOV1, NOV8, base_url=base)
    fake_billing.raw_answer = None
    asked = len(fake_billing.requests)
    for call, message in [
        (lambda: fetch_billing_events(ADMIN_KEY, NOV8, NOV1, base_url=base), "range is empty"),
        (
            lambda: fetch_billing_events(
                ADMIN_KEY, NOV1, NOV1 + dt.timedelta(days=90, seconds=1), base_url=base
            ),
            "longer than the 90 days",
        ),
        (lambda: fetch_billing_events("", NOV1, NOV8, base_url=base), "no API key"),
        (
            lambda: fetch_billing_events(ADMIN_KEY, NOV1, NOV8, base_url="ftp://x"),
            "is not allowed: an http",
        ),
        (
            lambda: fetch_billing_events(ADMIN_KEY, NOV1, NOV8, base_url=base, page_limit=0),
            "page_limit=0",
        ),
    ]:
        with pytest.raises(BillingApiError, match=message):
            call()
    assert len(fake_billing.requests) == asked  # refused before asking fal
    # exactly 90 days is allowed
    fetch_billing_events(ADMIN_KEY, NOV1, NOV1 + dt.timedelta(days=90), base_url=base)


def test_the_fetcher_gives_up_after_its_timeout_and_on_a_closed_port(
    fake_billing: FakeBilling,
) -> None:
    fake_billing.delay()
    with pytest.raises(BillingApiError, match="cannot reach fal's billing API at http://127"):
        fetch_billing_events(ADMIN_KEY, NOV1, NOV8, base_url=fake_billing.base_url, timeout_s=0.3)
    fake_billing.reset()
    probe = FakeBilling()
    closed = probe.base_url
    probe.stop()  # nothing listens there any more
    with pytest.raises(BillingApiError, match="cannot reach fal's billing API"):
        fetch_billing_events(ADMIN_KEY, NOV1, NOV8, base_url=closed)


# -- the CLI --------------------------------------------------------------------------------------
@pytest.fixture
def small(tmp_path: Path) -> tuple[str, Path]:
    """A SQLite ledger with two settled holds (req-1 0.80, req-2 1.20) on Nov 2, and a file."""
    url = "sqlite:///" + str(tmp_path / "ledger.db")
    ledger = open_ledger(url)
    for hold_id, amount, request_id, hour in (
        ("h1", 800_000, "req-1", 10),
        ("h2", 1_200_000, "req-2", 11),
    ):
        assert ledger.reserve(
            hold_id=hold_id,
            endpoint=ENDPOINT,
            amount=amount,
            charges=[BucketCharge("global|total", None)],
            now=at(2, hour),
            expires_at=at(2, hour) + 600,
        ).admitted
        ledger.mark_submitted(hold_id, request_id, now=at(2, hour) + 1)
        ledger.settle(hold_id, None, now=at(2, hour) + 60)
    ledger.close()
    path = tmp_path / "billing.csv"
    path.write_text(
        "request_id,endpoint_id,timestamp,cost_estimate_nano_usd\n"
        f"req-1,{ENDPOINT},2026-11-02T10:01:00Z,800000000\n"
        f"req-2,{ENDPOINT},2026-11-02T11:01:00Z,1150000000\n"
    )
    return url, path


def test_cli_exit_0_when_everything_matches(
    small: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, path = small
    path.write_text(path.read_text().replace("1150000000", "1200000000"))
    assert main(["reconcile", str(path), "--ledger", url, "--now", "2026-11-03"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out == (
        f"2 billing records (2 requests, 2.00 USD billed) from {path}\n"
        "range 2026-11-02 10:01 to 2026-11-02 11:01 UTC; grace 24 h (holds closed after"
        " 2026-11-01 11:01 are not zeroed yet)\n"
        "matched 2, different amount 0, billed but not in the ledger 0, held but never billed 0\n"
        "\n"
        "every request matched\n"
    )


def test_cli_table_json_and_csv_of_a_difference(
    small: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, path = small
    args = [
        "reconcile",
        str(path),
        "--ledger",
        url,
        "--since",
        "2026-11-02",
        "--until",
        "2026-11-03",
        "--now",
        "2026-11-05T08:00:00+01:00",
        "--grace",
        "1.5",
    ]
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert err == ("falbudget: 1 discrepancy with fal's billing records; --apply would correct 1\n")
    assert out == (
        f"2 billing records (2 requests, 1.95 USD billed) from {path}\n"
        "range 2026-11-02 00:00 to 2026-11-03 00:00 UTC; grace 1.5 h (holds closed after"
        " 2026-11-02 22:30 are not zeroed yet)\n"
        "matched 1, different amount 1, billed but not in the ledger 0, held but never billed 0\n"
        "\n"
        "class             request_id    hold    state    created (UTC)       ledger    billed"
        "  action\n"
        "----------------  ------------  ------  -------  ----------------  --------  --------"
        "  -----------------\n"
        "different amount  req-2         h2      settled  2026-11-02 11:00      1.20      1.15"
        "  --apply sets 1.15\n"
        "\n"
        "--apply would correct 1 hold (each change recorded as an adjustment)\n"
    )
    assert main([*args, "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in data.items() if k != "lines"} == {
        "currency": "USD",
        "origin": str(path),
        "ledger": url,
        "since": "2026-11-02T00:00:00Z",
        "until": "2026-11-03T00:00:00Z",
        "now": "2026-11-05T07:00:00Z",
        "grace_hours": "1.5",
        "endpoints": [],
        "records": 2,
        "duplicates": 0,
        "requests": 2,
        "billed": "1.95",
        "applied": False,
        "zeroing_refused": None,
        "counts": {
            "matched": 1,
            "different_amount": 1,
            "billed_not_in_ledger": 0,
            "held_not_billed": 0,
            "pending": 0,
            "discrepancies": 1,
            "corrections": 1,
        },
    }
    assert data["lines"][0] == {
        "class": "different_amount",
        "request_id": "req-2",
        "endpoint": ENDPOINT,
        "hold_ids": ["h2"],
        "hold_state": "settled",
        "created_at": "2026-11-02T11:00:00Z",
        "ledger": "1.20",
        "billed": "1.15",
        "billed_exact": "1.15",
        "difference": "-0.05",  # 1.15 - 1.20
        "records": [f"{path}: line 3"],
        "target": "1.15",
        "pending": False,
        "action": "--apply sets 1.15",
        "note": None,
        "adjustment": None,
    }
    assert main([*args, "--format", "csv", "--apply"]) == 1
    out, _ = capsys.readouterr()
    assert out.splitlines() == [
        "class,request_id,endpoint,hold_id,hold_state,created_at,ledger,billed,difference,target,"
        "pending,adjustment_id,action,note",
        f"different_amount,req-2,{ENDPOINT},h2,settled,2026-11-02T11:00:00Z,1.20,1.15,-0.05,1.15"
        ",,1,set to 1.15 (adjustment 1),",
        f"matched,req-1,{ENDPOINT},h1,settled,2026-11-02T10:00:00Z,0.80,0.80,0.00,,,,,",
    ]
    assert main(["ledger", "adjustments", "--ledger", url]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines() == [
        "  id  created (UTC)     hold      previous    amount    delta  reason",
        "----  ----------------  ------  ----------  --------  -------  -------------------------",
        "   1  2026-11-05 07:00  h2            1.20      1.15    -0.05  billed 1.15; counted 1.20",
    ]
    assert main(["ledger", "adjustments", "--ledger", url, "--hold", "h1"]) == 0
    assert capsys.readouterr().out == "(no adjustments)\n"
    assert main(args) == 0  # corrected: everything matches now
    assert "every request matched" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["reconcile"], "give a FILE of billing records, or --from-api --since DATE"),
        (["reconcile", "{file}", "--from-api"], "give a FILE or --from-api, not both"),
        (["reconcile", "--from-api"], "--from-api needs --since DATE"),
        (
            ["reconcile", "--from-api", "--since", "2026-11-01", "--input-format", "csv"],
            "--input-format describes a FILE",
        ),
        (
            ["reconcile", "{file}", "--grace", "-1"],
            "--grace='-1' is not allowed: a number of hours",
        ),
        (["reconcile", "{file}", "--grace", "soon"], "--grace='soon' is not allowed"),
        (["reconcile", "{file}", "--since", "yesterday"], "--since='yesterday' is not allowed"),
        (
            ["reconcile", "{file}", "--since", "2026-11-03", "--until", "2026-11-02"],
            "the range is empty",
        ),
        (["reconcile", "{dir}/missing.csv"], "missing.csv: No such file or directory"),
        (["reconcile", "{dir}/bad.csv"], "bad.csv: line 2: timestamp='soon' is not allowed"),
        (["reconcile", "{file}", "--format", "yaml"], "argument --format: invalid choice"),
        (["reconcile", "{file}", "--ledger", "redis://x"], "ledger URL 'redis://x' is not allowed"),
        (["reconcile", "--from-api", "--since", "2026-11-01"], "FAL_KEY is not set"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    small: tuple[str, Path],
    tmp_path: Path,
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    url, path = small
    (tmp_path / "bad.csv").write_text("request_id,timestamp,cost_total\nr,soon,1\n")
    argv = [a.format(file=path, dir=tmp_path) for a in argv]
    if "--ledger" not in argv:
        argv += ["--ledger", url]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("falbudget: error: ") and err.count("\n") == 1, err
    assert message in err, err


def test_cli_from_api_against_the_fake_server(
    small: tuple[str, Path],
    fake_billing: FakeBilling,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _ = small
    monkeypatch.setenv("FALBUDGET_FAL_API_URL", fake_billing.base_url)
    monkeypatch.setenv("FAL_KEY", ADMIN_KEY)
    fake_billing.events = [
        event("req-1", stamp(2, 10, 1), 800_000_000),
        event("req-2", stamp(2, 11, 1), 1_200_000_000),
    ]
    argv = [
        "reconcile",
        "--from-api",
        "--since",
        "2026-11-01",
        "--until",
        "2026-11-08",
        "--ledger",
        url,
        "--now",
        "2026-11-09",
        "--format",
        "json",
    ]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["origin"] == "fal billing-events API 2026-11-01T00:00:00Z to 2026-11-08T00:00:00Z"
    assert data["counts"]["matched"] == 2
    # --until defaults to --now
    assert main([a for a in argv if a not in ("--until", "2026-11-08")]) == 0
    assert fake_billing.requests[-1].query["end"] == ["2026-11-09T00:00:00Z"]
    capsys.readouterr()
    monkeypatch.setenv("FAL_KEY", "not-the-key")
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and "HTTP 401" in err and "not-the-key" not in err
    monkeypatch.delenv("FAL_KEY")
    monkeypatch.setenv("FAL_KEY_ID", "key-id")
    monkeypatch.setenv("FAL_KEY_SECRET", "key-secret")
    fake_billing.key = "key-id:key-secret"  # as fal_client sends FAL_KEY_ID and FAL_KEY_SECRET
    assert main(argv) == 0


# -- review 15: --endpoint narrows the holds, never the records ----------------------------------
def test_endpoint_narrows_the_holds_and_the_requests_without_a_hold_never_the_records() -> None:
    ledger = MemoryLedger()
    _hold(ledger, "a", 800_000, at(2, 10), request_id="req-a", close="settle")
    _hold(ledger, "b", 1_200_000, at(2, 11), request_id="req-b", close="settle")
    _hold(ledger, "c", 800_000, at(2, 12), request_id="req-c", close="settle")  # not billed
    _hold(ledger, "f", 500_000, at(2, 13), request_id="req-f", close="settle", endpoint=FLUX)
    records = (
        BillingRecord("req-a", None, at(2, 10, 1), Decimal("0.80"), None, "x: 1"),  # no endpoint
        BillingRecord("req-b", "fal-ai/magi", at(2, 11, 1), Decimal("1.20"), None, "x: 2"),
        BillingRecord("req-n", None, at(2, 14), Decimal("0.10"), None, "x: 3"),  # no hold
        BillingRecord("req-x", FLUX, at(2, 15), Decimal("0.40"), None, "x: 4"),  # no hold, flux
    )
    result = reconcile(
        ledger, BillingRecords(records, "x", at(1), at(4)), now=at(10), endpoints=[ENDPOINT]
    )
    assert [(line.kind, line.request_id, line.target) for line in result.lines] == [
        # its endpoint is unknown: it may be a guarded endpoint's, so it is reported
        ("billed_not_in_ledger", "req-n", None),
        ("held_not_billed", "req-c", 0),
        # matched by request id, whatever (or whether) fal names the endpoint
        ("matched", "req-a", None),
        ("matched", "req-b", None),
    ]
    # f (flux, not billed) is left out with its endpoint, req-x (flux, no hold) too
    assert result.records == 3  # req-a, req-b, req-n
    assert result.zeroing_refused is None  # 1 hold to zero, 2 matched


def test_cli_endpoint_with_an_export_without_endpoint_ids_zeroes_nothing(
    small: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, path = small
    path.write_text(
        "request_id,timestamp,cost_estimate_nano_usd\n"
        "req-1,2026-11-02T10:01:00Z,800000000\n"
        "req-2,2026-11-02T11:01:00Z,1200000000\n"
    )
    argv = ["reconcile", str(path), "--ledger", url, "--since", "2026-11-01", "--until"]
    argv += ["2026-11-04", "--now", "2026-11-10", "--endpoint", ENDPOINT, "--apply"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "matched 2, different amount 0, billed but not in the ledger 0, held but never" in out
    assert err == ""
    ledger = open_ledger(url)
    assert ledger.adjustments() == []
    # 0.80 + 1.20, as settled
    assert ledger.totals(["global|total"]) == [BucketTotals("global|total", 2_000_000, 0)]
    ledger.close()


def test_cli_from_api_fetches_every_endpoint_and_matches_by_request_id(
    small: tuple[str, Path],
    fake_billing: FakeBilling,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _ = small
    monkeypatch.setenv("FALBUDGET_FAL_API_URL", fake_billing.base_url)
    monkeypatch.setenv("FAL_KEY", ADMIN_KEY)
    fake_billing.events = [  # fal names the endpoint otherwise than the guard did
        event("req-1", stamp(2, 10, 1), 800_000_000, endpoint="fal-ai/magi/i2v"),
        event("req-2", stamp(2, 11, 1), 1_200_000_000, endpoint="fal-ai/magi/i2v"),
    ]
    argv = ["reconcile", "--from-api", "--since", "2026-11-01", "--until", "2026-11-04"]
    argv += ["--ledger", url, "--now", "2026-11-10", "--endpoint", ENDPOINT, "--apply"]
    assert main(argv) == 0
    assert "matched 2," in capsys.readouterr().out
    assert "endpoint_id" not in fake_billing.requests[0].query
    ledger = open_ledger(url)
    assert ledger.adjustments() == []
    ledger.close()


# -- review 15: --apply does not zero holds on thin evidence -------------------------------------
@pytest.fixture
def three_holds() -> MemoryLedger:
    """req-a 0.80, req-b 1.20 and req-c 0.80, reserved on Nov 2 at 10, 11 and 12, settled."""
    ledger = MemoryLedger()
    _hold(ledger, "a", 800_000, at(2, 10), request_id="req-a", close="settle")
    _hold(ledger, "b", 1_200_000, at(2, 11), request_id="req-b", close="settle")
    _hold(ledger, "c", 800_000, at(2, 12), request_id="req-c", close="settle")
    return ledger


def test_apply_refuses_to_zero_on_thin_evidence(three_holds: MemoryLedger) -> None:
    ledger = three_holds
    span = "2026-11-01T01:00:00Z to 2026-11-04T00:00:00Z"  # the first hour is left out

    def nov(*records: BillingRecord) -> BillingRecords:
        return BillingRecords(records, "nov.csv", at(1), at(4))

    empty = reconcile(ledger, nov(), now=at(10))
    assert empty.zeroing_refused == "there are no billing records, and 3 holds would be zeroed"
    assert empty.zeroing == 3
    # another team's key: records, none of this ledger's
    other = reconcile(ledger, nov(record("req-zz", "0.50", at(2, 9))), now=at(10))
    assert other.zeroing_refused == (
        f"no billing record matches a hold reserved from {span}, and 3 holds would be zeroed"
    )
    # a partial export: 1 hold matched (req-a, billed 0.70), 2 would be zeroed
    partial = reconcile(ledger, nov(record("req-a", "0.70", at(2, 10, 1))), now=at(10))
    assert partial.zeroing_refused == (
        f"2 holds would be zeroed but the records match only 1 reserved from {span}"
    )
    for result in (empty, other, partial):
        with pytest.raises(ZeroingRefused, match="refusing to zero holds on thin evidence: "):
            apply_corrections(ledger, result)
    # nothing changed, not even req-a's different amount
    assert ledger.adjustments() == []
    assert ledger.totals(["all"]) == [BucketTotals("all", 2_800_000, 0)]  # 0.80 + 1.20 + 0.80

    # 2 matched, 1 to zero: the evidence is enough
    enough = reconcile(
        ledger,
        nov(record("req-a", "0.80", at(2, 10, 1)), record("req-b", "1.20", at(2, 11, 1))),
        now=at(10),
    )
    assert enough.zeroing_refused is None
    # --allow-zeroing applies the partial one: a 0.70, b 0, c 0
    apply_corrections(ledger, partial, allow_zeroing=True)
    assert [(a.hold_id, a.amount) for a in ledger.adjustments()] == [
        ("a", 700_000),
        ("b", 0),  # held but never billed: oldest first
        ("c", 0),
    ]
    assert ledger.totals(["all"]) == [BucketTotals("all", 700_000, 0)]


def test_a_refusal_needs_holds_to_zero(three_holds: MemoryLedger) -> None:
    # records of every hold: nothing to zero, nothing refused; holds in the first hour of the
    # range are never zeroed (clock differences) and count as no evidence either way
    ledger = three_holds
    billing = BillingRecords(
        (
            record("req-a", "0.80", at(2, 10, 1)),
            record("req-b", "1.20", at(2, 11, 1)),
            record("req-c", "0.75", at(2, 12, 1)),
        ),
        "nov.csv",
        at(2, 11, 30),  # req-a and req-b are before the range, req-c inside its first hour
        at(4),
    )
    result = reconcile(ledger, billing, now=at(10))
    assert (result.zeroing, result.zeroing_refused) == (0, None)
    apply_corrections(ledger, result)
    assert [(a.hold_id, a.amount) for a in ledger.adjustments()] == [("c", 750_000)]


def test_holds_reserved_in_the_first_hour_of_the_range_are_not_zeroed() -> None:
    ledger = MemoryLedger()
    _hold(ledger, "early", 800_000, at(2, 0, 30), request_id="req-early", close="settle")
    _hold(ledger, "later", 800_000, at(2, 1, 1), request_id="req-later", close="settle")
    _hold(ledger, "ok1", 800_000, at(2, 5), request_id="req-ok1", close="settle")
    _hold(ledger, "ok2", 800_000, at(2, 6), request_id="req-ok2", close="settle")
    billing = BillingRecords(
        (record("req-ok1", "0.80", at(2, 5, 1)), record("req-ok2", "0.80", at(2, 6, 1))),
        "nov.csv",
        at(2),
        at(4),
    )
    result = reconcile(ledger, billing, now=at(10))
    # reserved 00:30, within an hour of the range's start: its record may lie before it
    assert [line.request_id for line in result.lines if line.kind == "held_not_billed"] == [
        "req-later"  # 01:01 is past the first hour
    ]


def test_cli_apply_refuses_a_header_only_export_and_allow_zeroing_overrides(
    small: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, path = small
    path.write_text("request_id,timestamp,cost_total\n")
    argv = ["reconcile", str(path), "--ledger", url, "--since", "2026-11-01", "--until"]
    argv += ["2026-11-04", "--now", "2026-11-10"]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[-4:] == [
        "held but never billed  req-1         h1      settled  2026-11-02 10:00      0.80"
        "            --apply --allow-zeroing sets 0.00",
        "held but never billed  req-2         h2      settled  2026-11-02 11:00      1.20"
        "            --apply --allow-zeroing sets 0.00",
        "",
        "--apply refuses to run: there are no billing records, and 2 holds would be zeroed;"
        " with --allow-zeroing it would correct 2 holds (each change recorded as an adjustment)",
    ]
    assert err == (
        "falbudget: 2 discrepancies with fal's billing records; --apply refuses without"
        " --allow-zeroing (it would zero 2)\n"
    )
    assert main([*argv, "--apply"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "falbudget: error: --apply refused, nothing was changed: there are no billing records,"
        " and 2 holds would be zeroed. An empty, partial or wrong export, another team's API key"
        " or a range the records do not cover looks like this; check the records, or give"
        " --allow-zeroing to zero them anyway\n"
    )
    ledger = open_ledger(url)
    assert ledger.adjustments() == []
    ledger.close()
    assert main([*argv, "--apply", "--allow-zeroing"]) == 1
    assert "applied 2 corrections" in capsys.readouterr().out
    ledger = open_ledger(url)
    assert [(a.hold_id, a.amount) for a in ledger.adjustments()] == [("h1", 0), ("h2", 0)]
    ledger.close()


def test_cli_apply_refuses_an_empty_api_answer(
    small: tuple[str, Path],
    fake_billing: FakeBilling,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _ = small
    monkeypatch.setenv("FALBUDGET_FAL_API_URL", fake_billing.base_url)
    monkeypatch.setenv("FAL_KEY", ADMIN_KEY)  # the key of a team that billed nothing
    argv = ["reconcile", "--from-api", "--since", "2026-11-01", "--until", "2026-11-04"]
    assert main([*argv, "--ledger", url, "--now", "2026-11-10", "--apply"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("falbudget: error: --apply refused, nothing was changed")
    ledger = open_ledger(url)
    assert ledger.adjustments() == []
    ledger.close()


# -- review 15: a record repeated exactly counts once --------------------------------------------
def test_cli_a_record_repeated_exactly_counts_once_and_different_ones_add_up(
    small: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, path = small
    path.write_text(
        "request_id,endpoint_id,timestamp,cost_estimate_nano_usd\n"
        f"req-1,{ENDPOINT},2026-11-02T10:01:00Z,800000000\n"
        f"req-1,{ENDPOINT},2026-11-02T10:01:00Z,800000000\n"  # the same event twice
        f"req-2,{ENDPOINT},2026-11-02T11:01:00Z,600000000\n"  # two events of one request
        f"req-2,{ENDPOINT},2026-11-02T11:02:00Z,600000000\n"
    )
    argv = ["reconcile", str(path), "--ledger", url, "--now", "2026-11-10"]
    assert main([*argv, "--apply"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[:2] == [
        f"3 billing records (2 requests, 2.00 USD billed) from {path}",  # 0.80 + 0.60 + 0.60
        "1 more record repeated another exactly and counted once (see the notes)",
    ]
    assert "matched 2, different amount 0" in out and err == ""
    assert main([*argv, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["records"], data["duplicates"], data["billed"]) == (3, 1, "2.00")
    lines = {line["request_id"]: line for line in data["lines"]}
    assert lines["req-1"]["note"] == f"{path}: line 3 repeats {path}: line 2 exactly: counted once"
    assert lines["req-1"]["records"] == [f"{path}: line 2"]
    assert lines["req-2"]["records"] == [f"{path}: line 4", f"{path}: line 5"]
    ledger = open_ledger(url)
    assert ledger.adjustments() == []
    ledger.close()


def test_a_record_repeated_at_a_page_boundary_counts_once(fake_billing: FakeBilling) -> None:
    fake_billing.events = [event(f"r{n}", stamp(2, n), 800_000_000) for n in (1, 2, 3)]
    fake_billing.repeat_last = True  # page 2 starts with page 1's last event again
    got = fetch_billing_events(ADMIN_KEY, NOV1, NOV8, base_url=fake_billing.base_url, page_limit=2)
    # newest first: r3 r2 | r2 r1
    assert [r.request_id for r in got.records] == ["r3", "r2", "r2", "r1"]
    ledger = MemoryLedger()
    for n in (1, 2, 3):
        _hold(ledger, f"h{n}", 800_000, at(2, n) - 60, request_id=f"r{n}", close="settle")
    result = reconcile(ledger, got, now=at(10))
    assert [(line.kind, line.request_id, line.billed_micros) for line in result.lines] == [
        ("matched", "r3", 800_000),
        ("matched", "r2", 800_000),  # not 1.60
        ("matched", "r1", 800_000),
    ]
    assert (result.records, result.duplicates) == (3, 1)


# -- review 15: the fetcher ----------------------------------------------------------------------
def test_the_fetcher_follows_no_redirect(fake_billing: FakeBilling) -> None:
    with FakeBilling() as elsewhere:
        fake_billing.redirect_to = f"{elsewhere.base_url}/models/billing-events?x=1"
        with pytest.raises(BillingApiError) as info:
            fetch_billing_events(ADMIN_KEY, NOV1, NOV8, base_url=fake_billing.base_url)
        assert elsewhere.requests == []  # the key never went there
    assert info.value.status == 302
    assert str(info.value) == (
        f"{fake_billing.base_url}/models/billing-events: fal's billing API answered with a"
        f" redirect (HTTP 302 to {elsewhere.base_url}/models/billing-events): falbudget follows"
        " none, since the API key would go with it; set FALBUDGET_FAL_API_URL to the address"
        " that answers"
    )


def test_the_fetcher_sends_the_key_over_plain_http_to_this_machine_only(
    fake_billing: FakeBilling,
) -> None:
    # 0.0.0.0 reaches this machine's fake too, but it is not a loopback address
    with pytest.raises(BillingApiError, match="is not allowed: an https:// URL"):
        fetch_billing_events(ADMIN_KEY, NOV1, NOV8, base_url=f"http://0.0.0.0:{fake_billing.port}")
    assert fake_billing.requests == []


@pytest.mark.parametrize("value", ['"true"', "1", "null"])
def test_the_fetcher_refuses_a_has_more_that_is_not_a_boolean(
    fake_billing: FakeBilling, value: str
) -> None:
    fake_billing.raw_answer = (
        f'{{"billing_events": [], "has_more": {value}, "next_cursor": "Mg=="}}'.encode()
    )
    with pytest.raises(BillingApiError) as info:
        fetch_billing_events(ADMIN_KEY, NOV1, NOV8, base_url=fake_billing.base_url)
    shown = {'"true"': "'true'", "1": "1", "null": "None"}[value]
    assert str(info.value) == (
        f"{fake_billing.base_url}/models/billing-events: page 1: has_more={shown} is not"
        " allowed: true or false (a JSON boolean, as fal gives it)"
    )


def test_the_fetcher_bounds_the_whole_request_and_the_answer_size(
    fake_billing: FakeBilling, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_billing.events = [event(f"r{n}", stamp(2, n), 1) for n in range(5)]
    monkeypatch.setattr("falbudget.reconcile.MAX_ANSWER_BYTES", 100)
    with pytest.raises(BillingApiError) as info:
        fetch_billing_events(ADMIN_KEY, NOV1, NOV8, base_url=fake_billing.base_url)
    assert str(info.value) == (
        f"{fake_billing.base_url}/models/billing-events: the answer is larger than 100 bytes;"
        " ask for smaller pages"
    )
    monkeypatch.undo()
    # every byte arrives within the timeout, the answer (over 100 bytes) does not
    fake_billing.raw_answer = json.dumps({"billing_events": [], "has_more": False}).encode()
    fake_billing.raw_answer += b" " * 60
    fake_billing.drip_s = 0.05
    with pytest.raises(BillingApiError) as info:
        fetch_billing_events(ADMIN_KEY, NOV1, NOV8, base_url=fake_billing.base_url, timeout_s=0.5)
    assert str(info.value) == (
        f"cannot reach fal's billing API at {fake_billing.base_url}: no complete answer within"
        " 0.5 s"
    )


# -- review 15: bad input is one line and exit 2, never a traceback ------------------------------
BIG = "9" * 5000
TOO_LARGE = "is not allowed: at most 9223372036854.775807 USD, the most a ledger counts"
NANO_TOO_LARGE = (
    "is not allowed: at most 9223372036854775807000 nano-USD (9223372036854.775807 USD, the"
    " most a ledger counts)"
)
RECORD = '"request_id": "req-1", "timestamp": "2026-11-02T10:00:00Z"'


@pytest.mark.parametrize(
    ("name", "text", "extra", "message"),
    [
        (
            "big.json",
            f'[{{{RECORD}, "cost_estimate_nano_usd": {BIG}}}]',
            [],
            f"big.json: [0]: cost_estimate_nano_usd=Decimal('{'9' * 68}... {NANO_TOO_LARGE}",
        ),
        (
            "big.jsonl",
            f'{{{RECORD}, "cost_estimate_nano_usd": {BIG}}}\n',
            [],
            f"big.jsonl: line 1: cost_estimate_nano_usd=Decimal('{'9' * 68}... {NANO_TOO_LARGE}",
        ),
        (
            "big.csv",
            f"request_id,timestamp,cost_estimate_nano_usd\nreq-1,2026-11-02,{BIG}\n",
            [],
            f"big.csv: line 2: cost_estimate_nano_usd='{'9' * 76}... {NANO_TOO_LARGE}",
        ),
        (
            "nano.csv",  # one nano-USD more than a ledger counts
            "request_id,timestamp,cost_estimate_nano_usd\nreq-1,2026-11-02,9223372036854775807001\n",
            [],
            f"nano.csv: line 2: cost_estimate_nano_usd='9223372036854775807001' {NANO_TOO_LARGE}",
        ),
        (
            "total.json",
            f'[{{{RECORD}, "cost_total": {BIG}}}]',
            [],
            f"total.json: [0]: cost_total=Decimal('{'9' * 68}... {TOO_LARGE}",
        ),
        (
            "huge.json",
            f'[{{{RECORD}, "cost_total": "1e999999"}}]',
            [],
            f"huge.json: [0]: cost_total='1e999999' {TOO_LARGE}",
        ),
        (
            "huge2.json",
            f'[{{{RECORD}, "cost_total": 1e999999}}]',
            [],
            f"huge2.json: [0]: cost_total=Decimal('1E+999999') {TOO_LARGE}",
        ),
        (
            "e30.json",
            f'[{{{RECORD}, "cost_total": "1e30"}}]',
            [],
            f"e30.json: [0]: cost_total='1e30' {TOO_LARGE}",
        ),
        (
            "max.csv",  # one micro-USD more than a ledger counts
            "request_id,timestamp,cost_total\nreq-1,2026-11-02,9223372036854.775808\n",
            [],
            f"max.csv: line 2: cost_total='9223372036854.775808' {TOO_LARGE}",
        ),
        (
            "fine.csv",  # 41 decimal places
            f"request_id,timestamp,cost_total\nreq-1,2026-11-02,0.{'0' * 40}1\n",
            [],
            "fine.csv: line 2: cost_total='0.00000000000000000000000000000000000000001' is not"
            " allowed: at most 40 decimal places (nano-USD need 9)",
        ),
        (
            "under.csv",
            "request_id,timestamp,cost_total\nreq-1,2026-11-02,1_000\n",
            [],
            "under.csv: line 2: cost_total='1_000' is not allowed: a decimal amount of USD >= 0",
        ),
        (
            "deep.json",
            "[" * 100_000 + "]" * 100_000,
            [],
            "deep.json: not readable JSON (nested too deeply); a .json file is one document",
        ),
        (
            "deep.jsonl",
            "[" * 100_000 + "]" * 100_000 + "\n",
            [],
            "deep.jsonl: line 1: not readable JSON (nested too deeply)",
        ),
        (
            "twice.json",
            f'[{{{RECORD}, "cost_total": "0.5", "cost_total": "0.7"}}]',
            [],
            "twice.json: [0]: cost_total is given 2 times ('0.5' and '0.7'): each field may"
            " appear once",
        ),
        (
            "twice.jsonl",
            f'{{{RECORD}, "cost_total": "0.5", "request_id": "req-2"}}\n',
            [],
            "twice.jsonl: line 1: request_id is given 2 times ('req-1' and 'req-2'): each field"
            " may appear once",
        ),
        (
            "page.json",
            '{"billing_events": [], "has_more": false, "has_more": true}',
            [],
            "page.json: has_more is given 2 times (False and True): each field may appear once",
        ),
        (
            "twice.csv",
            "request_id,timestamp,cost_total,cost_total\nreq-1,2026-11-02,0.5,0.7\n",
            [],
            "twice.csv: line 1: the column cost_total is given 2 times: each column may appear"
            " once",
        ),
        (
            "sum.csv",  # each record fits, not their sum
            "request_id,timestamp,cost_total\nreq-1,2026-11-02,5000000000000\n"
            "req-1,2026-11-03,5000000000000\n",
            [],
            "request req-1: its records (sum.csv: line 2, sum.csv: line 3) add up to"
            f" 10000000000000.00 USD: {TOO_LARGE.removeprefix('is not allowed: ')}",
        ),
        (
            "old.csv",
            "request_id,timestamp,cost_total\nreq-1,0001-01-01,0.5\n",
            [],
            "old.csv: line 2: timestamp='0001-01-01' is not allowed: a time from 1970 to 8999",
        ),
        (
            "ok.csv",
            "request_id,timestamp,cost_total\nreq-1,2026-11-02T10:00:00Z,0.80\n",
            ["--grace", "1e1000000"],
            "--grace='1e1000000' is not allowed: a number of hours from 0 to 8784 (366 days)",
        ),
        (
            "ok.csv",
            "request_id,timestamp,cost_total\nreq-1,2026-11-02T10:00:00Z,0.80\n",
            ["--grace", "1e400"],
            "--grace='1e400' is not allowed: a number of hours from 0 to 8784 (366 days)",
        ),
        (
            "ok.csv",
            "request_id,timestamp,cost_total\nreq-1,2026-11-02T10:00:00Z,0.80\n",
            ["--now", "0001-01-01"],
            "--now='0001-01-01' is not allowed: a time from 1970 to 8999",
        ),
    ],
)
def test_cli_bad_records_and_options_are_one_line_without_a_traceback(
    small: tuple[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    text: str,
    extra: list[str],
    message: str,
) -> None:
    url, _ = small
    (tmp_path / name).write_text(text)
    argv = ["reconcile", name, "--ledger", url, "--apply", *extra]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)  # the file as given is its name
        assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"falbudget: error: {message}"), err
    assert err.count("\n") == 1
    ledger = open_ledger(url)
    assert ledger.adjustments() == []
    ledger.close()


def test_the_library_refuses_a_grace_period_it_cannot_use(
    scenario: tuple[MemoryLedger, BillingRecords],
) -> None:
    ledger, billing = scenario
    for grace in (1e400, float("nan"), 366 * 24 * 3600 + 1):
        with pytest.raises(ReconcileError, match=r"is not allowed: seconds from 0 to 31622400"):
            reconcile(ledger, billing, now=at(10), grace_s=grace)
    # 366 days = 31_622_400 s is the most
    assert reconcile(ledger, billing, now=at(10), grace_s=31_622_400).grace_s == 31_622_400


# -- review 15: every correction is checked before the first -------------------------------------
def test_apply_checks_every_bucket_before_the_first_adjustment() -> None:
    ledger = MemoryLedger()
    _hold(ledger, "h1", 800_000, at(2, 10), request_id="req-1", close="settle")
    _hold(ledger, "h2", 800_000, at(2, 11), request_id="req-2", close="settle")
    top = "9223372036854.775807"  # 2**63 - 1 micro-USD: the most one record may give
    records = (record("req-1", "0.70", at(2, 10, 1)), record("req-2", top, at(2, 11, 1)))
    result = reconcile(ledger, BillingRecords(records, "big.csv"), now=at(10))
    assert [line.target for line in result.corrections] == [700_000, 2**63 - 1]
    # 'all' would hold 1_600_000 - 100_000 + (2**63 - 1 - 800_000) = 2**63 - 1 + 700_000
    with pytest.raises(ReconcileError) as info:
        apply_corrections(ledger, result)
    assert str(info.value) == (
        "the corrections would take bucket 'all' past 9223372036854775807 micro-USD, the largest"
        " total a ledger keeps; nothing was changed"
    )
    assert ledger.adjustments() == []
    assert ledger.get_hold("h1").adjusted_amount is None


def test_cli_a_cost_past_the_ledger_stops_before_any_correction(
    small: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, path = small
    path.write_text(
        "request_id,timestamp,cost_total\n"
        "req-1,2026-11-02T10:01:00Z,0.70\n"  # a correction that would come first
        "req-2,2026-11-02T11:01:00Z,10000000000000\n"
    )
    assert main(["reconcile", str(path), "--ledger", url, "--apply"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"falbudget: error: {path}: line 3: cost_total='10000000000000' {TOO_LARGE}\n"
    ledger = open_ledger(url)
    assert ledger.adjustments() == []
    ledger.close()


def test_apply_leaves_a_hold_that_another_reconciler_changed_since(
    scenario: tuple[MemoryLedger, BillingRecords],
) -> None:
    ledger, billing = scenario
    seen = reconcile(ledger, billing, now=at(10))  # b: counted 0.80, fal billed 0.65
    newer = ledger.adjust("b", 700_000, now=at(10), reason="billed 0.70", source="newer.json")
    applied = apply_corrections(ledger, seen)
    b = next(line for line in applied.lines if line.request_id == "req-b")
    assert (b.stale, b.adjustment) == (True, None)
    assert b.note == (
        "the hold changed after it was read (it counts 0.70 now (settled)): not corrected;"
        " reconcile again"
    )
    assert ledger.get_hold("b").adjusted_amount == 700_000  # the newer correction stands
    assert [a.hold_id for a in ledger.adjustments()] == ["b", "i", "c"]
    assert ledger.adjustments()[0] == newer
    # i and c were applied; b is no longer a correction but a discrepancy for a person
    assert [line.request_id for line in applied.corrections] == ["req-i", "req-c"]


# -- review 15: money, exact whatever the digits -------------------------------------------------
def test_rounding_up_to_the_micro_is_exact_whatever_the_digits() -> None:
    # 1 micro-USD and 1e-35 USD: a fraction of a micro-USD more, so 2 (28-digit arithmetic
    # rounded the product to exactly 1 micro-USD first)
    assert to_micros(Decimal("0.00000100000000000000000000000000001")) == 2
    # 123_456_789 USD and 1e-22 USD: 123_456_789_000_000 micro-USD and a fraction
    assert to_micros(Decimal("123456789.0000000000000000000001")) == 123_456_789_000_001
    assert to_micros(Decimal("-0.0000015")) == -1  # the ceiling of -1.5 micro-USD
    assert to_micros(Decimal("1E-999999999")) == 1
    assert to_micros(Decimal("0E+999999999")) == 0
    assert format_usd(Decimal("0.00000100000000000000000000000000001")) == (
        "0.00000100000000000000000000000000001"
    )
    assert format_usd(Decimal("1E+30")) == "1000000000000000000000000000000.00"
    assert from_micros(2**63 - 1) == Decimal("9223372036854.775807")
    # a request billed 0.2 and 1e-31 USD: 200_000 micro-USD and a fraction, so 200_001 (a
    # 28-digit sum is 0.2000000000000000000000000000 exactly)
    ledger = MemoryLedger()
    tiny = "0.0000000000000000000000000000001"
    result = reconcile(
        ledger,
        BillingRecords((record("r", "0.2", at(2)), record("r", tiny, at(2, 1))), "t"),
        now=at(10),
    )
    assert [(line.billed, line.billed_micros) for line in result.lines] == [
        (Decimal("0.2000000000000000000000000000001"), 200_001)
    ]


def test_apply_leaves_a_hold_reopened_under_its_idempotency_key_since() -> None:
    ledger = MemoryLedger()
    assert ledger.reserve(
        hold_id="r",
        endpoint=ENDPOINT,
        amount=800_000,
        charges=[BucketCharge("all", None)],
        now=at(2, 10),
        expires_at=at(2, 10) + 600,
        idempotency_key="job-1",
    ).admitted
    ledger.mark_submitted("r", "req-r", now=at(2, 10) + 1)
    ledger.release("r", now=at(2, 10) + 60)  # it failed, as far as the guard knew
    _hold(ledger, "ok", 800_000, at(2, 11), request_id="req-ok", close="settle")
    records = (record("req-r", "0.30", at(2, 10, 5)), record("req-ok", "0.80", at(2, 11, 1)))
    seen = reconcile(ledger, BillingRecords(records, "nov.csv", at(1), at(4)), now=at(10))
    assert [(line.request_id, line.target) for line in seen.corrections] == [("req-r", 300_000)]
    # meanwhile the caller retries with the same key: the released row is re-opened
    retry = ledger.reserve(
        hold_id="r2",
        endpoint=ENDPOINT,
        amount=800_000,
        charges=[BucketCharge("all", None)],
        now=at(10),
        expires_at=at(10) + 600,
        idempotency_key="job-1",
    )
    assert retry.hold is not None and (retry.hold.id, retry.hold.state) == ("r", "held")
    applied = apply_corrections(ledger, seen)
    line = next(line for line in applied.lines if line.request_id == "req-r")
    assert (line.stale, line.adjustment) == (True, None)
    assert line.note == (
        "the hold changed after it was read (it counts 0.00 now (held)): not corrected;"
        " reconcile again"
    )
    assert ledger.adjustments() == []
