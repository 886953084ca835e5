"""`falbudget serve`: the web dashboard of a ledger (docs/dashboard.md)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from falbudget.cli.common import (
    Outcome,
    Subparsers,
    UsageError,
    add_guard_options,
    require_free_port,
)
from falbudget.errors import ConfigurationError, install_hint

if TYPE_CHECKING:  # pragma: no cover
    from falbudget.dashboard.config import DashboardSettings
    from falbudget.guard.core import Guard

DESCRIPTION = """\
Serve a web dashboard of the ledger: every cap with its gauge, spend over time against the caps
with the forecast, holds in flight, overruns, reconciliation, proxy keys; and the same figures
as JSON under /api/v1 (OpenAPI document at /api/v1/openapi.json). Read-only unless an admin
token is set. Bound to 127.0.0.1 by default: any other address needs a token."""

EPILOG = """\
examples:
  falbudget serve --config falbudget.yaml            (then open http://127.0.0.1:8788/)
  FALBUDGET_DASHBOARD_TOKEN=... falbudget serve --config falbudget.yaml --host 0.0.0.0

environment: FALBUDGET_DASHBOARD_TOKEN (every request), FALBUDGET_DASHBOARD_ADMIN_TOKEN (write
actions); the configuration's dashboard: section may name other variables. docs/dashboard.md
exit codes: 0 stopped (Ctrl-C or SIGTERM), 2 bad configuration or options"""


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="a web dashboard of the ledger (caps, spend, holds, keys) and its JSON API",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_guard_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", default="8788", help="port to listen on (8788)")
    parser.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> Outcome:
    from falbudget.cli.proxy_cmd import _number
    from falbudget.proxy.config import is_loopback

    port = _number("--port", args.port, 0, 65535)
    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise ConfigurationError(
            f"falbudget serve needs its extra: {install_hint('serve')}"
        ) from None
    settings, build_guard = load(args.config, args.ledger)
    if settings.token is None and not is_loopback(args.host):
        raise UsageError(
            f"--host={args.host!r} is not allowed without a token: set FALBUDGET_DASHBOARD_TOKEN"
            " (or the variable dashboard.token_env names), or listen on 127.0.0.1"
        )
    require_free_port(args.host, port)
    guard = build_guard()
    if guard.ledger.__class__.__name__ == "MemoryLedger":
        guard.close()
        raise UsageError(
            "ledger memory:// is not allowed for falbudget serve: a memory ledger lives and dies"
            " with one process, so the dashboard would show nothing; name the ledger the guard"
            " writes (sqlite:///... or postgresql://...)"
        )
    from falbudget.dashboard.app import create_dashboard

    app = create_dashboard(guard, settings, metrics=True)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    logger = logging.getLogger("falbudget")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        uvicorn.run(
            app,
            host=args.host,
            port=port,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            log_level="info",
        )
    finally:
        guard.close()
    return Outcome()


def load(
    config: str | None, ledger: str | None = None
) -> tuple[DashboardSettings, Callable[[], Guard]]:
    """The dashboard settings of configuration file ``config`` (or FALBUDGET_CONFIG; none: the
    defaults and the environment's tokens), and how to open its guard (no configuration: the
    default ledger, no caps). The ledger is opened read-only unless an admin token is set (the
    write actions write); even then it is first opened read-only, so that a dashboard never
    creates a ledger (a mistyped path) nor upgrades an old one (LedgerNotFound, LedgerError)."""
    from falbudget.dashboard.config import parse_section
    from falbudget.guard.config import config_path, load_config
    from falbudget.guard.core import Guard
    from falbudget.ledger import default_ledger_url, open_ledger

    path = config_path(config)
    if path is None:
        settings = parse_section(None, "<no configuration>", os.getcwd())
        url = ledger or default_ledger_url()

        def build(read_only: bool) -> Guard:
            return Guard(open_ledger(url, read_only=read_only))
    else:
        loaded = load_config(path)
        settings = parse_section(
            loaded.dashboard, loaded.source, os.path.dirname(os.path.abspath(loaded.source))
        )
        overrides = {"ledger": ledger} if ledger else {}

        def build(read_only: bool) -> Guard:
            return loaded.build_guard(read_only=read_only, **overrides)

    def build_guard() -> Guard:
        guard = build(True)
        if settings.admin_token is None:
            return guard
        guard.close()
        return build(False)

    return settings, build_guard
