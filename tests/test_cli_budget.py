"""`falbudget budget status|history|release-expired` and `falbudget quote --config`, by hand.

MAGI-1 prices (docs/pricing.md):

    total = (0.80 + 0.20 x ceil((num_frames - 96) / 24)) x (0.5 at 480p) x max(1, steps / 16)

The ledger most tests read is a SQLite file in tmp_path, filled through the public Guard API with
a fake clock (times UTC, November 2026), with hold_ttl 100 years so no hold is overdue:

    #  created      user  project  request                           what happened      counts as
    1  11-20 09:00  ann   alpha    defaults          0.80            settled            spent 0.80
    2  11-21 10:00  bob   alpha    144 frames        0.80+0.40=1.20  settled            spent 1.20
    3  11-22 11:00  ann   beta     144 frames 480p   1.20x0.5=0.60   held               held 0.60
    4  11-23 12:00  ann   alpha    97 frames         0.80+0.20=1.00  submitted (req-d)  held 1.00
    5  11-23 13:00  bob   -        32 steps          0.80x2=1.60     released           nothing
    6  11-24 08:00  bob   beta     144 frames        1.20            settled at 1.10    spent 1.10

Caps (CAPS_YAML): global total 10.00; each user 3.00 (total); project alpha 5 (total; a request
without a project is let past it, untagged: skip, as #5 is); global 4.00 a day. The CLI reads
the ledger at the real time, after all of this, so the day cap is in a day with no spend.
Errors are exit 2 with one line on stderr and never a traceback.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from falbudget import Cap, Guard
from falbudget.guard.core import Hold
from falbudget.ledger import open_ledger
from falbudget.pricing.loader import default_table
from test_cli import ACME_TABLE, MAGI, assert_usage_error, clean_env, installed_script, run
from test_guard import Clock, utc

REQ = {"prompt": "a cat", "image_url": "https://example.invalid/cat.png"}
# 36524 days: 100 years from November 2026 hold 24 leap days (2028 ... 2124, not 2100)
LONG_TTL = 36524 * 86400
# the packaged table's version, recorded with every hold it priced
TABLE_VERSION = default_table().table_version
ENV = ("FALBUDGET_CONFIG", "FALBUDGET_LEDGER", "FALBUDGET_PRICING")

CAPS_YAML = """\
ledger: {url}
hold_ttl: 3600
caps:
  - limit: "10.00"
  - limit: "3.00"
    scope: user
  - limit: 5
    scope: project=alpha
    untagged: skip
  - limit: "4.00"
    window: day
"""
CAPS = [
    Cap("10.00"),
    Cap("3.00", scope="user"),
    Cap(5, scope="project=alpha", untagged="skip"),
    Cap("4.00", window="day"),
]

HISTORY_COLUMNS = [
    "id", "created_at", "endpoint", "amount", "state", "settled_amount", "adjusted_amount",
    "request_id", "expires_at", "idempotency_key", "table_version", "tags",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    # a guard built without a ledger never touches the user's data directory
    monkeypatch.setenv("FALBUDGET_LEDGER", f"sqlite:///{tmp_path / 'default-ledger.db'}")


@dataclass
class Seeded:
    url: str
    config: Path
    guard: Guard
    ids: dict[int, str]
    open: dict[int, Hold]


def write_config(path: Path, url: str, text: str = CAPS_YAML) -> Path:
    path.write_text(text.format(url=url), encoding="utf-8")
    return path


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Seeded]:
    """The six holds of the module docstring."""
    url = f"sqlite:///{tmp_path / 'spend.db'}"
    clock = Clock(utc(2026, 11, 20, 9))
    guard = Guard(url, CAPS, clock=clock, hold_ttl=LONG_TTL)
    ids: dict[int, str] = {}
    with guard.reserve(MAGI, REQ, user="ann", project="alpha") as hold:
        ids[1] = hold.id
    clock.now = utc(2026, 11, 21, 10)
    with guard.reserve(MAGI, {**REQ, "num_frames": 144}, user="bob", project="alpha") as hold:
        ids[2] = hold.id
    clock.now = utc(2026, 11, 22, 11)
    args3 = {**REQ, "num_frames": 144, "resolution": "480p"}
    hold3 = guard.reserve(MAGI, args3, user="ann", project="beta").acquire()
    clock.now = utc(2026, 11, 23, 12)
    hold4 = guard.reserve(MAGI, {**REQ, "num_frames": 97}, user="ann", project="alpha").acquire()
    hold4.mark_submitted("req-d")
    clock.now = utc(2026, 11, 23, 13)
    with (
        pytest.raises(RuntimeError),
        guard.reserve(MAGI, {**REQ, "num_inference_steps": 32}, user="bob") as hold,
    ):
        ids[5] = hold.id
        raise RuntimeError("the call failed: released")
    clock.now = utc(2026, 11, 24, 8)
    hold6 = guard.reserve(MAGI, {**REQ, "num_frames": 144}, user="bob", project="beta").acquire()
    hold6.mark_submitted("req-f")
    hold6.settle("1.10")
    ids.update({3: hold3.id, 4: hold4.id, 6: hold6.id})
    config = write_config(tmp_path / "falbudget.yaml", url)
    yield Seeded(url, config, guard, ids, {3: hold3, 4: hold4})
    guard.close()


def ok(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert (code, err) == (0, ""), (code, err)
    return out


def status_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    out = ok(run(capsys, "budget", "status", "--format", "json", *argv))
    assert out.count("\n") == 1  # one object on one line
    data = json.loads(out)
    assert isinstance(data, dict)
    return data


def history_json(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    out = ok(run(capsys, "budget", "history", "--format", "json", *argv))
    return [json.loads(line) for line in out.splitlines()]


def cap_row(
    cap: str, scope: str, limit: str, spent: str, held: str, rest: str, used: str
) -> dict[str, str]:
    """A total-window cap's row of `budget status --format json`."""
    return {
        "cap": cap, "scope": scope, "window": "total", "window_key": "total", "tz": "UTC",
        "limit": limit, "spent": spent, "held": held, "remaining": rest, "used": used,
    }  # fmt: skip


