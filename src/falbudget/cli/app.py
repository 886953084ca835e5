"""The falbudget command line: the parser, the list of command modules and the error handling.

To add a command group, write a module with ``register(subparsers)`` (see ``common``) and add its
``register`` to ``REGISTRARS``. Handlers return an ``Outcome``; ``main`` prints it and maps errors
to exit codes: a FalbudgetError or OSError is one line on stderr and exit 2, and any other
exception (a bug) one line and exit 70; never a traceback unless ``FALBUDGET_DEBUG=1`` asks.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence

from falbudget import clock
from falbudget.cli.common import (
    DEBUG_ENV,
    EXIT_BROKEN_PIPE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PROG,
    Outcome,
    Parser,
    ParserError,
    Subparsers,
    UsageError,
    fixed_now,
)
from falbudget.errors import FalbudgetError

COMMANDS: dict[str, str] = {
    "quote": "quote_cmd",
    "endpoints": "endpoints_cmd",
    "pricing": "pricing_cmd",
    "plan": "plan_cmd",
    "budget": "budget_cmd",
    "report": "report_cmd",
    "reconcile": "reconcile_cmd",
    "ledger": "ledger_cmd",
    "proxy": "proxy_cmd",
    "keys": "keys_cmd",
    "serve": "serve_cmd",
}
"""Each command and the module of ``falbudget.cli`` whose ``register`` adds it, in the order
``--help`` lists them. A run of one command imports that command's module alone (a quote does
not load the proxy, the planner or the ledger commands: docs/scale.md, the CLI's start)."""

DESCRIPTION = "Know what a fal.ai request costs before you send it."
EPILOG = """\
examples:
  falbudget quote fal-ai/magi/image-to-video num_frames=144 resolution=480p
  falbudget endpoints
  falbudget pricing validate pricing.yaml

environment: FALBUDGET_NOW=2026-11-24T12:00Z makes every command take that moment as now
exit codes: 0 ok; 1 a check found something (--fail-above, a price rise, a discrepancy);
  2 bad input or usage; 70 an internal error, a bug (FALBUDGET_DEBUG=1 shows its traceback);
  130 interrupted; 141 stdout closed early
docs: docs/cli.md"""


def build_parser(only: str | None = None) -> Parser:
    """The parser of every command, or of command ``only`` alone (one of COMMANDS)."""
    import importlib

    from falbudget import __version__

    parser = Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        if only is None or name == only:
            register: Callable[[Subparsers], None] = importlib.import_module(
                f"falbudget.cli.{module}"
            ).register
            register(subparsers)
    commands = ", ".join(COMMANDS)

    def no_command(args: argparse.Namespace) -> Outcome:
        raise UsageError(f"a command is required: {commands} (see {PROG} --help)")

    parser.set_defaults(func=no_command)
    return parser


def parse_args(parser: Parser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``. A command that sets ``extra_positionals=DEST`` lets positional tokens come
    after its options too (``quote EP a=1 --format json b=2``): they are appended to DEST."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        dest = getattr(args, "extra_positionals", None)
        if dest is None or any(token.startswith("-") and token != "-" for token in extras):
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        getattr(args, dest).extend(extras)
    return args


def error_exit_code(exc: FalbudgetError) -> int:
    """The exit code for an error a command raised on purpose: today always 2 (bad input)."""
    return EXIT_USAGE


def one_line(text: str) -> str:
    return " ".join(text.split())


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _say(text: str) -> None:
    # a control character from the user's input (a NUL in a path) is shown escaped, not sent
    line = _CONTROL.sub(lambda m: repr(m.group())[1:-1], one_line(text))
    sys.stderr.write(_encodable(f"{PROG}: {line}\n", sys.stderr, "backslashreplace"))
    sys.stderr.flush()


def _encodable(text: str, stream: object, errors: str) -> str:
    """``text`` as ``stream``'s encoding can write it: a character it has no code for (a chart's
    block under cp1252, an emoji in a tag) is replaced rather than raising UnicodeEncodeError."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return text.encode(encoding, errors).decode(encoding)
    except LookupError:  # pragma: no cover - a stream with an encoding Python does not know
        return text
    return text


def _os_message(exc: OSError) -> str:
    if exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return exc.strerror or str(exc)


def _run(argv: Sequence[str] | None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(words[0] if words and words[0] in COMMANDS else None)
    try:
        args = parse_args(parser, argv)
    except ParserError as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    except SystemExit as exc:  # --help and --version print and exit 0
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    try:
        with clock.fixed(fixed_now()):
            outcome: Outcome = args.func(args)
            if outcome.stream is not None:
                _write_lines(outcome.stream)
    except FalbudgetError as exc:
        _say(f"error: {exc}")
        return error_exit_code(exc)
    except BrokenPipeError:
        raise
    except OSError as exc:
        _say(f"error: {_os_message(exc)}")
        return EXIT_USAGE
    _write_stdout(outcome.stdout)
    if outcome.message:
        _say(outcome.message)
    return outcome.code


def _write_stdout(text: str) -> None:
    """``text`` and a newline, line by line: one huge write() to a pipe whose reader has gone
    can end without EPIPE on some systems, so the broken pipe would go unnoticed."""
    if text:
        write = sys.stdout.write
        for line in _encodable(text, sys.stdout, "replace").split("\n"):
            write(line)
            write("\n")
    sys.stdout.flush()


def _write_lines(lines: Iterable[str]) -> None:
    """Each line and a newline as it is produced: the first is flushed at once, so a reader
    sees it before the rest is read; the others go through stdout's buffer (memory does not
    grow with the output)."""
    write = sys.stdout.write
    first = True
    for line in lines:
        write(_encodable(line, sys.stdout, "replace"))
        write("\n")
        if first:
            sys.stdout.flush()
            first = False


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush is quiet."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _internal_error(exc: BaseException) -> int:
    """A bug in falbudget: one line on stderr (exit 70); with FALBUDGET_DEBUG=1 the traceback
    first. The user gets the exception's type and text, and how to see and report the rest."""
    if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
        traceback.print_exception(exc, file=sys.stderr)
        how = "report it with the traceback above"
    else:
        how = f"set {DEBUG_ENV}=1 to see the traceback, and report it"
    detail = one_line(str(exc))
    if len(detail) > 200:
        detail = detail[:197] + "..."
    said = f": {detail}" if detail else ""
    _say(f"internal error (a bug in falbudget): {type(exc).__name__}{said}; {how}")
    return EXIT_INTERNAL


def main(argv: Sequence[str] | None = None) -> int:
    """Run the falbudget command line with ``argv`` (default: ``sys.argv[1:]``); the exit code.

    0 ok; 1 a check found something (a total above --fail-above); 2 bad input or usage, with one
    line on stderr; 70 an internal error (a bug in falbudget), one line on stderr and, with
    ``FALBUDGET_DEBUG=1``, its traceback; 130 interrupted; 141 stdout closed early (``| head``),
    quietly.
    """
    try:
        return _run(argv)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        return _internal_error(exc)
