"""A ledger in PostgreSQL: one budget shared by many workers on many machines.

The tables live in their own schema (``falbudget``, or the one named by ``?schema=`` in the URL),
so several budgets can share one database. The schema is versioned (table ``meta``): a missing
one is created on first use, under a transaction-scoped advisory lock so that workers starting
together do not collide; an older one must be upgraded with ``falbudget ledger migrate URL``
(:func:`migrate`); a newer one is refused.

Admission (see docs/postgres.md for the reasoning and the measured alternatives):

* Every bucket a request charges is taken in sorted key order with one guarded upsert,
  ``INSERT ... ON CONFLICT (key) DO UPDATE SET held = held + amount WHERE settled + held <=
  limit - amount``. The row lock it takes makes a concurrent admission wait and then re-check the
  guard against the committed totals (READ COMMITTED), so admission is exact; the fixed order
  means two workers never deadlock. A guard that fails aborts the transaction (the statement
  divides by the number of rows it charged), so nothing is half-written.
* The expiry of overdue holds (its own transaction), then the hold, its bucket links, the
  charges and the COMMIT are sent as one multi-statement query of statements PREPAREd on each
  pooled connection: an admission costs one network round trip. A refusal costs a second one,
  which rolls back and reads the totals in one snapshot to name the refusing bucket (when that
  snapshot shows room after all, another worker freed it in between: the admission is retried).
* Running totals per bucket: the cost of admission does not depend on the size of the history.
  Expiry reads a partial index of open holds and skips (``SKIP LOCKED``) a hold that another
  transaction is settling, renewing or expiring at that moment; admission never skips or NOWAITs.
* Serialization failures and deadlocks (neither is expected) are retried a bounded number of
  times. A server that cannot be reached, a connection lost in the middle of an operation, or a
  lock not granted within ``lock_timeout`` raise LedgerUnavailable: the guard fails closed.
  Every operation ends within ``connect_timeout`` + ``statement_timeout`` (10 s by default):
  the server enforces both timeouts, and a watchdog thread shuts down the socket of a call the
  server has not answered by then. Messages carry the URL with its secrets replaced by ``***``.
"""

from __future__ import annotations

import logging
import os
import random
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import unquote

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import ExecStatus, TransactionStatus
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from falbudget.errors import (
    ConfigurationError,
    HoldNotFound,
    KeyNotFound,
    LedgerError,
    LedgerNotFound,
    LedgerUnavailable,
)
from falbudget.ledger import _checks
from falbudget.ledger._rows import adjustment_from_row, hold_from_row
from falbudget.ledger._urls import is_secret_param, redact_url, url_secrets
from falbudget.ledger.base import (
    DEFAULT_IDEMPOTENCY_TTL,
    REFUSAL_MAX_ROWS,
    REFUSAL_RETENTION,
    VISITOR_TAGS,
    Adjustment,
    Admission,
    ApiKey,
    BucketCharge,
    BucketTotals,
    Hold,
    HoldGroup,
    HoldState,
    Refusal,
)

log = logging.getLogger(__name__)

Connection = psycopg.Connection[TupleRow]
T = TypeVar("T")

DEFAULT_SCHEMA: Final = "falbudget"
SCHEMA_PARAM: Final = "schema"
ADVISORY_LOCK_KEY: Final = 0x66616C6275646765  # "falbudge": serialises schema creation/migration
PAGE = 1_000
"""Holds per statement when a history is read as a stream (:meth:`PostgresLedger.iter_holds`)."""
MAX_ATTEMPTS: Final = 8
"""How many times one operation is tried when it meets a serialization failure, a deadlock or
(admission only) a race that a retry resolves."""

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_OWN_PARAMS = (SCHEMA_PARAM, "statement_timeout", "lock_timeout")
"""The URL's parameters that are falbudget's: removed before the URL reaches libpq."""
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|min)")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "min": 60.0}
MAX_TIMEOUT_S: Final = 3600
"""The largest timeout a URL or argument may set, in seconds."""
_OPEN = "state IN ('held', 'submitted')"
"""Written exactly as in the partial index's WHERE, so that the planner uses that index."""
_HOLD_COLUMNS = (
    "id",
    "endpoint",
    "amount",
    "state",
    "buckets",
    "created_at",
    "expires_at",
    "updated_at",
    "idempotency_key",
    "request_id",
    "settled_amount",
    "tags",
    "table_version",
    "table_sha256",
    "adjusted_amount",
    "fingerprint",
    "idempotency_ttl",
)
_SUMMARY = """SELECT endpoint, tags, buckets, MIN(created_at), MAX(created_at), COUNT(*),
    COALESCE(SUM(spent), 0), COALESCE(SUM(held), 0), COUNT(*) FILTER (WHERE counts),
    COUNT(*) FILTER (WHERE state IN ('held', 'submitted')),
    COUNT(*) FILTER (WHERE state = 'expired'),
    COUNT(*) FILTER (WHERE state = 'released' AND NOT counts),
    COUNT(*) FILTER (WHERE spent > amount), COALESCE(SUM(GREATEST(spent - amount, 0)), 0)
FROM (
    SELECT endpoint, tags - %(visitor_tags)s::text[] AS tags,
        ARRAY(SELECT key FROM unnest(buckets) WITH ORDINALITY AS b (key, place)
            WHERE NOT key ^@ ANY (%(visitor_prefixes)s::text[]) ORDER BY place) AS buckets,
        created_at, state, amount,
        CASE WHEN adjusted_amount IS NOT NULL THEN adjusted_amount
            WHEN state IN ('settled', 'expired') THEN COALESCE(settled_amount, amount)
            ELSE 0 END AS spent,
        CASE WHEN adjusted_amount IS NOT NULL THEN adjusted_amount > 0
            ELSE state IN ('settled', 'expired') END AS counts,
        CASE WHEN state IN ('held', 'submitted') THEN amount ELSE 0 END AS held,
        floor((created_at + %(offset)s::bigint) / %(period)s::bigint)::bigint AS period,
        {place} AS place
    FROM {s}.holds{where}
) AS h
GROUP BY endpoint, tags, buckets, period, place"""
"""Sums per group as :meth:`HoldGroup.of` computes them for one hold, grouped by what holds
share: without the visitor tags and their buckets (base.VISITOR_TAGS; test_ledger_contract
checks every backend agrees)."""
_ADJUSTMENT_COLUMNS = sql.SQL("id, hold_id, previous, amount, delta, reason, source, created_at")
_RETRYABLE = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
_CONNECTION_LOST = frozenset({"57P01", "57P02", "57P03", "25P03"})
"""admin_shutdown, crash_shutdown, cannot_connect_now, idle_in_transaction_session_timeout; all
of class 08 (connection exception) and 53 (insufficient resources) count as well."""

_KEEPALIVES: Final[Mapping[str, int]] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
"""libpq's TCP settings unless the URL sets its own: the kernel probes an idle connection after
5 s and drops it when the peer is gone (about 10 s), and drops one whose sent data stays
unacknowledged for 10 s. They keep the pool's idle connections honest; the bound of a call is
kept by the watchdog below whatever they are."""

_INHERITED: list[object] = []
"""Pools a forked child inherited: kept referenced so that the child never closes the parent's
connections (closing sends a Terminate message down the shared socket)."""


# -- schema migrations ---------------------------------------------------------------------------
Migration = Callable[[Connection, sql.Identifier], None]


def _v1_initial(conn: Connection, schema: sql.Identifier) -> None:
    statements = [
        # "C" collation: ORDER BY key (the lock order) is code point order, as Python sorts.
        """CREATE TABLE {s}.buckets (
            key TEXT COLLATE "C" PRIMARY KEY,
            settled BIGINT NOT NULL DEFAULT 0 CHECK (settled >= 0),
            held BIGINT NOT NULL DEFAULT 0 CHECK (held >= 0)
        )""",
        """CREATE TABLE {s}.holds (
            seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
            id TEXT PRIMARY KEY,
            idempotency_key TEXT UNIQUE,
            endpoint TEXT NOT NULL,
            amount BIGINT NOT NULL CHECK (amount >= 0),
            state TEXT NOT NULL
                CHECK (state IN ('held', 'submitted', 'settled', 'released', 'expired')),
            buckets TEXT[] NOT NULL,
            request_id TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            settled_amount BIGINT CHECK (settled_amount IS NULL OR settled_amount >= 0),
            tags JSONB NOT NULL DEFAULT '{{}}',
            table_version TEXT,
            table_sha256 TEXT
        )""",
        # Only open holds are in this index: the expiry step of every reservation reads it.
        f"CREATE INDEX holds_open_by_expiry ON {{s}}.holds (expires_at, id) WHERE {_OPEN}",
        "CREATE INDEX holds_by_created ON {s}.holds (created_at, seq)",
        "CREATE INDEX holds_by_state_created ON {s}.holds (state, created_at)",
        """CREATE TABLE {s}.hold_buckets (
            hold_id TEXT NOT NULL REFERENCES {s}.holds (id),
            bucket_key TEXT COLLATE "C" NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (hold_id, bucket_key)
        )""",
        "CREATE INDEX hold_buckets_by_bucket ON {s}.hold_buckets (bucket_key, created_at)",
        """CREATE TABLE {s}.alerts (
            bucket TEXT NOT NULL,
            threshold TEXT NOT NULL,
            PRIMARY KEY (bucket, threshold)
        )""",
    ]
    for statement in statements:
        conn.execute(sql.SQL(statement).format(s=schema))


