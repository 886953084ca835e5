"""The price table's file format, as pydantic models (strict: unknown keys and wrong types fail).

Only the loader imports this module; quoting runs on the compiled form in ``engine``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from falbudget.pricing.engine import _json_key

SCHEMA_VERSION = 1

JsonScalar = StrictBool | StrictInt | StrictStr | None


def _money(value: Any) -> Any:
    """Money and factors are written as strings or ints in YAML ("0.80"); floats are refused."""
    if isinstance(value, bool | float):
        raise ValueError(
            f'{value!r} must be written as a quoted decimal string such as "0.80"'
            " (a YAML float cannot hold cents exactly)"
        )
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Money = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


class InputSpec(_Strict):
    # image_size: a named preset (its enum) or {"width": W, "height": H} in pixels, as fal's
    # image endpoints take it; json: any JSON value (arrays, objects), never priced
    type: Literal["string", "integer", "number", "boolean", "image_size", "json"]
    required: bool = False
    default: JsonScalar | float = None
    nullable: bool = False
    enum: list[JsonScalar] | None = None
    minimum: StrictInt | None = None
    maximum: StrictInt | None = None
    min_length: StrictInt | None = Field(default=None, ge=0)
    max_length: StrictInt | None = Field(default=None, ge=0)
    """A string's fewest and most characters (Unicode code points, as Python's len counts)."""
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> InputSpec:
        # each message starts with the key at fault ("default: ..."): the loader moves it into
        # PriceTableError.field (inputs.resolution.default)
        if self.enum is not None:
            if not self.enum:
                raise ValueError("enum: must list at least one value")
            for value in self.enum:
                if not has_type(value, self.type):
                    raise ValueError(f"enum: {value!r} is not of type {self.type}")
        if (self.minimum is not None or self.maximum is not None) and self.type not in (
            "integer",
            "number",
        ):
            raise ValueError(f"type: minimum/maximum need integer or number, not {self.type}")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"minimum: {self.minimum} is above the maximum {self.maximum}")
        if (self.min_length is not None or self.max_length is not None) and self.type != "string":
            raise ValueError(f"type: min_length/max_length need a string, not {self.type}")
        if (
            self.min_length is not None
            and self.max_length is not None
            and self.min_length > self.max_length
        ):
            raise ValueError(
                f"min_length: {self.min_length} is above the max_length {self.max_length}"
            )
        if self.default is not None:
            if self.required:
                raise ValueError("default: a required input cannot have a default")
            if not has_type(self.default, self.type):
                raise ValueError(f"default: {self.default!r} is not of type {self.type}")
            if self.enum is not None and not any(
                type(v) is type(self.default) and v == self.default for v in self.enum
            ):
                raise ValueError(f"default: {self.default!r} is not one of its enum {self.enum}")
            if isinstance(self.default, int | float) and not isinstance(self.default, bool):
                if self.minimum is not None and self.default < self.minimum:
                    raise ValueError(
                        f"default: {self.default!r} is below its minimum {self.minimum}"
                    )
                if self.maximum is not None and self.default > self.maximum:
                    raise ValueError(
                        f"default: {self.default!r} is above its maximum {self.maximum}"
                    )
            length = len(self.default) if isinstance(self.default, str) else 0
            most = length if self.max_length is None else self.max_length
            if isinstance(self.default, str) and not (self.min_length or 0) <= length <= most:
                raise ValueError(
                    f"default: {length} characters, outside its min_length"
                    f" {self.min_length} / max_length {self.max_length}"
                )
        return self


def has_type(value: Any, kind: str) -> bool:
    """Whether ``value`` is of the table's input type ``kind`` (a bool is not a number)."""
    if kind == "json":
        return True
    if kind in ("string", "image_size"):
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool)


class _RuleBase(_Strict):
    name: StrictStr = Field(min_length=1)
    description: str = ""


