"""The compiled-table cache (falbudget.pricing.loader, FALBUDGET_CACHE_DIR): a table is
validated by pydantic once per content and code, then read back by later processes without
importing yaml or pydantic; an entry that is stale, damaged or not private is ignored."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from falbudget.errors import PriceTableError
from falbudget.pricing import load_table, loader

MAGI = "fal-ai/magi/image-to-video"
REPO_TABLE = Path(__file__).resolve().parents[1] / "pricing.yaml"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache" / "tables"
    monkeypatch.setenv(loader.CACHE_ENV, str(directory))
    return directory


@pytest.fixture
def table_file(tmp_path: Path) -> Path:
    path = tmp_path / "pricing.yaml"
    path.write_bytes(REPO_TABLE.read_bytes())
    return path


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every pydantic validation of a table, counted."""
    from falbudget.pricing import models

    original = models.TableModel.model_validate
    calls: list[object] = []

    def counting(document: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(document)
        return original(document, *args, **kwargs)

    monkeypatch.setattr(models.TableModel, "model_validate", counting)
    return calls


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.pickle"))


def test_a_table_is_validated_once_per_content(
    cache: Path, table_file: Path, validations: list[object]
) -> None:
    first = load_table(table_file)
    assert len(validations) == 1
    assert len(entries(cache)) == 1
    again = load_table(table_file)
    assert len(validations) == 1  # read back, not validated
    assert again == first
    assert again.quote(MAGI, {"num_frames": 144}).total == Decimal("1.20")  # 0.80 + 2 x 0.20
    # another path with the same bytes: the same entry, its own source
    copy = table_file.with_name("copy.yaml")
    copy.write_bytes(table_file.read_bytes())
    assert load_table(copy).source == str(copy)
    assert len(validations) == 1
    # other content: validated, a second entry
    table_file.write_text(
        table_file.read_text().replace('table_version: "2026.12.06"', 'table_version: "t-2"')
    )
    assert load_table(table_file).table_version == "t-2"
    assert len(validations) == 2
    assert len(entries(cache)) == 2
    assert oct(cache.stat().st_mode & 0o777) == "0o700"
    assert all(oct(e.stat().st_mode & 0o777) == "0o600" for e in entries(cache))


def test_an_entry_made_by_other_code_is_stale(
    cache: Path, table_file: Path, validations: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    load_table(table_file)
    loader._code_digest.cache_clear()
    monkeypatch.setattr(loader, "_CACHE_FORMAT", loader._CACHE_FORMAT + 1)
    try:
        load_table(table_file)
    finally:
        loader._code_digest.cache_clear()
    assert len(validations) == 2
    assert len(entries(cache)) == 2


@pytest.mark.parametrize(
    "damage",
    ["garbage", "empty", "another table", "not a table", "world-writable", "open directory"],
)
def test_a_damaged_or_foreign_entry_is_ignored(
    cache: Path, table_file: Path, validations: list[object], damage: str
) -> None:
    load_table(table_file)
    [entry] = entries(cache)
    if damage == "garbage":
        entry.write_bytes(b"\x80\x05not a pickle")
    elif damage == "empty":
        entry.write_bytes(b"")
    elif damage == "another table":  # a sound table whose digest is not the file's
        other = table_file.with_name("other.yaml")
        other.write_text(table_file.read_text().replace("2026.12.06", "t-3"))
        entry.write_bytes(pickle.dumps(loader.parse_table(other.read_bytes())))
    elif damage == "not a table":
        entry.write_bytes(pickle.dumps({"sha256": "x"}))
    elif damage == "world-writable":
        entry.chmod(0o666)
    else:
        cache.chmod(0o777)
    before = len(validations)
    table = load_table(table_file)
    assert len(validations) == before + 1  # validated again
    assert table.table_version == "2026.12.06"
    assert table.quote(MAGI).total == Decimal("0.80")


def test_a_bad_table_is_never_cached_and_says_the_same(cache: Path, table_file: Path) -> None:
    table_file.write_text(table_file.read_text().replace("currency: USD", "currency: EUR"))
    messages = []
    for _ in range(2):
        with pytest.raises(PriceTableError) as info:
            load_table(table_file)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert entries(cache) == []


def test_an_unwritable_cache_still_quotes(
    tmp_path: Path, table_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(loader.CACHE_ENV, str(blocker / "tables"))  # under a file: no directory
    assert load_table(table_file).quote(MAGI).total == Decimal("0.80")


def test_a_quote_process_with_a_cached_table_imports_neither_yaml_nor_pydantic(
    cache: Path, table_file: Path
) -> None:
    code = (
        "import sys, falbudget\n"
        f"print(falbudget.quote({MAGI!r}, {{'num_frames': 120}}).total,"
        " 'yaml' in sys.modules, 'pydantic' in sys.modules)"
    )
    env = {**os.environ, loader.CACHE_ENV: str(cache), "FALBUDGET_PRICING": str(table_file)}

    def run() -> str:
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    assert run() == "1.00 True True"  # validated: 0.80 + 1 extra second x 0.20
    assert run() == "1.00 False False"  # read from the cache
    cli = [sys.executable, "-m", "falbudget", "quote", MAGI, "num_frames=120", "--format", "json"]
    first = subprocess.run(cli, env=env, capture_output=True, text=True, check=True).stdout
    assert '"total": "1.00"' in first
    assert subprocess.run(cli, env=env, capture_output=True, text=True, check=True).stdout == first


def test_a_dated_table_read_back_on_another_day_shows_that_days_version(
    cache: Path, tmp_path: Path, validations: list[object]
) -> None:
    import datetime as dt

    from falbudget import clock

    # docs/examples/price-history.yaml: 1080p exists from 2027-01-01 only
    path = tmp_path / "history.yaml"
    history = Path(__file__).resolve().parents[1] / "docs" / "examples" / "price-history.yaml"
    path.write_bytes(history.read_bytes())

    def at(day: str) -> float:
        return dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp()

    with clock.fixed(at("2026-12-31")):
        first = load_table(path)  # compiled and cached on the 31st
    with clock.fixed(at("2027-01-02")):
        again = load_table(path)  # read back from the cache on the 2nd
    assert len(validations) == 1 and len(entries(cache)) == 1
    assert first.endpoint("acme/video").inputs["resolution"].enum == ("480p", "720p")
    assert again.endpoint("acme/video").inputs["resolution"].enum == ("480p", "720p", "1080p")
