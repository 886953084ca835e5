"""Planning, the inverse of a quote: how_many, best_within, cheapest_meeting, price_grid and
`falbudget plan`. Every expected figure is worked out by hand beside the test (docs/pricing.md,
from fal's MAGI-1 page):

    MAGI-1: total = (0.80 + 0.20 x ceil((num_frames - 96) / 24)) x resolution x max(1, steps / 16)

with resolution 0.5 for 480p and 1 for 720p, num_frames 96..192, steps 4, 8, 16, 32 or 64. The
default order of preference is most frames, then 720p over 480p, then most steps.

The made-up table ACME (below) shows the planner is generic: other names, a string enum of three,
a boolean enum and a per-page rule.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import runpy
import shlex
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from falbudget import Guard, InvalidArguments, NoPriceInEffect
from falbudget.cli import main
from falbudget.errors import FalbudgetError
from falbudget.ledger import open_ledger
from falbudget.pricing import PricedEndpoint, Quote, load_table, packaged_table_path, parse_table
from falbudget.pricing.planning import (
    Fit,
    PlanningError,
    best_within,
    cheapest_meeting,
    effective_order,
    how_many,
    price_grid,
)

MAGI = "fal-ai/magi/image-to-video"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "planning.md"

# ACME: total = (0.10 + 0.05 x (pages - 1)) x quality x color
#   quality: draft 0.5, standard 1, ultra 3 (listed in that order: ultra is "largest")
#   color:   false 1, true 2 (listed [false, true])
#   copies does not change the price.
ACME_TABLE = """\
schema_version: 1
table_version: "acme-3"
effective_date: 2026-01-01
currency: USD
endpoints:
  acme/print:
    title: Acme print
    source_url: https://example.com/acme/print
    price_read_on: 2026-01-02
    inputs:
      document_url: {type: string, required: true}
      pages: {type: integer, minimum: 1, maximum: 5, default: 1}
      quality: {type: string, enum: ["draft", "standard", "ultra"], default: "standard"}
      color: {type: boolean, enum: [false, true], default: false}
      copies: {type: integer, minimum: 1, maximum: 9, default: 1}
    rules:
      - {name: base, kind: base, amount: "0.10"}
      - {name: extra pages, kind: per_unit, input: pages, above: 1, unit: 1, amount: "0.05",
         unit_name: page}
      - name: quality
        kind: lookup
        input: quality
        factors: {"draft": "0.5", "standard": "1", "ultra": "3"}
      - {name: color, kind: lookup, input: color, factors: {"false": "1", "true": "2"}}
  acme/tts:
    source_url: https://example.com/acme/tts
    price_read_on: 2026-01-02
    inputs:
      characters: {type: integer, minimum: 1, default: 1000}
      voice: {type: string, enum: ["plain", "studio"], default: "plain"}
    rules:
      - {name: base, kind: base, amount: "0.01"}
      - {name: per 1000, kind: per_unit, input: characters, above: 1000, unit: 1000,
         amount: "0.01", unit_name: thousand}
      - {name: voice, kind: lookup, input: voice, factors: {"plain": "1", "studio": "2"}}
  acme/free:
    source_url: https://example.com/acme/free
    price_read_on: 2026-01-02
    inputs:
      size: {type: integer, enum: [1, 2], default: 1}
    rules:
      - {name: base, kind: base, amount: "0"}
      - {name: size, kind: proportional, input: size, per: 1}
"""

# Dated prices: 1.00 a request before 2026-06-01, 2.00 from then; a third tier from 2027.
HISTORY_TABLE = """\
schema_version: 1
table_version: "hist-1"
effective_date: 2026-01-01
currency: USD
endpoints:
  acme/clip:
    source_url: https://example.com/acme/clip
    price_read_on: 2026-01-01
    inputs:
      tier: {type: string, enum: ["s", "m"], default: "s"}
    versions:
      - effective_from: 2026-01-01
        rules:
          - {name: base, kind: base, amount: "1.00"}
          - {name: tier, kind: lookup, input: tier, factors: {"s": "1", "m": "3"}}
      - effective_from: 2026-06-01
        rules:
          - {name: base, kind: base, amount: "2.00"}
          - {name: tier, kind: lookup, input: tier, factors: {"s": "1", "m": "3"}}
      - effective_from: 2027-01-01
        inputs:
          tier: {type: string, enum: ["s", "m", "l"], default: "s"}
        rules:
          - {name: base, kind: base, amount: "2.00"}
          - {name: tier, kind: lookup, input: tier, factors: {"s": "1", "m": "3", "l": "5"}}