def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def table_rows(text: str) -> list[list[str]]:
    """A tabulate table as whitespace-split rows, without the header rule."""
    return [line.split() for line in text.splitlines() if not set(line) <= {"-", " "}]


# --- budget status ------------------------------------------------------------------------------

# global:    spent 0.80 + 1.20 + 1.10 = 3.10; held 0.60 + 1.00 = 1.60; left 10 - 4.70 = 5.30; 47.0%
# user=ann:  spent 0.80; held 0.60 + 1.00 = 1.60; left 3 - 2.40 = 0.60; 2.40 / 3 = 80.0%
# user=bob:  spent 1.20 + 1.10 = 2.30 (hold 5 released); left 0.70; 2.30 / 3 = 76.66.. -> 76.7%
# alpha:     spent 0.80 + 1.20 = 2.00; held 1.00; left 5 - 3.00 = 2.00; 60.0%
SEEDED_TOTAL_ROWS = [
    cap_row("global total cap 10.00", "global", "10.00", "3.10", "1.60", "5.30", "47.0%"),
    cap_row("user=ann total cap 3.00", "user=ann", "3.00", "0.80", "1.60", "0.60", "80.0%"),
    cap_row("user=bob total cap 3.00", "user=bob", "3.00", "2.30", "0.00", "0.70", "76.7%"),
    cap_row("project=alpha total cap 5.00", "project=alpha",
            "5.00", "2.00", "1.00", "2.00", "60.0%"),
]  # fmt: skip


def test_status_json_figures_by_hand(capsys: pytest.CaptureFixture[str], seeded: Seeded) -> None:
    before = today()
    data = status_json(capsys, "--config", str(seeded.config))
    days = {before, today()}  # the day window is the real today (either side of a midnight)
    day = data["caps"].pop()
    assert data == {
        "caps": SEEDED_TOTAL_ROWS,
        "global": {"spent": "3.10", "held": "1.60", "overruns": 0, "overrun": "0.00"},
        "currency": "USD",
    }
    # every seeded hold is in an earlier day: today's window starts at 0
    assert day["window_key"] in {f"day@UTC:{d}" for d in days}
    del day["window_key"]
    assert day == {
        "cap": "global day cap 4.00", "scope": "global", "window": "day", "tz": "UTC",
        "limit": "4.00", "spent": "0.00", "held": "0.00", "remaining": "4.00", "used": "0.0%",
    }  # fmt: skip


def test_status_table(capsys: pytest.CaptureFixture[str], seeded: Seeded) -> None:
    before = today()
    out = ok(run(capsys, "budget", "status", "--config", str(seeded.config)))
    rows = table_rows(out)
    assert rows[0] == ["scope", "window", "limit", "spent", "held", "remaining", "used"]
    assert rows[1:5] == [
        ["global", "total", "10.00", "3.10", "1.60", "5.30", "47.0%"],
        ["user=ann", "total", "3.00", "0.80", "1.60", "0.60", "80.0%"],
        ["user=bob", "total", "3.00", "2.30", "0.00", "0.70", "76.7%"],
        ["project=alpha", "total", "5.00", "2.00", "1.00", "2.00", "60.0%"],
    ]
    assert rows[5] in [  # the window in plain words (JSON keeps its key, day@UTC:DATE)
        ["global", "day", d, "4.00", "0.00", "0.00", "4.00", "0.0%"] for d in {before, today()}
    ]
    assert out.splitlines()[-1] == "all time, all scopes: spent 3.10 USD, held 1.60"


def test_status_follows_holds_settled_and_released_later(
    capsys: pytest.CaptureFixture[str], seeded: Seeded
) -> None:
    seeded.open[3].settle()  # ann/beta 0.60: held -> spent
    seeded.open[4].release()  # ann/alpha 1.00, submitted: released (fal refused it, say)
    data = status_json(capsys, "--config", str(seeded.config))
    # global: spent 3.10 + 0.60 = 3.70, held 0; left 6.30; 37.0%
    # ann: spent 0.80 + 0.60 = 1.40, held 0; left 1.60; 1.40 / 3 = 46.66.. -> 46.7%
    # alpha: spent 2.00, held 0; left 3.00; 40.0%
    assert data["caps"][:4] == [
        cap_row("global total cap 10.00", "global", "10.00", "3.70", "0.00", "6.30", "37.0%"),
        cap_row("user=ann total cap 3.00", "user=ann", "3.00", "1.40", "0.00", "1.60", "46.7%"),
        SEEDED_TOTAL_ROWS[2],
        cap_row("project=alpha total cap 5.00", "project=alpha",
                "5.00", "2.00", "0.00", "3.00", "40.0%"),
    ]  # fmt: skip
    assert data["global"] == {"spent": "3.70", "held": "0.00", "overruns": 0, "overrun": "0.00"}


