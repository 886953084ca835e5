"""`falbudget plan ...`: the inverse of a quote (count, best, cheapest, grid); docs/planning.md.

The handlers read the command line, ask ``falbudget.pricing.planning`` and hand the answer to the
pure renderers at the bottom of this module (data in, text out).
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from falbudget.cli import render
from falbudget.cli.common import (
    EXIT_FOUND,
    FORMATS,
    Outcome,
    Subparsers,
    UsageError,
    add_format_option,
    add_pricing_option,
    parse_amount,
    table_for,
)
from falbudget.cli.pricing_cmd import parse_moment
from falbudget.cli.quote_cmd import parse_pairs
from falbudget.money import format_usd

if TYPE_CHECKING:  # pragma: no cover
    from falbudget.pricing.engine import PricedEndpoint, PriceTable, Quote
    from falbudget.pricing.planning import Fit, GridRow

GRID_FORMATS = (*FORMATS, "csv")
WINDOWS = ("total", "day", "week", "month")

DESCRIPTION = """\
The inverse of a quote, for any endpoint of the price table:

  count     how many requests of one configuration fit in an amount, or in what remains of a cap
  best      the best configuration whose price is at most an amount a request
  cheapest  the cheapest configuration that reaches minimums (num_frames=144 resolution=720p)
  grid      every combination of the priced inputs with its price

"Best" prefers, in order, each priced input in rule order at its largest value (for MAGI-1:
most frames, then 720p over 480p, then most steps); --order changes it. docs/planning.md."""

EPILOG = """\
examples:
  falbudget plan count fal-ai/magi/image-to-video num_frames=144 --amount 10.00
  falbudget plan count fal-ai/magi/image-to-video --config falbudget.yaml --window month
  falbudget plan best fal-ai/magi/image-to-video --per-request 2.00
  falbudget plan cheapest fal-ai/magi/image-to-video num_frames=144 resolution=720p
  falbudget plan grid fal-ai/magi/image-to-video --format csv

