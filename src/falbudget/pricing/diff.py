"""Compare two price tables: per endpoint, what changed and how each grid point's price moves.

Pure: two loaded PriceTables in, plain data out (``TableDiff.to_dict()`` is JSON-ready, money as
decimal strings). `falbudget pricing diff` renders it; ``TableDiff.rises`` decides its exit code.

An endpoint with dated versions of its prices is compared period by period: the dates on which
either table's prices for it change (each version's ``effective_from``) cut time into periods,
and in each period both tables price with one version each, compared at the period's first day.
An endpoint without dated versions in either table has one period, "always". ``at=`` compares
only the period holding that moment.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from falbudget.errors import InvalidArguments, NoPriceInEffect, PriceTableError
from falbudget.money import format_usd
from falbudget.pricing import engine
from falbudget.pricing.engine import (
    GRID_LIMIT,
    InputRule,
    Moment,
    PricedEndpoint,
    PriceRule,
    PriceTable,
    _fmt_factor,
    day_of,
)

Status = Literal["added", "removed", "changed", "unchanged"]
ALWAYS = "always"
"""A period's version when the endpoint has one set of rules, always in effect."""


@dataclass(frozen=True, slots=True)
class Change:
    """One difference: an endpoint field, an input or a rule ``added``, ``removed`` or ``changed``
    (then ``field`` names what, ``old`` and ``new`` its values, JSON-ready)."""

    what: Literal["endpoint", "input", "rule"]
    name: str
    change: Literal["added", "removed", "changed"]
    field: str | None = None
    old: Any = None
    new: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "name": self.name,
            "change": self.change,
            "field": self.field,
            "old": self.old,
            "new": self.new,
        }


@dataclass(frozen=True, slots=True)
class Move:
    """One grid point's price in both tables."""

    arguments: Mapping[str, Any]
    old: Decimal
    new: Decimal

    @property
    def change(self) -> Decimal:
        return self.new - self.old

    def to_dict(self) -> dict[str, Any]:
        change = self.change
        sign = "+" if change > 0 else "-" if change < 0 else ""
        return {
            "arguments": dict(self.arguments),
            "old": format_usd(self.old),
            "new": format_usd(self.new),
            "change": f"{sign}{format_usd(abs(change))}",
        }


@dataclass(frozen=True, slots=True)
class GridDiff:
    """How the grid points' prices move: points priced in both tables are counted up, down or
    unchanged; points only one table allows are counted apart. ``error`` says why no grid could
    be listed (an input with no bounded set of values, or too many points); the counts are then
    zero."""

    up: int = 0
    down: int = 0
    unchanged: int = 0
    only_old: int = 0
    only_new: int = 0
    largest_up: Move | None = None
    largest_down: Move | None = None
    error: str | None = None

    @property
    def compared(self) -> int:
        return self.up + self.down + self.unchanged

    def to_dict(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "up": self.up,
            "down": self.down,
            "unchanged": self.unchanged,
            "only_old": self.only_old,
            "only_new": self.only_new,
            "largest_up": None if self.largest_up is None else self.largest_up.to_dict(),
            "largest_down": None if self.largest_down is None else self.largest_down.to_dict(),
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Period:
    """One stretch of time in which both tables price an endpoint with one version each.

    ``start`` and ``end`` are ISO dates (UTC; ``end`` excluded), None when open; ``current`` is
    true for the period holding today. ``old_version``/``new_version`` name the version that
    applies: its ``effective_from``, "always" for an endpoint without dated versions, None when
    that table has no prices for the endpoint in this period."""

    start: str | None
    end: str | None
    current: bool
    old_version: str | None
    new_version: str | None
    status: Status
    changes: tuple[Change, ...] = ()
    grid: GridDiff = field(default_factory=GridDiff)

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.start,
            "until": self.end,
            "current": self.current,
            "old_version": self.old_version,
            "new_version": self.new_version,
            "status": self.status,
            "changes": [change.to_dict() for change in self.changes],
            "grid": self.grid.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class EndpointDiff:
    name: str
    status: Status
    periods: tuple[Period, ...]

    @property
    def up(self) -> int:
        return sum(period.grid.up for period in self.periods)

    @property
    def down(self) -> int:
        return sum(period.grid.down for period in self.periods)

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.name,
            "status": self.status,
            "periods": [period.to_dict() for period in self.periods],
        }


