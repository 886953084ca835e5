"""`falbudget endpoints`: the priced endpoints, their parameters and their price range."""

from __future__ import annotations

import argparse

from falbudget.cli import render
from falbudget.cli.common import (
    Outcome,
    Subparsers,
    add_format_option,
    add_pricing_option,
    table_for,
)


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "endpoints",
        help="the priced endpoints, their parameters and their price range",
        description=(
            "List the endpoints of the price table: each parameter's type, allowed values,"
            " default, whether it is required and whether it changes the price, and the price"
            " of the cheapest and the dearest request."
        ),
    )
    add_format_option(parser)
    add_pricing_option(parser)
    parser.set_defaults(func=run_endpoints)


def run_endpoints(args: argparse.Namespace) -> Outcome:
    data = render.endpoints_data(table_for(args.pricing))
    if args.format == "json":
        return Outcome(render.to_json(data))
    return Outcome(render.endpoints_table(data))
