"""`falbudget quote`: what a request (or a batch of requests) will cost, and why."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from falbudget.cli import render
from falbudget.cli.common import (
    EXIT_FOUND,
    EXIT_OK,
    Outcome,
    Subparsers,
    UsageError,
    add_format_option,
    add_pricing_option,
    parse_amount,
    table_for,
)
from falbudget.cli.pricing_cmd import parse_moment
from falbudget.errors import FalbudgetError, InvalidArguments
from falbudget.money import format_usd

if TYPE_CHECKING:  # pragma: no cover
    from falbudget.guard.core import Decision, Guard
    from falbudget.pricing.engine import Moment, PriceTable, Quote

DESCRIPTION = """\
Quote what ENDPOINT called with the given arguments will cost, before it is sent.

Each KEY=VALUE is read as JSON when VALUE parses as JSON, else as a string:
num_frames=144 gives 144, resolution=480p gives "480p", enable_safety_checker=false gives
false, seed=null gives null; resolution='"720"' gives the string "720".

--input FILE (or - for stdin) holds one JSON object (one quote) or JSON Lines (a batch: one
object per line). An object is the arguments, or {"endpoint": ..., "arguments": {...}}.
KEY=VALUE tokens given with --input are merged into every request and win over the file.

--at DATE prices with the rules in effect on that day (or at that moment) instead of now, for a
table that holds dated versions of an endpoint's prices."""

EPILOG = """\
examples:
  falbudget quote fal-ai/magi/image-to-video num_frames=144 resolution=480p
  falbudget quote fal-ai/magi/image-to-video --format json --fail-above 2.00
  falbudget quote fal-ai/magi/image-to-video --input batch.jsonl resolution=480p
  falbudget quote fal-ai/magi/image-to-video num_frames=144 --at 2026-12-01

exit codes: 0 ok, 1 a total is above --fail-above, 2 bad input or usage"""

_ENVELOPE_KEYS = frozenset({"endpoint", "arguments"})


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "quote",
        help="what a request will cost, and why",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "endpoint", nargs="?", metavar="ENDPOINT", help="e.g. fal-ai/magi/image-to-video"
    )
    parser.add_argument("pairs", nargs="*", metavar="KEY=VALUE", help="an argument of the request")
    parser.add_argument(
        "--input",
        "-i",
        metavar="FILE",
        help="read the request(s) from FILE, - for stdin: one JSON object, or JSON Lines",
    )
    add_format_option(parser)
    add_pricing_option(parser)
    parser.add_argument(
        "--fail-above",
        type=parse_amount,
        metavar="AMOUNT",
        help="exit 1 when the total (of a batch: the batch total) is strictly above AMOUNT",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="also require the inputs fal requires that do not change the price (prompt, ...)",
    )
    parser.add_argument(
        "--at",
        type=parse_moment,
        metavar="DATE",
        help=(
            "price with the rules in effect at DATE (2026-12-01, UTC) or at a moment"
            " (2026-12-01T09:30+02:00; no offset means UTC) instead of now"
        ),
    )
    from falbudget.cli.common import add_guard_options

    add_guard_options(parser)
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --config: a tag of the request for the caps, e.g. project=alpha (repeat)",
    )
    parser.set_defaults(func=run_quote, extra_positionals="pairs")


# --- reading the command line and --input ----------------------------------------------------


MAX_INT_DIGITS = 4000
"""The most digits an integer in KEY=VALUE or --input may have (Python's int() of text stops at
4300; no fal input needs more than 20)."""


class _Unreadable(Exception):
    """JSON that parses but cannot be read safely: an integer of more than MAX_INT_DIGITS digits,
    a number too large for a float, or nesting deeper than Python's recursion allows. Not a
    ValueError, so that KEY=VALUE does not quietly take such a value as a string."""


def _int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _Unreadable(f"an integer of {digits} digits: at most {MAX_INT_DIGITS} are allowed")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        shown = text if len(text) <= 20 else text[:17] + "..."
        raise _Unreadable(f"the number {shown} is too large for a float")
    return value


def _loads(text: str, **hooks: Any) -> Any:
    """Strict JSON (no NaN or Infinity) with the limits of :class:`_Unreadable`."""
    try:
        return json.loads(
            text, parse_int=_int, parse_float=_float, parse_constant=_reject_constant, **hooks
        )
    except RecursionError:
        raise _Unreadable("nested too deeply") from None


