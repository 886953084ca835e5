"""`falbudget pricing diff` and falbudget.pricing.diff: every count worked out by hand.

MAGI-1 (pricing.yaml), by hand:

    total = (0.80 + 0.20 x s) x resolution x max(1, steps / 16),   s = ceil((frames - 96) / 24)

Its grid is 97 frame counts (96..192) x 2 resolutions x 5 step counts = 970 points. s is 0 only
at 96 frames (10 points), 1 for 97..120, 2 for 121..144, 3 for 145..168 and 4 for 169..192. The
grid runs frames first, then resolution (480p, 720p), then steps (4, 8, 16, 32, 64), so where
several points tie for the largest change, the first of them in that order is shown.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import shutil
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from falbudget.cli import main
from falbudget.pricing import engine, load_table, parse_table
from falbudget.pricing.diff import compare_grids, diff_tables

MAGI = "fal-ai/magi/image-to-video"
PACKAGED_TEXT = (Path(__file__).resolve().parents[1] / "pricing.yaml").read_text()
# These tests diff the MAGI-1 family, the first part of pricing.yaml (the popular endpoints that
# follow it would only add lines saying they are unchanged): its text, and that text in a file.
TEXT = PACKAGED_TEXT[: PACKAGED_TEXT.index("  # -- popular fal endpoints beyond MAGI-1")]
_TABLES = Path(tempfile.mkdtemp(prefix="falbudget-diff-"))
atexit.register(shutil.rmtree, _TABLES, True)
REPO_TABLE = _TABLES / "pricing.yaml"
REPO_TABLE.write_text(TEXT)
PER_SECOND = '        amount: "0.20"\n'
# the four other endpoints of the packaged table (the rest of the MAGI family), untouched
OTHERS = [
    "fal-ai/magi",
    "fal-ai/magi/extend-video",
    "fal-ai/magi-distilled",
    "fal-ai/magi-distilled/extend-video",
]

ACME = """\
  acme/upscale:
    source_url: https://example.com/acme/upscale
    price_read_on: 2026-01-02
    inputs:
      scale: {type: integer, enum: [2, 4], default: 2}
      megapixels: {type: integer, minimum: 1, maximum: 4, default: 1}
    rules:
      - {name: base, kind: base, amount: "0.0025"}
      - {name: scale, kind: lookup, input: scale, factors: {"2": "1", "4": "3"}}
