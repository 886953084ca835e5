"""Issue 9, part 8: messages a person reads. Expectations written by hand.

KEY=VALUE says when a value is missing and how to quote one that reads as JSON of another
type; a batch names its first bad line and counts the others, whatever kind of error each is;
values in messages are JSON as the user wrote them; a quote, a cap and a hold read as
sentences.
"""

from __future__ import annotations

import datetime as dt
import io
import sys
from pathlib import Path

import pytest

from falbudget import BudgetExceeded, Cap, Guard, InvalidArguments
from falbudget.cli import main
from falbudget.pricing.loader import default_table

MAGI = "fal-ai/magi/image-to-video"
REQ = {"prompt": "a cat", "image_url": "https://example.invalid/cat.png"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FALBUDGET_CONFIG", "FALBUDGET_LEDGER", "FALBUDGET_PRICING"):
        monkeypatch.delenv(name, raising=False)


def error_line(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI; it must exit 2 with nothing on stdout: the one stderr line."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert (code, out) == (2, ""), err
    assert err.count("\n") == 1
    return err.removesuffix("\n")


# --- KEY=VALUE ---------------------------------------------------------------------------------


def test_an_empty_value_says_the_value_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    assert error_line(capsys, "quote", MAGI, "num_frames=") == (
        "falbudget: error: quote: num_frames= has no value: the value is missing after '='"
        """ (an empty string is num_frames='""')"""
    )


@pytest.mark.parametrize(
    ("value", "kind"),
    [("2024", "a number"), ("true", "a boolean"), ("null", "null"), ("[1]", "an array")],
)
def test_a_value_read_as_json_of_the_wrong_type_says_how_to_quote_it(
    capsys: pytest.CaptureFixture[str], value: str, kind: str
) -> None:
    line = error_line(capsys, "quote", MAGI, f"prompt={value}", "--strict", "image_url=x")
    assert line == (
        f"falbudget: error: {MAGI}: prompt={value} is not allowed: a string ({value} is read as"
        f' JSON: {kind}; to give the string "{value}", quote it: prompt=\'"{value}"\')'
    )


def test_no_quoting_hint_when_the_text_would_not_pass_either(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # "720" is not one of "480p", "720p" either: the error stays as it was
    assert error_line(capsys, "quote", MAGI, "resolution=720") == (
        f'falbudget: error: {MAGI}: resolution=720 is not allowed: one of "480p", "720p"'
    )
    # a number out of range is not a quoting problem
    assert error_line(capsys, "quote", MAGI, "num_frames=300") == (
        f"falbudget: error: {MAGI}: num_frames=300 is not allowed: an integer from 96 to 192"
    )


def test_spaces_around_keys_are_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quote", MAGI, " num_frames =144", "--format", "json"]) == 0
    assert '"total": "1.20"' in capsys.readouterr().out  # 0.80 + 2 extra seconds x 0.20


@pytest.mark.parametrize(
    ("token", "shown"),
    [
        ("seed=true", "seed=true is not allowed: an integer or null (a boolean is not a number)"),
        ("enable_safety_checker=null", "enable_safety_checker=null is not allowed: true or false"),
        ('resolution="1080p"', 'resolution="1080p" is not allowed: one of "480p", "720p"'),
        ('aspect_ratio={"a":null}', 'aspect_ratio={"a": null} is not allowed: one of'),
    ],
)
def test_values_in_messages_are_written_as_json(
    capsys: pytest.CaptureFixture[str], token: str, shown: str
) -> None:
    assert f"{MAGI}: {shown}" in error_line(capsys, "quote", MAGI, token)


# --- --input batches -----------------------------------------------------------------------


def test_a_batch_names_its_first_bad_line_and_counts_the_others(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Before: the bad JSON of line 4 was reported alone, the bad value of line 2 forgotten."""
    batch = tmp_path / "b.jsonl"
    batch.write_text('{}\n{"num_frames": 300}\n\n{bad\n{"resolution": "1080p"}\n{}\n')
    assert error_line(capsys, "quote", MAGI, "-i", str(batch)) == (
        f"falbudget: error: {batch} line 2: {MAGI}: num_frames=300 is not allowed: an integer"
        " from 96 to 192 (and 2 more lines with errors)"
    )
    first_is_json = tmp_path / "j.jsonl"
    first_is_json.write_text('{}\n{bad\n{"num_frames": 300}\n')
    assert error_line(capsys, "quote", MAGI, "-i", str(first_is_json)) == (
        f"falbudget: error: {first_is_json} line 2: not valid JSON (a batch is one object per"
        " line): Expecting property name enclosed in double quotes at column 2"
        " (and 1 more line with errors)"
    )


def test_a_utf8_byte_order_mark_is_accepted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"num_frames": 144}\n{"num_frames": 97}\n')
    assert main(["quote", MAGI, "-i", str(path), "--format", "json"]) == 0
    out = capsys.readouterr().out
    # 1.20 + 1.00 (97 frames: one extra second, rounded up)
    assert out.splitlines()[-1] == '{"batch_total": "2.20", "currency": "USD", "count": 2}'
    monkeypatch.setattr(sys, "stdin", io.StringIO('\ufeff{"num_frames": 144}'))
    assert main(["quote", MAGI, "-i", "-", "--format", "json"]) == 0
    assert '"total": "1.20"' in capsys.readouterr().out


# --- sentences ---------------------------------------------------------------------------------


def test_str_of_a_quote_is_a_sentence() -> None:
    quote = default_table().quote(
        MAGI, {"num_frames": 144, "resolution": "480p", "num_inference_steps": 32}
    )
    assert str(quote) == (
        f"{MAGI} costs 1.20 USD with num_frames=144 resolution=480p num_inference_steps=32"
        f" (price table {quote.table_version})"
    )
    dated = default_table("docs/examples/price-history.yaml").quote(
        "acme/video", {"num_frames": 144}, at=dt.date(2026, 12, 1)
    )
    assert str(dated) == (
        "acme/video costs 1.40 USD with num_frames=144 resolution=720p"
        " (price table acme-2026.11.24, prices from 2026-12-01)"
    )


@pytest.mark.parametrize(
    ("cap", "text"),
    [
        (Cap("2.00", scope="project"), "the cap of 2.00 USD in all for each project"),
        (Cap("10"), "the cap of 10.00 USD in all for all requests"),
        (
            Cap("500.00", window="month", tz="Europe/Paris"),
            "the cap of 500.00 USD a month (Europe/Paris) for all requests",
        ),
        (
            Cap("50", scope="project:alpha", window="day", max_per_request="2"),
            "the cap of 50.00 USD a day for project alpha, at most 2.00 USD a request",
        ),
        (
            Cap("5", window="week", name="team"),
            'the cap "team" of 5.00 USD a week for all requests',
        ),
    ],
)
def test_str_of_a_cap_is_a_sentence(cap: Cap, text: str) -> None:
    assert str(cap) == text
    assert repr(cap).startswith("Cap(limit=Decimal(")  # repr keeps every field


def test_str_of_the_cap_that_refused_reads_in_a_message() -> None:
    """docs/postgres.md writes f"refused by {exc.cap}: {exc.remaining} left"."""
    guard = Guard("memory://", [Cap("1.00", scope="project", window="day")], clock=lambda: 1.8e9)
    with pytest.raises(BudgetExceeded) as info:
        guard.reserve(MAGI, {**REQ, "num_frames": 144}, project="alpha").acquire()  # 1.20
    exc = info.value
    assert f"refused by {exc.cap}: {exc.remaining} left" == (
        "refused by the cap of 1.00 USD a day for each project: 1.00 left"
    )


def test_repr_of_a_hold_is_a_sentence() -> None:
    guard = Guard("memory://", [Cap("5")], clock=lambda: 1.8e9)
    hold = guard.reserve(MAGI, {**REQ, "num_frames": 144}).acquire()
    assert repr(hold) == f"<Hold {hold.id}: 1.20 USD for {MAGI}, held, not yet sent>"
    hold.mark_submitted()
    assert repr(hold) == (
        f"<Hold {hold.id}: 1.20 USD for {MAGI}, sent to fal, its request id not known yet>"
    )
    hold.mark_submitted("req-7")
    assert repr(hold) == f"<Hold {hold.id}: 1.20 USD for {MAGI}, submitted to fal as req-7>"
    hold.settle("1.10")
    assert repr(hold) == f"<Hold {hold.id}: 1.20 USD for {MAGI}, settled at 1.10 USD>"
    other = guard.reserve(MAGI, REQ).acquire()
    other.release()
    assert repr(other) == f"<Hold {other.id}: 0.80 USD for {MAGI}, released, nothing spent>"


def test_invalid_arguments_keeps_the_value_as_given() -> None:
    with pytest.raises(InvalidArguments) as info:
        default_table().quote(MAGI, {"seed": True})
    assert info.value.value is True
    assert "seed=true is not allowed" in str(info.value)
