"""`falbudget budget ...`: the guard's figures from the ledger (status, history, release-expired).

Caps come from the configuration file (--config PATH or FALBUDGET_CONFIG); the ledger from the
configuration, else --ledger URL, else FALBUDGET_LEDGER, else the default SQLite file.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

from falbudget.cli import render
from falbudget.cli.common import (
    FORMATS,
    Outcome,
    Subparsers,
    UsageError,
    add_format_option,
    add_guard_options,
    parse_when,
)

if TYPE_CHECKING:  # pragma: no cover
    from falbudget.guard.core import Guard
    from falbudget.ledger.base import Hold as LedgerHold

HISTORY_FORMATS = (*FORMATS, "jsonl", "csv")
STATES = ("held", "submitted", "settled", "released", "expired")


def guard_from_args(
    args: argparse.Namespace, *, need_config: bool = False, read_only: bool = False
) -> Guard:
    """The guard the options name; without a configuration, one with no caps.

    ``read_only``: for a command that only reads. Its ledger is opened read-only: nothing is
    created, migrated or written, and a missing ledger is LedgerNotFound (exit 2, one line
    naming the resolved path), never a new, empty ledger read as "nothing spent"."""
    from falbudget.guard.config import config_path, load_config
    from falbudget.guard.core import Guard
    from falbudget.ledger import default_ledger_url, open_ledger

    path = config_path(args.config)
    overrides = {"ledger": args.ledger} if args.ledger else {}
    if path is not None:
        return load_config(path).build_guard(read_only=read_only, **overrides)
    if need_config:
        raise UsageError("no caps to check: give --config PATH or set FALBUDGET_CONFIG")
    if read_only:
        return Guard(open_ledger(args.ledger or default_ledger_url(), read_only=True))
    return Guard(args.ledger)


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "budget",
        help="spend, holds and caps in the ledger",
        description="Read the guard's ledger: each cap's figures, the holds, expired holds.",
    )
    commands = parser.add_subparsers(dest="budget_command", metavar="COMMAND")

    status = commands.add_parser(
        "status",
        help="each cap: scope, window, limit, spent, held, remaining, %% used; overruns",
        description="Each cap in the configuration with its figures in the current window; a"
        " per-value cap (scope: project) lists every value seen. Without a configuration,"
        " the ledger's global spend. Then the overruns, if any: requests that count more as"
        " spent than was held for them (fal billed more than quoted).",
    )
    add_guard_options(status)
    add_format_option(status)
    status.set_defaults(func=run_status)

    history = commands.add_parser(
        "history",
        help="the holds: endpoint, amount, state, request id, times",
        description="The ledger's holds, newest first.",
    )
    add_guard_options(history)
    history.add_argument(
        "--scope", metavar="TAG=VALUE", help="only holds tagged so, e.g. project=alpha"
    )
    history.add_argument("--since", metavar="DATE", help="created on or after (ISO date/time)")
    history.add_argument("--until", metavar="DATE", help="created before (ISO date/time)")
    history.add_argument("--state", choices=STATES, action="append", help="only this state")
    history.add_argument("--limit", type=int, default=None, metavar="N", help="at most N rows")
    history.add_argument(
        "--format",
        choices=HISTORY_FORMATS,
        default="table",
        help="table (default); json or jsonl: one JSON object per line; csv. JSON and CSV rows"
        " are written as they are read from the ledger: the first comes at once, and memory"
        " does not grow with the history",
    )
    history.set_defaults(func=run_history)

    expire = commands.add_parser(
        "release-expired",
        help="close holds past their expiry: never sent -> released, sent -> counted as spent",
        description="Close every hold past its expiry now. A hold never marked submitted is"
        " released (its process died before sending); a submitted one is counted as spent"
        " (its request had left: fal may bill it) and listed for reconciliation.",
    )
    add_guard_options(expire)
    add_format_option(expire)
    expire.set_defaults(func=run_release_expired)
    parser.set_defaults(func=_missing_command)


def _missing_command(args: argparse.Namespace) -> Outcome:
    raise UsageError("budget: a command is required: status, history, release-expired")


def run_status(args: argparse.Namespace) -> Outcome:
    guard = guard_from_args(args, read_only=True)
    try:
        data = render.status_data(guard.status(), guard.spent(), guard.held(), guard.overruns())
    finally:
        guard.close()
    if args.format == "json":
        return Outcome(render.to_json(data))
    return Outcome(render.status_table(data))


def run_history(args: argparse.Namespace) -> Outcome:
    since, until = parse_when(args.since, "--since"), parse_when(args.until, "--until")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit={args.limit} is not allowed: 1 or more")
    scope = None
    if args.scope is not None:
        from falbudget.report import parse_scope

        scope = parse_scope(args.scope)
    guard = guard_from_args(args, read_only=True)
    if args.format == "table":
        try:
            holds = guard.ledger.holds(
                states=args.state,
                since=since,
                until=until,
                limit=None if scope else args.limit,
            )
        finally:
            guard.close()
        if scope is not None:
            holds = [h for h in holds if h.tags.get(scope[0]) == scope[1]][: args.limit]
        return Outcome(render.history_table(render.history_rows(holds)))
    return Outcome(stream=_history_lines(guard, args, since, until, scope))


def _history_lines(
    guard: Guard,
    args: argparse.Namespace,
    since: float | None,
    until: float | None,
    scope: tuple[str, str] | None,
) -> Iterator[str]:
    """The history as JSON Lines or CSV, one line per hold as the ledger yields it."""
    try:
        holds: Iterator[LedgerHold] = guard.ledger.iter_holds(
            states=args.state, since=since, until=until
        )
        if scope is not None:
            holds = (h for h in holds if h.tags.get(scope[0]) == scope[1])
        if args.limit is not None:
            holds = itertools.islice(holds, args.limit)
        if args.format == "csv":
            yield render.history_csv_header()
            for hold in holds:
                yield render.history_csv_line(render.history_rows([hold])[0])
        else:
            for hold in holds:
                yield render.to_json(render.history_rows([hold])[0])
    finally:
        guard.close()


def run_release_expired(args: argparse.Namespace) -> Outcome:
    guard = guard_from_args(args)
    try:
        closed = guard.release_expired()
    finally:
        guard.close()
    rows = render.history_rows(closed)
    if args.format == "json":
        return Outcome("\n".join(render.to_json(row) for row in rows))
    released = sum(1 for row in rows if row["state"] == "released")
    expired = len(rows) - released
    summary = f"released {released} hold(s); counted {expired} submitted hold(s) as spent"
    return Outcome(render.history_table(rows) + "\n" + summary if rows else summary)
