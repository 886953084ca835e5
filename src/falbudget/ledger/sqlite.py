"""A ledger in one SQLite file, shared by any number of threads and processes on one machine.

Every write is one ``BEGIN IMMEDIATE`` transaction: the write lock is taken before anything is
read, so two writers never both read the same totals and a writer never fails to upgrade a read
lock. The file runs in WAL mode, so readers do not wait for writers. Admission reads only the
touched bucket rows and the index of overdue open holds: it costs the same at any history size.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import quote

from falbudget.errors import (
    HoldNotFound,
    KeyNotFound,
    LedgerError,
    LedgerNotFound,
    LedgerUnavailable,
)
from falbudget.ledger import _checks
from falbudget.ledger._rows import adjustment_from_row, hold_from_row
from falbudget.ledger.base import (
    DEFAULT_IDEMPOTENCY_TTL,
    OPEN_STATES,
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
    is_visitor_bucket,
)

Migration = Callable[[sqlite3.Connection], None]


def _v1_initial(db: sqlite3.Connection) -> None:
    statements = [
        """CREATE TABLE buckets (
            key TEXT PRIMARY KEY,
            settled INTEGER NOT NULL DEFAULT 0
                CHECK (typeof(settled) = 'integer' AND settled >= 0),
            held INTEGER NOT NULL DEFAULT 0
                CHECK (typeof(held) = 'integer' AND held >= 0)
        ) WITHOUT ROWID""",
        """CREATE TABLE holds (
            id TEXT PRIMARY KEY,
            idempotency_key TEXT UNIQUE,
            endpoint TEXT NOT NULL,
            amount INTEGER NOT NULL CHECK (typeof(amount) = 'integer' AND amount >= 0),
            state TEXT NOT NULL
                CHECK (state IN ('held', 'submitted', 'settled', 'released', 'expired')),
            buckets TEXT NOT NULL,
            request_id TEXT,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            settled_amount INTEGER
                CHECK (settled_amount IS NULL OR typeof(settled_amount) = 'integer'),
            tags TEXT NOT NULL DEFAULT '{}',
            table_version TEXT,
            table_sha256 TEXT
        )""",
        # Only open holds are in this index: the expiry step of every reservation reads it.
        """CREATE INDEX holds_open_by_expiry ON holds (expires_at)
            WHERE state IN ('held', 'submitted')""",
        "CREATE INDEX holds_by_created ON holds (created_at)",
        "CREATE INDEX holds_by_state_created ON holds (state, created_at)",
        """CREATE TABLE hold_buckets (
            hold_id TEXT NOT NULL REFERENCES holds (id),
            bucket_key TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (hold_id, bucket_key)
        ) WITHOUT ROWID""",
        "CREATE INDEX hold_buckets_by_bucket ON hold_buckets (bucket_key, created_at)",
        """CREATE TABLE alerts (
            bucket TEXT NOT NULL,
            threshold TEXT NOT NULL,
            PRIMARY KEY (bucket, threshold)
        ) WITHOUT ROWID""",
    ]
    for statement in statements:
        db.execute(statement)


def _v2_adjustments(db: sqlite3.Connection) -> None:
    """Reconciliation with fal's records: a hold's adjusted amount, the audit trail of
    adjustments, and holds found by fal's request id."""
    statements = [
        """ALTER TABLE holds ADD COLUMN adjusted_amount INTEGER
            CHECK (adjusted_amount IS NULL
                OR (typeof(adjusted_amount) = 'integer' AND adjusted_amount >= 0))""",
        "CREATE INDEX holds_by_request_id ON holds (request_id) WHERE request_id IS NOT NULL",
        """CREATE TABLE adjustments (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            hold_id TEXT NOT NULL REFERENCES holds (id),
            previous INTEGER NOT NULL CHECK (typeof(previous) = 'integer' AND previous >= 0),
            amount INTEGER NOT NULL CHECK (typeof(amount) = 'integer' AND amount >= 0),
            delta INTEGER NOT NULL CHECK (delta = amount - previous),
            reason TEXT NOT NULL,
            source TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX adjustments_by_hold ON adjustments (hold_id, id)",
    ]
    for statement in statements:
        db.execute(statement)


_V2_HOLD_COLUMNS = (
    "id, idempotency_key, endpoint, amount, state, buckets, request_id, created_at, expires_at, "
    "updated_at, settled_amount, tags, table_version, table_sha256, adjusted_amount"
)


def _v3_bound_keys(db: sqlite3.Connection) -> None:
    """Idempotency keys bound to a request (a fingerprint) for a time after the hold closes.

    A key may now name several holds in the history, one of them bound to it (key_forgotten_at
    NULL): the UNIQUE constraint of version 1 gives way to a partial unique index. SQLite cannot
    drop a constraint, so the holds table is rebuilt (the documented create, copy, drop, rename),
    keeping every row with its rowid, which orders the history. Keys of existing holds have no
    fingerprint (nothing was recorded) and get the default lifetime, so they are forgotten 24 h
    after their hold closes."""
    statements = [
        """CREATE TABLE holds_v3 (
            id TEXT PRIMARY KEY,
            idempotency_key TEXT,
            endpoint TEXT NOT NULL,
            amount INTEGER NOT NULL CHECK (typeof(amount) = 'integer' AND amount >= 0),
            state TEXT NOT NULL
                CHECK (state IN ('held', 'submitted', 'settled', 'released', 'expired')),
            buckets TEXT NOT NULL,
            request_id TEXT,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            settled_amount INTEGER
                CHECK (settled_amount IS NULL OR typeof(settled_amount) = 'integer'),
            tags TEXT NOT NULL DEFAULT '{}',
            table_version TEXT,
            table_sha256 TEXT,
            adjusted_amount INTEGER
                CHECK (adjusted_amount IS NULL
                    OR (typeof(adjusted_amount) = 'integer' AND adjusted_amount >= 0)),
            fingerprint TEXT,
            idempotency_ttl REAL CHECK (idempotency_ttl IS NULL OR idempotency_ttl > 0),
            key_forgotten_at REAL
        )""",
        f"""INSERT INTO holds_v3 (rowid, {_V2_HOLD_COLUMNS}, idempotency_ttl)
            SELECT rowid, {_V2_HOLD_COLUMNS},
                CASE WHEN idempotency_key IS NOT NULL THEN {DEFAULT_IDEMPOTENCY_TTL!r} END
            FROM holds ORDER BY rowid""",
        "DROP TABLE holds",
        "ALTER TABLE holds_v3 RENAME TO holds",
        """CREATE INDEX holds_open_by_expiry ON holds (expires_at)
            WHERE state IN ('held', 'submitted')""",
        "CREATE INDEX holds_by_created ON holds (created_at)",
        "CREATE INDEX holds_by_state_created ON holds (state, created_at)",
        "CREATE INDEX holds_by_request_id ON holds (request_id) WHERE request_id IS NOT NULL",
        """CREATE UNIQUE INDEX holds_by_bound_key ON holds (idempotency_key)
            WHERE idempotency_key IS NOT NULL AND key_forgotten_at IS NULL""",
    ]
    for statement in statements:
        db.execute(statement)


def _v4_api_keys(db: sqlite3.Connection) -> None:
    """Virtual keys of ``falbudget proxy``: the SHA-256 digest of each key (never the key), its
    tags, and when it was revoked."""
    db.execute(
        """CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            digest TEXT NOT NULL UNIQUE,
            tags TEXT NOT NULL,
            created_at REAL NOT NULL,
            revoked_at REAL
        )"""
    )


def _v5_lean_holds(db: sqlite3.Connection) -> None:
    """A leaner hold: what no query needs goes. Measured per reservation charging three
    buckets (WAL pages written, reserve / settle): 13.7 / 5.2 before.

    * ``hold_buckets`` (a row per hold and bucket, and its index by bucket) duplicated the
      hold's own ``buckets`` column for ``holds(bucket=...)`` alone, which no command asks; that
      query now reads the column (a scan of the time range asked).
    * ``holds_by_state_created``: a state change moved the hold inside it (two pages per
      settle) for history filtered by state, which reads ``holds_by_created`` as well.

    Nothing else changes: every hold, total, adjustment, key and alert stays as it was."""
    db.execute("DROP INDEX holds_by_state_created")
    db.execute("DROP TABLE hold_buckets")


_KIND_COLUMNS = "endpoint, buckets, tags, table_version, table_sha256"


def _v6_hold_kinds(db: sqlite3.Connection) -> None:
    """What many holds share is kept once: the endpoint, buckets, tags and price table of a
    hold repeat for every request of a user, project and window, so they move to
    ``hold_kinds`` and a hold names its kind by an integer (about 460 bytes a hold before,
    about 190 after; see :func:`_kind`). SQLite cannot drop columns portably: the holds table
    is rebuilt as in version 3, every row keeping its rowid and every value."""
    hold_columns = (
        "id, idempotency_key, amount, state, request_id, created_at, expires_at, updated_at, "
        "settled_amount, adjusted_amount, fingerprint, idempotency_ttl, key_forgotten_at"
    )
    db.execute(
        """CREATE TABLE hold_kinds (
            id INTEGER PRIMARY KEY,
            endpoint TEXT NOT NULL,
            buckets TEXT NOT NULL,
            tags TEXT NOT NULL DEFAULT '{}',
            table_version TEXT,
            table_sha256 TEXT
        )"""
    )
    for row in db.execute(
        f"SELECT {_KIND_COLUMNS} FROM holds GROUP BY {_KIND_COLUMNS} ORDER BY MIN(rowid)"
    ).fetchall():
        _kind(db, tuple(row))
    statements = [
        # for the copy below only: a reservation finds its kind by id
        f"CREATE INDEX hold_kinds_by_value ON hold_kinds ({_KIND_COLUMNS})",
        """CREATE TABLE holds_v6 (
            id TEXT PRIMARY KEY,
            kind INTEGER NOT NULL REFERENCES hold_kinds (id),
            idempotency_key TEXT,
            amount INTEGER NOT NULL CHECK (typeof(amount) = 'integer' AND amount >= 0),
            state TEXT NOT NULL
                CHECK (state IN ('held', 'submitted', 'settled', 'released', 'expired')),
            request_id TEXT,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            settled_amount INTEGER
                CHECK (settled_amount IS NULL OR typeof(settled_amount) = 'integer'),
            adjusted_amount INTEGER
                CHECK (adjusted_amount IS NULL
                    OR (typeof(adjusted_amount) = 'integer' AND adjusted_amount >= 0)),
            fingerprint TEXT,
            idempotency_ttl REAL CHECK (idempotency_ttl IS NULL OR idempotency_ttl > 0),
            key_forgotten_at REAL
        )""",
        f"""INSERT INTO holds_v6 (rowid, kind, {hold_columns})
            SELECT h.rowid, k.id, {", ".join("h." + c for c in hold_columns.split(", "))}
            FROM holds h JOIN hold_kinds k
                ON k.endpoint = h.endpoint AND k.buckets = h.buckets AND k.tags = h.tags
                AND k.table_version IS h.table_version AND k.table_sha256 IS h.table_sha256
            ORDER BY h.rowid""",
        "DROP TABLE holds",
        "DROP INDEX hold_kinds_by_value",
        "ALTER TABLE holds_v6 RENAME TO holds",
        """CREATE INDEX holds_open_by_expiry ON holds (expires_at)
            WHERE state IN ('held', 'submitted')""",
        "CREATE INDEX holds_by_created ON holds (created_at)",
        "CREATE INDEX holds_by_request_id ON holds (request_id) WHERE request_id IS NOT NULL",
        """CREATE UNIQUE INDEX holds_by_bound_key ON holds (idempotency_key)
            WHERE idempotency_key IS NOT NULL AND key_forgotten_at IS NULL""",
    ]
    for statement in statements:
        db.execute(statement)


def _v7_refusals(db: sqlite3.Connection) -> None:
    """Refused admissions (:class:`Refusal`), for metrics, alerts and the dashboard: a row per
    refusal (never per admission), pruned to REFUSAL_RETENTION and REFUSAL_MAX_ROWS as refusals
    are recorded. Nothing else changes."""
    db.execute(
        """CREATE TABLE refusals (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            endpoint TEXT NOT NULL,
            reason TEXT NOT NULL,
            cap TEXT,
            amount INTEGER NOT NULL CHECK (typeof(amount) = 'integer' AND amount >= 0),
            tags TEXT NOT NULL DEFAULT '{}'
        )"""
    )
    db.execute("CREATE INDEX refusals_by_at ON refusals (at)")


def _v8_visitors(db: sqlite3.Connection) -> None:
    """Visitor tags (the proxy's client address ``ip``, :data:`VISITOR_TAGS`) and the buckets of
    caps on them move from the hold's kind to the hold's own ``visitor`` column: with them in
    the kind, every client address made a kind of its own (549 bytes a hold with 3,000
    addresses, and a report group per hold; 283 after, docs/scale.md). A kind now keeps what
    holds share, a JSON null at the place of each visitor bucket (:func:`_split`). In place: a
    column is added, the holds of each kind that named a visitor move to the kind without it,
    carrying their visitor values, and the kinds left unused go; every other row is
    untouched."""
    db.execute("ALTER TABLE holds ADD COLUMN visitor TEXT")
    db.execute(
        "CREATE TEMP TABLE kind_moves (old INTEGER PRIMARY KEY, new INTEGER NOT NULL, "
        "visitor TEXT NOT NULL)"
    )
    kinds = db.execute(f"SELECT id, {_KIND_COLUMNS} FROM hold_kinds ORDER BY id").fetchall()
    for old, endpoint, buckets, tags, table_version, table_sha256 in kinds:
        shared_buckets, shared_tags, visitor = _split(json.loads(buckets), json.loads(tags))
        if visitor is None:
            continue
        new = _kind(db, (endpoint, shared_buckets, shared_tags, table_version, table_sha256))
        db.execute("INSERT INTO kind_moves VALUES (?, ?, ?)", (old, new, visitor))
    statements = [
        """UPDATE holds SET
            visitor = (SELECT visitor FROM kind_moves WHERE old = holds.kind),
            kind = (SELECT new FROM kind_moves WHERE old = holds.kind)
            WHERE kind IN (SELECT old FROM kind_moves)""",
        "DELETE FROM hold_kinds WHERE id IN (SELECT old FROM kind_moves)",
        "DROP TABLE temp.kind_moves",
    ]
    for statement in statements:
        db.execute(statement)


_OVERRUN_INDEXED = "({h}adjusted_amount > {h}amount OR {h}settled_amount > {h}amount)"
"""The partial index of holds with an overrun (:func:`_v9_overruns`): every such hold, and a
few others (a hold that is not settled or expired counts nothing whatever it records)."""
_OVERRUN = (
    "({h}adjusted_amount > {h}amount OR ({h}adjusted_amount IS NULL"
    " AND {h}state IN ('settled', 'expired') AND {h}settled_amount > {h}amount))"
)
"""Exactly ``Hold.overrun > 0`` (``spent_amount > amount``)."""


def _v9_overruns(db: sqlite3.Connection) -> None:
    """An index of the holds with an overrun (fal billed more than was held), which ``budget
    status`` lists: it summed the whole history to find them (1.85 s over a million holds).
    Partial: a hold settled at what was held, the usual case, never enters it, so a settle
    writes no more pages; building it reads the holds table once."""
    where = _OVERRUN_INDEXED.format(h="")
    db.execute(f"CREATE INDEX holds_overrun ON holds (created_at) WHERE {where}")


MIGRATIONS: list[Migration] = [
    _v1_initial,
    _v2_adjustments,
    _v3_bound_keys,
    _v4_api_keys,
    _v5_lean_holds,
    _v6_hold_kinds,
    _v7_refusals,
    _v8_visitors,
    _v9_overruns,
]
"""Migration ``i`` takes a file from schema version ``i`` to ``i + 1``; version 0 is a file
without tables. Append, never edit: a file records the version it reached in ``meta``."""

_INHERITED: list[sqlite3.Connection] = []
"""Connections a forked child inherited: kept referenced so that it never closes them."""

_HOLD_COLUMNS = (
    "h.id, k.endpoint, h.amount, h.state, k.buckets, h.created_at, h.expires_at, h.updated_at, "
    "h.idempotency_key, h.request_id, h.settled_amount, k.tags, k.table_version, "
    "k.table_sha256, h.adjusted_amount, h.fingerprint, h.idempotency_ttl, h.visitor"
)
"""A hold's columns from ``holds h`` joined to its kind ``k`` (:func:`_holds`)."""


def _holds(index: str | None = None) -> str:
    """``holds h`` (read through ``index`` when given) joined to its kind as ``k``."""
    indexed = f" INDEXED BY {index}" if index else ""
    return f"holds h{indexed} JOIN hold_kinds k ON k.id = h.kind"


_ADJUSTMENT_COLUMNS = "id, hold_id, previous, amount, delta, reason, source, created_at"
_ID_BATCH = 500
"""Request ids looked up per statement (SQLite allows 32766 parameters; a batch stays small)."""
_OPEN = "state IN ('held', 'submitted')"
"""Written exactly as in the partial index's WHERE, which SQLite needs to use that index."""


class SQLiteLedger:
    """The Ledger protocol on one SQLite file (created with mode 0600, WAL journal).

    One connection per ledger object and process, used under a lock: share an object between
    threads freely, or open one per thread or process. ``busy_timeout_s`` is how long opening the
    file or a write waits for another writer before LedgerUnavailable; the message states the
    wait that really happened. ``read_only=True`` opens an existing ledger to read it (SQLite's
    ``mode=ro``): it creates, migrates and writes nothing, so a file the user may only read can
    be read, and a missing file raises LedgerNotFound naming the path.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout_s: float = 30.0,
        read_only: bool = False,
    ) -> None:
        raw = os.fspath(path)
        if raw in ("", ":memory:") or raw.startswith("file:"):
            raise LedgerError(f"SQLiteLedger needs a file path, got {raw!r} (memory:// is RAM)")
        timeout = busy_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
            raise LedgerError(f"busy_timeout_s must be seconds >= 0, got {timeout!r}")
        self.path = os.path.abspath(os.path.expanduser(raw))
        self.url = "sqlite:///" + self.path
        self.busy_timeout_s = float(busy_timeout_s)
        self.read_only = bool(read_only)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._closed = False
        if self.read_only:
            if not os.path.isfile(self.path):
                raise LedgerNotFound(
                    f"no ledger at {self.path}: a command that only reads creates none (check"
                    " the path; in a configuration file a relative sqlite path is relative to"
                    " that file)"
                )
        else:
            _create_private(self.path)
        with self._lock:
            self._connection()

    # -- connection and transactions ---------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise LedgerError(f"{self.url}: the ledger is closed")
        if self._conn is None or self._pid != os.getpid():
            if self._conn is not None:  # inherited through fork(): the parent's, never closed here
                _INHERITED.append(self._conn)
                self._conn = None
            self._conn, self._pid = self._open(), os.getpid()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        """A connection with the file set up (WAL, schema at the latest version; read-only: the
        schema checked). Several processes opening a brand-new file at once contend for the
        set-up, and SQLite answers some of them SQLITE_BUSY at once, without waiting (a journal
        mode change, a reader that cannot upgrade its lock): such a set-up is tried again, with
        short pauses, until ``busy_timeout_s`` has passed by the monotonic clock."""
        started = time.monotonic()
        pause = 0.001
        immutable = False
        while True:
            conn: sqlite3.Connection | None = None
            left = max(0.0, self.busy_timeout_s - (time.monotonic() - started))
            try:
                if self.read_only:
                    mode = "ro&immutable=1" if immutable else "ro"
                    target, uri = f"file:{quote(self.path)}?mode={mode}", True
                else:
                    target, uri = self.path, False
                conn = sqlite3.connect(
                    target,
                    timeout=left,
                    isolation_level=None,
                    check_same_thread=False,
                    uri=uri,
                )
                conn.execute(f"PRAGMA busy_timeout = {int(left * 1000)}")
                self._set_up(conn)
                conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
                return conn
            except sqlite3.Error as exc:
                if conn is not None:
                    conn.close()
                if self._needs_immutable(exc) and not immutable:
                    # A WAL file needs its -shm file to be read; a reader that may not create
                    # it (a directory it cannot write) reads the file as it stands. No -wal
                    # file means no writer is connected and every commit is in the file.
                    immutable = True
                    continue
                waited = time.monotonic() - started
                if not _busy(exc) or waited + pause > self.busy_timeout_s:
                    raise self._translate(exc, waited, "opening the ledger") from exc
            except BaseException:
                if conn is not None:
                    conn.close()
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _needs_immutable(self, exc: sqlite3.Error) -> bool:
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        return (
            self.read_only
            and primary in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN)
            and not os.path.exists(self.path + "-wal")
            and not os.access(os.path.dirname(self.path), os.W_OK)
        )

    def _set_up(self, conn: sqlite3.Connection) -> None:
        if self.read_only:
            version = self._check_version(_schema_version(conn))
            if version == 0:
                raise LedgerNotFound(f"{self.url}: {self.path} holds no falbudget ledger")
            if version < len(MIGRATIONS):
                raise LedgerError(
                    f"{self.url}: the ledger's schema is at version {version} and this falbudget"
                    f" reads version {len(MIGRATIONS)}; a command that writes upgrades it (or"
                    " `falbudget ledger migrate URL`), a command that only reads does not"
                )
            return
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise LedgerError(f"{self.url}: cannot use WAL journal mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        self._migrate(conn)

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE) or a read snapshot (BEGIN)."""
        with self._lock:
            conn = self._connection()
            started = time.monotonic()
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield conn
                    conn.execute("COMMIT")
                finally:
                    if conn.in_transaction:
                        with suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                raise self._translate(exc, time.monotonic() - started) from exc

    def _translate(
        self, exc: sqlite3.Error, waited: float, action: str = "a transaction"
    ) -> LedgerError:
        """``exc`` as a LedgerError; a lock error says how long it really waited (``waited``,
        measured with the monotonic clock), which may be far less than ``busy_timeout_s``:
        SQLite gives up at once where waiting could deadlock."""
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        text = str(exc)
        if _busy(exc):
            return LedgerUnavailable(
                f"{self.url}: {action}: the ledger was locked by another writer; gave up after"
                f" waiting {waited:.3f} s (busy timeout {self.busy_timeout_s:g} s) ({text})"
            )
        if primary == sqlite3.SQLITE_CANTOPEN:
            return LedgerUnavailable(f"{self.url}: cannot open the ledger file ({text})")
        if primary == sqlite3.SQLITE_READONLY and self.read_only:
            return LedgerError(f"{self.url}: the ledger was opened read-only ({text})")
        return LedgerError(f"{self.url}: {text}")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        latest = len(MIGRATIONS)
        if self._check_version(_schema_version(conn)) == latest:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._check_version(_schema_version(conn))
            if version == 0:
                conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            for migration in MIGRATIONS[version:]:
                migration(conn)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(latest),),
            )
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")

    def _check_version(self, version: int) -> int:
        if version > len(MIGRATIONS):
            raise LedgerError(
                f"{self.url}: the ledger's schema version {version} is newer than this falbudget "
                f"supports ({len(MIGRATIONS)}); upgrade falbudget to use this file"
            )
        return version

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
        amount, keys, now, expires_at, checked_tags = _checks.reservation(
            amount, charges, now, expires_at, tags
        )
        idempotency_key, fingerprint, idempotency_ttl = _checks.idempotency(
            idempotency_key, fingerprint, idempotency_ttl
        )
        kind_buckets, kind_tags, visitor = _split(list(keys), checked_tags)
        with self._transaction(write=True) as db:
            _expire(db, now)
            reopen: str | None = None
            forget: str | None = None
            if idempotency_key is not None:
                row = db.execute(
                    f"SELECT {_HOLD_COLUMNS} FROM {_holds('holds_by_bound_key')} "
                    "WHERE h.idempotency_key = ? AND h.key_forgotten_at IS NULL",
                    (idempotency_key,),
                ).fetchone()
                if row is not None:
                    existing = _hold(row)
                    if _checks.key_forgotten(existing, now):
                        forget = existing.id
                    elif existing.fingerprint != fingerprint:
                        return Admission(admitted=False, hold=existing, conflict=True)
                    elif not _checks.readmits(existing):
                        return Admission(admitted=True, hold=existing, replayed=True)
                    else:
                        reopen = existing.id
            if (
                reopen is None
                and db.execute("SELECT 1 FROM holds WHERE id = ?", (hold_id,)).fetchone()
            ):
                raise LedgerError(f"a hold with id {hold_id!r} already exists")
            current: dict[str, tuple[int, int]] = {}
            for key in keys:
                found = db.execute(
                    "SELECT settled, held FROM buckets WHERE key = ?", (key,)
                ).fetchone()
                current[key] = (int(found[0]), int(found[1])) if found else (0, 0)
            for charge in charges:
                settled, held = current[charge.key]
                if charge.limit is not None and settled + held + amount > charge.limit:
                    return Admission(
                        admitted=False,
                        refused_by=charge.key,
                        totals=BucketTotals(charge.key, settled, held),
                    )
            for key in keys:
                if sum(current[key]) + amount > _checks.MAX_MICROS:
                    raise LedgerError(f"bucket {key!r} would exceed {_checks.MAX_MICROS} micro-USD")
                db.execute(
                    "INSERT INTO buckets (key, settled, held) VALUES (?, 0, ?) "
                    "ON CONFLICT (key) DO UPDATE SET held = held + excluded.held",
                    (key, amount),
                )
            kind = _kind(db, (endpoint, kind_buckets, kind_tags, table_version, table_sha256))
            values = (
                kind,
                visitor,
                amount,
                now,
                expires_at,
                now,
                idempotency_key,
                fingerprint,
                idempotency_ttl,
            )
            if forget is not None:  # the old hold keeps its key in the history, unbound
                db.execute("UPDATE holds SET key_forgotten_at = ? WHERE id = ?", (now, forget))
            if reopen is None:
                db.execute(
                    "INSERT INTO holds (kind, visitor, amount, state, created_at, expires_at, "
                    "updated_at, idempotency_key, fingerprint, idempotency_ttl, id) "
                    "VALUES (?, ?, ?, 'held', ?, ?, ?, ?, ?, ?, ?)",
                    (*values, hold_id),
                )
                new_id = hold_id
            else:
                db.execute(
                    "UPDATE holds SET kind = ?, visitor = ?, amount = ?, state = 'held', "
                    "created_at = ?, expires_at = ?, updated_at = ?, idempotency_key = ?, "
                    "fingerprint = ?, idempotency_ttl = ?, request_id = NULL, "
                    "settled_amount = NULL, adjusted_amount = NULL WHERE id = ?",
                    (*values, reopen),
                )
                new_id = reopen
            return Admission(admitted=True, hold=_get(db, new_id))

    def mark_submitted(self, hold_id: str, request_id: str | None, *, now: float) -> Hold:
        """See :meth:`Ledger.mark_submitted`."""
        request_id = _checks.request_id(request_id)
        now = _checks.seconds("now", now)
        with self._transaction(write=True) as db:
            hold = _get(db, hold_id)
            if hold.state not in OPEN_STATES:
                return hold
            db.execute(
                "UPDATE holds SET state = 'submitted', request_id = coalesce(?, request_id), "
                "updated_at = ? WHERE id = ?",
                (request_id, now, hold_id),
            )
            return _get(db, hold_id)

    def renew(self, hold_id: str, *, now: float, expires_at: float) -> Hold:
        """See :meth:`Ledger.renew`."""
        now = _checks.seconds("now", now)
        expires_at = _checks.seconds("expires_at", expires_at)
        with self._transaction(write=True) as db:
            hold = _get(db, hold_id)
            if hold.state not in OPEN_STATES:
                return hold
            db.execute(
                "UPDATE holds SET expires_at = ?, updated_at = ? WHERE id = ?",
                (expires_at, now, hold_id),
            )
            return _get(db, hold_id)

    def settle(self, hold_id: str, amount: int | None, *, now: float) -> Hold:
        """See :meth:`Ledger.settle`."""
        if amount is not None:
            amount = _checks.micros("amount", amount)
        now = _checks.seconds("now", now)
        with self._transaction(write=True) as db:
            hold = _get(db, hold_id)
            if hold.state not in OPEN_STATES:
                return hold
            return _close(db, hold, "settled", hold.amount if amount is None else amount, now)

    def release(self, hold_id: str, *, now: float) -> Hold:
        """See :meth:`Ledger.release`."""
        now = _checks.seconds("now", now)
        with self._transaction(write=True) as db:
            hold = _get(db, hold_id)
            if hold.state not in OPEN_STATES:
                return hold
            return _close(db, hold, "released", None, now)

    def expire(self, *, now: float) -> list[Hold]:
        """See :meth:`Ledger.expire`; in order of expiry."""
        now = _checks.seconds("now", now)
        with self._transaction(write=True) as db:
            return _expire(db, now)

    def claim_alert(self, bucket: str, threshold: str) -> bool:
        """See :meth:`Ledger.claim_alert`."""
        with self._transaction(write=True) as db:
            cursor = db.execute(
                "INSERT INTO alerts (bucket, threshold) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (bucket, threshold),
            )
            return cursor.rowcount == 1

    def record_refusal(self, refusal: Refusal) -> None:
        """See :meth:`Ledger.record_refusal`: an insert and two deletes that find nothing to
        delete but the oldest row once the table is full (rowids grow by one, since only the
        oldest rows are ever deleted)."""
        row = _checks.refusal(refusal)
        with self._transaction(write=True) as db:
            cursor = db.execute(
                "INSERT INTO refusals (at, endpoint, reason, cap, amount, tags)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    row.at,
                    row.endpoint,
                    row.reason,
                    row.cap,
                    row.amount,
                    json.dumps(dict(row.tags), sort_keys=True),
                ),
            )
            assert cursor.lastrowid is not None
            db.execute("DELETE FROM refusals WHERE id <= ?", (cursor.lastrowid - REFUSAL_MAX_ROWS,))
            db.execute("DELETE FROM refusals WHERE at < ?", (row.at - REFUSAL_RETENTION,))

    def refusals(
        self, *, since: float | None = None, until: float | None = None, limit: int = 100
    ) -> list[Refusal]:
        """See :meth:`Ledger.refusals`."""
        low, high, limit = _checks.refusal_range(since, until, limit)
        terms, params = _range("at", low, high)
        with self._transaction(write=False) as db:
            rows = db.execute(
                "SELECT at, endpoint, reason, cap, amount, tags FROM refusals"
                f"{_where(terms)} ORDER BY at DESC, id DESC LIMIT ?",
                [*params, limit],
            ).fetchall()
        return [
            Refusal(float(at), str(ep), str(why), cap, int(amount), json.loads(tags))
            for at, ep, why, cap, amount, tags in rows
        ]

    def refusal_counts(
        self, *, since: float | None = None, until: float | None = None
    ) -> dict[tuple[str, str | None], int]:
        """See :meth:`Ledger.refusal_counts`."""
        low, high, _ = _checks.refusal_range(since, until)
        terms, params = _range("at", low, high)
        with self._transaction(write=False) as db:
            rows = db.execute(
                f"SELECT endpoint, cap, COUNT(*) FROM refusals{_where(terms)}"
                " GROUP BY endpoint, cap",
                params,
            ).fetchall()
        return {(str(ep), cap): int(n) for ep, cap, n in rows}

    def adjust(
        self, hold_id: str, amount: int, *, now: float, reason: str, source: str
    ) -> Adjustment | None:
        """See :meth:`Ledger.adjust`."""
        amount, now, reason, source = _checks.adjustment(amount, now, reason, source)
        with self._transaction(write=True) as db:
            hold = _get(db, hold_id)
            delta = _checks.adjustment_delta(hold, amount)
            if delta is None:
                return None
            used: dict[str, int] = {}
            for key in hold.buckets:
                found = db.execute(
                    "SELECT settled + held FROM buckets WHERE key = ?", (key,)
                ).fetchone()
                if found is not None:
                    used[key] = int(found[0])
            missing = _checks.missing_buckets(hold, list(used))
            if missing is not None:
                raise missing
            for key, total in used.items():
                if total + delta > _checks.MAX_MICROS:
                    raise LedgerError(f"bucket {key!r} would exceed {_checks.MAX_MICROS} micro-USD")
            db.executemany(
                "UPDATE buckets SET settled = settled + ? WHERE key = ?",
                [(delta, key) for key in hold.buckets],
            )
            db.execute("UPDATE holds SET adjusted_amount = ? WHERE id = ?", (amount, hold.id))
            cursor = db.execute(
                "INSERT INTO adjustments (hold_id, previous, amount, delta, reason, source, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (hold.id, amount - delta, amount, delta, reason, source, now),
            )
            row = db.execute(
                f"SELECT {_ADJUSTMENT_COLUMNS} FROM adjustments WHERE id = ?", (cursor.lastrowid,)
            ).fetchone()
            return adjustment_from_row(row)

    # -- reads -------------------------------------------------------------------------------
    def adjustments(self, hold_id: str | None = None) -> list[Adjustment]:
        """See :meth:`Ledger.adjustments`."""
        sql, params = f"SELECT {_ADJUSTMENT_COLUMNS} FROM adjustments", []
        if hold_id is not None:
            sql += " WHERE hold_id = ?"
            params.append(hold_id)
        with self._transaction(write=False) as db:
            return [adjustment_from_row(row) for row in db.execute(sql + " ORDER BY id", params)]

    def holds_by_request_id(self, request_ids: Sequence[str]) -> list[Hold]:
        """See :meth:`Ledger.holds_by_request_id`."""
        wanted = _checks.request_ids(request_ids)
        rows: list[Any] = []
        with self._transaction(write=False) as db:
            for start in range(0, len(wanted), _ID_BATCH):
                batch = wanted[start : start + _ID_BATCH]
                rows.extend(
                    db.execute(
                        f"SELECT {_HOLD_COLUMNS}, h.rowid FROM {_holds('holds_by_request_id')} "
                        f"WHERE h.request_id IS NOT NULL AND h.request_id IN "
                        f"({', '.join('?' * len(batch))})",
                        batch,
                    ).fetchall()
                )
        rows.sort(key=lambda row: (float(row[5]), int(row[-1])))
        return [_hold(row[:-1]) for row in rows]

    def create_key(
        self, key_id: str, digest: str, tags: Mapping[str, str], *, now: float
    ) -> ApiKey:
        """See :meth:`Ledger.create_key`."""
        key_id, digest, clean, at = _checks.api_key(key_id, digest, tags, now)
        with self._transaction(write=True) as db:
            cursor = db.execute(
                "INSERT INTO api_keys (id, digest, tags, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (key_id, digest, json.dumps(clean, sort_keys=True), at),
            )
            if cursor.rowcount != 1:
                raise LedgerError(f"a key with id {key_id!r} or its digest is already recorded")
        return ApiKey(key_id, digest, clean, at)

    def find_key(self, digest: str) -> ApiKey | None:
        """See :meth:`Ledger.find_key`."""
        with self._transaction(write=False) as db:
            row = db.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE digest = ?", (digest,)
            ).fetchone()
        return None if row is None else _api_key(row)

    def api_keys(self) -> list[ApiKey]:
        """See :meth:`Ledger.api_keys`."""
        with self._transaction(write=False) as db:
            rows = db.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, rowid"
            ).fetchall()
        return [_api_key(row) for row in rows]

    def revoke_key(self, key_id: str, *, now: float) -> ApiKey:
        """See :meth:`Ledger.revoke_key`."""
        at = _checks.seconds("now", now)
        with self._transaction(write=True) as db:
            db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (at, key_id),
            )
            row = db.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)
            ).fetchone()
        if row is None:
            raise KeyNotFound(f"no key has id {key_id!r}")
        return _api_key(row)

    def get_hold(self, hold_id: str) -> Hold:
        """See :meth:`Ledger.get_hold`."""
        with self._transaction(write=False) as db:
            return _get(db, hold_id)

    def totals(self, keys: Sequence[str]) -> list[BucketTotals]:
        """See :meth:`Ledger.totals`."""
        keys = list(keys)
        found: dict[str, tuple[int, int]] = {}
        with self._transaction(write=False) as db:
            for key in dict.fromkeys(keys):
                row = db.execute(
                    "SELECT settled, held FROM buckets WHERE key = ?", (key,)
                ).fetchone()
                if row is not None:
                    found[key] = (int(row[0]), int(row[1]))
        return [BucketTotals(key, *found.get(key, (0, 0))) for key in keys]

    def buckets(self, *, prefix: str = "") -> list[BucketTotals]:
        """Every bucket whose key starts with ``prefix``, by key (not in base.Ledger yet)."""
        sql, params = "SELECT key, settled, held FROM buckets", []
        if prefix:
            sql += " WHERE key >= ?"
            params.append(prefix)
            last = ord(prefix[-1])
            if last < 0xD7FF:  # an exclusive upper bound, so the primary key index is used
                sql += " AND key < ?"
                params.append(prefix[:-1] + chr(last + 1))
        with self._transaction(write=False) as db:
            rows = db.execute(sql + " ORDER BY key", params).fetchall()
        return [
            BucketTotals(str(key), int(settled), int(held))
            for key, settled, held in rows
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
        sql, params = self._history(states, bucket, since, until, limit, overrun)
        if sql is None:
            return []
        with self._transaction(write=False) as db:
            return [_hold(row) for row in db.execute(sql, params).fetchall()]

    def _history(
        self,
        states: Sequence[HoldState] | None,
        bucket: str | None,
        since: float | None,
        until: float | None,
        limit: int | None,
        overrun: bool = False,
    ) -> tuple[str | None, list[Any]]:
        """The statement of a history query (None: it lists nothing) and its parameters."""
        wanted = _checks.check_states(states)
        limit = _checks.check_limit(limit)
        if wanted == ():
            return None, []
        where: list[str] = []
        params: list[Any] = []
        source, time_column = _holds(), "h.created_at"
        if overrun:  # the index's own term, so that SQLite may read it, then the exact one
            source = _holds("holds_overrun")
            where.extend((_OVERRUN_INDEXED.format(h="h."), _OVERRUN.format(h="h.")))
        if bucket is not None:  # the hold's own list of buckets (schema 5 keeps no other)
            where.append(
                "(EXISTS (SELECT 1 FROM json_each(k.buckets) WHERE value = ?)"
                " OR EXISTS (SELECT 1 FROM json_each(h.visitor) WHERE type = 'text'"
                " AND value = ?))"
            )
            params.extend((bucket, bucket))
        if wanted is not None:
            where.append(f"h.state IN ({', '.join('?' * len(wanted))})")
            params.extend(wanted)
        if since is not None:
            where.append(f"{time_column} >= ?")
            params.append(_checks.seconds("since", since))
        if until is not None:
            where.append(f"{time_column} < ?")
            params.append(_checks.seconds("until", until))
        sql = f"SELECT {_HOLD_COLUMNS} FROM {source}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {time_column} DESC, h.rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return sql, params

    def iter_holds(
        self,
        *,
        states: Sequence[HoldState] | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> Iterator[Hold]:
        """See :meth:`Ledger.iter_holds`: one read transaction (one snapshot) whose cursor is
        read as the holds are yielded; the ledger object is busy until the iteration ends."""
        sql, params = self._history(states, None, since, until, None)
        if sql is None:
            return
        with self._transaction(write=False) as db:
            cursor = db.execute(sql, params)
            while rows := cursor.fetchmany(256):
                for row in rows:
                    yield _hold(row)

    def summarize(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        period: int = 86_400,
        offset: int = 0,
        cuts: Sequence[float] = (),
    ) -> list[HoldGroup]:
        """See :meth:`Ledger.summarize`: one GROUP BY over the range of ``holds_by_created``;
        only the groups reach Python (the period of a moment before 1970 is truncated towards
        zero, so such groups may span two periods: ``first`` and ``last`` say so)."""
        since, until, period, offset, cut = _checks.summary(since, until, period, offset, cuts)
        where, params = _range("created_at", since, until)
        place = " + ".join(["0", *("(created_at >= ?)" for _ in cut)])
        slot = [offset, period, *cut]
        overrun_where = " AND ".join((_OVERRUN_INDEXED.format(h=""), _OVERRUN.format(h=""), *where))
        with self._transaction(write=False) as db:
            rows = db.execute(
                _SUMMARY.format(place=place, where=_where(where)), [*slot, *params]
            ).fetchall()
            overruns = db.execute(
                _OVERRUNS.format(place=place, where=overrun_where), [*slot, *params]
            ).fetchall()
        decoded: dict[str, Any] = {}

        def decode(text: str) -> Any:
            value = decoded.get(text)
            if value is None:
                value = decoded[text] = json.loads(text)
            return value

        # a group per endpoint, shared tags and buckets, period and place: kinds that differ
        # only in their table or the place of a visitor's bucket (a null) sum into one
        shared: dict[int, tuple[str, tuple[tuple[str, str], ...], tuple[str, ...]]] = {}
        groups: dict[tuple[object, ...], list[Any]] = {}
        for row in rows:
            (endpoint, tags, buckets, kind, period_, place_, state, first, last, n) = row[:10]
            amount, coalesced, adjusted, adjusted_n, adjusted_above_0 = row[10:]
            adjusted, adjusted_above_0 = adjusted or 0, adjusted_above_0 or 0
            what = shared.get(kind)
            if what is None:
                keys = tuple(key for key in decode(buckets) if key is not None)
                # the tags by value: a kind of an older schema may keep them in another order
                what = shared[kind] = (endpoint, tuple(sorted(decode(tags).items())), keys)
            group = groups.get((*what, period_, place_))
            if group is None:
                group = groups[*what, period_, place_] = [
                    endpoint, what[1], what[2], first, last, 0, 0, 0, 0, 0, 0, 0, 0, 0
                ]  # fmt: skip
            else:
                group[3], group[4] = min(group[3], first), max(group[4], last)
            group[5] += n
            if state in ("settled", "expired"):  # spent: the adjusted, settled or held amount
                group[6] += coalesced
                group[8] += n - adjusted_n + adjusted_above_0
                if state == "expired":
                    group[10] += n
            else:  # spent: only what an adjustment says
                group[6] += adjusted
                group[8] += adjusted_above_0
                if state == "released":
                    group[11] += n - adjusted_above_0
                else:  # held, submitted
                    group[7] += amount
                    group[9] += n
        for kind, period_, place_, n, overrun in overruns:
            group = groups[*shared[kind], period_, place_]
            group[12] += n
            group[13] += overrun
        return [
            HoldGroup(
                endpoint,
                dict(tags),
                buckets,
                float(first),
                float(last),
                *(int(value) for value in figures),
            )
            for endpoint, tags, buckets, first, last, *figures in groups.values()
        ]

    def close(self) -> None:
        """Close the connection; the object cannot be used afterwards."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                with suppress(sqlite3.Error):
                    self._conn.close()
            self._conn = None
            self._closed = True

    def __enter__(self) -> SQLiteLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteLedger({self.path!r})"


# -- statements run inside a transaction --------------------------------------------------------
_SUMMARY = """SELECT k.endpoint, k.tags, k.buckets, g.* FROM (
    SELECT kind, CAST((created_at + ?) / ? AS INTEGER) AS period, {place} AS place, state,
        MIN(created_at), MAX(created_at), COUNT(*), SUM(amount),
        SUM(coalesce(adjusted_amount, settled_amount, amount)), SUM(adjusted_amount),
        COUNT(adjusted_amount), SUM(adjusted_amount > 0)
    FROM holds{where}
    GROUP BY kind, period, place, state
) AS g JOIN hold_kinds k ON k.id = g.kind"""
"""Plain sums per kind, period, place and state, from which :meth:`SQLiteLedger.summarize`
makes what :meth:`HoldGroup.of` computes for one hold (test_ledger_contract checks the two agree
on every kind of hold): a spent hold (settled, expired) spent its adjusted, else settled, else
held amount and counts unless adjusted to 0; any other spent only an adjustment, and counts when
adjusted above 0. Simple sums over the rows in time order cost half what per-hold CASE
expressions did; the overruns, rare, come from their own index (:data:`_OVERRUNS`)."""
_OVERRUNS = """SELECT kind, CAST((created_at + ?) / ? AS INTEGER) AS period, {place} AS place,
    COUNT(*), SUM(coalesce(adjusted_amount, settled_amount) - amount)
FROM holds INDEXED BY holds_overrun WHERE {where}
GROUP BY kind, period, place"""
"""The holds with an overrun per kind, period and place, read through their index (the exact
condition keeps a spent hold settled above what it held, or one adjusted above it)."""


def _where(terms: Sequence[str]) -> str:
    return " WHERE " + " AND ".join(terms) if terms else ""


def _range(column: str, since: float | None, until: float | None) -> tuple[list[str], list[float]]:
    """The terms and parameters of ``since <= column < until`` (either end open when None)."""
    where, params = [], []
    if since is not None:
        where.append(f"{column} >= ?")
        params.append(since)
    if until is not None:
        where.append(f"{column} < ?")
        params.append(until)
    return where, params


def _busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: another connection holds a lock this one needs."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    return primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(exc)


def _schema_version(db: sqlite3.Connection) -> int:
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone():
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is not None:
            try:
                return int(row[0])
            except (TypeError, ValueError):
                raise LedgerError(f"unreadable schema_version {row[0]!r} in the ledger") from None
    return 0


_KEY_COLUMNS = "id, digest, tags, created_at, revoked_at"


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        str(row[0]),
        str(row[1]),
        json.loads(row[2]),
        float(row[3]),
        None if row[4] is None else float(row[4]),
    )


def _get(db: sqlite3.Connection, hold_id: str) -> Hold:
    row = db.execute(
        f"SELECT {_HOLD_COLUMNS} FROM {_holds()} WHERE h.id = ?", (hold_id,)
    ).fetchone()
    if row is None:
        raise HoldNotFound(f"no hold has id {hold_id!r}")
    return _hold(row)


def _close(
    db: sqlite3.Connection, hold: Hold, state: HoldState, spent: int | None, now: float
) -> Hold:
    db.execute(
        "UPDATE holds SET state = ?, settled_amount = ?, updated_at = ? WHERE id = ?",
        (state, spent, now, hold.id),
    )
    db.executemany(
        "UPDATE buckets SET held = held - ?, settled = settled + ? WHERE key = ?",
        [(hold.amount, spent or 0, key) for key in hold.buckets],
    )
    return _get(db, hold.id)


def _expire(db: sqlite3.Connection, now: float) -> list[Hold]:
    rows = db.execute(
        f"SELECT {_HOLD_COLUMNS} FROM {_holds('holds_open_by_expiry')} "
        f"WHERE h.{_OPEN} AND h.expires_at < ? "
        "ORDER BY h.expires_at, h.id",
        (now,),
    ).fetchall()
    out = []
    for row in rows:
        hold = _hold(row)
        if hold.state == "submitted":
            out.append(_close(db, hold, "expired", hold.amount, now))
        else:
            out.append(_close(db, hold, "released", None, now))
    return out


_KindValues = tuple[str, str, str, str | None, str | None]


def _kind(db: sqlite3.Connection, values: _KindValues) -> int:
    """The id of the hold kind with these values (endpoint, buckets, tags, table_version,
    table_sha256), recorded now if it is new (inside the caller's write transaction).

    The id is the first 63 bits of the values' sha256, so finding a kind is one look-up of
    the table's integer key, whatever the number of kinds; a kind that already holds that id
    with other values (a collision, never seen in practice) moves the new one to the next id
    that is free or holds these values."""
    digest = hashlib.sha256(json.dumps(values).encode()).digest()
    kind = int.from_bytes(digest[:8], "big") >> 1
    while True:
        row = db.execute(f"SELECT {_KIND_COLUMNS} FROM hold_kinds WHERE id = ?", (kind,)).fetchone()
        if row is None:
            db.execute(
                f"INSERT INTO hold_kinds (id, {_KIND_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (kind, *values),
            )
            return kind
        if tuple(row) == values:
            return kind
        kind = (kind + 1) % 2**63


def _split(keys: list[str], tags: Mapping[str, str]) -> tuple[str, str, str | None]:
    """A hold's buckets and tags as its kind keeps them (JSON: the buckets with a null at the
    place of each visitor bucket, the tags without the visitor tags) and as the hold keeps the
    rest (``visitor``: JSON ``[visitor tags, visitor bucket, ...]``, or None when it has none),
    so that holds of every visitor share a kind (:data:`VISITOR_TAGS`)."""
    own = [key for key in keys if is_visitor_bucket(key)]
    visitor_tags = {name: tags[name] for name in VISITOR_TAGS if name in tags}
    shared = [None if is_visitor_bucket(key) else key for key in keys]
    shared_tags = {name: value for name, value in tags.items() if name not in VISITOR_TAGS}
    visitor = json.dumps([visitor_tags, *own], sort_keys=True) if own or visitor_tags else None
    return json.dumps(shared), json.dumps(shared_tags, sort_keys=True), visitor


def _hold(row: Sequence[Any]) -> Hold:
    """A row of :data:`_HOLD_COLUMNS` (the visitor column last) as a Hold: the kind's buckets
    and tags with the hold's visitor values put back in place."""
    visitor = row[-1]
    if visitor is None:
        return hold_from_row(row[:-1], decode=json.loads)
    visitor_tags, *own = json.loads(visitor)
    values = list(row[:-1])
    mine = iter(own)
    values[4] = [next(mine) if key is None else key for key in json.loads(values[4])]
    values[11] = dict(sorted({**json.loads(values[11]), **visitor_tags}.items()))  # as stored
    return hold_from_row(values, decode=lambda value: value)


def _make_private_dirs(directory: str) -> None:
    """Create ``directory`` and every missing parent, each 0700 whatever the umask.

    ``os.makedirs(mode=0o700)`` applies the mode to the last directory only (the parents get
    0777 less the umask: 0777 under umask 000) and lets the umask narrow even that one. A
    directory that already exists, or that another process creates meanwhile, is left as it is.
    """
    missing: list[str] = []
    current = os.path.abspath(directory)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        os.chmod(path, 0o700)


def _create_private(path: str) -> None:
    """Create ``path`` (and every missing directory above it, 0700) as an empty file readable by
    its owner only.

    SQLite gives the -wal and -shm files the database file's mode, so they are 0600 too.
    """
    try:
        parent = os.path.dirname(path)
        if parent and not os.path.isdir(parent):
            _make_private_dirs(parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise LedgerError(f"sqlite:///{path}: cannot create the ledger file ({exc})") from exc
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
