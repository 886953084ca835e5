"""`falbudget ledger ...`: the ledger's storage (`ledger migrate`)."""

from __future__ import annotations

import argparse

from falbudget.cli import render
from falbudget.cli.common import Outcome, Subparsers, UsageError, add_format_option
from falbudget.errors import ConfigurationError

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
        help="the ledger's storage: create or upgrade its schema",
        description="Work on the ledger's storage.",
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
    parser.set_defaults(func=_missing_command)


def _missing_command(args: argparse.Namespace) -> Outcome:
    raise UsageError("ledger: a command is required: migrate")


def run_migrate(args: argparse.Namespace) -> Outcome:
    url: str = args.url
    scheme = url.partition("://")[0].lower()
    if scheme in ("postgresql", "postgres"):
        try:
            from falbudget.ledger import postgres
        except ImportError as exc:
            raise ConfigurationError(
                "ledger migrate: PostgreSQL support is missing: install falbudget[postgres]"
                f" ({exc})"
            ) from None
        before, after = postgres.migrate(url)
        shown = postgres.redact_url(url)
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