def _v2_adjustments(conn: Connection, schema: sql.Identifier) -> None:
    """Reconciliation with fal's records: a hold's adjusted amount, the audit trail of
    adjustments, and holds found by fal's request id."""
    statements = [
        """ALTER TABLE {s}.holds ADD COLUMN adjusted_amount BIGINT
            CHECK (adjusted_amount IS NULL OR adjusted_amount >= 0)""",
        "CREATE INDEX holds_by_request_id ON {s}.holds (request_id) WHERE request_id IS NOT NULL",
        """CREATE TABLE {s}.adjustments (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            hold_id TEXT NOT NULL REFERENCES {s}.holds (id),
            previous BIGINT NOT NULL CHECK (previous >= 0),
            amount BIGINT NOT NULL CHECK (amount >= 0),
            delta BIGINT NOT NULL CHECK (delta = amount - previous),
            reason TEXT NOT NULL,
            source TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX adjustments_by_hold ON {s}.adjustments (hold_id, id)",
    ]
    for statement in statements:
        conn.execute(sql.SQL(statement).format(s=schema))


def _v3_bound_keys(conn: Connection, schema: sql.Identifier) -> None:
    """Idempotency keys bound to a request (a fingerprint) for a time after the hold closes.

    A key may now name several holds in the history, one of them bound to it (key_forgotten_at
    NULL): version 1's UNIQUE constraint (found by its column, whatever its name) gives way to a
    partial unique index. Keys of existing holds have no fingerprint (nothing was recorded) and
    get the default lifetime, so they are forgotten 24 h after their hold closes."""
    holds = sql.SQL("{}.holds").format(schema)
    constraints = conn.execute(
        sql.SQL(
            """SELECT c.conname FROM pg_catalog.pg_constraint AS c
            JOIN pg_catalog.pg_attribute AS a
                ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)
            WHERE c.conrelid = %s::regclass AND c.contype = 'u'
                AND a.attname = 'idempotency_key' AND cardinality(c.conkey) = 1"""
        ),
        (holds.as_string(conn),),
    ).fetchall()
    for (name,) in constraints:
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(holds, sql.Identifier(name))
        )
    statements = [
        """ALTER TABLE {s}.holds ADD COLUMN fingerprint TEXT,
            ADD COLUMN idempotency_ttl DOUBLE PRECISION
                CHECK (idempotency_ttl IS NULL OR idempotency_ttl > 0),
            ADD COLUMN key_forgotten_at DOUBLE PRECISION""",
        """UPDATE {s}.holds SET idempotency_ttl = {ttl} WHERE idempotency_key IS NOT NULL""",
        """CREATE UNIQUE INDEX holds_by_bound_key ON {s}.holds (idempotency_key)
            WHERE key_forgotten_at IS NULL""",
    ]
    for statement in statements:
        conn.execute(sql.SQL(statement).format(s=schema, ttl=sql.Literal(DEFAULT_IDEMPOTENCY_TTL)))


def _v4_api_keys(conn: Connection, schema: sql.Identifier) -> None:
    """Virtual keys of ``falbudget proxy``: the SHA-256 digest of each key (never the key), its
    tags, and when it was revoked."""
    conn.execute(
        sql.SQL(
            """CREATE TABLE {s}.api_keys (
            seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
            id TEXT PRIMARY KEY,
            digest TEXT NOT NULL UNIQUE,
            tags JSONB NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            revoked_at DOUBLE PRECISION
        )"""
        ).format(s=schema)
    )


def _v5_lean_holds(conn: Connection, schema: sql.Identifier) -> None:
    """Less server work per step: ``hold_buckets`` (a row per hold and bucket, written by
    every admission, for ``holds(bucket=...)`` alone, which now reads the hold's own array) and
    the index by state and time (every settle moved the hold inside it) are dropped. Every
    hold, total, adjustment, key and alert stays as it was."""
    for statement in ("DROP INDEX {s}.holds_by_state_created", "DROP TABLE {s}.hold_buckets"):
        conn.execute(sql.SQL(statement).format(s=schema))


def _v6_refusals(conn: Connection, schema: sql.Identifier) -> None:
    """Refused admissions (:class:`Refusal`), for metrics, alerts and the dashboard: a row per
    refusal (never per admission), pruned to REFUSAL_RETENTION and REFUSAL_MAX_ROWS as refusals
    are recorded. Nothing else changes."""
    statements = [
        """CREATE TABLE {s}.refusals (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at DOUBLE PRECISION NOT NULL,
            endpoint TEXT NOT NULL,
            reason TEXT NOT NULL,
            cap TEXT,
            amount BIGINT NOT NULL CHECK (amount >= 0),
            tags JSONB NOT NULL DEFAULT '{{}}'
        )""",
        "CREATE INDEX refusals_by_at ON {s}.refusals (at)",
    ]
    for statement in statements:
        conn.execute(sql.SQL(statement).format(s=schema))


_OVERRUN_INDEXED = "({h}adjusted_amount > {h}amount OR {h}settled_amount > {h}amount)"
"""The partial index of holds with an overrun (:func:`_v7_overruns`): every such hold, and a
few others (a hold that is not settled or expired counts nothing whatever it records)."""
_OVERRUN = (
    "({h}adjusted_amount > {h}amount OR ({h}adjusted_amount IS NULL"
    " AND {h}state IN ('settled', 'expired') AND {h}settled_amount > {h}amount))"
)
"""Exactly ``Hold.overrun > 0`` (``spent_amount > amount``)."""


def _v7_overruns(conn: Connection, schema: sql.Identifier) -> None:
    """An index of the holds with an overrun (fal billed more than was held), which ``budget
    status`` lists: it summed the whole history to find them. Partial: a hold settled at what
    was held, the usual case, never enters it."""
    where = _OVERRUN_INDEXED.format(h="")
    conn.execute(
        sql.SQL("CREATE INDEX holds_overrun ON {s}.holds (created_at, seq) WHERE " + where).format(
            s=schema
        )
    )


MIGRATIONS: list[Migration] = [
    _v1_initial,
    _v2_adjustments,
    _v3_bound_keys,
    _v4_api_keys,
    _v5_lean_holds,
    _v6_refusals,
    _v7_overruns,
]
"""Migration ``i`` takes a schema from version ``i`` to ``i + 1``; version 0 is a schema without
tables. Append, never edit: a schema records the version it reached in its ``meta`` table."""


_KEY_COLUMNS = sql.SQL("id, digest, tags, created_at, revoked_at")


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        str(row[0]),
        str(row[1]),
        dict(row[2]),
        float(row[3]),
        None if row[4] is None else float(row[4]),
    )


def latest_version() -> int:
    """The schema version this falbudget writes and reads."""
    return len(MIGRATIONS)


# -- URLs ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Target:
    conninfo: str
    """The URL given, without ``schema=``: what libpq connects with."""
    schema: str
    shown: str
    """The URL for messages: the password replaced by ``***``."""
    secrets: tuple[str, ...]
    """Every spelling of the password, scrubbed from any text we show."""
    params: Mapping[str, str]
    timeouts: Mapping[str, float]
    """falbudget's own ``statement_timeout=`` and ``lock_timeout=`` (seconds), when given."""


def _duration(shown: str, name: str, text: str) -> float:
    """A ``statement_timeout=`` or ``lock_timeout=`` value in seconds: a number with its unit."""
    match = _DURATION.fullmatch(text.strip())
    seconds = float(match.group(1)) * _UNITS[match.group(2)] if match else 0.0
    if not 0 < seconds <= MAX_TIMEOUT_S:
        raise ConfigurationError(
            f"ledger URL {shown!r}: {name}={text!r} is not allowed: a duration with its unit, "
            f"above 0 and at most {MAX_TIMEOUT_S:g} s (for example 5s, 500ms or 1min)"
        )
    return seconds


def _connect_seconds(shown: str, text: str) -> int:
    """The URL's ``connect_timeout``, as libpq counts it (whole seconds, less than 2 is 2)."""
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_TIMEOUT_S:
        raise ConfigurationError(
            f"ledger URL {shown!r}: connect_timeout={text!r} is not allowed: whole seconds from 1 "
            f"to {MAX_TIMEOUT_S:g} (libpq waits at least 2; 0 would mean no limit)"
        )
    return max(2, value)


def _parse_url(url: str) -> _Target:
    if not isinstance(url, str):
        raise ConfigurationError(f"ledger URL {url!r} is not a string")
    shown = redact_url(url)
    scheme = url.partition("://")[0].lower()
    if scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(f"ledger URL {shown!r} is not a postgresql:// URL")
    base, _, fragment = url.partition("#")
    if fragment:
        raise ConfigurationError(f"ledger URL {shown!r}: a PostgreSQL URL has no #fragment")
    head, question, query = base.partition("?")
    kept: list[str] = []
    own: dict[str, list[str]] = {name: [] for name in _OWN_PARAMS}
    for item in query.split("&") if question else []:
        name, _, value = item.partition("=")
        if unquote(name) in own:
            own[unquote(name)].append(unquote(value))
        elif item:
            kept.append(item)
    for name, values in own.items():
        if len(values) > 1:
            what = "the schema" if name == SCHEMA_PARAM else name
            raise ConfigurationError(f"ledger URL {shown!r} names {what} more than once")
    schemas = own[SCHEMA_PARAM]
    schema = schemas[0] if schemas else DEFAULT_SCHEMA
    timeouts = {
        name: _duration(shown, name, values[0])
        for name, values in own.items()
        if name != SCHEMA_PARAM and values
    }
    if not _SCHEMA_NAME.fullmatch(schema) or schema.startswith("pg_"):
        raise ConfigurationError(
            f"ledger URL {shown!r}: schema={schema!r} is not allowed: a schema name is 1 to 63 "
            "lowercase letters, digits and _, not starting with a digit or pg_"
        )
    conninfo = head + ("?" + "&".join(kept) if kept else "")
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    except psycopg.Error as exc:
        secrets = _secrets_of(url, None)
        raise ConfigurationError(
            f"ledger URL {shown!r} is not a valid PostgreSQL URL: {_scrub(str(exc), secrets)}"
        ) from None
    if "connect_timeout" in params:
        _connect_seconds(shown, params["connect_timeout"])
    return _Target(conninfo, schema, shown, _secrets_of(url, params), params, timeouts)


def _secrets_of(url: str, params: Mapping[str, str] | None) -> tuple[str, ...]:
    """Every spelling of every secret: the URL's (see ledger/_urls.py) and, as libpq read
    them, the values of its secret parameters (``password``, ``sslpassword``...)."""
    found = set(url_secrets(url))
    found.update(v for k, v in (params or {}).items() if is_secret_param(k) and v)
    return tuple(sorted(found, key=len, reverse=True))


def schema_name(url: str) -> str:
    """The schema a ledger URL names (``?schema=``, default ``falbudget``); checks the URL."""
    return _parse_url(url).schema


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


# -- the ledger ----------------------------------------------------------------------------------
class PostgresLedger:
    """The Ledger protocol on a PostgreSQL schema; see the module docstring and docs/postgres.md.

    ``url`` is a libpq URL (``postgresql://user:password@host:5432/db``, ``postgres://`` too) with
    optional ``schema=`` (default ``falbudget``), ``statement_timeout=`` and ``lock_timeout=``
    parameters (a duration with its unit: ``5s``, ``500ms``). Nothing connects until the first
    operation; then a small pool (``pool_min_size`` to ``pool_max_size`` connections) serves all
    threads of this process.

    Every operation returns, or raises LedgerUnavailable, within :attr:`call_timeout_s` =
    connect timeout + statement timeout (5 + 5 = 10 s by default), however the network fails:
    ``connect_timeout_s`` (or the URL's ``connect_timeout``) bounds getting a connection,
    ``statement_timeout_s`` (or ``statement_timeout``) the statements, on the server and, should
    the server not answer at all, on this side (the connection is then closed).
    ``lock_timeout_s`` (``lock_timeout``) bounds the wait for another worker's row lock and
    ``pool_timeout_s`` the wait for a free pooled connection, both within that bound. TCP
    keepalives and ``tcp_user_timeout`` (libpq parameters; the URL may set its own) make the
    kernel notice a dead peer on idle pooled connections too. ``read_only=True``
    never creates the schema (a missing one raises LedgerNotFound) and runs every session with
    ``default_transaction_read_only``, so nothing can be written through it.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_min_size: int = 1,
        pool_max_size: int = 4,
        connect_timeout_s: float = 5.0,
        statement_timeout_s: float = 5.0,
        pool_timeout_s: float = 30.0,
        lock_timeout_s: float = 4.0,
        read_only: bool = False,
    ) -> None:
        self._target = _parse_url(url)
        self.read_only = bool(read_only)
        self.schema = self._target.schema
        self.url = self._target.shown
        for name, value in (
            ("connect_timeout_s", connect_timeout_s),
            ("statement_timeout_s", statement_timeout_s),
            ("pool_timeout_s", pool_timeout_s),
            ("lock_timeout_s", lock_timeout_s),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 < value <= MAX_TIMEOUT_S
            ):
                raise ConfigurationError(
                    f"{name}={value!r} is not allowed: seconds above 0, at most {MAX_TIMEOUT_S}"
                )
        sizes = (pool_min_size, pool_max_size)
        if any(isinstance(n, bool) or not isinstance(n, int) for n in sizes) or not (
            0 <= pool_min_size <= pool_max_size and pool_max_size >= 1
        ):
            raise ConfigurationError(
                f"pool sizes {pool_min_size!r}..{pool_max_size!r} are not allowed: "
                "0 <= pool_min_size <= pool_max_size, pool_max_size >= 1"
            )
        params, timeouts = self._target.params, self._target.timeouts
        self._pool_sizes = (pool_min_size, pool_max_size)
        self._pool_timeout_s = float(pool_timeout_s)
        self.statement_timeout_s = timeouts.get("statement_timeout", float(statement_timeout_s))
        self.lock_timeout_s = timeouts.get("lock_timeout", float(lock_timeout_s))
        self.connect_timeout_s = float(
            _connect_seconds(self.url, params["connect_timeout"])
            if "connect_timeout" in params
            else max(2, round(connect_timeout_s))
        )
        self.call_timeout_s = self.connect_timeout_s + self.statement_timeout_s
        """The most any operation takes before it returns or raises LedgerUnavailable."""
        # psycopg's own statement preparation is off: the hot statements are PREPAREd on each
        # pooled connection (see _Queries) and sent as one multi-statement query per operation.
        self._kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": None}
        defaults: dict[str, Any] = {
            "connect_timeout": round(self.connect_timeout_s),
            "application_name": "falbudget",
            **_KEEPALIVES,
        }
        self._kwargs.update((k, v) for k, v in defaults.items() if k not in params)
        self._queries: _Queries | None = None
        self._lock = threading.Lock()
        self._pool: ConnectionPool[Connection] | None = None
        self._pid = os.getpid()
        self._schema_ok = False
        self._suspect = False
        self._closed = False

    # -- connections -------------------------------------------------------------------------
    def _connect_direct(self, deadline: float | None = None) -> Connection:
        """A connection of its own (not pooled). With a ``deadline`` (time.monotonic()), the
        attempt runs in a helper thread and is abandoned (closed once it completes) when the
        deadline passes first: libpq's connect_timeout applies to each host address it tries."""
        if deadline is None:
            try:
                return psycopg.Connection.connect(self._target.conninfo, **self._kwargs)
            except psycopg.Error as exc:
                raise self._error(exc, "cannot connect") from None
        outcome: list[Connection | psycopg.Error] = []
        done = threading.Event()
        guard = threading.Lock()
        abandoned = False

        def attempt() -> None:
            result: Connection | psycopg.Error
            try:
                result = psycopg.Connection.connect(self._target.conninfo, **self._kwargs)
            except psycopg.Error as exc:
                result = exc
            with guard:
                if not abandoned:
                    outcome.append(result)
                    done.set()
                    return
            if isinstance(result, psycopg.Connection):  # nobody waits for it any more
                with suppress(Exception):
                    result.close()

        threading.Thread(target=attempt, name="falbudget-connect", daemon=True).start()
        done.wait(max(0.0, deadline - time.monotonic()))
        with guard:
            if not outcome:
                abandoned = True
                self._suspect = True
                raise LedgerUnavailable(
                    f"{self.url}: cannot connect: no connection within {self.call_timeout_s:g} s "
                    "(connect_timeout + statement_timeout)"
                )
        result = outcome[0]
        if isinstance(result, psycopg.Error):
            raise self._error(result, "cannot connect") from None
        return result

    def _ready_pool(self, deadline: float) -> ConnectionPool[Connection]:
        """The pool, opened on first use after one direct connection has checked (and perhaps
        created) the schema: a server that is down fails fast instead of after a pool timeout."""
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise self._late("cannot connect")
        try:
            if self._closed:
                raise LedgerError(f"{self.url}: the ledger is closed")
            if self._pid != os.getpid():  # forked: the parent's pool is not ours to use or close
                if self._pool is not None:
                    _INHERITED.append(self._pool)
                self._pool, self._pid, self._suspect = None, os.getpid(), False
            if self._pool is None or self._suspect:
                conn = self._connect_direct(deadline)
                alarm = _WATCHDOG.arm(conn, deadline)
                try:
                    if not self._schema_ok:
                        _prepare_schema(conn, self._target, create=not self.read_only)
                        self._schema_ok = True
                    if self._queries is None:
                        self._queries = _Queries(sql.Identifier(self.schema), conn)
                except psycopg.Error as exc:
                    raise self._error(exc, "cannot check the ledger schema", conn, alarm) from None
                finally:
                    alarm.disarm()
                    with suppress(Exception):
                        conn.close()
                self._suspect = False
            if self._pool is None:
                min_size, max_size = self._pool_sizes
                pool: ConnectionPool[Connection] = ConnectionPool(
                    self._target.conninfo,
                    kwargs=self._kwargs,
                    min_size=min_size,
                    max_size=max_size,
                    open=False,
                    configure=self._configure,
                    name=f"falbudget-{self.schema}",
                    timeout=self._pool_timeout_s,
                )
                pool.open(wait=False)
                self._pool = pool
            return self._pool
        finally:
            self._lock.release()

    @property
    def _q(self) -> _Queries:
        """The statements, rendered by the first connection (only used inside ``_run``)."""
        if self._queries is None:  # pragma: no cover - _run readies the pool first
            raise LedgerError(f"{self.url}: the ledger is not connected yet")
        return self._queries

    def _configure(self, conn: Connection) -> None:
        """Session settings and prepared statements of every pooled connection, in one round
        trip (bounded by statement_timeout on this side too). READ COMMITTED: a guarded
        statement that waited for a row lock re-checks its condition against the committed row.
        statement_timeout and lock_timeout bound each statement and each lock wait on the
        server. An idle transaction (only ever a failed one left by a frozen worker) is ended by
        the server after a minute, so its locks cannot linger."""
        settings = sql.SQL(
            "SET default_transaction_isolation = 'read committed'; "
            "SET statement_timeout = {}; SET lock_timeout = {}; "
            "SET idle_in_transaction_session_timeout = {}; "
            "SET plan_cache_mode = force_generic_plan; "
            "SET default_transaction_read_only = {}; "
        ).format(
            sql.Literal(_millis(self.statement_timeout_s)),
            sql.Literal(_millis(self.lock_timeout_s)),
            sql.Literal(60_000),
            sql.SQL("on" if self.read_only else "off"),
        )
        alarm = _WATCHDOG.arm(conn, time.monotonic() + self.statement_timeout_s)
        try:
            conn.execute(settings.as_bytes(conn) + self._q.prepare_all)
        finally:
            alarm.disarm()

    def _getconn(
        self, deadline: float | None = None
    ) -> tuple[ConnectionPool[Connection], Connection]:
        if deadline is None:
            deadline = time.monotonic() + self.call_timeout_s
        for _ in range(self._pool_sizes[1] + 2):
            pool = self._ready_pool(deadline)
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._late("cannot connect")
            wait = min(self._pool_timeout_s, left)
            started = time.monotonic()
            try:
                conn = pool.getconn(timeout=wait)
            except PoolTimeout:
                waited = time.monotonic() - started
                raise LedgerUnavailable(
                    f"{self.url}: no free connection to the ledger: gave up after waiting"
                    f" {waited:.3f} s (pool_timeout {wait:.3g} s)"
                ) from None
            except PoolClosed:
                raise LedgerError(f"{self.url}: the ledger is closed") from None
            if _looks_alive(conn):
                return pool, conn
            # Closed by the server while idle (restart, pg_terminate_backend): never used, so
            # nothing was sent; drop it, make sure the server answers, and take another.
            with suppress(Exception):
                conn.close()
            pool.putconn(conn)
            self._suspect = True
        raise LedgerUnavailable(f"{self.url}: every pooled connection was found closed")

    def _putconn(
        self, pool: ConnectionPool[Connection], conn: Connection, alarm: _Alarm | None = None
    ) -> None:
        """Back to the pool, rolled back (still under ``alarm``); closed if it cannot be."""
        close = False
        if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
            close = conn.info.transaction_status == TransactionStatus.ACTIVE
            if not close:
                try:
                    conn.execute(b"ROLLBACK", prepare=False)
                except Exception:
                    close = True
        if alarm is not None:  # before any close: the watchdog never touches a reused descriptor
            alarm.disarm()
        if close:
            with suppress(Exception):
                conn.close()
        pool.putconn(conn)

    def _run(self, action: str, work: Callable[[Connection], T]) -> T:
        """``work`` on a pooled connection, within :attr:`call_timeout_s`; retried on
        serialization failures and deadlocks (``work`` must be transactions that are safe to
        repeat after such a failure) while time is left."""
        deadline = time.monotonic() + self.call_timeout_s
        for attempt in range(1, MAX_ATTEMPTS + 1):
            pool, conn = self._getconn(deadline)
            alarm = _WATCHDOG.arm(conn, deadline)
            started = time.monotonic()
            try:
                return work(conn)
            except psycopg.Error as exc:
                if (
                    _sqlstate(exc) in _RETRYABLE
                    and attempt < MAX_ATTEMPTS
                    and not conn.broken
                    and not alarm.fired
                ):
                    log.debug("%s: %s: retrying after %s", self.url, action, _sqlstate(exc))
                    _backoff(attempt)
                    continue
                raise self._error(exc, action, conn, alarm, time.monotonic() - started) from None
            finally:
                self._putconn(pool, conn, alarm)
        raise AssertionError("unreachable")  # pragma: no cover

    def _late(self, action: str) -> LedgerUnavailable:
        return LedgerUnavailable(
            f"{self.url}: {action}: no answer within {self.call_timeout_s:g} s "
            "(connect_timeout + statement_timeout)"
        )

    def _error(
        self,
        exc: BaseException,
        action: str,
        conn: Connection | None = None,
        alarm: _Alarm | None = None,
        waited: float | None = None,
    ) -> LedgerError:
        """``exc`` as a LedgerError (LedgerUnavailable when the server is out of reach, the
        connection was lost or a timeout passed), with no password in it. ``waited``: the
        seconds the failed operation took (monotonic clock), which a timeout's message states."""
        state = _sqlstate(exc)
        text = _scrub(_describe(exc), self._target.secrets)
        if alarm is not None and alarm.fired:
            self._suspect = True
            return LedgerUnavailable(
                f"{self.url}: {action}: no answer from the PostgreSQL server within "
                f"{self.call_timeout_s:g} s (connect_timeout + statement_timeout); the connection "
                "was closed, and what the server did with the request is not known"
            )
        broken = conn is not None and (conn.broken or conn.closed)
        lost = (
            broken
            or state in _CONNECTION_LOST
            or (state is not None and state[:2] in ("08", "53"))
            or (
                state is None and isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
            )
        )
        if lost:
            self._suspect = True
            return LedgerUnavailable(
                f"{self.url}: {action}: the PostgreSQL server cannot be reached or the connection "
                f"was lost ({text})"
            )
        took = "" if waited is None else f"; gave up after waiting {waited:.3f} s"
        if state == "55P03":  # lock_not_available
            return LedgerUnavailable(
                f"{self.url}: {action}: another worker held a lock{took}"
                f" (lock_timeout {self.lock_timeout_s:g} s) ({text})"
            )
        if state == "57014":  # query_canceled: statement_timeout
            return LedgerUnavailable(
                f"{self.url}: {action}: the server took longer than statement_timeout "
                f"({self.statement_timeout_s:g} s){took} ({text})"
            )
        if state in _RETRYABLE:
            return LedgerUnavailable(
                f"{self.url}: {action}: gave up after {MAX_ATTEMPTS} tries ({text})"
            )
        if state == "42501":  # insufficient_privilege
            text += (
                f"; the role needs CREATE on the database to create schema {self.schema!r}, or "
                "an administrator creates it and grants the role USAGE and CREATE on it"
            )
        return LedgerError(f"{self.url}: {action}: {text}")

    # -- writes ------------------------------------------------------------------------------
    def reserve(
        self,
        *,
        hold_id: str,
        endpoint: str,
        amount: int,
        charges: Sequence[BucketCharge],
        now: float,
        expires_at: float,
        idempotency_key: str | None = None,
        tags: Mapping[str, str] | None = None,
        table_version: str | None = None,
        table_sha256: str | None = None,
        fingerprint: str | None = None,
        idempotency_ttl: float | None = None,
    ) -> Admission:
        """See :meth:`Ledger.reserve`."""
        amount, keys, now, expires_at, clean_tags = _checks.reservation(
            amount, charges, now, expires_at, tags
        )
        idempotency_key, fingerprint, idempotency_ttl = _checks.idempotency(
            idempotency_key, fingerprint, idempotency_ttl
        )
        charges = tuple(charges)
        limits: dict[str, int | None] = {}  # the smallest limit given for each key
        for charge in charges:
            if charge.key not in limits:
                limits[charge.key] = charge.limit
            elif charge.limit is not None:
                old = limits[charge.key]
                limits[charge.key] = charge.limit if old is None else min(old, charge.limit)
        rooms = [(key, _room(limits[key])) for key in sorted(keys)]
        values = {
            "endpoint": endpoint,
            "amount": amount,
            "buckets": list(keys),
            "now": now,
            "expires_at": expires_at,
            "idempotency_key": idempotency_key,
            "tags": Jsonb(clean_tags),
            "table_version": table_version,
            "table_sha256": table_sha256,
            "fingerprint": fingerprint,
            "idempotency_ttl": idempotency_ttl,
        }

        def admit(conn: Connection) -> Admission:
            reopen: str | None = None
            forget: str | None = None
            for _ in range(MAX_ATTEMPTS):
                if self._try_admit(
                    conn,
                    values,
                    rooms,
                    hold_id if reopen is None else reopen,
                    reopen is not None,
                    forget,
                ):
                    hold = Hold(
                        id=hold_id if reopen is None else reopen,
                        endpoint=endpoint,
                        amount=amount,
                        state="held",
                        buckets=keys,
                        created_at=now,
                        expires_at=expires_at,
                        updated_at=now,
                        idempotency_key=idempotency_key,
                        tags=dict(clean_tags),
                        table_version=table_version,
                        table_sha256=table_sha256,
                        fingerprint=fingerprint,
                        idempotency_ttl=idempotency_ttl,
                    )
                    return Admission(admitted=True, hold=hold)
                by_key, by_id, totals = self._inspect(conn, keys, hold_id, idempotency_key)
                reopen = forget = None
                if by_key is not None and _checks.key_forgotten(by_key, now):
                    forget = by_key.id  # unbound in the admission's transaction, if still bound
                elif by_key is not None:
                    if by_key.fingerprint != fingerprint:
                        return Admission(admitted=False, hold=by_key, conflict=True)
                    if not _checks.readmits(by_key):
                        return Admission(admitted=True, hold=by_key, replayed=True)
                    reopen = by_key.id
                if reopen is None and by_id is not None:
                    raise LedgerError(f"a hold with id {hold_id!r} already exists")
                for charge in charges:
                    settled, held = totals.get(charge.key, (0, 0))
                    if charge.limit is not None and settled + held + amount > charge.limit:
                        return Admission(
                            admitted=False,
                            refused_by=charge.key,
                            totals=BucketTotals(charge.key, settled, held),
                        )
                for key in keys:
                    if sum(totals.get(key, (0, 0))) + amount > _checks.MAX_MICROS:
                        raise LedgerError(
                            f"bucket {key!r} would exceed {_checks.MAX_MICROS} micro-USD"
                        )
                # it fits now: a concurrent change got in between; try again
            raise LedgerUnavailable(
                f"{self.url}: reserve: the totals kept changing; gave up after {MAX_ATTEMPTS} tries"
            )

        return self._run("reserve", admit)

    def _try_admit(
        self,
        conn: Connection,
        values: Mapping[str, Any],
        rooms: Sequence[tuple[str, int]],
        hold_id: str,
        reopen: bool,
        forget: str | None = None,
    ) -> bool:
        """One round trip: expire overdue holds (committed on its own), then in one transaction
        unbind the idempotency key from hold ``forget`` (when its lifetime is over), record the
        hold, charge every bucket in sorted order and commit. False when a guard refused, the
        hold id or idempotency key is taken, or another worker unbound the key first; the
        transaction is then aborted."""
        q = self._q
        params = {**values, "id": hold_id, "forget": forget}
        batch = _Batch().call(q.expire, params).sql("COMMIT").sql("BEGIN")
        if forget is not None:
            batch.call(q.forget_key, params)
        # The hold first: its row is new (or, re-opened, locked here), so writing it takes no
        # lock another admission waits for, and the buckets' row locks, taken last in key
        # order, are held only for the charges and the COMMIT.
        if reopen:
            batch.call(q.lock_released, params).call(q.reopen_hold, params)
        else:
            batch.call(q.insert_hold, params)
        for key, room in rooms:
            batch.call(q.charge, {"key": key, "amount": values["amount"], "room": room})
        batch.sql("COMMIT")
        try:
            batch.run(conn)
        except (pg_errors.DivisionByZero, pg_errors.UniqueViolation):
            return False
        return True

    def _inspect(
        self, conn: Connection, keys: Sequence[str], hold_id: str, idempotency_key: str | None
    ) -> tuple[Hold | None, Hold | None, dict[str, tuple[int, int]]]:
        """After a failed admission: roll back, then read in one snapshot the hold with this
        idempotency key, the hold with this id and the totals of the buckets."""
        q = self._q
        batch = _Batch()
        if conn.info.transaction_status != TransactionStatus.IDLE:
            batch.sql("ROLLBACK")
        batch.sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        batch.call(q.get_key_or_id, {"key": idempotency_key, "id": hold_id})
        batch.call(q.totals, {"keys": list(keys)})
        *_, found, totals, _ = batch.sql("COMMIT").run(conn)
        holds = [hold_from_row(row) for row in found]
        by_key = next(
            (
                h
                for h in holds
                if idempotency_key is not None and h.idempotency_key == idempotency_key
            ),
            None,
        )
        by_id = next((h for h in holds if h.id == hold_id), None)
        return by_key, by_id, {str(k): (int(s), int(h)) for k, s, h in totals}

    def mark_submitted(self, hold_id: str, request_id: str | None, *, now: float) -> Hold:
        """See :meth:`Ledger.mark_submitted`."""
        request_id = _checks.request_id(request_id)
        now = _checks.seconds("now", now)
        return self._update_hold(
            "mark_submitted",
            lambda q: q.mark_submitted,
            {"id": hold_id, "request_id": request_id, "now": now},
        )

    def renew(self, hold_id: str, *, now: float, expires_at: float) -> Hold:
        """See :meth:`Ledger.renew`."""
        now = _checks.seconds("now", now)
        expires_at = _checks.seconds("expires_at", expires_at)
        return self._update_hold(
            "renew", lambda q: q.renew, {"id": hold_id, "now": now, "expires_at": expires_at}
        )

    def settle(self, hold_id: str, amount: int | None, *, now: float) -> Hold:
        """See :meth:`Ledger.settle`."""
        if amount is not None:
            amount = _checks.micros("amount", amount)
        now = _checks.seconds("now", now)
        return self._update_hold(
            "settle", lambda q: q.settle, {"id": hold_id, "amount": amount, "now": now}
        )

    def release(self, hold_id: str, *, now: float) -> Hold:
        """See :meth:`Ledger.release`."""
        now = _checks.seconds("now", now)
        return self._update_hold("release", lambda q: q.release, {"id": hold_id, "now": now})

    def _update_hold(
        self,
        action: str,
        statement: Callable[[_Queries], _Statement],
        params: Mapping[str, Any],
    ) -> Hold:
        """One round trip: ``statement`` changes the hold if it is open (and its buckets, in
        sorted order), then the hold is read as it is; both in one implicit transaction."""

        def work(conn: Connection) -> Hold:
            changed, current = (
                _Batch().call(statement(self._q), params).call(self._q.get_hold, params).run(conn)
            )
            rows = changed or current
            if not rows:
                raise HoldNotFound(f"no hold has id {params['id']!r}")
            return hold_from_row(rows[0])

        return self._run(action, work)

    def expire(self, *, now: float) -> list[Hold]:
        """See :meth:`Ledger.expire`; in order of expiry. A hold that another transaction holds
        locked at that moment (it is being settled, renewed or expired) is left to it."""
        now = _checks.seconds("now", now)

        def work(conn: Connection) -> list[Hold]:
            (rows,) = _Batch().call(self._q.expire, {"now": now}).run(conn)
            return [hold_from_row(row) for row in rows]

        return self._run("expire", work)

    def claim_alert(self, bucket: str, threshold: str) -> bool:
        """See :meth:`Ledger.claim_alert`."""

        def work(conn: Connection) -> bool:
            values = {"bucket": bucket, "threshold": threshold}
            (rows,) = _Batch().call(self._q.claim_alert, values).run(conn)
            return len(rows) == 1

        return self._run("claim_alert", work)

    def adjust(
        self, hold_id: str, amount: int, *, now: float, reason: str, source: str
    ) -> Adjustment | None:
        """See :meth:`Ledger.adjust`. One transaction: the hold's row is locked first, then its
        buckets in sorted key order (the order every transaction takes them in)."""
        amount, now, reason, source = _checks.adjustment(amount, now, reason, source)
        s = sql.Identifier(self.schema)
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in _HOLD_COLUMNS)

        def work(conn: Connection) -> Adjustment | None:
            with conn.transaction():
                row = conn.execute(
                    sql.SQL("SELECT {} FROM {}.holds WHERE id = %s FOR UPDATE").format(cols, s),
                    (hold_id,),
                ).fetchone()
                if row is None:
                    raise HoldNotFound(f"no hold has id {hold_id!r}")
                hold = hold_from_row(row)
                delta = _checks.adjustment_delta(hold, amount)
                if delta is None:
                    return None
                totals = conn.execute(
                    sql.SQL(
                        "SELECT key, settled + held FROM {}.buckets WHERE key = ANY(%s::text[]) "
                        "ORDER BY key FOR UPDATE"
                    ).format(s),
                    (list(hold.buckets),),
                ).fetchall()
                missing = _checks.missing_buckets(hold, [str(key) for key, _ in totals])
                if missing is not None:
                    raise missing
                for key, used in totals:
                    if int(used) + delta > _checks.MAX_MICROS:
                        raise LedgerError(
                            f"bucket {key!r} would exceed {_checks.MAX_MICROS} micro-USD"
                        )
                conn.execute(
                    sql.SQL(
                        "UPDATE {}.buckets SET settled = settled + %s WHERE key = ANY(%s::text[])"
                    ).format(s),
                    (delta, list(hold.buckets)),
                )
                conn.execute(
                    sql.SQL("UPDATE {}.holds SET adjusted_amount = %s WHERE id = %s").format(s),
                    (amount, hold.id),
                )
                written = conn.execute(
                    sql.SQL(
                        "INSERT INTO {}.adjustments (hold_id, previous, amount, delta, reason, "
                        "source, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {}"
                    ).format(s, _ADJUSTMENT_COLUMNS),
                    (hold.id, amount - delta, amount, delta, reason, source, now),
                ).fetchone()
                assert written is not None
                return adjustment_from_row(written)

        return self._run("adjust", work)

    def record_refusal(self, refusal: Refusal) -> None:
        """See :meth:`Ledger.record_refusal`: one statement (its own transaction) inserts the
        row and deletes what the retention and the row bound let go (identities only grow, so
        ``id <= new id - REFUSAL_MAX_ROWS`` leaves at most that many rows)."""
        row = _checks.refusal(refusal)
        query = sql.SQL(
            """WITH new AS (
                INSERT INTO {s}.refusals (at, endpoint, reason, cap, amount, tags)
                VALUES (%(at)s, %(endpoint)s, %(reason)s, %(cap)s, %(amount)s, %(tags)s)
                RETURNING id
            ), by_rows AS (
                DELETE FROM {s}.refusals WHERE id <= (SELECT id FROM new) - %(rows)s
            ), by_age AS (
                DELETE FROM {s}.refusals WHERE at < %(cutoff)s
            )
            SELECT id FROM new"""
        ).format(s=sql.Identifier(self.schema))
        values = {
            "at": row.at,
            "endpoint": row.endpoint,
            "reason": row.reason,
            "cap": row.cap,
            "amount": row.amount,
            "tags": Jsonb(dict(row.tags)),
            "rows": REFUSAL_MAX_ROWS,
            "cutoff": row.at - REFUSAL_RETENTION,
        }

        def work(conn: Connection) -> None:
            conn.execute(query, values)

        self._run("record_refusal", work)

    # -- reads -------------------------------------------------------------------------------
    def refusals(
        self, *, since: float | None = None, until: float | None = None, limit: int = 100
    ) -> list[Refusal]:
        """See :meth:`Ledger.refusals`."""
        low, high, limit = _checks.refusal_range(since, until, limit)
        where, params = _refusal_range(low, high)
        params["limit"] = limit
        query = sql.SQL(
            "SELECT at, endpoint, reason, cap, amount, tags FROM {s}.refusals{where}"
            " ORDER BY at DESC, id DESC LIMIT %(limit)s"
        ).format(s=sql.Identifier(self.schema), where=where)

        def work(conn: Connection) -> list[Refusal]:
            return [
                Refusal(float(at), str(ep), str(why), cap, int(amount), dict(tags))
                for at, ep, why, cap, amount, tags in conn.execute(query, params).fetchall()
            ]

        return self._run("refusals", work)

    def refusal_counts(
        self, *, since: float | None = None, until: float | None = None
    ) -> dict[tuple[str, str | None], int]:
        """See :meth:`Ledger.refusal_counts`."""
        low, high, _ = _checks.refusal_range(since, until)
        where, params = _refusal_range(low, high)
        query = sql.SQL(
            "SELECT endpoint, cap, COUNT(*) FROM {s}.refusals{where} GROUP BY endpoint, cap"
        ).format(s=sql.Identifier(self.schema), where=where)

        def work(conn: Connection) -> dict[tuple[str, str | None], int]:
            return {(str(ep), cap): int(n) for ep, cap, n in conn.execute(query, params).fetchall()}

        return self._run("refusal_counts", work)

    def adjustments(self, hold_id: str | None = None) -> list[Adjustment]:
        """See :meth:`Ledger.adjustments`."""
        query = sql.SQL("SELECT {} FROM {}.adjustments").format(
            _ADJUSTMENT_COLUMNS, sql.Identifier(self.schema)
        )
        params: dict[str, Any] = {}
        if hold_id is not None:
            query += sql.SQL(" WHERE hold_id = %(hold_id)s")
            params["hold_id"] = hold_id
        query += sql.SQL(" ORDER BY id")

        def work(conn: Connection) -> list[Adjustment]:
            return [adjustment_from_row(row) for row in conn.execute(query, params).fetchall()]

        return self._run("adjustments", work)

    def holds_by_request_id(self, request_ids: Sequence[str]) -> list[Hold]:
        """See :meth:`Ledger.holds_by_request_id`."""
        wanted = list(_checks.request_ids(request_ids))
        if not wanted:
            return []
        query = sql.SQL(
            "SELECT {} FROM {}.holds WHERE request_id = ANY(%s::text[]) ORDER BY created_at, seq"
        ).format(
            sql.SQL(", ").join(sql.Identifier(c) for c in _HOLD_COLUMNS),
            sql.Identifier(self.schema),
        )

        def work(conn: Connection) -> list[Hold]:
            return [hold_from_row(row) for row in conn.execute(query, (wanted,)).fetchall()]

        return self._run("holds_by_request_id", work)

    def create_key(
        self, key_id: str, digest: str, tags: Mapping[str, str], *, now: float
    ) -> ApiKey:
        """See :meth:`Ledger.create_key`."""
        key_id, digest, clean, at = _checks.api_key(key_id, digest, tags, now)
        query = sql.SQL(
            "INSERT INTO {}.api_keys (id, digest, tags, created_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING RETURNING id"
        ).format(sql.Identifier(self.schema))

        def work(conn: Connection) -> bool:
            with conn.transaction():
                return (
                    conn.execute(query, (key_id, digest, Jsonb(clean), at)).fetchone() is not None
                )

        if not self._run("create_key", work):
            raise LedgerError(f"a key with id {key_id!r} or its digest is already recorded")
        return ApiKey(key_id, digest, clean, at)

    def find_key(self, digest: str) -> ApiKey | None:
        """See :meth:`Ledger.find_key`."""
        query = sql.SQL("SELECT {} FROM {}.api_keys WHERE digest = %s").format(
            _KEY_COLUMNS, sql.Identifier(self.schema)
        )

        def work(conn: Connection) -> ApiKey | None:
            row = conn.execute(query, (digest,)).fetchone()
            return None if row is None else _api_key(row)

        return self._run("find_key", work)

    def api_keys(self) -> list[ApiKey]:
        """See :meth:`Ledger.api_keys`."""
        query = sql.SQL("SELECT {} FROM {}.api_keys ORDER BY created_at, seq").format(
            _KEY_COLUMNS, sql.Identifier(self.schema)
        )

        def work(conn: Connection) -> list[ApiKey]:
            return [_api_key(row) for row in conn.execute(query).fetchall()]

        return self._run("api_keys", work)

    def revoke_key(self, key_id: str, *, now: float) -> ApiKey:
        """See :meth:`Ledger.revoke_key`."""
        at = _checks.seconds("now", now)
        s = sql.Identifier(self.schema)
        update = sql.SQL(
            "UPDATE {}.api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL"
        ).format(s)
        select_ = sql.SQL("SELECT {} FROM {}.api_keys WHERE id = %s").format(_KEY_COLUMNS, s)

        def work(conn: Connection) -> ApiKey | None:
            with conn.transaction():
                conn.execute(update, (at, key_id))
                row = conn.execute(select_, (key_id,)).fetchone()
            return None if row is None else _api_key(row)

        key = self._run("revoke_key", work)
        if key is None:
            raise KeyNotFound(f"no key has id {key_id!r}")
        return key

    def get_hold(self, hold_id: str) -> Hold:
        """See :meth:`Ledger.get_hold`."""

        def work(conn: Connection) -> Hold:
            (rows,) = _Batch().call(self._q.get_hold, {"id": hold_id}).run(conn)
            if not rows:
                raise HoldNotFound(f"no hold has id {hold_id!r}")
            return hold_from_row(rows[0])

        return self._run("get_hold", work)

    def totals(self, keys: Sequence[str]) -> list[BucketTotals]:
        """See :meth:`Ledger.totals`."""
        keys = list(keys)
        wanted = list(dict.fromkeys(keys))

        def work(conn: Connection) -> dict[str, tuple[int, int]]:
            (rows,) = _Batch().call(self._q.totals, {"keys": wanted}).run(conn)
            return {str(k): (int(s), int(h)) for k, s, h in rows}

        found = self._run("totals", work) if wanted else {}
        return [BucketTotals(key, *found.get(key, (0, 0))) for key in keys]

    def buckets(self, *, prefix: str = "") -> list[BucketTotals]:
        """Every bucket whose key starts with ``prefix``, sorted by key."""
        low = prefix
        high: str | None = None
        if prefix:
            last = ord(prefix[-1])
            if last < 0xD7FF or 0xE000 <= last < 0x10FFFF:
                high = prefix[:-1] + chr(last + 1)

        def work(conn: Connection) -> list[tuple[Any, ...]]:
            (rows,) = _Batch().call(self._q.buckets, {"low": low, "high": high}).run(conn)
            return rows

        return [
            BucketTotals(str(key), int(settled), int(held))
            for key, settled, held in self._run("buckets", work)
            if str(key).startswith(prefix)
        ]

    def holds(
        self,
        *,
        states: Sequence[HoldState] | None = None,
        bucket: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
        overrun: bool = False,
    ) -> list[Hold]:
        """See :meth:`Ledger.holds`."""
        wanted = _checks.check_states(states)
        limit = _checks.check_limit(limit)
        if wanted == ():
            return []
        where: list[sql.Composable] = []
        params: dict[str, Any] = {}
        source = sql.SQL("{s}.holds AS h")
        time_column = sql.SQL("h.created_at")
        if bucket is not None:  # the hold's own array of buckets (schema 5 keeps no other)
            where.append(sql.SQL("%(bucket)s::text = ANY(h.buckets)"))
            params["bucket"] = bucket
        if wanted is not None:
            where.append(sql.SQL("h.state = ANY(%(states)s::text[])"))
            params["states"] = list(wanted)
        if since is not None:
            where.append(sql.SQL("{t} >= %(since)s::float8").format(t=time_column))
            params["since"] = _checks.seconds("since", since)
        if until is not None:
            where.append(sql.SQL("{t} < %(until)s::float8").format(t=time_column))
            params["until"] = _checks.seconds("until", until)
        if overrun:  # the partial index's own term, so that the planner may read it; the exact
            where.append(sql.SQL(_OVERRUN_INDEXED.format(h="h.")))
            where.append(sql.SQL(_OVERRUN.format(h="h.")))
        query = sql.SQL("SELECT {cols} FROM {source}").format(
            cols=sql.SQL(", ").join(sql.SQL("h.") + sql.Identifier(c) for c in _HOLD_COLUMNS),
            source=source.format(s=sql.Identifier(self.schema)),
        )
        if where:
            query += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where)
        query += sql.SQL(" ORDER BY {t} DESC, h.seq DESC").format(t=time_column)
        if limit is not None:
            query += sql.SQL(" LIMIT %(limit)s::bigint")
            params["limit"] = limit

        def work(conn: Connection) -> list[Hold]:
            return [hold_from_row(row) for row in conn.execute(query, params).fetchall()]

        return self._run("holds", work)

    def iter_holds(
        self,
        *,
        states: Sequence[HoldState] | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> Iterator[Hold]:
        """See :meth:`Ledger.iter_holds`: pages of :data:`PAGE` holds, each one statement
        within the call timeout, each starting after the last hold of the one before (by
        created_at and the insertion order), read through ``holds_by_created``."""
        wanted = _checks.check_states(states)
        if wanted == ():
            return
        where: list[sql.Composable] = []
        params: dict[str, Any] = {"page": PAGE}
        if wanted is not None:
            where.append(sql.SQL("state = ANY(%(states)s::text[])"))
            params["states"] = list(wanted)
        if since is not None:
            where.append(sql.SQL("created_at >= %(since)s::float8"))
            params["since"] = _checks.seconds("since", since)
        if until is not None:
            where.append(sql.SQL("created_at < %(until)s::float8"))
            params["until"] = _checks.seconds("until", until)
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in _HOLD_COLUMNS)
        schema = sql.Identifier(self.schema)

        def page(after: tuple[float, int] | None) -> list[tuple[Any, ...]]:
            clauses = list(where)
            if after is not None:
                clauses.append(sql.SQL("(created_at, seq) < (%(at)s::float8, %(seq)s::bigint)"))
                params["at"], params["seq"] = after
            query = sql.SQL("SELECT {cols}, seq FROM {s}.holds").format(cols=columns, s=schema)
            if clauses:
                query += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses)
            query += sql.SQL(" ORDER BY created_at DESC, seq DESC LIMIT %(page)s::bigint")
            return self._run("holds", lambda conn: list(conn.execute(query, params).fetchall()))

        after: tuple[float, int] | None = None
        while True:
            rows = page(after)
            for row in rows:
                yield hold_from_row(row[:-1])
            if len(rows) < PAGE:
                return
            last = rows[-1]
            after = (float(last[5]), int(last[-1]))

    def summarize(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        period: int = 86_400,
        offset: int = 0,
        cuts: Sequence[float] = (),
    ) -> list[HoldGroup]:
        """See :meth:`Ledger.summarize`: one GROUP BY in the server; only the groups travel."""
        since, until, period, offset, cut = _checks.summary(since, until, period, offset, cuts)
        params: dict[str, Any] = {
            "offset": offset,
            "period": period,
            "visitor_tags": list(VISITOR_TAGS),
            "visitor_prefixes": [f"{tag}=" for tag in VISITOR_TAGS],
        }
        place: list[sql.Composable] = [sql.SQL("0")]
        for index, moment in enumerate(cut):
            params[f"c{index}"] = moment
            place.append(sql.SQL("(created_at >= {})::int").format(sql.Placeholder(f"c{index}")))
        where: list[sql.Composable] = []
        if since is not None:
            where.append(sql.SQL("created_at >= %(since)s::float8"))
            params["since"] = since
        if until is not None:
            where.append(sql.SQL("created_at < %(until)s::float8"))
            params["until"] = until
        query = sql.SQL(_SUMMARY).format(
            s=sql.Identifier(self.schema),
            place=sql.SQL(" + ").join(place),
            where=sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""),
        )

        def work(conn: Connection) -> list[HoldGroup]:
            return [
                HoldGroup(
                    endpoint,
                    dict(tags),
                    tuple(buckets),
                    float(first),
                    float(last),
                    *(int(value) for value in figures),
                )
                for endpoint, tags, buckets, first, last, *figures in conn.execute(
                    query, params
                ).fetchall()
            ]

        return self._run("summarize", work)

    # -- life cycle --------------------------------------------------------------------------
    def close(self) -> None:
        """Close the pool; the object cannot be used afterwards."""
        with self._lock:
            pool, self._pool = self._pool, None
            self._closed = True
        if pool is not None and self._pid == os.getpid():
            with suppress(Exception):
                pool.close()

    def __enter__(self) -> PostgresLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresLedger({self.url!r})"


