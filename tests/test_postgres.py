"""The PostgreSQL ledger on the real server: schemas, versions, faults and exact concurrency.

The contract suite (test_ledger_contract.py) and the concurrency tests (test_ledger_concurrency.py)
run on this backend too; this file covers what only PostgreSQL has. Each test works in a schema
of its own (pgutil.postgres_test_url), dropped when the test is over.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from falbudget.errors import HoldNotFound, LedgerError, LedgerUnavailable
from falbudget.ledger import Admission, BucketCharge, BucketTotals, Hold, Ledger, open_ledger
from ledger_backends import (
    V2_ADJUSTMENTS,
    V2_ALERTS,
    V2_BUCKETS,
    V2_HOLD_COLUMNS,
    V2_HOLDS,
    check_v2_upgraded,
    v2_hold_links,
)
from pgutil import (
    _drop_postgres_schemas,  # noqa: F401 - autouse: drops this module's schemas after each test
    admin_connection,
    admit_and_settle,
    open_at_once,
    postgres_test_url,
    require_server,
    schema_of,
)

pytestmark = pytest.mark.postgres

ENDPOINT = "fal-ai/magi/image-to-video"
T0 = 1_750_000_000.0
CAP = 10_000_000  # $10.00
PRICE = 800_000  # $0.80
GLOBAL = "global|2025-06"


@pytest.fixture
def url() -> str:
    return postgres_test_url()


@pytest.fixture
def opened() -> Iterator[Callable[[str], Ledger]]:
    """Opens ledgers and closes them at the end of the test."""
    ledgers: list[Ledger] = []

    def open_one(url: str) -> Ledger:
        ledger = open_ledger(url)
        ledgers.append(ledger)
        return ledger

    yield open_one
    for ledger in ledgers:
        ledger.close()


def reserve(
    ledger: Ledger, hold_id: str, amount: int, charges: list[BucketCharge], **extra: Any
) -> Admission:
    return ledger.reserve(
        hold_id=hold_id,
        endpoint=ENDPOINT,
        amount=amount,
        charges=charges,
        now=T0,
        expires_at=T0 + 600,
        **extra,
    )


def admitted(result: Admission) -> Hold:
    assert result.admitted, result
    assert result.hold is not None
    return result.hold


def cap(limit: int | None, key: str = GLOBAL) -> list[BucketCharge]:
    return [BucketCharge(key, limit)]


def tagged(url: str) -> tuple[str, str]:
    """``url`` with an application_name of its own, so a test can find its backends."""
    name = f"fbtest_{uuid.uuid4().hex[:10]}"
    return f"{url}&application_name={name}", name


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def backends(name: str, *, waiting_on_lock: bool = False) -> list[int]:
    query = "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
    if waiting_on_lock:
        query += " AND wait_event_type = 'Lock'"
    with admin_connection() as conn:
        return [int(row[0]) for row in conn.execute(query, (name,))]


def terminate(pids: list[int]) -> None:
    with admin_connection() as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    remaining = set(pids)
    wait_for(lambda: not remaining & set(all_backend_pids()), "the backends to exit")


def all_backend_pids() -> list[int]:
    with admin_connection() as conn:
        return [int(row[0]) for row in conn.execute("SELECT pid FROM pg_stat_activity")]


def meta_version(schema: str) -> str | None:
    from psycopg import sql

    with admin_connection() as conn:
        row = conn.execute(
            sql.SQL("SELECT value FROM {}.meta WHERE key = 'schema_version'").format(
                sql.Identifier(schema)
            )
        ).fetchone()
    return None if row is None else str(row[0])


def run_processes(target: Callable[..., None], argsets: list[tuple[Any, ...]]) -> list[Any]:
    """Run ``target(*args, barrier, results)`` in one spawned process per argset; the reports."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(argsets))
    results = ctx.Queue()
    children = [ctx.Process(target=target, args=(*args, barrier, results)) for args in argsets]
    for child in children:
        child.start()
    try:
        return [results.get(timeout=90) for _ in children]
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():  # pragma: no cover - only when the test is already failing
                child.kill()