"""


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FALBUDGET_PRICING", "FALBUDGET_CONFIG", "FALBUDGET_LEDGER"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def magi() -> PricedEndpoint:
    return load_table(packaged_table_path()).endpoint(MAGI)


@pytest.fixture(scope="module")
def acme() -> PricedEndpoint:
    return parse_table(ACME_TABLE).endpoint("acme/print")


@pytest.fixture(scope="module")
def history() -> PricedEndpoint:
    return parse_table(HISTORY_TABLE).endpoint("acme/clip")


def priced(quote: Quote | None) -> tuple[Any, ...] | None:
    """The MAGI-1 priced inputs of a quote, and its total: (frames, resolution, steps, total)."""
    if quote is None:
        return None
    args = quote.arguments
    return (args["num_frames"], args["resolution"], args["num_inference_steps"], quote.total)


def printed(quote: Quote | None) -> tuple[Any, ...] | None:
    if quote is None:
        return None
    args = quote.arguments
    return (args["pages"], args["quality"], args["color"], quote.total)


# --- how_many ------------------------------------------------------------------------------------


def test_spend_is_exact_beyond_the_decimal_context(magi: PricedEndpoint) -> None:
    """31 digits: amount x 10 = 1234567890123456789012345678905 and price x 10 = 8, so
    count = 154320986265432098626543209863 (x 8 = ...904), remainder 1: leftover 0.10 and
    spend 123456789012345678901234567890.40, which with the leftover is the amount again."""
    fit = how_many(magi, {}, "123456789012345678901234567890.5")
    assert fit.count == 154320986265432098626543209863
    assert fit.leftover == Decimal("0.10")
    assert str(fit.spend) == "123456789012345678901234567890.40"


@pytest.mark.parametrize(
    ("arguments", "amount", "price", "count", "leftover"),
    [
        ({}, "10.00", "0.80", 12, "0.40"),  # 12 x 0.80 = 9.60, 10.00 - 9.60 = 0.40
        ({"num_frames": 144}, "10.00", "1.20", 8, "0.40"),  # 8 x 1.20 = 9.60
        ({"resolution": "480p"}, "10.00", "0.40", 25, "0.00"),  # 25 x 0.40 = 10.00 exactly
        (
            {"num_frames": 192, "num_inference_steps": 64},
            "10.00",
            "6.40",  # 1.60 x 4
            1,
            "3.60",
        ),
        ({}, "0.79", "0.80", 0, "0.79"),  # not one
        ({}, "0.80", "0.80", 1, "0.00"),  # exactly one: equal fits
        ({}, "0", "0.80", 0, "0"),
        ({}, "0.8000001", "0.80", 1, "0.0000001"),  # finer than a micro-USD: kept exact
        ({}, 100, "0.80", 125, "0"),  # an int amount: 125 x 0.80 = 100
    ],
)
def test_how_many(
    magi: PricedEndpoint,
    arguments: dict[str, Any],
    amount: str | int,
    price: str,
    count: int,
    leftover: str,
) -> None:
    fit = how_many(magi, arguments, amount)
    assert isinstance(fit, Fit)
    assert fit.price == Decimal(price)
    assert fit.count == count
    assert fit.leftover == Decimal(leftover)
    assert fit.amount == Decimal(str(amount))
    assert fit.spend == Decimal(price) * count
    assert fit.quote.total == fit.price


def test_how_many_is_exact_at_any_size(magi: PricedEndpoint) -> None:
    # 10^30 / 0.80 = 1.25 x 10^30, beyond the 28 digits of the default Decimal context
    fit = how_many(magi, {}, Decimal("1E+30"))
    assert fit.count == 1_250_000_000_000_000_000_000_000_000_000
    assert fit.leftover == 0
    # 10^30 + 0.79: the same count, 0.79 left
    fit = how_many(magi, {}, Decimal("1000000000000000000000000000000.79"))
    assert fit.count == 1_250_000_000_000_000_000_000_000_000_000
    assert fit.leftover == Decimal("0.79")


def test_how_many_uses_the_other_inputs_defaults(magi: PricedEndpoint) -> None:
    fit = how_many(magi, {"aspect_ratio": "16:9"}, "1.00")
    assert fit.quote.arguments["aspect_ratio"] == "16:9"
    assert priced(fit.quote) == (96, "720p", 16, Decimal("0.80"))


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("-1", "must not be negative"),
        (0.5, "floats cannot hold cents"),
        ("ten", "expected a decimal amount"),
        ("NaN", "finite"),
    ],
)
def test_how_many_refuses_bad_amounts(magi: PricedEndpoint, amount: Any, message: str) -> None:
    with pytest.raises(PlanningError, match=message):
        how_many(magi, {}, amount)


def test_how_many_refuses_bad_arguments(magi: PricedEndpoint) -> None:
    with pytest.raises(InvalidArguments, match="num_frames=95"):
        how_many(magi, {"num_frames": 95}, "10")


def test_a_free_request_has_no_count() -> None:
    free = parse_table(ACME_TABLE).endpoint("acme/free")
    with pytest.raises(PlanningError, match=r"costs 0\.00, so any number of them fit"):
        how_many(free, {}, "1.00")


def test_how_many_on_another_table(acme: PricedEndpoint) -> None:
    # 2 pages, ultra: (0.10 + 0.05) x 3 = 0.45; 1.00 // 0.45 = 2, 1.00 - 0.90 = 0.10
    fit = how_many(acme, {"pages": 2, "quality": "ultra"}, "1.00")
    assert (fit.price, fit.count, fit.leftover) == (Decimal("0.45"), 2, Decimal("0.10"))


def test_how_many_at_a_moment(history: PricedEndpoint) -> None:
    # 1.00 a request until 2026-05-31, 2.00 from 2026-06-01
    assert how_many(history, {}, "10", at=dt.date(2026, 5, 31)).count == 10
    assert how_many(history, {}, "10", at=dt.date(2026, 6, 1)).count == 5
    with pytest.raises(NoPriceInEffect):
        how_many(history, {}, "10", at=dt.date(2025, 12, 31))


# --- the order of preference ---------------------------------------------------------------------


def test_the_default_order_is_the_priced_inputs_in_rule_order(magi: PricedEndpoint) -> None:
    assert effective_order(magi) == ("num_frames", "resolution", "num_inference_steps")


def test_a_given_order_comes_first_and_the_rest_follow(magi: PricedEndpoint) -> None:
    assert effective_order(magi, ["-num_inference_steps"]) == (
        "-num_inference_steps",
        "num_frames",
        "resolution",
    )
    assert effective_order(magi, ["resolution", "+num_frames"]) == (
        "resolution",
        "num_frames",
        "num_inference_steps",
    )


@pytest.mark.parametrize(
    ("order", "message"),
    [
        (["seconds"], "'seconds' is not an input of this endpoint; priced inputs: num_frames"),
        (["aspect_ratio"], "'aspect_ratio' is not a priced input"),
        (["num_frames", "-num_frames"], "'num_frames' is given twice"),
        ("num_frames", "give a list of input names"),
        ([3], "an input name, or -name"),
    ],
)
def test_bad_orders_are_named(magi: PricedEndpoint, order: Any, message: str) -> None:
    with pytest.raises(PlanningError, match=re.escape(message)):
        best_within(magi, "2.00", order)


# --- best_within ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("per_request", "expected"),
    [
        # 192 frames at 720p: 0.80 + 4 x 0.20 = 1.60 at 4, 8 or 16 steps; 32 steps is 3.20
        ("2.00", (192, "720p", 16, "1.60")),
        # 192 frames at 720p is 1.60; at 480p 0.80; 32 steps would make it 1.60
        ("1.00", (192, "480p", 16, "0.80")),
        ("0.80", (192, "480p", 16, "0.80")),
        # 97 frames at 480p is 0.50: only 96 frames fit 0.40
        ("0.40", (96, "480p", 16, "0.40")),
        ("0.49", (96, "480p", 16, "0.40")),
        # 192, 720p, 32 steps = 1.60 x 2 = 3.20; 64 steps = 6.40
        ("3.20", (192, "720p", 32, "3.20")),
        ("6.40", (192, "720p", 64, "6.40")),
        ("1000", (192, "720p", 64, "6.40")),
    ],
)
def test_best_within_by_the_default_order(
    magi: PricedEndpoint, per_request: str, expected: tuple[Any, ...]
) -> None:
    frames, resolution, steps, total = expected
    assert priced(best_within(magi, per_request)) == (frames, resolution, steps, Decimal(total))


def test_nothing_within_the_cheapest_price(magi: PricedEndpoint) -> None:
    assert best_within(magi, "0.39") is None  # the cheapest request is 0.40
    assert best_within(magi, 0) is None


@pytest.mark.parametrize(
    ("per_request", "order", "expected"),
    [
        # steps first: 64 steps at 480p is 0.40 x 4 = 1.60 at 96 frames; 120 frames is
        # (0.80 + 0.20) x 0.5 x 4 = 2.00, 121 frames 2.40; at 720p 64 steps is 3.20 at least
        ("2.00", ["num_inference_steps"], (120, "480p", 64, "2.00")),
        # fewest steps first (4), then most frames and 720p: 1.60
        ("2.00", ["-num_inference_steps"], (192, "720p", 4, "1.60")),
        # 720p first, then fewest frames (96), then most steps: 0.80 x 1 at 16, 1.60 at 32
        ("1.00", ["resolution", "-num_frames"], (96, "720p", 16, "0.80")),
        # 480p preferred: then 192 frames (0.80) and most steps: 32 steps is 1.60, 64 is 3.20
        ("2.00", ["-resolution"], (192, "480p", 32, "1.60")),
    ],
)
def test_best_within_by_a_given_order(
    magi: PricedEndpoint, per_request: str, order: list[str], expected: tuple[Any, ...]
) -> None:
    frames, resolution, steps, total = expected
    found = best_within(magi, per_request, order)
    assert priced(found) == (frames, resolution, steps, Decimal(total))


def test_best_within_with_fixed_inputs(magi: PricedEndpoint) -> None:
    # 480p: 192 frames is 0.80, x2 at 32 steps = 1.60, x4 at 64 = 3.20
    found = best_within(magi, "2.00", fixed={"resolution": "480p"})
    assert priced(found) == (192, "480p", 32, Decimal("1.60"))
    # 64 steps: 720p is 3.20 at least; 480p: (0.80 + 0.20 n) x 2 <= 3.00 -> n <= 3 -> 168 frames
    found = best_within(magi, "3.00", fixed={"num_inference_steps": 64})
    assert priced(found) == (168, "480p", 64, Decimal("2.80"))
    # an input that does not change the price is carried into the quote
    found = best_within(magi, "2.00", fixed={"aspect_ratio": "9:16", "seed": 7})
    assert found is not None
    assert (found.arguments["aspect_ratio"], found.arguments["seed"]) == ("9:16", 7)
    assert priced(found) == (192, "720p", 16, Decimal("1.60"))


def test_best_within_refuses_bad_input(magi: PricedEndpoint) -> None:
    with pytest.raises(PlanningError, match="per_request='-1' is not allowed"):
        best_within(magi, "-1")
    with pytest.raises(InvalidArguments, match='resolution="1080p"'):
        best_within(magi, "2.00", fixed={"resolution": "1080p"})
    with pytest.raises(InvalidArguments, match="unknown parameter"):
        best_within(magi, "2.00", fixed={"frames": 96})


def test_best_within_on_another_table(acme: PricedEndpoint) -> None:
    # default order pages, quality, color. 5 pages: 0.10 + 4 x 0.05 = 0.30 before factors:
    # draft 0.15, standard 0.30, ultra 0.90; color doubles: standard in color 0.60 > 0.50
    assert printed(best_within(acme, "0.50")) == (5, "standard", False, Decimal("0.30"))
    # quality first: ultra at 1 page is 0.30, in color 0.60 > 0.50; then pages: 2 pages 0.45,
    # 3 pages (0.20 x 3) 0.60
    assert printed(best_within(acme, "0.50", ["quality", "color"])) == (
        2,
        "ultra",
        False,
        Decimal("0.45"),
    )
    # color first: 1 page draft in color 0.10; 5 pages draft in color 0.30; standard 0.60
    assert printed(best_within(acme, "0.50", ["color"])) == (5, "draft", True, Decimal("0.30"))


# --- cheapest_meeting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minimums", "expected"),
    [
        # 144 frames at 720p: 0.80 + 2 x 0.20 = 1.20 at 4, 8 and 16 steps: the tie goes to 16
        ({"num_frames": 144, "resolution": "720p"}, (144, "720p", 16, "1.20")),
        # 121 frames: ceil(25 / 24) = 2 extra seconds, 480p: 1.20 x 0.5 = 0.60, the same up to
        # 144 frames: the tie goes to the most frames
        ({"num_frames": 121}, (144, "480p", 16, "0.60")),
        # nothing asked: the cheapest request, 0.40, at 4, 8 or 16 steps: 16
        ({}, (96, "480p", 16, "0.40")),
        # at least 32 steps: 0.40 x 2 = 0.80 at 96 frames and 480p; 97 frames 1.00
        ({"num_inference_steps": 32}, (96, "480p", 32, "0.80")),
        # "at least 10 steps" is by value: 16 (and 32, 64) qualify, 16 is cheapest
        ({"num_inference_steps": 10}, (96, "480p", 16, "0.40")),
        # at least 480p: 480p or 720p
        ({"resolution": "480p"}, (96, "480p", 16, "0.40")),
        # 192 frames at 720p and 64 steps: the dearest request
        (
            {"num_frames": 192, "resolution": "720p", "num_inference_steps": 64},
            (192, "720p", 64, "6.40"),
        ),
    ],
)
def test_cheapest_meeting(
    magi: PricedEndpoint, minimums: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    frames, resolution, steps, total = expected
    found = cheapest_meeting(magi, minimums)
    assert priced(found) == (frames, resolution, steps, Decimal(total))


def test_cheapest_meeting_breaks_ties_by_the_order(magi: PricedEndpoint) -> None:
    # 0.40 at 96 frames, 480p and 4, 8 or 16 steps: fewest steps preferred -> 4
    assert priced(cheapest_meeting(magi, {}, order=["-num_inference_steps"])) == (
        96,
        "480p",
        4,
        Decimal("0.40"),
    )
    # 0.60 at 480p for 121..144 frames: fewest frames preferred -> 121
    assert priced(cheapest_meeting(magi, {"num_frames": 121}, order=["-num_frames"])) == (
        121,
        "480p",
        16,
        Decimal("0.60"),
    )


def test_cheapest_meeting_with_fixed_inputs(magi: PricedEndpoint) -> None:
    # 720p fixed, at least 100 frames: 1.00 for 97..120 frames, the tie goes to 120
    found = cheapest_meeting(magi, {"num_frames": 100}, {"resolution": "720p"})
    assert priced(found) == (120, "720p", 16, Decimal("1.00"))


def test_nothing_meets_minimums_beyond_the_range(magi: PricedEndpoint) -> None:
    assert cheapest_meeting(magi, {"num_frames": 193}) is None  # at most 192
    assert cheapest_meeting(magi, {"num_inference_steps": 65}) is None  # at most 64


@pytest.mark.parametrize(
    ("minimums", "fixed", "message"),
    [
        ({"aspect_ratio": "16:9"}, None, "minimum aspect_ratio: is not a priced input"),
        ({"frames": 144}, None, "minimum frames: is not an input"),
        ({"resolution": "1080p"}, None, "minimum resolution='1080p' is not allowed: one of"),
        ({"num_frames": "144"}, None, "minimum num_frames='144' is not allowed: a number"),
        ({"num_frames": True}, None, "minimum num_frames=True is not allowed: a number"),
        (
            {"resolution": "720p"},
            {"resolution": "720p"},
            "resolution is given both as a minimum and as a fixed value",
        ),
    ],
)
def test_bad_minimums_are_named(
    magi: PricedEndpoint, minimums: dict[str, Any], fixed: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(PlanningError, match=re.escape(message)):
        cheapest_meeting(magi, minimums, fixed)


def test_cheapest_meeting_on_another_table(acme: PricedEndpoint) -> None:
    # at least standard and 3 pages: 0.10 + 2 x 0.05 = 0.20 at standard, no color
    found = cheapest_meeting(acme, {"quality": "standard", "pages": 3})
    assert printed(found) == (3, "standard", False, Decimal("0.20"))
    # color (true is listed after false): 1 page draft in color 0.10 x 0.5 x 2 = 0.10
    assert printed(cheapest_meeting(acme, {"color": True})) == (1, "draft", True, Decimal("0.10"))
    with pytest.raises(PlanningError, match="minimum copies: is not a priced input"):
        cheapest_meeting(acme, {"copies": 2})


# --- price_grid ----------------------------------------------------------------------------------


def test_the_magi_grid(magi: PricedEndpoint) -> None:
    rows = price_grid(magi)
    assert len(rows) == 970  # 97 frame counts (96..192) x 2 resolutions x 5 step counts
    prices = [row.price for row in rows]
    assert (min(prices), max(prices)) == (Decimal("0.40"), Decimal("6.40"))
    configurations = [tuple(row.configuration.values()) for row in rows]
    assert len(set(configurations)) == 970
    # grid order: frames slowest, each input's values smaller to larger
    assert configurations[0] == (96, "480p", 4)
    assert configurations[1] == (96, "480p", 8)
    assert configurations[5] == (96, "720p", 4)
    assert configurations[-1] == (192, "720p", 64)
    by_point = {tuple(row.configuration.values()): row.price for row in rows}
    assert by_point[(168, "480p", 8)] == Decimal("0.70")  # (0.80 + 3 x 0.20) x 0.5 x 1
    assert by_point[(144, "480p", 32)] == Decimal("1.20")  # (0.80 + 2 x 0.20) x 0.5 x 2
    assert by_point[(191, "720p", 32)] == Decimal("3.20")  # (0.80 + 4 x 0.20) x 1 x 2
    # 0.40 only at 96 frames, 480p and 4, 8 or 16 steps
    assert sum(1 for price in prices if price == Decimal("0.40")) == 3
    assert all(row.quote.total == row.price for row in rows)


def test_a_grid_with_fixed_inputs(magi: PricedEndpoint) -> None:
    rows = price_grid(magi, {"num_frames": 144, "aspect_ratio": "1:1"})
    assert len(rows) == 10  # 2 resolutions x 5 step counts
    # 144 frames: 1.20 at 720p, 0.60 at 480p; x1, x1, x1, x2, x4
    assert [str(row.price) for row in rows] == [
        "0.60", "0.60", "0.60", "1.20", "2.40",
        "1.20", "1.20", "1.20", "2.40", "4.80",
    ]  # fmt: skip
    assert all(row.configuration["num_frames"] == 144 for row in rows)
    assert all(row.quote.arguments["aspect_ratio"] == "1:1" for row in rows)


def test_the_grid_of_another_table(acme: PricedEndpoint) -> None:
    rows = price_grid(acme)
    assert len(rows) == 30  # 5 page counts x 3 qualities x 2 colors
    assert list(rows[0].configuration) == ["pages", "quality", "color"]
    assert tuple(rows[0].configuration.values()) == (1, "draft", False)
    assert rows[0].price == Decimal("0.05")  # 0.10 x 0.5
    assert tuple(rows[-1].configuration.values()) == (5, "ultra", True)
    assert rows[-1].price == Decimal("1.80")  # 0.30 x 3 x 2


def test_an_unbounded_input_must_be_fixed() -> None:
    tts = parse_table(ACME_TABLE).endpoint("acme/tts")
    with pytest.raises(PlanningError, match="characters is an integer >= 1, not a finite set"):
        price_grid(tts)
    with pytest.raises(PlanningError, match="give it a value"):
        best_within(tts, "1.00")
    # fixed, the other input is planned over: 5000 characters = 0.01 + 4 x 0.01 = 0.05, x2 studio
    rows = price_grid(tts, {"characters": 5000})
    assert [(row.configuration["voice"], row.price) for row in rows] == [
        ("plain", Decimal("0.05")),
        ("studio", Decimal("0.10")),
    ]
    found = cheapest_meeting(tts, {"voice": "studio"}, {"characters": 1})
    assert found is not None and found.total == Decimal("0.02")
    # how_many needs no grid
    assert how_many(tts, {"characters": 2500}, "1.00").count == 33  # 0.03 a request


def test_a_grid_over_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from falbudget.pricing import planning

    monkeypatch.setattr(planning, "GRID_LIMIT", 969)
    magi = load_table(packaged_table_path()).endpoint(MAGI)
    with pytest.raises(PlanningError, match="970 configurations, over the limit of 969"):
        price_grid(magi)
    assert len(price_grid(magi, {"num_frames": 96})) == 10


def test_planning_at_a_moment(history: PricedEndpoint) -> None:
    # before 2027: tiers s and m; from 2027 also l (x5)
    assert [row.price for row in price_grid(history, at=dt.date(2026, 3, 1))] == [
        Decimal("1.00"),
        Decimal("3.00"),
    ]
    assert [row.price for row in price_grid(history, at=dt.date(2026, 7, 1))] == [
        Decimal("2.00"),
        Decimal("6.00"),
    ]
    assert len(price_grid(history, at=dt.date(2027, 1, 1))) == 3
    found = best_within(history, "3.00", at=dt.date(2026, 3, 1))
    assert found is not None
    assert (found.arguments["tier"], found.total, found.effective_from) == (
        "m",
        Decimal("3.00"),
        "2026-01-01",
    )
    found = best_within(history, "3.00", at=dt.date(2026, 7, 1))
    assert found is not None and found.arguments["tier"] == "s"
    found = cheapest_meeting(history, {"tier": "l"}, at=dt.date(2027, 2, 1))
    assert found is not None and found.total == Decimal("10.00")  # 2.00 x 5
    with pytest.raises(PlanningError, match="minimum tier='l' is not allowed"):
        cheapest_meeting(history, {"tier": "l"}, at=dt.date(2026, 7, 1))


def test_planning_errors_are_falbudget_errors() -> None:
    assert issubclass(PlanningError, FalbudgetError)
    assert issubclass(PlanningError, ValueError)


# --- the CLI -------------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_usage_error(result: tuple[int, str, str], *needles: str) -> None:
    """Exit 2, nothing on stdout, exactly one line on stderr naming the problem."""
    code, out, err = result
    assert (code, out) == (2, ""), (code, out, err)
    assert err.startswith("falbudget: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)


def json_of(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> dict[str, Any]:
    got, out, err = run(capsys, *argv, "--format", "json")
    assert got == code, err
    assert out.count("\n") == 1  # one document on one line
    data = json.loads(out)
    assert isinstance(data, dict)
    return data


def test_cli_count(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "plan", "count", MAGI, "--amount", "10.00")
    assert (code, err) == (0, "")
    assert out == (
        f"{MAGI} num_frames=96 resolution=720p num_inference_steps=16 (price table 2026.12.06)\n"
        "12 requests of 0.80 fit in 10.00 USD (0.40 left)\n"
    )
    # KEY=VALUE may follow the options; 1.20 x 8 = 9.60
    data = json_of(capsys, "plan", "count", MAGI, "--amount", "$10", "num_frames=144")
    assert {k: data[k] for k in ("price", "amount", "count", "spend", "leftover")} == {
        "price": "1.20",
        "amount": "10.00",
        "count": 8,
        "spend": "9.60",
        "leftover": "0.40",
    }
    assert data["configuration"] == {
        "num_frames": 144,
        "resolution": "720p",
        "num_inference_steps": 16,
    }
    assert data["budget"] is None
    assert data["quote"]["total"] == "1.20"


def test_cli_count_of_one_and_of_none(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "plan", "count", MAGI, "--amount", "1.00")
    assert (code, err) == (0, "")
    assert out.endswith("1 request of 0.80 fits in 1.00 USD (0.20 left)\n")
    # 144 frames is 1.20: not one fits in 0.50 -> exit 1, the answer still printed
    code, out, err = run(capsys, "plan", "count", MAGI, "num_frames=144", "--amount", "0.50")
    assert code == 1
    assert out.endswith("0 requests of 1.20 fit in 0.50 USD (0.50 left)\n")
    assert err == "falbudget: plan count: not one request of 1.20 fits in 0.50 USD\n"


def test_cli_count_at_any_size(capsys: pytest.CaptureFixture[str]) -> None:
    data = json_of(capsys, "plan", "count", MAGI, "--amount", "1e30")
    assert data["count"] == 1_250_000_000_000_000_000_000_000_000_000  # 10^30 / 0.80
    assert data["amount"] == "1" + "0" * 30 + ".00"


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "falbudget.yaml"
    config.write_text(
        f"ledger: sqlite:///{tmp_path / 'spend.db'}\n"
        "caps:\n"
        "  - limit: '10.00'\n"
        "    window: month\n"
        "  - limit: '3.00'\n"
        "    scope: user\n"
        "    window: day\n"
    )
    open_ledger(f"sqlite:///{tmp_path / 'spend.db'}").close()  # plan count creates no ledger
    return config


@pytest.mark.parametrize("spelling", ["user=ann", "user:ann"])  # user:ann: the older spelling
def test_cli_count_with_what_remains_of_a_cap(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, spelling: str
) -> None:
    config = write_config(tmp_path)
    guard = Guard.from_config(str(config))
    with guard.reserve(MAGI, {"prompt": "p", "image_url": "u", "num_frames": 144}, user="ann"):
        pass  # settled at 1.20
    guard.close()
    # the month: 10.00 - 1.20 = 8.80 = 11 x 0.80, nothing left
    code, out, err = run(
        capsys, "plan", "count", MAGI, "--config", str(config), "--window", "month"
    )
    assert (code, err) == (0, "")
    assert out.endswith(
        "11 requests of 0.80 fit in 8.80 USD, what remains now of the global month cap"
        " (0.00 left)\n"
    )
    # ann's day: 3.00 - 1.20 = 1.80; 480p is 0.40: 4 fit (1.60), 0.20 left
    data = json_of(
        capsys,
        "plan", "count", MAGI, "resolution=480p", "--config", str(config),
        "--scope", spelling, "--window", "day",
    )  # fmt: skip
    assert (data["amount"], data["count"], data["leftover"]) == ("1.80", 4, "0.20")
    assert data["budget"] == {"scope": "user=ann", "window": "day"}  # one spelling out


def test_cli_count_reads_falbudget_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FALBUDGET_CONFIG", str(write_config(tmp_path)))
    data = json_of(capsys, "plan", "count", MAGI, "--window", "month")
    assert (data["amount"], data["count"]) == ("10.00", 12)  # nothing spent: 10.00 / 0.80


def test_cli_count_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = str(write_config(tmp_path))
    assert_usage_error(run(capsys, "plan", "count", MAGI), "give --amount AMOUNT, or --config")
    assert_usage_error(
        run(capsys, "plan", "count", MAGI, "--amount", "1", "--config", config),
        "give --amount or --config, not both",
    )
    assert_usage_error(
        run(capsys, "plan", "count", MAGI, "--amount", "1", "--window", "day"),
        "--scope and --window need --config",
    )
    # no cap limits global over total here: the message lists the caps there are
    assert_usage_error(
        run(capsys, "plan", "count", MAGI, "--config", config),
        "no cap limits scope 'global' over window 'total'",
        "the configuration's caps: global month, user day",
    )
    assert_usage_error(run(capsys, "plan", "count", MAGI, "--amount", "-1"), "must not be negative")
    assert_usage_error(run(capsys, "plan", "count", MAGI, "--amount", "abc"), "AMOUNT='abc'")
    assert_usage_error(
        run(capsys, "plan", "count", MAGI, "num_frames", "--amount", "1"),
        "plan count: expected KEY=VALUE, got 'num_frames'",
    )
    assert_usage_error(
        run(capsys, "plan", "count", MAGI, "num_frames=95", "--amount", "1"), "num_frames=95"
    )
    assert_usage_error(
        run(capsys, "plan", "count", "fal-ai/magi/text-to-video", "--amount", "1"), "unknown"
    )


def test_cli_best(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "plan", "best", MAGI, "--per-request", "2.00")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == (
        "best within 2.00 a request, by order num_frames, resolution, num_inference_steps"
    )
    assert lines[1] == f"{MAGI} (price table 2026.12.06)"
    assert lines[-1].split() == ["total", "1.60", "USD"]
    data = json_of(capsys, "plan", "best", MAGI, "--per-request", "2.00")
    assert data["found"] is True
    assert data["configuration"] == {
        "num_frames": 192,
        "resolution": "720p",
        "num_inference_steps": 16,
    }
    assert (data["price"], data["per_request"], data["currency"]) == ("1.60", "2.00", "USD")
    assert data["order"] == ["num_frames", "resolution", "num_inference_steps"]


def test_cli_best_with_an_order_and_fixed_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    # 120 frames, 480p, 64 steps = (0.80 + 0.20) x 0.5 x 4 = 2.00
    data = json_of(
        capsys, "plan", "best", MAGI, "--per-request", "2", "--order", "num_inference_steps"
    )
    assert data["configuration"] == {
        "num_frames": 120,
        "resolution": "480p",
        "num_inference_steps": 64,
    }
    assert data["order"] == ["num_inference_steps", "num_frames", "resolution"]
    # fewest steps first: 192 frames, 720p, 4 steps = 1.60
    data = json_of(capsys, "plan", "best", MAGI, "--per-request=2", "--order=-num_inference_steps")
    assert data["configuration"]["num_inference_steps"] == 4
    assert data["order"][0] == "-num_inference_steps"
    # fixed 480p: 192 frames at 32 steps = 0.80 x 2 = 1.60
    code, out, err = run(
        capsys, "plan", "best", MAGI, "resolution=480p", "aspect_ratio=1:1", "--per-request", "2"
    )
    assert (code, err) == (0, "")
    assert out.splitlines()[0].endswith("; fixed resolution=480p aspect_ratio=1:1")
    assert "num_inference_steps  32" in out


def test_cli_best_when_nothing_fits(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "plan", "best", MAGI, "--per-request", "0.30")
    assert (code, out) == (1, "")
    assert err == (
        f"falbudget: plan best: no configuration of {MAGI} costs 0.30 or less a request;"
        " the cheapest costs 0.40\n"
    )
    data = json_of(capsys, "plan", "best", MAGI, "--per-request", "0.30", code=1)
    assert (data["found"], data["configuration"], data["price"], data["quote"]) == (
        False,
        None,
        None,
        None,
    )


def test_cli_best_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(run(capsys, "plan", "best", MAGI), "required: --per-request")
    assert_usage_error(
        run(capsys, "plan", "best", MAGI, "--per-request", "1", "--order", "frames"),
        "order: 'frames' is not an input",
    )
    assert_usage_error(
        run(capsys, "plan", "best", MAGI, "--per-request", "1", "--order", "num_frames,,"),
        "--order='num_frames,,' is not allowed",
    )
    assert_usage_error(
        run(capsys, "plan", "best", MAGI, "--per-request", "1", "seed=1", "seed=2"),
        "plan best: seed is given twice",
    )


def test_cli_cheapest(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "plan", "cheapest", MAGI, "num_frames=144", "resolution=720p")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == (
        "cheapest with num_frames >= 144, resolution >= 720p; at equal price by order"
        " num_frames, resolution, num_inference_steps"
    )
    assert lines[-1].split() == ["total", "1.20", "USD"]
    data = json_of(capsys, "plan", "cheapest", MAGI, "num_frames=144", "resolution=720p")
    assert data["minimums"] == {"num_frames": 144, "resolution": "720p"}
    assert data["configuration"] == {
        "num_frames": 144,
        "resolution": "720p",
        "num_inference_steps": 16,
    }
    # --fix and --order: 720p fixed, ties broken towards the fewest frames: 97 frames, 1.00
    data = json_of(
        capsys, "plan", "cheapest", MAGI, "num_frames=97", "--fix", "resolution=720p",
        "--order=-num_frames",
    )  # fmt: skip
    assert (data["configuration"]["num_frames"], data["price"]) == (97, "1.00")
    assert data["fixed"] == {"resolution": "720p"}


def test_cli_cheapest_when_nothing_meets(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "plan", "cheapest", MAGI, "num_frames=200")
    assert (code, out) == (1, "")
    assert err == (
        f"falbudget: plan cheapest: no configuration of {MAGI} reaches num_frames >= 200"
        " (num_frames is at most 192)\n"
    )
    assert_usage_error(
        run(capsys, "plan", "cheapest", MAGI, "resolution=1080p"), "minimum resolution='1080p'"
    )
    assert_usage_error(
        run(capsys, "plan", "cheapest", MAGI, "--fix", "num_frames"),
        "plan cheapest: expected KEY=VALUE",
    )


def test_cli_grid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "plan", "grid", MAGI)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"{MAGI} (price table 2026.12.06): 970 configurations, 0.40 - 6.40 USD"
    assert lines[1].split() == ["num_frames", "resolution", "num_inference_steps", "price"]
    assert lines[3].split() == ["96", "480p", "4", "0.40"]
    assert lines[-1].split() == ["192", "720p", "64", "6.40"]
    assert len(lines) == 3 + 970

    code, out, err = run(capsys, "plan", "grid", MAGI, "--format", "csv")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "num_frames,resolution,num_inference_steps,price"
    assert lines[1] == "96,480p,4,0.40"
    assert lines[-1] == "192,720p,64,6.40"
    assert len(lines) == 1 + 970

    data = json_of(capsys, "plan", "grid", MAGI, "num_frames=144")
    assert (data["count"], data["min"], data["max"]) == (10, "0.60", "4.80")
    assert data["inputs"] == ["num_frames", "resolution", "num_inference_steps"]
    assert data["fixed"] == {"num_frames": 144}
    assert data["rows"][0] == {
        "configuration": {"num_frames": 144, "resolution": "480p", "num_inference_steps": 4},
        "price": "0.60",
    }


def test_cli_grid_of_a_made_up_table(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "acme.yaml"
    path.write_text(ACME_TABLE)
    code, out, err = run(
        capsys, "plan", "grid", "acme/print", "--pricing", str(path), "--format", "csv"
    )
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[:3] == ["pages,quality,color,price", "1,draft,false,0.05", "1,draft,true,0.10"]
    assert len(lines) == 31
    assert_usage_error(
        run(capsys, "plan", "grid", "acme/tts", "--pricing", str(path)),
        "characters is an integer >= 1, not a finite set of values",
    )


def test_cli_plan_at_a_date(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "history.yaml"
    path.write_text(HISTORY_TABLE)
    common = ("--pricing", str(path), "--amount", "10")
    data = json_of(capsys, "plan", "count", "acme/clip", *common, "--at", "2026-05-31")
    assert data["count"] == 10  # 10 / 1.00
    data = json_of(capsys, "plan", "count", "acme/clip", *common, "--at", "2026-06-01")
    assert data["count"] == 5  # 10 / 2.00
    assert data["quote"]["effective_from"] == "2026-06-01"
    code, out, err = run(
        capsys, "plan", "grid", "acme/clip", "--pricing", str(path), "--at", "2027-01-01"
    )
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == (
        "acme/clip (price table hist-1, prices from 2027-01-01): 3 configurations, 2.00 - 10.00 USD"
    )


def test_cli_plan_needs_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert_usage_error(run(capsys, "plan"), "plan: a command is required: count, best")
    assert_usage_error(run(capsys, "plan", "count"), "required: ENDPOINT")
    code, out, err = run(capsys, "--help")
    assert (code, err) == (0, "")
    assert "plan" in out


# --- the examples in docs/planning.md run as written ---------------------------------------------


def doc_blocks(kind: str) -> list[str]:
    text = DOCS.read_text(encoding="utf-8")
    blocks: list[str] = re.findall(rf"^```{kind}\n(.*?)^```$", text, flags=re.S | re.M)
    return blocks


def test_docs_examples_run_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each ``$ ...`` line of a console block, in order, in one directory: ``python NAME.py``
    runs the python block that starts with ``# NAME.py``; ``falbudget ...`` runs the CLI; a
    yaml block that starts with ``# NAME.yaml`` is written to NAME first. The output
    (stdout, then stderr) must be as pasted; the exit code 1 exactly when stderr has a line."""
    monkeypatch.chdir(tmp_path)
    for kind in ("python", "yaml"):
        for block in doc_blocks(kind):
            name = re.match(r"# ([\w.-]+\.(?:py|yaml))\b", block)
            if name:
                (tmp_path / name.group(1)).write_text(block, encoding="utf-8")
    checked = []
    for block in doc_blocks("console"):
        for command in re.split(r"^\$ ", block, flags=re.M)[1:]:
            line, _, expected = command.partition("\n")
            argv = shlex.split(line)
            if argv[0] == "python":
                runpy.run_path(argv[1], run_name="__main__")
                out = capsys.readouterr().out
            else:
                assert argv[0] == "falbudget", line
                code, out, err = run(capsys, *argv[1:])
                assert code == (1 if err else 0), (line, code, err)
                out += err
            assert out == expected, line
            checked.append(argv[0])
    assert checked.count("falbudget") >= 8 and checked.count("python") >= 2