# -- the SQL -------------------------------------------------------------------------------------
_PARAM = re.compile(r"%\((\w+)\)s::(\w+(?:\[\])?)")


@dataclass(frozen=True)
class _Statement:
    """A statement PREPAREd on every pooled connection: ``EXECUTE name(params...)``."""

    name: str
    params: tuple[str, ...]


class _Batch:
    """Statements sent as one multi-statement query (one round trip). Values are bound client
    side by psycopg (quoted literals); the statements' plans were prepared on the connection."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._values: dict[str, Any] = {}

    def sql(self, text: str) -> _Batch:
        self._parts.append(text)
        return self

    def call(self, statement: _Statement, values: Mapping[str, Any]) -> _Batch:
        n = len(self._parts)
        names = [f"v{n}_{i}" for i in range(len(statement.params))]
        self._parts.append(f"EXECUTE {statement.name}({', '.join(f'%({k})s' for k in names)})")
        self._values.update(zip(names, (values[p] for p in statement.params), strict=True))
        return self

    def run(self, conn: Connection) -> list[list[TupleRow]]:
        """Run the batch; the rows of each statement (none for commands)."""
        cursor = psycopg.ClientCursor(conn)
        cursor.execute("; ".join(self._parts).encode(), self._values)
        results: list[list[TupleRow]] = []
        while True:
            result = cursor.pgresult
            rows = result is not None and result.status == ExecStatus.TUPLES_OK
            results.append(cursor.fetchall() if rows else [])
            if not cursor.nextset():
                return results


class _Queries:
    """Every hot statement, prepared for one schema (``prepare_all`` runs on each connection)."""

    def __init__(self, schema: sql.Identifier, context: Connection) -> None:
        self._schema = schema
        self._context = context
        self._prepare: list[bytes] = []
        # Close overdue holds (expiry order), then move their amounts in their buckets, which are
        # locked in key order first (the order every transaction locks buckets in). A hold locked
        # by another transaction (being settled, renewed or expired) is skipped.
        self.expire = self._add(
            "fb_expire",
            f"""WITH due AS (
                SELECT id FROM {{s}}.holds WHERE {_OPEN} AND expires_at < %(now)s::float8
                ORDER BY expires_at, id FOR UPDATE SKIP LOCKED
            ), closed AS (
                UPDATE {{s}}.holds AS h SET
                    state = CASE WHEN h.state = 'submitted' THEN 'expired' ELSE 'released' END,
                    settled_amount = CASE WHEN h.state = 'submitted' THEN h.amount END,
                    updated_at = %(now)s::float8
                FROM due WHERE h.id = due.id
                RETURNING {{h_cols}}
            ), moves AS (
                SELECT k.key, sum(c.amount)::bigint AS held,
                    sum(coalesce(c.settled_amount, 0))::bigint AS spent
                FROM closed AS c CROSS JOIN LATERAL unnest(c.buckets) AS k(key)
                GROUP BY k.key
            ), locked AS MATERIALIZED (
                SELECT b.key, m.held, m.spent FROM {{s}}.buckets AS b JOIN moves AS m
                    ON m.key = b.key
                ORDER BY b.key FOR UPDATE OF b
            ), moved AS (
                UPDATE {{s}}.buckets AS b SET held = b.held - l.held, settled = b.settled + l.spent
                FROM locked AS l WHERE b.key = l.key
            )
            SELECT {{cols}} FROM closed ORDER BY expires_at, id""",
        )
        # One bucket of an admission: create it or take its row lock, and add the amount only if
        # settled + held + amount <= room. Charged nothing: division by zero aborts the
        # transaction (a new bucket row whose amount alone exceeds the room is rolled back too).
        self.charge = self._add(
            "fb_charge",
            """WITH charged AS (
                INSERT INTO {s}.buckets AS b (key, settled, held)
                VALUES (%(key)s::text, 0, %(amount)s::bigint)
                ON CONFLICT (key) DO UPDATE SET held = b.held + excluded.held
                WHERE b.settled + b.held <= %(room)s::bigint - excluded.held
                RETURNING b.settled, b.held
            )
            SELECT 1 / count(*) FROM charged WHERE settled + held <= %(room)s::bigint""",
        )
        self.insert_hold = self._add(
            "fb_insert_hold",
            """INSERT INTO {s}.holds (id, endpoint, amount, state, buckets, created_at,
                expires_at, updated_at, idempotency_key, tags, table_version, table_sha256,
                fingerprint, idempotency_ttl)
            VALUES (%(id)s::text, %(endpoint)s::text, %(amount)s::bigint, 'held',
                %(buckets)s::text[], %(now)s::float8, %(expires_at)s::float8, %(now)s::float8,
                %(idempotency_key)s::text, %(tags)s::jsonb, %(table_version)s::text,
                %(table_sha256)s::text, %(fingerprint)s::text, %(idempotency_ttl)s::float8)""",
        )
        # An idempotency key whose hold closed more than its lifetime ago is unbound (the hold
        # keeps it in the history) so that a new hold may take it. The row lock makes a worker
        # doing the same wait; it then finds the key already unbound, and division by zero
        # aborts its transaction: it re-reads the key's new hold.
        self.forget_key = self._add(
            "fb_forget_key",
            f"""WITH f AS (
                UPDATE {{s}}.holds SET key_forgotten_at = %(now)s::float8
                WHERE id = %(forget)s::text AND key_forgotten_at IS NULL AND NOT ({_OPEN})
                    AND updated_at + idempotency_ttl < %(now)s::float8
                RETURNING 1
            )
            SELECT 1 / count(*) FROM f""",
        )
        # A released hold re-admitted under its idempotency key: locked first, and still
        # released and not billed (never adjusted, or adjusted back to 0: _checks.readmits); else
        # division by zero aborts, and the caller replays it.
        self.lock_released = self._add(
            "fb_lock_released",
            """WITH r AS (
                SELECT id FROM {s}.holds
                WHERE id = %(id)s::text AND state = 'released'
                    AND coalesce(adjusted_amount, 0) = 0
                FOR UPDATE
            )
            SELECT 1 / count(*) FROM r""",
        )
        self.reopen_hold = self._add(
            "fb_reopen_hold",
            """UPDATE {s}.holds SET endpoint = %(endpoint)s::text, amount = %(amount)s::bigint,
                state = 'held', buckets = %(buckets)s::text[], created_at = %(now)s::float8,
                expires_at = %(expires_at)s::float8, updated_at = %(now)s::float8,
                idempotency_key = %(idempotency_key)s::text, tags = %(tags)s::jsonb,
                table_version = %(table_version)s::text, table_sha256 = %(table_sha256)s::text,
                fingerprint = %(fingerprint)s::text, idempotency_ttl = %(idempotency_ttl)s::float8,
                request_id = NULL, settled_amount = NULL, adjusted_amount = NULL
            WHERE id = %(id)s::text""",
        )
        # Close one open hold, then move its amount in its buckets (locked in key order first).
        close_hold = f"""WITH closed AS (
                UPDATE {{s}}.holds SET state = {{state}}, settled_amount = {{spent}},
                    updated_at = %(now)s::float8
                WHERE id = %(id)s::text AND {_OPEN}
                RETURNING {{cols}}
            ), locked AS MATERIALIZED (
                SELECT b.key FROM {{s}}.buckets AS b
                WHERE b.key IN (SELECT unnest(buckets) FROM closed)
                ORDER BY b.key FOR UPDATE
            ), moved AS (
                UPDATE {{s}}.buckets AS b SET held = b.held - c.amount,
                    settled = b.settled + coalesce(c.settled_amount, 0)
                FROM closed AS c, locked AS l WHERE b.key = l.key
            )
            SELECT {{cols}} FROM closed"""
        self.settle = self._add(
            "fb_settle",
            close_hold,
            state=sql.Literal("settled"),
            spent=sql.SQL("coalesce(%(amount)s::bigint, amount)"),
        )
        self.release = self._add(
            "fb_release", close_hold, state=sql.Literal("released"), spent=sql.SQL("NULL")
        )
        self.mark_submitted = self._add(
            "fb_mark_submitted",
            f"""UPDATE {{s}}.holds SET state = 'submitted',
                request_id = coalesce(%(request_id)s::text, request_id),
                updated_at = %(now)s::float8
            WHERE id = %(id)s::text AND {_OPEN} RETURNING {{cols}}""",
        )
        self.renew = self._add(
            "fb_renew",
            f"""UPDATE {{s}}.holds SET expires_at = %(expires_at)s::float8,
                updated_at = %(now)s::float8
            WHERE id = %(id)s::text AND {_OPEN} RETURNING {{cols}}""",
        )
        self.get_hold = self._add(
            "fb_get_hold", "SELECT {cols} FROM {s}.holds WHERE id = %(id)s::text"
        )
        self.get_key_or_id = self._add(
            "fb_get_key_or_id",
            """SELECT {cols} FROM {s}.holds
            WHERE (idempotency_key = %(key)s::text AND key_forgotten_at IS NULL)
                OR id = %(id)s::text""",
        )
        self.totals = self._add(
            "fb_totals",
            "SELECT key, settled, held FROM {s}.buckets WHERE key = ANY(%(keys)s::text[])",
        )
        self.buckets = self._add(
            "fb_buckets",
            """SELECT key, settled, held FROM {s}.buckets
            WHERE key >= %(low)s::text AND (%(high)s::text IS NULL OR key < %(high)s::text)
            ORDER BY key""",
        )
        self.claim_alert = self._add(
            "fb_claim_alert",
            """INSERT INTO {s}.alerts (bucket, threshold)
            VALUES (%(bucket)s::text, %(threshold)s::text) ON CONFLICT DO NOTHING RETURNING 1""",
        )
        self.prepare_all = b"; ".join(self._prepare)
        """Every PREPARE, run by each pooled connection when it opens."""

    def _add(self, name: str, text: str, **extra: sql.Composable) -> _Statement:
        """Turn ``%(param)s::type`` placeholders into ``$n`` and queue ``PREPARE name``."""
        params: list[str] = []
        types: list[str] = []

        def number(match: re.Match[str]) -> str:
            param, kind = match.group(1), match.group(2)
            if param not in params:
                params.append(param)
                types.append(kind)
            elif types[params.index(param)] != kind:  # pragma: no cover - a typo in the SQL
                raise AssertionError(f"{name}: {param} used as {kind} and as another type")
            return f"${params.index(param) + 1}::{kind}"

        cols = sql.SQL(", ").join(sql.Identifier(c) for c in _HOLD_COLUMNS)
        h_cols = sql.SQL(", ").join(sql.Identifier("h", c) for c in _HOLD_COLUMNS)
        body = sql.SQL(text).format(s=self._schema, cols=cols, h_cols=h_cols, **extra)
        numbered = _PARAM.sub(number, body.as_string(self._context))
        head = f"PREPARE {name} ({', '.join(types)}) AS " if types else f"PREPARE {name} AS "
        self._prepare.append((head + numbered).encode())
        return _Statement(name, tuple(params))


def _refusal_range(
    since: float | None, until: float | None
) -> tuple[sql.Composable, dict[str, Any]]:
    where: list[sql.Composable] = []
    params: dict[str, Any] = {}
    if since is not None:
        where.append(sql.SQL("at >= %(since)s::float8"))
        params["since"] = since
    if until is not None:
        where.append(sql.SQL("at < %(until)s::float8"))
        params["until"] = until
    if not where:
        return sql.SQL(""), params
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where), params


# -- schema versions -----------------------------------------------------------------------------
def _schema_version(conn: Connection, schema: str) -> int:
    """The version recorded in ``schema``'s meta table; 0 when there is none."""
    exists = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = 'meta'",
        (schema,),
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute(
        sql.SQL("SELECT value FROM {}.meta WHERE key = 'schema_version'").format(
            sql.Identifier(schema)
        )
    ).fetchone()
    if row is None:
        return 0
    try:
        return int(row[0])
    except (TypeError, ValueError):
        raise LedgerError(f"unreadable schema_version {row[0]!r} in schema {schema!r}") from None