"""


def edited(old: str, new: str, text: str = TEXT) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def diff_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = run(capsys, "pricing", "diff", *argv, "--format", "json")
    return code, json.loads(out)


def only_period(data: dict[str, Any], endpoint: str = MAGI) -> dict[str, Any]:
    (found,) = [e for e in data["endpoints"] if e["endpoint"] == endpoint]
    (period,) = found["periods"]
    assert (period["from"], period["until"]) == (None, None)
    result: dict[str, Any] = period
    return result


# --- a rise, a cut, no change ------------------------------------------------------------------


def test_a_raised_amount_is_a_rise(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    old = str(REPO_TABLE)
    new = write(tmp_path, "new.yaml", edited(PER_SECOND, '        amount: "0.25"\n'))
    code, data = diff_json(capsys, old, new)
    assert code == 1
    period = only_period(data)
    assert period["status"] == "changed"
    assert period["changes"] == [
        {
            "what": "rule",
            "name": "extra seconds",
            "change": "changed",
            "field": "amount",
            "old": "0.20",
            "new": "0.25",
        }
    ]
    grid = period["grid"]
    # 96 frames has no extra second: 2 x 5 = 10 points unchanged; 96 x 2 x 5 = 960 up
    assert (grid["compared"], grid["up"], grid["down"], grid["unchanged"]) == (970, 960, 0, 10)
    assert (grid["only_old"], grid["only_new"]) == (0, 0)
    # the largest rise: 4 extra seconds x 0.05 x 720p (1) x 64 steps (4) = 0.80, first at 169
    # frames: (0.80 + 4 x 0.20) x 4 = 6.40 -> (0.80 + 4 x 0.25) x 4 = 7.20
    assert grid["largest_up"] == {
        "arguments": {"num_frames": 169, "resolution": "720p", "num_inference_steps": 64},
        "old": "6.40",
        "new": "7.20",
        "change": "+0.80",
    }
    assert grid["largest_down"] is None
    assert data["summary"] == {
        "added": 0,
        "removed": 0,
        "changed": 1,
        "unchanged": 4,  # the rest of the MAGI family
        "up": 960,
        "down": 0,
        "rises": True,
    }


def test_a_rise_as_text(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    new = write(tmp_path, "new.yaml", edited(PER_SECOND, '        amount: "0.25"\n'))
    code, out, err = run(capsys, "pricing", "diff", str(REPO_TABLE), new)
    assert code == 1
    assert err == f"falbudget: prices rise: 960 grid points up, in {MAGI}\n"
    lines = out.splitlines()
    assert lines[0].startswith(f"old: {REPO_TABLE} (table 2026.12.06, sha256 ")
    assert lines[1].startswith(f"new: {new} (table 2026.12.06, sha256 ")
    assert lines[2:] == [
        "",
        f"{MAGI}: changed",
        "  rule 'extra seconds': amount 0.20 -> 0.25",
        "  grid: 970 points priced in both: 960 up, 0 down, 10 unchanged",
        "  largest rise: +0.80 (6.40 -> 7.20) num_frames=169 resolution=720p"
        " num_inference_steps=64",
        "  largest cut:  none",
        *[line for other in OTHERS for line in ("", f"{other}: unchanged")],
        "",
        "summary: 1 changed, 0 added, 0 removed, 4 unchanged; grid prices 960 up, 0 down",
    ]


def test_rises_in_several_endpoints_are_named_without_periods(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Three endpoints with one price period each: the line names them and says nothing of
    periods (there is one per endpoint). Each has 970 grid points, 10 of them at 96 frames
    where the per-second amount is not used: 3 x 960 = 2880 up."""
    raised = TEXT.replace('amount: "0.20"', 'amount: "0.25"')
    assert TEXT.count('amount: "0.20"') == 3
    new = write(tmp_path, "new.yaml", raised)
    code, _, err = run(capsys, "pricing", "diff", str(REPO_TABLE), new)
    assert code == 1
    assert err == (
        "falbudget: prices rise: 2880 grid points up, in fal-ai/magi/image-to-video,"
        " fal-ai/magi, fal-ai/magi/extend-video\n"
    )


