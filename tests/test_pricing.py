"""The MAGI-1 price table and the quote API, checked against totals worked out by hand.

Every expected figure below is written as a literal with its arithmetic beside it; nothing asks the
engine for its own expectation. The rules (fal's MAGI-1 page, docs/pricing.md):

    total = (0.80 + 0.20 x ceil((num_frames - 96) / 24)) x resolution x max(1, steps / 16)

with resolution 0.5 for 480p and 1 for 720p.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import falbudget
from falbudget import (
    FalbudgetError,
    InvalidArguments,
    LineItem,
    PriceTable,
    Quote,
    UnknownEndpoint,
)
from falbudget.pricing import default_table, load_table, loader, packaged_table_path, parse_table

MAGI = "fal-ai/magi/image-to-video"
REPO_TABLE = Path(__file__).resolve().parents[1] / "pricing.yaml"
ALLOWED_FRAMES = "an integer from 96 to 192"
ALLOWED_STEPS = "one of 4, 8, 16, 32, 64"
ALLOWED_RESOLUTION = 'one of "480p", "720p"'
ALLOWED_ASPECT = 'one of "auto", "16:9", "9:16", "1:1"'


def total(arguments: dict[str, Any] | None = None, **kwargs: Any) -> Decimal:
    return falbudget.quote(MAGI, arguments, **kwargs).total


# --------------------------------------------------------------------------- exact totals


@pytest.mark.parametrize(
    ("num_frames", "expected"),
    [
        (96, Decimal("0.80")),  # 0.80 + 0.20 x 0, no extra second
        (97, Decimal("1.00")),  # 1 frame over: ceil(1/24) = 1 second -> 0.80 + 0.20
        (119, Decimal("1.00")),  # ceil(23/24) = 1 -> 0.80 + 0.20
        (120, Decimal("1.00")),  # 24/24 = 1 -> 0.80 + 0.20
        (121, Decimal("1.20")),  # ceil(25/24) = 2 -> 0.80 + 0.40
        (144, Decimal("1.20")),  # 48/24 = 2 -> 0.80 + 0.40
        (168, Decimal("1.40")),  # 72/24 = 3 -> 0.80 + 0.60
        (191, Decimal("1.60")),  # ceil(95/24) = 4 -> 0.80 + 0.80
        (192, Decimal("1.60")),  # 96/24 = 4 -> 0.80 + 0.80
    ],
)
def test_frames_at_default_resolution_and_steps(num_frames: int, expected: Decimal) -> None:
    assert total({"num_frames": num_frames}) == expected
    assert str(total({"num_frames": num_frames})) == str(expected)


@pytest.mark.parametrize(
    ("num_frames", "resolution", "expected"),
    [
        (96, "480p", Decimal("0.40")),  # 0.80 x 0.5
        (96, "720p", Decimal("0.80")),  # 0.80 x 1
        (97, "480p", Decimal("0.50")),  # 1.00 x 0.5
        (119, "480p", Decimal("0.50")),  # 1.00 x 0.5
        (120, "480p", Decimal("0.50")),  # 1.00 x 0.5
        (121, "480p", Decimal("0.60")),  # 1.20 x 0.5
        (191, "480p", Decimal("0.80")),  # 1.60 x 0.5
        (192, "480p", Decimal("0.80")),  # 1.60 x 0.5
        (192, "720p", Decimal("1.60")),  # 1.60 x 1
    ],
)
def test_both_resolutions(num_frames: int, resolution: str, expected: Decimal) -> None:
    assert total({"num_frames": num_frames, "resolution": resolution}) == expected


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (4, Decimal("0.80")),  # max(1, 4/16) = 1: fewer steps earn no discount
        (8, Decimal("0.80")),  # max(1, 8/16) = 1
        (16, Decimal("0.80")),  # 16/16 = 1
        (32, Decimal("1.60")),  # 0.80 x 32/16 = 0.80 x 2
        (64, Decimal("3.20")),  # 0.80 x 64/16 = 0.80 x 4
    ],
)
def test_every_step_count(steps: int, expected: Decimal) -> None:
    assert total({"num_inference_steps": steps}) == expected


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"num_frames": 144, "resolution": "480p", "num_inference_steps": 32}, Decimal("1.20")),
        # (0.80 + 0.40) x 0.5 x 2 = 1.20
        ({"num_frames": 192, "resolution": "720p", "num_inference_steps": 64}, Decimal("6.40")),
        # (0.80 + 0.80) x 1 x 4 = 6.40, the dearest request
        ({"num_frames": 96, "resolution": "480p", "num_inference_steps": 16}, Decimal("0.40")),
        # 0.80 x 0.5 x 1 = 0.40, the cheapest request
        ({"num_frames": 96, "resolution": "480p", "num_inference_steps": 4}, Decimal("0.40")),
        # 0.80 x 0.5 x max(1, 0.25) = 0.40
        ({"num_frames": 97, "resolution": "720p", "num_inference_steps": 64}, Decimal("4.00")),
        # (0.80 + 0.20) x 1 x 4 = 4.00
        ({"num_frames": 121, "resolution": "480p", "num_inference_steps": 64}, Decimal("2.40")),
        # (0.80 + 0.40) x 0.5 x 4 = 2.40
        ({"num_frames": 168, "resolution": "480p", "num_inference_steps": 8}, Decimal("0.70")),
        # (0.80 + 0.60) x 0.5 x 1 = 0.70
        ({"num_frames": 191, "resolution": "720p", "num_inference_steps": 32}, Decimal("3.20")),
        # (0.80 + 0.80) x 1 x 2 = 3.20
        ({"num_frames": 120, "resolution": "480p", "num_inference_steps": 32}, Decimal("1.00")),
        # (0.80 + 0.20) x 0.5 x 2 = 1.00
        (
            {
                "prompt": "a snowboarder",
                "image_url": "https://example.com/a.jpg",
                "num_frames": 144,
                "seed": 7,
                "resolution": "720p",
                "num_inference_steps": 32,
                "enable_safety_checker": False,
                "aspect_ratio": "16:9",
            },
            Decimal("2.40"),
        ),
        # every input given: (0.80 + 0.40) x 1 x 2 = 2.40; seed, prompt, aspect ratio cost nothing
    ],
)
def test_combinations(arguments: dict[str, Any], expected: Decimal) -> None:
    assert total(arguments) == expected


def test_all_sixty_five_frame_counts_against_the_hand_table() -> None:
    # one extra second for each started block of 24 frames over 96, at $0.20 a second
    blocks = {range(96, 97): "0.80", range(97, 121): "1.00", range(121, 145): "1.20"}
    blocks |= {range(145, 169): "1.40", range(169, 193): "1.60"}
    for frames_range, expected in blocks.items():
        for frames in frames_range:
            assert total({"num_frames": frames}) == Decimal(expected), frames


@pytest.mark.parametrize("arguments", [None, {}])
def test_defaults_left_out(arguments: dict[str, Any] | None) -> None:
    # 96 frames, 720p, 16 steps: 0.80 x 1 x 1
    quote = falbudget.quote(MAGI, arguments)
    assert quote.total == Decimal("0.80")
    assert falbudget.quote(MAGI).total == Decimal("0.80")


def test_giving_the_defaults_explicitly_costs_the_same() -> None:
    given = {"num_frames": 96, "resolution": "720p", "num_inference_steps": 16}
    assert total(given) == Decimal("0.80")
    assert falbudget.quote(MAGI, given).arguments == falbudget.quote(MAGI).arguments


# --------------------------------------------------------------------------- the quote object


def test_line_items_in_rule_order() -> None:
    quote = falbudget.quote(
        MAGI, {"num_frames": 144, "resolution": "480p", "num_inference_steps": 32}
    )
    assert quote.line_items == (
        LineItem(
            rule="base",
            kind="base",
            input=None,
            value=None,
            detail="one four-second video (96 frames)",
            amount=Decimal("0.80"),
        ),
        LineItem(
            rule="extra seconds",
            kind="per_unit",
            input="num_frames",
            value=144,
            detail="2 extra seconds",
            amount=Decimal("0.40"),  # 2 x 0.20
        ),
        LineItem(
            rule="resolution",
            kind="lookup",
            input="resolution",
            value="480p",
            detail="480p",
            factor=Decimal("0.5"),
        ),
        LineItem(
            rule="steps",
            kind="proportional",
            input="num_inference_steps",
            value=32,
            detail="32 steps",
            factor=Decimal("2"),  # 32 / 16
        ),
    )
    assert [item.effect() for item in quote.line_items] == ["0.80", "+0.40", "x0.5", "x2"]
    assert str(quote.line_items[1].amount) == "0.40"


def test_line_items_at_the_defaults() -> None:
    items = falbudget.quote(MAGI).line_items
    assert [item.rule for item in items] == ["base", "extra seconds", "resolution", "steps"]
    assert [item.input for item in items] == [
        None,
        "num_frames",
        "resolution",
        "num_inference_steps",
    ]
    assert [item.value for item in items] == [None, 96, "720p", 16]
    assert items[1].amount == Decimal("0.00")
    assert items[1].detail == "0 extra seconds"
    assert [item.factor for item in items] == [None, None, Decimal("1"), Decimal("1")]


def test_line_item_for_one_extra_second_is_singular_and_low_steps_floor_at_one() -> None:
    items = falbudget.quote(MAGI, {"num_frames": 97, "num_inference_steps": 4}).line_items
    assert items[1].detail == "1 extra second"
    assert items[1].amount == Decimal("0.20")
    assert items[3].factor == Decimal("1")  # max(1, 4/16), not 0.25
    assert items[3].effect() == "x1"


def test_quote_is_immutable() -> None:
    quote = falbudget.quote(MAGI, {"num_frames": 120})
    with pytest.raises(dataclasses.FrozenInstanceError):
        quote.total = Decimal("0.01")  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        quote.line_items[0].amount = Decimal("0")  # type: ignore[misc]
    with pytest.raises(TypeError):
        quote.arguments["num_frames"] = 96  # type: ignore[index]
    with pytest.raises(TypeError):
        del quote.arguments["num_frames"]  # type: ignore[attr-defined]
    assert isinstance(quote.line_items, tuple)


def test_quote_does_not_share_the_callers_dict() -> None:
    arguments = {"num_frames": 120}
    quote = falbudget.quote(MAGI, arguments)
    arguments["num_frames"] = 192
    assert quote.arguments["num_frames"] == 120
    assert arguments == {"num_frames": 192}  # the caller's dict is not filled in either


def test_arguments_have_defaults_filled_in() -> None:
    quote = falbudget.quote(MAGI, {"num_frames": 144, "seed": 3})
    assert dict(quote.arguments) == {
        "num_frames": 144,
        "seed": 3,
        "resolution": "720p",
        "num_inference_steps": 16,
        "enable_safety_checker": True,
        "aspect_ratio": "auto",
    }
    # prompt and image_url have no default and were not given: they are left out, not invented
    assert "prompt" not in quote.arguments
    assert "seed" not in falbudget.quote(MAGI).arguments


def test_currency_endpoint_and_table_identity() -> None:
    quote = falbudget.quote(MAGI)
    assert quote.currency == "USD"
    assert quote.endpoint == MAGI
    assert quote.table_version == "2026.12.06"
    assert quote.table_sha256 == hashlib.sha256(REPO_TABLE.read_bytes()).hexdigest()
    assert quote.table_sha256 == hashlib.sha256(packaged_table_path().read_bytes()).hexdigest()


def test_json_form_writes_money_as_strings() -> None:
    quote = falbudget.quote(
        MAGI, {"num_frames": 144, "resolution": "480p", "num_inference_steps": 32}
    )
    data = json.loads(quote.to_json())
    assert data == {
        "endpoint": MAGI,
        "total": "1.20",
        "currency": "USD",
        "arguments": {
            "num_frames": 144,
            "resolution": "480p",
            "num_inference_steps": 32,
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
                "value": 144,
                "detail": "2 extra seconds",
                "amount": "0.40",
                "factor": None,
            },
            {
                "rule": "resolution",
                "kind": "lookup",
                "input": "resolution",
                "value": "480p",
                "detail": "480p",
                "amount": None,
                "factor": "0.5",
            },
            {
                "rule": "steps",
                "kind": "proportional",
                "input": "num_inference_steps",
                "value": 32,
                "detail": "32 steps",
                "amount": None,
                "factor": "2",
            },
        ],
        "table_version": "2026.12.06",
        "table_sha256": hashlib.sha256(REPO_TABLE.read_bytes()).hexdigest(),
    }


def test_json_never_writes_point_eight() -> None:
    text = falbudget.quote(MAGI).to_json()
    assert '"total": "0.80"' in text
    assert '"0.8"' not in text
    assert "0.8," not in text  # no bare JSON number either
    assert json.loads(text)["total"] == "0.80"
    assert json.loads(falbudget.quote(MAGI, {"num_frames": 192}).to_json())["total"] == "1.60"


@pytest.mark.parametrize(
    "arguments",
    [
        {},
        {"num_frames": 97, "resolution": "480p", "num_inference_steps": 64, "seed": None},
        {"num_frames": 192, "seed": 2**40, "prompt": "é ✓", "enable_safety_checker": False},
    ],
)
def test_json_round_trip(arguments: dict[str, Any]) -> None:
    quote = falbudget.quote(MAGI, arguments)
    again = Quote.from_json(quote.to_json())
    assert again == quote
    assert again.to_json() == quote.to_json()
    assert str(again.total) == str(quote.total)
    assert isinstance(again.total, Decimal)
    with pytest.raises(TypeError):
        again.arguments["x"] = 1  # type: ignore[index]


def test_quote_is_the_same_as_a_loaded_tables_quote() -> None:
    table = load_table(REPO_TABLE)
    assert isinstance(table, PriceTable)
    arguments = {"num_frames": 121, "num_inference_steps": 32}
    assert table.quote(MAGI, arguments) == falbudget.quote(MAGI, arguments)
    assert table.quote(MAGI, arguments).total == Decimal("2.40")  # (0.80 + 0.40) x 2
    assert MAGI in table
    assert "acme/none" not in table


# --------------------------------------------------------------------------- bad input


def _refused(arguments: Any, *, strict: bool = False) -> InvalidArguments:
    with pytest.raises(InvalidArguments) as info:
        falbudget.quote(MAGI, arguments, strict=strict)
    error = info.value
    assert isinstance(error, ValueError)
    assert isinstance(error, FalbudgetError)
    return error


@pytest.mark.parametrize(
    ("parameter", "value", "shown", "allowed"),
    [
        ("num_frames", 95, "95", ALLOWED_FRAMES),
        ("num_frames", 193, "193", ALLOWED_FRAMES),
        ("num_frames", 0, "0", ALLOWED_FRAMES),
        ("num_frames", -96, "-96", ALLOWED_FRAMES),
        ("num_frames", 120.0, "120.0", "a float is not an integer, even when whole"),
        ("num_frames", True, "true", "a boolean is not a number"),
        ("num_frames", "120", '"120"', "give the number itself, not a string"),
        ("num_frames", None, "null", ALLOWED_FRAMES),
        ("num_frames", [120], "[120]", ALLOWED_FRAMES),
        ("resolution", "1080p", '"1080p"', ALLOWED_RESOLUTION),
        ("resolution", 720, "720", ALLOWED_RESOLUTION),
        ("resolution", "720P", '"720P"', ALLOWED_RESOLUTION),
        ("num_inference_steps", 48, "48", ALLOWED_STEPS),  # in the prose, not in the enum
        ("num_inference_steps", "16", '"16"', ALLOWED_STEPS),  # decision: strings are refused
        ("num_inference_steps", 16.0, "16.0", ALLOWED_STEPS),
        ("num_inference_steps", False, "false", ALLOWED_STEPS),
        ("num_inference_steps", 0, "0", ALLOWED_STEPS),
        ("aspect_ratio", "4:3", '"4:3"', ALLOWED_ASPECT),
        ("aspect_ratio", None, "null", ALLOWED_ASPECT),
        ("seed", 1.5, "1.5", "an integer or null"),
        ("seed", "x", '"x"', "an integer or null"),
        ("seed", True, "true", "an integer or null"),
        ("enable_safety_checker", "true", '"true"', "true or false"),
        ("enable_safety_checker", 1, "1", "true or false"),
        ("enable_safety_checker", None, "null", "true or false"),
        ("prompt", 5, "5", "a string"),
        ("image_url", {"url": "x"}, '{"url": "x"}', "a string"),
    ],
)
def test_bad_values_name_parameter_value_and_what_is_allowed(
    parameter: str, value: Any, shown: str, allowed: str
) -> None:
    error = _refused({parameter: value})
    assert error.endpoint == MAGI
    assert error.parameter == parameter
    assert error.value == value and type(error.value) is type(value)
    message = str(error)
    assert f"{parameter}={shown} is not allowed" in message
    assert allowed in message


def test_message_for_an_out_of_range_frame_count_in_full() -> None:
    error = _refused({"num_frames": 95})
    assert str(error) == (
        "fal-ai/magi/image-to-video: num_frames=95 is not allowed: an integer from 96 to 192"
    )
    assert error.allowed == ALLOWED_FRAMES


def test_48_steps_is_refused_with_the_allowed_values() -> None:
    error = _refused({"num_inference_steps": 48})
    assert str(error) == (
        "fal-ai/magi/image-to-video: num_inference_steps=48 is not allowed: one of 4, 8, 16, 32, 64"
    )


def test_an_unknown_name_suggests_the_known_one() -> None:
    error = _refused({"num_frame": 120})
    assert error.parameter == "num_frame"
    assert error.value == 120
    message = str(error)
    assert "num_frame=120 is not allowed: unknown parameter" in message
    assert "did you mean num_frames?" in message
    assert "known parameters: prompt, image_url, num_frames, seed" in message


def test_an_unknown_name_with_no_close_match_lists_the_known_ones() -> None:
    message = str(_refused({"colour": "red"}))
    assert "did you mean" not in message
    assert "known parameters:" in message and "aspect_ratio" in message


def test_a_non_string_key_is_an_unknown_parameter() -> None:
    error = _refused({1: 2})
    assert error.parameter == "1"
    assert "unknown parameter" in str(error)


@pytest.mark.parametrize("arguments", [[("num_frames", 120)], "num_frames=120", 120, True])
def test_arguments_that_are_not_a_mapping(arguments: Any) -> None:
    error = _refused(arguments)
    assert error.parameter == "arguments"
    assert "a JSON object mapping input names to values" in str(error)


def test_seed_may_be_null_or_an_integer() -> None:
    assert total({"seed": None}) == Decimal("0.80")
    assert total({"seed": 0}) == Decimal("0.80")
    assert total({"seed": -(2**70)}) == Decimal("0.80")
    assert falbudget.quote(MAGI, {"seed": None}).arguments["seed"] is None


def test_the_first_bad_parameter_is_named() -> None:
    error = _refused({"num_frames": 120, "resolution": "1080p", "num_inference_steps": 48})
    assert error.parameter == "resolution"


# --------------------------------------------------------------------------- strict mode


def test_strict_requires_prompt_then_image_url() -> None:
    error = _refused({}, strict=True)
    assert error.parameter == "prompt"
    assert str(error) == (
        "fal-ai/magi/image-to-video: prompt=(missing) is not allowed: required: a string"
    )
    error = _refused({"prompt": "a cat"}, strict=True)
    assert error.parameter == "image_url"
    error = _refused({"image_url": "https://example.com/a.jpg"}, strict=True)
    assert error.parameter == "prompt"


def test_strict_passes_with_both_given() -> None:
    arguments = {"prompt": "a cat", "image_url": "https://example.com/a.jpg", "num_frames": 97}
    quote = falbudget.quote(MAGI, arguments, strict=True)
    assert quote.total == Decimal("1.00")  # 0.80 + 0.20
    assert quote.arguments["prompt"] == "a cat"


def test_non_strict_allows_the_required_inputs_missing() -> None:
    assert falbudget.quote(MAGI, {}, strict=False).total == Decimal("0.80")
    assert falbudget.quote(MAGI, {"prompt": "a cat"}).total == Decimal("0.80")


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("prompt", [5, None, ["a cat"], b"a cat"])
def test_a_non_string_prompt_is_refused_in_both_modes(strict: bool, prompt: Any) -> None:
    arguments = {"prompt": prompt, "image_url": "https://example.com/a.jpg"}
    error = _refused(arguments, strict=strict)
    assert error.parameter == "prompt"
    assert "a string" in str(error)


# --------------------------------------------------------------------------- endpoints


def test_unknown_endpoint_lists_close_matches() -> None:
    with pytest.raises(UnknownEndpoint) as info:
        falbudget.quote("fal-ai/magi/image-to-vide")
    error = info.value
    assert isinstance(error, FalbudgetError)
    assert isinstance(error, LookupError)
    assert error.endpoint == "fal-ai/magi/image-to-vide"
    # the closest name first; the table has five MAGI names now, so up to three are offered
    assert error.close_matches[0] == MAGI
    assert len(error.close_matches) <= 3
    assert str(error).startswith(
        "unknown endpoint 'fal-ai/magi/image-to-vide'; did you mean 'fal-ai/magi/image-to-video'"
    )


@pytest.mark.parametrize("endpoint", ["FAL-AI/MAGI/IMAGE-TO-VIDEO", "fal-ai/magi/image-to-vid"])
def test_near_misses_suggest_magi(endpoint: str) -> None:
    # names are matched ignoring case; the nearest name comes first
    with pytest.raises(UnknownEndpoint) as info:
        falbudget.quote(endpoint)
    assert info.value.close_matches[0] == MAGI
    assert f"did you mean {MAGI!r}" in str(info.value)


def test_a_fragment_suggests_the_names_containing_it() -> None:
    # "magi" is like "fal-ai/magi" by difflib (2 x 4 matching / (4 + 11) = 0.53 >= 0.5) and like
    # no longer name (image-to-video: 8 / 30 = 0.27); then the names containing it, in table
    # order, up to three in all. ("fal-ai/magi" itself is priced since the MAGI family was added.)
    with pytest.raises(UnknownEndpoint) as info:
        falbudget.quote("magi")
    assert info.value.close_matches == ("fal-ai/magi", MAGI, "fal-ai/magi/extend-video")


def test_unknown_endpoint_without_close_match_says_how_many_are_known() -> None:
    with pytest.raises(UnknownEndpoint) as info:
        falbudget.quote("acme/x")
    assert info.value.close_matches == ()
    assert "the table prices 29 endpoint(s)" in str(info.value)  # MAGI family and 24 popular


@pytest.mark.parametrize("endpoint", [None, 3, ["fal-ai/magi/image-to-video"], ""])
def test_an_endpoint_that_is_not_a_name(endpoint: Any) -> None:
    with pytest.raises(UnknownEndpoint):
        falbudget.quote(endpoint)


def test_the_endpoint_is_checked_before_the_arguments() -> None:
    with pytest.raises(UnknownEndpoint):
        falbudget.quote("acme/x", {"num_frames": "bad"})


# --------------------------------------------------------------------------- the table files


def test_packaged_table_is_byte_identical_to_the_repository_table() -> None:
    assert packaged_table_path().read_bytes() == REPO_TABLE.read_bytes()


def test_fal_budget_pricing_env_replaces_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(
        REPO_TABLE.read_text().replace('table_version: "2026.12.06"', 'table_version: "test-1"')
    )
    monkeypatch.setattr(loader, "_cache", {})
    monkeypatch.setenv("FALBUDGET_PRICING", str(other))
    quote = falbudget.quote(MAGI)
    assert quote.table_version == "test-1"
    assert quote.table_sha256 == hashlib.sha256(other.read_bytes()).hexdigest()
    assert default_table().source == str(other)
    monkeypatch.delenv("FALBUDGET_PRICING")
    # chosen once per process: quote() reads nothing from the environment per call
    assert falbudget.quote(MAGI).table_version == "test-1"
    monkeypatch.setattr(loader, "_cache", {})  # as in a new process
    assert falbudget.quote(MAGI).table_version == "2026.12.06"


def test_default_table_with_a_path_and_its_cache(tmp_path: Path) -> None:
    path = tmp_path / "copy.yaml"
    path.write_bytes(REPO_TABLE.read_bytes())
    table = default_table(path)
    assert default_table(path) is table  # loaded once per path
    assert default_table(str(path)) is table
    assert table.quote(MAGI, {"num_frames": 144}).total == Decimal("1.20")  # 0.80 + 0.40


def test_the_table_is_validated_once_not_per_quote(monkeypatch: pytest.MonkeyPatch) -> None:
    from falbudget.pricing import models

    original = models.TableModel.model_validate
    calls: list[object] = []

    def counting(document: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(document)
        if len(calls) > 1:
            raise AssertionError("the table was validated again")
        return original(document, *args, **kwargs)

    monkeypatch.setattr(models.TableModel, "model_validate", counting)
    monkeypatch.setattr(loader, "_cache", {})
    monkeypatch.delenv("FALBUDGET_PRICING", raising=False)
    for frames in range(1000):
        falbudget.quote(MAGI, {"num_frames": 96 + frames % 97})
    assert len(calls) == 1
    # and a loaded table quotes with pydantic out of the way entirely
    table = default_table()

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("quote() validated the table")

    monkeypatch.setattr(models.TableModel, "model_validate", refuse)
    monkeypatch.setattr(models.EndpointModel, "model_validate", refuse)
    for _ in range(1000):
        assert table.quote(MAGI, {"num_frames": 192}).total == Decimal("1.60")


# --------------------------------------------------------------------------- the other reading

PER_UNIT_LINE = '        amount: "0.20"\n'


def per_unit_reading() -> PriceTable:
    """pricing.yaml with one line changed: each 24 frames beyond 96 is one more $0.80 unit."""
    text = REPO_TABLE.read_text()
    assert text.count(PER_UNIT_LINE) == 1
    changed = text.replace(PER_UNIT_LINE, PER_UNIT_LINE.replace("0.20", "0.80"))
    differing = [
        (a, b) for a, b in zip(text.splitlines(), changed.splitlines(), strict=True) if a != b
    ]
    assert differing == [('        amount: "0.20"', '        amount: "0.80"')]
    return parse_table(changed, source="per-unit-reading.yaml")


@pytest.mark.parametrize(
    ("arguments", "pricing_section", "per_unit"),
    [
        ({}, "0.80", "0.80"),  # 96 frames: no extra unit either way
        ({"num_frames": 97}, "1.00", "1.60"),  # 0.80 + 0.20 | 0.80 + 0.80
        ({"num_frames": 120}, "1.00", "1.60"),  # 0.80 + 0.20 | 0.80 + 0.80
        ({"num_frames": 121}, "1.20", "2.40"),  # 0.80 + 2x0.20 | 0.80 + 2x0.80
        ({"num_frames": 144}, "1.20", "2.40"),  # 0.80 + 2x0.20 | 0.80 + 2x0.80
        ({"num_frames": 168}, "1.40", "3.20"),  # 0.80 + 3x0.20 | 0.80 + 3x0.80
        ({"num_frames": 192}, "1.60", "4.00"),  # 0.80 + 4x0.20 | 0.80 + 4x0.80
        ({"num_frames": 144, "resolution": "480p", "num_inference_steps": 32}, "1.20", "2.40"),
        # (0.80 + 0.40) x 0.5 x 2 | (0.80 + 1.60) x 0.5 x 2
        ({"num_frames": 192, "num_inference_steps": 64}, "6.40", "16.00"),
        # (0.80 + 0.80) x 4 | (0.80 + 3.20) x 4
    ],
)
def test_the_other_reading_is_a_one_line_change(
    arguments: dict[str, Any], pricing_section: str, per_unit: str
) -> None:
    assert falbudget.quote(MAGI, arguments).total == Decimal(pricing_section)
    other = per_unit_reading().quote(MAGI, arguments)
    assert other.total == Decimal(per_unit)
    assert str(other.total) == per_unit


def test_the_other_reading_shows_in_the_line_items_and_hash() -> None:
    other = per_unit_reading().quote(MAGI, {"num_frames": 144})
    assert other.line_items[1].amount == Decimal("1.60")  # 2 x 0.80
    assert other.line_items[1].detail == "2 extra seconds"
    assert other.table_sha256 != falbudget.quote(MAGI).table_sha256


# --------------------------------------------------------------------------- robustness


def test_the_callers_decimal_context_does_not_change_a_price() -> None:
    import decimal

    with decimal.localcontext() as context:
        context.prec = 2
        context.rounding = decimal.ROUND_FLOOR
        context.traps[decimal.Inexact] = True
        context.traps[decimal.Rounded] = True
        # (0.80 + 3 x 0.20) x 1 x 4 = 5.60, and 0.80 x 0.5 = 0.40
        assert total({"num_frames": 150, "num_inference_steps": 64}) == Decimal("5.60")
        assert total({"resolution": "480p"}) == Decimal("0.40")


def test_quotes_share_nothing_mutable() -> None:
    first = falbudget.quote(MAGI, {"num_frames": 144})
    second = falbudget.quote(MAGI, {"num_frames": 144})
    assert first == second
    assert first.arguments is not second.arguments
    assert first.line_items == second.line_items


_PROBES: list[Any] = [
    None, True, False, 0, 1, -1, 4, 16, 96, 144, 192, 193, 10**6, 1.0, 144.0, float("nan"),
    "480p", "720p", "1:1", "auto", "", "x", "144", {}, {"width": 512, "height": 512}, [],
]  # fmt: skip


def test_the_inline_input_check_agrees_with_the_full_one() -> None:
    """quote() accepts the usual values of integer, string and boolean inputs inline, without
    InputRule.check: on every input of every endpoint of the shipped table, for values of every
    type in and out of range, it returns or refuses exactly what check alone does, with the
    same message."""
    table = default_table(REPO_TABLE)
    compared = 0
    for endpoint in table.endpoints.values():
        for version in endpoint.versions or (endpoint,):
            # a text a characters rule prices is needed by every quote: given, valid
            base = {n: "a" * (version.inputs[n].min_length or 1) for n in version._needed}
            for name, spec in version.inputs.items():
                for value in _PROBES:
                    try:
                        expected: object = spec.check(version.name, value)
                    except falbudget.InvalidArguments as exc:
                        expected = str(exc)
                    try:
                        got: object = version.normalize_arguments({**base, name: value})[name]
                    except falbudget.InvalidArguments as exc:
                        got = str(exc)
                    assert type(got) is type(expected) and (got == expected or got is expected), (
                        version.name,
                        name,
                        value,
                    )
                    compared += 1
    assert compared > 1_000
