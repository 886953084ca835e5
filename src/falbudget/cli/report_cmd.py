"""`falbudget report`: spend by endpoint, project, user and day over a window; the burn rate and
when each cap will be reached; a text chart (--chart) or a PNG (--png FILE, falbudget[plot]).

The computations are in ``falbudget.report``; the renderers here are pure (report in, text out).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from falbudget import clock
from falbudget.cli.budget_cmd import guard_from_args
from falbudget.cli.common import Outcome, Subparsers, UsageError, add_guard_options, parse_when
from falbudget.cli.render import cents, minute, overrun_line, plural, tabulate_text, to_json
from falbudget.money import format_usd

if TYPE_CHECKING:  # pragma: no cover
    from falbudget.report import Figures, Forecast, Report

REPORT_FORMATS = ("table", "json", "csv")
_FIGURES = ("spent", "held", "requests", "open")

EPILOG = """\
examples:
  falbudget report --config falbudget.yaml
  falbudget report --since 2026-11-01 --until 2026-12-01 --by project,day --format csv
  falbudget report --scope project=alpha --chart
  falbudget report --png spend.png          (needs falbudget[plot])

docs: docs/reports.md"""


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="spend by endpoint, project, user and day; burn rate; when each cap is reached",
        description="Spend over a window from the ledger, by endpoint, project, user and day;\n"
        "the burn rate over the last days; for each cap, when it will be reached at that rate.\n"
        "Settled and expired holds count as spent, held and submitted ones as held.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_guard_options(parser)
    parser.add_argument(
        "--since",
        metavar="DATE",
        help="window start, included (ISO date or time, in --tz when no offset is given);"
        " default: 30 days before --until",
    )
    parser.add_argument(
        "--until",
        metavar="DATE",
        help="window end, excluded (--until 2026-12-01 stops at the end of November 30);"
        " default: the end of today",
    )
    parser.add_argument(
        "--by",
        metavar="DIMS",
        action="append",
        help="a breakdown: endpoint, project, user, day or tag:NAME; several joined by commas"
        " group by each combination (project,day); repeat for several breakdowns; default:"
        " --by endpoint --by project --by user --by day",
    )
    parser.add_argument(
        "--scope", metavar="TAG=VALUE", help="only holds tagged so (project=alpha), and its caps"
    )
    parser.add_argument(
        "--tz",
        default="UTC",
        metavar="TZ",
        help="IANA time zone of the days and of dates given without an offset (default UTC)",
    )
    parser.add_argument(
        "--burn-days",
        type=int,
        default=7,
        metavar="N",
        help="the burn rate is the spend of the last N x 24 hours divided by N (default 7)",
    )
    parser.add_argument(
        "--now",
        metavar="TIME",
        help="the moment the burn rate and forecasts are computed for (default: the current"
        " time); holds are read as the ledger has them now",
    )
    parser.add_argument(
        "--format",
        choices=REPORT_FORMATS,
        default="table",
        help="table (default); json (one document, money as strings); csv (one row per group)",
    )
    parser.add_argument(
        "--chart", action="store_true", help="add a text chart of daily spend (table format)"
    )
    parser.add_argument(
        "--png", metavar="FILE", help="write a chart of daily spend against the caps (PNG)"
    )
    parser.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> Outcome:
    from falbudget import report as rp

    rp.zone(args.tz)
    breakdowns = [rp.parse_by(text) for text in args.by] if args.by else list(rp.DEFAULT_BY)
    scope = rp.parse_scope(args.scope) if args.scope is not None else None
    if not 1 <= args.burn_days <= rp.MAX_BURN_DAYS:
        raise UsageError(
            f"--burn-days={args.burn_days} is not allowed: from 1 to {rp.MAX_BURN_DAYS}"
        )
    if args.chart and args.format != "table":
        raise UsageError("--chart draws in the terminal: it goes with --format table only")
    zone = _zone(args.tz)
    now = parse_when(args.now, "--now", zone)
    now = clock.now() if now is None else now
    since, until = rp.default_window(
        now,
        args.tz,
        since=parse_when(args.since, "--since", zone),
        until=parse_when(args.until, "--until", zone),
    )
    guard = guard_from_args(args, read_only=True)
    try:
        holds = rp.read_groups(
            guard.ledger,
            guard.caps,
            now=now,
            since=since,
            until=until,
            tz=args.tz,
            burn_days=args.burn_days,
        )
    finally:
        guard.close()
    result = rp.build_report(
        holds,
        guard.caps,
        now=now,
        since=since,
        until=until,
        tz=args.tz,
        by=breakdowns,
        scope=scope,
        burn_days=args.burn_days,
    )
    if args.png is not None:
        Path(args.png).write_bytes(rp.png_chart(result))
    if args.format == "json":
        return Outcome(to_json(report_data(result)))
    if args.format == "csv":
        return Outcome(report_csv(result))
    text = report_table(report_data(result), width=table_width())
    if args.chart:
        text += "\n\n" + rp.text_chart(result, ascii_only=not _can_write(rp.CHART_CELLS))
    if args.png is not None:
        text += f"\n\nchart written to {args.png}"
    return Outcome(text)


# --- renderers: pure ---------------------------------------------------------------------------


def _iso(epoch: float | None, tz: str) -> str | None:
    from falbudget.report import zone

    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, tz=zone(tz)).isoformat(timespec="seconds")


def _figures(figures: Figures) -> dict[str, Any]:
    return {
        "spent": format_usd(figures.spent),
        "held": format_usd(figures.held),
        "requests": figures.requests,
        "open": figures.open,
    }


def _forecast_data(forecast: Forecast) -> dict[str, Any]:
    from falbudget.report import describe, percent_used

    cap, tz = forecast.cap, forecast.cap.tz
    return {
        "cap": cap.label(forecast.bucket),
        "scope": forecast.scope,
        "window": cap.window,
        "window_key": forecast.bucket.partition("|")[2],
        "tz": tz,
        "window_start": _iso(forecast.window_start, tz),
        "window_end": _iso(forecast.window_end, tz),
        "limit": format_usd(forecast.limit),
        "spent": format_usd(forecast.spent),
        "held": format_usd(forecast.held),
        "remaining": format_usd(forecast.remaining),
        "used": percent_used(forecast.spent + forecast.held, forecast.limit),
        "per_day": format_usd(forecast.rate.per_day),
        "outcome": forecast.outcome,
        "reached_at": _iso(forecast.reached_at, tz),
        "projected": None if forecast.projected is None else format_usd(forecast.projected),
        "forecast": describe(forecast),
    }


def report_data(report: Report) -> dict[str, Any]:
    """Everything the report shows as JSON-ready data: money as decimal strings, times as ISO
    8601 in the report's zone (a cap's times in the cap's zone)."""
    tz = report.tz
    totals = report.totals
    burn = report.burn
    return {
        "currency": "USD",
        "tz": tz,
        "now": _iso(report.now, tz),
        "since": _iso(report.since, tz),
        "until": _iso(report.until, tz),
        "scope": None if report.scope is None else "=".join(report.scope),
        "totals": {
            **_figures(totals.figures),
            "expired": totals.expired,
            "released": totals.released,
            "overruns": totals.overruns,
            "overrun": format_usd(totals.overrun),
        },
        "breakdowns": [
            {
                "by": list(breakdown.by),
                "rows": [
                    {**dict(zip(breakdown.by, group.key, strict=True)), **_figures(group.figures)}
                    for group in breakdown.groups
                ],
            }
            for breakdown in report.breakdowns
        ],
        "burn_rate": {
            "days": burn.days,
            "since": _iso(burn.since, tz),
            "until": _iso(burn.until, tz),
            "spent": format_usd(burn.spent),
            "per_day": format_usd(burn.per_day),
        },
        "caps": [_forecast_data(forecast) for forecast in report.forecasts],
        "daily": [
            {
                "day": day.day.isoformat(),
                "spent": format_usd(day.spent),
                "held": format_usd(day.held),
            }
            for day in report.days
        ],
    }