def _apply_migrations(conn: Connection, schema: str, version: int) -> None:
    """Inside the caller's transaction (which holds the advisory lock): from ``version`` on."""
    ident = sql.Identifier(schema)
    if version == 0:
        found = conn.execute(
            "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (schema,)
        ).fetchone()
        if found is None:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            ).format(ident)
        )
    for migration in MIGRATIONS[version:]:
        migration(conn, ident)
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.meta (key, value) VALUES ('schema_version', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        ).format(ident),
        (str(latest_version()),),
    )


def _check_version(target: _Target, version: int) -> None:
    latest = latest_version()
    if version > latest:
        raise LedgerError(
            f"{target.shown}: schema {target.schema!r} is at version {version}, newer than this "
            f"falbudget supports ({latest}); upgrade falbudget to use this ledger"
        )
    if version < latest:
        raise LedgerError(
            f"{target.shown}: schema {target.schema!r} is at version {version} and this falbudget "
            f"needs version {latest}; upgrade it with `falbudget ledger migrate URL` (stop the "
            "workers of the older falbudget first)"
        )


def _prepare_schema(conn: Connection, target: _Target, *, create: bool) -> None:
    """Check the schema's version; create a missing schema when ``create``. Safe when several
    workers start at once: creation happens under a transaction-scoped advisory lock and
    re-reads the version once it holds the lock. An older schema is never upgraded here."""
    version = _schema_version(conn, target.schema)
    if version == 0 and not create:
        raise LedgerNotFound(
            f"{target.shown}: no ledger: schema {target.schema!r} holds no falbudget ledger, and a"
            " command that only reads creates none (check the URL and its schema=)"
        )
    if version == 0 and create:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
            version = _schema_version(conn, target.schema)
            if version == 0:
                _apply_migrations(conn, target.schema, 0)
                return
    _check_version(target, version)


