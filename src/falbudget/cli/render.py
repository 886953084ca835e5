"""Pure renderers: data in, text out. Nothing here prints, reads files or looks at the environment.

Text has no trailing newline; ``app.main`` adds it. Table renderers import tabulate when called,
so the JSON paths never load it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any

from falbudget.money import format_usd

if TYPE_CHECKING:  # pragma: no cover
    from falbudget.guard.core import CapStatus, Decision
    from falbudget.ledger.base import Hold as LedgerHold
    from falbudget.pricing.engine import LineItem, PriceTable, Quote

_MICRO = Decimal("0.000001")


def tabulate_text(
    rows: Iterable[Sequence[Any]], headers: Sequence[str], colalign: Sequence[str]
) -> str:
    """A table in tabulate's plain format, every cell kept as written."""
    from tabulate import tabulate

    # disable_numparse: "0.80" must stay "0.80", never become 0.8
    return tabulate(
        list(rows),
        headers=list(headers),
        colalign=list(colalign),
        disable_numparse=True,
    )


def show_value(value: Any) -> str:
    """A value as a person reads it: strings bare, everything else as JSON (true, null, 144)."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def to_json(data: Any) -> str:
    """One JSON document on one line (money is already a decimal string in ``data``)."""
    return json.dumps(data)


# --- quote -------------------------------------------------------------------------------------


def _subtotals(items: Sequence[LineItem]) -> list[Decimal]:
    """The running total after each line item (amounts add, factors multiply)."""
    running = Decimal(0)
    result = []
    for item in items:
        if item.factor is not None:
            running *= item.factor
        elif item.amount is not None:
            running += item.amount
        result.append(running)
    return result


def _money(amount: Decimal) -> str:
    return format_usd(amount.quantize(_MICRO, rounding=ROUND_CEILING))


def quote_table(quote: Quote) -> str:
    """A quote as a table: each rule with the input it read, its effect and the running total."""
    rows: list[list[str]] = []
    for item, subtotal in zip(quote.line_items, _subtotals(quote.line_items), strict=True):
        rows.append(
            [
                item.rule,
                item.input or "",
                ""
                if item.input is None
                else f"{item.value} characters"
                if item.kind == "characters"
                else show_value(item.value),
                item.effect(),
                _money(subtotal),
            ]
        )
    rows.append(["total", "", "", "", f"{format_usd(quote.total)} {quote.currency}"])
    table = tabulate_text(
        rows,
        headers=["rule", "input", "value", "effect", "subtotal"],
        colalign=["left", "left", "left", "right", "right"],
    )
    version = quote.table_version
    if quote.effective_from is not None:
        version += f", prices from {quote.effective_from}"
    text = f"{quote.endpoint} (price table {version})\n{table}"
    if quote.is_ceiling:
        text += (
            f"\nthe total is a ceiling: the price is known only after the call; a guard holds"
            f" {format_usd(quote.total)} {quote.currency} until fal's bill says what it cost"
        )
    return text


def quote_json(quote: Quote, budget: Mapping[str, Any] | None = None) -> str:
    """``Quote.to_dict()`` as one line of JSON; with --config also a "budget" key."""
    data = quote.to_dict()
    if budget is not None:
        data["budget"] = budget
    return to_json(data)


def decision_data(decision: Decision | None) -> dict[str, Any] | None:
    """Whether a request fits the caps now, and each cap's figures, as JSON-ready data."""
    if decision is None:
        return None
    return {
        "fits": decision.allowed,
        "reason": decision.reason or None,
        "caps": [
            {
                "cap": status.cap.label(status.bucket),
                "bucket": status.bucket,
                "spent": format_usd(status.spent),
                "held": format_usd(status.held),
                "remaining": format_usd(status.remaining),
            }
            for status in decision.caps
        ],
    }


def decision_text(data: Mapping[str, Any] | None) -> str:
    if data is None:
        return ""
    if not data["fits"]:
        verdict = f"fits the caps now: NO ({data['reason']})"
    elif not data["caps"]:
        verdict = "fits the caps now: yes (no cap applies)"
    else:
        verdict = "fits the caps now: yes"
    lines = [verdict]
    lines.extend(
        f"  {c['cap']}: remaining {c['remaining']} (spent {c['spent']}, held {c['held']})"
        for c in data["caps"]
    )
    return "\n".join(lines)


def priced_inputs(quote: Quote) -> str:
    """The inputs the rules read, as KEY=VALUE: 'num_frames=144 resolution=480p'."""
    return " ".join(item.shown() for item in quote.line_items if item.input)


def batch_total(quotes: Sequence[Quote]) -> Decimal:
    return sum((q.total for q in quotes), Decimal(0))