def plain_window(window: str, window_key: str) -> str:
    """A cap's window in plain words: '2026-11-24' (a day), 'week of 2026-11-23', '2026-11'
    (a month), 'all time' (total). Its zone is in the cap's name ('global day (Europe/Paris)')
    and in the JSON."""
    if window == "total":
        return "all time"
    period = window_key.rpartition(":")[2]
    return f"week of {period}" if window == "week" else period


def fit_table(
    rows: list[list[str]], headers: list[str], align: list[str], width: int, shrink: int = 0
) -> str:
    """The table, its column ``shrink`` cut (ending in '~', down to 8 characters) so that it
    fits ``width`` columns when it would not; the other columns are never cut (the caps table
    fits from about 80 columns up)."""
    text = tabulate_text(rows, headers, align)
    over = max(len(line) for line in text.splitlines()) - width
    if over <= 0:
        return text
    longest = max(len(r[shrink]) for r in [headers, *rows])
    keep = max(8, longest - over)
    cut = [[*r[:shrink], _cut(r[shrink], keep), *r[shrink + 1 :]] for r in rows]
    heads = [*headers[:shrink], _cut(headers[shrink], keep), *headers[shrink + 1 :]]
    return tabulate_text(cut, heads, align)


def _cut(text: str, keep: int) -> str:
    return text if len(text) <= keep else text[: keep - 1] + "~"