def migrate(url: str) -> tuple[int, int]:
    """Bring the schema ``url`` names to this falbudget's version; returns (from, to).

    Creates a missing schema; upgrades an older one in one transaction (under the same advisory
    lock as creation); refuses one newer than this falbudget with LedgerError. Stop the workers
    of an older falbudget before you migrate: they check the version only when they start.
    """
    target = _parse_url(url)
    ledger = PostgresLedger(url)
    conn = ledger._connect_direct()
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
            version = _schema_version(conn, target.schema)
            if version > latest_version():
                _check_version(target, version)
            if version < latest_version():
                _apply_migrations(conn, target.schema, version)
        return version, latest_version()
    except psycopg.Error as exc:
        raise ledger._error(exc, "migrate", conn) from None
    finally:
        with suppress(Exception):
            conn.close()
        ledger.close()


# -- helpers -------------------------------------------------------------------------------------
def _sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) else None


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    state = _sqlstate(exc)
    return f"{text} [SQLSTATE {state}]" if state else text


def _looks_alive(conn: Connection) -> bool:
    """An idle connection has nothing to read: input waiting means the server closed it (or
    sent the FATAL message that comes before). Costs a poll, no round trip."""
    if conn.closed or conn.broken:
        return False
    try:
        fd = conn.fileno()
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLPRI)
            return not poller.poll(0)
        readable, _, _ = select.select([fd], [], [], 0)
        return not readable
    except (OSError, ValueError, psycopg.Error):
        return False