def test_status_shows_overruns(capsys: pytest.CaptureFixture[str], seeded: Seeded) -> None:
    seeded.open[3].settle("0.75")  # quoted 0.60: fal billed 0.15 more
    seeded.open[4].settle("1.25")  # quoted 1.00: 0.25 more (hold 6, 1.10 of 1.20, is no overrun)
    # global: spent 3.10 + 0.75 + 1.25 = 5.10, held 0; overruns 0.15 + 0.25 = 0.40
    data = status_json(capsys, "--config", str(seeded.config))
    assert data["global"] == {"spent": "5.10", "held": "0.00", "overruns": 2, "overrun": "0.40"}
    # ann: 0.80 + 0.75 + 1.25 = 2.80 of 3.00, the overruns included
    assert data["caps"][1]["spent"] == "2.80" and data["caps"][1]["remaining"] == "0.20"
    out = ok(run(capsys, "budget", "status", "--ledger", seeded.url))
    assert out.splitlines() == [
        "all time, all scopes: spent 5.10 USD, held 0.00",
        "overruns: 2 requests counted 0.40 USD more than quoted",
        "(no caps configured: give --config PATH or set FALBUDGET_CONFIG)",
    ]
    out = ok(run(capsys, "budget", "status", "--config", str(seeded.config)))
    assert out.splitlines()[-2:] == [
        "all time, all scopes: spent 5.10 USD, held 0.00",
        "overruns: 2 requests counted 0.40 USD more than quoted",
    ]


def test_status_without_config_is_the_global_spend(
    capsys: pytest.CaptureFixture[str], seeded: Seeded
) -> None:
    out = ok(run(capsys, "budget", "status", "--ledger", seeded.url))
    assert out.splitlines() == [
        "all time, all scopes: spent 3.10 USD, held 1.60",
        "(no caps configured: give --config PATH or set FALBUDGET_CONFIG)",
    ]
    data = status_json(capsys, "--ledger", seeded.url)
    assert data == {
        "caps": [],
        "global": {"spent": "3.10", "held": "1.60", "overruns": 0, "overrun": "0.00"},
        "currency": "USD",
    }


def test_status_reads_falbudget_config_and_falbudget_ledger(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, seeded: Seeded
) -> None:
    # a configuration without a ledger: the ledger comes from FALBUDGET_LEDGER
    config = write_config(seeded.config.with_name("env.yaml"), "", CAPS_YAML.split("\n", 1)[1])
    monkeypatch.setenv("FALBUDGET_CONFIG", str(config))
    monkeypatch.setenv("FALBUDGET_LEDGER", seeded.url)
    assert status_json(capsys)["caps"][:4] == SEEDED_TOTAL_ROWS


def test_ledger_option_wins_over_the_configuration(
    capsys: pytest.CaptureFixture[str], seeded: Seeded, tmp_path: Path
) -> None:
    empty = f"sqlite:///{tmp_path / 'other.db'}"
    open_ledger(empty).close()  # a command that only reads creates no ledger
    data = status_json(capsys, "--config", str(seeded.config), "--ledger", empty)
    assert data["global"] == {"spent": "0.00", "held": "0.00", "overruns": 0, "overrun": "0.00"}
    assert [c["spent"] for c in data["caps"]] == ["0.00", "0.00", "0.00", "0.00"]