@dataclass(frozen=True, slots=True)
class TableDiff:
    old: PriceTable
    new: PriceTable
    at: str | None
    endpoints: tuple[EndpointDiff, ...]

    @property
    def rises(self) -> bool:
        """Whether any grid point's price goes up (in any period compared)."""
        return any(endpoint.up for endpoint in self.endpoints)

    def count(self, status: Status) -> int:
        return sum(1 for endpoint in self.endpoints if endpoint.status == status)

    def to_dict(self) -> dict[str, Any]:
        return {
            "old": _table_data(self.old),
            "new": _table_data(self.new),
            "at": self.at,
            "endpoints": [endpoint.to_dict() for endpoint in self.endpoints],
            "summary": {
                "added": self.count("added"),
                "removed": self.count("removed"),
                "changed": self.count("changed"),
                "unchanged": self.count("unchanged"),
                "up": sum(endpoint.up for endpoint in self.endpoints),
                "down": sum(endpoint.down for endpoint in self.endpoints),
                "rises": self.rises,
            },
        }


def _table_data(table: PriceTable) -> dict[str, Any]:
    return {
        "source": table.source,
        "table_version": table.table_version,
        "table_sha256": table.sha256,
    }


# --- comparing --------------------------------------------------------------------------------


def diff_tables(old: PriceTable, new: PriceTable, *, at: Moment | None = None) -> TableDiff:
    """Every endpoint of either table, OLD's order first, then the ones only NEW has.

    Without ``at`` each endpoint is compared over all time (period by period); with it, only in
    the period that holds ``at``. InvalidArguments when ``at`` is not a moment.
    """
    day = None if at is None else day_of(at, "pricing diff")
    names = list(old.endpoints) + [name for name in new.endpoints if name not in old.endpoints]
    endpoints = tuple(
        diff_endpoint(name, old.endpoints.get(name), new.endpoints.get(name), day=day)
        for name in names
    )
    shown = None if day is None else dt.date.fromordinal(day).isoformat()
    return TableDiff(old, new, shown, endpoints)


def diff_endpoint(
    name: str,
    old: PricedEndpoint | None,
    new: PricedEndpoint | None,
    *,
    day: int | None = None,
) -> EndpointDiff:
    """Endpoint ``name`` in the two tables (None: that table does not have it), over every period
    or, with ``day`` (a ``date.toordinal()``), in the period holding that day."""
    dates = sorted(
        {
            dt.date.fromisoformat(text).toordinal()
            for endpoint in (old, new)
            if endpoint is not None
            for text in endpoint.effective_dates
        }
    )
    today = engine._today()
    periods = []
    bounds: list[int | None] = [None, *dates, None]
    for start, end in itertools.pairwise(bounds):
        if day is not None and not ((start is None or start <= day) and (end is None or day < end)):
            continue
        # compare at the period's first day; the first period (before every date) the day before
        # the first date; with no dates at all, any day: today
        when = start if start is not None else (end - 1 if end is not None else today)
        old_version = _version(old, when)
        new_version = _version(new, when)
        if old_version is None and new_version is None:
            continue
        current = (start is None or start <= today) and (end is None or today < end)
        periods.append(_period(old_version, new_version, start, end, current))
    status: Status
    if all(period.status == "unchanged" for period in periods):
        status = "unchanged"  # also with no period: with ``day``, neither table prices it then
    elif all(period.old_version is None for period in periods):
        status = "added"
    elif all(period.new_version is None for period in periods):
        status = "removed"
    else:
        status = "changed"
    return EndpointDiff(name, status, tuple(periods))


def _version(endpoint: PricedEndpoint | None, day: int) -> PricedEndpoint | None:
    if endpoint is None:
        return None
    try:
        return endpoint.version_at(dt.date.fromordinal(max(day, 1)))
    except NoPriceInEffect:
        return None


def _iso(day: int | None) -> str | None:
    return None if day is None else dt.date.fromordinal(day).isoformat()


