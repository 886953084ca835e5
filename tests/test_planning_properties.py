"""Properties of planning over generated amounts, orders, minimums and price tables (hypothesis).

(a) how_many: count x price <= amount < (count + 1) x price, and the leftover is the rest, exactly.
(b) best_within: the answer fits the per-request amount, and no configuration strictly better in
    the order also fits; None only when nothing fits.
(c) cheapest_meeting: the answer meets every minimum, nothing that meets them is cheaper, and at
    equal price nothing that meets them is better; None only when nothing meets them.

Each is checked by brute force over the whole grid, built here from the schema with
``itertools.product`` and ranked by a key written here, not by the planner's own. Over MAGI-1
and over generated tables (random rules, rule order, enum listing order and factors).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from functools import cache
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from falbudget.pricing import PricedEndpoint, load_table, packaged_table_path, parse_table
from falbudget.pricing.planning import PlanningError, best_within, cheapest_meeting, how_many

MAGI = "fal-ai/magi/image-to-video"
FRAMES = range(96, 193)
RESOLUTIONS = ("480p", "720p")  # as listed: 720p is the larger
STEPS = (4, 8, 16, 32, 64)
MAGI_DEFAULT = ("num_frames", "resolution", "num_inference_steps")

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TABLES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

amounts = st.builds(
    lambda units, places: Decimal(units).scaleb(-places),
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=0, max_value=8),
)
per_requests = st.builds(lambda cents: Decimal(cents).scaleb(-2), st.integers(0, 700))


@cache
def magi() -> PricedEndpoint:
    return load_table(packaged_table_path()).endpoint(MAGI)


@cache
def magi_grid() -> dict[tuple[Any, ...], Decimal]:
    """Every MAGI-1 configuration (frames, resolution, steps) and its quoted price."""
    endpoint = magi()
    return {
        (f, r, s): endpoint.quote(
            {"num_frames": f, "resolution": r, "num_inference_steps": s}
        ).total
        for f, r, s in itertools.product(FRAMES, RESOLUTIONS, STEPS)
    }


def full_order(order: Sequence[str], default: Sequence[str]) -> list[tuple[str, int]]:
    """(name, +1 larger first / -1 smaller first): the given names, then the rest, larger first."""
    result = [(item.lstrip("-"), -1 if item.startswith("-") else 1) for item in order]
    named = {name for name, _ in result}
    return result + [(name, 1) for name in default if name not in named]


def magi_key(config: Mapping[str, Any], order: Sequence[tuple[str, int]]) -> tuple[int, ...]:
    """Larger is better: frames and steps by value, resolution by position (720p after 480p)."""
    rank = {
        "num_frames": config["num_frames"],
        "resolution": RESOLUTIONS.index(config["resolution"]),
        "num_inference_steps": config["num_inference_steps"],
    }
    return tuple(sign * rank[name] for name, sign in order)


def as_config(point: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(MAGI_DEFAULT, point, strict=True))


orders = st.lists(st.sampled_from(MAGI_DEFAULT), unique=True).flatmap(
    lambda names: st.tuples(*(st.sampled_from([name, "-" + name]) for name in names))
)


# --- (a) how_many --------------------------------------------------------------------------------


@FAST
@given(
    frames=st.sampled_from(FRAMES),
    resolution=st.sampled_from(RESOLUTIONS),
    steps=st.sampled_from(STEPS),
    amount=amounts,
)
def test_how_many_fits_and_one_more_does_not(
    frames: int, resolution: str, steps: int, amount: Decimal
) -> None:
    fit = how_many(
        magi(),
        {"num_frames": frames, "resolution": resolution, "num_inference_steps": steps},
        amount,
    )
    price = magi_grid()[(frames, resolution, steps)]
    assert fit.price == price
    assert fit.count >= 0
    # exact: the products have at most 21 digits, within the default context's 28
    assert Decimal(fit.count) * price <= amount
    assert Decimal(fit.count + 1) * price > amount
    assert fit.leftover == amount - Decimal(fit.count) * price
    assert 0 <= fit.leftover < price


# --- (b) best_within -----------------------------------------------------------------------------


@FAST
@given(per_request=per_requests, order=orders)
def test_best_within_fits_and_nothing_better_fits(
    per_request: Decimal, order: tuple[str, ...]
) -> None:
    found = best_within(magi(), per_request, list(order))
    ranking = full_order(order, MAGI_DEFAULT)
    fitting = [point for point, price in magi_grid().items() if price <= per_request]
    if found is None:
        assert fitting == []
        return
    config = {name: found.arguments[name] for name in MAGI_DEFAULT}
    assert found.total <= per_request
    assert found.total == magi_grid()[tuple(config.values())]
    mine = magi_key(config, ranking)
    assert not [p for p in fitting if magi_key(as_config(p), ranking) > mine]


@FAST
@given(
    per_request=per_requests,
    order=orders,
    resolution=st.sampled_from(RESOLUTIONS),
)
def test_best_within_keeps_fixed_inputs(
    per_request: Decimal, order: tuple[str, ...], resolution: str
) -> None:
    found = best_within(magi(), per_request, list(order), {"resolution": resolution})
    ranking = full_order(order, MAGI_DEFAULT)
    fitting = [
        point
        for point, price in magi_grid().items()
        if price <= per_request and point[1] == resolution
    ]
    if found is None:
        assert fitting == []
        return
    assert found.arguments["resolution"] == resolution
    mine = magi_key(found.arguments, ranking)
    assert max(magi_key(as_config(p), ranking) for p in fitting) == mine


# --- (c) cheapest_meeting ------------------------------------------------------------------------

minimum_sets = st.fixed_dictionaries(
    {},
    optional={
        "num_frames": st.integers(min_value=80, max_value=200),
        "resolution": st.sampled_from(RESOLUTIONS),
        "num_inference_steps": st.integers(min_value=1, max_value=70),
    },
)


def meets(point: tuple[Any, ...], minimums: Mapping[str, Any]) -> bool:
    frames, resolution, steps = point
    return (
        frames >= minimums.get("num_frames", 0)
        and RESOLUTIONS.index(resolution) >= RESOLUTIONS.index(minimums.get("resolution", "480p"))
        and steps >= minimums.get("num_inference_steps", 0)
    )


@FAST
@given(minimums=minimum_sets, order=orders)
def test_cheapest_meeting_meets_and_nothing_cheaper_does(
    minimums: dict[str, Any], order: tuple[str, ...]
) -> None:
    found = cheapest_meeting(magi(), minimums, order=list(order))
    meeting = {p: price for p, price in magi_grid().items() if meets(p, minimums)}
    if found is None:
        assert meeting == {}
        return
    point = tuple(found.arguments[name] for name in MAGI_DEFAULT)
    assert meets(point, minimums)
    assert found.total == min(meeting.values())
    ranking = full_order(order, MAGI_DEFAULT)
    ties = [p for p, price in meeting.items() if price == found.total]
    assert max(magi_key(as_config(p), ranking) for p in ties) == magi_key(as_config(point), ranking)


# --- generated tables: the planner is generic ----------------------------------------------------

LETTERS = ("x", "y", "z")
POWERS = (1, 2, 4, 8, 16)
factors = st.sampled_from(["0", "0.5", "1", "1.5", "2", "3"])


@st.composite
def tables(draw: st.DrawFn) -> dict[str, Any]:
    """One endpoint, acme/gen, with three priced inputs in a random rule order:
    count (an integer range, per_unit), style (a string enum listed in a random order, lookup)
    and level (an integer enum listed in a random order, proportional); plus an unpriced one."""
    low = draw(st.integers(min_value=0, max_value=4))
    high = low + draw(st.integers(min_value=0, max_value=5))
    styles = draw(st.permutations(LETTERS))[: draw(st.integers(min_value=1, max_value=3))]
    levels = draw(st.lists(st.sampled_from(POWERS), min_size=1, max_size=4, unique=True))
    rules = {
        "count": {
            "name": "per count",
            "kind": "per_unit",
            "input": "count",
            "above": draw(st.integers(min_value=low, max_value=high)),
            "unit": draw(st.integers(min_value=1, max_value=3)),
            "rounding": draw(st.sampled_from(["up", "down", "exact"])),
            "amount": str(Decimal(draw(st.integers(0, 90))).scaleb(-2)),
        },
        "style": {
            "name": "style",
            "kind": "lookup",
            "input": "style",
            "factors": {s: draw(factors) for s in styles},
        },
        "level": {
            "name": "level",
            "kind": "proportional",
            "input": "level",
            "per": draw(st.integers(min_value=1, max_value=8)),
            "floor": draw(st.sampled_from(["0", "1"])),
        },
    }
    rule_order = draw(st.permutations(list(rules)))
    return {
        "schema_version": 1,
        "table_version": "gen",
        "effective_date": "2026-01-01",
        "currency": "USD",
        "endpoints": {
            "acme/gen": {
                "source_url": "https://example.com/gen",
                "price_read_on": "2026-01-01",
                "inputs": {
                    "count": {"type": "integer", "minimum": low, "maximum": high, "default": low},
                    "style": {"type": "string", "enum": list(styles), "default": styles[0]},
                    "level": {"type": "integer", "enum": levels, "default": levels[0]},
                    "label": {"type": "string", "default": "none"},
                },
                "rules": [
                    {
                        "name": "base",
                        "kind": "base",
                        "amount": str(Decimal(draw(st.integers(0, 200))).scaleb(-2)),
                    },
                    *(rules[name] for name in rule_order),
                ],
            }
        },
    }


def generated(data: dict[str, Any]) -> tuple[PricedEndpoint, dict[tuple[Any, ...], Decimal]]:
    endpoint = parse_table(json.dumps(data)).endpoint("acme/gen")  # YAML reads JSON
    spec = data["endpoints"]["acme/gen"]["inputs"]
    names = endpoint.priced_inputs
    values = {
        "count": range(spec["count"]["minimum"], spec["count"]["maximum"] + 1),
        "style": spec["style"]["enum"],
        "level": spec["level"]["enum"],
    }
    grid = {
        point: endpoint.quote(dict(zip(names, point, strict=True))).total
        for point in itertools.product(*(values[name] for name in names))
    }
    return endpoint, grid


def generated_key(
    data: dict[str, Any],
    names: Sequence[str],
    point: tuple[Any, ...],
    order: Sequence[tuple[str, int]],
) -> tuple[int, ...]:
    """count and level by value; style by its position in the enum as the table lists it."""
    styles = data["endpoints"]["acme/gen"]["inputs"]["style"]["enum"]
    config = dict(zip(names, point, strict=True))
    rank = {
        "count": config["count"],
        "style": styles.index(config["style"]),
        "level": config["level"],
    }
    return tuple(sign * rank[name] for name, sign in order)


generated_orders = st.lists(st.sampled_from(["count", "style", "level"]), unique=True).flatmap(
    lambda names: st.tuples(*(st.sampled_from([name, "-" + name]) for name in names))
)


@TABLES
@given(data=tables(), per_request=per_requests, order=generated_orders)
def test_best_within_on_generated_tables(
    data: dict[str, Any], per_request: Decimal, order: tuple[str, ...]
) -> None:
    endpoint, grid = generated(data)
    names = endpoint.priced_inputs
    ranking = full_order(order, names)
    found = best_within(endpoint, per_request, list(order))
    fitting = [point for point, price in grid.items() if price <= per_request]
    if found is None:
        assert fitting == []
        return
    point = tuple(found.arguments[name] for name in names)
    assert found.total == grid[point] <= per_request
    mine = generated_key(data, names, point, ranking)
    assert all(generated_key(data, names, p, ranking) <= mine for p in fitting)


@TABLES
@given(
    data=tables(),
    order=generated_orders,
    least_count=st.none() | st.integers(min_value=0, max_value=10),
    least_style=st.none() | st.sampled_from(LETTERS),
    least_level=st.none() | st.integers(min_value=0, max_value=20),
)
def test_cheapest_meeting_on_generated_tables(
    data: dict[str, Any],
    order: tuple[str, ...],
    least_count: int | None,
    least_style: str | None,
    least_level: int | None,
) -> None:
    endpoint, grid = generated(data)
    names = endpoint.priced_inputs
    styles = data["endpoints"]["acme/gen"]["inputs"]["style"]["enum"]
    if least_style is not None and least_style not in styles:
        least_style = styles[-1]
    minimums = {
        name: value
        for name, value in (
            ("count", least_count),
            ("style", least_style),
            ("level", least_level),
        )
        if value is not None
    }

    def ok(point: tuple[Any, ...]) -> bool:
        config = dict(zip(names, point, strict=True))
        return (
            config["count"] >= minimums.get("count", config["count"])
            and config["level"] >= minimums.get("level", config["level"])
            and styles.index(config["style"])
            >= styles.index(minimums.get("style", config["style"]))
        )

    found = cheapest_meeting(endpoint, minimums, order=list(order))
    meeting = {p: price for p, price in grid.items() if ok(p)}
    if found is None:
        assert meeting == {}
        return
    point = tuple(found.arguments[name] for name in names)
    assert ok(point)
    assert found.total == grid[point] == min(meeting.values())
    ranking = full_order(order, names)
    mine = generated_key(data, names, point, ranking)
    assert all(
        generated_key(data, names, p, ranking) <= mine
        for p, price in meeting.items()
        if price == found.total
    )


@TABLES
@given(data=tables(), amount=amounts)
def test_how_many_on_generated_tables(data: dict[str, Any], amount: Decimal) -> None:
    endpoint, grid = generated(data)
    for point, price in list(grid.items())[:5]:
        arguments = dict(zip(endpoint.priced_inputs, point, strict=True))
        if price == 0:
            try:
                how_many(endpoint, arguments, amount)
            except PlanningError:
                continue
            raise AssertionError("a free request must not have a count")
        fit = how_many(endpoint, arguments, amount)
        assert Decimal(fit.count) * price <= amount < Decimal(fit.count + 1) * price
        assert fit.leftover == amount - Decimal(fit.count) * price
