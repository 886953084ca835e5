"""Ledger faults fail closed in bounded time (issue 9, item 6), on the real PostgreSQL server.

The network faults go through a local proxy (tests/flakyproxy.py) that accepts the ledger's
bytes and stops forwarding them: a black-holed network without root. The tests set a small
bound in the URL (``connect_timeout=2&statement_timeout=1s``: 3 s) and assert that each call
returns with LedgerUnavailable; how long it took is not asserted (a thread that has not
returned after a minute is a hang, and fails the test).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest

from falbudget import Cap, Guard
from falbudget.errors import ConfigurationError, LedgerUnavailable
from falbudget.ledger import Admission, BucketCharge, BucketTotals, Hold, Ledger
from flakyproxy import FlakyProxy
from pgutil import (
    _drop_postgres_schemas,  # noqa: F401 - autouse: drops this module's schemas after each test
    admin_connection,
    postgres_test_url,
    schema_of,
    server_url,
)

pytestmark = pytest.mark.postgres

ENDPOINT = "fal-ai/magi/image-to-video"
ARGS = {"prompt": "a fox", "image_url": "https://example.com/fox.png"}  # $0.80 at the defaults
T0 = 1_750_000_000.0
GLOBAL = "global|2025-06"
HANG = 60.0
"""How long a test waits for a call to return before it calls it a hang (the bound is 3 s)."""


def reserve(ledger: Ledger, hold_id: str, amount: int = 100_000, **extra: Any) -> Admission:
    return ledger.reserve(
        hold_id=hold_id,
        endpoint=ENDPOINT,
        amount=amount,
        charges=[BucketCharge(GLOBAL, 10_000_000)],
        now=T0,
        expires_at=T0 + 600,
        **extra,
    )


def admitted(result: Admission) -> Hold:
    assert result.admitted, result
    assert result.hold is not None
    return result.hold


def outcome_of(call: Callable[[], object]) -> Callable[[], object]:
    """Run ``call`` in a thread; the returned function joins it (up to HANG) and gives its
    result or exception, or fails the test when it is still running."""
    box: list[object] = []

    def run() -> None:
        try:
            box.append(call())
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join() -> object:
        thread.join(timeout=HANG)
        if thread.is_alive():
            pytest.fail("the call hung: it had not returned after a minute")
        return box[0]

    return join


@pytest.fixture
def proxy() -> Iterator[FlakyProxy]:
    from psycopg.conninfo import conninfo_to_dict

    postgres_test_url()  # skips when the server does not answer
    params = conninfo_to_dict(server_url())
    host = str(params.get("host") or "127.0.0.1")
    if host.startswith("/"):
        pytest.skip("the test server is reached through a Unix socket, not TCP")
    with FlakyProxy(host, int(params.get("port") or 5432)) as running:
        yield running


def proxied_url(proxy: FlakyProxy, query: str) -> str:
    """A fresh schema on the test server, reached through ``proxy``, with ``query`` added."""
    from psycopg.conninfo import conninfo_to_dict

    schema = schema_of(postgres_test_url())
    params = conninfo_to_dict(server_url())
    user = quote(str(params.get("user") or "postgres"), safe="")
    extra = f"&password={quote(str(params['password']), safe='')}" if "password" in params else ""
    dbname = quote(str(params.get("dbname") or "postgres"), safe="")
    return f"postgresql://{user}@127.0.0.1:{proxy.port}/{dbname}?schema={schema}{extra}&{query}"


BOUND = "connect_timeout=2&statement_timeout=1s"


# -- the bound ------------------------------------------------------------------------------------
def test_a_black_holed_network_fails_every_caller_closed_within_the_bound(
    proxy: FlakyProxy,
) -> None:
    """The partition starts with the pool's connection open. Three callers at once (the ledger,
    the guard and the guard's async face): each returns with LedgerUnavailable, the ones that
    wait for a pooled connection included; so does a caller that comes later and has to
    connect anew. Nothing reached the server; once the network heals, the ledger works."""
    from falbudget.ledger.postgres import PostgresLedger

    ledger = PostgresLedger(proxied_url(proxy, BOUND))
    assert ledger.call_timeout_s == 3.0  # connect_timeout + statement_timeout
    guard = Guard(ledger, [Cap("10.00")])
    try:
        admitted(reserve(ledger, "before"))
        sent: list[str] = []

        def through_guard() -> object:
            with guard.reserve(ENDPOINT, ARGS):
                sent.append("sync")
            return "sent"

        async def through_guard_async() -> object:
            async with guard.areserve(ENDPOINT, ARGS):
                sent.append("async")
            return "sent"

        proxy.blackhole()
        waits = [
            outcome_of(lambda: reserve(ledger, "lost")),
            outcome_of(through_guard),
            outcome_of(lambda: asyncio.run(through_guard_async())),
        ]
        results = [wait() for wait in waits]
        assert all(isinstance(r, LedgerUnavailable) for r in results), results
        assert sent == []
        later = outcome_of(lambda: ledger.totals([GLOBAL]))()
        assert isinstance(later, LedgerUnavailable), later
        assert "3 s" in str(results[0]) + str(later)

        proxy.heal()
        admitted(reserve(ledger, "after"))
        assert {h.id for h in ledger.holds()} == {"before", "after"}
        assert ledger.totals([GLOBAL]) == [BucketTotals(GLOBAL, 0, 200_000)]
    finally:
        guard.close()


def test_a_server_that_accepts_and_never_answers_a_new_connection_is_unavailable(
    proxy: FlakyProxy,
) -> None:
    """The partition starts before the first call: connecting itself never completes."""
    from falbudget.ledger.postgres import PostgresLedger

    proxy.blackhole()
    ledger = PostgresLedger(proxied_url(proxy, BOUND))
    try:
        result = outcome_of(lambda: reserve(ledger, "h"))()
        assert isinstance(result, LedgerUnavailable), result
        assert "cannot connect" in str(result)
        assert proxy.accepted >= 1
    finally:
        ledger.close()


def test_statement_timeout_is_set_on_the_server(proxy: FlakyProxy) -> None:
    """A statement that waits for another worker's row lock longer than statement_timeout (and
    shorter than lock_timeout) is cancelled by the server: LedgerUnavailable, nothing held."""
    from psycopg import sql

    from falbudget.ledger.postgres import PostgresLedger

    url = proxied_url(proxy, "statement_timeout=300ms&lock_timeout=20s&connect_timeout=5")
    ledger = PostgresLedger(url)
    try:
        admitted(reserve(ledger, "before"))
        with admin_connection() as blocker:
            blocker.execute("BEGIN")
            blocker.execute(
                sql.SQL("SELECT * FROM {}.buckets FOR UPDATE").format(
                    sql.Identifier(schema_of(url))
                )
            )
            result = outcome_of(lambda: reserve(ledger, "late"))()
            blocker.execute("ROLLBACK")
        assert isinstance(result, LedgerUnavailable), result
        assert "statement_timeout (0.3 s)" in str(result)
        assert ledger.totals([GLOBAL]) == [BucketTotals(GLOBAL, 0, 100_000)]
    finally:
        ledger.close()


def test_pooled_connections_carry_the_timeouts_and_keepalives(proxy: FlakyProxy) -> None:
    from falbudget.ledger.postgres import PostgresLedger

    def settings(ledger: PostgresLedger) -> dict[str, str]:
        ledger.totals([GLOBAL])
        pool, conn = ledger._getconn()
        try:
            shown = {
                name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
                for name in ("statement_timeout", "lock_timeout")
            }
            libpq = conn.info.get_parameters()
            for name in ("connect_timeout", "keepalives", "keepalives_idle", "tcp_user_timeout"):
                shown[name] = libpq.get(name, "")
            return shown
        finally:
            ledger._putconn(pool, conn)

    defaults = PostgresLedger(proxied_url(proxy, "application_name=fbtest"))
    try:
        assert defaults.call_timeout_s == 10.0
        assert settings(defaults) == {
            "statement_timeout": "5s",
            "lock_timeout": "4s",
            "connect_timeout": "5",
            "keepalives": "1",
            "keepalives_idle": "5",
            "tcp_user_timeout": "10000",
        }
    finally:
        defaults.close()
    query = (
        "statement_timeout=2500ms&lock_timeout=1s&connect_timeout=3"
        "&keepalives_idle=7&tcp_user_timeout=4000"
    )
    custom = PostgresLedger(proxied_url(proxy, query))
    try:
        assert custom.call_timeout_s == 5.5
        assert settings(custom) == {
            "statement_timeout": "2500ms",
            "lock_timeout": "1s",
            "connect_timeout": "3",
            "keepalives": "1",
            "keepalives_idle": "7",
            "tcp_user_timeout": "4000",
        }
    finally:
        custom.close()


def one_connection(proxy: FlakyProxy) -> Any:
    """A ledger through ``proxy`` with one pooled connection: drop_replies() then catches the
    one the next call uses, and every later connection is a new one, which gets through."""
    from falbudget.ledger.postgres import PostgresLedger

    return PostgresLedger(proxied_url(proxy, BOUND), pool_min_size=1, pool_max_size=1)


# -- the ambiguous outcome: the request reached the server, its answer never came back ---------
def test_what_the_server_does_with_a_request_whose_answer_is_lost(proxy: FlakyProxy) -> None:
    """What really happens: the server commits what it received (a reservation stays held, a
    settle ends settled); the caller only knows that it got no answer."""

    ledger = one_connection(proxy)
    try:
        admitted(reserve(ledger, "settled-unheard"))
        proxy.drop_replies()
        lost = outcome_of(lambda: reserve(ledger, "held-unheard"))()
        assert isinstance(lost, LedgerUnavailable), lost
        assert "no answer from the PostgreSQL server within 3 s" in str(lost)
        assert "what the server did with the request is not known" in str(lost)
        assert ledger.get_hold("held-unheard").state == "held"  # committed all the same

        proxy.drop_replies()
        cut = outcome_of(lambda: ledger.settle("settled-unheard", None, now=T0 + 1))()
        assert isinstance(cut, LedgerUnavailable), cut
        assert ledger.get_hold("settled-unheard").state == "settled"
        assert ledger.totals([GLOBAL]) == [BucketTotals(GLOBAL, 100_000, 100_000)]
    finally:
        ledger.close()


@pytest.mark.parametrize("face", ["sync", "async"])
def test_the_guard_releases_a_reservation_committed_whose_answer_is_lost(
    proxy: FlakyProxy, face: str
) -> None:

    ledger = one_connection(proxy)
    guard = Guard(ledger, [Cap("10.00")])
    try:
        ledger.totals(["global|total"])  # the pool's connection is open
        proxy.drop_replies()
        if face == "sync":
            result = outcome_of(lambda: guard.reserve(ENDPOINT, ARGS).acquire())()
        else:
            result = outcome_of(lambda: asyncio.run(guard.areserve(ENDPOINT, ARGS).aacquire()))()
        assert isinstance(result, LedgerUnavailable), result
        assert "no answer from the PostgreSQL server within 3 s" in str(result)
        assert "had been recorded as hold" in str(result)
        assert "has been released: nothing is held" in str(result)
        (hold,) = ledger.holds()
        assert hold.state == "released"
        assert ledger.totals(["global|total"]) == [BucketTotals("global|total", 0, 0)]
    finally:
        guard.close()


@pytest.mark.parametrize("face", ["sync", "async"])
def test_the_guard_settles_once_when_the_answer_to_its_settle_is_lost(
    proxy: FlakyProxy, face: str
) -> None:

    ledger = one_connection(proxy)
    guard = Guard(ledger, [Cap("10.00")])
    try:
        hold = guard.reserve(ENDPOINT, ARGS).acquire()
        proxy.drop_replies()
        if face == "sync":
            done = outcome_of(lambda: hold.settle())()
        else:
            done = outcome_of(lambda: asyncio.run(hold.asettle()))()
        assert done is None, done  # the second try found it settled: no error
        assert hold.state == "settled"
        assert ledger.totals(["global|total"]) == [BucketTotals("global|total", 800_000, 0)]
    finally:
        guard.close()


# -- the URL parameters (no server needed) --------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "bound"),
    [
        ("", 10.0),
        ("statement_timeout=1s&connect_timeout=2", 3.0),
        ("statement_timeout=500ms", 5.5),
        ("statement_timeout=1min&connect_timeout=10", 70.0),
        ("stat%65ment_timeout=2s&connect_timeout=1", 4.0),  # libpq waits at least 2 s
        ("lock_timeout=30s", 10.0),  # the lock wait happens within a statement
    ],
)
def test_the_bound_is_connect_timeout_plus_statement_timeout(query: str, bound: float) -> None:
    pytest.importorskip("psycopg")
    from falbudget.ledger.postgres import PostgresLedger

    ledger = PostgresLedger(f"postgresql://u@127.0.0.1:1/db?{query}")
    assert ledger.call_timeout_s == bound
    ledger.close()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("statement_timeout=5", "statement_timeout='5' is not allowed: a duration with its unit"),
        ("statement_timeout=0s", "statement_timeout='0s' is not allowed"),
        ("statement_timeout=-1s", "statement_timeout='-1s' is not allowed"),
        ("statement_timeout=2h", "statement_timeout='2h' is not allowed"),
        ("statement_timeout=61min", "statement_timeout='61min' is not allowed: a duration"),
        ("lock_timeout=soon", "lock_timeout='soon' is not allowed: a duration with its unit"),
        ("lock_timeout=1s&lock_timeout=2s", "names lock_timeout more than once"),
        ("connect_timeout=0", "connect_timeout='0' is not allowed: whole seconds from 1 to 3600"),
        ("connect_timeout=-5", "connect_timeout='-5' is not allowed"),
        ("connect_timeout=1.5", "connect_timeout='1.5' is not allowed"),
    ],
)
def test_bad_timeouts_in_the_url_are_configuration_errors(query: str, expected: str) -> None:
    pytest.importorskip("psycopg")
    from falbudget.ledger.postgres import PostgresLedger

    with pytest.raises(ConfigurationError, match=r"is not allowed|more than once") as info:
        PostgresLedger(f"postgresql://u:s3cret@127.0.0.1:1/db?{query}")
    assert expected in str(info.value)
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    "argument",
    [{"statement_timeout_s": 0}, {"connect_timeout_s": -1}, {"lock_timeout_s": 3601}],
)
def test_bad_timeout_arguments_are_configuration_errors(argument: dict[str, float]) -> None:
    pytest.importorskip("psycopg")
    from falbudget.ledger.postgres import PostgresLedger

    ((name, value),) = argument.items()
    with pytest.raises(ConfigurationError) as info:
        PostgresLedger("postgresql://u@127.0.0.1:1/db", **argument)  # type: ignore[arg-type]
    assert str(info.value) == f"{name}={value!r} is not allowed: seconds above 0, at most 3600"
