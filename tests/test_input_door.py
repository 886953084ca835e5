"""Issue 9, part 7: input is checked once, at the door. Expectations by hand.

Configuration files refuse a key given twice and every numeric setting out of its bounds when
the guard is built; the CLI never prints a traceback (each case the issue lists is one line and
exit 2; an unexpected error is one line and exit 70, with FALBUDGET_DEBUG=1 for the traceback);
a report's cost follows its data, not its calendar span.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from falbudget import Cap, ConfigurationError, Guard
from falbudget.cli import main
from falbudget.guard.config import load_config
from falbudget.guard.core import MAX_HOLD_TTL
from falbudget.ledger import Ledger
from ledger_backends import BACKENDS, backend_params, make_ledger_factory

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


@pytest.fixture(params=backend_params(BACKENDS))
def ledger_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], Ledger]]:
    make = make_ledger_factory(request.param, tmp_path)
    opened: list[Ledger] = []

    def factory() -> Ledger:
        ledger = make()
        opened.append(ledger)
        return ledger

    yield factory
    for ledger in opened:
        ledger.close()


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