def _millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class _Alarm:
    """One armed deadline of :class:`_Watchdog` for one connection's socket."""

    __slots__ = ("deadline", "fd", "fired", "inode", "watchdog")

    def __init__(self, watchdog: _Watchdog, fd: int, inode: int, deadline: float) -> None:
        self.watchdog = watchdog
        self.fd = fd
        self.inode = inode
        self.deadline = deadline
        self.fired = False

    def disarm(self) -> None:
        self.watchdog.disarm(self)


class _Watchdog:
    """Shuts down the socket of a connection still busy at its deadline (time.monotonic()).

    psycopg waits for the server's answer without a limit of its own; a server that cannot
    answer (a network that drops packets, a frozen host, a peer that acknowledges and never
    replies) would hold the call for as long as that lasts. ``shutdown(SHUT_RDWR)`` on the
    socket wakes that wait at once: libpq reports the connection lost and psycopg marks it
    broken. The socket is never closed here (its descriptor stays the connection's); an alarm
    is disarmed before its connection is closed, and the socket's inode is checked before the
    shutdown, so another connection reusing the descriptor number is never touched.

    One daemon thread per process, started on first use (again in a forked child); it sleeps
    until the earliest deadline and is woken only when an earlier one is armed.
    """

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._alarms: set[_Alarm] = set()
        self._wake_at = float("inf")
        self._thread: threading.Thread | None = None

    def arm(self, conn: Connection, deadline: float) -> _Alarm:
        fd = conn.fileno()
        alarm = _Alarm(self, fd, os.fstat(fd).st_ino, deadline)
        with self._cond:
            self._alarms.add(alarm)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="falbudget-watchdog", daemon=True
                )
                self._thread.start()
            if deadline < self._wake_at:
                self._wake_at = deadline
                self._cond.notify()
        return alarm

    def disarm(self, alarm: _Alarm) -> None:
        with self._cond:
            self._alarms.discard(alarm)

    def _loop(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for alarm in [a for a in self._alarms if a.deadline <= now]:
                    self._alarms.discard(alarm)
                    alarm.fired = True
                    _shutdown(alarm.fd, alarm.inode)
                self._wake_at = min((a.deadline for a in self._alarms), default=float("inf"))
                wait = self._wake_at - now if self._alarms else None
                self._cond.wait(wait)


def _shutdown(fd: int, inode: int) -> None:
    """Shut the socket ``fd`` down both ways if it is still the one with ``inode``."""
    with suppress(OSError):
        if os.fstat(fd).st_ino != inode:
            return
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


_WATCHDOG: Final = _Watchdog()


def _backoff(attempt: int) -> None:
    time.sleep(min(0.2, 0.002 * 2**attempt) * random.uniform(0.5, 1.0))


def _room(limit: int | None) -> int:
    """What a bucket may hold in all: its limit, or for a tracker the largest total stored."""
    return _checks.MAX_MICROS if limit is None else limit
