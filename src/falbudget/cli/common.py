"""What every command module shares: the outcome of a command, common options and helpers.

A command module has a ``register(subparsers)`` function that adds its parser(s) and sets
``func=`` to a handler. A handler takes the parsed ``argparse.Namespace`` and returns an
:class:`Outcome`; it never prints. ``app.main`` writes the outcome and turns errors into exit codes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

from falbudget.errors import FalbudgetError

if TYPE_CHECKING:  # pragma: no cover
    from falbudget.pricing.engine import PriceTable

NOW_ENV = "FALBUDGET_NOW"
"""An ISO date or time every command takes as "now" (prices in effect, windows, reports,
expiry), for output that does not depend on the calendar; unset: the clock."""

EXIT_OK = 0
EXIT_FOUND = 1
"""The check found something: a total above --fail-above (later: a request over a cap)."""
EXIT_USAGE = 2
"""Bad input or usage: one line on stderr, nothing on stdout."""
EXIT_INTERNAL = 70
"""An unexpected internal error (a bug in falbudget): one line on stderr; the traceback with
``FALBUDGET_DEBUG=1`` (EX_SOFTWARE of sysexits.h)."""
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

DEBUG_ENV = "FALBUDGET_DEBUG"
"""Set to 1 to see the traceback of an internal error (exit 70) on stderr."""

FORMATS = ("table", "json")

PROG = "falbudget"


class ParserError(Exception):
    """An argparse usage error, raised instead of printing the usage and exiting."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``falbudget: error: ...``, exit 2) with no usage
    dump, and options are never abbreviated (a later option cannot make an old prefix ambiguous).
    Subparsers are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()
        raise ParserError(f"{command}: {message}" if command else message)


Subparsers: TypeAlias = "argparse._SubParsersAction[Parser]"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command produced: text for stdout, its exit code and an optional stderr line.

    ``stdout`` is written as is, followed by a newline when it is not empty. ``message`` is one
    line for stderr, used when the exit code is not 0 but the command still produced output (a
    total above --fail-above); errors are raised instead (see ``app.main``).
    """

    stdout: str = ""
    code: int = EXIT_OK
    message: str | None = None
    stream: Iterable[str] | None = None
    """Lines written one by one as they are produced, before ``stdout`` (a history read from
    the ledger as it is written out): an error while producing them ends the output there,
    with the usual one line on stderr and exit code."""


Handler: TypeAlias = Callable[[argparse.Namespace], Outcome]


class UsageError(FalbudgetError, ValueError):
    """The command line or an --input file is wrong; ``app.main`` prints it as one line, exit 2."""


def require_free_port(host: str, port: int) -> None:
    """UsageError (exit 2, one line) when ``host:port`` cannot be listened on (another server
    holds it, or the address is not this machine's), before a server starts: uvicorn would
    exit 3 with a log line. Binds as uvicorn does (SO_REUSEADDR) and lets go at once; port 0
    (any free port) is always available."""
    import socket

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        raise UsageError(
            f"--host={host!r} is not allowed: not an address to listen on ({exc})"
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise UsageError(
                f"--port={port} on {host} is not available: {exc.strerror or exc}"
                " (another server listens there, or the address is not this machine's)"
            ) from None


def add_guard_options(parser: argparse.ArgumentParser) -> None:
    """--config and --ledger: where the caps and the ledger come from."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="guard configuration (ledger, caps); default: FALBUDGET_CONFIG",
    )
    parser.add_argument(
        "--ledger",
        metavar="URL",
        help="ledger URL, over the configuration's (default: FALBUDGET_LEDGER, else the"
        " SQLite file in the user data directory)",
    )


def add_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="table (default) for people, json for scripts: stdout then holds only JSON",
    )


def add_pricing_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pricing",
        metavar="PATH",
        action="append",
        help="price table to use instead of the default (FALBUDGET_PRICING, else the packaged"
        " one); repeat it to layer tables: the first that prices an endpoint wins",
    )


def table_for(path: str | list[str] | None) -> PriceTable:
    """The price table at ``path`` (several: layered, the first that prices an endpoint wins),
    or the default one (FALBUDGET_PRICING, else packaged).

    Loading imports yaml and pydantic, so it happens here, only in commands that need a table.
    """
    from falbudget.pricing.loader import default_table, layered_table, table_path_from_env

    if isinstance(path, list):
        return layered_table(path)
    return default_table(table_path_from_env() if path is None else path)


def parse_amount(text: str) -> Decimal:
    """An argparse ``type=`` for money: a finite, non-negative decimal such as 1.20 or $5."""
    from falbudget.money import to_decimal

    try:
        amount = to_decimal(text, what="AMOUNT")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if amount < 0:
        raise argparse.ArgumentTypeError(f"AMOUNT={text!r} is not allowed: it must not be negative")
    return amount


def parse_when(text: str | None, option: str, tz: dt.tzinfo = dt.UTC) -> float | None:
    """An ISO date or time given to ``option`` (--since, --until, --now) as POSIX seconds; a
    date or time without an offset is read in ``tz``. None stays None."""
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{option}={text!r} is not allowed: an ISO date or time such as 2026-11-24"
            " or 2026-11-24T13:00+01:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.timestamp()


def fixed_now() -> float | None:
    """``FALBUDGET_NOW`` as POSIX seconds (no offset means UTC), or None when it is not set."""
    text = os.environ.get(NOW_ENV, "").strip()
    return parse_when(text, NOW_ENV) if text else None
