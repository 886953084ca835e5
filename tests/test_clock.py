"""``FALBUDGET_NOW``: one way to fix "now" for every command of the CLI, and only for the CLI.

Prices from docs/examples/price-history.yaml (docs/pricing.md section 10): acme/video costs 0.80
a video from 2026-11-01, 1.00 from 2026-12-01, and gains 1080p (x2) on 2027-01-01.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from falbudget import Cap, Guard, clock
from falbudget.cli import main
from test_cli import assert_usage_error, run
from test_guard import Clock, utc

ROOT = Path(__file__).resolve().parent.parent
HISTORY = str(ROOT / "docs" / "examples" / "price-history.yaml")
MAGI = "fal-ai/magi/image-to-video"
REQ = {"prompt": "a cat", "image_url": "https://example.invalid/cat.png"}


def test_fixed_sets_now_and_restores_it_nested() -> None:
    with clock.fixed(1_000.0):
        assert clock.now() == 1_000.0
        with clock.fixed(2_000.0):
            assert clock.now() == 2_000.0
        assert clock.now() == 1_000.0
        with clock.fixed(None):
            assert clock.now() > 1_000_000_000  # the wall clock again, whatever the date
    assert clock.now() > 1_000_000_000


def test_the_library_ignores_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALBUDGET_NOW", "2000-01-01")
    assert abs(clock.now() - time.time()) < 3600  # not 2000-01-01: only the CLI reads it
    guard = Guard("memory://", [Cap("5.00")])
    assert abs(guard._now() - time.time()) < 3600


@pytest.mark.parametrize(
    ("now", "current"),
    [
        ("2026-11-24", "2026-11-01"),
        ("2026-11-30T23:59:59Z", "2026-11-01"),
        ("2026-12-01T00:30+01:00", "2026-11-01"),  # 2026-11-30T23:30 in UTC
        ("2026-12-01", "2026-12-01"),
        ("2031-06-01", "2027-01-01"),
    ],
)
def test_pricing_validate_marks_the_version_in_effect_at_the_fixed_now(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, now: str, current: str
) -> None:
    monkeypatch.setenv("FALBUDGET_NOW", now)
    code, out, _ = run(capsys, "pricing", "validate", HISTORY, "--format", "json")
    assert code == 0
    flags = {v["effective_from"]: v["current"] for v in json.loads(out)["versions"]}
    assert flags == {d: d == current for d in ("2026-11-01", "2026-12-01", "2027-01-01")}


@pytest.mark.parametrize(("now", "total"), [("2026-11-24", "0.80"), ("2026-12-02", "1.00")])
def test_quote_prices_at_the_fixed_now_and_at_wins(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, now: str, total: str
) -> None:
    monkeypatch.setenv("FALBUDGET_NOW", now)
    argv = ["quote", "acme/video", "--pricing", HISTORY, "--format", "json"]
    code, out, _ = run(capsys, *argv)
    assert (code, json.loads(out)["total"]) == (0, total)
    code, out, _ = run(capsys, *argv, "--at", "2026-11-05")
    assert (code, json.loads(out)["total"]) == (0, "0.80")


def test_a_version_not_yet_in_effect_at_the_fixed_now(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALBUDGET_NOW", "2027-01-01")
    code, out, _ = run(
        capsys, "quote", "acme/video", "resolution=1080p", "--pricing", HISTORY, "--format", "json"
    )
    assert (code, json.loads(out)["total"]) == (0, "2.00")  # 1.00 x 2
    monkeypatch.setenv("FALBUDGET_NOW", "2026-12-31T23:59Z")
    assert_usage_error(
        run(capsys, "quote", "acme/video", "resolution=1080p", "--pricing", HISTORY), "1080p"
    )


def _ledger(tmp_path: Path) -> tuple[str, str]:
    """A SQLite ledger with one settled 0.80 request on 2026-11-20 at 09:00 UTC, and a config
    with a 2.00 day cap and that ledger."""
    url = f"sqlite:///{tmp_path / 'spend.db'}"
    guard = Guard(url, [Cap("2.00", window="day")], clock=Clock(utc(2026, 11, 20, 9)))
    with guard.reserve(MAGI, REQ):
        pass
    config = tmp_path / "falbudget.yaml"
    config.write_text(f'ledger: "{url}"\ncaps:\n  - {{limit: "2.00", window: day}}\n')
    return url, str(config)


@pytest.mark.parametrize(
    ("now", "spent", "remaining"),
    [
        ("2026-11-20T23:59:59Z", "0.80", "1.20"),  # the day of the request
        ("2026-11-21", "0.00", "2.00"),  # the next day: a new window
    ],
)
def test_budget_status_reads_the_window_of_the_fixed_now(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    now: str,
    spent: str,
    remaining: str,
) -> None:
    _, config = _ledger(tmp_path)
    monkeypatch.setenv("FALBUDGET_NOW", now)
    code, out, _ = run(capsys, "budget", "status", "--config", config, "--format", "json")
    assert code == 0
    (cap,) = json.loads(out)["caps"]
    assert (cap["spent"], cap["remaining"]) == (spent, remaining)


def test_report_ends_at_the_fixed_now_unless_now_is_given(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, config = _ledger(tmp_path)
    monkeypatch.setenv("FALBUDGET_NOW", "2026-11-22T06:00Z")
    code, out, _ = run(capsys, "report", "--config", config, "--format", "json")
    assert code == 0
    assert json.loads(out)["now"].startswith("2026-11-22T06:00:00")
    code, out, _ = run(
        capsys, "report", "--config", config, "--format", "json", "--now", "2026-11-21T00:00Z"
    )
    assert json.loads(out)["now"].startswith("2026-11-21T00:00:00")


@pytest.mark.parametrize("value", ["tomorrow", "2026-13-01", "1e9"])
def test_a_bad_value_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FALBUDGET_NOW", value)
    assert_usage_error(run(capsys, "endpoints"), f"FALBUDGET_NOW={value!r} is not allowed")


def test_the_cli_leaves_the_clock_as_it_found_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALBUDGET_NOW", "2026-11-24")
    assert main(["endpoints", "--format", "json"]) == 0
    assert clock.now() != utc(2026, 11, 24)  # the wall clock again, not the fixed moment
