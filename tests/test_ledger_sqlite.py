"""What only the SQLite ledger promises: WAL, locking errors, schema versions, and admission whose
cost does not grow with history."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import falbudget.ledger.sqlite as sqlite_ledger
from falbudget.errors import LedgerError, LedgerUnavailable
from falbudget.ledger import BucketCharge, BucketTotals, Hold, SQLiteLedger
from ledger_backends import (
    V2_ADJUSTMENTS,
    V2_ALERTS,
    V2_BUCKETS,
    V2_HOLD_COLUMNS,
    V2_HOLDS,
    check_v2_upgraded,
    v2_hold_links,
)

T0 = 1_750_000_000.0
CHARGES = [BucketCharge("global|2025-06", 10_000_000), BucketCharge("project=demo|2025-06", None)]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def ledger(path: Path) -> Iterator[SQLiteLedger]:
    opened = SQLiteLedger(path)
    yield opened
    opened.close()


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def schema_version(path: Path) -> str:
    conn = raw(path)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return str(row[0])
    finally:
        conn.close()


def reserve(ledger: SQLiteLedger, hold_id: str, now: float = T0, key: str | None = None) -> bool:
    return ledger.reserve(
        hold_id=hold_id,
        endpoint="e",
        amount=800_000,
        charges=CHARGES,
        now=now,
        expires_at=now + 60,
        idempotency_key=key,
    ).admitted


def test_the_file_is_in_wal_mode(ledger: SQLiteLedger, path: Path) -> None:
    conn = raw(path)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def test_a_writer_locked_out_past_the_timeout_is_unavailable_and_reads_go_on(path: Path) -> None:
    ledger = SQLiteLedger(path, busy_timeout_s=0.2)
    assert reserve(ledger, "before")
    blocker = raw(path)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(LedgerUnavailable, match="locked"):
            reserve(ledger, "during")
        # WAL: readers do not wait for the writer
        assert ledger.totals(["global|2025-06"]) == [BucketTotals("global|2025-06", 0, 800_000)]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert reserve(ledger, "after")
    ledger.close()


def test_no_sqlite_exception_escapes(tmp_path: Path) -> None:
    garbage = tmp_path / "not-a-ledger.db"
    garbage.write_bytes(b"this is not a database, just 41 bytes....")
    with pytest.raises(LedgerError) as info:
        SQLiteLedger(garbage)
    assert not isinstance(info.value, sqlite3.Error)
    with pytest.raises(LedgerError):
        SQLiteLedger(tmp_path)  # a directory


def test_a_closed_ledger_refuses_to_work(path: Path) -> None:
    ledger = SQLiteLedger(path)
    ledger.close()
    ledger.close()
    with pytest.raises(LedgerError, match="closed"):
        ledger.totals(["g"])


# -- schema versions ------------------------------------------------------------------------------
def test_a_new_file_is_at_the_latest_version(ledger: SQLiteLedger, path: Path) -> None:
    assert schema_version(path) == "9"
    assert len(sqlite_ledger.MIGRATIONS) == 9


def test_a_newer_schema_version_is_refused_untouched(path: Path) -> None:
    SQLiteLedger(path).close()
    conn = raw(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(LedgerError, match="schema version 99 is newer than this falbudget"):
        SQLiteLedger(path)
    assert schema_version(path) == "99"


@pytest.mark.parametrize("how", ["empty file", "meta at version 0"])
def test_a_version_0_file_is_migrated(path: Path, how: str) -> None:
    if how == "empty file":
        path.touch()
    else:
        conn = raw(path)
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('schema_version', '0')")
        conn.close()
    ledger = SQLiteLedger(path)
    assert reserve(ledger, "h")
    ledger.close()
    assert schema_version(path) == "9"


def test_pending_migrations_run_once_in_order_and_keep_the_data(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = SQLiteLedger(path)
    assert reserve(first, "old")
    first.close()
    calls: list[str] = []

    def add_note(db: sqlite3.Connection) -> None:
        calls.append("v4")
        db.execute("ALTER TABLE holds ADD COLUMN note TEXT")

    monkeypatch.setattr(sqlite_ledger, "MIGRATIONS", [*sqlite_ledger.MIGRATIONS, add_note])
    second = SQLiteLedger(path)
    assert schema_version(path) == "10"
    assert second.get_hold("old").amount == 800_000
    assert reserve(second, "new")
    second.close()
    SQLiteLedger(path).close()
    assert calls == ["v4"]
    conn = raw(path)
    assert "note" in [row[1] for row in conn.execute("PRAGMA table_info(holds)")]
    conn.close()


def test_a_failing_migration_leaves_the_file_at_its_version(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SQLiteLedger(path).close()

    def broken(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half_done (x)")
        db.execute("THIS IS NOT SQL")

    monkeypatch.setattr(sqlite_ledger, "MIGRATIONS", [*sqlite_ledger.MIGRATIONS, broken])
    with pytest.raises(LedgerError):
        SQLiteLedger(path)
    assert schema_version(path) == "9"
    conn = raw(path)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchall() == []
    conn.close()


def test_a_version_1_file_upgrades_when_opened_and_its_holds_can_be_adjusted(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger written by the falbudget before adjustments (schema 1) is upgraded to the latest
    version the first time this falbudget opens it: the holds keep their figures and can be
    reconciled."""
    with monkeypatch.context() as patch:
        patch.setattr(sqlite_ledger, "MIGRATIONS", sqlite_ledger.MIGRATIONS[:1])
        SQLiteLedger(path).close()
    assert schema_version(path) == "1"
    conn = raw(path)
    assert "adjusted_amount" not in [row[1] for row in conn.execute("PRAGMA table_info(holds)")]
    conn.execute("BEGIN")
    conn.execute(
        "INSERT INTO holds (id, endpoint, amount, state, buckets, request_id, created_at, "
        "expires_at, updated_at, settled_amount) VALUES ('old', 'e', 800000, 'expired', "
        f"'[\"global|2025-06\"]', 'req-old', {T0}, {T0 + 60}, {T0 + 61}, 800000)"
    )
    conn.execute(
        f"INSERT INTO hold_buckets VALUES ('old', 'global|2025-06', {T0})",
    )
    conn.execute("INSERT INTO buckets (key, settled, held) VALUES ('global|2025-06', 800000, 0)")
    conn.execute("COMMIT")
    conn.close()

    ledger = SQLiteLedger(path)
    assert schema_version(path) == "9"
    old = ledger.get_hold("old")
    assert (old.state, old.settled_amount, old.adjusted_amount) == ("expired", 800_000, None)
    assert ledger.holds_by_request_id(["req-old"]) == [old]
    row = ledger.adjust("old", 550_000, now=T0 + 100, reason="billed", source="test")
    assert row is not None and row.delta == -250_000  # 550_000 - 800_000
    assert ledger.totals(["global|2025-06"]) == [BucketTotals("global|2025-06", 550_000, 0)]
    ledger.close()


