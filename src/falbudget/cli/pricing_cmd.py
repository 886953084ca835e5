"""`falbudget pricing ...`: work on price table files (`pricing validate`, `pricing diff`)."""

from __future__ import annotations

import argparse
import contextlib
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

    sync = commands.add_parser(
        "sync",
        help="write a price table from fal's Platform API (the account's own prices)",
        description=SYNC_DESCRIPTION,
        epilog=SYNC_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sync.add_argument(
        "patterns",
        nargs="*",
        metavar="ENDPOINT_OR_GLOB",
        help="endpoint ids (fal-ai/flux/dev) or globs ('fal-ai/flux*'); default: every endpoint",
    )
    sync.add_argument(
        "--output", "-o", metavar="FILE", help="write the table to FILE (default: stdout)"
    )
    sync.add_argument(
        "--check",
        metavar="TABLE",
        help="compare TABLE with fal's prices now; write nothing; exit 1 when a price rose",
    )
    add_format_option(sync)
    sync.set_defaults(func=run_sync)
    parser.set_defaults(func=_missing_command)


SYNC_DESCRIPTION = """\
Ask fal's Platform API for the unit price of each endpoint (50 ids a call) and for its input
schema (the catalog's OpenAPI expansion), and write a price table in the format of pricing.yaml:
one entry per endpoint, with rules that work out the quantity from the request (per image, per
megapixel, per second of output, per request). Prices are the account's own. An endpoint whose
quantity is known only after the call is listed, not priced. The key is read from FAL_KEY (or
FAL_KEY_ID and FAL_KEY_SECRET); FALBUDGET_FAL_API_URL replaces https://api.fal.ai/v1."""

SYNC_EPILOG = """\
examples:
  falbudget pricing sync 'fal-ai/flux*' fal-ai/kling-video/v2.1/pro --output fal-sync.yaml
  falbudget pricing sync --check fal-sync.yaml      # nightly: exit 1 when fal raised a price

exit codes: 0 written (or no rise), 1 a price rose (--check) or nothing could be priced,
2 bad input, or fal's API could not be read"""


def _missing_command(args: argparse.Namespace) -> Outcome:
    raise UsageError("pricing: a command is required: validate, diff, sync")


def run_validate(args: argparse.Namespace) -> Outcome:
    from falbudget.cli import render_pricing
    from falbudget.pricing.loader import load_table, table_path_from_env

    table = load_table(args.path if args.path is not None else table_path_from_env())
    data = render.table_summary(table)
    versions = render_pricing.versions_data(table)
    if versions:  # only for a table with dated versions: the summary of others is as it was
        data["versions"] = versions
    missing = data.get("needs_ceiling", [])
    message = None
    if missing:
        message = (
            f"{len(missing)} endpoint{'s' if len(missing) != 1 else ''} priced only after the"
            f" call need{'s' if len(missing) == 1 else ''} a ceiling: {', '.join(missing)}"
        )
    code = EXIT_FOUND if missing else 0
    if args.format == "json":
        return Outcome(render.to_json(data), code, message)
    text = render.summary_text(data)
    if versions:
        text += "\n" + render_pricing.versions_text(versions, table.currency)
    return Outcome(text, code, message)


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


def run_sync(args: argparse.Namespace) -> Outcome:
    from falbudget import catalog, clock, platform
    from falbudget.cli import render_pricing
    from falbudget.pricing.diff import diff_tables
    from falbudget.pricing.loader import load_table, parse_table

    if args.check is not None and args.output is not None:
        raise UsageError("pricing sync: give --check TABLE or --output FILE, not both")
    old = load_table(args.check) if args.check is not None else None
    patterns = list(args.patterns)
    if old is not None and not patterns:
        patterns = sorted(old.endpoints)
    key = platform.api_key_from_env(purpose="reading fal's prices needs an API key")
    read_on = dt.datetime.fromtimestamp(clock.now(), dt.UTC).date()
    with platform.PlatformClient(key, service="fal's Platform API") as client:
        result = catalog.sync(client, patterns, key_id=platform.key_id_of(key), read_on=read_on)
    summary = _sync_summary(result)
    if not result.written:
        return Outcome(
            summary, EXIT_FOUND, "pricing sync: no endpoint could be priced; nothing written"
        )
    text = catalog.table_yaml(result, read_on)
    new = parse_table(text, source="fal's Platform API")  # the table written must load
    if old is not None:
        diff = diff_tables(old, new)
        data = diff.to_dict()
        output = render.to_json(data) if args.format == "json" else render_pricing.diff_text(data)
        if diff.rises:
            return Outcome(output, EXIT_FOUND, render_pricing.rise_message(data))
        return Outcome(output)
    if args.output is None:
        return Outcome(text.rstrip("\n"))
    _write_atomically(args.output, text)
    return Outcome(summary + f"\nwrote {args.output}")


def _sync_summary(result: object) -> str:
    from falbudget.catalog import SyncResult

    assert isinstance(result, SyncResult)
    lines = [
        f"{len(result.priced)} endpoints priced, {len(result.needs_ceiling)} need a ceiling,"
        f" {len(result.left_out)} left out, {len(result.unpriced)} without a price from fal"
        f" ({result.calls} HTTP calls)"
    ]
    for synced in sorted(result.needs_ceiling, key=lambda s: s.endpoint_id):
        lines.append(f"  needs a ceiling: {synced.endpoint_id} ({synced.reason})")
    for synced in sorted(result.left_out, key=lambda s: s.endpoint_id):
        lines.append(f"  left out: {synced.endpoint_id} ({synced.reason})")
    for endpoint_id in sorted(result.unpriced):
        lines.append(f"  no price from fal: {endpoint_id}")
    return "\n".join(lines)


def _write_atomically(path: str, text: str) -> None:
    """The whole table or nothing: written beside ``path``, then renamed over it."""
    import os
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".falbudget-sync-", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