# -- URLs and schemas -----------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_both_schemes_open_a_postgres_ledger_lazily(scheme: str) -> None:
    from falbudget.ledger.postgres import PostgresLedger

    ledger = open_ledger(f"{scheme}://budget:s3cret@db.invalid:5432/spend")
    assert isinstance(ledger, PostgresLedger)
    assert isinstance(ledger, Ledger)
    assert ledger.schema == "falbudget"
    assert ledger.url == f"{scheme}://budget:***@db.invalid:5432/spend"
    assert "s3cret" not in repr(ledger)
    ledger.close()  # never connected: nothing to do


@pytest.mark.parametrize(
    "query",
    [
        "schema=Team",
        "schema=1team",
        "schema=pg_team",
        "schema=a-b",
        "schema=",
        "schema=a&schema=b",
        "schema=" + "x" * 64,
    ],
)
def test_a_bad_schema_name_is_a_configuration_error(query: str) -> None:
    from falbudget.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="schema") as info:
        open_ledger(f"postgresql://u:s3cret@localhost/db?{query}")
    assert "s3cret" not in str(info.value)


def test_two_schemas_in_one_database_are_independent_budgets(
    opened: Callable[[str], Ledger],
) -> None:
    team_a, team_b = postgres_test_url(), postgres_test_url()
    assert schema_of(team_a) != schema_of(team_b)
    a, b = opened(team_a), opened(team_b)
    admitted(reserve(a, "h1", 1_000_000, cap(1_000_000)))
    assert reserve(a, "h2", 1, cap(1_000_000)).refused_by == GLOBAL
    admitted(reserve(b, "h1", 1_000_000, cap(1_000_000)))  # the same hold id and bucket key
    assert a.totals([GLOBAL]) == b.totals([GLOBAL]) == [BucketTotals(GLOBAL, 0, 1_000_000)]
    a.settle("h1", 700_000, now=T0 + 1)
    assert b.get_hold("h1").state == "held"
    assert b.totals([GLOBAL]) == [BucketTotals(GLOBAL, 0, 1_000_000)]
    assert opened(team_a).totals([GLOBAL]) == [BucketTotals(GLOBAL, 700_000, 0)]


def test_a_missing_schema_is_created_by_8_processes_starting_at_once(url: str) -> None:
    reports = run_processes(open_at_once, [(url, n) for n in range(8)])
    assert sorted(reports) == [(n, None) for n in range(8)]
    from falbudget.ledger.postgres import latest_version

    assert meta_version(schema_of(url)) == str(latest_version())
    ledger = open_ledger(url)
    assert ledger.totals(["global|all"]) == [BucketTotals("global|all", 0, 8)]
    assert len(ledger.holds()) == 8
    ledger.close()


def _next_for_test(conn: Any, schema: Any) -> None:
    from psycopg import sql

    conn.execute(sql.SQL("ALTER TABLE {}.holds ADD COLUMN note TEXT").format(schema))


def test_an_older_schema_is_refused_until_migrated(
    url: str, monkeypatch: pytest.MonkeyPatch, opened: Callable[[str], Ledger]
) -> None:
    from falbudget.ledger import postgres

    admitted(reserve(opened(url), "kept", 300_000, cap(1_000_000)))  # creates version 7
    monkeypatch.setattr(postgres, "MIGRATIONS", [*postgres.MIGRATIONS, _next_for_test])
    assert postgres.latest_version() == 8
    with pytest.raises(LedgerError, match=r"version 7 .*needs version 8.*falbudget ledger migrate"):
        opened(url).totals([GLOBAL])
    assert meta_version(schema_of(url)) == "7"  # opening never upgrades

    assert postgres.migrate(url) == (7, 8)
    assert meta_version(schema_of(url)) == "8"
    ledger = opened(url)
    assert ledger.totals([GLOBAL]) == [BucketTotals(GLOBAL, 0, 300_000)]
    assert ledger.get_hold("kept").amount == 300_000
    assert postgres.migrate(url) == (8, 8)


