"""The ledger a command reads is the one the guard writes (issue 9, section 4).

- A relative SQLite path in a configuration file is relative to that file.
- Commands that only read open the ledger read-only and never create one: a missing ledger is
  exit 2 with one line naming the resolved path (SQLite) or schema (PostgreSQL).
- Many processes opening a brand-new SQLite ledger at once all succeed, and every lock-wait
  message states the wait that really happened (a fake monotonic clock shows which one).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import falbudget.ledger.sqlite as sqlite_module
from concurrent_open import open_new_files
from falbudget import Guard, LedgerError, LedgerNotFound, LedgerUnavailable
from falbudget.ledger import BucketCharge, SQLiteLedger, open_ledger, resolve_ledger_url
from test_cli import assert_usage_error, run

MAGI = "fal-ai/magi/image-to-video"
REQ = {"prompt": "a cat", "image_url": "https://example.invalid/cat.png"}
T0 = 1_795_521_600.0  # 2026-11-24 12:00 UTC
BILLING = Path(__file__).resolve().parent.parent / "docs" / "examples" / "billing-events.csv"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("FALBUDGET_CONFIG", "FALBUDGET_LEDGER", "FALBUDGET_PRICING"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # the default ledger, if asked


def reserve(ledger: SQLiteLedger, hold_id: str) -> bool:
    result = ledger.reserve(
        hold_id=hold_id,
        endpoint=MAGI,
        amount=800_000,
        charges=[BucketCharge("global|total", None)],
        now=T0,
        expires_at=T0 + 60,
    )
    return result.admitted


# -- a relative path in a configuration file -----------------------------------------------------


def test_a_relative_sqlite_path_is_relative_to_the_configuration_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    config = home / "falbudget.yaml"
    config.write_text("ledger: sqlite:///data/spend.db\ncaps:\n  - {limit: '10.00'}\n")
    monkeypatch.chdir(elsewhere)  # read from another directory, as cron or a worker would
    guard = Guard.from_config(str(config), clock=lambda: T0)
    with guard.reserve(MAGI, REQ):
        pass  # 0.80
    guard.close()
    assert (home / "data" / "spend.db").is_file()
    assert not (elsewhere / "data").exists()
    code, out, err = run(capsys, "budget", "status", "--config", str(config), "--format", "json")
    assert (code, err) == (0, "")
    assert json.loads(out)["global"]["spent"] == "0.80"
    # the same file named relatively, from a third directory
    monkeypatch.chdir(tmp_path)
    code, out, err = run(
        capsys, "report", "--config", "project/falbudget.yaml", "--format", "json",
        "--now", "2026-11-24",
    )  # fmt: skip
    assert (code, err) == (0, "") and '"spent": "0.80"' in out


@pytest.mark.parametrize(
    ("url", "resolved"),
    [
        ("sqlite:///spend.db", "sqlite:///{base}/spend.db"),
        ("sqlite:///a/b.db", "sqlite:///{base}/a/b.db"),
        ("SQLITE:///spend.db", "sqlite:///{base}/spend.db"),
        ("sqlite:////abs/spend.db", "sqlite:////abs/spend.db"),  # absolute: as it is
        ("sqlite:///~/spend.db", "sqlite:///~/spend.db"),  # the home directory: as it is
        ("memory://", "memory://"),
        ("postgresql://u@h/db?schema=s", "postgresql://u@h/db?schema=s"),
        ("sqlite://", "sqlite://"),  # not a valid URL: left for open_ledger to refuse
    ],
)
def test_resolve_ledger_url(tmp_path: Path, url: str, resolved: str) -> None:
    assert resolve_ledger_url(url, str(tmp_path)) == resolved.format(base=tmp_path)


# -- commands that only read create nothing ------------------------------------------------------

READ_ONLY_COMMANDS = [
    ["budget", "status"],
    ["budget", "history"],
    ["report"],
    ["plan", "count", MAGI],
    ["reconcile", str(BILLING), "--now", "2026-11-24"],
    ["ledger", "adjustments"],
    ["quote", MAGI],
]


@pytest.mark.parametrize("argv", READ_ONLY_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_command_that_only_reads_never_creates_a_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    config = tmp_path / "falbudget.yaml"
    config.write_text("ledger: sqlite:///spend.db\ncaps:\n  - {limit: '10.00'}\n")
    missing = tmp_path / "spend.db"
    err = assert_usage_error(run(capsys, *argv, "--config", str(config)), f"no ledger at {missing}")
    assert "creates none" in err
    assert not missing.exists() and not (tmp_path / "spend.db-wal").exists()
    # without a configuration: the --ledger given, or the default ledger, is not created either
    if argv[0] not in ("plan", "quote"):  # these two read caps, so they need --config
        assert_usage_error(run(capsys, *argv), "no ledger at")
        assert not (tmp_path / "xdg").exists()


def test_reconcile_apply_and_release_expired_still_create_the_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    code, _, err = run(capsys, "budget", "release-expired", "--ledger", url)
    assert (code, err) == (0, "") and (tmp_path / "new.db").is_file()


@pytest.mark.postgres
def test_a_command_that_only_reads_never_creates_a_postgres_schema(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pgutil import admin_connection, postgres_test_url, schema_of

    url = postgres_test_url()
    schema = schema_of(url)
    for argv in READ_ONLY_COMMANDS:
        if argv[0] in ("plan", "quote"):
            continue
        assert_usage_error(run(capsys, *argv, "--ledger", url), f"schema '{schema}'", "no ledger")
    with pytest.raises(LedgerNotFound, match="creates none"):
        open_ledger(url, read_only=True).totals(["global|total"])
    with admin_connection() as conn:
        found = conn.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s", (schema,)
        ).fetchone()
    assert found == (0,)
    # once a guard has created it, the read-only ledger reads it and can write nothing
    writer = open_ledger(url)
    reserve(writer, "a")  # type: ignore[arg-type]
    writer.close()
    reader = open_ledger(url, read_only=True)
    try:
        assert [(t.settled, t.held) for t in reader.totals(["global|total"])] == [(0, 800_000)]
        with pytest.raises(LedgerError, match="read-only transaction"):
            reserve(reader, "b")  # type: ignore[arg-type]
    finally:
        reader.close()


def test_a_read_only_sqlite_ledger_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "spend.db"
    writer = SQLiteLedger(path)
    assert reserve(writer, "a")
    writer.close()
    before = path.read_bytes()
    reader = SQLiteLedger(path, read_only=True)
    try:
        assert reader.get_hold("a").amount == 800_000
        with pytest.raises(LedgerError, match="opened read-only"):
            reserve(reader, "b")
    finally:
        reader.close()
    assert path.read_bytes() == before


def test_a_read_only_open_does_not_upgrade_an_old_schema(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    SQLiteLedger(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerError, match=r"at version 1 .* only reads does not"):
        SQLiteLedger(path, read_only=True)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta").fetchone() == ("1",)
    conn.close()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(LedgerNotFound, match="holds no falbudget ledger"):
        SQLiteLedger(empty, read_only=True)


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A directory another user can enter (tmp_path is 0700), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="falbudget-ro-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_ledger_the_user_may_only_read_can_be_read(world_readable_dir: Path) -> None:
    """The file 0444 in a directory the reader cannot write (so it cannot make the -shm file
    either): budget status reads it. As root, the reader is the user nobody (setpriv)."""
    path = world_readable_dir / "spend.db"
    writer = SQLiteLedger(path)
    assert reserve(writer, "a")
    writer.settle("a", None, now=T0 + 1)
    writer.close()
    path.chmod(0o444)
    command = [sys.executable, "-m", "falbudget", "budget", "status", "--format", "json"]
    command += ["--ledger", f"sqlite:///{path}"]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(world_readable_dir)}
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv is missing: no unprivileged reader")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    else:
        world_readable_dir.chmod(0o555)
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    finally:
        world_readable_dir.chmod(0o755)
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout)["global"]["spent"] == "0.80"
    assert sorted(p.name for p in world_readable_dir.iterdir()) == ["spend.db"]


# -- many processes opening a new file at once ---------------------------------------------------


def test_many_processes_opening_a_brand_new_ledger_at_once_all_succeed() -> None:
    """16 processes open the same new file at the same moment, 150 rounds (2,400 opens): the
    old set-up failed about 1 open in 500 to 1,000 with "database is locked" (SQLite answers
    SQLITE_BUSY at once to a journal-mode change or a lock upgrade it cannot wait for), so
    these rounds would have caught it with a probability above 90 %."""
    workers, rounds = 16, 150
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(workers), ctx.Queue()
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None  # RAM: fsyncs cost nothing
    with tempfile.TemporaryDirectory(dir=base) as directory:
        processes = [
            ctx.Process(target=open_new_files, args=(directory, n, rounds, barrier, results))
            for n in range(workers)
        ]
        for process in processes:
            process.start()
        reports = [results.get(timeout=600) for _ in processes]
        for process in processes:
            process.join(timeout=60)
        failures = [failure for _, found in reports for failure in found]
        assert failures == []
        for number in (0, rounds - 1):  # every worker's hold is in, exactly once
            ledger = SQLiteLedger(Path(directory) / f"round-{number}.db", read_only=True)
            assert sorted(h.id for h in ledger.holds()) == sorted(f"w{n}" for n in range(workers))
            ledger.close()


# -- the wait a lock message states --------------------------------------------------------------


class FakeMonotonic:
    """A monotonic clock that moves 0.125 s each time it is read; keeps what it returned.
    Installed as the ``time`` of one ledger module only (``sleep`` does not wait)."""

    def __init__(self) -> None:
        self.readings: list[float] = []

    def monotonic(self) -> float:
        self.readings.append(1000.0 + 0.125 * len(self.readings))
        return self.readings[-1]

    def sleep(self, seconds: float) -> None:
        pass

    def waited(self, since: int = 0) -> str:
        return f"{self.readings[-1] - self.readings[since]:.3f} s"


def test_a_locked_write_states_the_wait_that_happened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "spend.db"
    ledger = SQLiteLedger(path, busy_timeout_s=0.05)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    clock = FakeMonotonic()
    monkeypatch.setattr(sqlite_module, "time", clock)
    try:
        with pytest.raises(LedgerUnavailable) as info:
            reserve(ledger, "a")
    finally:
        monkeypatch.undo()
        blocker.execute("ROLLBACK")
        blocker.close()
        ledger.close()
    assert len(clock.readings) == 2  # when the transaction began, when it failed
    message = str(info.value)
    assert f"gave up after waiting {clock.waited()} (busy timeout 0.05 s)" in message
    assert "30 s" not in message


def test_opening_a_locked_new_file_states_the_wait_that_happened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "new.db"
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # nobody may even read the new file
    clock = FakeMonotonic()
    monkeypatch.setattr(sqlite_module, "time", clock)
    try:
        with pytest.raises(LedgerUnavailable) as info:
            SQLiteLedger(path, busy_timeout_s=0.3)
    finally:
        monkeypatch.undo()
        blocker.execute("ROLLBACK")
        blocker.close()
    message = str(info.value)
    assert "opening the ledger" in message
    assert f"gave up after waiting {clock.waited()} (busy timeout 0.3 s)" in message
    # each try read the clock twice (time left, time waited): the set-up was tried again
    assert len(clock.readings) > 3
    SQLiteLedger(path).close()  # unlocked, it opens


@pytest.mark.postgres
def test_a_postgres_lock_timeout_states_the_wait_that_happened() -> None:
    import falbudget.ledger.postgres as postgres_module
    from pgutil import admin_connection, postgres_test_url, schema_of

    url = postgres_test_url()
    ledger = postgres_module.PostgresLedger(url, lock_timeout_s=0.05)
    assert ledger.reserve(
        hold_id="a",
        endpoint=MAGI,
        amount=1,
        charges=[BucketCharge("global|total", None)],
        now=T0,
        expires_at=T0 + 60,
    ).admitted
    with admin_connection() as blocker:
        blocker.execute("BEGIN")
        blocker.execute(f"SELECT * FROM {schema_of(url)}.buckets FOR UPDATE")
        try:
            with pytest.raises(LedgerUnavailable) as info:
                ledger.settle("a", None, now=T0 + 1)
        finally:
            blocker.execute("ROLLBACK")
    ledger.close()
    # the wait measured, not a configured figure: the server waited at least lock_timeout
    message = str(info.value)
    found = re.search(r"gave up after waiting (\d+\.\d{3}) s \(lock_timeout 0\.05 s\)", message)
    assert found is not None, message
    assert float(found.group(1)) >= 0.05
