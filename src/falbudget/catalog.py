"""`falbudget pricing sync`: a price table built from fal's Platform API.

fal's pricing endpoint gives each endpoint's unit price, unit and currency (the account's own:
fal applies discounts per account); the catalog's OpenAPI expansion gives its input schema. This
module turns the two into entries of the ``pricing.yaml`` format: rules that work out the
quantity from the request's own inputs where the schema allows it:

=========================  ====================================================================
fal's unit                 rules
=========================  ====================================================================
image(s)                   unit price x ``num_images`` (its schema default when absent)
megapixel(s)               unit price x megapixels of ``image_size`` (a named preset or an
                           explicit width and height), rounded up, x ``num_images``
second(s), video seconds   unit price x ``duration`` (an integer, or a string enum that carries
                           numbers such as "5", "10s"), or x ``num_frames`` / ``frames_per_second``
                           (integers), a partial second rounded up
video(s), request(s), ...  unit price, once per request
(1000) character(s)        unit price x the characters of the request's ``text`` (or
                           ``prompt``) / 1000, a partial block rounded up: the length of the
                           request's own text, counted as Unicode code points (Python's len)
anything else              not priced before the call: listed as needing a ceiling
=========================  ====================================================================

A unit whose quantity the request does not determine (compute seconds, tokens of a generated
text, minutes of an input file, ...) gets no invented price: the entry says the price is
known only after the call (``after_call``) and has no ceiling; the user sets one in a table of
their own, and until then the endpoint cannot be quoted (``pricing validate`` lists it).

The translation (:func:`entry_for`) is pure; :func:`sync` asks fal through a
:class:`falbudget.platform.PlatformClient`.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

from falbudget.platform import PlatformClient
from falbudget.pricing.models import has_type

IMAGE_SIZE_PRESETS: Final[Mapping[str, tuple[int, int]]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
"""fal's named image sizes (width, height), as fal's image endpoints document their
``image_size`` enum (for example https://fal.ai/models/fal-ai/flux/dev/api)."""

MEGAPIXEL: Final = 1024 * 1024
"""Pixels in one billed megapixel. fal's pages price a 1024x1024 image of a per-megapixel
endpoint at one megapixel (FLUX.1 [dev]: $0.025 a megapixel, $0.025 for 1024x1024) and say
sizes are rounded up to the next megapixel; fal's API documentation does not say more. This
reading is written into every synced megapixel entry, so that a user can check it."""

UnitKind = Literal["image", "megapixel", "second", "request", "characters", "after_call"]

_IMAGE_UNITS: Final = {"image", "images", "output image", "output images"}
_MEGAPIXEL_UNITS: Final = {"megapixel", "megapixels", "mp", "processed megapixels"}
_SECOND_UNITS: Final = {"second", "seconds", "video second", "video seconds", "video_second"}
_REQUEST_UNITS: Final = {
    "video",
    "videos",
    "request",
    "requests",
    "generation",
    "generations",
    "audio",
    "audios",
    "3d model",
    "3d models",
    "model",
    "run",
    "runs",
    "call",
    "calls",
}
_CHARACTERS_UNIT: Final = re.compile(r"^(?:per )?(?:(\d+)\s*(k|m)?\s+)?characters?$")
_TEXTS: Final = ("text", "prompt")
_NUMBER_IN: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:s|sec|secs|seconds?)?\s*$")


def unit_kind(unit: str) -> UnitKind:
    """How a quantity of fal's ``unit`` is known: from the request (image, megapixel, second,
    request) or only after the call."""
    text = " ".join(str(unit).lower().replace("_", " ").split())
    if text in _IMAGE_UNITS:
        return "image"
    if text in _MEGAPIXEL_UNITS:
        return "megapixel"
    if text in _SECOND_UNITS:
        return "second"
    if text in _REQUEST_UNITS:
        return "request"
    if characters_per(unit) is not None:
        return "characters"
    return "after_call"


