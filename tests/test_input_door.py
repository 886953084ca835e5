"""Issue 9, part 7: input is checked once, at the door. Expectations by hand.

Configuration files refuse a key given twice and every numeric setting out of its bounds when
the guard is built; the CLI never prints a traceback (each case the issue lists is one line and
exit 2; an unexpected error is one line and exit 70, with FALBUDGET_DEBUG=1 for the traceback);
a report's cost follows its data, not its calendar span.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from fakebilling import ADMIN_KEY, FakeBilling
from falbudget import Cap, ConfigurationError, Guard, InvalidArguments
from falbudget import report as rp
from falbudget.cli import main
from falbudget.guard.config import load_config
from falbudget.guard.core import MAX_HOLD_TTL
from falbudget.ledger import Ledger, open_ledger
from falbudget.pricing.loader import default_table

MAGI = "fal-ai/magi/image-to-video"
REQ = {"prompt": "a cat", "image_url": "https://example.invalid/cat.png"}
# 2**63 - 1 micro-USD, written out by hand: 9,223,372,036,854,775,807 micro-USD
MAX_LIMIT = "9223372036854.775807"
ENV = ("FALBUDGET_CONFIG", "FALBUDGET_LEDGER", "FALBUDGET_PRICING", "FALBUDGET_DEBUG")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error(result: tuple[int, str, str], *needles: str, code: int = 2) -> str:
    """Exit ``code``, nothing on stdout, one line on stderr holding every needle, no traceback."""
    got, out, err = result
    assert got == code, (got, out, err)
    assert out == ""
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def write(path: Path, text: str | bytes) -> str:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


# --- configuration files: duplicate keys and bounds ---------------------------------------------


def test_a_key_given_twice_in_a_configuration_is_an_error(tmp_path: Path) -> None:
    """Before: the second, empty `caps:` won and the guard ran with no caps at all."""
    path = write(
        tmp_path / "c.yaml",
        'ledger: "memory://"\ncaps:\n  - {limit: "1.00"}\ncaps: []\n',
    )
    with pytest.raises(ConfigurationError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}: not valid YAML at line 4: duplicate key 'caps' (each key may appear once)"
    )
    nested = write(tmp_path / "n.yaml", 'caps:\n  - {limit: "1.00", limit: "9.00"}\n')
    with pytest.raises(ConfigurationError, match="duplicate key 'limit'"):
        load_config(nested)


@pytest.mark.parametrize(
    ("yaml_text", "needles"),
    [
        ('caps: [{limit: "1e999999"}]', ["caps.0: limit='1e999999' is not allowed: at most"]),
        ('caps: [{limit: "1e30"}]', ["caps.0: limit='1e30'", f"at most {MAX_LIMIT} USD"]),
        (
            'caps: [{limit: "9223372036854.775808"}]',
            ["limit='9223372036854.775808' is not allowed", "2**63 - 1 micro-USD"],
        ),
        (
            'caps: [{limit: "1", max_per_request: "1e999999"}]',
            ["caps.0: max_per_request='1e999999' is not allowed: at most"],
        ),
        ("hold_ttl: .inf", ["hold_ttl: Input should be a finite number (got inf)"]),
        ("hold_ttl: .nan", ["hold_ttl: Input should be a finite number (got nan)"]),
        ("hold_ttl: 6307200001", ["hold_ttl: Input should be less than or equal to 6307200000"]),
        (
            'caps: [{limit: "1", alert_at: [.nan]}]',
            ["caps.0: alert_at value nan is not allowed: a fraction of the limit above 0"],
        ),
        ('caps: [{limit: "1", alert_at: [.inf]}]', ["caps.0: alert_at value inf is not allowed"]),
    ],
)
def test_numeric_settings_are_bounded_when_the_guard_is_built(
    tmp_path: Path, yaml_text: str, needles: list[str]
) -> None:
    path = write(tmp_path / "c.yaml", f'ledger: "memory://"\n{yaml_text}\n')
    with pytest.raises(ConfigurationError) as info:
        Guard.from_config(path)  # refused here, before any reservation
    for needle in needles:
        assert needle in str(info.value)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"limit": "1e999999"}, "limit='1e999999' is not allowed: at most"),
        ({"limit": Decimal(MAX_LIMIT) + Decimal("0.000001")}, "is not allowed: at most"),
        ({"limit": "1", "max_per_request": "1e20"}, "max_per_request='1e20' is not allowed"),
        ({"limit": "1", "alert_at": [float("nan")]}, "alert_at value nan is not allowed"),
        ({"limit": "1", "alert_at": [11]}, "above 0 and at most 10"),
    ],
)
def test_cap_refuses_what_a_ledger_cannot_count(kwargs: dict[str, object], needle: str) -> None:
    limit = kwargs.pop("limit")
    with pytest.raises(ConfigurationError, match=needle.replace("*", r"\*")):
        Cap(limit, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("ttl", [float("inf"), float("nan"), 0, -1, MAX_HOLD_TTL + 1])
def test_guard_refuses_a_hold_ttl_out_of_bounds(ttl: float) -> None:
    with pytest.raises(ConfigurationError, match=r"hold_ttl=.* is not allowed: a number of"):
        Guard("memory://", hold_ttl=ttl)


def test_the_largest_limit_and_ttl_work_on_every_backend_sync_and_async(
    ledger_factory: Callable[[], Ledger],
) -> None:
    """The bounds are what the ledgers can take: a cap at exactly 2**63 - 1 micro-USD and a hold
    living MAX_HOLD_TTL seconds are admitted and settled, from sync and async code."""
    now = dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC).timestamp()
    guard = Guard(ledger_factory(), [Cap(MAX_LIMIT)], clock=lambda: now, hold_ttl=MAX_HOLD_TTL)
    with guard.reserve(MAGI, REQ) as hold:
        assert hold.expires_at == now + 6_307_200_000
    status = guard.status()[0]
    assert (status.spent, status.remaining) == (Decimal("0.80"), Decimal("9223372036853.975807"))

    async def in_async() -> None:
        async with guard.areserve(MAGI, REQ):
            pass

    asyncio.run(in_async())
    assert guard.status()[0].spent == Decimal("1.60")


# --- the CLI never prints a traceback ----------------------------------------------------------


def test_input_nested_2000_deep_or_with_a_5000_digit_integer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deep = write(tmp_path / "deep.json", "[" * 2000 + "]" * 2000)
    one_error(run(capsys, "quote", MAGI, "-i", deep), "deep.json: not readable JSON: nested too")
    big = write(tmp_path / "big.json", '{"num_frames": ' + "9" * 5000 + "}")
    one_error(
        run(capsys, "quote", MAGI, "-i", big),
        "big.json: not readable JSON: an integer of 5000 digits: at most 4000 are allowed",
    )
    one_error(
        run(capsys, "quote", MAGI, "num_frames=" + "9" * 5000),
        "quote: num_frames=999",
        "cannot be read: an integer of 5000 digits",
    )
    one_error(
        run(capsys, "quote", MAGI, "num_frames=1e400"),
        "quote: num_frames=1e400 cannot be read: the number 1e400 is too large for a float",
    )


def test_configuration_not_utf8_nested_or_with_a_nul(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    latin = write(tmp_path / "latin.yaml", b'ledger: "memory://"\nname: "caf\xe9"\n')
    one_error(
        run(capsys, "budget", "status", "--config", latin),
        # 20 + 10 bytes come before the \xe9
        "latin.yaml: the configuration is not UTF-8 text (invalid continuation byte at byte 30)",
    )
    deep = write(tmp_path / "deep.yaml", "a: " + "[" * 3000 + "]" * 3000 + "\n")
    one_error(run(capsys, "budget", "status", "--config", deep), "deep.yaml: not ")
    nul = write(tmp_path / "nul.yaml", 'ledger: "sqlite:///a\\0b.db"\n')
    one_error(
        run(capsys, "budget", "status", "--config", nul),
        # the path relative to the file's directory, the NUL shown escaped
        f"nul.yaml: ledger URL 'sqlite:///{tmp_path}/a\\x00b.db' is not allowed: it holds a NUL"
        " character",
    )
    with pytest.raises(ConfigurationError, match="holds a NUL"):
        open_ledger("postgresql://u@h/d\0b")


def test_a_csv_cell_of_128_kib(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cell = "x" * (128 * 1024 + 1)  # the csv module's limit is 131072 characters a field
    body = f"request_id,timestamp,cost_estimate_nano_usd\nr1,2026-11-02,{cell}\n"
    path = write(tmp_path / "big.csv", body)
    one_error(
        run(capsys, "reconcile", path, "--ledger", "memory://"),
        "big.csv: line 2: not readable CSV (field larger than field limit (131072))",
    )
    header = write(tmp_path / "head.csv", f"{cell},timestamp\n")
    one_error(
        run(capsys, "reconcile", header, "--ledger", "memory://"),
        "head.csv: line 1: not readable CSV",
    )


@pytest.fixture(scope="module")
def billing_server() -> Iterator[FakeBilling]:
    with FakeBilling() as server:
        yield server


def test_a_500_answer_of_1999_brackets(
    billing_server: FakeBilling,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    billing_server.reset()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("FALBUDGET_FAL_API_URL", billing_server.base_url)
    monkeypatch.setenv("FAL_KEY", ADMIN_KEY)
    billing_server.fail(500, "[" * 1999)
    argv = ["reconcile", "--from-api", "--since", "2026-11-01", "--until", "2026-11-08"]
    err = one_error(
        run(capsys, *argv, "--now", "2026-11-09", "--ledger", "memory://"),
        "fal's billing API failed (HTTP 500) ([[[[",
        "try again later",
    )
    assert len(err) < 400  # the body is cut to 200 characters
    billing_server.reset()


def ledger_with_one_request(tmp_path: Path) -> str:
    """A SQLite ledger holding one settled request (0.80, 2026-11-20 10:00 UTC) and a config
    with a month, a week and a day cap."""
    url = f"sqlite:///{tmp_path / 'one.db'}"
    config = write(
        tmp_path / "one.yaml",
        f"ledger: {url}\ncaps:\n"
        '  - {limit: "120.00", window: month}\n'
        '  - {limit: "20.00", window: week}\n'
        '  - {limit: "8.00", window: day}\n',
    )
    now = dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC).timestamp()
    guard = Guard.from_config(config, clock=lambda: now)
    with guard.reserve(MAGI, REQ, project="a"):
        pass
    guard.close()
    return config


@pytest.mark.parametrize(
    "extra",
    [
        ["--until", "9999-12-31"],
        ["--since", "0001-01-01"],
        ["--since", "0001-01-01", "--until", "9999-12-31", "--tz", "Europe/Paris"],
        ["--since", "0001-01-01T00:00+14:00", "--format", "json"],
        ["--until", "0001-01-05"],
        ["--until", "9999-12-31T23:59:59-12:00", "--tz", "Pacific/Kiritimati", "--chart"],
    ],
)
def test_report_at_the_ends_of_the_calendar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    config = ledger_with_one_request(tmp_path)
    code, out, err = run(capsys, "report", "--config", config, "--now", "2026-11-21", *extra)
    assert (code, err) == (0, "")
    assert out


def test_report_now_beyond_the_calendar_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ledger_with_one_request(tmp_path)
    one_error(
        run(capsys, "report", "--config", config, "--now", "9999-12-31T23:00"),
        "now=9999-12-31 23:00 is not allowed: a moment from 0001-01-03 00:00 to 9999-12-29 00:00",
    )
    one_error(
        run(capsys, "report", "--config", config, "--burn-days", "9" * 30),
        "--burn-days=999",
        "is not allowed: from 1 to 3650",
    )


def test_a_report_since_year_one_costs_what_its_data_costs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: one day per calendar day (740,000 from year 1) and, for each, every month of the
    window: over 10 minutes on a ledger holding one request. Now the daily series of a window
    longer than 366 days lists the days that hold requests, so the work is counted in holds."""
    config = ledger_with_one_request(tmp_path)
    calls = 0
    midnight = rp._midnight

    def counted(day: dt.date, tz: object) -> float:
        nonlocal calls
        calls += 1
        return midnight(day, tz)  # type: ignore[arg-type]

    monkeypatch.setattr(rp, "_midnight", counted)
    code, out, _ = run(
        capsys,
        "report",
        *("--config", config, "--now", "2026-11-21", "--since", "0001-01-01"),
        *("--format", "json"),
    )
    assert code == 0
    data = json.loads(out)
    assert data["daily"] == [{"day": "2026-11-20", "spent": "0.80", "held": "0.00"}]
    assert data["totals"]["spent"] == "0.80"
    assert calls < 100, calls  # a few for the window, the one day and the caps