def test_an_empty_ledger(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    open_ledger(url).close()  # a command that only reads creates no ledger
    config = str(write_config(tmp_path / "falbudget.yaml", url))
    data = status_json(capsys, "--config", config)
    # every cap has a row: the per-user cap says it has no value yet; all read 0 of their limit
    assert [(c["scope"], c["window"], c["spent"], c["held"], c["remaining"], c["used"],
             c.get("note")) for c in data["caps"]] == [
        ("global", "total", "0.00", "0.00", "10.00", "0.0%", None),
        ("user", "total", "0.00", "0.00", "3.00", "0.0%", "no values yet"),
        ("project=alpha", "total", "0.00", "0.00", "5.00", "0.0%", None),
        ("global", "day", "0.00", "0.00", "4.00", "0.0%", None),
    ]  # fmt: skip
    assert data["global"] == {"spent": "0.00", "held": "0.00", "overruns": 0, "overrun": "0.00"}
    history = ["budget", "history", "--config", config]
    assert ok(run(capsys, *history)) == "(no holds)\n"
    assert ok(run(capsys, *history, "--format", "json")) == ""
    assert ok(run(capsys, *history, "--format", "csv")) == ",".join(HISTORY_COLUMNS) + "\n"
    assert ok(run(capsys, "budget", "release-expired", "--config", config)) == (
        "released 0 hold(s); counted 0 submitted hold(s) as spent\n"
    )


# --- budget history -----------------------------------------------------------------------------


def test_history_table_newest_first(capsys: pytest.CaptureFixture[str], seeded: Seeded) -> None:
    out = ok(run(capsys, "budget", "history", "--ledger", seeded.url))
    rows = table_rows(out)
    assert rows[0] == [
        "created_at", "endpoint", "amount", "state", "settled_amount", "adjusted_amount",
        "request_id", "tags",
    ]  # fmt: skip
    assert all(row[1] == MAGI for row in rows[1:])
    assert [row[:1] + row[2:] for row in rows[1:]] == [
        [
            "2026-11-24T08:00:00+00:00",
            "1.20",
            "settled",
            "1.10",
            "req-f",
            "project=beta",
            "user=bob",
        ],
        ["2026-11-23T13:00:00+00:00", "1.60", "released", "user=bob"],
        ["2026-11-23T12:00:00+00:00", "1.00", "submitted", "req-d", "project=alpha", "user=ann"],
        ["2026-11-22T11:00:00+00:00", "0.60", "held", "project=beta", "user=ann"],
        ["2026-11-21T10:00:00+00:00", "1.20", "settled", "1.20", "project=alpha", "user=bob"],
        ["2026-11-20T09:00:00+00:00", "0.80", "settled", "0.80", "project=alpha", "user=ann"],
    ]


def test_history_json_lines(capsys: pytest.CaptureFixture[str], seeded: Seeded) -> None:
    rows = history_json(capsys, "--ledger", seeded.url)
    assert [r["id"] for r in rows] == [seeded.ids[n] for n in (6, 5, 4, 3, 2, 1)]
    assert rows[0] == {
        "id": seeded.ids[6],
        "endpoint": MAGI,
        "amount": "1.20",  # money is a decimal string, never a float
        "state": "settled",
        "settled_amount": "1.10",
        "adjusted_amount": None,
        "request_id": "req-f",
        "created_at": "2026-11-24T08:00:00+00:00",
        "updated_at": "2026-11-24T08:00:00+00:00",
        "expires_at": "2126-11-24T08:00:00+00:00",  # + 100 years (LONG_TTL)
        "tags": {"endpoint": MAGI, "project": "beta", "user": "bob"},
        "idempotency_key": None,
        "table_version": TABLE_VERSION,
    }
    assert [(r["amount"], r["state"], r["settled_amount"], r["request_id"]) for r in rows[1:]] == [
        ("1.60", "released", None, None),
        ("1.00", "submitted", None, "req-d"),
        ("0.60", "held", None, None),
        ("1.20", "settled", "1.20", None),
        ("0.80", "settled", "0.80", None),
    ]


def test_history_csv(capsys: pytest.CaptureFixture[str], seeded: Seeded) -> None:
    out = ok(run(capsys, "budget", "history", "--ledger", seeded.url, "--format", "csv"))
    table = list(csv.reader(io.StringIO(out)))
    assert table[0] == HISTORY_COLUMNS
    assert len(table) == 7
    assert table[1] == [
        seeded.ids[6], "2026-11-24T08:00:00+00:00", MAGI, "1.20", "settled", "1.10", "",
        "req-f", "2126-11-24T08:00:00+00:00", "", TABLE_VERSION, "project=beta user=bob",
    ]  # fmt: skip
    assert table[2] == [
        seeded.ids[5], "2026-11-23T13:00:00+00:00", MAGI, "1.60", "released", "", "", "",
        "2126-11-23T13:00:00+00:00", "", TABLE_VERSION, "user=bob",
    ]  # fmt: skip


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_history_streams_each_row_before_the_next_hold_is_read(
    capsys: pytest.CaptureFixture[str],
    seeded: Seeded,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
) -> None:
    """JSON Lines and CSV are written as the ledger yields the holds: when the ledger is asked
    for hold 5, hold 6's line (and the CSV header) is already out."""
    from falbudget.ledger.sqlite import SQLiteLedger

    original = SQLiteLedger.iter_holds
    seen: list[str] = []

    def watched(self: SQLiteLedger, **kw: Any) -> Iterator[Any]:
        for index, hold in enumerate(original(self, **kw)):
            if index == 1:
                seen.append(capsys.readouterr().out)
            yield hold

    monkeypatch.setattr(SQLiteLedger, "iter_holds", watched)
    out = ok(run(capsys, "budget", "history", "--ledger", seeded.url, "--format", fmt))
    assert len(seen) == 1
    written = seen[0].splitlines()
    if fmt == "csv":
        assert written[0] == ",".join(HISTORY_COLUMNS)
        assert written[1].startswith(seeded.ids[6] + ",2026-11-24T08:00:00+00:00,")
        assert len(written) == 2
    else:
        assert [json.loads(line)["id"] for line in written] == [seeded.ids[6]]
    # the rest follows: hold 5 down to hold 1
    assert len(out.splitlines()) == 5


def test_history_jsonl_is_json_lines(capsys: pytest.CaptureFixture[str], seeded: Seeded) -> None:
    jsonl = ok(run(capsys, "budget", "history", "--ledger", seeded.url, "--format", "jsonl"))
    rows = [json.loads(line) for line in jsonl.splitlines()]
    assert [r["id"] for r in rows] == [seeded.ids[n] for n in (6, 5, 4, 3, 2, 1)]
    assert rows[1]["amount"] == "1.60" and rows[1]["state"] == "released"


def test_history_shows_what_reconcile_corrected(
    capsys: pytest.CaptureFixture[str], seeded: Seeded
) -> None:
    """Hold 6 settled at 1.10; fal billed 0.95, so an adjustment makes it count 0.95. History
    keeps both: the settled amount as it was, and the corrected one beside it."""
    ledger = open_ledger(seeded.url)
    try:
        ledger.adjust(seeded.ids[6], 950_000, now=1.0e9, reason="billed 0.95", source="test")
    finally:
        ledger.close()
    rows = history_json(capsys, "--ledger", seeded.url)
    assert [(r["settled_amount"], r["adjusted_amount"]) for r in rows[:2]] == [
        ("1.10", "0.95"),
        (None, None),
    ]
    out = ok(run(capsys, "budget", "history", "--ledger", seeded.url, "--limit", "1"))
    assert table_rows(out)[1][3:7] == ["settled", "1.10", "0.95", "req-f"]


@pytest.mark.parametrize(
    ("argv", "holds"),
    [
        (["--scope", "user=ann"], [4, 3, 1]),
        (["--scope", "user:ann"], [4, 3, 1]),  # the spelling of earlier versions, still read
        (["--scope", "project=beta"], [6, 3]),
        (["--scope", f"endpoint={MAGI}"], [6, 5, 4, 3, 2, 1]),
        (["--scope", "user=nobody"], []),
        (["--since", "2026-11-22", "--until", "2026-11-24"], [5, 4, 3]),  # until is excluded
        (["--until", "2026-11-23T12:00:00"], [3, 2, 1]),  # hold 4 at 12:00 exactly is out
        (["--since", "2026-11-23T13:30+01:00"], [6, 5]),  # 12:30 UTC
        (["--since", "2026-11-21", "--scope", "user=ann"], [4, 3]),
        (["--state", "settled"], [6, 2, 1]),
        (["--state", "held", "--state", "submitted"], [4, 3]),
        (["--limit", "2"], [6, 5]),
        (["--scope", "user=ann", "--limit", "1"], [4]),  # the limit counts after the scope
    ],
)
def test_history_filters(
    capsys: pytest.CaptureFixture[str], seeded: Seeded, argv: list[str], holds: list[int]
) -> None:
    rows = history_json(capsys, "--ledger", seeded.url, *argv)
    assert [r["id"] for r in rows] == [seeded.ids[n] for n in holds]


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["budget"], ("a command is required: status, history, release-expired",)),
        (["budget", "history", "--since", "yesterday"], ("--since='yesterday'", "ISO")),
        (["budget", "history", "--until", "2026-13-01"], ("--until='2026-13-01'",)),
        (["budget", "history", "--limit", "0"], ("--limit=0", "1 or more")),
        (["budget", "history", "--scope", "ann"], ("--scope='ann'", "TAG=VALUE")),
        (["budget", "history", "--state", "gone"], ("--state", "'gone'")),
        (["budget", "history", "--format", "xml"], ("--format", "'xml'")),
        (["budget", "status", "--format", "csv"], ("--format", "'csv'")),
        (["budget", "status", "--ledger", "nope://x"], ("ledger URL 'nope://x'",)),
    ],
)
def test_budget_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], needles: tuple[str, ...]
) -> None:
    assert_usage_error(run(capsys, *argv), *needles)