def batch_table(lines: Sequence[int], quotes: Sequence[Quote]) -> str:
    """One row per request (its input line, endpoint, priced inputs and total), then the total."""
    rows = [
        [str(line), quote.endpoint, priced_inputs(quote), format_usd(quote.total)]
        for line, quote in zip(lines, quotes, strict=True)
    ]
    currency = quotes[0].currency if quotes else "USD"
    count = len(quotes)
    rows.append(
        [
            "",
            f"total ({plural(count, 'request')})",
            "",
            f"{format_usd(batch_total(quotes))} {currency}",
        ]
    )
    return tabulate_text(
        rows,
        headers=["line", "endpoint", "priced inputs", "total"],
        colalign=["right", "left", "left", "right"],
    )


def batch_json(lines: Sequence[int], quotes: Sequence[Quote]) -> str:
    """JSON Lines: each quote's ``to_dict()`` with its input ``line`` first, then one summary
    line ``{"batch_total": ..., "currency": ..., "count": ...}``."""
    out = [
        to_json({"line": line, **quote.to_dict()})
        for line, quote in zip(lines, quotes, strict=True)
    ]
    currency = quotes[0].currency if quotes else "USD"
    out.append(
        to_json(
            {
                "batch_total": format_usd(batch_total(quotes)),
                "currency": currency,
                "count": len(quotes),
            }
        )
    )
    return "\n".join(out)


# --- endpoints and tables ----------------------------------------------------------------------


def pairs_text(arguments: Mapping[str, Any]) -> str:
    """Arguments as KEY=VALUE words: 'num_frames=144 resolution=480p'; a text of more than 40
    characters as its length ('text=<1001 characters>')."""
    return " ".join(
        f"{key}=<{len(value)} characters>"
        if isinstance(value, str) and len(value) > 40
        else f"{key}={show_value(value)}"
        for key, value in arguments.items()
    )


def minute(iso: str) -> str:
    """An ISO time to the minute, for tables: '2026-11-24T18:00:00+00:00' -> '2026-11-24 18:00'."""
    return iso[:16].replace("T", " ")


def signed_usd(micros: int) -> str:
    """Integer micro-USD as a signed difference: '+0.20', '-0.10', '0.00'."""
    from falbudget.money import from_micros

    text = format_usd(from_micros(abs(micros)))
    return f"-{text}" if micros < 0 else f"+{text}" if micros > 0 else text