def parse_value(text: str) -> Any:
    """VALUE as JSON when it parses as (strict) JSON, else the string itself.

    NaN and Infinity are not JSON, so they stay strings. JSON that cannot be read safely (see
    ``_Unreadable``) raises UsageError rather than becoming a string.
    """
    try:
        return _loads(text)
    except _Unreadable as exc:
        raise UsageError(f"quote: {_clip(text)} cannot be read: {exc}") from None
    except ValueError:
        return text


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_pairs(tokens: Sequence[str]) -> dict[str, Any]:
    """KEY=VALUE tokens into arguments; spaces around KEY are dropped. A token without "=", an
    empty KEY or VALUE, or a KEY given twice is a UsageError naming it."""
    arguments: dict[str, Any] = {}
    for token in tokens:
        raw_key, sep, text = token.partition("=")
        key = raw_key.strip()
        if not sep:
            raise UsageError(f"quote: expected KEY=VALUE, got {token!r}")
        if not key:
            raise UsageError(f"quote: {token!r} has no KEY before '='")
        if key in arguments:
            raise UsageError(f"quote: {key} is given twice")
        if not text:
            raise UsageError(
                f"quote: {key}= has no value: the value is missing after '=' (an empty string"
                f" is {key}='\"\"')"
            )
        try:
            arguments[key] = parse_value(text)
        except UsageError as exc:
            raise UsageError(f"quote: {key}={str(exc).removeprefix('quote: ')}") from None
    return arguments


def _quoting_hints(tokens: Sequence[str]) -> dict[str, str]:
    """For each KEY=VALUE whose VALUE read as JSON other than a string (2024, true, null), the
    text as given: if the endpoint wanted a string, the error says how to quote it."""
    hints: dict[str, str] = {}
    for token in tokens:
        raw_key, _, text = token.partition("=")
        try:
            value = _loads(text)
        except (ValueError, _Unreadable):
            continue
        if not isinstance(value, str):
            hints[raw_key.strip()] = text
    return hints


def _with_hint(
    exc: InvalidArguments,
    hints: Mapping[str, str],
    retry: Callable[[str, str], object],
) -> FalbudgetError:
    """``exc``, or a UsageError that adds how to quote the value when KEY=VALUE read it as JSON
    of another type and the same text as a string would pass (``retry`` quotes with it)."""
    text = hints.get(exc.parameter)
    if text is None:
        return exc
    try:
        retry(exc.parameter, text)
    except InvalidArguments as again:
        if again.parameter == exc.parameter:
            return exc
    except FalbudgetError:
        return exc
    string = json.dumps(text)
    return UsageError(
        f"{exc} ({text} is read as JSON: {_kind(_loads(text))}; to give the string {string},"
        f" quote it: {exc.parameter}='{string}')"
    )


@dataclass(frozen=True, slots=True)
class Request:
    """One request read from --input: its line (None for a single JSON document), the endpoint
    it names (None: the command line's ENDPOINT) and its arguments."""

    line: int | None
    endpoint: str | None
    arguments: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None
    """Why the line cannot be read (a batch reports every bad line, not only the first)."""


class _NotJson(ValueError):
    """Raised inside json.loads for a duplicate key or NaN/Infinity: valid Python, bad JSON."""


