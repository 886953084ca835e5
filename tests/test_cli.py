"""The command line, through ``main(argv)`` and once through the installed ``falbudget`` script.

Every expected total is worked out by hand beside the test (docs/pricing.md):

    total = (0.80 + 0.20 x ceil((num_frames - 96) / 24)) x resolution x max(1, steps / 16)

with resolution 0.5 for 480p and 1 for 720p. Errors must be exit 2 with exactly one line on stderr
(``falbudget: error: ...``), nothing on stdout and never a traceback.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import falbudget
from falbudget.cli import main, quote_cmd

MAGI = "fal-ai/magi/image-to-video"
POPULAR = [  # the popular endpoints of the packaged table, in its order (docs/catalog.md)
    "fal-ai/flux-1/dev",
    "fal-ai/flux-pro/kontext",
    "fal-ai/kling-video/v1/standard/image-to-video",
    "fal-ai/kling-video/v2.1/standard/image-to-video",
    "fal-ai/kling-video/v2.5-turbo/standard/image-to-video",
    "fal-ai/kling-video/v2.5-turbo/pro/image-to-video",
    "fal-ai/minimax/hailuo-2.3/standard/text-to-video",
    "fal-ai/minimax/hailuo-2.3/pro/text-to-video",
    "fal-ai/stable-audio-25/text-to-audio",
    "fal-ai/kling-video/v2/master/text-to-video",
    "fal-ai/kling-video/v2.1/master/text-to-video",
    "fal-ai/kling-video/v2.1/master/image-to-video",
    "fal-ai/kling-video/v2.1/pro/image-to-video",
    "fal-ai/veo3",
    "fal-ai/recraft/v4.1/text-to-image",
    "fal-ai/minimax/hailuo-2.3/standard/image-to-video",
    "fal-ai/minimax/hailuo-2.3-fast/standard/image-to-video",
    "fal-ai/minimax/hailuo-2.3/pro/image-to-video",
    "fal-ai/minimax/hailuo-2.3-fast/pro/image-to-video",
    "fal-ai/minimax-music/v2",
    "fal-ai/minimax-music/v1.5",
    "fal-ai/minimax/speech-02-turbo",
    "fal-ai/minimax/speech-2.8-hd",
    "resemble-ai/chatterboxhd/text-to-speech",
]
PACKAGED = Path(falbudget.__file__).parent / "data" / "pricing.yaml"
PACKAGED_SHA256 = hashlib.sha256(PACKAGED.read_bytes()).hexdigest()

# A made-up table: a sub-cent base price, a per-unit rule and a lookup.
#   total = (0.0025 + 0.001 x (megapixels - 1)) x (1 for scale 2, 3 for scale 4)
ACME_TABLE = """\
schema_version: 1
table_version: "acme-1"
effective_date: 2026-01-01
currency: USD
endpoints:
  acme/upscale:
    title: Acme upscaler
    source_url: https://example.com/acme/upscale
    price_read_on: 2026-01-02
    inputs:
      image_url: {type: string, required: true}
      scale: {type: integer, enum: [2, 4], default: 2}
      megapixels: {type: integer, minimum: 1, maximum: 4, default: 1}
    rules:
      - {name: base, kind: base, amount: "0.0025"}
      - name: extra megapixels
        kind: per_unit
        input: megapixels
        above: 1
        unit: 1
        amount: "0.001"
        unit_name: megapixel
      - {name: scale, kind: lookup, input: scale, factors: {"2": "1", "4": "3"}}
"""

# A priced input with no upper bound: the price range cannot be listed.
OPEN_TABLE = """\
schema_version: 1
table_version: "open-1"
effective_date: 2026-01-01
currency: USD
endpoints:
  acme/tts:
    source_url: https://example.com/acme/tts
    price_read_on: 2026-01-01
    inputs:
      characters: {type: integer, minimum: 1, default: 1000}
    rules:
      - {name: base, kind: base, amount: "0.01"}
      - {name: per 1000, kind: per_unit, input: characters, above: 1000, unit: 1000,
         amount: "0.01", unit_name: thousand}