# --- budget release-expired ---------------------------------------------------------------------


@dataclass
class Stale:
    url: str
    config: Path
    ids: dict[str, str]


@pytest.fixture
def stale(tmp_path: Path) -> Iterator[Stale]:
    """Holds made on 2026-11-24 12:00 UTC (the guard's clock) with hold_ttl 60 s, so overdue at
    the real time the CLI runs: ann's 0.80 never submitted, bob's 1.20 submitted. cy's 0.40 (96
    frames at 480p) settled, and dee's 0.60 (144 frames at 480p) held with a 100-year ttl."""
    url = f"sqlite:///{tmp_path / 'stale.db'}"
    clock = Clock(utc(2026, 11, 24, 12))
    short = Guard(url, [Cap("5.00")], clock=clock, hold_ttl=60)
    long = Guard(url, [Cap("5.00")], clock=clock, hold_ttl=LONG_TTL)
    ann = short.reserve(MAGI, REQ, user="ann").acquire()
    bob = short.reserve(MAGI, {**REQ, "num_frames": 144}, user="bob").acquire()
    bob.mark_submitted("req-b")
    with short.reserve(MAGI, {**REQ, "resolution": "480p"}, user="cy"):
        pass
    args = {**REQ, "num_frames": 144, "resolution": "480p"}
    dee = long.reserve(MAGI, args, user="dee").acquire()
    config = write_config(
        tmp_path / "stale.yaml", url, 'ledger: {url}\ncaps: [{{limit: "5.00"}}]\n'
    )
    yield Stale(url, config, {"ann": ann.id, "bob": bob.id, "dee": dee.id})
    short.close()
    long.close()