def test_a_version_1_schema_is_migrated_to_adjustments_and_keeps_its_holds(
    url: str, monkeypatch: pytest.MonkeyPatch, opened: Callable[[str], Ledger]
) -> None:
    """A schema written by the falbudget before adjustments (version 1) is refused until
    `falbudget ledger migrate` upgrades it; then its holds keep their figures and can be
    reconciled."""
    from psycopg import sql

    from falbudget.cli.app import main
    from falbudget.ledger import postgres

    with monkeypatch.context() as patch:
        patch.setattr(postgres, "MIGRATIONS", postgres.MIGRATIONS[:1])
        assert postgres.migrate(url) == (0, 1)
    schema = sql.Identifier(schema_of(url))
    with admin_connection() as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.holds (id, endpoint, amount, state, buckets, request_id, "
                "created_at, expires_at, updated_at, settled_amount) VALUES ('old', %s, 800000, "
                "'expired', ARRAY[%s], 'req-old', %s, %s, %s, 800000)"
            ).format(schema),
            (ENDPOINT, GLOBAL, T0, T0 + 60, T0 + 61),
        )
        conn.execute(
            sql.SQL("INSERT INTO {}.hold_buckets VALUES ('old', %s, %s)").format(schema),
            (GLOBAL, T0),
        )
        conn.execute(
            sql.SQL("INSERT INTO {}.buckets (key, settled, held) VALUES (%s, 800000, 0)").format(
                schema
            ),
            (GLOBAL,),
        )
    with pytest.raises(LedgerError, match=r"version 1 .*needs version 7.*falbudget ledger migrate"):
        opened(url).get_hold("old")
    assert main(["ledger", "migrate", url]) == 0
    assert meta_version(schema_of(url)) == "7"
    ledger = opened(url)
    old = ledger.get_hold("old")
    assert (old.state, old.settled_amount, old.adjusted_amount) == ("expired", 800_000, None)
    assert ledger.holds_by_request_id(["req-old"]) == [old]
    row = ledger.adjust("old", 550_000, now=T0 + 100, reason="billed", source="test")
    assert row is not None and (row.id, row.delta) == (1, -250_000)  # 550_000 - 800_000
    assert ledger.totals([GLOBAL]) == [BucketTotals(GLOBAL, 550_000, 0)]
    assert ledger.adjustments() == [row]


def test_a_version_2_schema_is_migrated_to_bound_keys_and_loses_nothing(
    url: str, monkeypatch: pytest.MonkeyPatch, opened: Callable[[str], Ledger]
) -> None:
    """Schema 3 drops the UNIQUE constraint on idempotency_key for a partial unique index over
    bound keys: every row of every table keeps every value, and the old keys get no fingerprint
    and the 24 h lifetime."""
    from psycopg import sql
    from psycopg.types.json import Jsonb

    from falbudget.ledger import postgres

    with monkeypatch.context() as patch:
        patch.setattr(postgres, "MIGRATIONS", postgres.MIGRATIONS[:2])
        assert postgres.migrate(url) == (0, 2)
    schema = sql.Identifier(schema_of(url))
    tables = ["holds", "hold_buckets", "buckets", "adjustments", "alerts"]
    with admin_connection() as conn:
        with conn.cursor() as cursor:
            cursor.executemany(
                sql.SQL("INSERT INTO {}.holds ({}) VALUES ({})").format(
                    schema,
                    sql.SQL(", ").join(map(sql.Identifier, V2_HOLD_COLUMNS)),
                    sql.SQL(", ").join(sql.Placeholder() * len(V2_HOLD_COLUMNS)),
                ),
                [(*row[:11], Jsonb(row[11]), *row[12:]) for row in V2_HOLDS],
            )
            cursor.executemany(
                sql.SQL("INSERT INTO {}.hold_buckets VALUES (%s, %s, %s)").format(schema),
                v2_hold_links(),
            )
            cursor.executemany(
                sql.SQL("INSERT INTO {}.buckets VALUES (%s, %s, %s)").format(schema), V2_BUCKETS
            )
            cursor.executemany(
                sql.SQL(
                    "INSERT INTO {}.adjustments OVERRIDING SYSTEM VALUE "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                ).format(schema),
                V2_ADJUSTMENTS,
            )
            cursor.executemany(
                sql.SQL("INSERT INTO {}.alerts VALUES (%s, %s)").format(schema), V2_ALERTS
            )

        def dump() -> dict[str, list[tuple[Any, ...]]]:
            return {
                table: conn.execute(
                    sql.SQL("SELECT * FROM {}.{} ORDER BY 1, 2").format(
                        schema, sql.Identifier(table)
                    )
                ).fetchall()
                for table in tables
            }

        before = dump()
        assert len(before["holds"]) == 6
        with pytest.raises(LedgerError, match=r"version 2 .*needs version 7"):
            opened(url).totals([GLOBAL])
        with monkeypatch.context() as patch:  # to version 3 (versions 4 to 6 follow below)
            patch.setattr(postgres, "MIGRATIONS", postgres.MIGRATIONS[:3])
            assert postgres.migrate(url) == (2, 3)
        after = dump()
        columns = [
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = %s AND table_name = 'holds' ORDER BY ordinal_position",
                (schema_of(url),),
            )
        ]
        indexes = {
            row[0]
            for row in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = 'holds'",
                (schema_of(url),),
            )
        }
    assert columns[-3:] == ["fingerprint", "idempotency_ttl", "key_forgotten_at"]
    for table in tables[1:]:
        assert after[table] == before[table], table
    assert [row[:-3] for row in after["holds"]] == before["holds"]
    key = columns.index("idempotency_key")
    assert [row[-3:] for row in after["holds"]] == [
        (None, 86_400.0 if row[key] else None, None) for row in before["holds"]
    ]
    assert indexes == {
        "holds_pkey",
        "holds_seq_key",
        "holds_open_by_expiry",
        "holds_by_created",
        "holds_by_state_created",
        "holds_by_request_id",
        "holds_by_bound_key",
    }  # holds_idempotency_key_key, the UNIQUE constraint's index, is gone
    # then version 4 adds api_keys, version 5 drops hold_buckets and holds_by_state_created and
    # version 6 adds refusals and version 7 the index of overruns, losing nothing either
    assert postgres.migrate(url) == (3, 7)
    check_v2_upgraded(opened(url))


