"""`falbudget pricing ...`: work on price table files (today: `pricing validate`)."""

from __future__ import annotations

import argparse

from falbudget.cli import render
from falbudget.cli.common import Outcome, Subparsers, UsageError, add_format_option


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "pricing",
        help="check price table files",
        description="Work on price table files.",
    )
    commands = parser.add_subparsers(dest="pricing_command", metavar="COMMAND")
    validate = commands.add_parser(
        "validate",
        help="load and check a price table; exit 0, or 2 with the error",
        description=(
            "Load, validate and compile a price table as falbudget would, and print a short"
            " summary (version, sha256, endpoints and their price ranges). Exit 0 when the"
            " table is good, else 2 with one line naming the file, endpoint and field."
        ),
    )
    validate.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help="the table to check (default: the table in use: FALBUDGET_PRICING, else packaged)",
    )
    add_format_option(validate)
    validate.set_defaults(func=run_validate)
    parser.set_defaults(func=_missing_command)


def _missing_command(args: argparse.Namespace) -> Outcome:
    raise UsageError("pricing: a command is required: validate")


def run_validate(args: argparse.Namespace) -> Outcome:
    from falbudget.pricing.loader import load_table, table_path_from_env

    table = load_table(args.path if args.path is not None else table_path_from_env())
    data = render.table_summary(table)
    if args.format == "json":
        return Outcome(render.to_json(data))
    return Outcome(render.summary_text(data))