class BaseRule(_RuleBase):
    """Adds a fixed amount."""

    kind: Literal["base"]
    amount: Money

    _money = field_validator("amount", mode="before")(_money)


class PerUnitRule(_RuleBase):
    """Adds ``amount`` for each ``unit`` of an integer input beyond ``above``, rounded as told."""

    kind: Literal["per_unit"]
    input: StrictStr
    amount: Money
    unit: StrictInt = Field(gt=0)
    above: StrictInt = 0
    rounding: Literal["up", "down", "exact"] = "up"
    unit_name: str = "unit"

    _money = field_validator("amount", mode="before")(_money)


class LookupRule(_RuleBase):
    """Multiplies by the factor listed for the input's value; every allowed value needs one."""

    kind: Literal["lookup"]
    input: StrictStr
    factors: dict[str, Annotated[Money, BeforeValidator(_money)]]


class MegapixelsRule(_RuleBase):
    """Adds ``amount`` for each megapixel of an image_size input: a preset's width x height
    (``presets``) or the explicit one, divided by ``pixels`` and rounded as told."""

    kind: Literal["megapixels"]
    input: StrictStr
    amount: Money
    presets: dict[
        str, Annotated[list[Annotated[StrictInt, Field(gt=0)]], Field(min_length=2, max_length=2)]
    ]
    pixels: StrictInt = Field(default=1_000_000, gt=0)
    rounding: Literal["up", "exact"] = "up"

    _money = field_validator("amount", mode="before")(_money)


class FramesRule(_RuleBase):
    """Adds ``amount`` for each second of output worked out from frames: ``input`` (an integer
    number of frames) divided by the frame rate, read from ``rate_input`` (an integer input) or,
    without one, the fixed ``rate``; a partial second rounded as told (``up`` counts it whole)."""

    kind: Literal["frames"]
    input: StrictStr
    amount: Money
    rate_input: StrictStr | None = None
    rate: StrictInt | None = Field(default=None, gt=0)
    rounding: Literal["up", "exact"] = "up"
    unit_name: str = "second"

    _money = field_validator("amount", mode="before")(_money)

    @model_validator(mode="after")
    def _one_rate(self) -> FramesRule:
        if (self.rate_input is None) == (self.rate is None):
            raise ValueError(
                "rate: give either rate_input (the input that carries the frame rate) or rate"
                " (a fixed number of frames a second), not both"
                if self.rate is not None
                else "rate: give rate_input (the input that carries the frame rate) or rate"
                " (a fixed number of frames a second)"
            )
        return self


class CharactersRule(_RuleBase):
    """Adds ``amount`` for each block of ``per`` characters of a string input (the request's own
    text, so known before the call), counted as Unicode code points (Python's ``len``); a
    partial block rounded as told (``up`` counts it whole, ``exact`` pro rata)."""

    kind: Literal["characters"]
    input: StrictStr
    amount: Money
    per: StrictInt = Field(default=1000, gt=0)
    rounding: Literal["up", "exact"] = "up"
    unit_name: str = "character"

    _money = field_validator("amount", mode="before")(_money)


class ProportionalRule(_RuleBase):
    """Multiplies by ``max(floor, value / per)``."""

    kind: Literal["proportional"]
    input: StrictStr
    per: StrictInt = Field(gt=0)
    floor: Money = Decimal(0)
    unit_name: str = ""

    _money = field_validator("floor", mode="before")(_money)


Rule = Annotated[
    BaseRule
    | PerUnitRule
    | LookupRule
    | ProportionalRule
    | MegapixelsRule
    | FramesRule
    | CharactersRule,
    Field(discriminator="kind"),
]