def _reject_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _NotJson(f"key {key!r} appears twice in one object")
        result[key] = value
    return result


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _request(value: Any, line: int | None) -> Request:
    """A parsed JSON value as a Request: an arguments object or an endpoint envelope."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {_kind(value)}")
    if "endpoint" in value and value.keys() <= _ENVELOPE_KEYS:
        endpoint = value["endpoint"]
        arguments = value.get("arguments", {})
        if not isinstance(endpoint, str):
            raise ValueError(f'"endpoint" must be a string, got {_kind(endpoint)}')
        if not isinstance(arguments, dict):
            raise ValueError(f'"arguments" must be a JSON object, got {_kind(arguments)}')
        return Request(line, endpoint, arguments)
    return Request(line, None, value)


def _read_one(text: str, source: str, line: int | None) -> Request:
    where = source if line is None else f"{source} line {line}"
    try:
        value = _loads(text, object_pairs_hook=_no_duplicates)
    except _Unreadable as exc:
        raise UsageError(f"{where}: not readable JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{where}: not valid JSON (a batch is one object per line): {exc.msg}"
            f" at column {exc.colno}"
        ) from None
    except _NotJson as exc:
        raise UsageError(f"{where}: {exc}") from None
    try:
        return _request(value, line)
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}") from None


def parse_requests(text: str, source: str) -> tuple[list[Request], bool]:
    """The requests in an --input text, and whether it is a batch (JSON Lines).

    The whole text, when it parses as one JSON document, is a single request. When it fails only
    with "Extra data" (more than one document), it is JSON Lines: every non-blank line is one
    object. Otherwise the JSON error is reported with its line and column. Every error is a
    UsageError naming ``source`` and, for a batch, the line.
    """
    if text.startswith("\ufeff"):  # a UTF-8 byte-order mark (stdin keeps it)
        text = text[1:]
    if not text.strip():
        raise UsageError(f"{source}: no request in the input (it is empty)")
    try:
        # the shape only: numbers are not converted, so a huge one fails later with its line
        json.loads(text, parse_int=len, parse_float=len, parse_constant=len)
    except RecursionError:
        if len([line for line in text.split("\n") if line.strip()]) < 2:
            raise UsageError(f"{source}: not readable JSON: nested too deeply") from None
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":
            raise UsageError(
                f"{source} line {exc.lineno} column {exc.colno}: not valid JSON: {exc.msg}"
            ) from None
    else:
        return [_read_one(text, source, None)], False
    requests = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            try:
                requests.append(_read_one(line, source, number))
            except UsageError as exc:
                requests.append(Request(number, None, problem=str(exc)))
    return requests, True


def read_input(path: str) -> tuple[str, str]:
    """The text of --input and the name to use in messages. OSError propagates (exit 2)."""
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        with open(path, encoding="utf-8-sig") as handle:
            return handle.read(), path
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: --input is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise UsageError(f"cannot read --input {path!r}: {exc.strerror or exc}") from None


# --- the command -------------------------------------------------------------------------------


def _split_endpoint(tokens: list[str]) -> tuple[str | None, list[str]]:
    """ENDPOINT is the first token when it has no '=' (endpoint names never do)."""
    if tokens and "=" not in tokens[0]:
        return tokens[0], tokens[1:]
    return None, tokens


def _quote_requests(
    table: PriceTable,
    requests: Sequence[Request],
    endpoint: str | None,
    overrides: Mapping[str, Any],
    *,
    strict: bool,
    source: str,
    at: Moment | None = None,
    hints: Mapping[str, str] | None = None,
) -> list[Quote]:
    """Quote every request before anything is printed; the first error (with a count of the
    others) is one UsageError, so a bad batch prints nothing on stdout."""
    hints = hints or {}
    quotes: list[Quote] = []
    errors: list[str] = []
    for request in requests:
        if request.problem is not None:
            errors.append(request.problem)
            continue
        where = source if request.line is None else f"{source} line {request.line}"
        name = request.endpoint or endpoint
        if name is None:
            errors.append(
                f"{where}: no endpoint: give ENDPOINT on the command line or write the line as"
                ' {"endpoint": ..., "arguments": {...}}'
            )
            continue
        if request.endpoint is not None and endpoint is not None and request.endpoint != endpoint:
            errors.append(
                f"{where}: names endpoint {request.endpoint!r} but the command line names"
                f" {endpoint!r}; leave ENDPOINT out when the lines name theirs"
            )
            continue
        arguments = {**request.arguments, **overrides}
        try:
            quotes.append(table.quote(name, arguments, strict=strict, at=at))
        except InvalidArguments as exc:
            error = _hinted(exc, table, name, arguments, hints, strict=strict, at=at)
            errors.append(f"{where}: {error}")
        except FalbudgetError as exc:
            errors.append(f"{where}: {exc}")
    if errors:
        more = len(errors) - 1
        others = f" (and {more} more line{'' if more == 1 else 's'} with errors)" if more else ""
        raise UsageError(errors[0] + others)
    return quotes


def _hinted(
    exc: InvalidArguments,
    table: PriceTable,
    endpoint: str,
    arguments: Mapping[str, Any],
    hints: Mapping[str, str],
    *,
    strict: bool,
    at: Moment | None,
) -> FalbudgetError:
    def retry(key: str, text: str) -> object:
        return table.quote(endpoint, {**arguments, key: text}, strict=strict, at=at)

    return _with_hint(exc, hints, retry)


def _guard_for(args: argparse.Namespace) -> Guard | None:
    """With --config, the guard whose caps the quote is checked against (and whose price table
    prices it, so the figures shown are the ones the guard would hold)."""
    if args.config is None:
        for option, given in (("--tag", args.tag), ("--ledger", args.ledger)):
            if given:
                raise UsageError(f"quote: {option} needs --config PATH (the caps to check)")
        return None
    if args.pricing is not None:
        raise UsageError(
            "quote: --config prices with the guard's table (the configuration's pricing:, else"
            " the default), so it cannot be used with --pricing"
        )
    from falbudget.cli.budget_cmd import guard_from_args

    return guard_from_args(args, read_only=True)


def _budget_check(
    args: argparse.Namespace, guard: Guard | None, quotes: Sequence[Quote]
) -> Decision | None:
    """With --config: would this request fit the caps now?"""
    if guard is None:
        return None
    tags: dict[str, str] = {}
    for token in args.tag:
        key, sep, value = token.partition("=")
        if not (key and sep and value):
            raise UsageError(f"quote: --tag expects KEY=VALUE, got {token!r}")
        tags[key] = value
    if len(quotes) != 1:
        raise UsageError("quote: --config checks one request, not a batch")
    return guard.check(quotes[0].endpoint, dict(quotes[0].arguments), **tags)


def _verdict(
    args: argparse.Namespace,
    quotes: Sequence[Quote],
    lines: Sequence[int] | None,
    decision: Decision | None = None,
) -> tuple[int, str | None]:
    """The exit code and stderr line the checks give: --fail-above, then the caps (--config)."""
    if decision is not None and not decision.allowed:
        return EXIT_FOUND, f"does not fit the caps now: {decision.reason}"
    limit: Decimal | None = args.fail_above
    if limit is None:
        return EXIT_OK, None
    total = render.batch_total(quotes)
    if total <= limit:
        return EXIT_OK, None
    currency = quotes[0].currency
    if lines is None:
        return EXIT_FOUND, (
            f"total {format_usd(total)} {currency} is above --fail-above {format_usd(limit)}"
        )
    over = [str(line) for line, q in zip(lines, quotes, strict=True) if q.total > limit]
    detail = ""
    if over:
        shown = ", ".join(over[:10]) + (", ..." if len(over) > 10 else "")
        detail = f"; lines above it on their own: {shown}"
    return EXIT_FOUND, (
        f"batch total {format_usd(total)} {currency} is above --fail-above"
        f" {format_usd(limit)}{detail}"
    )


def run_quote(args: argparse.Namespace) -> Outcome:
    if args.at is not None and args.config is not None:
        raise UsageError("quote: --config checks the caps now, so it cannot be used with --at")
    guard = _guard_for(args)
    try:
        return _run_quote(args, guard)
    finally:
        if guard is not None:
            guard.close()


def _run_quote(args: argparse.Namespace, guard: Guard | None) -> Outcome:
    endpoint, tokens = _split_endpoint(([args.endpoint] if args.endpoint else []) + args.pairs)
    overrides = parse_pairs(tokens)
    hints = _quoting_hints(tokens)
    lines: list[int] | None = None
    if args.input is None:
        if endpoint is None:
            before = f" before {tokens[0]!r}" if tokens else ""
            raise UsageError(
                f"quote: missing ENDPOINT{before} (e.g. fal-ai/magi/image-to-video),"
                " or --input FILE"
            )
        table = guard.table if guard is not None else table_for(args.pricing)
        try:
            quotes = [table.quote(endpoint, overrides, strict=args.strict, at=args.at)]
        except InvalidArguments as exc:
            raise _hinted(
                exc, table, endpoint, overrides, hints, strict=args.strict, at=args.at
            ) from None
    else:
        content, source = read_input(args.input)
        requests, batch = parse_requests(content, source)
        table = guard.table if guard is not None else table_for(args.pricing)
        quotes = _quote_requests(
            table,
            requests,
            endpoint,
            overrides,
            strict=args.strict,
            source=source,
            at=args.at,
            hints=hints,
        )
        if batch:
            lines = [r.line for r in requests if r.line is not None]

    decision = _budget_check(args, guard, quotes)
    code, message = _verdict(args, quotes, lines, decision)
    if code == EXIT_OK and decision is not None:
        message = None
    if lines is not None:
        output = (
            render.batch_json(lines, quotes)
            if args.format == "json"
            else render.batch_table(lines, quotes)
        )
    elif args.format == "json":
        output = render.quote_json(quotes[0], render.decision_data(decision))
    else:
        output = render.quote_table(quotes[0])
        if decision is not None:
            output += "\n" + render.decision_text(render.decision_data(decision))
    return Outcome(output, code, message)