def test_adjusting_a_hold_whose_bucket_row_was_deleted_by_hand_names_the_bucket(
    url: str, opened: Callable[[str], Ledger]
) -> None:
    from psycopg import sql

    ledger = opened(url)
    charges = [BucketCharge(GLOBAL, CAP), BucketCharge("project=demo|2025-06", None)]
    admitted(reserve(ledger, "h", PRICE, charges))
    ledger.settle("h", None, now=T0 + 1)
    with admin_connection() as conn:
        conn.execute(
            sql.SQL("DELETE FROM {}.buckets WHERE key = 'project=demo|2025-06'").format(
                sql.Identifier(schema_of(url))
            )
        )
    with pytest.raises(LedgerError) as info:
        ledger.adjust("h", 500_000, now=T0 + 2, reason="billed", source="test")
    assert str(info.value).endswith(
        "bucket 'project=demo|2025-06' of hold 'h' is missing from the ledger (deleted by hand?):"
        " the hold cannot be adjusted until the bucket row is restored"
    )
    assert ledger.adjustments() == []
    assert ledger.get_hold("h").adjusted_amount is None
    # the other bucket did not move: 800_000 as settled
    assert ledger.totals([GLOBAL]) == [BucketTotals(GLOBAL, PRICE, 0)]


def test_migrate_creates_a_missing_schema(url: str, opened: Callable[[str], Ledger]) -> None:
    from falbudget.ledger import postgres

    assert postgres.migrate(url) == (0, postgres.latest_version())
    assert opened(url).totals([GLOBAL]) == [BucketTotals(GLOBAL, 0, 0)]


def test_a_newer_schema_is_refused_with_a_clear_error(
    url: str, opened: Callable[[str], Ledger]
) -> None:
    from psycopg import sql

    from falbudget.ledger import postgres

    opened(url).totals([GLOBAL])
    with admin_connection() as conn:
        conn.execute(
            sql.SQL("UPDATE {}.meta SET value = '99' WHERE key = 'schema_version'").format(
                sql.Identifier(schema_of(url))
            )
        )
    for attempt in (lambda: opened(url).totals([GLOBAL]), lambda: postgres.migrate(url)):
        with pytest.raises(LedgerError) as info:
            attempt()
        assert not isinstance(info.value, LedgerUnavailable)
        assert "version 99, newer than this falbudget supports (7)" in str(info.value)
        assert "upgrade falbudget" in str(info.value)
    assert meta_version(schema_of(url)) == "99"