def _check_rules(rules: list[Rule], inputs: dict[str, InputSpec], where: str) -> None:
    """Every rule reads a known, optional input with a default, of a kind it can price.

    ``where`` is the rules' path in the file (``rules`` or ``versions.1.rules``); each message
    starts with the key at fault, which the loader moves into PriceTableError.field.
    """
    for index, rule in enumerate(rules):
        if isinstance(rule, BaseRule):
            continue
        spec = inputs.get(rule.input)
        at = f"{where}.{index}.input"
        if spec is None:
            raise ValueError(
                f"{at}: rule {rule.name!r} reads unknown parameter {rule.input!r};"
                f" known: {', '.join(sorted(inputs))}"
            )
        if isinstance(rule, CharactersRule):
            # the one rule that may read a required input: a text the request must carry, so a
            # quote without it is refused (PricedEndpoint.needed)
            if spec.type != "string" or spec.enum is not None or spec.nullable:
                shown = "an enum" if spec.enum is not None else spec.type
                raise ValueError(
                    f"{at}: rule {rule.name!r} needs a string input (no enum, not nullable),"
                    f" {rule.input!r} is {'nullable' if spec.nullable else shown}"
                )
            if not spec.required and spec.default is None:
                raise ValueError(
                    f"{at}: rule {rule.name!r} reads {rule.input!r}, which is neither required"
                    " nor has a default, so a request could leave out what it prices"
                )
            continue
        if spec.required:
            raise ValueError(
                f"{at}: rule {rule.name!r} reads {rule.input!r}, a required input;"
                " priced inputs must be optional with a default so a quote never needs them"
            )
        if spec.default is None:
            raise ValueError(f"{at}: rule {rule.name!r} reads {rule.input!r}, which has no default")
        if spec.nullable:
            # null carries no quantity: every rule but a characters one would fail on it
            raise ValueError(
                f"{at}: rule {rule.name!r} reads {rule.input!r}, a nullable input;"
                " priced inputs must not allow null, so every request has a price"
            )
        if isinstance(rule, MegapixelsRule):
            if spec.type != "image_size":
                raise ValueError(
                    f"{at}: rule {rule.name!r} needs an image_size input, {rule.input!r} is"
                    f" {spec.type}"
                )
            missing = sorted({str(v) for v in spec.enum or ()} - set(rule.presets))
            if missing:
                raise ValueError(
                    f"{where}.{index}.presets: no width and height for {', '.join(missing)}"
                )
            continue
        if isinstance(rule, FramesRule) and rule.rate_input is not None:
            _check_rate_input(rule, inputs, f"{where}.{index}.rate_input")
        if spec.type == "json":
            raise ValueError(f"{at}: rule {rule.name!r} cannot price {rule.input!r}, a json input")
        if isinstance(rule, PerUnitRule | ProportionalRule | FramesRule) and spec.type != "integer":
            raise ValueError(
                f"{at}: rule {rule.name!r} needs an integer input, {rule.input!r} is {spec.type}"
            )
        if isinstance(rule, LookupRule):
            if spec.enum is None:
                raise ValueError(
                    f"{at}: lookup rule {rule.name!r} needs {rule.input!r} to have an enum"
                )
            allowed = {_json_key(v) for v in spec.enum}
            missing = sorted(allowed - set(rule.factors))
            extra = sorted(set(rule.factors) - allowed)
            if missing:
                raise ValueError(f"{where}.{index}.factors: no factor for {', '.join(missing)}")
            if extra:
                raise ValueError(
                    f"{where}.{index}.factors: {', '.join(extra)} not allowed by {rule.input!r}"
                )


def _check_rate_input(rule: FramesRule, inputs: dict[str, InputSpec], at: str) -> None:
    """A frames rule's frame rate: a known, optional integer input with a default above 0."""
    name = rule.rate_input
    spec = inputs.get(name or "")
    if spec is None:
        raise ValueError(
            f"{at}: rule {rule.name!r} reads its frame rate from unknown parameter {name!r};"
            f" known: {', '.join(sorted(inputs))}"
        )
    if spec.type != "integer":
        raise ValueError(
            f"{at}: rule {rule.name!r} needs an integer frame rate, {name!r} is {spec.type}"
        )
    if spec.required or spec.default is None or spec.nullable:
        raise ValueError(
            f"{at}: rule {rule.name!r} reads its frame rate from {name!r}, which needs to be"
            " optional with a default, never null"
        )
    lowest = spec.minimum if spec.enum is None else min(int(v or 0) for v in spec.enum)
    if lowest is None or lowest <= 0:
        raise ValueError(
            f"{at}: rule {rule.name!r} divides by {name!r}, which needs a minimum above 0"
            f" (or an enum of such values); it allows {lowest!r}"
        )