def characters_per(unit: str) -> int | None:
    """How many characters one of fal's ``unit`` is: "1000 characters" or "1k characters"
    1000, "characters" 1, "1m characters" 1000000; None for a unit that is not characters."""
    text = " ".join(str(unit).lower().replace("_", " ").split())
    match = _CHARACTERS_UNIT.match(text)
    if match is None:
        return None
    number = int(match.group(1) or 1) * {"k": 1000, "m": 1_000_000}.get(match.group(2) or "", 1)
    return number if number > 0 else None


# -- the input schema from fal's OpenAPI ------------------------------------------------------
def _resolve(node: Any, spec: Mapping[str, Any], depth: int = 0) -> Any:
    """Follow ``$ref`` (and a lone ``allOf``) within ``spec``; None when it leads nowhere."""
    while isinstance(node, Mapping) and depth < 20:
        depth += 1
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = spec
            for part in ref[2:].split("/"):
                target = target.get(part) if isinstance(target, Mapping) else None
            node = target
            continue
        all_of = node.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1:
            node = all_of[0]
            continue
        return node
    return node if isinstance(node, Mapping) else None


def input_schema(endpoint_id: str, openapi: Any) -> Mapping[str, Any] | None:
    """The JSON schema of the request body of ``POST /<endpoint_id>`` in fal's OpenAPI 3.0
    document, else None."""
    if not isinstance(openapi, Mapping):
        return None
    paths = openapi.get("paths")
    if not isinstance(paths, Mapping):
        return None
    want = "/" + endpoint_id.strip("/")
    candidates = [want] + [p for p in paths if isinstance(p, str) and p != want]
    for path in candidates:
        item = paths.get(path)
        post = item.get("post") if isinstance(item, Mapping) else None
        if not isinstance(post, Mapping):
            continue
        body = _resolve(post.get("requestBody"), openapi)
        content = body.get("content") if body else None
        media = content.get("application/json") if isinstance(content, Mapping) else None
        schema = _resolve(media.get("schema"), openapi) if isinstance(media, Mapping) else None
        if isinstance(schema, Mapping) and isinstance(schema.get("properties"), Mapping):
            found: Mapping[str, Any] = schema
            return found
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    return None


def _scalar(value: Any, kind: str) -> Any:
    """A default or enum value as the table stores it (numbers from fal's JSON are Decimals)."""
    if isinstance(value, Decimal):
        whole = _int(value)
        if kind == "integer":
            return whole
        return whole if whole is not None else float(value)
    return value


def input_spec(prop: Any, spec: Mapping[str, Any], required: bool) -> dict[str, Any]:
    """One input of the table (the InputSpec format) from an OpenAPI property."""
    node = _resolve(prop, spec) or {}
    out: dict[str, Any] = {}
    nullable = bool(node.get("nullable"))
    default = node.get("default")
    options = node.get("anyOf") or node.get("oneOf")
    if isinstance(options, list):
        members = [_resolve(m, spec) or {} for m in options]
        nulls = [m for m in members if m.get("type") == "null"]
        rest = [m for m in members if m.get("type") != "null"]
        nullable = nullable or bool(nulls)
        sizes = [m for m in rest if _is_size(m, spec)]
        enums = [m for m in rest if isinstance(m.get("enum"), list)]
        if sizes and len(rest) == len(sizes) + len(enums) and len(enums) <= 1:
            out = {"type": "image_size"}
            if enums:
                out["enum"] = [str(v) for v in enums[0]["enum"]]
        elif len(rest) == 1:
            inner = dict(rest[0])
            if default is not None:
                inner["default"] = default
            out = input_spec(inner, spec, required)
            if nullable:
                out["nullable"] = True
            return out
        else:
            out = {"type": "json"}
    else:
        kind = node.get("type")
        if kind in ("string", "integer", "number", "boolean"):
            out = {"type": kind}
            enum = node.get("enum")
            if isinstance(enum, list) and enum:
                values = [_scalar(v, kind) for v in enum]
                if all(has_type(v, kind) for v in values):
                    out["enum"] = values
            if kind == "integer":
                for bound in ("minimum", "maximum"):
                    number = _int(node.get(bound))
                    if number is not None:
                        out[bound] = number
            if kind == "string" and "enum" not in out:
                for bound, key in (("minLength", "min_length"), ("maxLength", "max_length")):
                    number = _int(node.get(bound))
                    if number is not None and number >= 0:
                        out[key] = number
                if out.get("min_length", 0) > out.get("max_length", out.get("min_length", 0)):
                    out.pop("min_length")
                    out.pop("max_length")
        elif _is_size(node, spec):
            out = {"type": "image_size"}
        else:
            out = {"type": "json"}
    if required:
        out["required"] = True
    elif default is not None:
        value = default if out["type"] == "json" else _scalar(default, out["type"])
        if out["type"] == "image_size" and isinstance(value, Mapping):
            value = None  # an explicit default size: not a preset a lookup can name
        if (
            value is not None
            and has_type(value, out["type"])
            and _in_enum(value, out)
            and _fits_length(value, out)
        ):
            out["default"] = value
    if nullable:
        out["nullable"] = True
    return out


