"""Inline SVG charts of a report: the daily spend as bars, a cap's limit as a line, the spend
of the cap's window by each day's end and the forecast to the window's end (dashed). No
script and no external asset: the SVG is part of the page, with a text alternative."""

from __future__ import annotations

from decimal import Decimal
from html import escape
from typing import TYPE_CHECKING

from falbudget.cli.render import cents
from falbudget.money import format_usd

if TYPE_CHECKING:  # pragma: no cover
    from falbudget.report import CapLine, Report

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 14, 28


def _usd(amount: Decimal) -> str:
    return cents(format_usd(amount))


def chart(report: Report, line: CapLine | None, title: str, ident: str) -> str:
    """One chart: the report's days, and ``line`` (a cap) when given."""
    days = report.days
    n = max(1, len(days))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    values = [d.spent + d.held for d in days]
    top = max([Decimal(0), *values])
    forecast = line.forecast if line is not None else None
    cumulative = [c for c in (line.cumulative or ()) if c is not None] if line else []
    if forecast is not None:
        top = max(top, forecast.limit, *cumulative)
        if forecast.projected is not None:
            top = max(top, forecast.projected)
    top = top * Decimal("1.1") if top > 0 else Decimal(1)

    def y(amount: Decimal) -> float:
        return round(TOP + plot_h - float(amount / top) * plot_h, 1)

    span = report.until - report.since

    def x_at(epoch: float) -> float:
        return round(LEFT + (epoch - report.since) / span * plot_w, 1)

    slot = plot_w / n
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        f' aria-labelledby="{ident}-t" class="chart" data-days="{len(days)}">',
        f'<title id="{ident}-t">{escape(title)}</title>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}"'
        ' class="axis"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 4}" class="tick" text-anchor="end">{_usd(top)}</text>',
        f'<text x="{LEFT - 6}" y="{TOP + plot_h}" class="tick" text-anchor="end">0</text>',
    ]
    for index, day in enumerate(days):
        x = round(LEFT + index * slot + slot * 0.1, 1)
        w = round(max(slot * 0.8, 0.5), 1)
        if day.spent > 0:
            h = round(float(day.spent / top) * plot_h, 1)
            parts.append(
                f'<rect class="bar spent" x="{x}" y="{y(day.spent)}" width="{w}" height="{h}">'
                f"<title>{day.day.isoformat()}: spent {_usd(day.spent)}</title></rect>"
            )
        if day.held > 0:
            h = round(float(day.held / top) * plot_h, 1)
            parts.append(
                f'<rect class="bar held" x="{x}" y="{y(day.spent + day.held)}" width="{w}"'
                f' height="{h}"><title>{day.day.isoformat()}: held {_usd(day.held)}</title></rect>'
            )
    ticks = {0, n - 1, n // 2} if n > 2 else set(range(n))
    for index in sorted(ticks):
        if index < len(days):
            cx = round(LEFT + (index + 0.5) * slot, 1)
            anchor = "end" if index == n - 1 and n > 2 else "start" if index == 0 else "middle"
            if anchor == "end":
                cx = WIDTH - RIGHT
            elif anchor == "start":
                cx = LEFT
            parts.append(
                f'<text x="{cx}" y="{HEIGHT - 8}" class="tick" text-anchor="{anchor}">'
                f"{days[index].day.isoformat()}</text>"
            )
    if forecast is not None and line is not None:
        ly = y(forecast.limit)
        parts.append(
            f'<line class="limit" x1="{LEFT}" y1="{ly}" x2="{WIDTH - RIGHT}" y2="{ly}"/>'
            f'<text class="tick limit-label" x="{WIDTH - RIGHT}" y="{ly - 4}" text-anchor="end">'
            f"cap {_usd(forecast.limit)}</text>"
        )
        if line.cumulative is not None:
            points = [
                f"{round(x_at(day.end), 1)},{y(value)}"
                for day, value in zip(days, line.cumulative, strict=True)
                if value is not None
            ]
            if points:
                parts.append(f'<polyline class="cumulative" points="{" ".join(points)}"/>')
        if forecast.projected is not None and forecast.window_end is not None:
            now = min(max(report.now, report.since), report.until)
            used = forecast.spent + forecast.held
            end, projected = forecast.window_end, forecast.projected
            if end > report.until and end > now:  # cut at the chart's end, on the same line
                share = Decimal(report.until - now) / Decimal(end - now)
                projected = used + (projected - used) * share
                end = report.until
            if end > now:
                parts.append(
                    f'<line class="forecast" x1="{x_at(now)}" y1="{y(used)}" x2="{x_at(end)}"'
                    f' y2="{y(projected)}"/>'
                )
    parts.append("</svg>")
    return "".join(parts)
