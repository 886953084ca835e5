"""The pure pricing engine: a compiled price table, argument validation and quotes.

Nothing here does I/O or imports pydantic: the loader validates the file once and compiles it
into these plain objects, so a quote costs a few dictionary look-ups and Decimal operations.
"""

from __future__ import annotations

import datetime as dt
import difflib
import itertools
import json
import math
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Context, Decimal, localcontext
from types import MappingProxyType
from typing import Any, Literal

from falbudget import clock
from falbudget.errors import (
    _MISSING,
    InvalidArguments,
    NoPriceInEffect,
    PriceTableError,
    UnknownEndpoint,
)
from falbudget.money import format_usd, normalize

_MICRO = Decimal("0.000001")
_CENT = Decimal("0.01")
_CONTEXT = Context(prec=28, rounding=ROUND_HALF_EVEN)
"""The arithmetic of every price: Python's default context, whatever the caller's is set to."""
_ADD = _CONTEXT.add
_MULTIPLY = _CONTEXT.multiply
_ZERO = Decimal(0)
GRID_LIMIT = 100_000
"""The most grid points an endpoint may have before ``grid()`` refuses to enumerate them."""

RuleKind = Literal[
    "base", "per_unit", "lookup", "proportional", "megapixels", "frames", "characters", "ceiling"
]
InputType = Literal["string", "integer", "number", "boolean", "image_size", "json"]
MAX_SIDE = 100_000
"""The widest or tallest explicit image_size a quote accepts, in pixels."""

Moment = dt.datetime | dt.date | int | float
"""When to price: an aware datetime, a naive one (read as UTC), a date (that day, UTC), or POSIX
seconds (the guard's clock). None, where allowed, means now."""

_EPOCH_DAY = dt.date(1970, 1, 1).toordinal()
_SECONDS_A_DAY = 86400
_FIRST_DAY, _LAST_DAY = dt.date.min.toordinal(), dt.date.max.toordinal()
_FIRST_SECOND = (_FIRST_DAY - _EPOCH_DAY) * _SECONDS_A_DAY
_LAST_SECOND = (_LAST_DAY + 1 - _EPOCH_DAY) * _SECONDS_A_DAY - 1