def test_release_expired_releases_unsent_and_counts_sent_as_spent(
    capsys: pytest.CaptureFixture[str], stale: Stale
) -> None:
    config = ["--config", str(stale.config)]
    # before: spent 0.40 (cy); held 0.80 + 1.20 + 0.60 = 2.60
    before = status_json(capsys, *config)["caps"][0]
    assert (before["spent"], before["held"], before["remaining"]) == ("0.40", "2.60", "2.00")

    out = ok(run(capsys, "budget", "release-expired", *config))
    lines = out.splitlines()
    assert lines[-1] == "released 1 hold(s); counted 1 submitted hold(s) as spent"
    assert sorted(table_rows("\n".join(lines[1:-1]))) == [
        ["2026-11-24T12:00:00+00:00", MAGI, "0.80", "released", "user=ann"],
        ["2026-11-24T12:00:00+00:00", MAGI, "1.20", "expired", "1.20", "req-b", "user=bob"],
    ]

    # after: spent 0.40 + 1.20 = 1.60; held 0.60 (dee); left 5 - 2.20 = 2.80; 44.0%
    after = status_json(capsys, *config)
    assert after["caps"] == [
        cap_row("global total cap 5.00", "global", "5.00", "1.60", "0.60", "2.80", "44.0%")
    ]
    expired = history_json(capsys, *config, "--state", "expired")
    assert [(r["id"], r["settled_amount"], r["request_id"]) for r in expired] == [
        (stale.ids["bob"], "1.20", "req-b")
    ]
    held = history_json(capsys, *config, "--state", "held")
    assert [r["id"] for r in held] == [stale.ids["dee"]]

    # nothing is overdue any more
    assert ok(run(capsys, "budget", "release-expired", *config)) == (
        "released 0 hold(s); counted 0 submitted hold(s) as spent\n"
    )


def test_release_expired_json(capsys: pytest.CaptureFixture[str], stale: Stale) -> None:
    out = ok(run(capsys, "budget", "release-expired", "--ledger", stale.url, "--format", "json"))
    rows = sorted((json.loads(line) for line in out.splitlines()), key=lambda r: r["amount"])
    assert [(r["id"], r["state"], r["amount"], r["settled_amount"]) for r in rows] == [
        (stale.ids["ann"], "released", "0.80", None),
        (stale.ids["bob"], "expired", "1.20", "1.20"),
    ]
    assert (
        ok(run(capsys, "budget", "release-expired", "--ledger", stale.url, "--format", "json"))
        == ""
    )


# --- quote --config -----------------------------------------------------------------------------


def quote(capsys: pytest.CaptureFixture[str], seeded: Seeded, *argv: str) -> tuple[int, str, str]:
    return run(capsys, "quote", MAGI, *argv, "--config", str(seeded.config))


def test_quote_fits_the_caps(capsys: pytest.CaptureFixture[str], seeded: Seeded) -> None:
    # 96 frames at 480p: 0.80 x 0.5 = 0.40; bob has 3.00 - 2.30 = 0.70 left
    out = ok(quote(capsys, seeded, "resolution=480p", "--tag", "user=bob"))
    lines = out.splitlines()
    assert table_rows(lines[-5])[0][-2:] == ["0.40", "USD"]
    assert lines[-4:] == [
        "fits the caps now: yes",
        "  global day cap 4.00: remaining 4.00 (spent 0.00, held 0.00)",
        "  global total cap 10.00: remaining 5.30 (spent 3.10, held 1.60)",
        "  user=bob total cap 3.00: remaining 0.70 (spent 2.30, held 0.00)",
    ]


@pytest.mark.parametrize(
    ("frames", "total", "fits"),
    [
        (168, "0.70", True),  # (0.80 + 0.20 x ceil(72 / 24)) x 0.5 = 0.70: equal to what is left
        (169, "0.80", False),  # (0.80 + 0.20 x ceil(73 / 24)) x 0.5 = 0.80: 0.10 over
    ],
)
def test_quote_at_the_edge_of_a_cap(
    capsys: pytest.CaptureFixture[str], seeded: Seeded, frames: int, total: str, fits: bool
) -> None:
    code, out, err = quote(
        capsys, seeded, f"num_frames={frames}", "resolution=480p", "--tag", "user=bob",
        "--format", "json",
    )  # fmt: skip
    data = json.loads(out)
    assert data["total"] == total
    assert data["budget"]["fits"] is fits
    assert code == (0 if fits else 1)
    reason = f"it costs {total} and user=bob total cap 3.00 has 0.70 left"
    assert err == ("" if fits else f"falbudget: does not fit the caps now: {reason}\n")


def test_quote_does_not_fit(capsys: pytest.CaptureFixture[str], seeded: Seeded) -> None:
    # 144 frames: 1.20; ann has 3.00 - 0.80 - 1.60 = 0.60 left
    code, out, err = quote(capsys, seeded, "num_frames=144", "--tag", "user=ann")
    reason = "it costs 1.20 and user=ann total cap 3.00 has 0.60 left"
    assert code == 1
    assert err == f"falbudget: does not fit the caps now: {reason}\n"
    lines = out.splitlines()
    assert table_rows(lines[-5])[0] == ["total", "1.20", "USD"]  # the quote is printed in full
    assert lines[-4:] == [
        f"fits the caps now: NO ({reason})",
        "  global day cap 4.00: remaining 4.00 (spent 0.00, held 0.00)",
        "  global total cap 10.00: remaining 5.30 (spent 3.10, held 1.60)",
        "  user=ann total cap 3.00: remaining 0.60 (spent 0.80, held 1.60)",
    ]