def plural(count: int, word: str) -> str:
    """'1 request', '2 requests'."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def range_data(find: Callable[[], tuple[Decimal, Decimal]]) -> dict[str, Any]:
    """A price range as JSON-ready fields: ``price_range`` ({"min", "max"} as decimal strings,
    or None) and, when it is None, ``price_range_note`` saying why (no bounded set of values for
    a priced input; no prices in effect yet)."""
    try:
        low, high = find()
    except ValueError as exc:  # NoPriceInEffect is a ValueError too
        return {"price_range": None, "price_range_note": _range_reason(exc)}
    return {"price_range": {"min": format_usd(low), "max": format_usd(high)}}


def _range_reason(exc: ValueError) -> str:
    from falbudget.errors import NoPriceInEffect

    if isinstance(exc, NoPriceInEffect):
        return f"no prices in effect yet: {exc}"
    from falbudget.errors import PriceTableError

    if isinstance(exc, PriceTableError):
        return "priced only after the call; needs a ceiling"
    if "priced by its characters and may be of any length" in str(exc):
        return "priced by the characters of a text of any length"
    return "a priced input has no bounded set of values"


def endpoints_data(table: PriceTable) -> dict[str, Any]:
    """Everything `falbudget endpoints` shows, as JSON-ready data (money as decimal strings)."""
    endpoints = []
    for name, endpoint in table.endpoints.items():
        priced = set(endpoint.priced_inputs)
        parameters = [
            {
                "name": spec.name,
                "type": spec.type,
                "allowed": spec.allowed,
                "enum": None if spec.enum is None else list(spec.enum),
                "minimum": spec.minimum,
                "maximum": spec.maximum,
                "default": spec.default,
                "required": spec.required,
                "nullable": spec.nullable,
                "priced": spec.name in priced,
                "description": spec.description,
            }
            for spec in endpoint.inputs.values()
        ]
        endpoints.append(
            {
                "name": name,
                "title": endpoint.title,
                "source_url": endpoint.source_url,
                "price_read_on": endpoint.price_read_on,
                **range_data(endpoint.price_range),
                **({"table": table.source_of(name)} if table.priced_by else {}),
                "parameters": parameters,
            }
        )
    return {
        "table_version": table.table_version,
        "effective_date": table.effective_date,
        "currency": table.currency,
        "table_sha256": table.sha256,
        "endpoints": endpoints,
    }


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def range_text(data: Mapping[str, Any], currency: str) -> str:
    found = data["price_range"]
    if found is None:
        return f"not listed ({data['price_range_note']})"
    return f"{found['min']} - {found['max']} {currency}"


def endpoints_table(data: Mapping[str, Any]) -> str:
    """`falbudget endpoints` for people: per endpoint a heading and a table of its parameters."""
    currency = data["currency"]
    count = len(data["endpoints"])
    parts = [
        f"price table {data['table_version']} (effective {data['effective_date']}),"
        f" {plural(count, 'endpoint')}"
    ]
    for endpoint in data["endpoints"]:
        title = f": {endpoint['title']}" if endpoint["title"] else ""
        rows = [
            [
                p["name"],
                p["type"],
                p["allowed"],
                "" if p["default"] is None else show_value(p["default"]),
                _yes(p["required"]),
                _yes(p["priced"]),
            ]
            for p in endpoint["parameters"]
        ]
        table = tabulate_text(
            rows,
            headers=["parameter", "type", "allowed", "default", "required", "priced"],
            colalign=["left"] * 6,
        )
        parts.append(
            f"{endpoint['name']}{title}\n"
            f"price {range_text(endpoint, currency)}\n"
            f"source {endpoint['source_url']} (read on {endpoint['price_read_on']})\n"
            + (f"priced by {endpoint['table']}\n" if "table" in endpoint else "")
            + f"{table}"
        )
    return "\n\n".join(parts)


def table_summary(table: PriceTable) -> dict[str, Any]:
    """What `falbudget pricing validate` reports about a table that loaded."""
    data: dict[str, Any] = {
        "ok": True,
        "source": table.source,
        "table_version": table.table_version,
        "effective_date": table.effective_date,
        "currency": table.currency,
        "table_sha256": table.sha256,
        "endpoints": [
            {"name": name, **range_data(endpoint.price_range)}
            for name, endpoint in table.endpoints.items()
        ],
    }
    missing = sorted(n for n, e in table.endpoints.items() if e.needs_ceiling)
    if missing:  # only then: the JSON of a table without such endpoints is as it was
        data["needs_ceiling"] = missing
    return data


def summary_text(data: Mapping[str, Any]) -> str:
    currency = data["currency"]
    lines = [
        f"ok: {data['source']}",
        f"table version   {data['table_version']} (effective {data['effective_date']})",
        f"sha256          {data['table_sha256']}",
        f"endpoints       {len(data['endpoints'])}",
    ]
    width = max((len(e["name"]) for e in data["endpoints"]), default=0)
    lines.extend(f"  {e['name']:<{width}}  {range_text(e, currency)}" for e in data["endpoints"])
    return "\n".join(lines)


# --- budget ------------------------------------------------------------------------------------


def _percent(used: Decimal, limit: Decimal) -> str:
    if limit == 0:
        return "100%" if used > 0 else "0%"
    return f"{(used * 100 / limit).quantize(Decimal('0.1'))}%"


def overrun_line(count: int, amount: str, currency: str) -> str:
    """A line of its own saying that ``count`` holds counted ``amount`` more as spent than was
    held (fal billed more than quoted), for ``budget status`` and ``report``; '' when none."""
    if not count:
        return ""
    return f"\noverruns: {plural(count, 'request')} counted {amount} {currency} more than quoted"


_WAITING = {
    "total": "no values yet",
    "day": "none today",
    "week": "none this week",
    "month": "none this month",
}
"""What a per-value cap with no bucket in its current window says: a daily per-user cap that
users spent from yesterday has values, just none today."""


def status_data(
    statuses: Sequence[CapStatus],
    global_spent: Decimal,
    global_held: Decimal,
    overruns: Sequence[LedgerHold] = (),
) -> dict[str, Any]:
    """The figures of ``falbudget budget status`` as JSON-ready data (money as strings);
    ``overruns`` the holds that count more as spent than was held, all time."""
    from falbudget.money import from_micros

    caps = []
    for status in statuses:
        cap = status.cap
        scope = status.bucket.partition("|")[0]
        # a per-value cap no request has charged in this window: its scope is the bare tag
        waiting = {"note": _WAITING[cap.window]} if scope == cap.tag else {}
        caps.append(
            {
                "cap": cap.label(status.bucket),
                "scope": scope,
                "window": cap.window,
                "window_key": status.bucket.partition("|")[2],
                "tz": cap.tz,
                "limit": format_usd(cap.limit),
                "spent": format_usd(status.spent),
                "held": format_usd(status.held),
                "remaining": format_usd(status.remaining),
                "used": _percent(status.spent + status.held, cap.limit),
                **waiting,
            }
        )
    return {
        "caps": caps,
        "global": {
            "spent": format_usd(global_spent),
            "held": format_usd(global_held),
            "overruns": len(overruns),
            "overrun": format_usd(from_micros(sum(h.overrun for h in overruns))),
        },
        "currency": "USD",
    }


def cents(amount: str) -> str:
    """A money string of the JSON data ('5.171429') as a table shows it: to the cent
    ('5.17', half up). JSON and CSV keep every micro-USD."""
    from decimal import ROUND_HALF_UP, Decimal

    return str(Decimal(amount).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def window_words(window: str, window_key: str, tz: str) -> str:
    """A cap's window as people say it: 'day 2026-11-24', 'week of 2026-11-23', 'month
    2026-11', 'total'; the zone follows when it is not UTC ('day 2026-11-24 (Europe/Paris)')."""
    if window == "total":
        return "total"
    period = window_key.rpartition(":")[2]
    text = f"week of {period}" if window == "week" else f"{window} {period}"
    return text if tz == "UTC" else f"{text} ({tz})"


