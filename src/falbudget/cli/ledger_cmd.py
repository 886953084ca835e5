"""`falbudget ledger ...`: the ledger's storage (`ledger migrate`) and its audit trail of
adjustments (`ledger adjustments`)."""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from falbudget.cli import render
from falbudget.cli.common import Outcome, Subparsers, UsageError, add_format_option
from falbudget.errors import ConfigurationError, install_hint

if TYPE_CHECKING:  # pragma: no cover
    from falbudget.ledger.base import Adjustment

MIGRATE_DESCRIPTION = """\
Bring a PostgreSQL ledger's schema to the version this falbudget uses: create it when it is
missing, upgrade it when it is older (in one transaction), refuse when it is newer. Workers
create a missing schema themselves, but they refuse to run on an older one until it has been
migrated: stop the workers of the older falbudget, migrate, then start the new ones.

A SQLite ledger upgrades itself when it is opened; migrating one just opens it."""

MIGRATE_EPILOG = """\
examples:
  falbudget ledger migrate postgresql://budget@db.internal:5432/spend
  falbudget ledger migrate 'postgresql://budget@db.internal/spend?schema=team_a' --format json

exit codes: 0 the schema is at this falbudget's version, 2 bad input, unreachable or newer"""


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "ledger",
        help="the ledger's storage (create or upgrade its schema) and its adjustments",
        description="Work on the ledger's storage; read its audit trail of adjustments.",
    )
    commands = parser.add_subparsers(dest="ledger_command", metavar="COMMAND")
    migrate = commands.add_parser(
        "migrate",
        help="create or upgrade a PostgreSQL ledger's schema",
        description=MIGRATE_DESCRIPTION,
        epilog=MIGRATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    migrate.add_argument(
        "url",
        metavar="URL",
        help="the ledger URL, e.g. postgresql://user@host:5432/db?schema=team_a",
    )
    add_format_option(migrate)
    migrate.set_defaults(func=run_migrate)

    from falbudget.cli.common import add_guard_options

    adjustments = commands.add_parser(
        "adjustments",
        help="the audit trail: every correction of a hold's spent amount (reconcile --apply)",
        description="Every adjustment the ledger recorded, oldest first: the hold, what it"
        " counted before and after, the difference every bucket of the hold moved by, why and"
        " from which billing records (see docs/reconcile.md).",
    )
    add_guard_options(adjustments)
    adjustments.add_argument("--hold", metavar="ID", help="only this hold's adjustments")
    adjustments.add_argument("--format", choices=("table", "json", "csv"), default="table")
    adjustments.set_defaults(func=run_adjustments)
    parser.set_defaults(func=_missing_command)


def _missing_command(args: argparse.Namespace) -> Outcome:
    raise UsageError("ledger: a command is required: migrate, adjustments")


def run_adjustments(args: argparse.Namespace) -> Outcome:
    from falbudget.cli.budget_cmd import guard_from_args

    guard = guard_from_args(args, read_only=True)
    try:
        rows = adjustment_rows(guard.ledger.adjustments(args.hold))
    finally:
        guard.close()
    if args.format == "json":
        return Outcome("\n".join(render.to_json(row) for row in rows))
    if args.format == "csv":
        return Outcome(adjustments_csv(rows))
    return Outcome(adjustments_table(rows))


def adjustment_rows(adjustments: Sequence[Adjustment]) -> list[dict[str, Any]]:
    """Adjustments as JSON-ready rows: money as decimal strings (delta signed), times ISO UTC."""
    return [adjustment_data(a) for a in adjustments]


def adjustment_data(adjustment: Adjustment) -> dict[str, Any]:
    """One adjustment as JSON-ready data (here and in `falbudget reconcile`'s output)."""
    from falbudget.money import format_usd, from_micros
    from falbudget.reconcile import iso

    def usd(micros: int) -> str:
        return format_usd(from_micros(micros))

    return {
        "id": adjustment.id,
        "created_at": iso(adjustment.created_at),
        "hold_id": adjustment.hold_id,
        "previous": usd(adjustment.previous),
        "amount": usd(adjustment.amount),
        "delta": render.signed_usd(adjustment.delta),
        "reason": adjustment.reason,
        "source": adjustment.source,
    }


_ADJUSTMENT_COLUMNS = ("id", "created_at", "hold_id", "previous", "amount", "delta", "reason")


def adjustments_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "(no adjustments)"

    shown = [
        {
            **row,
            "created_at": render.minute(row["created_at"]),
            "hold_id": row["hold_id"][:8],
        }
        for row in rows
    ]
    return render.tabulate_text(
        [[str(row[c]) for c in _ADJUSTMENT_COLUMNS] for row in shown],
        ["id", "created (UTC)", "hold", "previous", "amount", "delta", "reason"],
        ["right", "left", "left", "right", "right", "right", "left"],
    )


def adjustments_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = [*_ADJUSTMENT_COLUMNS, "source"]
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row[c] for c in columns])
    return out.getvalue().rstrip("\n")


def run_migrate(args: argparse.Namespace) -> Outcome:
    url: str = args.url
    scheme = url.partition("://")[0].lower()
    if scheme in ("postgresql", "postgres"):
        try:
            from falbudget.ledger import postgres
        except ImportError as exc:
            raise ConfigurationError(
                f"ledger migrate: PostgreSQL support is missing: {install_hint('postgres')} ({exc})"
            ) from None
        before, after = postgres.migrate(url)
        from falbudget.ledger._urls import redact_url

        shown = redact_url(url)
        data = {
            "url": shown,
            "backend": "postgresql",
            "schema": postgres.schema_name(url),
            "from_version": before,
            "to_version": after,
            "changed": before != after,
        }
    elif scheme == "sqlite":
        from falbudget.ledger import open_ledger, sqlite

        ledger = open_ledger(url)  # a SQLite file upgrades itself when opened
        ledger.close()
        latest = len(sqlite.MIGRATIONS)
        data = {
            "url": ledger.url,
            "backend": "sqlite",
            "schema": None,
            "from_version": None,
            "to_version": latest,
            "changed": None,
        }
    else:
        raise UsageError(
            f"ledger migrate: {scheme or url!r} ledgers have no schema to migrate; give a"
            " postgresql:// (or sqlite:///) URL"
        )
    if args.format == "json":
        return Outcome(render.to_json(data))
    return Outcome(_migrate_text(data))


def _migrate_text(data: dict[str, object]) -> str:
    to = data["to_version"]
    if data["backend"] == "sqlite":
        return f"{data['url']}: up to date at version {to} (SQLite upgrades itself when opened)"
    where = f"{data['url']}: schema {data['schema']!r}"
    before = data["from_version"]
    if before == to:
        return f"{where} is up to date at version {to}"
    if before == 0:
        return f"{where} created at version {to}"
    return f"{where} upgraded from version {before} to {to}"