def test_quote_json_budget_key(capsys: pytest.CaptureFixture[str], seeded: Seeded) -> None:
    # 192 frames, 64 steps: (0.80 + 0.20 x 4) x 4 = 6.40; user dan has spent nothing, and the
    # day cap (4.00 left today) refuses it first (buckets are checked in key order)
    before = today()
    code, out, err = quote(
        capsys, seeded, "num_frames=192", "num_inference_steps=64", "--format", "json",
        "--tag", "user=dan",
    )  # fmt: skip
    reason = "it costs 6.40 and global day cap 4.00 has 4.00 left"
    assert (code, err) == (1, f"falbudget: does not fit the caps now: {reason}\n")
    assert out.count("\n") == 1
    data = json.loads(out)
    assert data["total"] == "6.40"
    budget = data["budget"]
    day_bucket = budget["caps"][0].pop("bucket")
    assert day_bucket in {f"global|day@UTC:{d}" for d in {before, today()}}
    assert budget == {
        "fits": False,
        "reason": reason,
        "caps": [
            {"cap": "global day cap 4.00", "spent": "0.00", "held": "0.00", "remaining": "4.00"},
            {"cap": "global total cap 10.00", "bucket": "global|total", "spent": "3.10",
             "held": "1.60", "remaining": "5.30"},
            {"cap": "user=dan total cap 3.00", "bucket": "user=dan|total", "spent": "0.00",
             "held": "0.00", "remaining": "3.00"},
        ],
    }  # fmt: skip


def test_quote_without_config_has_no_budget(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "quote", MAGI, "--format", "json")
    assert (code, err) == (0, "")
    assert "budget" not in json.loads(out)


def test_quote_config_with_another_ledger(
    capsys: pytest.CaptureFixture[str], seeded: Seeded, tmp_path: Path
) -> None:
    # on an empty ledger ann has all 3.00 of her cap: 1.20 fits
    empty = f"sqlite:///{tmp_path / 'other.db'}"
    open_ledger(empty).close()
    out = ok(quote(capsys, seeded, "num_frames=144", "--tag", "user=ann", "--ledger", empty))
    assert "fits the caps now: yes" in out.splitlines()
    assert "  user=ann total cap 3.00: remaining 3.00 (spent 0.00, held 0.00)" in out.splitlines()


def test_quote_over_max_per_request_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'mpr.db'}"
    text = 'ledger: {url}\ncaps:\n  - {{limit: "10.00", max_per_request: "1.00"}}\n'
    config = write_config(tmp_path / "mpr.yaml", url, text)
    open_ledger(url).close()
    # 144 frames: 1.20 > 1.00
    code, _, err = run(capsys, "quote", MAGI, "num_frames=144", "--config", str(config))
    assert code == 1
    assert err.startswith("falbudget: does not fit the caps now: ")
    assert "over max_per_request 1.00" in err and err.count("\n") == 1


def test_quote_over_max_per_request_says_no(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'mpr.db'}"
    text = 'ledger: {url}\ncaps:\n  - {{limit: "10.00", max_per_request: "1.00"}}\n'
    config = write_config(tmp_path / "mpr.yaml", url, text)
    open_ledger(url).close()
    _, out, _ = run(capsys, "quote", MAGI, "num_frames=144", "--config", str(config))
    assert "fits the caps now: NO" in out
    assert "fits the caps now: yes" not in out


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--tag", "user=ann"], ("--tag needs --config",)),
        (["--ledger", "memory://"], ("--ledger needs --config",)),
        (["--config", "{config}", "--at", "2026-12-01"], ("cannot be used with --at",)),
        (["--config", "{config}", "--tag", "user"], ("--tag expects KEY=VALUE", "'user'")),
        (["--config", "{config}", "--tag", "user="], ("--tag expects KEY=VALUE", "'user='")),
        (["--config", "{config}", "--input", "{batch}"], ("one request, not a batch",)),
    ],
)
def test_quote_config_usage_errors(
    capsys: pytest.CaptureFixture[str],
    seeded: Seeded,
    tmp_path: Path,
    argv: list[str],
    needles: tuple[str, ...],
) -> None:
    batch = tmp_path / "batch.jsonl"
    batch.write_text("{}\n{}\n")
    argv = [a.format(config=seeded.config, batch=batch) for a in argv]
    assert_usage_error(run(capsys, "quote", MAGI, *argv), *needles)