def _today() -> int:
    """Today's UTC date as a proleptic Gregorian ordinal (``date.toordinal()``)."""
    return int(clock.now() // _SECONDS_A_DAY) + _EPOCH_DAY


def day_of(moment: Moment, endpoint: str = "quote") -> int:
    """The UTC day (a ``date.toordinal()``) a moment falls on; InvalidArguments for anything else.

    A naive datetime is read as UTC; an aware one is converted to UTC first, so
    2026-12-01T01:00+02:00 is 2026-11-30 in UTC.
    """
    if isinstance(moment, dt.datetime):
        try:
            if moment.utcoffset() is not None:
                moment = moment.astimezone(dt.UTC)
        except OverflowError:
            pass  # within hours of datetime.min or max: its own date is as good as any
        return moment.toordinal()
    if isinstance(moment, dt.date):
        return moment.toordinal()
    day = None
    if isinstance(moment, int) and not isinstance(moment, bool):
        day = moment // _SECONDS_A_DAY + _EPOCH_DAY  # exact: math.isfinite(10**400) overflows
    elif isinstance(moment, float) and math.isfinite(moment):
        day = int(moment // _SECONDS_A_DAY) + _EPOCH_DAY
    if day is not None:
        if _FIRST_DAY <= day <= _LAST_DAY:
            return day
        raise InvalidArguments(
            endpoint,
            "at",
            moment,
            f"POSIX seconds within the years 1 to 9999 ({_FIRST_SECOND} to {_LAST_SECOND})",
        )
    raise InvalidArguments(
        endpoint,
        "at",
        moment,
        "a datetime (naive means UTC), a date, POSIX seconds, or None for now",
    )


def show_moment(moment: Moment) -> str:
    """A moment as ISO 8601 text, for messages: '2026-12-01', '2026-12-01T10:00:00+00:00'."""
    if isinstance(moment, dt.date):
        return moment.isoformat()
    try:
        return dt.datetime.fromtimestamp(moment, dt.UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return repr(moment)


def _shown(value: Any) -> str:
    """An input's value as KEY=VALUE writes it: strings bare, others as JSON (true, null)."""
    return value if isinstance(value, str) else json.dumps(value)


def _json_key(value: Any) -> str:
    """How a value is written as a key of a lookup rule: strings as they are, others as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _fmt_factor(factor: Decimal) -> str:
    return f"{factor.normalize():f}"


@dataclass(frozen=True, slots=True)
class LineItem:
    """One rule's part in a quote: the money it added or the factor it applied, and why."""

    rule: str
    kind: RuleKind
    input: str | None
    value: Any
    detail: str
    amount: Decimal | None = None
    factor: Decimal | None = None

    def shown(self) -> str:
        """The priced input as KEY=VALUE ('num_frames=144'); a text priced by its characters as
        its length ('text=1234 characters'), never the text itself."""
        if self.kind == "characters":
            return f"{self.input}={self.value} characters"
        return f"{self.input}={_shown(self.value)}"

    def effect(self) -> str:
        """'+0.40' for an amount, 'x0.5' for a factor, '0.80' for the base."""
        if self.factor is not None:
            return f"x{_fmt_factor(self.factor)}"
        amount = self.amount if self.amount is not None else _ZERO
        if self.kind in ("base", "ceiling"):
            return format_usd(amount)
        return f"+{format_usd(amount)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "kind": self.kind,
            "input": self.input,
            "value": self.value,
            "detail": self.detail,
            "amount": None if self.amount is None else format_usd(self.amount),
            "factor": None if self.factor is None else _fmt_factor(self.factor),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LineItem:
        return cls(
            rule=data["rule"],
            kind=data["kind"],
            input=data["input"],
            value=data["value"],
            detail=data["detail"],
            amount=None if data["amount"] is None else normalize(Decimal(data["amount"])),
            factor=None if data["factor"] is None else Decimal(data["factor"]),
        )


@dataclass(frozen=True, slots=True)
class Quote:
    """What a request will cost, and why. Immutable; ``to_json()`` writes money as strings."""

    endpoint: str
    total: Decimal
    arguments: Mapping[str, Any]
    line_items: tuple[LineItem, ...]
    table_version: str
    table_sha256: str
    currency: str = "USD"
    effective_from: str | None = None
    """The first day (ISO date, UTC) of the dated version of the endpoint's prices that priced
    this quote; None when the endpoint has one set of rules, always in effect."""

    def __str__(self) -> str:
        """The quote as a sentence: 'fal-ai/magi/image-to-video costs 1.20 USD with
        num_frames=144 resolution=480p num_inference_steps=32 (price table 2026.12.06)'."""
        priced = " ".join(item.shown() for item in self.line_items if item.input)
        inputs = f" with {priced}" if priced else ""
        table = f"price table {self.table_version}"
        if self.effective_from is not None:
            table += f", prices from {self.effective_from}"
        if self.is_ceiling:
            return (
                f"{self.endpoint} costs at most {format_usd(self.total)} {self.currency}, a"
                f" ceiling: its price is known only after the call ({table})"
            )
        return f"{self.endpoint} costs {format_usd(self.total)} {self.currency}{inputs} ({table})"

    @property
    def is_ceiling(self) -> bool:
        """True when ``total`` is a ceiling set for an endpoint priced only after the call: the
        guard holds it, and fal's bill says what the request cost."""
        return any(item.kind == "ceiling" for item in self.line_items)

    @property
    def rules_version(self) -> str:
        """Which prices were used, in one string: the table version, and for a dated version
        its first day after an '@': '2026.11.24' or '2026.11.24@2026-12-01'. The guard records
        this as the ledger row's table_version (see ``split_rules_version``)."""
        if self.effective_from is None:
            return self.table_version
        return f"{self.table_version}@{self.effective_from}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data; money as decimal strings. ``effective_from`` is there only when a
        dated version priced the quote, so the JSON of an undated endpoint is as before."""
        data: dict[str, Any] = {
            "endpoint": self.endpoint,
            "total": format_usd(self.total),
            "currency": self.currency,
            "arguments": dict(self.arguments),
            "line_items": [item.to_dict() for item in self.line_items],
            "table_version": self.table_version,
            "table_sha256": self.table_sha256,
        }
        if self.effective_from is not None:
            data["effective_from"] = self.effective_from
        if self.is_ceiling:
            data["ceiling"] = True
        return data

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Quote:
        return cls(
            endpoint=data["endpoint"],
            total=normalize(Decimal(data["total"])),
            currency=data["currency"],
            arguments=MappingProxyType(dict(data["arguments"])),
            line_items=tuple(LineItem.from_dict(item) for item in data["line_items"]),
            table_version=data["table_version"],
            table_sha256=data["table_sha256"],
            effective_from=data.get("effective_from"),
        )

    @classmethod
    def from_json(cls, text: str) -> Quote:
        return cls.from_dict(json.loads(text))


def split_rules_version(text: str) -> tuple[str, str | None]:
    """``Quote.rules_version`` (a ledger row's table_version) back into the table version and the
    first day of the dated version: '2026.11.24@2026-12-01' -> ('2026.11.24', '2026-12-01')."""
    version, sep, day = text.rpartition("@")
    if sep:
        try:
            dt.date.fromisoformat(day)
        except ValueError:
            return text, None
        return version, day
    return text, None


@dataclass(frozen=True, slots=True)
class InputRule:
    """One input of an endpoint's schema, compiled for fast checking."""

    name: str
    type: InputType
    required: bool = False
    default: Any = None
    nullable: bool = False
    enum: tuple[Any, ...] | None = None
    minimum: int | None = None
    maximum: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    """A string's fewest and most characters: Unicode code points, as ``len`` counts them."""
    description: str = ""
    _enum_set: frozenset[Any] = field(default=frozenset(), repr=False, compare=False)

    @property
    def allowed(self) -> str:
        """What values are allowed, in words, for error messages and `falbudget endpoints`."""
        if self.enum is not None:
            text = "one of " + ", ".join(json.dumps(v) for v in self.enum)
        elif self.type == "integer" and self.minimum is not None and self.maximum is not None:
            text = f"an integer from {self.minimum} to {self.maximum}"
        elif self.type == "integer":
            text = "an integer" + _bounds(self.minimum, self.maximum)
        elif self.type == "number":
            text = "a number" + _bounds(self.minimum, self.maximum)
        elif self.type == "boolean":
            text = "true or false"
        elif self.type == "json":
            text = "any JSON value"
        else:
            text = "a string" + _lengths(self.min_length, self.max_length)
        if self.type == "image_size":
            text = (
                text + " or " if self.enum is not None else ""
            ) + f'{{"width": W, "height": H}} (whole pixels, 1 to {MAX_SIDE})'
        return text + (" or null" if self.nullable else "")

    def check(self, endpoint: str, value: Any) -> Any:
        """Return the value when allowed, else raise InvalidArguments."""
        if value is None and self.nullable:
            return None
        kind = type(value)
        if self.type == "json":
            return value
        if self.type == "image_size" and kind is dict:
            if _explicit_size(value) is None:
                raise InvalidArguments(endpoint, self.name, value, self.allowed)
            return value
        if self.type == "integer":
            ok = kind is int
        elif self.type in ("string", "image_size"):
            ok = kind is str
        elif self.type == "boolean":
            ok = kind is bool
        else:
            ok = kind is int or (kind is float and math.isfinite(value))
        if ok:
            if self.enum is not None:
                ok = value in self._enum_set
                if ok and kind is float:  # a number's enum lists integers: 5.0 is its 5, so a
                    value = int(value)  # lookup rule finds the factor it keys by "5"
            elif kind is str:
                if self.min_length is not None and len(value) < self.min_length:
                    ok = False
                if self.max_length is not None and len(value) > self.max_length:
                    ok = False
            else:
                if self.minimum is not None and value < self.minimum:
                    ok = False
                if self.maximum is not None and value > self.maximum:
                    ok = False
        if not ok:
            raise InvalidArguments(endpoint, self.name, value, self._explain(value))
        return value

    def _explain(self, value: Any) -> str:
        hint = ""
        if self.type in ("integer", "number") and isinstance(value, str):
            hint = " (give the number itself, not a string)"
        elif self.type == "integer" and isinstance(value, float) and not isinstance(value, bool):
            hint = " (a float is not an integer, even when whole)"
        elif isinstance(value, bool) and self.type in ("integer", "number"):
            hint = " (a boolean is not a number)"
        return self.allowed + hint


_Simple = tuple[type, frozenset[Any] | None, Any, Any]
"""An input :meth:`PricedEndpoint._normalize` checks inline: the value's exact type, its
allowed values (None: any) and bounds (None: none)."""


def _simple_check(spec: InputRule) -> _Simple | None:
    """How to accept a valid value of ``spec`` inline, exactly when :meth:`InputRule.check`
    returns it unchanged; None for inputs checked only by ``check`` (a number, an image size,
    any JSON). A value that fails the inline test goes to ``check``, which accepts what else it
    allows (null for a nullable input) or raises its error."""
    kinds: dict[str, type] = {"integer": int, "string": str, "boolean": bool}
    kind = kinds.get(spec.type)
    if kind is None:
        return None
    if spec.enum is not None:  # check ignores the bounds of an enum
        return kind, spec._enum_set, None, None
    if spec.min_length is not None or spec.max_length is not None:
        return None  # a string's bounds of length: check counts its characters
    return kind, None, spec.minimum, spec.maximum


def _explicit_size(value: Mapping[str, Any]) -> tuple[int, int] | None:
    """(width, height) of an explicit image_size, when it is one: exactly those two keys, each a
    whole number of pixels from 1 to MAX_SIDE."""
    if set(value) != {"width", "height"}:
        return None
    width, height = value["width"], value["height"]
    for side in (width, height):
        if type(side) is not int or not 1 <= side <= MAX_SIDE:
            return None
    return width, height


def _lengths(fewest: int | None, most: int | None) -> str:
    """' of 1 to 5000 characters' for a string's bounds of length; '' without any."""
    if fewest is not None and most is not None:
        return f" of {fewest} to {most} characters"
    if fewest is not None:
        return f" of at least {fewest} character{'' if fewest == 1 else 's'}"
    if most is not None:
        return f" of at most {most} characters"
    return ""


def _bounds(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum} to {maximum}"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


_MEMO_LIMIT = 4096
"""The most input values a rule remembers the effect of (MAGI-1's largest input has 97)."""

Effect = tuple[Decimal, Decimal | None, LineItem]
"""What a rule does for one input value: the money it adds, or (when not None) the factor it
applies; and its line item."""


@dataclass(frozen=True, slots=True)
class PriceRule:
    """One compiled rule. ``apply`` returns the new running total and the line item."""

    name: str
    kind: RuleKind
    input: str | None = None
    amount: Decimal = _ZERO
    unit: int = 1
    above: int = 0
    rounding: Literal["up", "down", "exact"] = "up"
    unit_name: str = ""
    factors: Mapping[str, Decimal] = field(default_factory=dict)
    per: int = 1
    floor: Decimal = _ZERO
    presets: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    description: str = ""
    rate_input: str | None = None
    """frames: the input that carries the frame rate (else the fixed rate is ``per``)."""
    # A rule's effect depends only on its input's value, never on the running total, so it is
    # worked out once per value and remembered: a quote then costs a look-up and one Decimal
    # operation per rule. Keyed by (type, value) so that 1, 1.0 and True stay apart.
    _memo: dict[tuple[type, Any], Effect] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def value_in(self, arguments: Mapping[str, Any]) -> Any:
        """What the rule reads of checked arguments: its input's value, or for a frames rule
        with a frame-rate input, the pair (frames, frames a second); for a characters rule, the
        number of characters of its text (Unicode code points, as ``len`` counts them)."""
        if self.input is None:
            return None
        if self.kind == "characters":
            # the count, not the text: the memo then holds small ints, never a request's text
            return len(arguments[self.input])
        if self.rate_input is None:
            return arguments[self.input]
        return (arguments[self.input], arguments[self.rate_input])

    def apply(self, running: Decimal, arguments: Mapping[str, Any]) -> tuple[Decimal, LineItem]:
        value = self.value_in(arguments)
        added, factor, item = self.effect_of(value)
        if factor is None:
            return _ADD(running, added), item
        return _MULTIPLY(running, factor), item

    def effect_of(self, value: Any) -> Effect:
        """The effect of this rule for an input value already checked against its schema."""
        key = (type(value), value)
        try:
            effect = self._memo.get(key)
        except TypeError:  # unhashable: not a checked value, but work it out all the same
            return self._work_out(value)
        if effect is None:
            effect = self._work_out(value)
            if len(self._memo) < _MEMO_LIMIT:
                self._memo[key] = effect
        return effect

    def _work_out(self, value: Any) -> Effect:
        with localcontext(_CONTEXT):
            return self._work_out_here(value)

    def _work_out_here(self, value: Any) -> Effect:
        kind = self.kind
        if kind in ("base", "ceiling"):
            item = LineItem(self.name, kind, None, None, self.description, amount=self.amount)
            return self.amount, None, item
        if kind == "per_unit":
            beyond = value - self.above
            units: int | Decimal
            if beyond <= 0:
                units = 0
            elif self.rounding == "up":
                units = -(-beyond // self.unit)
            elif self.rounding == "down":
                units = beyond // self.unit
            else:
                units = Decimal(beyond) / self.unit
            added = self.amount * units
            plural = "" if units == 1 else "s"
            detail = f"{units} extra {self.unit_name}{plural}"
            item = LineItem(self.name, kind, self.input, value, detail, amount=normalize(added))
            return added, None, item
        if kind == "megapixels":
            if isinstance(value, str):
                width, height = self.presets[value]
                shown = f"{value} ({width}x{height})"
            else:
                width, height = value["width"], value["height"]
                shown = f"{width}x{height}"
            pixels = Decimal(width * height)
            if self.rounding == "up":
                count: int | Decimal = -(-(width * height) // self.per)
            else:
                count = pixels / self.per
            added = self.amount * count
            plural = "" if count == 1 else "s"
            detail = f"{shown}: {count} megapixel{plural}"
            item = LineItem(self.name, kind, self.input, value, detail, amount=normalize(added))
            return added, None, item
        if kind == "frames":
            frames, rate = value if self.rate_input is not None else (value, self.per)
            seconds: int | Decimal
            if frames <= 0:  # a schema may allow it; no frames is no seconds, never a credit
                seconds = 0
            elif self.rounding == "up":
                seconds = -(-frames // rate)
            else:
                seconds = Decimal(frames) / rate
            added = self.amount * seconds
            plural = "" if seconds == 1 else "s"
            detail = f"{frames} frames at {rate} a second: {seconds} {self.unit_name}{plural}"
            item = LineItem(self.name, kind, self.input, frames, detail, amount=normalize(added))
            return added, None, item
        if kind == "characters":
            if self.rounding == "up":
                blocks: int | Decimal = -(-value // self.per)
            else:
                blocks = Decimal(value) / self.per
            added = self.amount * blocks
            plural = "" if value == 1 else "s"
            block = "block" if blocks == 1 else "blocks"
            detail = f"{value} {self.unit_name}{plural}: {blocks} {block} of {self.per}"
            item = LineItem(self.name, kind, self.input, value, detail, amount=normalize(added))
            return added, None, item
        if kind == "lookup":
            factor = self.factors[_json_key(value)]
            detail = str(value)
        else:
            factor = max(self.floor, Decimal(value) / self.per)
            detail = f"{value} {self.unit_name}".rstrip()
        return _ZERO, factor, LineItem(self.name, kind, self.input, value, detail, factor=factor)


@dataclass(frozen=True, slots=True)
class PricedEndpoint:
    """An endpoint of a loaded table: its input schema and its rules, ready to quote.

    An endpoint with dated versions of its prices lists them in ``versions`` (oldest first, each
    a PricedEndpoint with its ``effective_from`` and no versions of its own); its own fields are
    those of the version in effect when the table was loaded (else the earliest). Every method
    takes ``at=`` (default: now) and works on the version in effect at that moment.
    """

    name: str
    title: str
    source_url: str
    price_read_on: str
    inputs: Mapping[str, InputRule]
    rules: tuple[PriceRule, ...]
    table_version: str
    table_sha256: str
    currency: str
    effective_from: str | None = None
    """This version's first day (ISO date, UTC); None for an endpoint without dated versions."""
    versions: tuple[PricedEndpoint, ...] = ()
    """Every dated version, oldest first; empty for an endpoint with one set of rules."""
    after_call: bool = False
    """Priced only after the call: ``rules`` is one ``ceiling`` rule, or empty while the table
    sets no ceiling (then every quote raises PriceTableError saying so)."""
    _starts: tuple[int, ...] = field(default=(), repr=False, compare=False)
    """Each version's first day as a ``date.toordinal()``, for a bisect."""
    _needed: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)
    """The required inputs a rule prices (a characters rule's text): a quote needs them."""
    _simple: Mapping[str, _Simple] = field(default_factory=dict, repr=False, compare=False)
    """The inputs checked inline by :meth:`_normalize` (see :func:`_simple_check`); the others
    go through :meth:`InputRule.check`, which also words every error."""
    _defaults: tuple[tuple[str, Any], ...] = field(default=(), repr=False, compare=False)
    """The inputs with a default, in schema order."""

    def __post_init__(self) -> None:
        needed = frozenset(
            rule.input
            for rule in self.rules
            if rule.kind == "characters"
            and rule.input is not None
            and rule.input in self.inputs
            and self.inputs[rule.input].required
        )
        if needed:
            object.__setattr__(self, "_needed", needed)
        if self.versions and not self._starts:
            starts = tuple(
                dt.date.fromisoformat(v.effective_from or "").toordinal() for v in self.versions
            )
            object.__setattr__(self, "_starts", starts)
        simple = {
            name: check for name, spec in self.inputs.items() if (check := _simple_check(spec))
        }
        object.__setattr__(self, "_simple", simple)
        defaults = tuple(
            (name, spec.default) for name, spec in self.inputs.items() if spec.default is not None
        )
        object.__setattr__(self, "_defaults", defaults)

    @property
    def priced_inputs(self) -> tuple[str, ...]:
        """The inputs that the rules read, in rule order, each once."""
        seen: dict[str, None] = {}
        for rule in self.rules:
            if rule.input is not None:
                seen[rule.input] = None
            if rule.rate_input is not None:
                seen[rule.rate_input] = None
        return tuple(seen)

    @property
    def effective_dates(self) -> tuple[str, ...]:
        """The first day of each dated version, oldest first (empty without versions)."""
        return tuple(v.effective_from or "" for v in self.versions)

    def version_at(self, at: Moment | None = None) -> PricedEndpoint:
        """The version of the prices in effect at ``at`` (default: now, UTC): this endpoint itself
        when it has no dated versions. Raises NoPriceInEffect before the earliest version, and
        InvalidArguments when ``at`` is not a moment."""
        if not self.versions:
            if at is not None:
                day_of(at, self.name)
            return self
        day = _today() if at is None else day_of(at, self.name)
        index = bisect_right(self._starts, day) - 1
        if index < 0:
            earliest = self.versions[0].effective_from or ""
            shown = "now" if at is None else f"at {show_moment(at)}"
            raise NoPriceInEffect(self.name, at, shown, earliest)
        return self.versions[index]

    def normalize_arguments(
        self,
        arguments: Mapping[str, Any] | None,
        *,
        strict: bool = False,
        at: Moment | None = None,
    ) -> dict[str, Any]:
        """Validate ``arguments`` and return them with defaults filled in.

        ``strict`` also requires the inputs the schema marks required (prompt, image_url), as the
        guard does before a request is sent; a plain quote may leave them out, except a required
        text that a rule prices by its characters. ``at`` picks the
        version whose input schema applies (default: now).
        """
        if self.versions or at is not None:
            return self.version_at(at)._normalize(arguments, strict)
        return self._normalize(arguments, strict)

    def _normalize(self, arguments: Mapping[str, Any] | None, strict: bool) -> dict[str, Any]:
        if arguments is None:
            arguments = {}
        elif not isinstance(arguments, Mapping):
            raise InvalidArguments(
                self.name, "arguments", arguments, "a JSON object mapping input names to values"
            )
        inputs = self.inputs
        simple = self._simple
        normalized: dict[str, Any] = {}
        for key, value in arguments.items():
            check = simple.get(key) if type(key) is str else None
            if check is not None:
                kind, allowed, low, high = check
                if (
                    type(value) is kind
                    and (allowed is None or value in allowed)
                    and (low is None or value >= low)
                    and (high is None or value <= high)
                ):
                    normalized[key] = value
                    continue
            spec = inputs.get(key) if type(key) is str else None
            if spec is None:
                raise InvalidArguments(self.name, str(key), value, self._unknown(key))
            normalized[key] = spec.check(self.name, value)
        if strict or self._needed:
            for name, spec in inputs.items():
                if name in normalized:
                    continue
                if spec.default is not None:
                    normalized[name] = spec.default
                elif spec.required and (strict or name in self._needed):
                    why = " (the price is per character of it)" if name in self._needed else ""
                    raise InvalidArguments(
                        self.name, name, _MISSING, f"required: {spec.allowed}{why}"
                    )
        else:
            for name, default in self._defaults:
                if name not in normalized:
                    normalized[name] = default
        return normalized

    def _unknown(self, key: object) -> str:
        names = list(self.inputs)
        close = difflib.get_close_matches(str(key), names, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        return f"unknown parameter; {hint}known parameters: {', '.join(names)}"

    def quote(
        self,
        arguments: Mapping[str, Any] | None = None,
        *,
        strict: bool = False,
        at: Moment | None = None,
    ) -> Quote:
        """What a request costs at ``at`` (default: now), with the version in effect then."""
        version = self.version_at(at) if (self.versions or at is not None) else self
        return version._price(version._normalize(arguments, strict))

    def price(self, normalized: Mapping[str, Any], *, at: Moment | None = None) -> Quote:
        """Price arguments that ``normalize_arguments`` returned (no validation here)."""
        version = self.version_at(at) if (self.versions or at is not None) else self
        return version._price(dict(normalized))

    @property
    def needs_ceiling(self) -> bool:
        """Priced only after the call, and its table sets no ceiling yet."""
        return self.after_call and not self.rules

    def _price(self, normalized: dict[str, Any]) -> Quote:
        """``price`` on a dict the quote may keep (``normalize_arguments`` made it afresh)."""
        if self.after_call and not self.rules:  # self.needs_ceiling
            raise PriceTableError(
                "its price is known only after the call and no ceiling is set: set"
                ' after_call: {ceiling: "USD"} for it in a table of your own, listed first',
                endpoint=self.name,
                field="after_call.ceiling",
            )
        running = _ZERO
        items = []
        try:
            for rule in self.rules:
                value = rule.value_in(normalized)
                try:  # rule.effect_of, inlined: the value's effect remembered, usually
                    effect = rule._memo.get((type(value), value)) or rule.effect_of(value)
                except TypeError:  # unhashable
                    effect = rule.effect_of(value)
                added, factor, item = effect
                running = _ADD(running, added) if factor is None else _MULTIPLY(running, factor)
                items.append(item)
            cents = running.quantize(_CENT, context=_CONTEXT)
            if cents == running:  # whole cents, the usual case: "1.20"
                total = cents
            else:  # up to the next whole micro-USD, trailing zeros dropped: "0.003334"
                with localcontext(_CONTEXT):
                    total = normalize(running.quantize(_MICRO, rounding=ROUND_CEILING))
        except ArithmeticError:  # beyond what 28 digits hold: only a huge unbounded input
            raise InvalidArguments(
                self.name,
                "arguments",
                {name: normalized[name] for name in self.priced_inputs},
                "priced inputs whose total fits in 28 significant digits",
            ) from None
        return Quote(
            self.name,
            total,
            MappingProxyType(normalized),
            tuple(items),
            self.table_version,
            self.table_sha256,
            self.currency,
            self.effective_from,
        )

    def grid_axes(self, *, at: Moment | None = None) -> dict[str, tuple[Any, ...]]:
        """Every allowed value of each priced input (enum values, or each integer of a range),
        in the version in effect at ``at`` (default: now)."""
        version = self.version_at(at) if (self.versions or at is not None) else self
        axes: dict[str, tuple[Any, ...]] = {}
        blocks = {r.input: r.per for r in version.rules if r.kind == "characters"}
        for name in version.priced_inputs:
            spec = version.inputs[name]
            values = sample_texts(spec, blocks[name]) if name in blocks else input_values(spec)
            if values is None:
                raise ValueError(
                    f"{self.name}: {name} has no enum and no bounded range, so its grid is infinite"
                )
            axes[name] = values
        return axes

    def grid(self, *, at: Moment | None = None) -> Iterator[dict[str, Any]]:
        """Every combination of the priced inputs' allowed values (the others at defaults), in
        the version in effect at ``at`` (default: now)."""
        axes = self.grid_axes(at=at)
        size = math.prod(len(values) for values in axes.values())
        if size > GRID_LIMIT:
            raise ValueError(f"{self.name}: the price grid has {size} points, over {GRID_LIMIT}")
        names = list(axes)
        for combo in itertools.product(*axes.values()):
            yield dict(zip(names, combo, strict=True))

    def price_range(self, *, at: Moment | None = None) -> tuple[Decimal, Decimal]:
        """The cheapest and the dearest request, over the whole grid, at ``at`` (default: now)."""
        version = self.version_at(at) if (self.versions or at is not None) else self
        for rule in version.rules:
            if (
                rule.kind == "characters"
                and rule.input is not None
                and version.inputs[rule.input].max_length is None
            ):
                raise ValueError(
                    f"{self.name}: {rule.input} is priced by its characters and may be of any"
                    " length, so its price has no upper bound"
                )
        totals = [version.quote(point).total for point in version.grid()]
        return min(totals), max(totals)


SAMPLED_BLOCKS = 100
"""The most blocks of characters a grid samples a text's length at (besides the longest)."""
SAMPLED_CHARACTERS = 20_000_000
"""About the most characters of all the sampled block lengths together: with blocks of a
million characters, 4 blocks are sampled, not 100 (which would be 10 GB of text)."""


def sample_texts(spec: InputRule, per: int) -> tuple[str, ...]:
    """Texts that stand for every length of a string input priced by blocks of ``per``
    characters, for a grid: the shortest and the longest the schema allows, and each block's
    last character and the next one (1000 and 1001) for the first blocks: SAMPLED_BLOCKS of
    them, fewer when their texts would pass SAMPLED_CHARACTERS. A price rises with the length,
    so the cheapest and (with a max_length) the dearest requests are among them; without a
    max_length, the longest sampled is the last sampled block and one character
    (``price_range`` then says the price has no upper bound)."""
    fewest = spec.min_length or 0
    # n blocks sample texts of about per x n x (n + 1) characters in all
    blocks = min(SAMPLED_BLOCKS, max(1, math.isqrt(SAMPLED_CHARACTERS // per)))
    most = max(fewest, blocks * per + 1) if spec.max_length is None else spec.max_length
    lengths = {fewest, most}
    for block in range(1, min(most // per, blocks) + 1):
        lengths.update(n for n in (block * per, block * per + 1) if fewest <= n <= most)
    return tuple("x" * n for n in sorted(lengths))


def input_values(spec: InputRule) -> tuple[Any, ...] | None:
    """Every value an input allows, when that is a finite set: its enum as the table lists it,
    or each integer of a bounded integer range; None otherwise (a string, an open range)."""
    if spec.enum is not None:
        return spec.enum
    if spec.type == "integer" and spec.minimum is not None and spec.maximum is not None:
        return tuple(range(spec.minimum, spec.maximum + 1))
    return None


def _close_names(name: str, names: Sequence[str]) -> list[str]:
    """Up to three known names like ``name``: ignoring case, or containing it ("magi")."""
    lowered = {known.lower(): known for known in names}
    wanted = name.strip().lower()
    close = [
        lowered[match]
        for match in difflib.get_close_matches(wanted, list(lowered), n=3, cutoff=0.5)
    ]
    if len(wanted) >= 3:
        close += [known for low, known in lowered.items() if wanted in low and known not in close]
    return close[:3]


@dataclass(frozen=True)
class PriceTable:
    """A loaded, validated and compiled price table. Build one with ``load_table``."""

    endpoints: Mapping[str, PricedEndpoint]
    table_version: str
    effective_date: str
    currency: str
    sha256: str
    source: str
    schema_version: int = 1
    priced_by: Mapping[str, str] = field(default_factory=dict)
    """For a layered table (``layered_table``): the table file that priced each endpoint. Empty
    for one table: ``source`` priced them all."""

    def source_of(self, name: str) -> str:
        """The table file that priced endpoint ``name``."""
        return self.priced_by.get(name, self.source)

    def endpoint(self, name: str) -> PricedEndpoint:
        """The endpoint called ``name``, or UnknownEndpoint with the close matches."""
        try:
            return self.endpoints[name]
        except (KeyError, TypeError):
            names: Sequence[str] = list(self.endpoints)
            close = _close_names(str(name), names)
            raise UnknownEndpoint(str(name), close, known=len(names)) from None

    def quote(
        self,
        endpoint: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        strict: bool = False,
        at: Moment | None = None,
    ) -> Quote:
        """What ``endpoint`` with ``arguments`` costs under this table, at ``at``: the prices in
        effect at that moment (an aware datetime, a naive one read as UTC, a date, or POSIX
        seconds; default: now).

        Raises UnknownEndpoint or InvalidArguments (NoPriceInEffect, a subclass, before an
        endpoint's earliest dated prices); nothing else for JSON-like input.
        """
        return self.endpoint(endpoint).quote(arguments, strict=strict, at=at)

    def __contains__(self, name: object) -> bool:
        return name in self.endpoints