def test_the_daily_series_lists_every_day_up_to_366_then_only_days_with_data(
    tmp_path: Path,
) -> None:
    config = ledger_with_one_request(tmp_path)
    guard = Guard.from_config(config)
    holds = guard.ledger.holds()
    now = dt.datetime(2026, 11, 21, tzinfo=dt.UTC).timestamp()
    until = dt.datetime(2026, 11, 21, tzinfo=dt.UTC).timestamp()
    day = 86400
    full = rp.build_report(holds, guard.caps, now=now, since=until - 366 * day, until=until)
    assert len(full.days) == 366  # 2025-11-20 .. 2026-11-20, zeros included
    assert (full.days[0].day, full.days[-1].day) == (dt.date(2025, 11, 20), dt.date(2026, 11, 20))
    sparse = rp.build_report(holds, guard.caps, now=now, since=until - 367 * day, until=until)
    assert [(d.day, d.spent) for d in sparse.days] == [(dt.date(2026, 11, 20), Decimal("0.80"))]
    assert sparse.days[0].end == until  # the day's own end, not the next listed day
    # the month cap's share by each listed day's end: 0.80 of 120.00 and of the week's 20.00
    assert [c.cumulative for c in sparse.chart_caps if c.cumulative is not None] == [
        (Decimal("0.80"),),
        (Decimal("0.80"),),
    ]
    guard.close()