def test_a_cut_exits_0(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    new = write(tmp_path, "new.yaml", edited(PER_SECOND, '        amount: "0.15"\n'))
    code, data = diff_json(capsys, str(REPO_TABLE), new)
    assert code == 0
    grid = only_period(data)["grid"]
    assert (grid["up"], grid["down"], grid["unchanged"]) == (0, 960, 10)
    # 4 extra seconds x -0.05 x 4 = -0.80, first at 169 frames, 720p, 64 steps: 6.40 -> 5.60
    assert grid["largest_down"] == {
        "arguments": {"num_frames": 169, "resolution": "720p", "num_inference_steps": 64},
        "old": "6.40",
        "new": "5.60",
        "change": "-0.80",
    }
    assert grid["largest_up"] is None
    assert data["summary"]["rises"] is False


def test_identical_tables_are_all_unchanged(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    copy = write(tmp_path, "copy.yaml", TEXT)
    code, data = diff_json(capsys, str(REPO_TABLE), copy)
    assert code == 0
    period = only_period(data)
    assert (period["status"], period["changes"]) == ("unchanged", [])
    grid = period["grid"]
    assert (grid["up"], grid["down"], grid["unchanged"], grid["compared"]) == (0, 0, 970, 970)
    assert [(e["endpoint"], e["status"]) for e in data["endpoints"]] == [
        (name, "unchanged") for name in [MAGI, *OTHERS]
    ]
    assert data["summary"]["unchanged"] == 5
    code, out, err = run(capsys, "pricing", "diff", str(REPO_TABLE), copy)
    assert (code, err) == (0, "")
    assert out.splitlines()[2:] == [
        *[line for name in [MAGI, *OTHERS] for line in ("", f"{name}: unchanged")],
        "",
        "summary: 0 changed, 0 added, 0 removed, 5 unchanged; grid prices 0 up, 0 down",
    ]


def test_some_up_some_down(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Base 0.80 -> 0.90 and 480p 0.5 -> 0.4: every 720p point rises, every 480p point falls.

    720p: +0.10 x steps factor; the largest, 0.40, first at 96 frames, 64 steps: 3.20 -> 3.60.
    480p: (0.80 + 0.2s) x 0.5 - (0.90 + 0.2s) x 0.4 = 0.04 + 0.02s, times the steps factor;
    the largest, (0.04 + 0.08) x 4 = 0.48, first at 169 frames, 64 steps: 3.20 -> 2.72.
    """
    text = edited('        amount: "0.80"\n', '        amount: "0.90"\n')
    text = edited('          "480p": "0.5"\n', '          "480p": "0.4"\n', text)
    code, data = diff_json(capsys, str(REPO_TABLE), write(tmp_path, "new.yaml", text))
    assert code == 1
    period = only_period(data)
    assert [(c["name"], c["field"], c["old"], c["new"]) for c in period["changes"]] == [
        ("base", "amount", "0.80", "0.90"),
        ("resolution", "factors.480p", "0.5", "0.4"),
    ]
    grid = period["grid"]
    assert (grid["up"], grid["down"], grid["unchanged"]) == (485, 485, 0)
    assert grid["largest_up"] == {
        "arguments": {"num_frames": 96, "resolution": "720p", "num_inference_steps": 64},
        "old": "3.20",
        "new": "3.60",
        "change": "+0.40",
    }
    assert grid["largest_down"] == {
        "arguments": {"num_frames": 169, "resolution": "480p", "num_inference_steps": 64},
        "old": "3.20",
        "new": "2.72",
        "change": "-0.48",
    }


# --- endpoints and inputs added and removed ------------------------------------------------------


def test_endpoint_added_and_removed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with_acme = write(tmp_path, "acme.yaml", TEXT + ACME)
    code, data = diff_json(capsys, str(REPO_TABLE), with_acme)
    assert code == 0  # a new endpoint raises no price
    assert [(e["endpoint"], e["status"]) for e in data["endpoints"]] == [
        *[(name, "unchanged") for name in [MAGI, *OTHERS]],
        ("acme/upscale", "added"),
    ]
    # acme/upscale's grid: 2 scales (megapixels is not priced)
    added = only_period(data, "acme/upscale")
    assert (added["old_version"], added["new_version"]) == (None, "always")
    assert (added["grid"]["only_new"], added["grid"]["compared"]) == (2, 0)
    assert data["summary"]["added"] == 1

    code, data = diff_json(capsys, with_acme, str(REPO_TABLE))
    assert code == 0
    removed = only_period(data, "acme/upscale")
    assert (removed["status"], removed["grid"]["only_old"]) == ("removed", 2)
    assert data["summary"]["removed"] == 1

    code, out, _ = run(capsys, "pricing", "diff", with_acme, str(REPO_TABLE))
    assert "acme/upscale: removed\n  only in old (2 grid points)\n" in out
    assert out.splitlines()[-1] == (
        "summary: 0 changed, 0 added, 1 removed, 5 unchanged; grid prices 0 up, 0 down"
    )


def test_a_new_input_value_adds_grid_points(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """1080p at x2: 97 frame counts x 5 step counts = 485 points only in new; the rest stay."""
    text = edited('        enum: ["480p", "720p"]\n', '        enum: ["480p", "720p", "1080p"]\n')
    text = edited('"720p": "1"\n', '"720p": "1"\n          "1080p": "2"\n', text)
    code, data = diff_json(capsys, str(REPO_TABLE), write(tmp_path, "new.yaml", text))
    assert code == 0
    period = only_period(data)
    assert period["changes"] == [
        {
            "what": "input",
            "name": "resolution",
            "change": "changed",
            "field": "enum",
            "old": ["480p", "720p"],
            "new": ["480p", "720p", "1080p"],
        },
        {
            "what": "rule",
            "name": "resolution",
            "change": "changed",
            "field": "factors.1080p",
            "old": None,
            "new": "2",
        },
    ]
    grid = period["grid"]
    assert (grid["unchanged"], grid["only_new"], grid["only_old"], grid["up"]) == (970, 485, 0, 0)
    assert period["status"] == "changed"
    code, out, _ = run(capsys, "pricing", "diff", str(REPO_TABLE), str(tmp_path / "new.yaml"))
    assert '  input \'resolution\': enum ["480p", "720p"] -> ["480p", "720p", "1080p"]' in out
    assert "  rule 'resolution': factors.1080p (none) -> 2" in out
    assert "970 points priced in both: 0 up, 0 down, 970 unchanged; 485 only in new" in out


def test_rules_added_removed_and_moved(tmp_path: Path) -> None:
    acme = "schema_version: 1\ntable_version: a\neffective_date: 2026-01-01\ncurrency: USD\n"
    acme += "endpoints:\n" + ACME
    old = parse_table(acme)
    # the scale rule moves above a new flat fee; the base is removed
    new = parse_table(
        edited(
            '      - {name: base, kind: base, amount: "0.0025"}\n'
            '      - {name: scale, kind: lookup, input: scale, factors: {"2": "1", "4": "3"}}\n',
            '      - {name: fee, kind: base, amount: "0.01"}\n'
            '      - {name: scale, kind: lookup, input: scale, factors: {"2": "1", "4": "3"}}\n',
            acme,
        )
    )
    result = diff_tables(old, new)
    (endpoint,) = result.endpoints
    (period,) = endpoint.periods
    assert [(c.what, c.name, c.change) for c in period.changes] == [
        ("rule", "base", "removed"),
        ("rule", "fee", "added"),
    ]
    # 0.0025 x 1 -> 0.01 x 1 and 0.0025 x 3 -> 0.01 x 3: both up, by 0.0075 and 0.0225
    assert (period.grid.up, period.grid.down) == (2, 0)
    assert period.grid.largest_up is not None
    assert period.grid.largest_up.change == Decimal("0.0225")
    assert result.rises
    moved = parse_table(
        edited(
            '      - {name: base, kind: base, amount: "0.0025"}\n'
            '      - {name: scale, kind: lookup, input: scale, factors: {"2": "1", "4": "3"}}\n',
            '      - {name: scale, kind: lookup, input: scale, factors: {"2": "1", "4": "3"}}\n'
            '      - {name: base, kind: base, amount: "0.0025"}\n',
            acme,
        )
    )
    (period,) = diff_tables(old, moved).endpoints[0].periods
    assert [c.to_dict() for c in period.changes] == [
        {
            "what": "rule",
            "name": "",
            "change": "changed",
            "field": "order",
            "old": ["base", "scale"],
            "new": ["scale", "base"],
        }
    ]
    # scale first multiplies 0 by 3, then the base adds 0.0025: scale 4 falls from 0.0075
    assert (period.grid.up, period.grid.down, period.grid.unchanged) == (0, 1, 1)


# --- dated versions ----------------------------------------------------------------------------

DATED = """\
schema_version: 1
table_version: "dated"
effective_date: 2026-11-01
currency: USD
endpoints:
  acme/upscale:
    source_url: https://example.com/acme/upscale
    price_read_on: 2026-01-02
    inputs:
      scale: {type: integer, enum: [2, 4], default: 2}
      megapixels: {type: integer, minimum: 1, maximum: 4, default: 1}
    versions:
      - effective_from: 2026-11-01
        rules:
          - {name: base, kind: base, amount: "0.0025"}
          - {name: scale, kind: lookup, input: scale, factors: {"2": "1", "4": "3"}}
      - effective_from: 2026-12-01
        rules:
          - {name: base, kind: base, amount: "0.0030"}
          - {name: scale, kind: lookup, input: scale, factors: {"2": "1", "4": "3"}}
"""
UNDATED = "schema_version: 1\ntable_version: u\neffective_date: 2026-01-01\ncurrency: USD\n"
UNDATED += "endpoints:\n" + ACME


def test_a_later_rise_in_a_dated_version_is_found(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "_today", lambda: dt.date(2026, 11, 24).toordinal())
    old = write(tmp_path, "undated.yaml", UNDATED)
    new = write(tmp_path, "dated.yaml", DATED)
    code, data = diff_json(capsys, old, new)
    assert code == 1
    (endpoint,) = data["endpoints"]
    assert endpoint["status"] == "changed"
    periods = endpoint["periods"]
    assert [(p["from"], p["until"], p["current"], p["status"]) for p in periods] == [
        (None, "2026-11-01", False, "removed"),  # the dated table has no price before
        ("2026-11-01", "2026-12-01", True, "unchanged"),
        ("2026-12-01", None, False, "changed"),
    ]
    assert [(p["old_version"], p["new_version"]) for p in periods] == [
        ("always", None),
        ("always", "2026-11-01"),
        ("always", "2026-12-01"),
    ]
    assert periods[0]["grid"]["only_old"] == 2
    # 0.0025 -> 0.0030 at scale 2, 0.0075 -> 0.0090 at scale 4
    last = periods[2]["grid"]
    assert (last["up"], last["down"], last["unchanged"]) == (2, 0, 0)
    assert last["largest_up"]["change"] == "+0.0015"
    code, out, err = run(capsys, "pricing", "diff", old, new)
    assert err == "falbudget: prices rise: 2 grid points up, in acme/upscale\n"
    assert out.splitlines()[3:] == [
        "acme/upscale: changed",
        "  before 2026-11-01 [old: undated rules, new: no prices]: removed",
        "    only in old (2 grid points)",
        "  2026-11-01 to 2026-12-01 (now) [old: undated rules, new: prices from 2026-11-01]:"
        " unchanged",
        "  from 2026-12-01 [old: undated rules, new: prices from 2026-12-01]: changed",
        "    rule 'base': amount 0.0025 -> 0.003",
        "    grid: 2 points priced in both: 2 up, 0 down, 0 unchanged",
        "    largest rise: +0.0015 (0.0075 -> 0.009) scale=4",
        "    largest cut:  none",
        "",
        "summary: 1 changed, 0 added, 0 removed, 0 unchanged; grid prices 2 up, 0 down",
    ]


@pytest.mark.parametrize(
    ("at", "code", "status", "start"),
    [
        ("2026-11-15", 0, "unchanged", "2026-11-01"),
        ("2026-12-15", 1, "changed", "2026-12-01"),
        ("2026-12-01T00:00:00+01:00", 0, "unchanged", "2026-11-01"),  # 23:00 UTC, 30 November
        ("2026-10-01", 0, "removed", None),
    ],
)
def test_at_compares_one_moment(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    at: str,
    code: int,
    status: str,
    start: str | None,
) -> None:
    old = write(tmp_path, "undated.yaml", UNDATED)
    new = write(tmp_path, "dated.yaml", DATED)
    found, data = diff_json(capsys, old, new, "--at", at)
    assert found == code
    (period,) = data["endpoints"][0]["periods"]
    assert (period["status"], period["from"]) == (status, start)
    assert data["at"] == dt.datetime.fromisoformat(at).astimezone(dt.UTC).date().isoformat()


def test_a_dated_table_against_itself_is_unchanged_in_every_period(tmp_path: Path) -> None:
    table = parse_table(DATED)
    result = diff_tables(table, table)
    (endpoint,) = result.endpoints
    assert endpoint.status == "unchanged"
    assert [(p.start, p.end) for p in endpoint.periods] == [
        ("2026-11-01", "2026-12-01"),
        ("2026-12-01", None),
    ]  # before 2026-11-01 neither table has a price: no period
    assert not result.rises


# --- the pure module -----------------------------------------------------------------------------


def test_compare_grids_on_compiled_endpoints() -> None:
    old = load_table(REPO_TABLE).endpoint(MAGI)
    new = parse_table(edited(PER_SECOND, '        amount: "0.25"\n')).endpoint(MAGI)
    grid = compare_grids(old, new)
    assert (grid.up, grid.down, grid.unchanged, grid.compared) == (960, 0, 10, 970)
    assert grid.largest_up is not None
    assert (grid.largest_up.old, grid.largest_up.new) == (Decimal("6.40"), Decimal("7.20"))


def test_an_unbounded_input_is_reported_not_counted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    unbounded = edited(
        "megapixels: {type: integer, minimum: 1, maximum: 4, default: 1}",
        "megapixels: {type: integer, minimum: 1, default: 1}",
        UNDATED,
    )
    unbounded = edited(
        '      - {name: scale, kind: lookup, input: scale, factors: {"2": "1", "4": "3"}}\n',
        '      - {name: scale, kind: lookup, input: scale, factors: {"2": "1", "4": "3"}}\n'
        '      - {name: mp, kind: per_unit, input: megapixels, unit: 1, amount: "0.001"}\n',
        unbounded,
    )
    old = write(tmp_path, "old.yaml", unbounded)
    code, data = diff_json(capsys, old, old)
    assert code == 0
    grid = only_period(data, "acme/upscale")["grid"]
    assert grid["error"] == (
        "acme/upscale: megapixels has no enum and no bounded range, so its grid is infinite"
    )
    code, out, _ = run(capsys, "pricing", "diff", old, old)
    assert "  grid: not compared: acme/upscale: megapixels has no enum" in out


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (("missing.yaml", str(REPO_TABLE)), "cannot read the price table"),
        ((str(REPO_TABLE),), "the following arguments are required: NEW"),
        ((str(REPO_TABLE), str(REPO_TABLE), "--at", "2026-02-30"), "DATE='2026-02-30'"),
        ((str(REPO_TABLE), str(REPO_TABLE), "--format", "csv"), "invalid choice: 'csv'"),
    ],
)
def test_bad_input_exits_2(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], needle: str
) -> None:
    code, out, err = run(capsys, "pricing", "diff", *argv)
    assert (code, out) == (2, "")
    assert err.startswith("falbudget: error: ") and err.count("\n") == 1
    assert needle in err, err


def test_an_invalid_table_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", edited(PER_SECOND, "        amount: 0.25\n"))
    code, out, err = run(capsys, "pricing", "diff", str(REPO_TABLE), bad)
    assert (code, out) == (2, "")
    assert f"{bad}: endpoint '{MAGI}': field rules.1.amount" in err


def test_the_docs_example_rises_over_two_periods(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/cli.md: price-history-before.yaml (one version, 0.80 from 2026-11-01) against
    price-history.yaml (1.00 from 2026-12-01, and 1080p from 2027-01-01). Each of the two later
    periods raises all 97 x 2 = 194 points priced in both by 0.20 x resolution; 1080p adds 97
    points only in new."""
    monkeypatch.setattr(engine, "_today", lambda: dt.date(2026, 11, 24).toordinal())
    docs = Path(__file__).resolve().parents[1] / "docs" / "examples"
    old, new = str(docs / "price-history-before.yaml"), str(docs / "price-history.yaml")
    code, data = diff_json(capsys, old, new)
    assert code == 1
    periods = data["endpoints"][0]["periods"]
    assert [(p["from"], p["until"], p["status"]) for p in periods] == [
        ("2026-11-01", "2026-12-01", "unchanged"),
        ("2026-12-01", "2027-01-01", "changed"),
        ("2027-01-01", None, "changed"),
    ]
    assert [(p["grid"]["up"], p["grid"]["only_new"]) for p in periods] == [
        (0, 0),
        (194, 0),
        (194, 97),
    ]
    assert data["summary"]["up"] == 388
    code, _, err = run(capsys, "pricing", "diff", old, new)
    assert err == (
        "falbudget: prices rise: 388 grid points up (over 2 price periods), in acme/video\n"
    )
    code, data = diff_json(capsys, old, new, "--at", "2026-11-24")
    assert (code, data["endpoints"][0]["status"]) == (0, "unchanged")
