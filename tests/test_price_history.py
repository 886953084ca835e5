"""Price history: dated versions of an endpoint's rules, quotes at a moment, and what the guard
records. Every expected total is worked out by hand beside the test.

The made-up table HISTORY prices acme/video in three versions:

    from 2026-11-01:  (0.80 + 0.20 x ceil((frames - 96) / 24)) x resolution
    from 2026-12-01:  (1.00 + 0.20 x ceil((frames - 96) / 24)) x resolution
    from 2027-01-01:  as 2026-12-01, and a third resolution, 1080p, at x2

with resolution 0.5 for 480p and 1 for 720p. Before 2026-11-01 it has no price.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from decimal import Decimal
from pathlib import Path

import pytest

import falbudget
from falbudget import Guard, InvalidArguments, NoPriceInEffect, PriceTableError, Quote
from falbudget.cli import main
from falbudget.ledger import open_ledger
from falbudget.pricing import PriceTable, engine, load_table, loader, split_rules_version

VIDEO = "acme/video"
MAGI = "fal-ai/magi/image-to-video"
REPO_TABLE = Path(__file__).resolve().parents[1] / "pricing.yaml"

RULES_080 = """\
          - {name: base, kind: base, amount: "0.80"}
          - name: extra seconds
            kind: per_unit
            input: frames
            above: 96
            unit: 24
            amount: "0.20"
            unit_name: second
          - name: resolution
            kind: lookup
            input: resolution
            factors: {"480p": "0.5", "720p": "1"}