def _period(
    old: PricedEndpoint | None,
    new: PricedEndpoint | None,
    start: int | None,
    end: int | None,
    current: bool,
) -> Period:
    old_version = None if old is None else (old.effective_from or ALWAYS)
    new_version = None if new is None else (new.effective_from or ALWAYS)
    if old is None or new is None:
        grid = _one_sided_grid(old, new)
        status: Status = "added" if old is None else "removed"
        return Period(_iso(start), _iso(end), current, old_version, new_version, status, (), grid)
    changes = tuple(_changes(old, new))
    grid = compare_grids(old, new)
    moved = grid.up or grid.down or grid.only_old or grid.only_new or grid.error
    status = "changed" if changes or moved else "unchanged"
    return Period(_iso(start), _iso(end), current, old_version, new_version, status, changes, grid)


def _one_sided_grid(old: PricedEndpoint | None, new: PricedEndpoint | None) -> GridDiff:
    endpoint = old if old is not None else new
    assert endpoint is not None
    try:
        size = math.prod(len(values) for values in endpoint.grid_axes().values())
    except ValueError as exc:
        return GridDiff(error=str(exc))
    return GridDiff(only_old=size) if old is not None else GridDiff(only_new=size)


def compare_grids(old: PricedEndpoint, new: PricedEndpoint) -> GridDiff:
    """Quote every grid point in both versions (neither may have dated versions of its own: pass
    ``version_at()``'s result). The grid is the product, over the inputs either version prices,
    of the values either allows; a point only one version accepts is counted apart."""
    try:
        old_axes = old.grid_axes()
        new_axes = new.grid_axes()
    except ValueError as exc:
        return GridDiff(error=str(exc))
    axes: dict[str, list[Any]] = {}
    for source in (old_axes, new_axes):
        for name, values in source.items():
            known = axes.setdefault(name, [])
            seen = {(type(value), value) for value in known}
            known.extend(value for value in values if (type(value), value) not in seen)
    size = math.prod(len(values) for values in axes.values())
    if size > GRID_LIMIT:
        return GridDiff(error=f"{new.name}: the price grid has {size} points, over {GRID_LIMIT}")
    up = down = unchanged = only_old = only_new = 0
    largest_up: Move | None = None
    largest_down: Move | None = None
    names = list(axes)
    for combo in itertools.product(*axes.values()):
        point = dict(zip(names, combo, strict=True))
        old_total = _total(old, point)
        new_total = _total(new, point)
        if old_total is None or new_total is None:
            if old_total is not None:
                only_old += 1
            elif new_total is not None:
                only_new += 1
            continue
        if new_total == old_total:
            unchanged += 1
            continue
        move = Move(point, old_total, new_total)
        if new_total > old_total:
            up += 1
            if largest_up is None or move.change > largest_up.change:
                largest_up = move
        else:
            down += 1
            if largest_down is None or move.change < largest_down.change:
                largest_down = move
    return GridDiff(up, down, unchanged, only_old, only_new, largest_up, largest_down)


def _total(endpoint: PricedEndpoint, point: Mapping[str, Any]) -> Decimal | None:
    try:
        return endpoint.quote(point).total
    except (InvalidArguments, PriceTableError):  # a point it refuses; no ceiling set yet
        return None


# --- what changed -----------------------------------------------------------------------------

_ENDPOINT_FIELDS = ("title", "source_url", "price_read_on")
_INPUT_FIELDS = (
    "type",
    "required",
    "default",
    "nullable",
    "enum",
    "minimum",
    "maximum",
    "min_length",
    "max_length",
    "description",
)
_RULE_FIELDS: Mapping[str, tuple[str, ...]] = {
    "base": ("amount",),
    "per_unit": ("input", "amount", "unit", "above", "rounding", "unit_name"),
    "lookup": ("input", "factors"),
    "proportional": ("input", "per", "floor", "unit_name"),
    "megapixels": ("input", "amount", "pixels", "rounding", "presets"),
    "frames": ("input", "amount", "rate_input", "rate", "rounding", "unit_name"),
    "characters": ("input", "amount", "per", "rounding", "unit_name"),
    "ceiling": ("amount",),
}


def _changes(old: PricedEndpoint, new: PricedEndpoint) -> list[Change]:
    changes = [
        Change("endpoint", new.name, "changed", name, getattr(old, name), getattr(new, name))
        for name in _ENDPOINT_FIELDS
        if getattr(old, name) != getattr(new, name)
    ]
    changes.extend(_input_changes(old.inputs, new.inputs))
    changes.extend(_rule_changes(old.rules, new.rules))
    return changes


