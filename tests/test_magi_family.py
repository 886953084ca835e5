"""The rest of the MAGI-1 family in the packaged price table (docs/pricing.md, "MAGI family").

Every expected total is worked out by hand from fal's published prices, read 2026-11-30:

- fal-ai/magi (text to video) and fal-ai/magi/extend-video: "$0.80 to generate one four-second
  video ... Additional seconds will cost $0.20 each, calculated at 24 frames per second ...
  multiplied x2 at 32 steps, x3 at 48 and x4 at 64"; 480p is 0.5 billing units, 720p is 1.
- fal-ai/magi-distilled (text to video) and fal-ai/magi-distilled/extend-video: "$0.32 ... one
  four-second video ... Additional seconds will cost $0.08 each ... x2 at 32 steps"; the same
  resolution factors; steps 4, 8, 16 or 32.

read the way image to video is read (docs/pricing.md section 2):

    total = (base + per_second x ceil((num_frames - 96) / 24)) x resolution x max(1, steps / 16)

fal-ai/magi-distilled/image-to-video has no published price that could be found: it is left
out of the table, so quoting it (and so guarding it) is refused.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest

from falbudget import InvalidArguments, UnknownEndpoint
from falbudget.cli import main
from falbudget.pricing import PriceTable, load_table, packaged_table_path

IMAGE = "fal-ai/magi/image-to-video"
TEXT = "fal-ai/magi"
EXTEND = "fal-ai/magi/extend-video"
DISTILLED = "fal-ai/magi-distilled"
DISTILLED_EXTEND = "fal-ai/magi-distilled/extend-video"
ADDED = (TEXT, EXTEND, DISTILLED, DISTILLED_EXTEND)
FULL_PRICE = (TEXT, EXTEND)
DISTILLED_PRICE = (DISTILLED, DISTILLED_EXTEND)
LEFT_OUT = "fal-ai/magi-distilled/image-to-video"

SOURCES = {
    TEXT: "https://fal.ai/models/fal-ai/magi/llms.txt",
    EXTEND: "https://fal.ai/models/fal-ai/magi/extend-video/llms.txt",
    DISTILLED: "https://fal.ai/models/fal-ai/magi-distilled/llms.txt",
    DISTILLED_EXTEND: "https://fal.ai/models/fal-ai/magi-distilled/extend-video/llms.txt",
}

# the examples fal's pages give ("Required Parameters Example"), inputs as published
TEXT_PROMPT = (
    "Close-up shot: the old sea captain stares intently, pipe in mouth, wisps of smoke curling"
    " around his weathered face. The camera begins a slow clockwise orbit, pulling back. Finally,"
    " the camera rises high above, revealing the entire wooden sailing ship cutting through the"
    " waves, the captain unmoved, gazing toward the distant horizon."
)
REQUIRED_EXAMPLES: dict[str, dict[str, Any]] = {
    TEXT: {"prompt": TEXT_PROMPT},
    EXTEND: {
        "prompt": "",
        "video_url": "https://v3.fal.media/files/zebra/w4T087gvzG5LMGipMpPCO_pour-2s.mp4",
    },
    DISTILLED: {"prompt": TEXT_PROMPT},
    DISTILLED_EXTEND: {
        "prompt": "",
        "video_url": "https://v3.fal.media/files/rabbit/"
        "lTH9PY_LQG0FjueBxMfDN_0395dec3-0c4a-4c25-8399-ebb198b73a30.mp4",
    },
}
# each page's "Full Example" adds the defaults, written out
FULL_EXAMPLE_EXTRAS = {
    "num_frames": 96,
    "resolution": "720p",
    "num_inference_steps": 16,
    "enable_safety_checker": True,
    "aspect_ratio": "auto",
}


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return load_table(packaged_table_path())


def total(table: PriceTable, endpoint: str, arguments: dict[str, Any] | None = None) -> Decimal:
    return table.quote(endpoint, arguments).total


# --- the published examples -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "price", "runs_per_dollar"),
    [
        # "$0.80 to generate one four-second video. For $1 you can run this model approximately
        # 1 time": 1 / 0.80 = 1.25 -> 1
        (TEXT, "0.80", 1),
        (EXTEND, "0.80", 1),
        # "$0.32 ... approximately 3 times": 1 / 0.32 = 3.125 -> 3
        (DISTILLED, "0.32", 3),
        (DISTILLED_EXTEND, "0.32", 3),
    ],
)
def test_the_pages_examples_cost_one_four_second_video(
    table: PriceTable, endpoint: str, price: str, runs_per_dollar: int
) -> None:
    # both examples are 96 frames (four seconds) at 720p (x1) and 16 steps (x1)
    required = REQUIRED_EXAMPLES[endpoint]
    strict = table.quote(endpoint, required, strict=True)
    assert strict.total == Decimal(price)
    assert strict.total == total(table, endpoint)  # the same with every input left out
    full = table.quote(endpoint, {**required, **FULL_EXAMPLE_EXTRAS}, strict=True)
    assert full.total == Decimal(price)
    assert int(Decimal(1) / strict.total) == runs_per_dollar


@pytest.mark.parametrize("endpoint", FULL_PRICE)
@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({}, "0.80"),  # 0.80 x 1 x 1
        ({"num_frames": 97}, "1.00"),  # a partial second counts whole: 0.80 + 1 x 0.20
        ({"num_frames": 120}, "1.00"),  # 0.80 + 1 x 0.20
        ({"num_frames": 121}, "1.20"),  # 0.80 + 2 x 0.20
        ({"num_frames": 144, "num_inference_steps": 32}, "2.40"),  # (0.80 + 0.40) x 2: "x2 at 32"
        ({"num_frames": 144, "resolution": "480p", "num_inference_steps": 32}, "1.20"),
        ({"num_frames": 168, "resolution": "480p", "num_inference_steps": 8}, "0.70"),  # 1.40 x 0.5
        ({"num_inference_steps": 64}, "3.20"),  # 0.80 x 4: "x4 at 64"
        ({"num_frames": 192, "num_inference_steps": 64}, "6.40"),  # (0.80 + 4 x 0.20) x 4
        ({"resolution": "480p", "num_inference_steps": 4}, "0.40"),  # 0.80 x 0.5 x max(1, 1/4)
    ],
)
def test_full_price_members(
    table: PriceTable, endpoint: str, arguments: dict[str, Any], expected: str
) -> None:
    assert total(table, endpoint, arguments) == Decimal(expected)


@pytest.mark.parametrize("endpoint", DISTILLED_PRICE)
@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({}, "0.32"),  # 0.32 x 1 x 1
        ({"num_frames": 97}, "0.40"),  # a partial second counts whole: 0.32 + 1 x 0.08
        ({"num_frames": 144}, "0.48"),  # 0.32 + 2 x 0.08
        ({"num_frames": 168}, "0.56"),  # 0.32 + 3 x 0.08
        ({"num_inference_steps": 32}, "0.64"),  # 0.32 x 2: "x2 at 32 steps"
        ({"num_frames": 120, "resolution": "480p", "num_inference_steps": 32}, "0.40"),
        ({"num_frames": 192, "num_inference_steps": 32}, "1.28"),  # (0.32 + 4 x 0.08) x 2
        ({"num_frames": 192, "resolution": "480p", "num_inference_steps": 4}, "0.32"),  # 0.64/2
        ({"resolution": "480p", "num_inference_steps": 8}, "0.16"),  # 0.32 x 0.5, no discount
    ],
)
def test_distilled_members(
    table: PriceTable, endpoint: str, arguments: dict[str, Any], expected: str
) -> None:
    assert total(table, endpoint, arguments) == Decimal(expected)


def test_a_distilled_quote_explains_itself(table: PriceTable) -> None:
    quote = table.quote(
        DISTILLED, {"num_frames": 144, "resolution": "480p", "num_inference_steps": 32}
    )
    # 0.32, + 2 x 0.08 = 0.48, x 0.5 = 0.24, x 2 = 0.48
    assert [(i.rule, i.detail, i.effect()) for i in quote.line_items] == [
        ("base", "one four-second video (96 frames)", "0.32"),
        ("extra seconds", "2 extra seconds", "+0.16"),
        ("resolution", "480p", "x0.5"),
        ("steps", "32 steps", "x2"),
    ]
    assert quote.total == Decimal("0.48")
    assert quote.effective_from is None  # plain rules: in effect at every moment


def test_the_extend_start_frame_is_not_priced(table: PriceTable) -> None:
    # the page prices the frames generated (num_frames), not the frames kept from the input
    for endpoint, expected in ((EXTEND, "1.20"), (DISTILLED_EXTEND, "0.48")):
        for start_frame in (0, 32, 1000):
            arguments = {"num_frames": 144, "start_frame": start_frame}
            # 0.80 + 2 x 0.20 = 1.20 | 0.32 + 2 x 0.08 = 0.48
            assert total(table, endpoint, arguments) == Decimal(expected)


@pytest.mark.parametrize(
    ("endpoint", "low", "high"),
    [
        # cheapest 96 frames, 480p, <= 16 steps; dearest 192 frames, 720p, the most steps
        (TEXT, "0.40", "6.40"),  # 0.80 x 0.5 | (0.80 + 4 x 0.20) x 4 (64 steps)
        (EXTEND, "0.40", "6.40"),
        (DISTILLED, "0.16", "1.28"),  # 0.32 x 0.5 | (0.32 + 4 x 0.08) x 2 (32 steps)
        (DISTILLED_EXTEND, "0.16", "1.28"),
    ],
)
def test_price_ranges(table: PriceTable, endpoint: str, low: str, high: str) -> None:
    assert table.endpoint(endpoint).price_range() == (Decimal(low), Decimal(high))


def test_distilled_is_two_fifths_of_full_price_everywhere(table: PriceTable) -> None:
    # 0.32 = 0.4 x 0.80 and 0.08 = 0.4 x 0.20, and the multipliers are the same, so wherever
    # both accept the arguments (steps up to 32) a distilled request costs 0.4 x the full one
    full, distilled = table.endpoint(TEXT), table.endpoint(DISTILLED)
    checked = 0
    for arguments in distilled.grid():
        assert distilled.quote(arguments).total == Decimal("0.4") * full.quote(arguments).total
        checked += 1
    assert checked == 97 * 2 * 4  # 96..192 frames x 2 resolutions x 4 step counts


def test_the_full_price_members_cost_what_image_to_video_costs(table: PriceTable) -> None:
    # the three full-price pages publish the same prices; every priced configuration agrees
    image = table.endpoint(IMAGE)
    checked = 0
    for arguments in image.grid():
        expected = image.quote(arguments).total
        assert total(table, TEXT, arguments) == expected
        assert total(table, EXTEND, arguments) == expected
        checked += 1
    assert checked == 97 * 2 * 5  # 96..192 frames x 2 resolutions x 5 step counts


# --- the inputs -----------------------------------------------------------------------------------


def refusal(
    table: PriceTable, endpoint: str, arguments: dict[str, Any], strict: bool = False
) -> Any:
    with pytest.raises(InvalidArguments) as info:
        table.quote(endpoint, arguments, strict=strict)
    return info.value


@pytest.mark.parametrize(
    ("endpoint", "inputs"),
    [
        (TEXT, ["prompt", "num_frames", "seed", "resolution", "num_inference_steps",
                "enable_safety_checker", "aspect_ratio"]),
        (DISTILLED, ["prompt", "num_frames", "seed", "resolution", "num_inference_steps",
                     "enable_safety_checker", "aspect_ratio"]),
        (EXTEND, ["prompt", "video_url", "num_frames", "start_frame", "seed", "resolution",
                  "num_inference_steps", "enable_safety_checker", "aspect_ratio"]),
        (DISTILLED_EXTEND, ["prompt", "video_url", "num_frames", "start_frame", "seed",
                            "resolution", "num_inference_steps", "enable_safety_checker",
                            "aspect_ratio"]),
    ],
)  # fmt: skip
def test_each_schema_is_the_pages(table: PriceTable, endpoint: str, inputs: list[str]) -> None:
    assert list(table.endpoint(endpoint).inputs) == inputs


@pytest.mark.parametrize(
    ("endpoint", "missing", "given"),
    [
        (TEXT, "prompt", {}),
        (DISTILLED, "prompt", {}),
        (EXTEND, "prompt", {"video_url": "https://example.com/a.mp4"}),
        (EXTEND, "video_url", {"prompt": "go on"}),
        (DISTILLED_EXTEND, "prompt", {"video_url": "https://example.com/a.mp4"}),
        (DISTILLED_EXTEND, "video_url", {"prompt": "go on"}),
    ],
)
def test_strict_mode_requires_what_fal_requires(
    table: PriceTable, endpoint: str, missing: str, given: dict[str, Any]
) -> None:
    error = refusal(table, endpoint, given, strict=True)
    assert (error.endpoint, error.parameter, error.allowed) == (
        endpoint,
        missing,
        "required: a string",
    )
    assert str(error) == f"{endpoint}: {missing}=(missing) is not allowed: required: a string"
    # a plain quote may leave them out: they do not change the price
    assert table.quote(endpoint, given).total in (Decimal("0.80"), Decimal("0.32"))


@pytest.mark.parametrize("endpoint", ADDED)
@pytest.mark.parametrize(
    ("arguments", "parameter", "allowed"),
    [
        ({"num_frames": 95}, "num_frames", "an integer from 96 to 192"),
        ({"num_frames": 193}, "num_frames", "an integer from 96 to 192"),
        ({"num_frames": "120"}, "num_frames", "an integer from 96 to 192 (give the number itself,"
         " not a string)"),
        ({"resolution": "1080p"}, "resolution", 'one of "480p", "720p"'),
        ({"aspect_ratio": "4:3"}, "aspect_ratio", 'one of "auto", "16:9", "9:16", "1:1"'),
        ({"enable_safety_checker": 1}, "enable_safety_checker", "true or false"),
        ({"seed": 1.5}, "seed", "an integer or null (a float is not an integer, even when whole)"),
        ({"prompt": 5}, "prompt", "a string"),
    ],
)  # fmt: skip
def test_every_member_checks_its_inputs(
    table: PriceTable, endpoint: str, arguments: dict[str, Any], parameter: str, allowed: str
) -> None:
    error = refusal(table, endpoint, arguments)
    value = arguments[parameter]
    assert (error.endpoint, error.parameter, error.value, error.allowed) == (
        endpoint,
        parameter,
        value,
        allowed,
    )


@pytest.mark.parametrize("endpoint", ADDED)
def test_seed_may_be_null(table: PriceTable, endpoint: str) -> None:
    assert table.quote(endpoint, {"seed": None}).arguments["seed"] is None


@pytest.mark.parametrize(
    ("endpoint", "steps", "allowed"),
    [
        # "x3 at 48" is in the full-price prose, but not among the schema's options
        (TEXT, 48, "one of 4, 8, 16, 32, 64"),
        (EXTEND, 48, "one of 4, 8, 16, 32, 64"),
        # the distilled schema stops at 32
        (DISTILLED, 64, "one of 4, 8, 16, 32"),
        (DISTILLED_EXTEND, 64, "one of 4, 8, 16, 32"),
        (DISTILLED, 48, "one of 4, 8, 16, 32"),
        # the prose's default "16" is a string: refused, with a hint
        (TEXT, "16", "one of 4, 8, 16, 32, 64 (give the number itself, not a string)"),
    ],
)
def test_steps_outside_the_schema_are_refused(
    table: PriceTable, endpoint: str, steps: Any, allowed: str
) -> None:
    error = refusal(table, endpoint, {"num_inference_steps": steps})
    assert (error.parameter, error.value, error.allowed) == ("num_inference_steps", steps, allowed)
    if steps == 64:
        assert str(error) == f"{endpoint}: num_inference_steps=64 is not allowed: {allowed}"


@pytest.mark.parametrize("endpoint", [EXTEND, DISTILLED_EXTEND])
@pytest.mark.parametrize(
    ("start_frame", "allowed"),
    [
        ("32", "an integer (give the number itself, not a string)"),
        (32.0, "an integer (a float is not an integer, even when whole)"),
        (None, "an integer"),  # not nullable: leave it out for fal's default
        (True, "an integer (a boolean is not a number)"),
    ],
)
def test_start_frame_is_an_integer(
    table: PriceTable, endpoint: str, start_frame: Any, allowed: str
) -> None:
    error = refusal(table, endpoint, {"start_frame": start_frame})
    assert (error.parameter, error.allowed) == ("start_frame", allowed)


@pytest.mark.parametrize(
    ("endpoint", "name", "suggested"),
    [
        (TEXT, "image_url", None),  # text to video takes no image
        (DISTILLED, "video_url", None),
        (EXTEND, "image_url", "video_url"),
        (DISTILLED_EXTEND, "start_frames", "start_frame"),
    ],
)
def test_inputs_of_another_member_are_unknown(
    table: PriceTable, endpoint: str, name: str, suggested: str | None
) -> None:
    error = refusal(table, endpoint, {name: "x"})
    assert error.parameter == name
    assert error.allowed.startswith("unknown parameter; ")
    if suggested is not None:
        assert f"did you mean {suggested}" in error.allowed  # the closest name first


def test_the_left_out_variant_is_not_priced(table: PriceTable) -> None:
    assert LEFT_OUT not in table
    with pytest.raises(UnknownEndpoint) as info:
        table.quote(LEFT_OUT)
    assert info.value.endpoint == LEFT_OUT


# --- the table's provenance -----------------------------------------------------------------------


def test_every_packaged_endpoint_names_its_source_and_read_date(table: PriceTable) -> None:
    family = [name for name in table.endpoints if "magi" in name]
    assert family == [IMAGE, *ADDED]  # first in the table; the popular endpoints follow
    assert list(table.endpoints)[: len(family)] == family
    for name, endpoint in table.endpoints.items():
        # a fal.ai page of the endpoint itself, over https (the family read in November 2026,
        # the popular endpoints of docs/catalog.md on 2026-12-06)
        assert endpoint.source_url.startswith(f"https://fal.ai/models/{name}"), name
        read = dt.date.fromisoformat(endpoint.price_read_on)
        last = dt.date(2026, 11, 30) if name in family else dt.date(2026, 12, 6)
        assert dt.date(2026, 11, 24) <= read <= last, name
        assert endpoint.title, name
    assert table.endpoint(IMAGE).price_read_on == "2026-11-24"
    for name in ADDED:
        assert table.endpoint(name).source_url == SOURCES[name]
        assert table.endpoint(name).price_read_on == "2026-11-30"


# --- on the command line --------------------------------------------------------------------------


def test_quote_a_member_from_the_shell(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "quote",
            DISTILLED_EXTEND,
            "prompt=go on",
            "video_url=https://example.com/a.mp4",
            "num_frames=121",
            "start_frame=40",
            "--strict",
            "--format",
            "json",
        ]
    )
    captured = capsys.readouterr()
    assert (code, captured.err) == (0, "")
    data = json.loads(captured.out)
    # 121 frames: ceil(25 / 24) = 2 extra seconds: 0.32 + 2 x 0.08 = 0.48, 720p, 16 steps
    assert (data["endpoint"], data["total"]) == (DISTILLED_EXTEND, "0.48")
    assert data["arguments"]["start_frame"] == 40

    code = main(["quote", DISTILLED, "num_inference_steps=64"])
    captured = capsys.readouterr()
    assert (code, captured.out) == (2, "")
    assert captured.err == (
        "falbudget: error: fal-ai/magi-distilled: num_inference_steps=64 is not allowed:"
        " one of 4, 8, 16, 32\n"
    )