"""
RULES_100 = RULES_080.replace('amount: "0.80"', 'amount: "1.00"')
RULES_1080 = RULES_100.replace('"720p": "1"}', '"720p": "1", "1080p": "2"}')

HISTORY = f"""\
schema_version: 1
table_version: "acme-7"
effective_date: 2026-11-01
currency: USD
endpoints:
  acme/video:
    title: Acme video
    source_url: https://example.com/acme/video
    price_read_on: 2026-10-30
    inputs:
      prompt: {{type: string, required: true}}
      frames: {{type: integer, minimum: 96, maximum: 192, default: 96}}
      resolution: {{type: string, enum: ["480p", "720p"], default: "720p"}}
    versions:
      - effective_from: 2026-11-01
        rules:
{RULES_080}      - effective_from: 2026-12-01
        source_url: https://example.com/acme/video/pricing-december
        price_read_on: 2026-11-20
        rules:
{RULES_100}      - effective_from: 2027-01-01
        inputs:
          prompt: {{type: string, required: true}}
          frames: {{type: integer, minimum: 96, maximum: 192, default: 96}}
          resolution: {{type: string, enum: ["480p", "720p", "1080p"], default: "720p"}}
        rules:
{RULES_1080}"""

NOV_1 = dt.date(2026, 11, 1)
NOV_30 = dt.date(2026, 11, 30)
DEC_1 = dt.date(2026, 12, 1)
JAN_1 = dt.date(2027, 1, 1)
# 2026-12-01T00:00:00Z in POSIX seconds, by hand: 1970..2025 is 56 x 365 + 14 leap days (1972 to
# 2024) = 20454 days, January to November 2026 is 334 more: 20788 days x 86400 s.
DEC_1_POSIX = 20788 * 86400


@pytest.fixture
def history_path(tmp_path: Path) -> Path:
    path = tmp_path / "history.yaml"
    path.write_text(HISTORY)
    return path


@pytest.fixture
def table(history_path: Path) -> PriceTable:
    return load_table(history_path)


def at_day(monkeypatch: pytest.MonkeyPatch, day: dt.date) -> None:
    """Make "now" (the UTC day the engine reads from the clock) ``day``."""
    monkeypatch.setattr(engine, "_today", lambda: day.toordinal())


def refused(tmp_path: Path, text: str) -> PriceTableError:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PriceTableError) as info:
        load_table(path)
    assert info.value.file == str(path)
    return info.value


# --- quoting at a moment ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "arguments", "total", "effective_from"),
    [
        # the first version: 0.80 + 2 x 0.20 = 1.20 for 144 frames
        (NOV_1, {"frames": 144}, "1.20", "2026-11-01"),
        (NOV_30, {"frames": 144}, "1.20", "2026-11-01"),
        # the second: 1.00 + 2 x 0.20 = 1.40
        (DEC_1, {"frames": 144}, "1.40", "2026-12-01"),
        (dt.date(2026, 12, 31), {"frames": 144}, "1.40", "2026-12-01"),
        # defaults: 0.80 before, 1.00 from 2026-12-01; at 480p half of that
        (NOV_30, {}, "0.80", "2026-11-01"),
        (DEC_1, {}, "1.00", "2026-12-01"),
        (NOV_30, {"resolution": "480p"}, "0.40", "2026-11-01"),
        (DEC_1, {"resolution": "480p"}, "0.50", "2026-12-01"),
        # 192 frames is 4 extra seconds: (0.80 + 0.80) x 0.5 = 0.80 and (1.00 + 0.80) x 0.5 = 0.90
        (NOV_30, {"frames": 192, "resolution": "480p"}, "0.80", "2026-11-01"),
        (DEC_1, {"frames": 192, "resolution": "480p"}, "0.90", "2026-12-01"),
        # the third adds 1080p at x2: (1.00 + 0.40) x 2 = 2.80
        (JAN_1, {"frames": 144, "resolution": "1080p"}, "2.80", "2027-01-01"),
        (JAN_1, {"frames": 144}, "1.40", "2027-01-01"),
    ],
)
def test_quotes_on_both_sides_of_each_boundary(
    table: PriceTable,
    at: dt.date,
    arguments: dict[str, int | str],
    total: str,
    effective_from: str,
) -> None:
    quote = table.quote(VIDEO, arguments, at=at)
    assert quote.total == Decimal(total)
    assert str(quote.total) == total
    assert quote.effective_from == effective_from
    assert quote.table_version == "acme-7"


@pytest.mark.parametrize(
    ("at", "total"),
    [
        # naive datetimes are UTC: the last second of November, then midnight
        (dt.datetime(2026, 11, 30, 23, 59, 59), "1.20"),
        (dt.datetime(2026, 12, 1, 0, 0, 0), "1.40"),
        # aware datetimes count by their UTC day: 01:00 at +02:00 is 23:00 UTC on 30 November;
        # 20:00 at -05:00 on 30 November is 01:00 UTC on 1 December
        (dt.datetime(2026, 12, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))), "1.20"),
        (dt.datetime(2026, 11, 30, 20, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))), "1.40"),
        (dt.datetime(2026, 12, 1, tzinfo=dt.UTC), "1.40"),
        # POSIX seconds (the guard's clock): a second before midnight UTC, then midnight
        (DEC_1_POSIX - 1, "1.20"),
        (DEC_1_POSIX, "1.40"),
        (float(DEC_1_POSIX), "1.40"),
    ],
)
def test_a_moment_is_a_utc_day(
    table: PriceTable, at: dt.datetime | int | float, total: str
) -> None:
    assert table.quote(VIDEO, {"frames": 144}, at=at).total == Decimal(total)


def test_the_default_is_now(monkeypatch: pytest.MonkeyPatch, table: PriceTable) -> None:
    at_day(monkeypatch, NOV_30)
    assert table.quote(VIDEO, {"frames": 144}).total == Decimal("1.20")
    at_day(monkeypatch, DEC_1)
    assert table.quote(VIDEO, {"frames": 144}).total == Decimal("1.40")
    assert table.quote(VIDEO, {"frames": 144}).effective_from == "2026-12-01"


def test_a_future_version_waits_for_its_date(tmp_path: Path) -> None:
    """With the real clock: a version dated 2999 is not in effect now, one dated 2000 is."""
    text = (
        HISTORY.replace("2026-11-01\n        rules", "2000-01-01\n        rules")
        .replace("effective_from: 2026-12-01", "effective_from: 2999-01-01")
        .replace("effective_from: 2027-01-01", "effective_from: 2999-06-01")
    )
    path = tmp_path / "future.yaml"
    path.write_text(text)
    table = load_table(path)
    quote = table.quote(VIDEO, {"frames": 144})
    assert (quote.total, quote.effective_from) == (Decimal("1.20"), "2000-01-01")
    later = table.quote(VIDEO, {"frames": 144}, at=dt.date(2999, 1, 1))
    assert (later.total, later.effective_from) == (Decimal("1.40"), "2999-01-01")
    # the endpoint's own fields are those of the version in effect when the table was loaded
    endpoint = table.endpoint(VIDEO)
    assert endpoint.effective_from == "2000-01-01"
    assert endpoint.effective_dates == ("2000-01-01", "2999-01-01", "2999-06-01")


def test_falbudget_quote_takes_at(monkeypatch: pytest.MonkeyPatch, history_path: Path) -> None:
    monkeypatch.setenv("FALBUDGET_PRICING", str(history_path))
    monkeypatch.setattr(loader, "_cache", {})  # a new process: the default table chosen afresh
    assert falbudget.quote(VIDEO, {"frames": 144}, at=NOV_30).total == Decimal("1.20")
    assert falbudget.quote(VIDEO, {"frames": 144}, at=DEC_1).total == Decimal("1.40")


def test_inputs_can_change_between_versions(table: PriceTable) -> None:
    with pytest.raises(InvalidArguments) as info:
        table.quote(VIDEO, {"resolution": "1080p"}, at=dt.date(2026, 12, 31))
    assert info.value.parameter == "resolution"
    assert 'one of "480p", "720p"' in str(info.value)
    endpoint = table.endpoint(VIDEO)
    # grids: 97 frame counts x 2 resolutions, then x 3 from 2027
    assert len(list(endpoint.grid(at=DEC_1))) == 194
    assert len(list(endpoint.grid(at=JAN_1))) == 291
    # cheapest 96 frames at 480p, dearest 192 frames at the largest factor:
    # Nov 0.80 x 0.5 = 0.40 .. 1.60; Dec 1.00 x 0.5 = 0.50 .. 1.80; Jan 0.50 .. 1.80 x 2 = 3.60
    assert endpoint.price_range(at=NOV_30) == (Decimal("0.40"), Decimal("1.60"))
    assert endpoint.price_range(at=DEC_1) == (Decimal("0.50"), Decimal("1.80"))
    assert endpoint.price_range(at=JAN_1) == (Decimal("0.50"), Decimal("3.60"))
    assert endpoint.normalize_arguments({"resolution": "1080p"}, at=JAN_1) == {
        "frames": 96,
        "resolution": "1080p",
    }


def test_each_version_keeps_its_source(table: PriceTable) -> None:
    endpoint = table.endpoint(VIDEO)
    november, december, january = endpoint.versions
    assert endpoint.version_at(NOV_30) is november
    assert endpoint.version_at(DEC_1) is december
    assert endpoint.version_at(JAN_1) is january
    assert (november.source_url, november.price_read_on) == (
        "https://example.com/acme/video",
        "2026-10-30",
    )
    assert (december.source_url, december.price_read_on) == (
        "https://example.com/acme/video/pricing-december",
        "2026-11-20",
    )
    # a version without its own source inherits the endpoint's
    assert january.source_url == "https://example.com/acme/video"
    assert [v.effective_from for v in endpoint.versions] == [
        "2026-11-01",
        "2026-12-01",
        "2027-01-01",
    ]
    assert all(v.versions == () for v in endpoint.versions)


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "at",
    [dt.date(2026, 10, 31), dt.datetime(2026, 10, 31, 23, 59, 59), DEC_1_POSIX - 30 * 86400 - 1],
)
def test_before_the_earliest_version_there_is_no_price(table: PriceTable, at: object) -> None:
    with pytest.raises(NoPriceInEffect) as info:
        table.quote(VIDEO, {"frames": 144}, at=at)  # type: ignore[arg-type]
    error = info.value
    assert isinstance(error, InvalidArguments)  # quoting still raises only two kinds of error
    assert (error.endpoint, error.parameter, error.earliest, error.at) == (
        VIDEO,
        "at",
        "2026-11-01",
        at,
    )
    assert str(error).startswith(f"{VIDEO}: no prices in effect at 2026-10-31")
    assert str(error).endswith("its earliest prices take effect on 2026-11-01 (UTC)")


def test_before_the_earliest_version_now(
    monkeypatch: pytest.MonkeyPatch, table: PriceTable
) -> None:
    at_day(monkeypatch, dt.date(2026, 10, 1))
    with pytest.raises(NoPriceInEffect, match="no prices in effect now: its earliest prices"):
        table.quote(VIDEO)


@pytest.mark.parametrize("at", ["2026-12-01", True, float("nan"), [2026, 12, 1]])
def test_at_must_be_a_moment(table: PriceTable, at: object) -> None:
    with pytest.raises(InvalidArguments) as info:
        table.quote(VIDEO, at=at)  # type: ignore[arg-type]
    assert info.value.parameter == "at"
    assert "a datetime (naive means UTC), a date, POSIX seconds" in str(info.value)
    assert not isinstance(info.value, NoPriceInEffect)


def test_at_is_checked_for_an_undated_endpoint_too() -> None:
    table = load_table(REPO_TABLE)
    with pytest.raises(InvalidArguments, match='at="tomorrow" is not allowed'):
        table.quote(MAGI, at="tomorrow")  # type: ignore[arg-type]


def test_duplicate_dates_are_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, HISTORY.replace("2026-12-01\n", "2026-11-01\n", 1))
    assert (error.endpoint, error.field) == (VIDEO, "versions.1.effective_from")
    assert error.reason == (
        "2026-11-01 is also the date of versions.0; each version needs a date of its own"
    )


def test_versions_must_be_oldest_first(tmp_path: Path) -> None:
    error = refused(tmp_path, HISTORY.replace("2026-12-01\n", "2026-10-01\n", 1))
    assert (error.endpoint, error.field) == (VIDEO, "versions.1.effective_from")
    assert (
        error.reason == "2026-10-01 is before versions.0's 2026-11-01; list versions oldest first"
    )


def test_rules_and_versions_are_exclusive(tmp_path: Path) -> None:
    both = HISTORY.replace(
        "    versions:\n",
        '    rules:\n      - {name: base, kind: base, amount: "1"}\n    versions:\n',
    )
    error = refused(tmp_path, both)
    assert (error.endpoint, error.field) == (VIDEO, "rules")
    assert "not both" in error.reason
    neither = HISTORY[: HISTORY.index("    versions:\n")]
    error = refused(tmp_path, neither)
    assert (error.endpoint, error.field) == (VIDEO, "rules")
    assert error.reason.startswith("give rules (one set of prices, always in effect) or versions")


def test_an_empty_version_list_is_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, HISTORY[: HISTORY.index("    versions:\n")] + "    versions: []\n")
    assert (error.endpoint, error.field) == (VIDEO, "versions")


def test_mistakes_inside_a_version_name_their_field(tmp_path: Path) -> None:
    # a YAML float for money, in the second version's first rule
    error = refused(tmp_path, HISTORY.replace('amount: "1.00"', "amount: 1.00", 1))
    assert (error.endpoint, error.field) == (VIDEO, "versions.1.rules.0.amount")
    assert "quoted decimal string" in error.reason
    # an unknown key in a version
    error = refused(
        tmp_path, HISTORY.replace("        price_read_on: 2026-11-20\n", "        colour: red\n")
    )
    assert (error.endpoint, error.field) == (VIDEO, "versions.1.colour")
    # a rule reading an input its version does not have (the third version's own inputs)
    third = HISTORY.index("effective_from: 2027-01-01")
    error = refused(
        tmp_path, HISTORY[:third] + HISTORY[third:].replace("input: frames", "input: frame")
    )
    assert (error.endpoint, error.field) == (VIDEO, "versions.2.rules.1.input")
    assert "reads unknown parameter 'frame'; known: frames, prompt, resolution" in error.reason
    # a lookup missing the factor of a value the version's inputs allow
    error = refused(tmp_path, HISTORY.replace(', "1080p": "2"}', "}"))
    assert (error.endpoint, error.field) == (VIDEO, "versions.2.rules.2.factors")
    assert error.reason == "no factor for 1080p"
    # a date that is not a date: a string, or a day that does not exist (a YAML error, with its
    # line, rather than a traceback)
    error = refused(tmp_path, HISTORY.replace("2027-01-01", "'next year'"))
    assert (error.endpoint, error.field) == (VIDEO, "versions.2.effective_from")
    error = refused(tmp_path, HISTORY.replace("2027-01-01", "2027-02-30"))
    line = HISTORY.splitlines().index("      - effective_from: 2027-01-01") + 1
    assert error.reason == (
        f"not valid YAML at line {line}, column 25: '2027-02-30' is not a valid date"
        " (day is out of range for month)"
    )


# --- undated endpoints are as they were ---------------------------------------------------------


def test_an_undated_endpoint_prices_the_same_at_any_moment() -> None:
    table = load_table(REPO_TABLE)
    endpoint = table.endpoint(MAGI)
    assert (endpoint.versions, endpoint.effective_from, endpoint.effective_dates) == ((), None, ())
    for at in (None, dt.date(1970, 1, 2), dt.date(2999, 1, 1), 0, dt.datetime(2026, 12, 1)):
        quote = table.quote(MAGI, {"num_frames": 144}, at=at)
        assert (quote.total, quote.effective_from) == (Decimal("1.20"), None)
        assert quote.rules_version == "2026.12.06"
    assert endpoint.version_at(dt.date(1970, 1, 2)) is endpoint


# --- Quote: JSON and the version string ---------------------------------------------------------


def test_json_round_trip_keeps_effective_from(table: PriceTable, history_path: Path) -> None:
    quote = table.quote(VIDEO, {"frames": 144, "resolution": "480p"}, at=DEC_1)
    data = json.loads(quote.to_json())
    # (1.00 + 0.40) x 0.5 = 0.70
    assert data["total"] == "0.70"
    assert data["effective_from"] == "2026-12-01"
    assert data["table_version"] == "acme-7"
    assert data["table_sha256"] == hashlib.sha256(history_path.read_bytes()).hexdigest()
    assert list(data)[-1] == "effective_from"
    back = Quote.from_json(quote.to_json())
    assert back == quote
    assert back.effective_from == "2026-12-01"


def test_an_undated_quote_writes_the_json_it_always_did() -> None:
    quote = load_table(REPO_TABLE).quote(MAGI)
    data = quote.to_dict()
    assert "effective_from" not in data
    assert list(data) == [
        "endpoint",
        "total",
        "currency",
        "arguments",
        "line_items",
        "table_version",
        "table_sha256",
    ]
    # JSON written before price history (no effective_from key) still reads back
    assert Quote.from_dict(data) == quote
    assert Quote.from_dict(data).effective_from is None


def test_rules_version_names_table_and_version(table: PriceTable) -> None:
    quote = table.quote(VIDEO, at=DEC_1)
    assert quote.rules_version == "acme-7@2026-12-01"
    assert split_rules_version("acme-7@2026-12-01") == ("acme-7", "2026-12-01")
    assert split_rules_version("2026.11.24") == ("2026.11.24", None)
    assert split_rules_version("v@latest") == ("v@latest", None)  # not a date after the @


# --- the guard records which prices it used ------------------------------------------------------


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC).timestamp()


@pytest.fixture(params=["memory", "sqlite"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    return f"sqlite:///{tmp_path / 'spend.db'}"


@pytest.mark.parametrize(
    ("moment", "amount", "version"),
    [
        # the guard prices at its own clock: 1.20 in November, 1.40 from 1 December (UTC)
        ((2026, 11, 30, 23, 59, 59), 1_200_000, "acme-7@2026-11-01"),
        ((2026, 12, 1, 0, 0, 0), 1_400_000, "acme-7@2026-12-01"),
    ],
)
def test_the_guard_records_table_version_sha256_and_version(
    ledger_url: str,
    history_path: Path,
    table: PriceTable,
    moment: tuple[int, int, int, int, int, int],
    amount: int,
    version: str,
) -> None:
    guard = Guard(open_ledger(ledger_url), [], table=table, clock=lambda: utc(*moment))
    try:
        with guard.reserve(VIDEO, {"prompt": "a cat", "frames": 144}) as hold:
            pass
        row = guard.ledger.get_hold(hold.id)
        assert row.amount == amount
        assert row.table_version == version
        assert row.table_sha256 == hashlib.sha256(history_path.read_bytes()).hexdigest()
        assert split_rules_version(row.table_version) == ("acme-7", version.split("@")[1])
        assert row.settled_amount == amount
    finally:
        guard.close()


def test_the_guard_records_an_undated_table_as_before(ledger_url: str) -> None:
    table = load_table(REPO_TABLE)
    guard = Guard(open_ledger(ledger_url), [], table=table, clock=lambda: utc(2026, 11, 24, 12))
    try:
        arguments = {"prompt": "a cat", "image_url": "https://example.invalid/cat.png"}
        with guard.reserve(MAGI, {**arguments, "num_frames": 144}) as hold:
            pass
        row = guard.ledger.get_hold(hold.id)
        # 0.80 + 2 x 0.20 = 1.20
        assert (row.amount, row.table_version) == (1_200_000, "2026.12.06")
        assert row.table_sha256 == hashlib.sha256(REPO_TABLE.read_bytes()).hexdigest()
    finally:
        guard.close()


def test_the_guard_refuses_a_moment_without_prices(ledger_url: str, table: PriceTable) -> None:
    guard = Guard(open_ledger(ledger_url), [], table=table, clock=lambda: utc(2026, 10, 31, 12))
    try:
        with pytest.raises(NoPriceInEffect):
            guard.reserve(VIDEO, {"prompt": "a cat"})
        assert guard.ledger.holds() == []
    finally:
        guard.close()


# --- the command line ---------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_usage_error(result: tuple[int, str, str], *needles: str) -> None:
    code, out, err = result
    assert (code, out) == (2, ""), result
    assert err.startswith("falbudget: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)


def test_cli_quote_at(capsys: pytest.CaptureFixture[str], history_path: Path) -> None:
    pricing = ("--pricing", str(history_path))
    code, out, err = run(capsys, "quote", VIDEO, "frames=144", *pricing, "--at", "2026-12-01")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == f"{VIDEO} (price table acme-7, prices from 2026-12-01)"
    assert out.splitlines()[-1].split() == ["total", "1.40", "USD"]
    code, out, err = run(
        capsys, "quote", VIDEO, "frames=144", *pricing, "--at", "2026-11-30", "--format", "json"
    )
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert (data["total"], data["effective_from"]) == ("1.20", "2026-11-01")
    # a moment with an offset: 01:00 at +02:00 is still 30 November in UTC
    code, out, _ = run(
        capsys, "quote", VIDEO, *pricing, "--at", "2026-12-01T01:00+02:00", "--format", "json"
    )
    assert (code, json.loads(out)["total"]) == (0, "0.80")
    code, out, _ = run(
        capsys, "quote", VIDEO, *pricing, "--at", "2026-12-01T00:00Z", "--format", "json"
    )
    assert (code, json.loads(out)["total"]) == (0, "1.00")


def test_cli_quote_at_a_batch(
    capsys: pytest.CaptureFixture[str], history_path: Path, tmp_path: Path
) -> None:
    batch = tmp_path / "batch.jsonl"
    batch.write_text('{"frames": 96}\n{"frames": 192, "resolution": "480p"}\n')
    code, out, err = run(
        capsys,
        "quote",
        VIDEO,
        "--input",
        str(batch),
        "--pricing",
        str(history_path),
        "--at",
        "2026-12-01",
        "--format",
        "json",
    )
    assert (code, err) == (0, "")
    lines = [json.loads(line) for line in out.splitlines()]
    # 1.00, and (1.00 + 4 x 0.20) x 0.5 = 0.90: 1.90 in all
    assert [(o["total"], o["effective_from"]) for o in lines[:2]] == [
        ("1.00", "2026-12-01"),
        ("0.90", "2026-12-01"),
    ]
    assert lines[2]["batch_total"] == "1.90"


def test_cli_quote_at_errors(capsys: pytest.CaptureFixture[str], history_path: Path) -> None:
    pricing = ("--pricing", str(history_path))
    assert_usage_error(
        run(capsys, "quote", VIDEO, *pricing, "--at", "2026-10-31"),
        "no prices in effect at 2026-10-31",
        "2026-11-01",
    )
    assert_usage_error(
        run(capsys, "quote", VIDEO, *pricing, "--at", "2026-13-01"),
        "--at: DATE='2026-13-01' is not allowed",
    )
    assert_usage_error(
        run(capsys, "quote", VIDEO, *pricing, "--at", "soon"), "DATE='soon' is not allowed"
    )


def test_cli_quote_at_with_config_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "falbudget.yaml"
    config.write_text(f"ledger: sqlite:///{tmp_path / 'spend.db'}\ncaps: []\n")
    assert_usage_error(
        run(capsys, "quote", MAGI, "--config", str(config), "--at", "2026-12-01"),
        "--config checks the caps now, so it cannot be used with --at",
    )


def test_cli_quote_without_at_on_the_packaged_table_is_unchanged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "quote", MAGI, "num_frames=144", "--at", "1999-01-01")
    assert code == 0
    assert out.splitlines()[0] == f"{MAGI} (price table 2026.12.06)"
    assert out.splitlines()[-1].split() == ["total", "1.20", "USD"]


def test_cli_validate_lists_the_versions(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, history_path: Path
) -> None:
    at_day(monkeypatch, DEC_1)
    code, out, err = run(capsys, "pricing", "validate", str(history_path))
    assert (code, err) == (0, "")
    assert out.splitlines()[-5:] == [
        f"  {VIDEO}  0.50 - 1.80 USD",
        "dated versions (the ranges above are today's)",
        f"  {VIDEO}  from 2026-11-01  0.40 - 1.60 USD",
        f"  {VIDEO}  from 2026-12-01  0.50 - 1.80 USD  (now)",
        f"  {VIDEO}  from 2027-01-01  0.50 - 3.60 USD",
    ]
    code, out, _ = run(capsys, "pricing", "validate", str(history_path), "--format", "json")
    assert code == 0
    assert json.loads(out)["versions"] == [
        {
            "endpoint": VIDEO,
            "effective_from": "2026-11-01",
            "current": False,
            "price_range": {"min": "0.40", "max": "1.60"},
        },
        {
            "endpoint": VIDEO,
            "effective_from": "2026-12-01",
            "current": True,
            "price_range": {"min": "0.50", "max": "1.80"},
        },
        {
            "endpoint": VIDEO,
            "effective_from": "2027-01-01",
            "current": False,
            "price_range": {"min": "0.50", "max": "3.60"},
        },
    ]


def test_the_docs_example_table_quotes_as_documented() -> None:
    """docs/examples/price-history.yaml, as docs/pricing.md section 10 and docs/cli.md quote it."""
    docs = Path(__file__).resolve().parents[1] / "docs" / "examples" / "price-history.yaml"
    table = load_table(docs)
    video = "acme/video"
    # 0.80 + 2 x 0.20; 1.00 + 2 x 0.20; (1.00 + 2 x 0.20) x 2 at 1080p
    assert table.quote(video, {"num_frames": 144}, at=NOV_30).total == Decimal("1.20")
    assert table.quote(video, {"num_frames": 144}, at=DEC_1).total == Decimal("1.40")
    quote = table.quote(video, {"num_frames": 144, "resolution": "1080p"}, at=JAN_1)
    assert (quote.total, quote.effective_from) == (Decimal("2.80"), "2027-01-01")
    assert quote.rules_version == "acme-2026.11.24@2027-01-01"
    before = load_table(docs.with_name("price-history-before.yaml")).endpoint(video)
    assert before.effective_dates == ("2026-11-01",)


def test_endpoints_says_why_a_future_only_endpoint_has_no_range(
    monkeypatch: pytest.MonkeyPatch, history_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before the earliest version, `endpoints` and `pricing validate` say there is no price yet,
    not that an input is unbounded (every priced input here has a bounded set of values)."""
    at_day(monkeypatch, dt.date(2026, 10, 1))
    assert main(["endpoints", "--pricing", str(history_path), "--format", "json"]) == 0
    entry = json.loads(capsys.readouterr().out)["endpoints"][0]
    assert entry["price_range"] is None
    assert entry["price_range_note"].startswith("no prices in effect yet: ")
    assert main(["pricing", "validate", str(history_path)]) == 0
    out = capsys.readouterr().out
    assert (
        f"  {VIDEO}  not listed (no prices in effect yet: {VIDEO}: no prices in effect now" in out
    )
    assert "bounded" not in out
