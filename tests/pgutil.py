"""The PostgreSQL server the tests use, and a fresh schema for each test.

The server is FALBUDGET_TEST_POSTGRES_URL, else ``postgresql://postgres@127.0.0.1:5432/test``.
When it does not answer, a test that needs it is skipped with the reason, or fails when CI=true.

``postgres_test_url()`` returns that URL with ``?schema=fb_test_...``: a schema of its own, which
nothing creates until a ledger is opened on it. Every schema handed out is dropped (DROP SCHEMA
... CASCADE) when the test ends: exactly then when this module is loaded as a pytest plugin
(``pytest_plugins = ["pgutil"]``, which runs the autouse fixture below), else as soon as the next
test asks for a schema and, for the last test, when the test process exits. Schemas left behind
by a killed run (named with their creation time by the server's clock) are dropped after a day.
"""

from __future__ import annotations

import atexit
import itertools
import os
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
URL_ENV = "FALBUDGET_TEST_POSTGRES_URL"
PREFIX = "fb_test_"
STALE_AFTER_S = 24 * 3600

_counter = itertools.count()
_answer: tuple[bool, str] | None = None
"""Whether the server answered, and why not; asked once per process."""
_server_offset = 0.0
"""The server's clock minus this process's (set with ``_answer``): schemas are named and judged
stale by the server's clock, which libfaketime does not move, so a run years ahead (.ci/faketime)
never takes another run's schemas for old ones, nor leaves its own for years."""
_pending: dict[str, str | None] = {}
"""Schemas handed out and not dropped yet -> the test (PYTEST_CURRENT_TEST) that asked."""


def server_url() -> str:
    """The server's URL, without a schema."""
    return os.environ.get(URL_ENV, "").strip() or DEFAULT_URL


def _current_test() -> str | None:
    current = os.environ.get("PYTEST_CURRENT_TEST")
    return current.rsplit(" (", 1)[0] if current else None


def require_server() -> str:
    """The server's URL; skips the test (fails it when CI=true) when the server does not answer."""
    global _answer
    if _answer is None:
        _answer = _probe(server_url())
        if _answer[0]:
            _sweep_stale()
    ok, why = _answer
    if not ok:
        reason = f"PostgreSQL not reachable at {_redact(server_url())} ({why}); set {URL_ENV}"
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    return server_url()


def postgres_test_url() -> str:
    """The URL of a fresh schema for this test (dropped when the test is over)."""
    url = require_server()
    _drop_finished()
    created = int(time.time() + _server_offset)
    schema = f"{PREFIX}{created}_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    _pending[schema] = _current_test()
    return with_schema(url, schema)


def with_schema(url: str, schema: str) -> str:
    """``url`` with ``schema=`` set (appended to its query)."""
    return url + ("&" if "?" in url else "?") + "schema=" + schema


def schema_of(url: str) -> str:
    match = re.search(r"[?&]schema=([^&]+)", url)
    assert match, url
    return match.group(1)


def admin_connection() -> Any:
    """An autocommit psycopg connection to the test server (no schema)."""
    import psycopg

    return psycopg.connect(server_url(), autocommit=True, connect_timeout=5)


def drop_schema(schema: str) -> None:
    """DROP SCHEMA ... CASCADE, without waiting long for locks; a failure leaves it to exit."""
    import psycopg
    from psycopg import sql

    try:
        with admin_connection() as conn:
            conn.execute("SET lock_timeout = '5s'")
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    except psycopg.Error:
        return
    _pending.pop(schema, None)


def drop_all_pending() -> None:
    for schema in list(_pending):
        drop_schema(schema)


def _drop_finished() -> None:
    """Drop the schemas of tests that are over (tests of one process run one at a time)."""
    current = _current_test()
    for schema, owner in list(_pending.items()):
        if owner != current:
            drop_schema(schema)


def _probe(url: str) -> tuple[bool, str]:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        return False, f"psycopg is not installed: {exc}"
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return False, " ".join(str(exc).split())[:200].replace(_password(url) or "\0", "***")
    return True, ""