def table_width() -> int:
    """How wide a table may be: ``COLUMNS`` when it is set to a number from 40 up, else 100."""
    import os

    raw = os.environ.get("COLUMNS", "")
    return int(raw) if raw.isdigit() and int(raw) >= 40 else 100


def report_table(data: Mapping[str, Any], *, width: int = 100) -> str:
    """The report for people: the window and totals, one table per breakdown, the burn rate,
    then each cap's figures and its forecast. Money to the cent; every line fits ``width``
    columns (a long cap or group name is cut, a long sentence wrapped)."""
    totals = data["totals"]
    scope = f" of {data['scope']}" if data["scope"] else ""
    parts = [
        f"spend{scope} from {minute(data['since'])} to {minute(data['until'])} ({data['tz']}),"
        f" as of {minute(data['now'])}\n"
        f"spent {cents(totals['spent'])} {data['currency']}, held {cents(totals['held'])};"
        f" {plural(totals['requests'], 'request')} ({totals['expired']} expired),"
        f" {totals['open']} open,"
        f" {totals['released']} released"
        + overrun_line(totals["overruns"], totals["overrun"], data["currency"])
    ]
    parts = [_wrap(parts[0], width)]
    for breakdown in data["breakdowns"]:
        by = breakdown["by"]
        title = "by " + ", ".join(by)
        if not breakdown["rows"]:
            parts.append(f"{title}\n(no holds)")
            continue
        rows = [
            [
                *("(none)" if row[d] is None else row[d] for d in by),
                cents(row["spent"]),
                cents(row["held"]),
                str(row["requests"]),
                str(row["open"]),
            ]
            for row in breakdown["rows"]
        ]
        table = fit_table(rows, [*by, *_FIGURES], ["left"] * len(by) + ["right"] * 4, width)
        parts.append(f"{title}\n{table}")
    burn = data["burn_rate"]
    parts.append(
        _wrap(
            f"burn rate: {cents(burn['per_day'])} {data['currency']}/day"
            f" ({cents(burn['spent'])} spent in the {plural(burn['days'], 'day')}"
            f" to {minute(burn['until'])})",
            width,
        )
    )
    if data["caps"]:
        names = [_short_label(c) for c in data["caps"]]
        rows = [
            [
                name,
                plain_window(c["window"], c["window_key"]),
                *(cents(c[k]) for k in ("limit", "spent", "held", "remaining")),
                c["used"],
                cents(c["per_day"]),
            ]
            for name, c in zip(names, data["caps"], strict=True)
        ]
        headers = ["cap", "window", "limit", "spent", "held", "remaining", "used", "per day"]
        align = ["left", "left", *["right"] * 6]
        forecasts = [
            _wrap(f"{name}: {c['forecast']}", width)
            for name, c in zip(names, data["caps"], strict=True)
        ]
        parts.append("caps\n" + fit_table(rows, headers, align, width))
        parts.append("forecasts at the burn rate of each cap's scope\n" + "\n".join(forecasts))
    else:
        parts.append("caps: none (give --config PATH or set FALBUDGET_CONFIG)")
    return "\n\n".join(parts)


def _wrap(text: str, width: int) -> str:
    """Each line of ``text`` wrapped at ``width`` columns, continued lines indented by two."""
    import textwrap

    return "\n".join(
        textwrap.fill(line, width, subsequent_indent="  ", break_on_hyphens=False) or line
        for line in text.split("\n")
    )


def _short_label(cap: Mapping[str, Any]) -> str:
    """The cap's name without the limit its own column shows ('global month (Europe/Paris)')."""
    label = str(cap["cap"])
    return label.removesuffix(f" cap {cap['limit']}")


def report_csv(report: Report) -> str:
    """Tidy CSV: one row per group of every breakdown. ``by`` names the breakdown (project+day);
    a dimension column the breakdown does not use is empty, as is an absent tag."""
    dims: list[str] = []
    for breakdown in report.breakdowns:
        dims.extend(d for d in breakdown.by if d not in dims)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["by", *dims, *_FIGURES])
    for breakdown in report.breakdowns:
        for group in breakdown.groups:
            values = dict(zip(breakdown.by, group.key, strict=True))
            figures = _figures(group.figures)
            writer.writerow(
                [
                    "+".join(breakdown.by),
                    *(values.get(d) or "" for d in dims),
                    *(figures[f] for f in _FIGURES),
                ]
            )
    return out.getvalue().rstrip("\n")


def _can_write(text: str) -> bool:
    """Whether stdout's encoding has ``text`` (not so under PYTHONIOENCODING=cp1252)."""
    try:
        text.encode(getattr(sys.stdout, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _zone(tz: str) -> dt.tzinfo:
    from falbudget.report import zone

    return zone(tz)