"""


@pytest.fixture(autouse=True)
def _no_env_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FALBUDGET_PRICING", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_usage_error(result: tuple[int, str, str], *needles: str) -> str:
    """Exit 2, nothing on stdout, exactly one line on stderr naming the problem."""
    code, out, err = result
    assert code == 2, (code, out, err)
    assert out == ""
    assert err.startswith("falbudget: error: ")
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def quote_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = run(capsys, "quote", *argv, "--format", "json")
    assert (code, err) == (0, ""), err
    assert out.endswith("\n") and out.count("\n") == 1  # one object on one line, nothing else
    data = json.loads(out)
    assert isinstance(data, dict)
    return data


def rows(table: str) -> list[list[str]]:
    """A tabulate table as whitespace-split rows, without the header rule."""
    return [line.split() for line in table.splitlines() if not set(line) <= {"-", " "}]


@pytest.fixture()
def acme(tmp_path: Path) -> Path:
    path = tmp_path / "acme.yaml"
    path.write_text(ACME_TABLE)
    return path


# --- quote: totals -------------------------------------------------------------------------------


def test_quote_table_shows_each_rule_and_the_total(capsys: pytest.CaptureFixture[str]) -> None:
    # (0.80 + 0.20 x 2) x 0.5 x (32 / 16) = 1.20
    code, out, err = run(
        capsys, "quote", MAGI, "num_frames=144", "resolution=480p", "num_inference_steps=32"
    )
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"{MAGI} (price table 2026.12.06)"
    assert rows("\n".join(lines[1:])) == [
        ["rule", "input", "value", "effect", "subtotal"],
        ["base", "0.80", "0.80"],
        ["extra", "seconds", "num_frames", "144", "+0.40", "1.20"],
        ["resolution", "resolution", "480p", "x0.5", "0.60"],
        ["steps", "num_inference_steps", "32", "x2", "1.20"],
        ["total", "1.20", "USD"],
    ]


def test_quote_json_with_defaults_is_exactly_the_quote(capsys: pytest.CaptureFixture[str]) -> None:
    # defaults: 96 frames, 720p, 16 steps: 0.80 x 1 x 1 = 0.80
    assert quote_json(capsys, MAGI) == {
        "endpoint": MAGI,
        "total": "0.80",
        "currency": "USD",
        "arguments": {
            "num_frames": 96,
            "resolution": "720p",
            "num_inference_steps": 16,
            "enable_safety_checker": True,
            "aspect_ratio": "auto",
        },
        "line_items": [
            {
                "rule": "base",
                "kind": "base",
                "input": None,
                "value": None,
                "detail": "one four-second video (96 frames)",
                "amount": "0.80",
                "factor": None,
            },
            {
                "rule": "extra seconds",
                "kind": "per_unit",
                "input": "num_frames",
                "value": 96,
                "detail": "0 extra seconds",
                "amount": "0.00",
                "factor": None,
            },
            {
                "rule": "resolution",
                "kind": "lookup",
                "input": "resolution",
                "value": "720p",
                "detail": "720p",
                "amount": None,
                "factor": "1",
            },
            {
                "rule": "steps",
                "kind": "proportional",
                "input": "num_inference_steps",
                "value": 16,
                "detail": "16 steps",
                "amount": None,
                "factor": "1",
            },
        ],
        "table_version": "2026.12.06",
        "table_sha256": PACKAGED_SHA256,
    }


@pytest.mark.parametrize(
    ("pairs", "total"),
    [
        ((), "0.80"),  # 0.80
        (("resolution=480p",), "0.40"),  # 0.80 x 0.5
        (("num_frames=97",), "1.00"),  # 0.80 + 0.20 x ceil(1/24) = 1.00
        (("num_frames=120",), "1.00"),  # 0.80 + 0.20 x 1
        (("num_frames=121",), "1.20"),  # 0.80 + 0.20 x ceil(25/24) = 0.80 + 0.40
        (("num_frames=144", "resolution=480p", "num_inference_steps=32"), "1.20"),
        (("num_inference_steps=4",), "0.80"),  # no discount below 16 steps
        (("num_inference_steps=8",), "0.80"),
        (("num_inference_steps=64",), "3.20"),  # 0.80 x 4
        (("num_frames=192", "resolution=720p", "num_inference_steps=64"), "6.40"),  # 1.60 x 4
    ],
)
def test_quote_totals(
    capsys: pytest.CaptureFixture[str], pairs: tuple[str, ...], total: str
) -> None:
    assert quote_json(capsys, MAGI, *pairs)["total"] == total


# --- quote: KEY=VALUE ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("144", 144),
        ("480p", "480p"),
        ("false", False),
        ("true", True),
        ("null", None),
        ('"720"', "720"),
        ("720", 720),
        ("120.0", 120.0),
        ("[1, 2]", [1, 2]),
        ('{"a": 1}', {"a": 1}),
        ("16:9", "16:9"),
        ("hello world", "hello world"),
        ("", ""),
        ("NaN", "NaN"),  # not JSON, so a string
        ("Infinity", "Infinity"),
        ("a=b", "a=b"),
    ],
)
def test_value_is_json_when_it_parses_else_a_string(text: str, value: Any) -> None:
    assert quote_cmd.parse_value(text) == value
    assert type(quote_cmd.parse_value(text)) is type(value)


def test_values_reach_the_quote_with_their_json_types(capsys: pytest.CaptureFixture[str]) -> None:
    data = quote_json(
        capsys,
        MAGI,
        "enable_safety_checker=false",
        "aspect_ratio=16:9",
        "seed=42",
        "prompt=a cat, walking",
        "image_url=https://example.com/a.png?x=1",
    )
    assert data["total"] == "0.80"  # none of these inputs is priced
    assert data["arguments"] == {
        "enable_safety_checker": False,
        "aspect_ratio": "16:9",
        "seed": 42,
        "prompt": "a cat, walking",
        "image_url": "https://example.com/a.png?x=1",
        "num_frames": 96,
        "resolution": "720p",
        "num_inference_steps": 16,
    }


def test_seed_null_is_allowed(capsys: pytest.CaptureFixture[str]) -> None:
    assert quote_json(capsys, MAGI, "seed=null")["arguments"]["seed"] is None


def test_a_quoted_json_string_is_a_string(capsys: pytest.CaptureFixture[str]) -> None:
    assert quote_json(capsys, MAGI, 'resolution="480p"')["total"] == "0.40"


def test_resolution_720_is_an_integer_and_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(run(capsys, "quote", MAGI, "resolution=720"), "resolution=720", "480p")


def test_float_for_an_integer_input_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(run(capsys, "quote", MAGI, "num_frames=120.0"), "num_frames=120.0")


def test_out_of_range_value_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(run(capsys, "quote", MAGI, "num_frames=300"), "num_frames=300", "96 to 192")


def test_unknown_parameter_suggests_the_close_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(run(capsys, "quote", MAGI, "num_frame=144"), "num_frame", "num_frames")


def test_token_without_equals_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(
        run(capsys, "quote", MAGI, "num_frames=144", "resolution"), "KEY=VALUE", "'resolution'"
    )


def test_key_given_twice_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(
        run(capsys, "quote", MAGI, "num_frames=144", "num_frames=120"), "num_frames", "twice"
    )


def test_empty_key_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(run(capsys, "quote", MAGI, "=144"), "'=144'")


def test_options_may_come_between_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "quote", MAGI, "num_frames=144", "--format", "json", "resolution=480p"
    )
    assert (code, err) == (0, "")
    assert json.loads(out)["total"] == "0.60"  # (0.80 + 0.40) x 0.5


# --- quote: usage errors ------------------------------------------------------------------------


def test_missing_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(run(capsys, "quote"), "missing ENDPOINT")


def test_missing_endpoint_before_a_pair(capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(run(capsys, "quote", "num_frames=144"), "missing ENDPOINT", "num_frames=144")


def test_unknown_endpoint_lists_close_matches(capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(
        run(capsys, "quote", "fal-ai/magi/image-to-vid"),
        "unknown endpoint 'fal-ai/magi/image-to-vid'",
        f"did you mean '{MAGI}'",
    )


def test_bad_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(run(capsys, "quote", MAGI, "--format", "xml"), "--format", "'xml'")


@pytest.mark.parametrize("amount", ["abc", "-1", "nan", "NaN", "inf", "-0.01", ""])
def test_bad_fail_above_amount(capsys: pytest.CaptureFixture[str], amount: str) -> None:
    assert_usage_error(run(capsys, "quote", MAGI, f"--fail-above={amount}"), "--fail-above")


def test_unknown_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(run(capsys, "quote", MAGI, "--fial-above", "1"), "--fial-above")


def test_options_are_never_abbreviated(capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(run(capsys, "quote", MAGI, "--fail", "1"), "--fail")


def test_strict_requires_prompt_and_image_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(run(capsys, "quote", MAGI, "--strict"), "required")
    data = quote_json(capsys, MAGI, "--strict", "prompt=a cat", "image_url=https://x/y.png")
    assert data["total"] == "0.80"


# --- quote: --fail-above ------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["1.20", "1.2", "$1.20", "1.200000", "5"])
def test_fail_above_passes_at_or_below(capsys: pytest.CaptureFixture[str], limit: str) -> None:
    # (0.80 + 0.40) x 0.5 x 2 = 1.20: equal passes
    args = ("num_frames=144", "resolution=480p", "num_inference_steps=32")
    code, out, err = run(capsys, "quote", MAGI, *args, "--fail-above", limit)
    assert (code, err) == (0, "")
    assert rows(out)[-1] == ["total", "1.20", "USD"]


def test_fail_above_exits_1_when_strictly_above(capsys: pytest.CaptureFixture[str]) -> None:
    args = ("num_frames=144", "resolution=480p", "num_inference_steps=32")
    code, out, err = run(capsys, "quote", MAGI, *args, "--fail-above", "1.19", "--format", "json")
    assert code == 1
    assert json.loads(out)["total"] == "1.20"  # the quote is still printed, and only it
    assert err == "falbudget: total 1.20 USD is above --fail-above 1.19\n"


def test_fail_above_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "quote", MAGI, "--fail-above", "0")
    assert code == 1
    assert err == "falbudget: total 0.80 USD is above --fail-above 0.00\n"


# --- quote: --input -----------------------------------------------------------------------------

BATCH = (
    '{"num_frames": 144, "resolution": "480p", "num_inference_steps": 32}\n'  # line 1: 1.20
    "\n"  # line 2: blank, skipped
    "{}\n"  # line 3: defaults, 0.80
    '{"endpoint": "fal-ai/magi/image-to-video", "arguments": {"num_frames": 97}}\n'  # 4: 1.00
)  # batch total 3.00


def test_batch_from_a_file_as_json_lines(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "batch.jsonl"
    path.write_text(BATCH)
    code, out, err = run(capsys, "quote", MAGI, "--input", str(path), "--format", "json")
    assert (code, err) == (0, "")
    objects = [json.loads(line) for line in out.splitlines()]
    assert [(o["line"], o["total"]) for o in objects[:-1]] == [
        (1, "1.20"),
        (3, "0.80"),
        (4, "1.00"),
    ]
    assert all(o["endpoint"] == MAGI and o["table_sha256"] == PACKAGED_SHA256 for o in objects[:-1])
    assert objects[0]["arguments"]["num_inference_steps"] == 32
    assert objects[-1] == {"batch_total": "3.00", "currency": "USD", "count": 3}


def test_batch_table(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "batch.jsonl"
    path.write_text(BATCH)
    code, out, err = run(capsys, "quote", MAGI, "--input", str(path))
    assert (code, err) == (0, "")
    assert rows(out) == [
        ["line", "endpoint", "priced", "inputs", "total"],
        ["1", MAGI, "num_frames=144", "resolution=480p", "num_inference_steps=32", "1.20"],
        ["3", MAGI, "num_frames=96", "resolution=720p", "num_inference_steps=16", "0.80"],
        ["4", MAGI, "num_frames=97", "resolution=720p", "num_inference_steps=16", "1.00"],
        ["total", "(3", "requests)", "3.00", "USD"],
    ]


def test_batch_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"resolution": "480p"}\n{"num_frames": 192}\n'))
    code, out, err = run(capsys, "quote", MAGI, "-i", "-", "--format", "json")
    assert (code, err) == (0, "")
    # 0.80 x 0.5 = 0.40; 0.80 + 0.20 x 4 = 1.60; total 2.00
    assert [json.loads(line) for line in out.splitlines()][-1] == {
        "batch_total": "2.00",
        "currency": "USD",
        "count": 2,
    }
    assert [json.loads(line)["total"] for line in out.splitlines()[:-1]] == ["0.40", "1.60"]


def test_lines_may_name_their_endpoint_without_endpoint_argument(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = f'{{"endpoint": "{MAGI}"}}\n{{"endpoint": "{MAGI}", "arguments": {{"seed": 1}}}}\n'
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    code, out, _ = run(capsys, "quote", "--input", "-", "--format", "json")
    assert code == 0
    assert json.loads(out.splitlines()[-1])["batch_total"] == "1.60"  # 0.80 + 0.80


def test_pairs_apply_to_lines_that_name_their_endpoint(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (
        f'{{"endpoint": "{MAGI}"}}\n{{"endpoint": "{MAGI}", "arguments": {{"num_frames": 97}}}}\n'
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    code, out, _ = run(capsys, "quote", "--input", "-", "resolution=480p", "--format", "json")
    assert code == 0
    # 0.80 x 0.5 = 0.40; (0.80 + 0.20) x 0.5 = 0.50
    assert [json.loads(line).get("total") for line in out.splitlines()] == ["0.40", "0.50", None]


def test_pairs_merge_into_every_line_and_win(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "batch.jsonl"
    path.write_text(BATCH)
    code, out, _ = run(
        capsys, "quote", "--input", str(path), MAGI, "resolution=720p", "num_inference_steps=16",
        "--format", "json",
    )  # fmt: skip
    assert code == 0
    # line 1: (0.80 + 0.40) x 1 x 1 = 1.20; line 3: 0.80; line 4: 1.00
    totals = [json.loads(line).get("total") for line in out.splitlines()]
    assert totals == ["1.20", "0.80", "1.00", None]
    assert json.loads(out.splitlines()[0])["arguments"]["resolution"] == "720p"
    assert json.loads(out.splitlines()[-1])["batch_total"] == "3.00"


def test_single_object_input_gives_one_quote(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = '{\n  "num_frames": 144,\n  "resolution": "480p"\n}\n'  # pretty-printed: one request
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    data = quote_json(capsys, MAGI, "--input", "-", "num_inference_steps=64")
    # (0.80 + 0.40) x 0.5 x 4 = 2.40
    assert data["total"] == "2.40"
    assert "line" not in data and "batch_total" not in data


def test_single_envelope_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "request.json"
    path.write_text(json.dumps({"endpoint": MAGI, "arguments": {"resolution": "480p"}}))
    code, out, err = run(capsys, "quote", "--input", str(path))
    assert (code, err) == (0, "")
    assert rows(out)[-1] == ["total", "0.40", "USD"]


def test_batch_error_names_the_line_and_prints_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = '{"num_frames": 144}\n{"num_frames": 300}\n{"resolution": 720}\n'
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert_usage_error(
        run(capsys, "quote", MAGI, "--input", "-"),
        "<stdin> line 2:",
        "num_frames=300",
        "(and 1 more line with errors)",
    )


def test_batch_invalid_json_names_the_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "batch.jsonl"
    path.write_text('{"num_frames": 144}\n{}\n{"num_frames": 144,}\n')
    assert_usage_error(
        run(capsys, "quote", MAGI, "--input", str(path)), f"{path} line 3:", "not valid JSON"
    )


def test_batch_line_that_is_not_an_object(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "batch.jsonl"
    path.write_text("{}\n[96]\n")
    assert_usage_error(
        run(capsys, "quote", MAGI, "--input", str(path)), "line 2:", "expected a JSON object"
    )


def test_batch_line_with_a_duplicate_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "batch.jsonl"
    path.write_text('{}\n{"num_frames": 96, "num_frames": 192}\n')
    assert_usage_error(
        run(capsys, "quote", MAGI, "--input", str(path)), "line 2:", "'num_frames' appears twice"
    )


def test_invalid_single_json_document_names_line_and_column(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "request.json"
    path.write_text('{\n  "num_frames": 144\n  "resolution": "480p"\n}\n')
    assert_usage_error(
        run(capsys, "quote", MAGI, "--input", str(path)), "line 3 column 3", "not valid JSON"
    )


def test_empty_input(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n  \n"))
    assert_usage_error(run(capsys, "quote", MAGI, "--input", "-"), "<stdin>", "empty")


def test_unreadable_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    assert_usage_error(
        run(capsys, "quote", MAGI, "--input", str(missing)), "cannot read --input", "missing.jsonl"
    )
    assert_usage_error(run(capsys, "quote", MAGI, "--input", str(tmp_path)), "cannot read --input")


def test_input_that_is_not_utf8(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"prompt": "caf\xe9"}')
    assert_usage_error(run(capsys, "quote", MAGI, "--input", str(path)), "not UTF-8")


def test_line_without_endpoint_needs_endpoint_argument(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"num_frames": 96}\n{"num_frames": 97}\n'))
    assert_usage_error(run(capsys, "quote", "--input", "-"), "line 1:", "no endpoint")


def test_line_endpoint_conflicting_with_endpoint_argument(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = '{}\n{"endpoint": "acme/other", "arguments": {}}\n'
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert_usage_error(run(capsys, "quote", MAGI, "--input", "-"), "line 2:", "'acme/other'")


def test_batch_fail_above_uses_the_batch_total(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "batch.jsonl"
    path.write_text(BATCH)  # 1.20 + 0.80 + 1.00 = 3.00
    code, out, err = run(capsys, "quote", MAGI, "--input", str(path), "--fail-above", "3.00")
    assert (code, err) == (0, "")
    code, out, err = run(capsys, "quote", MAGI, "--input", str(path), "--fail-above", "1.00")
    assert code == 1
    assert rows(out)[-1] == ["total", "(3", "requests)", "3.00", "USD"]
    assert err == (
        "falbudget: batch total 3.00 USD is above --fail-above 1.00;"
        " lines above it on their own: 1\n"
    )


# --- quote: other tables ------------------------------------------------------------------------


def test_pricing_option_replaces_the_table(capsys: pytest.CaptureFixture[str], acme: Path) -> None:
    data = quote_json(capsys, "acme/upscale", "--pricing", str(acme))
    assert data["total"] == "0.0025"  # a sub-cent price keeps its digits
    assert data["table_version"] == "acme-1"
    assert data["table_sha256"] == hashlib.sha256(acme.read_bytes()).hexdigest()
    # (0.0025 + 0.001 x 2) x 3 = 0.0135
    data = quote_json(capsys, "acme/upscale", "megapixels=3", "scale=4", "--pricing", str(acme))
    assert data["total"] == "0.0135"
    assert_usage_error(run(capsys, "quote", MAGI, "--pricing", str(acme)), "unknown endpoint")


def test_sub_cent_table_rendering(capsys: pytest.CaptureFixture[str], acme: Path) -> None:
    code, out, _ = run(capsys, "quote", "acme/upscale", "megapixels=3", "--pricing", str(acme))
    assert code == 0
    assert rows(out)[1:] == [
        ["rule", "input", "value", "effect", "subtotal"],
        ["base", "0.0025", "0.0025"],
        ["extra", "megapixels", "megapixels", "3", "+0.002", "0.0045"],
        ["scale", "scale", "2", "x1", "0.0045"],
        ["total", "0.0045", "USD"],
    ]


def test_env_var_replaces_the_table(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, acme: Path
) -> None:
    monkeypatch.setenv("FALBUDGET_PRICING", str(acme))
    assert quote_json(capsys, "acme/upscale")["total"] == "0.0025"


def test_broken_pricing_table_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(ACME_TABLE.replace('amount: "0.0025"', 'amount: "-1"'))
    assert_usage_error(
        run(capsys, "quote", "acme/upscale", "--pricing", str(path)), str(path), "acme/upscale"
    )
    assert_usage_error(
        run(capsys, "quote", MAGI, "--pricing", str(tmp_path / "none.yaml")), "none.yaml"
    )


# --- endpoints ----------------------------------------------------------------------------------


def test_endpoints_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "endpoints", "--format", "json")
    assert (code, err) == (0, "")
    assert out.count("\n") == 1
    data = json.loads(out)
    assert data["table_version"] == "2026.12.06"
    assert data["table_sha256"] == PACKAGED_SHA256
    assert [e["name"] for e in data["endpoints"]] == [
        MAGI,
        "fal-ai/magi",
        "fal-ai/magi/extend-video",
        "fal-ai/magi-distilled",
        "fal-ai/magi-distilled/extend-video",
        *POPULAR,
    ]
    endpoint = data["endpoints"][0]
    assert endpoint["name"] == MAGI
    # cheapest 96 frames, 480p, <= 16 steps: 0.40; dearest 192, 720p, 64: 1.60 x 4 = 6.40
    assert endpoint["price_range"] == {"min": "0.40", "max": "6.40"}
    summary = [
        (p["name"], p["type"], p["allowed"], p["default"], p["required"], p["priced"])
        for p in endpoint["parameters"]
    ]
    assert summary == [
        ("prompt", "string", "a string", None, True, False),
        ("image_url", "string", "a string", None, True, False),
        ("num_frames", "integer", "an integer from 96 to 192", 96, False, True),
        ("seed", "integer", "an integer or null", None, False, False),
        ("resolution", "string", 'one of "480p", "720p"', "720p", False, True),
        ("num_inference_steps", "integer", "one of 4, 8, 16, 32, 64", 16, False, True),
        ("enable_safety_checker", "boolean", "true or false", True, False, False),
        ("aspect_ratio", "string", 'one of "auto", "16:9", "9:16", "1:1"', "auto", False, False),
    ]
    frames = endpoint["parameters"][2]
    assert (frames["minimum"], frames["maximum"], frames["enum"]) == (96, 192, None)
    assert endpoint["parameters"][5]["enum"] == [4, 8, 16, 32, 64]


def test_endpoints_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "endpoints")
    assert (code, err) == (0, "")
    assert f"{MAGI}: MAGI-1 (image to video)\nprice 0.40 - 6.40 USD\n" in out
    table = rows(out)
    assert ["parameter", "type", "allowed", "default", "required", "priced"] in table
    assert [
        "num_frames",
        "integer",
        "an",
        "integer",
        "from",
        "96",
        "to",
        "192",
        "96",
        "no",
        "yes",
    ] in table
    assert ["prompt", "string", "a", "string", "yes", "no"] in table


def test_endpoints_of_another_table(capsys: pytest.CaptureFixture[str], acme: Path) -> None:
    code, out, _ = run(capsys, "endpoints", "--pricing", str(acme), "--format", "json")
    assert code == 0
    (endpoint,) = json.loads(out)["endpoints"]
    # cheapest: 0.0025; dearest: (0.0025 + 0.003) x 3 = 0.0165
    assert endpoint["price_range"] == {"min": "0.0025", "max": "0.0165"}


def test_endpoints_with_an_unbounded_priced_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "open.yaml"
    path.write_text(OPEN_TABLE)
    code, out, _ = run(capsys, "endpoints", "--pricing", str(path), "--format", "json")
    assert code == 0
    assert json.loads(out)["endpoints"][0]["price_range"] is None
    code, out, _ = run(capsys, "endpoints", "--pricing", str(path))
    assert code == 0
    assert "price not listed" in out


# --- pricing validate ---------------------------------------------------------------------------


def test_validate_the_table_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "pricing", "validate")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"ok: {PACKAGED}",
        "table version   2026.12.06 (effective 2026-11-24)",
        f"sha256          {PACKAGED_SHA256}",
        "endpoints       29",
        # the names padded to the longest; image to video and its full-price kin: 0.80 x 0.5 =
        # 0.40 to (0.80 + 4 x 0.20) x 4 = 6.40; distilled: 0.32 x 0.5 = 0.16 to
        # (0.32 + 4 x 0.08) x 2 (32 steps at most) = 1.28
        f"  {MAGI}                              0.40 - 6.40 USD",
        "  fal-ai/magi                                             0.40 - 6.40 USD",
        "  fal-ai/magi/extend-video                                0.40 - 6.40 USD",
        "  fal-ai/magi-distilled                                   0.16 - 1.28 USD",
        "  fal-ai/magi-distilled/extend-video                      0.16 - 1.28 USD",
        # the popular endpoints (docs/catalog.md section 7): FLUX.1 [dev] 1 to 4 images of at
        # most 1 megapixel x 0.025; Kontext 1 to 4 images x 0.04; Kling v1 5 or 10 s x 0.045;
        # Kling 2.1 0.28 for 5 s, + 5 x 0.056 for 10 s; 2.5 Turbo 0.21 / 0.35 for 5 s, twice for
        # 10 s; Hailuo 2.3 standard 0.28 for 6 s, 0.56 for 10 s; pro 0.49; Stable Audio 0.20
        "  fal-ai/flux-1/dev                                       0.025 - 0.10 USD",
        "  fal-ai/flux-pro/kontext                                 0.04 - 0.16 USD",
        "  fal-ai/kling-video/v1/standard/image-to-video           0.225 - 0.45 USD",
        "  fal-ai/kling-video/v2.1/standard/image-to-video         0.28 - 0.56 USD",
        "  fal-ai/kling-video/v2.5-turbo/standard/image-to-video   0.21 - 0.42 USD",
        "  fal-ai/kling-video/v2.5-turbo/pro/image-to-video        0.35 - 0.70 USD",
        "  fal-ai/minimax/hailuo-2.3/standard/text-to-video        0.28 - 0.56 USD",
        "  fal-ai/minimax/hailuo-2.3/pro/text-to-video             0.49 - 0.49 USD",
        "  fal-ai/stable-audio-25/text-to-audio                    0.20 - 0.20 USD",
        # Kling 2.0 / 2.1 Master 1.40 for 5 s, + 5 x 0.28 = 2.80 for 10 s; 2.1 pro 0.49, + 5 x
        # 0.098 = 0.98; Veo 3 4 s x 0.20 = 0.80 (no audio) to 8 s x 0.40 = 3.20 (audio);
        # Recraft 0.04; Hailuo 2.3 i2v as its t2v, fast 0.19 / 0.32, pro 0.49, fast pro 0.33;
        # MiniMax Music 0.03
        "  fal-ai/kling-video/v2/master/text-to-video              1.40 - 2.80 USD",
        "  fal-ai/kling-video/v2.1/master/text-to-video            1.40 - 2.80 USD",
        "  fal-ai/kling-video/v2.1/master/image-to-video           1.40 - 2.80 USD",
        "  fal-ai/kling-video/v2.1/pro/image-to-video              0.49 - 0.98 USD",
        "  fal-ai/veo3                                             0.80 - 3.20 USD",
        "  fal-ai/recraft/v4.1/text-to-image                       0.04 - 0.04 USD",
        "  fal-ai/minimax/hailuo-2.3/standard/image-to-video       0.28 - 0.56 USD",
        "  fal-ai/minimax/hailuo-2.3-fast/standard/image-to-video  0.19 - 0.32 USD",
        "  fal-ai/minimax/hailuo-2.3/pro/image-to-video            0.49 - 0.49 USD",
        "  fal-ai/minimax/hailuo-2.3-fast/pro/image-to-video       0.33 - 0.33 USD",
        "  fal-ai/minimax-music/v2                                 0.03 - 0.03 USD",
        "  fal-ai/minimax-music/v1.5                               0.03 - 0.03 USD",
        # 1 to 5000 characters: 1 to 5 blocks of 1000 x 0.06
        "  fal-ai/minimax/speech-02-turbo                          0.06 - 0.30 USD",
        "  fal-ai/minimax/speech-2.8-hd                            not listed (priced by the"
        " characters of a text of any length)",
        "  resemble-ai/chatterboxhd/text-to-speech                 not listed (priced by the"
        " characters of a text of any length)",
    ]


def test_validate_a_path_as_json(capsys: pytest.CaptureFixture[str], acme: Path) -> None:
    code, out, err = run(capsys, "pricing", "validate", str(acme), "--format", "json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "ok": True,
        "source": str(acme),
        "table_version": "acme-1",
        "effective_date": "2026-01-01",
        "currency": "USD",
        "table_sha256": hashlib.sha256(acme.read_bytes()).hexdigest(),
        "endpoints": [{"name": "acme/upscale", "price_range": {"min": "0.0025", "max": "0.0165"}}],
    }


def test_validate_uses_the_env_var(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, acme: Path
) -> None:
    monkeypatch.setenv("FALBUDGET_PRICING", str(acme))
    code, out, _ = run(capsys, "pricing", "validate")
    assert code == 0
    assert out.splitlines()[0] == f"ok: {acme}"


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (('amount: "0.0025"', 'amount: "-1"'), ("acme/upscale", "rules.0.amount")),
        (("title: Acme upscaler", "titel: Acme upscaler"), ("titel", "unknown key")),
        (("default: 2}", "default: 3}"), ("inputs.scale", "3")),
        (("input: megapixels", "input: megapixel"), ("rules.1.input", "megapixel")),
        (("schema_version: 1", "schema_version: 1\n  bad: [indent"), ("not valid YAML",)),
    ],
)
def test_validate_a_broken_table(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    change: tuple[str, str],
    needles: tuple[str, ...],
) -> None:
    path = tmp_path / "broken.yaml"
    text = ACME_TABLE.replace(*change)
    assert text != ACME_TABLE
    path.write_text(text)
    assert_usage_error(run(capsys, "pricing", "validate", str(path)), str(path), *needles)


def test_validate_a_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert_usage_error(
        run(capsys, "pricing", "validate", str(tmp_path / "nope.yaml")), "nope.yaml", "cannot read"
    )


def test_pricing_needs_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(run(capsys, "pricing"), "validate")


# --- the program as a whole --------------------------------------------------------------------


def test_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(run(capsys), "a command is required: quote, endpoints, pricing")


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(run(capsys, "qoute"), "invalid choice", "'qoute'")


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["-h"], ["quote", "--help"], ["endpoints", "-h"], ["pricing", "validate", "-h"]],
)
def test_help_exits_0(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, "")
    assert out.startswith("usage: falbudget")


def test_quote_help_explains_key_value(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "quote", "--help")
    assert 'resolution=480p gives "480p"' in out
    assert "exit codes: 0 ok, 1" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--version") == (0, f"falbudget {falbudget.__version__}\n", "")


def test_interrupt_exits_130(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(path: str | None) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(quote_cmd, "table_for", interrupted)
    assert run(capsys, "quote", MAGI) == (130, "", "")


def test_os_error_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(path: str | None) -> Any:
        raise PermissionError(13, "Permission denied", "/some/table.yaml")

    monkeypatch.setattr(quote_cmd, "table_for", denied)
    assert_usage_error(run(capsys, "quote", MAGI), "/some/table.yaml: Permission denied")


def test_broken_pipe_is_quiet(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    code = main(["quote", MAGI])
    assert code == 141
    assert capsys.readouterr().err == ""


def test_main_reads_sys_argv(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        sys, "argv", ["falbudget", "quote", MAGI, "resolution=480p", "--format", "json"]
    )
    assert main() == 0
    assert json.loads(capsys.readouterr().out)["total"] == "0.40"


# --- the installed script, in a subprocess ------------------------------------------------------


def installed_script() -> str:
    """The `falbudget` console script installed beside this Python; fail (not skip) without it."""
    bindir = Path(sys.executable).parent
    found = shutil.which("falbudget", path=str(bindir))
    if found is None:
        pytest.fail(
            f"the falbudget console script is not installed next to {sys.executable}; install the"
            " package first: pip install -e . (from the repository root)"
        )
    return found


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FALBUDGET_PRICING"}
    env.pop("PYTHONPATH", None)  # the installed package, not the source tree on the path
    return env


def test_installed_script_and_python_m(tmp_path: Path) -> None:
    argv = ["quote", MAGI, "num_frames=144", "resolution=480p", "num_inference_steps=32"]
    for command in ([installed_script()], [sys.executable, "-m", "falbudget"]):
        # (0.80 + 0.40) x 0.5 x 2 = 1.20
        done = subprocess.run(
            [*command, *argv, "--format", "json"],
            cwd=tmp_path,  # any directory: the table ships inside the package
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
        assert json.loads(done.stdout)["total"] == "1.20"

        done = subprocess.run(
            [*command, *argv, "--fail-above", "1.00"],
            cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 1
        assert done.stderr == "falbudget: total 1.20 USD is above --fail-above 1.00\n"

        done = subprocess.run(
            [*command, "quote", "fal-ai/nope"],
            cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2
        assert done.stdout == ""
        assert done.stderr.startswith("falbudget: error: unknown endpoint 'fal-ai/nope'")
        assert done.stderr.count("\n") == 1


def test_installed_script_reads_stdin_and_survives_a_closed_pipe(tmp_path: Path) -> None:
    script = installed_script()
    batch = "".join(f'{{"num_frames": {96 + i % 97}}}\n' for i in range(3000))
    done = subprocess.run(
        [script, "quote", MAGI, "--input", "-", "--format", "json"],
        input=batch, env=clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 3001
    # a reader that stops after one line (like `| head -1`): exit 141, nothing on stderr
    with subprocess.Popen(
        [script, "quote", MAGI, "--input", "-", "--format", "json"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(batch.encode())
        proc.stdin.close()
        assert json.loads(proc.stdout.readline())["line"] == 1
        proc.stdout.close()
        assert proc.wait(timeout=60) == 141
        assert proc.stderr.read() == b""


def test_start_up_imports_stay_lazy() -> None:
    """JSON output never loads tabulate; usage errors and --version never load pydantic or yaml."""
    code = (
        "import sys\n"
        "from falbudget.cli import main\n"
        "main(['quote', 'x=1'])\n"
        "main(['--version'])\n"
        "print(sorted(m for m in ('pydantic', 'yaml', 'tabulate') if m in sys.modules))\n"
        f"main(['quote', {MAGI!r}, '--format', 'json'])\n"
        "print(sorted(m for m in ('pydantic', 'yaml', 'tabulate') if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FALBUDGET_PRICING"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"falbudget {falbudget.__version__}"
    assert lines[1] == "[]"
    assert lines[3] == "['pydantic', 'yaml']"


def test_a_command_imports_its_own_module_alone() -> None:
    """`falbudget quote` registers and imports the quote command only: not the planner, the
    ledger commands, the proxy or the dashboard; --help still lists every command."""
    code = (
        "import sys\n"
        "from falbudget.cli import main\n"
        f"main(['quote', {MAGI!r}, '--format', 'json'])\n"
        "print(sorted(m for m in sys.modules if m.endswith('_cmd')))\n"
        "main(['--help'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FALBUDGET_PRICING"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # quote_cmd imports pricing_cmd for parse_moment: those two, nothing else
    assert "['falbudget.cli.pricing_cmd', 'falbudget.cli.quote_cmd']" in done.stdout
    listed = done.stdout.split("COMMAND", 1)[1]
    for command in ("quote", "endpoints", "pricing", "plan", "budget", "report", "reconcile",
                    "ledger", "proxy", "keys", "serve"):  # fmt: skip
        assert re.search(rf"\n    {command}\s", listed), command


def test_a_speech_quote_and_plan_show_the_text_s_length(capsys: pytest.CaptureFixture[str]) -> None:
    tts = "fal-ai/minimax/speech-02-turbo"  # $0.06 per 1000 characters (docs/catalog.md)
    code, out, err = run(capsys, "quote", tts, "text=" + "a" * 1500)
    assert (code, err) == (0, "")
    # 1500 characters: 2 blocks (the second partial, counted whole) x 0.06 = 0.12
    assert "speech  text     1500 characters     +0.12        0.12" in out
    code, out, err = run(capsys, "plan", "count", tts, "text=hello", "--amount", "1")
    assert (code, err) == (0, "")
    # 5 characters: 1 block, 0.06; 1.00 / 0.06 = 16 requests (0.96), 0.04 left
    assert out.splitlines() == [
        f"{tts} text=hello (price table 2026.12.06)",
        "16 requests of 0.06 fit in 1.00 USD (0.04 left)",
    ]
    assert_usage_error(run(capsys, "quote", tts), "text=(missing)", "per character of it")