def _sweep_stale() -> None:
    """Drop fb_test_<epoch>_... schemas older than a day by the server's clock (from runs that
    were killed), and learn that clock."""
    import psycopg

    global _server_offset
    try:
        with admin_connection() as conn:
            (server_now,) = conn.execute(
                "SELECT extract(epoch FROM clock_timestamp())::float8"
            ).fetchone()
            _server_offset = server_now - time.time()
            names = [
                row[0]
                for row in conn.execute(
                    "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (PREFIX + "%",)
                )
            ]
    except psycopg.Error:
        return
    for name in names:
        match = re.match(rf"{PREFIX}(\d+)_", name)
        if match and int(match.group(1)) < server_now - STALE_AFTER_S:
            drop_schema(name)


def _password(url: str) -> str | None:
    match = re.match(r"[^:]+://[^:/@]+:([^@/]*)@", url)
    return match.group(1) if match else None


def _redact(url: str) -> str:
    secret = _password(url)
    return url.replace(f":{secret}@", ":***@") if secret else url


@pytest.fixture(autouse=True)
def _drop_postgres_schemas() -> Iterator[None]:
    """As a plugin: drop the schemas a test asked for as soon as it is over."""
    yield
    drop_all_pending()


atexit.register(drop_all_pending)


# -- run in spawned child processes (they import this module) ----------------------------------
class _RetryCounter:
    """Counts the ledger's "retrying after <sqlstate>" debug lines (deadlocks would show here)."""

    def __init__(self) -> None:
        import logging

        self.states: list[str] = []
        counter = self

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                message = record.getMessage()
                if "retrying after" in message:
                    counter.states.append(message.rsplit(" ", 1)[-1])

        logger = logging.getLogger("falbudget.ledger.postgres")
        logger.setLevel(logging.DEBUG)
        logger.addHandler(Handler())


def admit_and_settle(
    url: str,
    worker: int,
    attempts: int,
    orders: list[list[Any]],
    amount: int,
    now: float,
    barrier: Any,
    results: Any,
) -> None:
    """Open the ledger (its own pool and connection), wait for every worker, then try
    ``attempts`` reservations, the charges of attempt i being ``orders[i % len(orders)]``, and
    settle each admitted one at once. Puts (worker, admitted [(id, buckets)], refusals
    [(refused_by, settled, held)], retried sqlstates, error) on ``results``."""
    from falbudget.ledger import open_ledger

    retries = _RetryCounter()
    admitted: list[tuple[str, tuple[str, ...]]] = []
    refused: list[tuple[str | None, int, int]] = []
    try:
        ledger = open_ledger(url)
        barrier.wait(timeout=60)
        for attempt in range(attempts):
            result = ledger.reserve(
                hold_id=f"w{worker}-{attempt}",
                endpoint="fal-ai/magi/image-to-video",
                amount=amount,
                charges=orders[attempt % len(orders)],
                now=now,
                expires_at=now + 3600,
            )
            if result.admitted:
                assert result.hold is not None
                admitted.append((result.hold.id, result.hold.buckets))
                ledger.settle(result.hold.id, None, now=now + 1)
            else:
                assert result.totals is not None
                refused.append((result.refused_by, result.totals.settled, result.totals.held))
        ledger.close()
        results.put((worker, admitted, refused, retries.states, None))
    except BaseException as exc:  # report it to the parent rather than die silently
        results.put((worker, admitted, refused, retries.states, repr(exc)))


def open_at_once(url: str, worker: int, barrier: Any, results: Any) -> None:
    """Wait for every worker, then open the ledger on a schema nobody has created yet and
    reserve once; puts (worker, error) on ``results``."""
    from falbudget.ledger import BucketCharge, open_ledger

    try:
        barrier.wait(timeout=60)
        ledger = open_ledger(url)
        result = ledger.reserve(
            hold_id=f"first-{worker}",
            endpoint="fal-ai/magi/image-to-video",
            amount=1,
            charges=[BucketCharge("global|all", None)],
            now=1.0,
            expires_at=2.0,
        )
        assert result.admitted, result
        ledger.close()
        results.put((worker, None))
    except BaseException as exc:
        results.put((worker, repr(exc)))
