"""Planning: the inverse of a quote. Pure, no I/O: a PricedEndpoint in, exact Decimals out.

Four questions a budget owner asks, for any endpoint of any table:

- ``how_many``: how many requests of one configuration fit in an amount, and what is left;
- ``best_within``: the best configuration whose price is at most a per-request amount;
- ``cheapest_meeting``: the cheapest configuration whose inputs reach minimums;
- ``price_grid``: every combination of the priced inputs with its price.

The configurations are the combinations of the *priced inputs'* allowed values (the inputs the
rules read): each enum's values, or each integer of a bounded range. Every other input keeps its
default, or the value given in ``fixed``; a priced input given in ``fixed`` is held at that value.

"Best" is a lexicographic order over the priced inputs (docs/planning.md). By default it is the
priced inputs in rule order, each preferring the larger value: a number is larger by value, any
other enum value (a string, a boolean) by its position in the enum as the table lists it (a
later value is larger). For MAGI-1 that is most frames, then 720p over 480p, then most steps.
``order=["num_inference_steps", "-num_frames"]`` puts the named inputs first, ``-`` preferring
the smaller value; inputs it leaves out follow, in the default order and direction.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from falbudget.errors import FalbudgetError
from falbudget.money import format_usd, to_decimal
from falbudget.pricing.engine import (
    GRID_LIMIT,
    InputRule,
    Moment,
    PricedEndpoint,
    Quote,
    input_values,
)

__all__ = [
    "Fit",
    "GridRow",
    "PlanningError",
    "best_within",
    "cheapest_meeting",
    "effective_order",
    "how_many",
    "price_grid",
]

_ZERO = Decimal(0)


class PlanningError(FalbudgetError, ValueError):
    """A planning question that cannot be answered as asked: a negative amount, an unknown or
    unpriced input in ``order`` or ``minimums``, a free request, a grid that cannot be listed.
    The CLI prints it as one line, exit 2."""


@dataclass(frozen=True, slots=True)
class Fit:
    """How many requests at ``price`` fit in ``amount``: ``count`` = floor(amount / price), and
    ``leftover`` = amount - count x price, both exact."""

    quote: Quote
    """The quote of one request (its arguments with defaults filled in, its line items)."""
    price: Decimal
    amount: Decimal
    count: int
    leftover: Decimal

    @property
    def spend(self) -> Decimal:
        """What the ``count`` requests cost together: count x price, exact at any size (the
        decimal context's 28 digits would round amount - leftover)."""
        digits, exponent = _integer_and_exponent(self.price)
        return _exact(self.count * digits, exponent)


@dataclass(frozen=True, slots=True)
class GridRow:
    """One point of the price grid: the priced inputs' values and the price of that request."""

    configuration: Mapping[str, Any]
    """The priced inputs only, in the endpoint's priced-input order."""
    price: Decimal
    quote: Quote
    """The full quote: every argument (defaults and ``fixed`` values too) and the line items."""


# --- how many ------------------------------------------------------------------------------------


def _integer_and_exponent(value: Decimal) -> tuple[int, int]:
    """A finite Decimal as (integer, exponent) with value = integer x 10**exponent, exactly."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite: to_decimal refuses NaN and infinities
    integer = int("".join(map(str, digits)) or "0")
    return (-integer if sign else integer), exponent


def _divide(amount: Decimal, price: Decimal) -> tuple[int, Decimal]:
    """floor(amount / price) and the remainder, in exact integer arithmetic (no context, so no
    rounding at any size); ``price`` is above 0 and ``amount`` at least 0."""
    a, a_exp = _integer_and_exponent(amount)
    p, p_exp = _integer_and_exponent(price)
    exponent = min(a_exp, p_exp)
    a *= 10 ** (a_exp - exponent)
    p *= 10 ** (p_exp - exponent)
    count, rest = divmod(a, p)
    return count, _exact(rest, exponent)


def _exact(integer: int, exponent: int) -> Decimal:
    """integer x 10**exponent as a Decimal, built from its digits (no context, no rounding)."""
    return Decimal((0, tuple(int(d) for d in str(integer)), exponent))


def _money_in(value: Decimal | str | int, what: str) -> Decimal:
    try:
        amount = to_decimal(value, what=what)
    except ValueError as exc:
        raise PlanningError(str(exc)) from None
    if amount < 0:
        raise PlanningError(f"{what}={value!r} is not allowed: it must not be negative")
    return amount


def how_many(
    endpoint: PricedEndpoint,
    arguments: Mapping[str, Any] | None,
    amount: Decimal | str | int,
    *,
    at: Moment | None = None,
) -> Fit:
    """How many requests of ``endpoint`` with ``arguments`` fit in ``amount`` (USD; a Decimal,
    an int or a decimal string, never a float), at the prices in effect at ``at`` (default: now).

    ``count`` x price <= amount < (``count`` + 1) x price, exactly. Raises InvalidArguments for
    arguments the endpoint refuses, PlanningError for a negative amount or a request that costs
    nothing (any number of them would fit).
    """
    money = _money_in(amount, "amount")
    quote = endpoint.quote(arguments, at=at)
    price = quote.total
    if price <= 0:
        raise PlanningError(
            f"{endpoint.name}: this request costs {format_usd(price)}, so any number of them fit"
        )
    count, leftover = _divide(money, price)
    return Fit(quote, price, money, count, leftover)


# --- the space of configurations -----------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _position(spec: InputRule) -> Callable[[Any], Any]:
    """How an input's values compare, smaller to larger: numbers by value; anything else (a
    string or boolean enum) by its position in the enum as the table lists it."""
    if spec.type in ("integer", "number"):
        return lambda value: value
    index = {(type(v), v): i for i, v in enumerate(spec.enum or ())}
    return lambda value: index[(type(value), value)]


def _values(endpoint: PricedEndpoint, spec: InputRule) -> tuple[Any, ...]:
    """Every allowed value of a priced input, smaller to larger: a range ascending, a numeric
    enum sorted by value, any other enum as the table lists it (as ``grid_axes`` does, but a
    fixed input needs no finite set of values)."""
    values = input_values(spec)
    if values is not None:
        numeric_enum = spec.enum is not None and spec.type in ("integer", "number")
        return tuple(sorted(values)) if numeric_enum else values
    raise PlanningError(
        f"{endpoint.name}: {spec.name} is {spec.allowed}, not a finite set of values; give it a"
        f" value ({spec.name}=...) to plan over the other inputs"
    )


@dataclass(frozen=True, slots=True)
class _Space:
    """The configurations to search: one version of an endpoint, the arguments every request
    shares (defaults and fixed values), and the allowed values of each free priced input."""

    version: PricedEndpoint
    base: Mapping[str, Any]
    axes: Mapping[str, tuple[Any, ...]]
    priced: tuple[str, ...]

    def rows(self) -> Iterator[GridRow]:
        names = list(self.axes)
        price = self.version.price
        base = dict(self.base)
        priced = self.priced
        for combo in itertools.product(*self.axes.values()):
            arguments = {**base, **dict(zip(names, combo, strict=True))}
            quote = price(arguments)
            configuration = MappingProxyType({name: arguments[name] for name in priced})
            yield GridRow(configuration, quote.total, quote)


def _space(
    endpoint: PricedEndpoint,
    fixed: Mapping[str, Any] | None,
    at: Moment | None,
    keep: Callable[[str, Any], bool] | None = None,
) -> _Space:
    version = endpoint.version_at(at)
    base = version.normalize_arguments(fixed)
    given = set(fixed or ())
    axes: dict[str, tuple[Any, ...]] = {}
    for name in version.priced_inputs:
        if name in given:
            continue
        values = _values(endpoint, version.inputs[name])
        if keep is not None:
            values = tuple(v for v in values if keep(name, v))
        axes[name] = values
    size = math.prod(len(values) for values in axes.values())
    if size > GRID_LIMIT:
        raise PlanningError(
            f"{endpoint.name}: {size} configurations, over the limit of {GRID_LIMIT}; fix some"
            " inputs (KEY=VALUE) to plan over fewer"
        )
    return _Space(version, base, axes, version.priced_inputs)


# --- the order of preference ---------------------------------------------------------------------


def _parse_order(version: PricedEndpoint, order: Sequence[str] | None) -> list[tuple[str, bool]]:
    """(input, prefer larger) for every priced input: the given ones first, then the rest."""
    priced = version.priced_inputs
    chosen: list[tuple[str, bool]] = []
    if isinstance(order, str):
        raise PlanningError(
            f"order={order!r} is not allowed: give a list of input names, such as"
            ' ["num_frames", "-num_inference_steps"]'
        )
    for item in order or ():
        if not isinstance(item, str):
            raise PlanningError(f"order: {item!r} is not allowed: an input name, or -name")
        larger = not item.startswith("-")
        name = item[1:] if item[:1] in ("-", "+") else item
        if name not in priced:
            known = ", ".join(priced) or "none"
            what = "is not a priced input" if name in version.inputs else "is not an input"
            raise PlanningError(
                f"{version.name}: order: {name!r} {what} of this endpoint; priced inputs: {known}"
            )
        if any(name == seen for seen, _ in chosen):
            raise PlanningError(f"{version.name}: order: {name!r} is given twice")
        chosen.append((name, larger))
    named = {name for name, _ in chosen}
    chosen.extend((name, True) for name in priced if name not in named)
    return chosen


def effective_order(
    endpoint: PricedEndpoint, order: Sequence[str] | None = None, *, at: Moment | None = None
) -> tuple[str, ...]:
    """The full order ``best_within`` and ``cheapest_meeting`` use for ``order``: every priced
    input, most important first, ``-name`` where the smaller value is preferred.
    ``effective_order(magi)`` is ("num_frames", "resolution", "num_inference_steps")."""
    version = endpoint.version_at(at)
    return tuple(name if larger else f"-{name}" for name, larger in _parse_order(version, order))


def _ranker(
    version: PricedEndpoint, order: Sequence[str] | None
) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A key such that a better configuration has a larger key."""
    parts = []
    for name, larger in _parse_order(version, order):
        position = _position(version.inputs[name])
        parts.append((name, position, larger))

    def key(configuration: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(
            position(configuration[name]) if larger else -position(configuration[name])
            for name, position, larger in parts
        )

    return key


# --- best within, cheapest meeting, the grid -----------------------------------------------------


def best_within(
    endpoint: PricedEndpoint,
    per_request: Decimal | str | int,
    order: Sequence[str] | None = None,
    fixed: Mapping[str, Any] | None = None,
    *,
    at: Moment | None = None,
) -> Quote | None:
    """The best configuration whose price is at most ``per_request``, or None when none is.

    Best is by ``order`` (default: the priced inputs in rule order, larger values preferred; see
    the module docstring). ``fixed`` holds inputs at given values (the others take defaults).
    """
    limit = _money_in(per_request, "per_request")
    space = _space(endpoint, fixed, at)
    key = _ranker(space.version, order)
    best: Quote | None = None
    best_key: tuple[Any, ...] = ()
    for row in space.rows():
        if row.price <= limit:
            row_key = key(row.configuration)
            if best is None or row_key > best_key:
                best, best_key = row.quote, row_key
    return best


def _minimum_test(
    version: PricedEndpoint, minimums: Mapping[str, Any], fixed: Mapping[str, Any] | None
) -> Callable[[str, Any], bool]:
    """Check each minimum and return a test: does this value of this input reach its minimum?"""
    priced = version.priced_inputs
    floors: dict[str, tuple[Callable[[Any], Any], Any]] = {}
    for name, minimum in minimums.items():
        spec = version.inputs.get(name) if isinstance(name, str) else None
        if spec is None or name not in priced:
            what = "is not a priced input" if spec is not None else "is not an input"
            raise PlanningError(
                f"{version.name}: minimum {name}: {what} of this endpoint; priced inputs:"
                f" {', '.join(priced) or 'none'}"
            )
        if fixed and name in fixed:
            raise PlanningError(
                f"{version.name}: {name} is given both as a minimum and as a fixed value"
            )
        position = _position(spec)
        if spec.type in ("integer", "number"):
            if not _is_number(minimum) or (isinstance(minimum, float) and math.isnan(minimum)):
                raise PlanningError(
                    f"{version.name}: minimum {name}={minimum!r} is not allowed: a number"
                )
            floors[name] = (position, minimum)
        else:
            enum = spec.enum or ()
            if not any(type(v) is type(minimum) and v == minimum for v in enum):
                raise PlanningError(
                    f"{version.name}: minimum {name}={minimum!r} is not allowed: {spec.allowed}"
                )
            floors[name] = (position, position(minimum))

    def keep(name: str, value: Any) -> bool:
        floor = floors.get(name)
        if floor is None:
            return True
        position, least = floor
        return bool(position(value) >= least)

    return keep


def cheapest_meeting(
    endpoint: PricedEndpoint,
    minimums: Mapping[str, Any],
    fixed: Mapping[str, Any] | None = None,
    order: Sequence[str] | None = None,
    *,
    at: Moment | None = None,
) -> Quote | None:
    """The cheapest configuration in which each input named in ``minimums`` is at least its
    minimum, or None when no configuration reaches them all.

    "At least" is by value for a number (num_frames >= 144) and by enum position for any other
    input (resolution >= "720p": "720p" or a value listed after it). At equal price the better
    configuration by ``order`` wins (the same order as ``best_within``).
    """
    if not isinstance(minimums, Mapping):
        raise PlanningError(f"minimums={minimums!r} is not allowed: a mapping of input to minimum")
    version = endpoint.version_at(at)
    keep = _minimum_test(version, minimums, fixed)
    space = _space(endpoint, fixed, at, keep)
    key = _ranker(space.version, order)
    best: Quote | None = None
    best_key: tuple[Any, ...] = ()
    for row in space.rows():
        if best is None or row.price < best.total:
            best, best_key = row.quote, key(row.configuration)
        elif row.price == best.total:
            row_key = key(row.configuration)
            if row_key > best_key:
                best, best_key = row.quote, row_key
    return best


def price_grid(
    endpoint: PricedEndpoint,
    fixed: Mapping[str, Any] | None = None,
    *,
    at: Moment | None = None,
) -> list[GridRow]:
    """Every combination of the priced inputs' allowed values with its price, in grid order: the
    first priced input varies slowest, each input's values smaller to larger. ``fixed`` holds
    inputs at given values (a fixed priced input has that one value in the grid)."""
    return list(_space(endpoint, fixed, at).rows())