exit codes: 0 found, 1 nothing fits (count 0, no configuration), 2 bad input or usage"""

PAIRS_HELP = "KEY=VALUE, read as in `falbudget quote` (JSON when it parses, else a string)"
ORDER_HELP = (
    "the order of preference, most important first, comma-separated: NAME prefers the larger"
    " value, -NAME the smaller (write --order=-NAME,...); inputs left out follow in the default"
    " order (the priced inputs in rule order, larger first)"
)


def _common(parser: argparse.ArgumentParser, formats: Sequence[str] = FORMATS) -> None:
    parser.add_argument("endpoint", metavar="ENDPOINT", help="e.g. fal-ai/magi/image-to-video")
    add_pricing_option(parser)
    parser.add_argument(
        "--at",
        type=parse_moment,
        metavar="DATE",
        help="plan with the prices in effect at DATE (2026-12-01, UTC) instead of now",
    )
    if formats == FORMATS:
        add_format_option(parser)
    else:
        parser.add_argument(
            "--format",
            choices=formats,
            default="table",
            help="table (default) for people, json or csv for scripts",
        )


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="the inverse of a quote: how many fit, the best within, the cheapest, the grid",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="plan_command", metavar="COMMAND")

    count = commands.add_parser(
        "count",
        help="how many requests fit in --amount, or in what remains of a cap (--config)",
        description="How many requests of ENDPOINT with the KEY=VALUE arguments (defaults for"
        " the rest) fit in --amount, or in what remains now of the cap on --scope over --window"
        " in the guard configuration (--config PATH or FALBUDGET_CONFIG), and what is left."
        " Exit 1 when not one fits.",
    )
    _common(count)
    count.add_argument("pairs", nargs="*", metavar="KEY=VALUE", help=PAIRS_HELP)
    count.add_argument(
        "--amount", type=parse_amount, metavar="AMOUNT", help="the money to spend, e.g. 10.00"
    )
    from falbudget.cli.common import add_guard_options

    add_guard_options(count)
    count.add_argument(
        "--scope",
        metavar="SCOPE",
        help="with --config: the cap's scope, global (default) or TAG=VALUE such as user=ann",
    )
    count.add_argument(
        "--window", choices=WINDOWS, help="with --config: the cap's window (default: total)"
    )
    count.set_defaults(func=run_count, extra_positionals="pairs")

    best = commands.add_parser(
        "best",
        help="the best configuration costing at most --per-request",
        description="The best configuration of ENDPOINT whose price is at most --per-request,"
        " by --order. KEY=VALUE holds an input at a value. Exit 1 when none is cheap enough.",
    )
    _common(best)
    best.add_argument("pairs", nargs="*", metavar="KEY=VALUE", help="a fixed input: " + PAIRS_HELP)
    best.add_argument(
        "--per-request",
        type=parse_amount,
        required=True,
        metavar="AMOUNT",
        help="the most one request may cost, e.g. 2.00",
    )
    best.add_argument("--order", metavar="NAMES", help=ORDER_HELP)
    best.set_defaults(func=run_best, extra_positionals="pairs")

    cheapest = commands.add_parser(
        "cheapest",
        help="the cheapest configuration reaching minimums (num_frames=144 resolution=720p)",
        description="The cheapest configuration of ENDPOINT in which each KEY is at least"
        " VALUE: a number by value, any other input by its position in its list of values"
        " (resolution=720p: 720p or a value listed after it). At equal price the best by"
        " --order wins. Exit 1 when no configuration reaches the minimums.",
    )
    _common(cheapest)
    cheapest.add_argument("pairs", nargs="*", metavar="KEY=VALUE", help="a minimum: " + PAIRS_HELP)
    cheapest.add_argument(
        "--fix",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="hold an input at a value (repeat for more)",
    )
    cheapest.add_argument("--order", metavar="NAMES", help="to break ties: " + ORDER_HELP)
    cheapest.set_defaults(func=run_cheapest, extra_positionals="pairs")

    grid = commands.add_parser(
        "grid",
        help="every combination of the priced inputs with its price (table, json, csv)",
        description="Every combination of ENDPOINT's priced inputs' allowed values with its"
        " price; the other inputs at their defaults. KEY=VALUE holds an input at a value.",
    )
    _common(grid, GRID_FORMATS)
    grid.add_argument("pairs", nargs="*", metavar="KEY=VALUE", help="a fixed input: " + PAIRS_HELP)
    grid.set_defaults(func=run_grid, extra_positionals="pairs")

    parser.set_defaults(func=_missing_command)


def _missing_command(args: argparse.Namespace) -> Outcome:
    raise UsageError("plan: a command is required: count, best, cheapest, grid")


# --- reading the command line ------------------------------------------------------------------


def _pairs(command: str, tokens: Sequence[str]) -> dict[str, Any]:
    try:
        return parse_pairs(tokens)
    except UsageError as exc:
        raise UsageError(f"plan {command}: {str(exc).removeprefix('quote: ')}") from None


def _order(command: str, text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if not all(name.lstrip("+-") for name in names):
        raise UsageError(
            f"plan {command}: --order={text!r} is not allowed: input names separated by commas,"
            " such as num_frames,-num_inference_steps"
        )
    return names


# --- the commands ------------------------------------------------------------------------------


def run_count(args: argparse.Namespace) -> Outcome:
    from falbudget.guard.config import config_path
    from falbudget.pricing.planning import how_many

    arguments = _pairs("count", args.pairs)
    budget: dict[str, str] | None = None
    if args.amount is not None:
        if args.config is not None:
            raise UsageError("plan count: give --amount or --config, not both")
        if args.ledger is not None:
            raise UsageError("plan count: --ledger needs --config (not --amount)")
        if args.scope is not None or args.window is not None:
            raise UsageError("plan count: --scope and --window need --config (not --amount)")
        table = table_for(args.pricing)
        amount: Decimal = args.amount
    else:
        if config_path(args.config) is None:
            raise UsageError(
                "plan count: give --amount AMOUNT, or --config PATH (or FALBUDGET_CONFIG) to"
                " plan with what remains of a cap"
            )
        from falbudget.guard.caps import parse_scope, scope_text

        scope = scope_text(*parse_scope(args.scope or "global", what="--scope"))
        window = args.window or "total"
        table, amount = _remaining(args, scope, window)
        budget = {"scope": scope, "window": window}
    fit = how_many(table.endpoint(args.endpoint), arguments, amount, at=args.at)
    data = fit_data(fit, budget)
    output = render.to_json(data) if args.format == "json" else fit_text(data)
    if fit.count == 0:
        return Outcome(output, EXIT_FOUND, fit_message(data))
    return Outcome(output)


def _remaining(args: argparse.Namespace, scope: str, window: str) -> tuple[PriceTable, Decimal]:
    """The table to price with and what the cap on ``scope`` over ``window`` admits now."""
    from falbudget.cli.budget_cmd import guard_from_args
    from falbudget.errors import ConfigurationError

    guard = guard_from_args(args, need_config=True, read_only=True)
    try:
        table = table_for(args.pricing) if args.pricing is not None else guard.table
        try:
            remaining = guard.remaining(scope, window)
        except ConfigurationError as exc:
            caps = ", ".join(f"{cap.scope} {cap.window}" for cap in guard.caps) or "none"
            raise UsageError(
                f"plan count: {exc} (--scope, --window); the configuration's caps: {caps}"
            ) from None
    finally:
        guard.close()
    return table, remaining


def run_best(args: argparse.Namespace) -> Outcome:
    from falbudget.pricing.planning import best_within, effective_order

    fixed = _pairs("best", args.pairs)
    order = _order("best", args.order)
    endpoint = table_for(args.pricing).endpoint(args.endpoint)
    found = best_within(endpoint, args.per_request, order, fixed, at=args.at)
    data = choice_data(
        "best",
        endpoint.name,
        found,
        effective_order(endpoint, order, at=args.at),
        fixed,
        per_request=args.per_request,
    )
    output = render.to_json(data) if args.format == "json" else choice_text(data, found)
    if found is None:
        return Outcome(output, EXIT_FOUND, _none_within(endpoint, args, fixed))
    return Outcome(output)


def _none_within(
    endpoint: PricedEndpoint, args: argparse.Namespace, fixed: Mapping[str, Any]
) -> str:
    from falbudget.pricing.planning import cheapest_meeting

    cheapest = cheapest_meeting(endpoint, {}, fixed, at=args.at)
    least = "" if cheapest is None else f"; the cheapest costs {format_usd(cheapest.total)}"
    return (
        f"plan best: no configuration of {endpoint.name} costs {format_usd(args.per_request)}"
        f" or less a request{least}"
    )


def run_cheapest(args: argparse.Namespace) -> Outcome:
    from falbudget.pricing.planning import cheapest_meeting, effective_order

    minimums = _pairs("cheapest", args.pairs)
    fixed = _pairs("cheapest", args.fix)
    order = _order("cheapest", args.order)
    endpoint = table_for(args.pricing).endpoint(args.endpoint)
    found = cheapest_meeting(endpoint, minimums, fixed, order, at=args.at)
    data = choice_data(
        "cheapest",
        endpoint.name,
        found,
        effective_order(endpoint, order, at=args.at),
        fixed,
        minimums=minimums,
    )
    output = render.to_json(data) if args.format == "json" else choice_text(data, found)
    if found is None:
        return Outcome(output, EXIT_FOUND, _none_meeting(endpoint, args, minimums))
    return Outcome(output)


def _none_meeting(
    endpoint: PricedEndpoint, args: argparse.Namespace, minimums: Mapping[str, Any]
) -> str:
    version = endpoint.version_at(args.at)
    limits = []
    for name in minimums:
        spec = version.inputs[name]
        if spec.enum is None and spec.maximum is not None:
            limits.append(f"{name} is at most {spec.maximum}")
        elif spec.enum is not None and spec.type in ("integer", "number"):
            limits.append(f"{name} is at most {max(spec.enum)}")
    why = f" ({'; '.join(limits)})" if limits else ""
    return (
        f"plan cheapest: no configuration of {endpoint.name} reaches {minimums_text(minimums)}{why}"
    )


def run_grid(args: argparse.Namespace) -> Outcome:
    from falbudget.pricing.planning import price_grid

    fixed = _pairs("grid", args.pairs)
    endpoint = table_for(args.pricing).endpoint(args.endpoint)
    rows = price_grid(endpoint, fixed, at=args.at)
    version = endpoint.version_at(args.at)
    names = list(version.priced_inputs)
    if args.format == "csv":
        return Outcome(grid_csv(names, rows))
    data = grid_data(endpoint.name, names, fixed, rows)
    if args.format == "json":
        return Outcome(render.to_json(data))
    return Outcome(grid_table(data))


# --- pure renderers: data in, text out ----------------------------------------------------------


def _configuration(quote: Quote) -> dict[str, Any]:
    # the request's own value (a characters rule's item holds the count, not the text)
    return {
        item.input: quote.arguments.get(item.input, item.value)
        for item in quote.line_items
        if item.input is not None
    }


def _prices_of(data: Mapping[str, Any]) -> str:
    quote = data["quote"]
    version = quote["table_version"]
    if quote.get("effective_from"):
        version += f", prices from {quote['effective_from']}"
    return f"(price table {version})"


def fit_data(fit: Fit, budget: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`plan count` as JSON-ready data; ``budget`` the cap's scope and window with --config."""
    return {
        "endpoint": fit.quote.endpoint,
        "configuration": _configuration(fit.quote),
        "price": format_usd(fit.price),
        "amount": format_usd(fit.amount),
        "count": fit.count,
        "spend": format_usd(fit.spend),
        "leftover": format_usd(fit.leftover),
        "currency": fit.quote.currency,
        "budget": None if budget is None else dict(budget),
        "quote": fit.quote.to_dict(),
    }