Rules = Annotated[list[Rule], Field(min_length=1)]


class VersionModel(_Strict):
    """One dated version of an endpoint's prices: its rules and, when they differ from the
    endpoint's, its inputs, source and the day the prices were read."""

    effective_from: dt.date
    source_url: AnyHttpUrl | None = None
    price_read_on: dt.date | None = None
    inputs: dict[str, InputSpec] | None = None
    rules: Rules


class SyncedFrom(_Strict):
    """Where ``falbudget pricing sync`` read an entry: fal's API, the key's public id (never the
    key), and fal's own unit price, unit and currency."""

    api: AnyHttpUrl
    key_id: StrictStr
    unit: StrictStr
    unit_price: Money
    currency: StrictStr
    note: str = ""

    _money = field_validator("unit_price", mode="before")(_money)


class AfterCallModel(_Strict):
    """The price is known only after the call (compute seconds, tokens, ...): the guard holds
    ``ceiling`` per request, and the hold settles to what fal billed. A synced table writes the
    entry without a ceiling; until the user sets one, the endpoint cannot be quoted."""

    ceiling: Money | None = None
    description: str = ""

    _money = field_validator("ceiling", mode="before")(_money)


class EndpointModel(_Strict):
    title: str = ""
    source_url: AnyHttpUrl
    price_read_on: dt.date
    synced_from: SyncedFrom | None = None
    inputs: dict[str, InputSpec]
    rules: Rules | None = None
    versions: Annotated[list[VersionModel], Field(min_length=1)] | None = None
    after_call: AfterCallModel | None = None

    @model_validator(mode="after")
    def _rules_name_known_inputs(self) -> EndpointModel:
        if self.after_call is not None:
            if self.rules is not None or self.versions is not None:
                raise ValueError(
                    "after_call: an endpoint priced only after the call has a ceiling, not"
                    " rules or versions"
                )
            return self
        if (self.rules is None) == (self.versions is None):
            raise ValueError(
                "rules: give either rules (one set of prices, always in effect) or versions"
                " (dated sets of prices), not both"
                if self.rules is not None
                else "rules: give rules (one set of prices, always in effect) or versions"
                " (dated sets of prices)"
            )
        if self.rules is not None:
            _check_rules(self.rules, self.inputs, "rules")
            return self
        assert self.versions is not None
        previous: VersionModel | None = None
        for index, version in enumerate(self.versions):
            where = f"versions.{index}"
            if previous is not None and version.effective_from <= previous.effective_from:
                if version.effective_from == previous.effective_from:
                    raise ValueError(
                        f"{where}.effective_from: {version.effective_from} is also the date of"
                        f" versions.{index - 1}; each version needs a date of its own"
                    )
                raise ValueError(
                    f"{where}.effective_from: {version.effective_from} is before"
                    f" versions.{index - 1}'s {previous.effective_from}; list versions oldest"
                    " first"
                )
            inputs = self.inputs if version.inputs is None else version.inputs
            _check_rules(version.rules, inputs, f"{where}.rules")
            previous = version
        return self


class TableModel(_Strict):
    schema_version: StrictInt
    table_version: StrictStr = Field(min_length=1)
    effective_date: dt.date
    currency: Literal["USD"]
    endpoints: dict[str, EndpointModel] = Field(min_length=1)

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(f"schema_version {value} is not supported; this falbudget reads 1")
        return value
