"""Pure renderers for `falbudget pricing diff`: the JSON-ready data of ``TableDiff.to_dict()`` in,
text out. Nothing here prints, reads files or looks at the environment; no trailing newline."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from falbudget.cli.render import pairs_text, plural, range_data, range_text, show_value

if TYPE_CHECKING:  # pragma: no cover
    from falbudget.pricing.engine import PricedEndpoint, PriceTable


def _value(value: Any) -> str:
    return "(none)" if value is None else show_value(value)


def _input_text(data: Mapping[str, Any]) -> str:
    parts = [data["type"]]
    if data["enum"] is not None:
        parts.append("one of " + ", ".join(json.dumps(v) for v in data["enum"]))
    if data["minimum"] is not None or data["maximum"] is not None:
        parts.append(f"from {_value(data['minimum'])} to {_value(data['maximum'])}")
    if data["default"] is not None:
        parts.append(f"default {json.dumps(data['default'])}")
    if data["required"]:
        parts.append("required")
    return ", ".join(parts)


def _rule_text(data: Mapping[str, Any]) -> str:
    keys = [k for k in data if k not in ("kind", "input", "description")]
    on = f" on {data['input']}" if data.get("input") else ""
    fields = ", ".join(f"{k} {_value(data[k])}" for k in keys)
    return f"{data['kind']}{on}: {fields}" if fields else f"{data['kind']}{on}"


def change_text(change: Mapping[str, Any]) -> str:
    """One change as a line: "rule 'extra seconds': amount 0.20 -> 0.25"."""
    what, name, kind = change["what"], change["name"], change["change"]
    if what == "rule" and change["field"] == "order":
        return f"rule order: {', '.join(change['old'])} -> {', '.join(change['new'])}"
    if what == "endpoint":
        return f"{change['field']}: {_value(change['old'])} -> {_value(change['new'])}"
    label = f"{what} {name!r}"
    describe = _input_text if what == "input" else _rule_text
    if kind == "added":
        return f"{label} added ({describe(change['new'])})"
    if kind == "removed":
        return f"{label} removed (was {describe(change['old'])})"
    return f"{label}: {change['field']} {_value(change['old'])} -> {_value(change['new'])}"


def _move_text(move: Mapping[str, Any] | None) -> str:
    if move is None:
        return "none"
    return f"{move['change']} ({move['old']} -> {move['new']}) {pairs_text(move['arguments'])}"


def grid_lines(grid: Mapping[str, Any]) -> list[str]:
    """The grid's counts, and the largest rise and cut when prices move."""
    if grid["error"] is not None:
        return [f"grid: not compared: {grid['error']}"]
    apart = []
    if grid["only_old"]:
        apart.append(f"{grid['only_old']} only in old")
    if grid["only_new"]:
        apart.append(f"{grid['only_new']} only in new")
    line = (
        f"grid: {plural(grid['compared'], 'point')} priced in both: {grid['up']} up,"
        f" {grid['down']} down, {grid['unchanged']} unchanged"
    )
    if apart:
        line += "; " + ", ".join(apart)
    lines = [line]
    if grid["up"] or grid["down"]:
        lines.append(f"largest rise: {_move_text(grid['largest_up'])}")
        lines.append(f"largest cut:  {_move_text(grid['largest_down'])}")
    return lines


def _version_text(version: str | None) -> str:
    if version is None:
        return "no prices"
    return "undated rules" if version == "always" else f"prices from {version}"


def period_label(period: Mapping[str, Any]) -> str:
    """'always', 'before 2026-12-01', '2026-11-24 to 2026-12-01' or 'from 2026-12-01', with
    ' (now)' for the period holding today."""
    start, end = period["from"], period["until"]
    if start is None and end is None:
        label = "always"
    elif start is None:
        label = f"before {end}"
    elif end is None:
        label = f"from {start}"
    else:
        label = f"{start} to {end}"
    return label + (" (now)" if period["current"] else "")