def fit_text(data: Mapping[str, Any]) -> str:
    """'12 requests of 0.80 fit in 10.00 USD (0.40 left)', under the configuration priced."""
    configuration = render.pairs_text(data["configuration"])
    head = f"{data['endpoint']} {configuration}".rstrip()
    verb = "fits" if data["count"] == 1 else "fit"
    budget = data["budget"]
    source = ""
    if budget is not None:
        source = f", what remains now of the {budget['scope']} {budget['window']} cap"
    return (
        f"{head} {_prices_of(data)}\n"
        f"{render.plural(data['count'], 'request')} of {data['price']} {verb} in"
        f" {data['amount']} {data['currency']}{source} ({data['leftover']} left)"
    )


def fit_message(data: Mapping[str, Any]) -> str:
    return (
        f"plan count: not one request of {data['price']} fits in {data['amount']}"
        f" {data['currency']}"
    )


def minimums_text(minimums: Mapping[str, Any]) -> str:
    return ", ".join(f"{name} >= {render.show_value(value)}" for name, value in minimums.items())


def choice_data(
    question: str,
    endpoint: str,
    quote: Quote | None,
    order: Sequence[str],
    fixed: Mapping[str, Any],
    *,
    per_request: Decimal | None = None,
    minimums: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`plan best` and `plan cheapest` as JSON-ready data: the question asked and the answer
    (``found`` false and ``quote`` null when nothing fits)."""
    data: dict[str, Any] = {"endpoint": endpoint, "question": question}
    if per_request is not None:
        data["per_request"] = format_usd(per_request)
    if minimums is not None:
        data["minimums"] = dict(minimums)
    data.update(
        {
            "fixed": dict(fixed),
            "order": list(order),
            "found": quote is not None,
            "configuration": None if quote is None else _configuration(quote),
            "price": None if quote is None else format_usd(quote.total),
            "currency": None if quote is None else quote.currency,
            "quote": None if quote is None else quote.to_dict(),
        }
    )
    return data


def choice_text(data: Mapping[str, Any], quote: Quote | None) -> str:
    """A heading that restates the question, then the quote of the answer (nothing if none)."""
    if quote is None:
        return ""
    order = ", ".join(data["order"]) or "(no priced input)"
    if data["question"] == "best":
        head = f"best within {data['per_request']} a request, by order {order}"
    else:
        wanted = minimums_text(data["minimums"]) or "no minimum"
        head = f"cheapest with {wanted}; at equal price by order {order}"
    if data["fixed"]:
        fixed = render.pairs_text(data["fixed"])
        head += f"; fixed {fixed}"
    return f"{head}\n{render.quote_table(quote)}"


def _price_range(rows: Sequence[GridRow]) -> tuple[Decimal, Decimal]:
    prices = [row.price for row in rows]
    return min(prices), max(prices)


def grid_data(
    endpoint: str, names: Sequence[str], fixed: Mapping[str, Any], rows: Sequence[GridRow]
) -> dict[str, Any]:
    """`plan grid` as JSON-ready data: the inputs, the price range and one row a configuration."""
    first = rows[0].quote
    low, high = _price_range(rows)
    return {
        "endpoint": endpoint,
        "table_version": first.table_version,
        "table_sha256": first.table_sha256,
        "effective_from": first.effective_from,
        "currency": first.currency,
        "inputs": list(names),
        "fixed": dict(fixed),
        "count": len(rows),
        "min": format_usd(low),
        "max": format_usd(high),
        "rows": [
            {"configuration": dict(row.configuration), "price": format_usd(row.price)}
            for row in rows
        ],
    }


def grid_table(data: Mapping[str, Any]) -> str:

    names = data["inputs"]
    version = data["table_version"]
    if data["effective_from"]:
        version += f", prices from {data['effective_from']}"
    head = (
        f"{data['endpoint']} (price table {version}):"
        f" {render.plural(data['count'], 'configuration')},"
        f" {data['min']} - {data['max']} {data['currency']}"
    )
    if data["fixed"]:
        head += "; fixed " + render.pairs_text(data["fixed"])
    body = [
        [*(render.show_value(row["configuration"][n]) for n in names), row["price"]]
        for row in data["rows"]
    ]
    table = render.tabulate_text(body, [*names, "price"], ["left"] * len(names) + ["right"])
    return f"{head}\n{table}"


def grid_csv(names: Sequence[str], rows: Sequence[GridRow]) -> str:
    """A header (the priced inputs, then price) and one line a configuration."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*names, "price"])
    for row in rows:
        writer.writerow(
            [*(render.show_value(row.configuration[n]) for n in names), format_usd(row.price)]
        )
    return out.getvalue().rstrip("\n")