def test_a_version_2_file_upgrades_to_bound_keys_and_loses_nothing(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Schema 3 rebuilds the holds table (SQLite cannot drop the UNIQUE on idempotency_key): every
    row of every table keeps every value and its rowid, the indexes are back, and the old keys
    get no fingerprint and the 24 h lifetime."""
    with monkeypatch.context() as patch:
        patch.setattr(sqlite_ledger, "MIGRATIONS", sqlite_ledger.MIGRATIONS[:2])
        SQLiteLedger(path).close()
    assert schema_version(path) == "2"
    conn = raw(path)
    conn.execute("BEGIN")
    conn.executemany(
        f"INSERT INTO holds ({', '.join(V2_HOLD_COLUMNS)}) VALUES ({', '.join('?' * 15)})",
        [
            (*row[:5], json.dumps(row[5]), *row[6:11], json.dumps(row[11]), *row[12:])
            for row in V2_HOLDS
        ],
    )
    conn.executemany("INSERT INTO hold_buckets VALUES (?, ?, ?)", v2_hold_links())
    conn.executemany("INSERT INTO buckets (key, settled, held) VALUES (?, ?, ?)", V2_BUCKETS)
    conn.executemany("INSERT INTO adjustments VALUES (?, ?, ?, ?, ?, ?, ?, ?)", V2_ADJUSTMENTS)
    conn.executemany("INSERT INTO alerts VALUES (?, ?)", V2_ALERTS)
    conn.execute("COMMIT")
    tables = ["holds", "hold_buckets", "buckets", "adjustments", "alerts", "sqlite_sequence"]

    def dump() -> dict[str, list[dict[str, object]]]:
        conn.row_factory = sqlite3.Row
        out = {}
        for table in tables:
            rowid = "" if table in ("hold_buckets", "buckets", "alerts") else "rowid AS rid, "
            rows = conn.execute(f"SELECT {rowid}* FROM {table} ORDER BY 1, 2").fetchall()
            out[table] = [dict(row) for row in rows]
        conn.row_factory = None
        return out

    before = dump()
    assert len(before["holds"]) == 6 and [h["rid"] for h in before["holds"]] == [1, 2, 3, 4, 5, 6]
    with monkeypatch.context() as patch:  # to version 3 (the next test takes it to 4)
        patch.setattr(sqlite_ledger, "MIGRATIONS", sqlite_ledger.MIGRATIONS[:3])
        SQLiteLedger(path).close()  # opening upgrades
    assert schema_version(path) == "3"
    after = dump()
    for table in tables[1:]:
        assert after[table] == before[table], table
    assert [
        {
            k: v
            for k, v in h.items()
            if k not in ("fingerprint", "idempotency_ttl", "key_forgotten_at")
        }
        for h in after["holds"]
    ] == before["holds"]
    assert [
        (h["fingerprint"], h["idempotency_ttl"], h["key_forgotten_at"]) for h in after["holds"]
    ] == [(None, 86_400.0 if h["idempotency_key"] else None, None) for h in before["holds"]]
    indexes = {
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'holds'"
        )
    }
    assert indexes == {
        "sqlite_autoindex_holds_1",  # the primary key
        "holds_open_by_expiry",
        "holds_by_created",
        "holds_by_state_created",
        "holds_by_request_id",
        "holds_by_bound_key",
    }
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()
    ledger = SQLiteLedger(path)
    check_v2_upgraded(ledger)
    ledger.close()


V3_COLUMNS = (*V2_HOLD_COLUMNS, "fingerprint", "idempotency_ttl", "key_forgotten_at")
_G3, _P3, _U3 = "global|total", "project=a|total", "user=ann|day@UTC:2025-06-15"
V3_HOLDS: list[tuple[object, ...]] = [
    # V2's columns, then fingerprint, idempotency_ttl, key_forgotten_at
    ("k-held", "kh", "e", 300_000, "held", [_G3, _P3], None, T0, T0 + 600, T0, None,
     {"endpoint": "e", "project": "a"}, "v1", "ab" * 32, None, "fp-held", 3_600.0, None),
    ("k-sub", "ks", "e", 400_000, "submitted", [_G3, _U3], "req-s", T0 + 1, T0 + 601, T0 + 2,
     None, {"endpoint": "e", "user": "ann"}, "v1", "ab" * 32, None, "fp-sub", None, None),
    ("k-set", None, "e", 350_000, "settled", [_G3], "req-t", T0 + 2, T0 + 602, T0 + 3, 300_000,
     {"endpoint": "e"}, None, None, None, None, None, None),
    ("k-old", "kr", "e", 600_000, "released", [_G3, _P3], None, T0 + 3, T0 + 603, T0 + 5, None,
     {"endpoint": "e", "project": "a"}, "v1", "ab" * 32, None, "fp-old", 60.0, T0 + 100),
    ("k-new", "kr", "e", 200_000, "settled", [_G3], "req-n", T0 + 100, T0 + 700, T0 + 101,
     250_000, {"endpoint": "e"}, "v1", "ab" * 32, None, "fp-new", 60.0, None),
    ("k-exp", None, "e", 500_000, "expired", [_G3, _U3], "req-x", T0 + 4, T0 + 10, T0 + 11,
     500_000, {"endpoint": "e", "user": "ann"}, "v1", "ab" * 32, 450_000, None, None, None),
    ("k-adj", "ka", "e", 800_000, "released", [_G3], "req-a", T0 + 5, T0 + 605, T0 + 6, None,
     {"endpoint": "e"}, "v1", "ab" * 32, 200_000, "fp-adj", 86_400.0, None),
]  # fmt: skip
V3_BUCKETS = [(_G3, 1_200_000, 700_000), (_P3, 0, 300_000), (_U3, 450_000, 400_000)]
"""settled 300_000 + 250_000 + 450_000 + 200_000; held 300_000 + 400_000."""
V3_ADJUSTMENTS = [
    (1, "k-exp", 500_000, 450_000, -50_000, "billed less", "billing.csv", T0 + 200),
    (2, "k-adj", 0, 200_000, 200_000, "billed after all", "api", T0 + 201),
]


def test_a_version_3_file_upgrades_to_lean_holds_and_loses_nothing(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Schemas 4 and 5 drop hold_buckets and holds_by_state_created and keep what holds share
    (endpoint, buckets, tags, table) once, in hold_kinds: every hold of every state (keys
    with fingerprints and lifetimes, a forgotten key and the hold it passed to, adjusted
    holds), every total, adjustment and alert keeps every value and rowid; the history by
    bucket reads the same holds as the links did."""
    with monkeypatch.context() as patch:
        patch.setattr(sqlite_ledger, "MIGRATIONS", sqlite_ledger.MIGRATIONS[:3])
        SQLiteLedger(path).close()
    assert schema_version(path) == "3"
    conn = raw(path)
    conn.execute("BEGIN")
    conn.executemany(
        f"INSERT INTO holds ({', '.join(V3_COLUMNS)}) VALUES ({', '.join('?' * 18)})",
        [
            (*row[:5], json.dumps(row[5]), *row[6:11], json.dumps(row[11]), *row[12:])
            for row in V3_HOLDS
        ],
    )
    links = [(row[0], key, row[7]) for row in V3_HOLDS for key in row[5]]  # type: ignore[union-attr]
    conn.executemany("INSERT INTO hold_buckets VALUES (?, ?, ?)", links)
    conn.executemany("INSERT INTO buckets (key, settled, held) VALUES (?, ?, ?)", V3_BUCKETS)
    conn.executemany("INSERT INTO adjustments VALUES (?, ?, ?, ?, ?, ?, ?, ?)", V3_ADJUSTMENTS)
    conn.executemany("INSERT INTO alerts VALUES (?, ?)", [(_G3, "0.5@2.00"), (_U3, "1@1.00")])
    conn.execute("COMMIT")
    tables = ["holds", "buckets", "adjustments", "alerts", "sqlite_sequence", "meta"]

    def dump() -> dict[str, list[tuple[object, ...]]]:
        out = {}
        for table in tables:
            rowid = "" if table in ("buckets", "alerts", "meta") else "rowid, "
            out[table] = conn.execute(f"SELECT {rowid}* FROM {table} ORDER BY 1, 2").fetchall()
        return out

    before = dump()
    columns = ", ".join(
        f"k.{c}" if c in sqlite_ledger._KIND_COLUMNS.split(", ") else f"h.{c}" for c in V3_COLUMNS
    )
    holds_before = conn.execute(
        f"SELECT rowid, {', '.join(V3_COLUMNS)} FROM holds ORDER BY rowid"
    ).fetchall()
    SQLiteLedger(path).close()  # opening upgrades
    assert schema_version(path) == "9"
    tables.remove("holds")  # now a hold and its kind
    after = dump()
    assert {t: rows for t, rows in after.items() if t != "meta"} == {
        t: rows for t, rows in before.items() if t not in ("meta", "holds")
    }
    holds_after = conn.execute(
        f"SELECT h.rowid, {columns} FROM holds h JOIN hold_kinds k ON k.id = h.kind"
        " ORDER BY h.rowid"
    ).fetchall()
    assert holds_after == holds_before
    assert len(holds_after) == 7
    # seven holds of four kinds (endpoint, buckets, tags, table): k-old shares k-held's,
    # k-exp k-sub's, k-adj k-new's; k-set (no table) has its own
    assert conn.execute("SELECT COUNT(*) FROM hold_kinds").fetchone() == (4,)
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "hold_buckets" not in names and "hold_buckets_by_bucket" not in names
    assert "holds_by_state_created" not in names
    assert {"holds_by_created", "holds_open_by_expiry", "holds_by_request_id"} <= names
    assert "holds_by_bound_key" in names and "hold_kinds_by_value" not in names
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()

    ledger = SQLiteLedger(path)
    try:
        # the history by bucket: the holds the links named, newest first
        assert [h.id for h in ledger.holds(bucket=_P3)] == ["k-old", "k-held"]
        assert [h.id for h in ledger.holds(bucket=_U3)] == ["k-exp", "k-sub"]
        assert [h.id for h in ledger.holds(bucket=_G3, states=["settled"])] == [
            "k-new",
            "k-set",
        ]
        assert ledger.totals([_G3, _P3, _U3]) == [BucketTotals(*row) for row in V3_BUCKETS]
        old = ledger.get_hold("k-adj")
        assert (old.state, old.adjusted_amount, old.fingerprint, old.idempotency_ttl) == (
            "released",
            200_000,
            "fp-adj",
            86_400.0,
        )
        assert [a.id for a in ledger.adjustments()] == [1, 2]
        assert ledger.claim_alert(_U3, "1@1.00") is False

        def again(key: str, fingerprint: str) -> object:
            return ledger.reserve(
                hold_id="x",
                endpoint="e",
                amount=1,
                charges=[BucketCharge(_G3, None)],
                now=T0 + 120,  # k-new closed at T0 + 101: its key lives until T0 + 161
                expires_at=T0 + 720,
                idempotency_key=key,
                fingerprint=fingerprint,
                idempotency_ttl=60.0,
            )

        # the key kr passed from k-old to k-new, which it is bound to; kh keeps its fingerprint
        replay = again("kr", "fp-new")
        assert (replay.replayed, replay.hold.id) == (True, "k-new")  # type: ignore[attr-defined]
        conflict = again("kh", "other")
        assert (conflict.conflict, conflict.hold.id) == (True, "k-held")  # type: ignore[attr-defined]
        # the figures summed in the ledger: spent 300_000 + 250_000 + 450_000 + 200_000
        total = ledger.summarize(period=10**9)
        assert sum(g.spent for g in total) == 1_200_000
        assert sum(g.held for g in total) == 700_000
    finally:
        ledger.close()


_IP1, _IP2 = "ip=10.0.0.1|day@UTC:2025-06-15", "ip=10.0.0.2|day@UTC:2025-06-15"
_K1 = "key=k1|total"
VISITOR_HOLDS: list[tuple[object, ...]] = [
    # V3_COLUMNS; the proxy's visitor tag (ip), its virtual key and caps per address
    ("v-1", None, "e", 100_000, "settled", [_G3, _IP1, _P3], "req-v1", T0 + 10, T0 + 610,
     T0 + 11, 100_000, {"endpoint": "e", "ip": "10.0.0.1", "project": "a"}, "v1", "ab" * 32,
     None, None, None, None),
    ("v-2", "kv", "e", 120_000, "held", [_G3, _IP2, _P3], None, T0 + 12, T0 + 612, T0 + 12,
     None, {"endpoint": "e", "ip": "10.0.0.2", "project": "a"}, "v1", "ab" * 32, None,
     "fp-v2", 3_600.0, None),
    ("v-3", None, "e", 130_000, "released", [_K1, _G3], "req-v3", T0 + 13, T0 + 613, T0 + 14,
     None, {"endpoint": "e", "ip": "10.0.0.3", "key": "k1"}, "v1", "ab" * 32, 50_000, None,
     None, None),
]  # fmt: skip


def _as_hold(row: tuple[object, ...]) -> Hold:
    """A V3_COLUMNS row as the Hold the ledger should read back."""
    return Hold(
        id=row[0],  # type: ignore[arg-type]
        endpoint=row[2],  # type: ignore[arg-type]
        amount=row[3],  # type: ignore[arg-type]
        state=row[4],  # type: ignore[arg-type]
        buckets=tuple(row[5]),  # type: ignore[call-overload]
        created_at=row[7],  # type: ignore[arg-type]
        expires_at=row[8],  # type: ignore[arg-type]
        updated_at=row[9],  # type: ignore[arg-type]
        idempotency_key=row[1],  # type: ignore[arg-type]
        request_id=row[6],  # type: ignore[arg-type]
        settled_amount=row[10],  # type: ignore[arg-type]
        tags=row[11],  # type: ignore[arg-type]
        table_version=row[12],  # type: ignore[arg-type]
        table_sha256=row[13],  # type: ignore[arg-type]
        adjusted_amount=row[14],  # type: ignore[arg-type]
        fingerprint=row[15],  # type: ignore[arg-type]
        idempotency_ttl=row[16],  # type: ignore[arg-type]
    )


def test_a_version_7_file_moves_visitors_out_of_the_kinds_and_loses_nothing(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Schema 8 keeps the visitor tag (ip) and its buckets with each hold: a version 7
    ledger holding every kind of row (holds of every state, keys bound and forgotten, adjusted
    holds, holds of three visitors, totals, adjustments, alerts, virtual keys, refusals) upgrades in
    place, every hold reading back as it was, every other row and every rowid unchanged, and
    the kinds of the visitors' holds fold into the kinds they share."""
    every = [*V3_HOLDS, *VISITOR_HOLDS]
    with monkeypatch.context() as patch:
        patch.setattr(sqlite_ledger, "MIGRATIONS", sqlite_ledger.MIGRATIONS[:3])
        SQLiteLedger(path).close()
    conn = raw(path)
    conn.execute("BEGIN")
    conn.executemany(
        f"INSERT INTO holds ({', '.join(V3_COLUMNS)}) VALUES ({', '.join('?' * 18)})",
        [
            (*row[:5], json.dumps(row[5]), *row[6:11], json.dumps(row[11]), *row[12:])
            for row in every
        ],
    )
    links = [(row[0], key, row[7]) for row in every for key in row[5]]  # type: ignore[union-attr]
    conn.executemany("INSERT INTO hold_buckets VALUES (?, ?, ?)", links)
    visitor_totals = [(_IP1, 100_000, 0), (_IP2, 0, 120_000), (_K1, 50_000, 0)]
    conn.executemany(
        "INSERT INTO buckets (key, settled, held) VALUES (?, ?, ?)", V3_BUCKETS + visitor_totals
    )
    conn.executemany("INSERT INTO adjustments VALUES (?, ?, ?, ?, ?, ?, ?, ?)", V3_ADJUSTMENTS)
    conn.executemany("INSERT INTO alerts VALUES (?, ?)", [(_G3, "0.5@2.00"), (_IP1, "1@1.00")])
    conn.execute("COMMIT")
    with monkeypatch.context() as patch:  # schema 7: the holds of 6, and refusals
        patch.setattr(sqlite_ledger, "MIGRATIONS", sqlite_ledger.MIGRATIONS[:7])
        SQLiteLedger(path).close()
    assert schema_version(path) == "7"
    conn.execute(
        "INSERT INTO api_keys VALUES ('k1', ?, '{\"team\": \"x\"}', ?, NULL)", ("d" * 64, T0)
    )
    conn.executemany(
        "INSERT INTO refusals (at, endpoint, reason, cap, amount, tags) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (T0 + 20, "e", "cap_exceeded", "per address", 150_000, '{"ip": "10.0.0.1"}'),
            (T0 + 21, "e", "unknown_endpoint", None, 0, "{}"),
        ],
    )
    # seven kinds: the four of V3_HOLDS, and one per visitor hold (each names its address)
    assert conn.execute("SELECT COUNT(*) FROM hold_kinds").fetchone() == (7,)
    tables = ["buckets", "adjustments", "alerts", "api_keys", "refusals", "sqlite_sequence"]

    def dump() -> dict[str, list[tuple[object, ...]]]:
        out = {}
        for table in tables:
            rowid = "" if table in ("buckets", "alerts") else "rowid, "
            out[table] = conn.execute(f"SELECT {rowid}* FROM {table} ORDER BY 1, 2").fetchall()
        out["holds"] = conn.execute(
            "SELECT rowid, id, idempotency_key, amount, state, request_id, created_at, "
            "expires_at, updated_at, settled_amount, adjusted_amount, fingerprint, "
            "idempotency_ttl, key_forgotten_at FROM holds ORDER BY rowid"
        ).fetchall()
        return out

    before = dump()
    SQLiteLedger(path).close()  # opening upgrades
    assert schema_version(path) == "9"
    assert dump() == before
    # v-1 and v-2 share endpoint, project, [global, (address), project] and table: one kind;
    # v-3 has [(key), global] and no project: a kind of its own; four + two = six
    assert conn.execute("SELECT COUNT(*) FROM hold_kinds").fetchone() == (6,)
    assert conn.execute("SELECT COUNT(*) FROM holds WHERE visitor IS NOT NULL").fetchone() == (3,)
    assert conn.execute(
        "SELECT COUNT(*) FROM hold_kinds WHERE id NOT IN (SELECT kind FROM holds)"
    ).fetchone() == (0,)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()

    ledger = SQLiteLedger(path)
    try:
        assert sorted(ledger.holds(), key=lambda h: h.id) == sorted(
            (_as_hold(row) for row in every), key=lambda h: h.id
        )
        assert [h.id for h in ledger.holds(bucket=_IP2)] == ["v-2"]
        assert [h.id for h in ledger.holds(bucket=_K1)] == ["v-3"]
        assert [h.id for h in ledger.holds(bucket=_P3)] == ["v-2", "v-1", "k-old", "k-held"]
        conflict = ledger.reserve(
            hold_id="x",
            endpoint="e",
            amount=1,
            charges=[BucketCharge(_G3, None)],
            now=T0 + 120,
            expires_at=T0 + 720,
            idempotency_key="kv",
            fingerprint="other",
        )
        assert (conflict.conflict, conflict.hold.id) == (True, "v-2")  # type: ignore[union-attr]
        # the visitors' holds: v-1 and v-2, their addresses left out, share the tags and buckets
        # of k-held and k-old (a kind of their own, with a null for the address): one group;
        # v-3 (key k1, not a visitor tag) its own
        groups = {(g.buckets, g.tags.get("key")): g for g in ledger.summarize(period=10**9)}
        together = groups[(_G3, _P3), None]
        # spent: v-1's 100,000 (k-old released, nothing); held: k-held 300,000 + v-2 120,000
        assert (together.holds, together.spent, together.held) == (4, 100_000, 420_000)
        assert (together.first, together.last) == (T0, T0 + 12)
        alone = groups[(_K1, _G3), "k1"]
        assert (alone.holds, alone.spent, alone.held) == (1, 50_000, 0)  # released, adjusted
    finally:
        ledger.close()


def test_adjusting_a_hold_whose_bucket_row_was_deleted_by_hand_names_the_bucket(
    ledger: SQLiteLedger, path: Path
) -> None:
    assert reserve(ledger, "h")
    ledger.settle("h", None, now=T0 + 1)
    conn = raw(path)
    conn.execute("DELETE FROM buckets WHERE key = 'project=demo|2025-06'")
    conn.close()
    with pytest.raises(LedgerError) as info:
        ledger.adjust("h", 500_000, now=T0 + 2, reason="billed", source="test")
    assert str(info.value) == (
        "bucket 'project=demo|2025-06' of hold 'h' is missing from the ledger (deleted by hand?):"
        " the hold cannot be adjusted until the bucket row is restored"
    )
    assert ledger.adjustments() == []
    assert ledger.get_hold("h").adjusted_amount is None
    # the other bucket did not move: 800_000 as settled
    assert ledger.totals(["global|2025-06"]) == [BucketTotals("global|2025-06", 800_000, 0)]


def test_request_ids_are_looked_up_through_the_index(ledger: SQLiteLedger, path: Path) -> None:
    add_history(path, closed=1_000, open_later=0)
    conn = ledger._conn
    assert conn is not None
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        assert ledger.holds_by_request_id(["req-x"]) == []
    finally:
        conn.set_trace_callback(None)
    check = raw(path)
    plans = [
        [row[3] for row in check.execute("EXPLAIN QUERY PLAN " + sql)]
        for sql in statements
        if sql.startswith("SELECT")
    ]
    check.close()
    assert len(plans) == 1
    assert any("holds_by_request_id" in step for step in plans[0]), plans


# -- cost independent of history ------------------------------------------------------------------
def add_history(path: Path, closed: int, open_later: int) -> None:
    """``closed`` settled holds and ``open_later`` held ones expiring far in the future."""
    conn = raw(path)
    conn.execute("BEGIN")
    kind = sqlite_ledger._kind(conn, ("e", '["global|2025-06"]', "{}", None, None))
    for prefix, count, state, expires in (
        ("old", closed, "settled", T0 - 10),
        ("later", open_later, "held", T0 + 10**6),
    ):
        rows = [(f"{prefix}{i}", T0 - 1000 + i / count) for i in range(count)]
        conn.executemany(
            "INSERT INTO holds (id, kind, amount, state, created_at, expires_at, "
            f"updated_at) VALUES (?, {kind}, 1, '{state}', ?, {expires}, 0)",
            rows,
        )
    conn.execute("COMMIT")
    conn.close()


def statements_of_a_reserve(ledger: SQLiteLedger, hold_id: str) -> tuple[list[str], int]:
    """The SQL a reserve runs, and how many SQLite VM instructions it took."""
    conn = ledger._conn
    assert conn is not None
    statements: list[str] = []
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_trace_callback(statements.append)
    conn.set_progress_handler(count, 1)
    try:
        assert reserve(ledger, hold_id, now=T0 + 1, key=f"key-{hold_id}")
    finally:
        conn.set_trace_callback(None)
        conn.set_progress_handler(None, 1)
    return statements, steps[0]


def test_admission_reads_no_table_in_full(ledger: SQLiteLedger, path: Path) -> None:
    add_history(path, closed=1_000, open_later=100)
    statements, _ = statements_of_a_reserve(ledger, "probe")
    plans = {}
    conn = raw(path)
    for sql in statements:
        if sql.split()[0].upper() in ("SELECT", "UPDATE", "INSERT", "DELETE"):
            plans[sql] = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
    conn.close()
    assert any("holds_open_by_expiry" in " ".join(plan) for plan in plans.values())
    scans = {sql: plan for sql, plan in plans.items() if any(s.startswith("SCAN") for s in plan)}
    assert scans == {}


def test_admission_costs_the_same_with_a_long_history(tmp_path: Path) -> None:
    empty = SQLiteLedger(tmp_path / "empty.db")
    reserve(empty, "warm")
    _, steps_empty = statements_of_a_reserve(empty, "probe")
    empty.close()

    full_path = tmp_path / "full.db"
    SQLiteLedger(full_path).close()
    add_history(full_path, closed=100_000, open_later=1_000)
    full = SQLiteLedger(full_path)
    reserve(full, "warm")
    _, steps_full = statements_of_a_reserve(full, "probe")
    full.close()
    assert steps_full == steps_empty


def test_history_by_bucket_and_time_is_read_through_indexes(
    ledger: SQLiteLedger, path: Path
) -> None:
    add_history(path, closed=1_000, open_later=100)
    conn = ledger._conn
    assert conn is not None
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        by_bucket = ledger.holds(bucket="global|2025-06", since=T0 - 1000, until=T0 - 999.5)
        by_time = ledger.holds(since=T0 - 1000, until=T0 - 999.5, states=["settled"])
    finally:
        conn.set_trace_callback(None)
    assert len(by_bucket) == 550  # 500 of the closed holds and 50 of the open ones
    assert len(by_time) == 500
    check = raw(path)
    plans = [
        [row[3] for row in check.execute("EXPLAIN QUERY PLAN " + sql)]
        for sql in statements
        if sql.startswith("SELECT")
    ]
    check.close()
    assert len(plans) == 2
    # no table is scanned; the by-bucket filter reads each hold's own list (schema 4: json_each)
    assert all(
        not step.startswith("SCAN") or step.startswith("SCAN json_each")
        for plan in plans
        for step in plan
    ), plans


def test_a_forked_child_opens_its_own_connection(ledger: SQLiteLedger) -> None:
    assert reserve(ledger, "parent")
    inherited = id(ledger._conn)

    def in_child() -> None:
        assert reserve(ledger, "child")
        assert id(ledger._conn) != inherited
        os._exit(0)

    child = multiprocessing.get_context("fork").Process(target=in_child)
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    assert ledger.get_hold("child").amount == 800_000  # the parent's connection still works
    assert ledger.totals(["global|2025-06"]) == [BucketTotals("global|2025-06", 0, 1_600_000)]


def test_holds_of_3000_addresses_stay_small_and_their_report_groups_few(path: Path) -> None:
    """The proxy's ``ip`` tag and a cap per address: 3,000 addresses, two requests each (on
    two days), through the ledger's API. Schema 6 made a kind per address (549 bytes a hold,
    and a summary group per hold); the goal is at most 400 bytes a hold (docs/scale.md), and
    the summary has a group per project and day whatever the number of addresses."""
    ledger = SQLiteLedger(path)
    day = 86_400
    start = 1_749_945_600.0  # 2025-06-15 00:00 UTC, a day's start
    n = 0
    for rep in range(2):
        now = start + rep * day
        window = f"day@UTC:2025-06-{15 + rep}"
        for visitor in range(3_000):
            ip = f"198.51.{visitor // 256}.{visitor % 256}"
            project = f"p{visitor % 10}"
            hold_id = f"{n:08x}-0000-4000-8000-000000000000"  # a uuid's length, as the guard's
            n += 1
            result = ledger.reserve(
                hold_id=hold_id,
                endpoint="fal-ai/flux/dev",
                amount=25_000,
                charges=[
                    BucketCharge(f"global|{window}", None),
                    BucketCharge(f"project={project}|{window}", None),
                    BucketCharge(f"ip={ip}|{window}", 1_000_000),
                ],
                now=now + visitor,
                expires_at=now + visitor + 600,
                tags={"endpoint": "fal-ai/flux/dev", "project": project, "ip": ip},
                table_version="2026.12.06",
                table_sha256="ab" * 32,
            )
            assert result.admitted
            ledger.settle(hold_id, None, now=now + visitor + 1)
    groups = ledger.summarize(period=day)
    ledger.close()
    # 10 projects x 2 days, each group 300 addresses' holds of 25,000
    assert len(groups) == 20
    assert {(g.holds, g.spent, dict(g.tags).get("ip")) for g in groups} == {(300, 7_500_000, None)}
    conn = raw(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages, size = (
        conn.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_count", "page_size")
    )
    assert conn.execute("SELECT COUNT(*) FROM hold_kinds").fetchone() == (20,)
    conn.close()
    per_hold = pages * size / 6_000
    assert per_hold <= 400, f"{per_hold:.0f} bytes a hold"


def test_holds_with_an_overrun_are_read_through_their_index(
    ledger: SQLiteLedger, path: Path
) -> None:
    """``holds(overrun=True)`` reads the partial index of schema 9, which a hold settled at
    what was held never enters: 1,000 such holds of history, then one settled above."""
    add_history(path, closed=1_000, open_later=0)
    assert reserve(ledger, "over")
    ledger.settle("over", 900_000, now=T0 + 1)  # 100,000 above the 800,000 held
    assert reserve(ledger, "under")
    ledger.settle("under", 700_000, now=T0 + 1)
    conn = ledger._conn
    assert conn is not None
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        assert [h.id for h in ledger.holds(overrun=True)] == ["over"]
    finally:
        conn.set_trace_callback(None)
    check = raw(path)
    (select,) = [sql for sql in statements if sql.startswith("SELECT")]
    plan = [row[3] for row in check.execute("EXPLAIN QUERY PLAN " + select)]
    assert any("USING INDEX holds_overrun" in step for step in plan), plan
    # in the index: the overrun only (the history and "under" settled at or below what was held)
    indexed = check.execute(
        "SELECT COUNT(*) FROM holds INDEXED BY holds_overrun"
        " WHERE (adjusted_amount > amount OR settled_amount > amount)"
    ).fetchone()
    assert indexed == (1,)
    check.close()


def test_holds_of_an_upgraded_file_and_new_ones_with_the_same_tags_sum_into_one_group(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hold written before hold kinds (schema 3) keeps its tags' JSON as it was written, in
    any key order; a new hold with the same tags makes a kind whose JSON is sorted. The two are
    one group of summarize, as they are on the other backends."""
    with monkeypatch.context() as patch:
        patch.setattr(sqlite_ledger, "MIGRATIONS", sqlite_ledger.MIGRATIONS[:3])
        SQLiteLedger(path).close()
    old = ("old", None, "e", 300_000, "settled", [_G3], "req-o", T0, T0 + 600, T0 + 1, 300_000,
           None, None, None, None, None, None, None)  # fmt: skip
    conn = raw(path)
    conn.execute(
        f"INSERT INTO holds ({', '.join(V3_COLUMNS)}) VALUES ({', '.join('?' * 18)})",
        (*old[:5], json.dumps(old[5]), *old[6:11], '{"user": "ann", "project": "a"}', *old[12:]),
    )
    conn.execute("INSERT INTO hold_buckets VALUES ('old', ?, ?)", (_G3, T0))
    conn.execute("INSERT INTO buckets (key, settled, held) VALUES (?, 300000, 0)", (_G3,))
    conn.close()
    ledger = SQLiteLedger(path)  # upgrades
    try:
        new = ledger.reserve(
            hold_id="new",
            endpoint="e",
            amount=200_000,
            charges=[BucketCharge(_G3, None)],
            now=T0 + 2,
            expires_at=T0 + 600,
            tags={"project": "a", "user": "ann"},
        )
        assert new.admitted
        ledger.settle("new", None, now=T0 + 3)
        groups = ledger.summarize(period=10**9)
        # by hand: 300,000 + 200,000 spent by two holds
        assert [(g.holds, g.spent, dict(g.tags), g.buckets) for g in groups] == [
            (2, 500_000, {"project": "a", "user": "ann"}, (_G3,))
        ]
    finally:
        ledger.close()