def _in_enum(value: Any, out: Mapping[str, Any]) -> bool:
    enum = out.get("enum")
    if enum is None:
        minimum, maximum = out.get("minimum"), out.get("maximum")
        if isinstance(value, int) and not isinstance(value, bool):
            return (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
        return True
    return any(type(v) is type(value) and v == value for v in enum)


def _fits_length(value: Any, out: Mapping[str, Any]) -> bool:
    if not isinstance(value, str):
        return True
    fewest, most = out.get("min_length", 0), out.get("max_length", len(value))
    return bool(fewest <= len(value) <= most)


def _is_size(node: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    props = node.get("properties")
    return isinstance(props, Mapping) and {"width", "height"} <= set(props)


def inputs_of(endpoint_id: str, openapi: Any) -> dict[str, dict[str, Any]] | None:
    schema = input_schema(endpoint_id, openapi)
    if schema is None:
        return None
    required = schema.get("required")
    needed = set(required) if isinstance(required, list) else set()
    props = schema["properties"]
    return {
        str(name): input_spec(prop, schema_root(openapi), name in needed)
        for name, prop in props.items()
    }


def schema_root(openapi: Any) -> Mapping[str, Any]:
    return openapi if isinstance(openapi, Mapping) else {}


# -- one entry ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Synced:
    """What the sync made of one endpoint: a table ``entry`` (the pricing.yaml format), or
    ``entry`` None and ``reason`` saying why it is not priced before the call."""

    endpoint_id: str
    unit: str
    unit_price: Decimal
    currency: str
    kind: UnitKind
    entry: dict[str, Any] | None
    reason: str = ""

    @property
    def after_call(self) -> bool:
        """Written as priced only after the call, without a ceiling: the user sets one."""
        return self.entry is not None and "after_call" in self.entry


def _money_text(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _duration_rules(name: str, spec: Mapping[str, Any], price: str) -> list[dict[str, Any]] | None:
    """Rules for so many seconds of output read from ``name``: an integer input, or a string
    enum whose values carry numbers ("5", "10s"). None when it carries no number."""
    if spec.get("required") or spec.get("default") is None:
        return None
    if spec["type"] == "integer":
        return [
            {
                "name": "seconds",
                "kind": "per_unit",
                "input": name,
                "amount": price,
                "unit": 1,
                "unit_name": "second",
                "description": f"{price} a second of output, from {name}",
            }
        ]
    enum = spec.get("enum")
    if spec["type"] in ("string", "number") and isinstance(enum, list):
        factors: dict[str, str] = {}
        for value in enum:
            match = _NUMBER_IN.match(str(value))
            if match is None:
                return None
            key = value if isinstance(value, str) else _json_text(value)
            factors[key] = match.group(1)
        return [
            {"name": "unit price", "kind": "base", "amount": price},
            {
                "name": "seconds",
                "kind": "lookup",
                "input": name,
                "factors": factors,
                "description": f"seconds of output, read from {name}",
            },
        ]
    return None


def _characters_rules(
    inputs: Mapping[str, Mapping[str, Any]], amount: str, per: int
) -> list[dict[str, Any]] | None:
    """The unit price for each ``per`` characters of the request's text (``text``, else
    ``prompt``): a string input without an enum, never null, that the request carries (required)
    or has a default; a partial block rounded up. None when the schema has no such input."""
    for name in _TEXTS:
        spec = inputs.get(name)
        if (
            spec is not None
            and spec.get("type") == "string"
            and "enum" not in spec
            and not spec.get("nullable")
            and (spec.get("required") or isinstance(spec.get("default"), str))
        ):
            block = f"{per} characters" if per > 1 else "character"
            return [
                {
                    "name": "characters",
                    "kind": "characters",
                    "input": name,
                    "amount": amount,
                    "per": per,
                    "rounding": "up",
                    "description": f"{amount} a {block} of {name}"
                    + (", a partial block rounded up" if per > 1 else ""),
                }
            ]
    return None


_FRAMES: Final = ("num_frames", "frames")
_FRAME_RATES: Final = ("frames_per_second", "fps", "frame_rate")


def _frames_rules(
    inputs: Mapping[str, Mapping[str, Any]], price: str
) -> list[dict[str, Any]] | None:
    """Seconds of output from a number of frames and a frame rate, both integer inputs of the
    schema with defaults (the rate above 0): unit price x frames / rate, rounded up. None when
    the schema does not carry both."""
    frames = next((n for n in _FRAMES if _int_with_default(inputs.get(n))), None)
    rate = next((n for n in _FRAME_RATES if _int_with_default(inputs.get(n))), None)
    if frames is None or rate is None:
        return None
    spec = inputs[rate]
    enum = spec.get("enum")
    lowest = min(enum) if isinstance(enum, list) and enum else spec.get("minimum")
    if not isinstance(lowest, int) or lowest <= 0:
        return None  # a rate that may be 0 (or is unbounded below) divides by nothing
    return [
        {
            "name": "seconds",
            "kind": "frames",
            "input": frames,
            "rate_input": rate,
            "amount": price,
            "rounding": "up",
            "description": f"{price} a second of output: {frames} / {rate}, rounded up",
        }
    ]


def _int_with_default(spec: Mapping[str, Any] | None) -> bool:
    return (
        spec is not None
        and spec.get("type") == "integer"
        and not spec.get("required")
        and isinstance(spec.get("default"), int)
    )


def _json_text(value: Any) -> str:
    import json

    return json.dumps(value)


def _count_rule(inputs: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]] | None:
    """x num_images, when the schema has it with a default; [] without it; None when it is
    there but cannot be priced (required, no default)."""
    spec = inputs.get("num_images")
    if spec is None:
        return []
    if spec.get("type") != "integer" or spec.get("required") or spec.get("default") is None:
        return None
    return [
        {
            "name": "images",
            "kind": "proportional",
            "input": "num_images",
            "per": 1,
            "unit_name": "images",
            "description": "times the number of images",
        }
    ]


def entry_for(
    endpoint_id: str,
    price: Mapping[str, Any],
    openapi: Any,
    *,
    api_url: str,
    key_id: str,
    read_on: dt.date,
    title: str = "",
) -> Synced:
    """The table entry for one endpoint from its price record and its OpenAPI document."""
    unit = str(price.get("unit") or "")
    currency = str(price.get("currency") or "")
    raw = price.get("unit_price")
    try:
        if isinstance(raw, bool) or not isinstance(raw, int | Decimal | str):
            raise InvalidOperation
        unit_price = Decimal(raw)
        if not unit_price.is_finite() or unit_price < 0:
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        return Synced(
            endpoint_id,
            unit,
            Decimal(0),
            currency,
            "after_call",
            None,
            f"fal gave no usable unit_price ({raw!r})",
        )
    kind = unit_kind(unit)

    def skip(reason: str) -> Synced:
        return Synced(endpoint_id, unit, unit_price, currency, kind, None, reason)

    if currency.upper() != "USD":
        return skip(f"priced in {currency or 'no currency'}; tables are in USD")
    inputs = inputs_of(endpoint_id, openapi)
    if inputs is None:
        return skip("fal's catalog gives no input schema for it")
    amount = _money_text(unit_price)
    rules: list[dict[str, Any]] | None
    note = ""
    reason = ""
    if kind == "after_call":
        rules = None
        reason = f"a quantity of {unit or 'its unit'} is known only after the call"
    elif kind == "request":
        rules = [
            {
                "name": "unit price",
                "kind": "base",
                "amount": amount,
                "description": f"{amount} a {unit}",
            }
        ]
    elif kind == "image":
        count = _count_rule(inputs)
        rules = (
            None
            if count is None
            else [
                {
                    "name": "unit price",
                    "kind": "base",
                    "amount": amount,
                    "description": f"{amount} an image",
                },
                *count,
            ]
        )
    elif kind == "characters":
        per = characters_per(unit) or 1
        rules = _characters_rules(inputs, amount, per)
        if rules is not None:
            read = rules[0]["input"]
            note = (
                f"characters: the Unicode code points of {read} (Python's len)"
                + (f", a partial block of {per} rounded up to a whole one" if per > 1 else "")
                + "; fal does not say how it counts or rounds characters"
            )
    elif kind == "megapixel":
        rules = _megapixel_rules(inputs, amount)
        note = (
            "megapixels: width x height / 1048576 (1024 x 1024), rounded up to a whole"
            " megapixel, as fal's pages price sizes; not stated in fal's API documentation"
        )
    else:
        rules = None
        for name in ("duration", "duration_seconds", "seconds", "video_length"):
            if name in inputs:
                rules = _duration_rules(name, inputs[name], amount)
                break
        if rules is None:
            rules = _frames_rules(inputs, amount)
            if rules is not None:
                note = (
                    "seconds: num_frames / frames_per_second, a partial second rounded up to a"
                    " whole one; fal does not say how it rounds frames into seconds"
                )
    nullable = sorted(
        {
            name
            for rule in rules or ()
            for name in (rule.get("input"), rule.get("rate_input"))
            if name is not None and inputs[name].get("nullable")
        }
    )
    if nullable:  # null carries no quantity, and a table refuses a rule reading such an input
        rules, note = None, ""
        reason = (
            f"{', '.join(nullable)} may be null, so the number of {unit or 'units'} is not known"
        )
    if not rules and not reason:
        reason = f"its schema does not give the number of {unit or 'units'} before the call"
    entry: dict[str, Any] = {
        "title": title,
        "source_url": f"{api_url}/models/pricing?endpoint_id={endpoint_id}",
        "price_read_on": read_on,
        "synced_from": {
            "api": f"{api_url}/models/pricing",
            "key_id": key_id,
            "unit": unit,
            "unit_price": amount,
            "currency": currency,
            **({"note": note} if note else {}),
        },
        "inputs": inputs,
    }
    if rules:
        entry["rules"] = rules
    else:  # no invented price: the user sets a ceiling in a table of their own
        entry["after_call"] = {"description": reason}
    if not title:
        del entry["title"]
    return Synced(endpoint_id, unit, unit_price, currency, kind, entry, reason)


def _megapixel_rules(
    inputs: Mapping[str, Mapping[str, Any]], amount: str
) -> list[dict[str, Any]] | None:
    spec = inputs.get("image_size")
    if spec is None or spec.get("type") != "image_size" or spec.get("default") is None:
        return None
    enum = spec.get("enum") or []
    if any(name not in IMAGE_SIZE_PRESETS for name in enum):
        return None
    count = _count_rule(inputs)
    if count is None:
        return None
    return [
        {
            "name": "megapixels",
            "kind": "megapixels",
            "input": "image_size",
            "amount": amount,
            "pixels": MEGAPIXEL,
            "rounding": "up",
            "presets": {name: list(IMAGE_SIZE_PRESETS[name]) for name in enum},
            "description": f"{amount} a megapixel, rounded up",
        },
        *count,
    ]


# -- the sync -----------------------------------------------------------------------------------
@dataclass
class SyncResult:
    synced: list[Synced] = field(default_factory=list)
    unpriced: list[str] = field(default_factory=list)
    """Endpoints asked for that fal gave no price for."""
    calls: int = 0

    @property
    def priced(self) -> list[Synced]:
        """Priced before the call, by rules."""
        return [s for s in self.synced if s.entry is not None and not s.after_call]

    @property
    def needs_ceiling(self) -> list[Synced]:
        """Written as priced only after the call, without a ceiling."""
        return [s for s in self.synced if s.after_call]

    @property
    def left_out(self) -> list[Synced]:
        """Not written: no usable price, not in USD, or no input schema."""
        return [s for s in self.synced if s.entry is None]

    @property
    def written(self) -> list[Synced]:
        return [s for s in self.synced if s.entry is not None]


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def sync(
    client: PlatformClient,
    patterns: Sequence[str],
    *,
    key_id: str,
    read_on: dt.date,
) -> SyncResult:
    """Ask fal for the price and the input schema of every endpoint named or matched by
    ``patterns`` (every endpoint of the catalog when empty)."""
    exact = [p for p in patterns if not _is_glob(p)]
    globs = [p for p in patterns if _is_glob(p)]
    ids = list(dict.fromkeys(exact))
    titles: dict[str, str] = {}
    if globs or not patterns:
        for model in client.models():
            endpoint_id = model.get("endpoint_id")
            if not isinstance(endpoint_id, str):
                continue
            if not patterns or any(fnmatch.fnmatchcase(endpoint_id, g) for g in globs):
                ids.append(endpoint_id)
        ids = list(dict.fromkeys(ids))
    result = SyncResult()
    prices: dict[str, Mapping[str, Any]] = {}
    for record in client.prices(ids) if ids else []:
        endpoint_id = record.get("endpoint_id")
        if isinstance(endpoint_id, str) and endpoint_id in ids:
            prices.setdefault(endpoint_id, record)
    schemas: dict[str, Any] = {}
    wanted = [i for i in ids if i in prices]
    if wanted:
        for model in client.models(endpoint_ids=wanted, expand_openapi=True):
            endpoint_id = model.get("endpoint_id")
            if isinstance(endpoint_id, str):
                schemas[endpoint_id] = model.get("openapi")
                metadata = model.get("metadata")
                if isinstance(metadata, Mapping) and isinstance(metadata.get("display_name"), str):
                    titles[endpoint_id] = metadata["display_name"]
    for endpoint_id in ids:
        price = prices.get(endpoint_id)
        if price is None:
            result.unpriced.append(endpoint_id)
            continue
        result.synced.append(
            entry_for(
                endpoint_id,
                price,
                schemas.get(endpoint_id),
                api_url=client.base,
                key_id=key_id,
                read_on=read_on,
                title=titles.get(endpoint_id, ""),
            )
        )
    result.calls = client.calls
    return result


def table_document(result: SyncResult, read_on: dt.date) -> dict[str, Any]:
    """The synced table as a document of the pricing.yaml format."""
    return {
        "schema_version": 1,
        "table_version": f"fal-sync-{read_on.isoformat()}",
        "effective_date": read_on,
        "currency": "USD",
        "endpoints": {s.endpoint_id: s.entry for s in sorted(result.written, key=_by_id)},
    }


def _by_id(synced: Synced) -> str:
    return synced.endpoint_id


def table_yaml(result: SyncResult, read_on: dt.date) -> str:
    """The synced table as YAML, with the endpoints it could not price listed in comments."""
    import yaml

    lines = [
        "# falbudget price table written by `falbudget pricing sync` from fal's Platform API.",
        "# Prices are the account's own (fal applies discounts per account). Do not edit: sync",
        "# again, and put your own rules in a table listed before this one.",
    ]
    body = yaml.dump(table_document(result, read_on), Dumper=_dumper(), sort_keys=False, width=100)
    text = "\n".join(lines) + "\n" + body
    if result.left_out or result.unpriced:
        text += "\n# Not written:\n"
        for s in sorted(result.left_out, key=_by_id):
            text += (
                f"#   {s.endpoint_id}: {_money_text(s.unit_price)} {s.currency} per {s.unit}:"
                f" {s.reason}\n"
            )
        for endpoint_id in sorted(result.unpriced):
            text += f"#   {endpoint_id}: fal gave no price for it\n"
    return text


def _dumper() -> Any:
    """A safe dumper that writes no anchors and a width and height as ``[1024, 768]``."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    def pair(dumper: Any, data: list[Any]) -> Any:
        flow = len(data) == 2 and all(type(v) is int for v in data)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)

    Dumper.add_representer(list, pair)
    return Dumper