def test_admission_reads_the_index_of_open_holds_not_the_history(
    url: str, opened: Callable[[str], Ledger]
) -> None:
    """20,000 closed holds: the expiry step of a reservation (the prepared statement itself, as
    every pooled connection plans it) still reads only the index of open holds."""
    from psycopg import sql

    from falbudget.ledger.postgres import PostgresLedger

    ledger = opened(url)
    assert isinstance(ledger, PostgresLedger)
    admitted(reserve(ledger, "open", 1, cap(None)))
    schema = sql.Identifier(schema_of(url))
    with admin_connection() as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.holds (id, endpoint, amount, state, buckets, created_at,"
                " expires_at, updated_at, settled_amount)"
                " SELECT 'old' || n, 'e', 1, 'settled', ARRAY['b'], n, n + 600, n, 1"
                " FROM generate_series(1, 20000) AS n"
            ).format(schema)
        )
        conn.execute(sql.SQL("ANALYZE {}.holds").format(schema))
    pool, conn = ledger._getconn()
    try:
        plan = " ".join(row[0] for row in conn.execute("EXPLAIN EXECUTE fb_expire(1e12)"))
    finally:
        ledger._putconn(pool, conn)
    assert "holds_open_by_expiry" in plan
    assert "Seq Scan on holds" not in plan
    admitted(reserve(ledger, "next", 1, cap(None)))
    assert [h.id for h in ledger.holds(limit=2)] == ["next", "open"]


def test_a_forked_child_opens_its_own_connections(
    url: str, opened: Callable[[str], Ledger]
) -> None:
    """A ledger used before fork() (a pre-forking server): the child never touches the parent's
    connections, and both go on working."""
    ledger = opened(url)
    admitted(reserve(ledger, "parent-1", 100, cap(None)))
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with the pool's threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 3
        try:
            code = 0 if reserve(ledger, "child", 100, cap(None)).admitted else 2
            ledger.close()
        finally:
            os.write(write, bytes([code]))
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"\x00"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    admitted(reserve(ledger, "parent-2", 100, cap(None)))
    assert ledger.totals([GLOBAL]) == [BucketTotals(GLOBAL, 0, 300)]
    assert sorted(h.id for h in ledger.holds()) == ["child", "parent-1", "parent-2"]