def test_a_forecast_past_the_year_9999_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """9,000,000,000,000 USD at 0.80 a week (0.114286 a day) is reached some 2e11 years on:
    before, the date's OSError came out as 'Value too large for defined data type'."""
    config = ledger_with_one_request(tmp_path)
    url = next(
        line.split(": ", 1)[1] for line in Path(config).read_text().splitlines() if "ledger" in line
    )
    huge = write(tmp_path / "huge.yaml", f'ledger: {url}\ncaps:\n  - {{limit: "9000000000000"}}\n')
    code, out, err = run(
        capsys, "report", "--config", huge, "--now", "2026-11-21", "--format", "json"
    )
    assert (code, err) == (0, "")
    cap = json.loads(out)["caps"][0]
    assert (cap["outcome"], cap["reached_at"], cap["forecast"]) == (
        "will_reach",
        None,
        "reached after the year 9999 at this rate",
    )


def test_chart_on_a_terminal_without_block_characters(tmp_path: Path) -> None:
    """PYTHONIOENCODING=cp1252 has no █, ░ or │: the chart draws with # . | instead."""
    config = ledger_with_one_request(tmp_path)
    env = {**os.environ, "PYTHONIOENCODING": "cp1252"}
    argv = ["report", "--config", config, "--chart", "--now", "2026-11-21", "--since", "2026-11-19"]
    result = subprocess.run(
        [sys.executable, "-m", "falbudget", *argv],
        capture_output=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    out = result.stdout.decode("cp1252")
    assert "daily spend in USD, days in UTC: # spent  . held  | global day cap 8.00" in out
    assert "2026-11-20   0.80  0.00   0.7%  4.0%  ####" in out


def test_an_internal_error_is_one_line_and_exit_70(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(args: object) -> object:
        raise RuntimeError("something\nimpossible")

    from falbudget.cli import endpoints_cmd

    # the parser, built at each run, binds func= to the module's function then
    monkeypatch.setattr(endpoints_cmd, "run_endpoints", broken)
    result = run(capsys, "endpoints")
    one_error(
        result,
        "falbudget: internal error (a bug in falbudget): RuntimeError: something impossible;"
        " set FALBUDGET_DEBUG=1 to see the traceback, and report it",
        code=70,
    )
    monkeypatch.setenv("FALBUDGET_DEBUG", "1")
    code, out, err = run(capsys, "endpoints")
    assert (code, out) == (70, "")
    assert err.startswith("Traceback (most recent call last):")
    assert err.endswith(
        "falbudget: internal error (a bug in falbudget): RuntimeError: something impossible;"
        " report it with the traceback above\n"
    )


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "2 bad input or usage; 70 an internal error, a bug (FALBUDGET_DEBUG=1 shows" in out


def test_quote_at_a_moment_past_the_calendar_is_falbudgets_error() -> None:
    table = default_table()
    for moment in (10**400, -(10**400), 1e308):
        with pytest.raises(InvalidArguments) as info:
            table.quote(MAGI, {}, at=moment)
        assert info.value.parameter == "at"
        assert "POSIX seconds within the years 1 to 9999 (-62135596800 to 253402300799)" in str(
            info.value
        )
    # the last second of 9999-12-31 is still a moment
    assert table.quote(MAGI, {}, at=253402300799).total == Decimal("0.80")
