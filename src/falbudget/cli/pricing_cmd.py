"""`falbudget pricing ...`: work on price table files (`pricing validate`, `pricing diff`)."""

from __future__ import annotations

import argparse
import datetime as dt

from falbudget.cli import render
from falbudget.cli.common import (
    EXIT_FOUND,
    Outcome,
    Subparsers,
    UsageError,
    add_format_option,
)

DIFF_DESCRIPTION = """\
Compare two price tables: per endpoint, what changed (endpoints, inputs and rules added, removed
or changed, with old -> new values) and how the price of every grid point moves (each
combination of the priced inputs' allowed values, quoted in both tables): how many go up, down or
stay, the largest rise and cut, and the points only one table allows.

An endpoint with dated versions of its prices is compared period by period (the dates on which
either table's prices change cut time into periods), so a price rise that takes effect later is
found too. --at DATE compares only the prices in effect on that day."""

DIFF_EPILOG = """\
examples:
  falbudget pricing diff old/pricing.yaml pricing.yaml
  falbudget pricing diff old.yaml new.yaml --at 2026-12-01 --format json

exit codes: 0 no price rises, 1 a grid point's price rises, 2 bad input or usage"""


def parse_moment(text: str) -> dt.date | dt.datetime:
    """An argparse ``type=`` for --at: an ISO date (a day, UTC) or date and time (no offset means
    UTC): 2026-12-01, 2026-12-01T09:30, 2026-12-01T09:30+02:00, 2026-12-01T09:30Z."""
    value = text.strip()
    try:
        if len(value) == 10:
            return dt.date.fromisoformat(value)
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"DATE={text!r} is not allowed: an ISO date such as 2026-12-01 (UTC), or a date and"
            " time such as 2026-12-01T09:30+02:00 (no offset means UTC)"
        ) from None


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "pricing",
        help="check and compare price table files",
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

    diff = commands.add_parser(
        "diff",
        help="what changed between two price tables; exit 1 when a price rises",
        description=DIFF_DESCRIPTION,
        epilog=DIFF_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    diff.add_argument("old", metavar="OLD", help="the price table before the change")
    diff.add_argument("new", metavar="NEW", help="the price table after the change")
    diff.add_argument(
        "--at",
        type=parse_moment,
        metavar="DATE",
        help="compare only the prices in effect at DATE (default: every period, all time)",
    )
    add_format_option(diff)
    diff.set_defaults(func=run_diff)
    parser.set_defaults(func=_missing_command)


def _missing_command(args: argparse.Namespace) -> Outcome:
    raise UsageError("pricing: a command is required: validate, diff")


def run_validate(args: argparse.Namespace) -> Outcome:
    from falbudget.cli import render_pricing
    from falbudget.pricing.loader import load_table, table_path_from_env

    table = load_table(args.path if args.path is not None else table_path_from_env())
    data = render.table_summary(table)
    versions = render_pricing.versions_data(table)
    if versions:  # only for a table with dated versions: the summary of others is as it was
        data["versions"] = versions
    if args.format == "json":
        return Outcome(render.to_json(data))
    text = render.summary_text(data)
    if versions:
        text += "\n" + render_pricing.versions_text(versions, table.currency)
    return Outcome(text)


def run_diff(args: argparse.Namespace) -> Outcome:
    from falbudget.cli import render_pricing
    from falbudget.pricing.diff import diff_tables
    from falbudget.pricing.loader import load_table

    result = diff_tables(load_table(args.old), load_table(args.new), at=args.at)
    data = result.to_dict()
    output = render.to_json(data) if args.format == "json" else render_pricing.diff_text(data)
    if result.rises:
        return Outcome(output, EXIT_FOUND, render_pricing.rise_message(data))
    return Outcome(output)