# -- faults ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad_url",
    ["postgresql://u:s3cret@127.0.0.1:1/db", "postgresql://u@127.0.0.1:1/db?password=s3cret"],
    ids=["userinfo", "query"],
)
def test_an_unreachable_server_is_unavailable_without_the_password(
    bad_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    ledger = open_ledger(bad_url)  # nothing connects yet
    started = time.monotonic()
    for call in (
        lambda: reserve(ledger, "h", 1, cap(10)),
        lambda: ledger.totals([GLOBAL]),
        lambda: ledger.settle("h", None, now=T0),
    ):
        with pytest.raises(LedgerUnavailable) as info:
            call()
        message = str(info.value)
        assert "s3cret" not in message
        assert "127.0.0.1" in message and "***" in message
    # a refused connection fails at once; the bound only catches a hang (no timing claim)
    assert time.monotonic() - started < 120
    assert "s3cret" not in caplog.text
    ledger.close()


def test_the_guard_fails_closed_when_the_server_is_unreachable() -> None:
    from falbudget import Cap, Guard

    guard = Guard("postgresql://u:s3cret@127.0.0.1:1/db", [Cap("10.00")])
    args = {"prompt": "a fox", "image_url": "https://example.com/fox.png"}
    sent = []
    with pytest.raises(LedgerUnavailable) as info, guard.reserve(ENDPOINT, args):
        sent.append(True)
    assert sent == []
    assert "s3cret" not in str(info.value)
    guard.close()


def test_a_connection_killed_mid_reservation_writes_nothing_and_a_retry_charges_once(
    url: str, opened: Callable[[str], Ledger]
) -> None:
    from psycopg import sql

    url, name = tagged(url)
    ledger = opened(url)
    admitted(reserve(ledger, "before", 100_000, cap(1_000_000)))
    outcome: list[BaseException | Admission] = []

    def attempt() -> None:
        try:
            outcome.append(reserve(ledger, "doomed", 200_000, cap(1_000_000), idempotency_key="k"))
        except BaseException as exc:
            outcome.append(exc)

    with admin_connection() as blocker:  # holds the bucket's row lock: the reservation waits
        blocker.execute("BEGIN")
        blocker.execute(
            sql.SQL("SELECT * FROM {}.buckets WHERE key = %s FOR UPDATE").format(
                sql.Identifier(schema_of(url))
            ),
            (GLOBAL,),
        )
        worker = threading.Thread(target=attempt)
        worker.start()
        wait_for(lambda: bool(backends(name, waiting_on_lock=True)), "the reservation to wait")
        terminate(backends(name, waiting_on_lock=True))
        worker.join(timeout=30)
        blocker.execute("ROLLBACK")
    assert len(outcome) == 1 and isinstance(outcome[0], LedgerUnavailable), outcome
    assert "lost" in str(outcome[0])

    # nothing half-written: no hold, no charge
    with pytest.raises(HoldNotFound):
        ledger.get_hold("doomed")
    assert ledger.totals([GLOBAL]) == [BucketTotals(GLOBAL, 0, 100_000)]
    assert [h.id for h in ledger.holds()] == ["before"]

    # the caller retries with the same key: charged once, however often it retries
    first = admitted(reserve(ledger, "retry-1", 200_000, cap(1_000_000), idempotency_key="k"))
    again = reserve(ledger, "retry-2", 200_000, cap(1_000_000), idempotency_key="k")
    assert (again.replayed, again.hold) == (True, first)
    assert ledger.totals([GLOBAL]) == [BucketTotals(GLOBAL, 0, 300_000)]


def test_no_password_in_errors_or_logs_when_connections_die(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A URL with a password (the test server trusts local connections, so any password does):
    connections cut mid-operation and while idle leave no trace of it."""
    secret = "s3cret-" + uuid.uuid4().hex[:6]
    scheme, rest = url.split("://", 1)
    userinfo, _, hosts = rest.partition("@")
    if ":" in userinfo or not hosts:
        pytest.skip("the test server's URL carries its own password")
    url, name = tagged(f"{scheme}://{userinfo}:{secret}@{hosts}")
    caplog.set_level("DEBUG")
    ledger = open_ledger(url)
    try:
        admitted(reserve(ledger, "h1", 100, cap(None)))
    except LedgerError as exc:
        pytest.skip(f"the test server does not accept an arbitrary password: {exc}")
    assert secret not in repr(ledger) and secret not in ledger.url
    terminate(backends(name))  # idle connections cut: found closed, replaced
    admitted(reserve(ledger, "h2", 100, cap(None)))

    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            reserve(ledger, "h3", 100, cap(None))
        except BaseException as exc:
            outcome.append(exc)

    from psycopg import sql

    with admin_connection() as blocker:
        blocker.execute("BEGIN")
        blocker.execute(
            sql.SQL("SELECT * FROM {}.buckets FOR UPDATE").format(sql.Identifier(schema_of(url)))
        )
        worker = threading.Thread(target=attempt)
        worker.start()
        wait_for(lambda: bool(backends(name, waiting_on_lock=True)), "the reservation to wait")
        terminate(backends(name))
        worker.join(timeout=30)
        blocker.execute("ROLLBACK")
    assert len(outcome) == 1 and isinstance(outcome[0], LedgerUnavailable)
    assert secret not in str(outcome[0])
    assert ":***@" in str(outcome[0])
    assert ledger.totals([GLOBAL]) == [BucketTotals(GLOBAL, 0, 200)]
    ledger.close()
    assert caplog.records, "the pool logs what it discards"
    assert secret not in caplog.text


def test_a_lock_held_too_long_is_unavailable(url: str) -> None:
    from psycopg import sql

    from falbudget.ledger.postgres import PostgresLedger

    ledger = PostgresLedger(url, lock_timeout_s=0.3)
    admitted(reserve(ledger, "before", 100_000, cap(1_000_000)))
    with admin_connection() as blocker:
        blocker.execute("BEGIN")
        blocker.execute(
            sql.SQL("SELECT * FROM {}.buckets FOR UPDATE").format(sql.Identifier(schema_of(url)))
        )
        with pytest.raises(LedgerUnavailable, match="lock_timeout"):
            reserve(ledger, "late", 100_000, cap(1_000_000))
        blocker.execute("ROLLBACK")
    assert ledger.totals([GLOBAL]) == [BucketTotals(GLOBAL, 0, 100_000)]
    admitted(reserve(ledger, "later", 100_000, cap(1_000_000)))
    ledger.close()


def test_connections_cut_while_holds_are_open_lose_nothing(
    url: str, opened: Callable[[str], Ledger]
) -> None:
    """Like a server restart: every connection of the ledger is closed by the server."""
    url, name = tagged(url)
    ledger = opened(url)
    charges = [BucketCharge(GLOBAL, CAP), BucketCharge("project=demo|2025-06", None)]
    for n in range(3):
        admitted(reserve(ledger, f"h{n}", PRICE, charges))
    ledger.mark_submitted("h1", "req-1", now=T0 + 1)
    ledger.settle("h2", 700_000, now=T0 + 2)
    before = ledger.totals([GLOBAL, "project=demo|2025-06"])
    assert before[0] == BucketTotals(GLOBAL, 700_000, 1_600_000)

    pids = backends(name)
    assert pids
    terminate(pids)

    # the pooled connections are found closed and replaced: no error, nothing lost
    assert ledger.totals([GLOBAL, "project=demo|2025-06"]) == before
    assert {h.id: h.state for h in ledger.holds()} == {
        "h0": "held",
        "h1": "submitted",
        "h2": "settled",
    }
    assert reserve(ledger, "h3", 7_700_001, charges) == Admission(
        admitted=False, refused_by=GLOBAL, totals=BucketTotals(GLOBAL, 700_000, 1_600_000)
    )
    ledger.settle("h1", None, now=T0 + 3)
    ledger.release("h0", now=T0 + 3)
    assert opened(url).totals([GLOBAL]) == [BucketTotals(GLOBAL, 1_500_000, 0)]


def test_concurrent_retries_with_one_idempotency_key_charge_once(
    url: str, opened: Callable[[str], Ledger]
) -> None:
    ledgers = [opened(url) for _ in range(8)]
    ledgers[0].totals([GLOBAL])  # the schema exists before the race
    barrier = threading.Barrier(8)
    results: list[Admission | BaseException] = []

    def work(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            results.append(reserve(ledgers[n], f"try-{n}", PRICE, cap(CAP), idempotency_key="job"))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(isinstance(r, Admission) for r in results), results
    admissions = [r for r in results if isinstance(r, Admission)]
    assert len(admissions) == 8
    assert all(r.admitted for r in admissions)
    assert len({r.hold.id for r in admissions if r.hold is not None}) == 1
    assert sorted(r.replayed for r in admissions) == [False] + [True] * 7
    assert ledgers[0].totals([GLOBAL]) == [BucketTotals(GLOBAL, 0, PRICE)]
    assert len(ledgers[0].holds()) == 1


# -- exact concurrency, processes -----------------------------------------------------------------
@pytest.mark.slow
def test_8_processes_admit_exactly_12_and_spend_exactly_9_60(url: str) -> None:
    open_ledger(url).close()
    charges = [BucketCharge(GLOBAL, CAP), BucketCharge("endpoint=magi|2025-06", None)]
    reports = run_processes(admit_and_settle, [(url, n, 5, [charges], PRICE, T0) for n in range(8)])
    assert [error for *_, error in reports if error is not None] == []
    assert [states for *_, states, _ in reports if states] == []
    admitted_ids = [hold_id for _, ids, *_ in reports for hold_id, _ in ids]
    assert len(admitted_ids) == 12
    assert len(set(admitted_ids)) == 12
    refusals = [r for _, _, per_worker, *_ in reports for r in per_worker]
    assert len(refusals) == 40 - 12
    # every refusal saw exactly 12 x 0.80 spent or held: none came while room was left
    assert {(by, settled + held) for by, settled, held in refusals} == {(GLOBAL, 9_600_000)}
    ledger = open_ledger(url)
    assert ledger.totals([GLOBAL, "endpoint=magi|2025-06"]) == [
        BucketTotals(GLOBAL, 9_600_000, 0),
        BucketTotals("endpoint=magi|2025-06", 9_600_000, 0),
    ]
    assert sorted(h.id for h in ledger.holds(states=["settled"])) == sorted(admitted_ids)
    ledger.close()


@pytest.mark.slow
def test_two_caps_taken_in_opposite_orders_never_deadlock_and_stay_exact(url: str) -> None:
    """Workers of project a and b; half pass [global, project], half [project, global]."""
    open_ledger(url).close()
    project_cap = 6_000_000  # 7 x 0.80 = 5.60 fits, 8 x 0.80 = 6.40 does not

    def charges(project: str, reverse: bool) -> list[BucketCharge]:
        both = [BucketCharge(GLOBAL, CAP), BucketCharge(f"project={project}|2025-06", project_cap)]
        return both[::-1] if reverse else both

    argsets = [
        (url, n, 6, [charges("ab"[n % 2], n % 4 >= 2), charges("ab"[n % 2], n % 4 < 2)], PRICE, T0)
        for n in range(8)
    ]
    reports = run_processes(admit_and_settle, argsets)
    assert [error for *_, error in reports if error is not None] == []
    assert [states for *_, states, _ in reports if states] == []  # no deadlock, no retry
    admitted_holds = [buckets for _, ids, *_ in reports for _, buckets in ids]
    per_project = {p: sum(1 for b in admitted_holds if f"project={p}|2025-06" in b) for p in "ab"}
    assert len(admitted_holds) == 12  # the global cap: 12 x 0.80 = 9.60
    assert max(per_project.values()) <= 7
    refusals = [r for _, _, per_worker, *_ in reports for r in per_worker]
    assert len(refusals) == 48 - 12
    for by, settled, held in refusals:
        limit = CAP if by == GLOBAL else project_cap
        assert limit - PRICE < settled + held <= limit, (by, settled, held)
    ledger = open_ledger(url)
    assert ledger.totals([GLOBAL, "project=a|2025-06", "project=b|2025-06"]) == [
        BucketTotals(GLOBAL, 9_600_000, 0),
        BucketTotals("project=a|2025-06", per_project["a"] * PRICE, 0),
        BucketTotals("project=b|2025-06", per_project["b"] * PRICE, 0),
    ]
    ledger.close()


# -- the CLI --------------------------------------------------------------------------------------
def test_cli_ledger_migrate(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from falbudget.cli.app import main
    from falbudget.ledger import postgres

    schema = schema_of(url)
    assert main(["ledger", "migrate", url]) == 0
    assert capsys.readouterr().out == f"{url}: schema {schema!r} created at version 7\n"
    assert main(["ledger", "migrate", url]) == 0
    assert capsys.readouterr().out == f"{url}: schema {schema!r} is up to date at version 7\n"
    monkeypatch.setattr(postgres, "MIGRATIONS", [*postgres.MIGRATIONS, _next_for_test])
    assert main(["ledger", "migrate", url, "--format", "json"]) == 0
    assert capsys.readouterr().out == (
        f'{{"url": "{url}", "backend": "postgresql", "schema": "{schema}", "from_version": 7,'
        ' "to_version": 8, "changed": true}\n'
    )


def test_cli_ledger_migrate_errors(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    from falbudget.cli.app import main

    assert main(["ledger", "migrate", "postgresql://u:s3cret@127.0.0.1:1/db"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("falbudget: error: postgresql://u:***@127.0.0.1:1/db: ")
    assert "s3cret" not in captured.err and captured.err.count("\n") == 1
    assert main(["ledger", "migrate", "memory://"]) == 2
    assert "no schema to migrate" in capsys.readouterr().err
    assert main(["ledger", "migrate", f"sqlite:///{tmp_path}/x.db"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_the_server_is_reachable() -> None:
    """Fails (CI) or skips (elsewhere) with the reason when the test server does not answer."""
    assert require_server()