# --- the configuration file ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("ledgr: memory://\n", ("ledgr: unknown key",)),
        ("caps:\n  - limit: '1'\n    windo: day\n", ("caps.0.windo: unknown key",)),
        ("caps:\n  - limit: ten\n", ("caps.0: limit='ten' is not allowed", "decimal amount")),
        ("caps:\n  - limit: '-1'\n", ("caps.0: limit='-1' is not allowed", "0 or more")),
        ("caps:\n  - limit: 1.5\n", ("caps.0.limit: a decimal amount", "float", "(got 1.5)")),
        ("caps:\n  - {limit: 2, max_per_request: 0.5}\n", ("caps.0.max_per_request:", "0.5")),
        ("caps:\n  - {limit: '1', alert_at: [true]}\n", ("caps.0.alert_at.0:", "True")),
        ("caps:\n  - scope: user\n", ("caps.0.limit: Field required",)),
        ("caps:\n  - {limit: '1', window: year}\n", ("caps.0.window", "'year'", "'month'")),
        ("hold_ttl: true\n", ("hold_ttl:", "True")),
        ("hold_ttl: 0\n", ("hold_ttl:", "greater than 0")),
        ("on_unknown: maybe\n", ("on_unknown:", "'maybe'", "'deny'")),
        ("ledger: nope://x\n", ("ledger URL 'nope://x' is not allowed",)),
        ("pricing: missing.yaml\n", ("pricing:", "missing.yaml", "cannot read")),
        ("caps: [\n", ("not valid YAML at line 2",)),
        ("- limit: '1'\n", ("must be a YAML mapping",)),
    ],
)
def test_bad_configuration_names_file_and_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, needles: tuple[str, ...]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    err = assert_usage_error(
        run(capsys, "budget", "status", "--config", str(path)), f"{path}: ", *needles
    )
    assert ".str" not in err and ".int" not in err  # pydantic's union members are no field


def test_bad_configuration_in_every_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("caps:\n  - limit: ten\n", encoding="utf-8")
    needles = (f"{path}: caps.0: limit='ten'",)
    for argv in (
        ["budget", "history", "--config", str(path)],
        ["budget", "release-expired", "--config", str(path)],
        ["quote", MAGI, "--config", str(path)],
    ):
        assert_usage_error(run(capsys, *argv), *needles)
    monkeypatch.setenv("FALBUDGET_CONFIG", str(path))
    assert_usage_error(run(capsys, "budget", "status"), *needles)


def test_missing_configuration_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = str(tmp_path / "nope.yaml")
    message = f"{missing}: cannot read the configuration: No such file or directory"
    assert_usage_error(run(capsys, "budget", "status", "--config", missing), message)
    assert_usage_error(run(capsys, "quote", MAGI, "--config", missing), message)
    monkeypatch.setenv("FALBUDGET_CONFIG", missing)
    assert_usage_error(run(capsys, "budget", "history"), message)


def test_pricing_path_is_relative_to_the_configuration(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "acme.yaml").write_text(ACME_TABLE, encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'p.db'}"
    text = 'ledger: {url}\npricing: acme.yaml\ncaps: [{{limit: "0.10"}}]\n'
    config = write_config(tmp_path / "conf" / "falbudget.yaml", url, text)
    # (0.0025 + 0.001 x (3 - 1)) x 3 (scale 4) = 0.0135
    args = {"image_url": "x", "megapixels": 3, "scale": 4}
    with Guard.from_config(str(config)) as guard, guard.reserve("acme/upscale", args):
        pass
    data = status_json(capsys, "--config", str(config))
    # a sub-cent amount keeps its digits; 0.0135 of 0.10 is 13.5%; 0.10 - 0.0135 = 0.0865
    assert data["caps"] == [
        cap_row("global total cap 0.10", "global", "0.10", "0.0135", "0.00", "0.0865", "13.5%")
    ]


def test_quote_config_prices_with_the_configurations_table(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The quote shown beside the caps is the one the guard would hold: priced with the
    configuration's `pricing:` table, which knows acme/upscale (the default table does not)."""
    (tmp_path / "acme.yaml").write_text(ACME_TABLE, encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'p.db'}"
    text = 'ledger: {url}\npricing: acme.yaml\ncaps: [{{limit: "0.01"}}]\n'
    config = write_config(tmp_path / "falbudget.yaml", url, text)
    open_ledger(url).close()
    code, out, err = run(capsys, "quote", "acme/upscale", "scale=4", "--config", str(config))
    # 0.0025 x 3 (scale 4) = 0.0075, within 0.01
    assert (code, err) == (0, "")
    assert out.splitlines()[-3].split() == ["total", "0.0075", "USD"]
    assert "fits the caps now: yes" in out
    code, out, err = run(
        capsys, "quote", "acme/upscale", "--config", str(config), "--pricing", str(config)
    )
    assert_usage_error((code, out, err), "quote: --config prices with the guard's table")


# --- the installed script -----------------------------------------------------------------------


def test_installed_script(seeded: Seeded, tmp_path: Path) -> None:
    env = {k: v for k, v in clean_env().items() if k not in ENV}
    env["FALBUDGET_CONFIG"] = str(seeded.config)
    script = installed_script()

    def falbudget(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [script, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )

    done = falbudget("budget", "status", "--format", "json")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert json.loads(done.stdout)["caps"][:4] == SEEDED_TOTAL_ROWS

    done = falbudget(
        "quote", MAGI, "num_frames=144", "--tag", "user=ann", "--config", str(seeded.config)
    )
    assert done.returncode == 1
    assert done.stderr == (
        "falbudget: does not fit the caps now: it costs 1.20 and user=ann total cap 3.00 has"
        " 0.60 left\n"
    )

    bad = tmp_path / "bad.yaml"
    bad.write_text("caps:\n  - limit: 1.5\n", encoding="utf-8")
    done = falbudget("budget", "history", "--config", str(bad))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(f"falbudget: error: {bad}: caps.0.limit: ")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