def input_data(spec: InputRule) -> dict[str, Any]:
    """An input's spec as JSON-ready data (the keys of the table format)."""
    return {
        "type": spec.type,
        "required": spec.required,
        "default": spec.default,
        "nullable": spec.nullable,
        "enum": None if spec.enum is None else list(spec.enum),
        "minimum": spec.minimum,
        "maximum": spec.maximum,
        # a string's bounds of length, only when set: the data of other inputs is as before
        **({"min_length": spec.min_length} if spec.min_length is not None else {}),
        **({"max_length": spec.max_length} if spec.max_length is not None else {}),
        "description": spec.description,
    }


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type, all the way down (1 is not True, 1.0 is not 1)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _input_changes(old: Mapping[str, InputRule], new: Mapping[str, InputRule]) -> list[Change]:
    changes = []
    for name in [*old, *(n for n in new if n not in old)]:
        if name not in new:
            changes.append(Change("input", name, "removed", old=input_data(old[name])))
        elif name not in old:
            changes.append(Change("input", name, "added", new=input_data(new[name])))
        else:
            before, after = input_data(old[name]), input_data(new[name])
            changes.extend(
                Change("input", name, "changed", key, before.get(key), after.get(key))
                for key in _INPUT_FIELDS
                if not _same(before.get(key), after.get(key))
            )
    return changes


def rule_data(rule: PriceRule) -> dict[str, Any]:
    """A rule as JSON-ready data: its kind, the keys that kind uses, and its description."""
    data: dict[str, Any] = {"kind": rule.kind}
    for key in _RULE_FIELDS[rule.kind]:
        value: Any
        if key == "pixels":  # the table's names of what the compiled rule keeps as ``per``
            value = rule.per
        elif key == "rate":  # a fixed frame rate; none when an input carries it
            value = rule.per if rule.rate_input is None else None
        else:
            value = getattr(rule, key)
        if key == "amount":
            value = format_usd(value)
        elif key == "floor":
            value = _fmt_factor(value)
        elif key == "factors":
            value = {name: _fmt_factor(factor) for name, factor in value.items()}
        elif key == "presets":
            value = {name: f"{w}x{h}" for name, (w, h) in value.items()}
        data[key] = value
    data["description"] = rule.description
    return data


def _keyed(rules: Sequence[PriceRule]) -> dict[tuple[str, int], PriceRule]:
    """Rules by (name, how many rules of that name came before): names may repeat."""
    seen: dict[str, int] = {}
    keyed = {}
    for rule in rules:
        count = seen.get(rule.name, 0)
        seen[rule.name] = count + 1
        keyed[(rule.name, count)] = rule
    return keyed


def _rule_label(key: tuple[str, int]) -> str:
    name, count = key
    return name if count == 0 else f"{name} #{count + 1}"


def _rule_changes(old: Sequence[PriceRule], new: Sequence[PriceRule]) -> list[Change]:
    before, after = _keyed(old), _keyed(new)
    changes = []
    for key in [*before, *(k for k in after if k not in before)]:
        label = _rule_label(key)
        if key not in after:
            changes.append(Change("rule", label, "removed", old=rule_data(before[key])))
            continue
        if key not in before:
            changes.append(Change("rule", label, "added", new=rule_data(after[key])))
            continue
        a, b = rule_data(before[key]), rule_data(after[key])
        for name in [*a, *(n for n in b if n not in a)]:
            x, y = a.get(name), b.get(name)
            if name == "factors" and isinstance(x, dict) and isinstance(y, dict):
                changes.extend(
                    Change("rule", label, "changed", f"factors.{k}", x.get(k), y.get(k))
                    for k in [*x, *(k for k in y if k not in x)]
                    if x.get(k) != y.get(k)
                )
            elif not _same(x, y):
                changes.append(Change("rule", label, "changed", name, x, y))
    common_before = [_rule_label(k) for k in before if k in after]
    common_after = [_rule_label(k) for k in after if k in before]
    if common_before != common_after:
        changes.append(Change("rule", "", "changed", "order", common_before, common_after))
    return changes
