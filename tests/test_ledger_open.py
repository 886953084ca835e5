"""open_ledger(url) and default_ledger_url(): which backend, which file, which errors."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from falbudget.errors import ConfigurationError
from falbudget.ledger import (
    BucketCharge,
    BucketTotals,
    Ledger,
    MemoryLedger,
    SQLiteLedger,
    default_ledger_url,
    open_ledger,
)

T0 = 1_750_000_000.0


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def touch_ledger(ledger: Ledger) -> None:
    result = ledger.reserve(
        hold_id="h",
        endpoint="e",
        amount=1,
        charges=[BucketCharge("g", None)],
        now=T0,
        expires_at=T0 + 1,
    )
    assert result.admitted


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 0: the ledger file's mode must not depend on the caller's umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_memory_url_opens_a_new_empty_ledger_each_time() -> None:
    first = open_ledger("memory://")
    touch_ledger(first)
    second = open_ledger("memory://")
    assert isinstance(second, MemoryLedger)
    assert isinstance(second, Ledger)
    assert second is not first
    assert second.totals(["g"]) == [BucketTotals("g", 0, 0)]
    assert first.totals(["g"]) == [BucketTotals("g", 0, 1)]
    assert second.url == "memory://"


def test_three_slashes_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, permissive_umask: None
) -> None:
    monkeypatch.chdir(tmp_path)
    ledger = open_ledger("sqlite:///data/spend.db")
    assert isinstance(ledger, SQLiteLedger)
    touch_ledger(ledger)
    assert ledger.url == f"sqlite:///{tmp_path}/data/spend.db"
    assert mode(tmp_path / "data") == 0o700  # created because it was missing
    # the database and the files SQLite adds beside it are the owner's only
    for name in ("spend.db", "spend.db-wal", "spend.db-shm"):
        assert mode(tmp_path / "data" / name) == 0o600, name
    ledger.close()


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277], ids=["000", "022", "277"])
def test_every_directory_created_for_a_ledger_is_0700(tmp_path: Path, umask: int) -> None:
    """Parents included: os.makedirs(mode=0o700) left them 0777 under umask 000 (and 0500 under
    277 stopped it from creating the next one); what existed keeps its mode."""
    existing = tmp_path / "srv"
    existing.mkdir()
    existing.chmod(0o755)
    old = os.umask(umask)
    try:
        ledger = open_ledger(f"sqlite:///{existing}/a/b/c/spend.db")
        touch_ledger(ledger)
        ledger.close()
    finally:
        os.umask(old)
    assert mode(existing) == 0o755
    for created in ("a", "a/b", "a/b/c"):
        assert mode(existing / created) == 0o700, created
    assert mode(existing / "a" / "b" / "c" / "spend.db") == 0o600


def test_the_default_ledger_directories_are_0700(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, permissive_umask: None
) -> None:
    if sys.platform != "linux":  # pragma: no cover - XDG_DATA_HOME is the Linux convention
        pytest.skip("checks the XDG location")
    monkeypatch.delenv("FALBUDGET_LEDGER", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / ".local" / "share"))
    open_ledger(default_ledger_url()).close()
    for created in ("home", "home/.local", "home/.local/share", "home/.local/share/falbudget"):
        assert mode(tmp_path / created) == 0o700, created


def test_four_slashes_is_an_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    target = tmp_path / "var" / "lib" / "app" / "spend.db"
    url = "sqlite:////" + str(target).lstrip("/")
    assert url.startswith("sqlite:////")
    ledger = open_ledger(url)
    touch_ledger(ledger)
    ledger.close()
    assert target.is_file()
    assert mode(target) == 0o600
    assert list(elsewhere.iterdir()) == []
    assert open_ledger(url).totals(["g"]) == [BucketTotals("g", 0, 1)]  # the same file again


def test_a_tilde_is_the_home_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    ledger = open_ledger("sqlite:///~/falbudget/x.db")
    ledger.close()
    assert (tmp_path / "home" / "falbudget" / "x.db").is_file()


def test_an_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    path.touch()
    path.chmod(0o640)
    open_ledger(f"sqlite:///{path}").close()
    assert mode(path) == 0o640


@pytest.mark.parametrize(
    "url",
    [
        "",
        "spend.db",
        "sqlite:spend.db",
        "sqlite://",
        "sqlite:///",
        "sqlite:////",
        "sqlite://host/spend.db",
        "sqlite:///spend.db?mode=ro",
        "memory:",
        "memory://somewhere",
        "redis://localhost:6379/0",
        "postgresql://",
        "file:///tmp/x.db",
    ],
)
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        open_ledger(url)
    message = str(info.value)
    assert repr(url) in message
    for form in ("memory://", "sqlite:///", "sqlite:////", "postgresql://"):
        assert form in message


def test_a_bad_url_does_not_echo_its_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        open_ledger("mysql://budget:s3cret@db.example/spend")
    assert "s3cret" not in str(info.value)
    assert "mysql://budget:***@db.example/spend" in str(info.value)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_without_psycopg_says_what_to_install(
    scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # makes `import psycopg` fail
    monkeypatch.setitem(sys.modules, "psycopg_pool", None)
    monkeypatch.delitem(sys.modules, "falbudget.ledger.postgres", raising=False)
    with pytest.raises(
        ConfigurationError,
        match=r"pip install 'falbudget\[postgres\]' "
        r"\(from a clone of falbudget: pip install '\.\[postgres\]'\)",
    ) as info:
        open_ledger(f"{scheme}://budget:s3cret@localhost:5432/spend")
    assert "s3cret" not in str(info.value)


def test_default_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALBUDGET_LEDGER", "memory://")
    assert default_ledger_url() == "memory://"


def test_default_url_is_a_file_in_the_user_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if sys.platform != "linux":  # pragma: no cover - XDG_DATA_HOME is the Linux convention
        pytest.skip("checks the XDG location")
    monkeypatch.delenv("FALBUDGET_LEDGER", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    url = default_ledger_url()
    assert url == f"sqlite:///{tmp_path}/xdg/falbudget/ledger.db"
    open_ledger(url).close()
    assert mode(tmp_path / "xdg" / "falbudget" / "ledger.db") == 0o600


def test_an_unknown_url_never_shows_a_password() -> None:
    """Both ways of giving a password are hidden in the error: user:password@ and ?password=."""
    for url in ("mysql://u:s3cret@h/db", "mysql://u@h/db?password=s3cret&x=1"):
        with pytest.raises(ConfigurationError) as info:
            open_ledger(url)
        assert "s3cret" not in str(info.value)
        assert "***" in str(info.value)
