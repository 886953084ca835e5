"""`falbudget proxy`: serve fal's server-proxy protocol with every spending call budgeted."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from falbudget.cli.common import Outcome, Subparsers, UsageError, require_free_port
from falbudget.errors import ConfigurationError, install_hint

DESCRIPTION = """\
Serve an HTTP endpoint that fal's JavaScript client accepts as its proxyUrl (the protocol of
@fal-ai/server-proxy): each request names its target in x-fal-target-url; only fal's hosts are
reached; the fal key (from FAL_KEY) is added by the proxy. Every call that spends (queue submit,
run, stream) is quoted and held against the caps before it is forwarded: a refusal is HTTP 402.
Configuration: the guard's file (ledger, caps) with a proxy: section; see docs/proxy.md."""

EPILOG = """\
examples:
  FAL_KEY=... falbudget proxy --config falbudget.yaml
  FAL_KEY=... falbudget proxy --config falbudget.yaml --port 8787 --workers 2

exit codes: 0 stopped (Ctrl-C or SIGTERM, in-flight requests finished), 2 bad configuration"""


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "proxy",
        help="a budgeted stand-in for fal's server proxy (@fal-ai/client proxyUrl)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", metavar="PATH", help="configuration file; default: FALBUDGET_CONFIG"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", default="8787", help="port to listen on (8787)")
    parser.add_argument(
        "--workers",
        default="1",
        metavar="N",
        help="worker processes sharing the ledger (1); more than 1 needs SQLite or PostgreSQL",
    )
    parser.set_defaults(func=run_proxy)


def _number(name: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise UsageError(f"{name}={text!r} is not allowed: a whole number from {low} to {high}")
    return value


def run_proxy(args: argparse.Namespace) -> Outcome:
    port = _number("--port", args.port, 0, 65535)
    workers = _number("--workers", args.workers, 1, 64)
    require_free_port(args.host, port)
    try:
        import uvicorn
    except ImportError:
        raise ConfigurationError(
            f"falbudget proxy needs its extra: {install_hint('proxy')}"
        ) from None
    from falbudget.guard.config import config_path
    from falbudget.proxy.app import load

    path = config_path(args.config)
    loaded = load(path)  # checked here: a bad file is exit 2, before serving
    app = loaded.app()  # the JWT key too
    if workers > 1 and loaded.guard.ledger.__class__.__name__ == "MemoryLedger":
        loaded.guard.close()
        raise ConfigurationError(
            f"--workers={workers} needs a ledger the workers share (sqlite:// or postgresql://);"
            " the configuration's ledger is in memory"
        )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    proxy_log = logging.getLogger("falbudget")
    proxy_log.addHandler(handler)
    proxy_log.setLevel(logging.INFO)
    common = {
        "host": args.host,
        "port": port,
        "access_log": False,
        # X-Forwarded-For is read by the proxy itself, from proxy.trusted_proxies only; uvicorn's
        # own reading would trust it from any loopback peer
        "proxy_headers": False,
        "server_header": False,
        "log_level": "info",
        "timeout_graceful_shutdown": 30,
    }
    if workers == 1:
        uvicorn.run(app, **common)
    else:
        loaded.guard.close()
        assert path is not None  # load() raised otherwise
        os.environ["FALBUDGET_CONFIG"] = os.path.abspath(path)
        uvicorn.run(
            "falbudget.proxy.app:app_from_environment",
            factory=True,
            workers=workers,
            **common,
        )
    return Outcome()
