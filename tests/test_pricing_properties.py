"""Properties of quote() over generated inputs (hypothesis).

(a) For any JSON-like input, the only exceptions that escape are InvalidArguments and
    UnknownEndpoint. (b) On valid MAGI-1 requests the price is positive, monotone in every priced
    input, never below the per-frame reading of the Pricing section, never above the dearest
    request, a whole number of micro-USD, and its JSON form round-trips.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import falbudget
from falbudget import InvalidArguments, Quote, UnknownEndpoint

MAGI = "fal-ai/magi/image-to-video"
PARAMETERS = [
    "prompt",
    "image_url",
    "num_frames",
    "seed",
    "resolution",
    "num_inference_steps",
    "enable_safety_checker",
    "aspect_ratio",
]
STEPS = [4, 8, 16, 32, 64]
RESOLUTIONS = ["480p", "720p"]
DEAREST = Decimal("6.40")  # (0.80 + 4 x 0.20) x 1 x 64/16

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
# values that are close to valid: the boundaries, near-miss types and the real enum members
near_values = (
    json_values
    | st.integers(min_value=90, max_value=200)
    | st.sampled_from([*STEPS, 48, "16", 16.0, 120.0, "480p", "720p", "1080p", "auto", "4:3"])
)
parameter_names = st.sampled_from(PARAMETERS) | st.sampled_from(["num_frame", "steps", ""])
endpoints = st.text() | st.sampled_from([MAGI, MAGI.upper(), "fal-ai/magi", MAGI + " "])


def quote_or_refuse(endpoint: Any, arguments: Any, strict: bool) -> Quote | None:
    try:
        quote = falbudget.quote(endpoint, arguments, strict=strict)
    except (InvalidArguments, UnknownEndpoint) as error:
        assert str(error)  # every refusal says something
        return None
    assert isinstance(quote.total, Decimal)
    return quote


# --------------------------------------------------------------------------- (a) no other error


@FAST
@given(arguments=json_values, strict=st.booleans())
def test_any_json_value_as_arguments(arguments: Any, strict: bool) -> None:
    quote_or_refuse(MAGI, arguments, strict)


@FAST
@given(arguments=st.dictionaries(parameter_names, near_values, max_size=9), strict=st.booleans())
def test_real_parameter_names_with_any_json_values(arguments: dict[str, Any], strict: bool) -> None:
    quote = quote_or_refuse(MAGI, arguments, strict)
    if quote is not None:
        assert Decimal("0.40") <= quote.total <= DEAREST


@FAST
@given(endpoint=endpoints, arguments=json_values, strict=st.booleans())
def test_any_endpoint_string(endpoint: str, arguments: Any, strict: bool) -> None:
    quote_or_refuse(endpoint, arguments, strict)


@FAST
@given(endpoint=json_values)
def test_any_json_value_as_the_endpoint(endpoint: Any) -> None:
    quote_or_refuse(endpoint, None, False)


# --------------------------------------------------------------------------- (b) valid requests

valid_arguments = st.fixed_dictionaries(
    {},
    optional={
        "prompt": st.text(max_size=20),
        "image_url": st.text(max_size=20),
        "num_frames": st.integers(min_value=96, max_value=192),
        "seed": st.none() | st.integers(),
        "resolution": st.sampled_from(RESOLUTIONS),
        "num_inference_steps": st.sampled_from(STEPS),
        "enable_safety_checker": st.booleans(),
        "aspect_ratio": st.sampled_from(["auto", "16:9", "9:16", "1:1"]),
    },
)


def price(arguments: dict[str, Any]) -> Decimal:
    return falbudget.quote(MAGI, arguments).total


def per_frame_reading(arguments: dict[str, Any]) -> Fraction:
    """The cheapest reading of the Pricing section: $0.20 a second prorated by the frame, so
    (0.80 + (frames - 96) x 0.20 / 24) x resolution x max(1, steps / 16). Exact fractions."""
    frames: int = arguments.get("num_frames", 96)
    resolution = Fraction(1, 2) if arguments.get("resolution", "720p") == "480p" else Fraction(1)
    steps = Fraction(arguments.get("num_inference_steps", 16), 16)
    length = Fraction(80, 100) + (frames - 96) * Fraction(20, 100) / 24
    return length * resolution * max(Fraction(1), steps)


@FAST
@given(arguments=valid_arguments)
def test_valid_requests_are_priced_within_bounds(arguments: dict[str, Any]) -> None:
    quote = falbudget.quote(MAGI, arguments)
    total = quote.total
    assert total > 0
    assert Decimal("0.40") <= total <= DEAREST
    assert Fraction(total) >= per_frame_reading(arguments)
    exponent = total.as_tuple().exponent
    assert isinstance(exponent, int) and exponent >= -6  # at most 6 decimal places
    assert total == total.quantize(Decimal("0.01"))  # this table only ever needs cents


@FAST
@given(arguments=valid_arguments, strict=st.booleans())
def test_json_round_trips_to_an_equal_quote(arguments: dict[str, Any], strict: bool) -> None:
    if strict:
        arguments = {"prompt": "p", "image_url": "u", **arguments}
    quote = falbudget.quote(MAGI, arguments, strict=strict)
    text = quote.to_json()
    again = Quote.from_json(text)
    assert again == quote
    assert again.to_json() == text
    assert dict(again.arguments) == dict(quote.arguments)


@FAST
@given(
    arguments=valid_arguments,
    frames=st.lists(st.integers(min_value=96, max_value=192), min_size=2, max_size=2),
)
def test_monotone_in_frames(arguments: dict[str, Any], frames: list[int]) -> None:
    low, high = sorted(frames)
    assert price({**arguments, "num_frames": low}) <= price({**arguments, "num_frames": high})


@FAST
@given(
    arguments=valid_arguments,
    indices=st.lists(st.integers(min_value=0, max_value=len(STEPS) - 1), min_size=2, max_size=2),
)
def test_monotone_in_steps(arguments: dict[str, Any], indices: list[int]) -> None:
    low, high = (STEPS[i] for i in sorted(indices))
    assert price({**arguments, "num_inference_steps": low}) <= price(
        {**arguments, "num_inference_steps": high}
    )


@FAST
@given(arguments=valid_arguments)
def test_monotone_in_resolution(arguments: dict[str, Any]) -> None:
    assert price({**arguments, "resolution": "480p"}) <= price({**arguments, "resolution": "720p"})


@FAST
@given(arguments=valid_arguments)
def test_unpriced_inputs_do_not_change_the_price(arguments: dict[str, Any]) -> None:
    priced: dict[str, Any] = {
        key: arguments[key]
        for key in ("num_frames", "resolution", "num_inference_steps")
        if key in arguments
    }
    assert price(arguments) == price(priced)