def _period_lines(period: Mapping[str, Any], indent: str) -> list[str]:
    grid = period["grid"]
    if period["status"] == "added":
        count = "" if grid["error"] else f" ({plural(grid['only_new'], 'grid point')})"
        return [f"{indent}only in new{count}"]
    if period["status"] == "removed":
        count = "" if grid["error"] else f" ({plural(grid['only_old'], 'grid point')})"
        return [f"{indent}only in old{count}"]
    lines = [f"{indent}{change_text(change)}" for change in period["changes"]]
    lines.extend(f"{indent}{line}" for line in grid_lines(grid))
    return lines


def _endpoint_lines(endpoint: Mapping[str, Any]) -> list[str]:
    periods: Sequence[Mapping[str, Any]] = endpoint["periods"]
    head = f"{endpoint['endpoint']}: {endpoint['status']}"
    if len(periods) == 1 and periods[0]["from"] is None and periods[0]["until"] is None:
        period = periods[0]
        if period["status"] == "unchanged":
            return [head]
        return [head, *_period_lines(period, "  ")]
    if not periods:
        return [f"{head} (no prices in either table then)"]
    lines = [head]
    for period in periods:
        versions = (
            f"old: {_version_text(period['old_version'])},"
            f" new: {_version_text(period['new_version'])}"
        )
        label = f"  {period_label(period)} [{versions}]"
        if period["status"] == "unchanged":
            lines.append(f"{label}: unchanged")
        else:
            lines.append(f"{label}: {period['status']}")
            lines.extend(_period_lines(period, "    "))
    return lines


def _table_line(which: str, data: Mapping[str, Any]) -> str:
    return (
        f"{which}: {data['source']} (table {data['table_version']},"
        f" sha256 {data['table_sha256'][:12]})"
    )


def diff_text(data: Mapping[str, Any]) -> str:
    """`falbudget pricing diff` for people: both tables, each endpoint, then a summary line."""
    lines = [_table_line("old", data["old"]), _table_line("new", data["new"])]
    if data["at"] is not None:
        lines.append(f"at:  {data['at']} (UTC)")
    for endpoint in data["endpoints"]:
        lines.append("")
        lines.extend(_endpoint_lines(endpoint))
    summary = data["summary"]
    lines.append("")
    lines.append(
        f"summary: {summary['changed']} changed, {summary['added']} added,"
        f" {summary['removed']} removed, {summary['unchanged']} unchanged;"
        f" grid prices {summary['up']} up, {summary['down']} down"
    )
    return "\n".join(lines)


def rise_message(data: Mapping[str, Any]) -> str:
    """The stderr line when prices rise (exit 1)."""
    summary = data["summary"]
    names = [e["endpoint"] for e in data["endpoints"] if any(p["grid"]["up"] for p in e["periods"])]
    periods = sum(1 for e in data["endpoints"] for p in e["periods"] if p["grid"]["up"])
    over = f" (over {periods} price periods)" if periods > len(names) else ""
    return f"prices rise: {plural(summary['up'], 'grid point')} up{over}, in {', '.join(names)}"


# --- pricing validate: dated versions ----------------------------------------------------------


def versions_data(table: PriceTable) -> list[dict[str, Any]]:
    """Each dated version of each endpoint that has them, with its price range: what `pricing
    validate` adds to its summary (nothing for a table without dated versions)."""

    rows = []
    for name, endpoint in table.endpoints.items():
        current = endpoint.version_at() if endpoint.versions and _in_effect(endpoint) else None
        for version in endpoint.versions:
            rows.append(
                {
                    "endpoint": name,
                    "effective_from": version.effective_from,
                    "current": version is current,
                    **range_data(version.price_range),
                }
            )
    return rows


def _in_effect(endpoint: PricedEndpoint) -> bool:
    from falbudget.errors import NoPriceInEffect

    try:
        endpoint.version_at()
    except NoPriceInEffect:
        return False
    return True


def versions_text(rows: Sequence[Mapping[str, Any]], currency: str) -> str:
    """The dated versions as lines under `pricing validate`'s summary ('' when there are none)."""
    if not rows:
        return ""
    width = max(len(row["endpoint"]) for row in rows)
    lines = ["dated versions (the ranges above are today's)"]
    for row in rows:
        prices = range_text(row, currency)
        now = "  (now)" if row["current"] else ""
        lines.append(f"  {row['endpoint']:<{width}}  from {row['effective_from']}  {prices}{now}")
    return "\n".join(lines)