def status_table(data: Mapping[str, Any]) -> str:
    """Each cap's figures, money to the cent, the window in plain words."""
    rows = [
        [
            f"{c['scope']} ({c['note']})" if c.get("note") else c["scope"],
            window_words(c["window"], c["window_key"], c["tz"]),
            *(cents(c[k]) for k in ("limit", "spent", "held", "remaining")),
            c["used"],
        ]
        for c in data["caps"]
    ]
    summary = (
        f"all time, all scopes: spent {cents(data['global']['spent'])} {data['currency']},"
        f" held {cents(data['global']['held'])}"
        + overrun_line(data["global"]["overruns"], data["global"]["overrun"], data["currency"])
    )
    if not rows:
        return summary + "\n(no caps configured: give --config PATH or set FALBUDGET_CONFIG)"
    table = tabulate_text(
        rows,
        ["scope", "window", "limit", "spent", "held", "remaining", "used"],
        ["left", "left", "right", "right", "right", "right", "right"],
    )
    return table + "\n" + summary


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC).isoformat(timespec="seconds")


def history_rows(holds: Sequence[LedgerHold]) -> list[dict[str, Any]]:
    """Holds as JSON-ready rows (money as decimal strings, times in ISO 8601 UTC)."""
    from falbudget.money import from_micros

    return [
        {
            "id": h.id,
            "endpoint": h.endpoint,
            "amount": format_usd(from_micros(h.amount)),
            "state": h.state,
            "settled_amount": (
                None if h.settled_amount is None else format_usd(from_micros(h.settled_amount))
            ),
            # what reconcile --apply corrected it to (the ledger counts this), else None
            "adjusted_amount": (
                None if h.adjusted_amount is None else format_usd(from_micros(h.adjusted_amount))
            ),
            "request_id": h.request_id,
            "created_at": _iso(h.created_at),
            "updated_at": _iso(h.updated_at),
            "expires_at": _iso(h.expires_at),
            "tags": dict(h.tags),
            "idempotency_key": h.idempotency_key,
            "table_version": h.table_version,
        }
        for h in holds
    ]


_HISTORY_COLUMNS = (
    "created_at",
    "endpoint",
    "amount",
    "state",
    "settled_amount",
    "adjusted_amount",
    "request_id",
)


def history_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "(no holds)"
    return tabulate_text(
        [[*(row[c] or "" for c in _HISTORY_COLUMNS), _tags_text(row["tags"])] for row in rows],
        [*_HISTORY_COLUMNS, "tags"],
        ["left", "left", "right", "left", "right", "right", "left", "left"],
    )


def _tags_text(tags: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(tags.items()) if k != "endpoint")


_CSV_COLUMNS = ("id", *_HISTORY_COLUMNS, "expires_at", "idempotency_key", "table_version", "tags")


def _csv_line(cells: Sequence[Any]) -> str:
    import csv
    import io

    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(cells)
    return out.getvalue()[:-1]


def history_csv_header() -> str:
    """The first line of the history as CSV."""
    return _csv_line(_CSV_COLUMNS)


def history_csv_line(row: Mapping[str, Any]) -> str:
    """One row of :func:`history_rows` as a line of CSV (a tag's value may hold a newline:
    the line is then quoted over two lines of text, as CSV allows)."""
    return _csv_line(
        [_tags_text(row["tags"]) if c == "tags" else (row[c] or "") for c in _CSV_COLUMNS]
    )


def history_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join([history_csv_header(), *(history_csv_line(row) for row in rows)])
