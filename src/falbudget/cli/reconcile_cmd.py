"""`falbudget reconcile`: the ledger against fal's own billing records, and --apply.

The work is in ``falbudget.reconcile``; the renderers here are pure (reconciliation in, text out).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from falbudget import clock
from falbudget.cli.budget_cmd import guard_from_args
from falbudget.cli.common import (
    EXIT_FOUND,
    EXIT_OK,
    Outcome,
    Subparsers,
    UsageError,
    add_guard_options,
)
from falbudget.cli.ledger_cmd import adjustment_data
from falbudget.cli.render import minute, plural, signed_usd, tabulate_text, to_json
from falbudget.money import format_usd, from_micros

if TYPE_CHECKING:  # pragma: no cover
    from falbudget.reconcile import BillingRecords, Kind, Line, Reconciliation

RECONCILE_FORMATS = ("table", "json", "csv")
LABELS: dict[Kind, str] = {
    "matched": "matched",
    "different_amount": "different amount",
    "billed_not_in_ledger": "billed but not in the ledger",
    "held_not_billed": "held but never billed",
}

DESCRIPTION = """\
Compare the ledger with what fal billed, request by request (matched by fal's request id), from
an export file (JSON, JSON Lines or CSV with fal's billing-events fields) or from fal's Platform
API (--from-api, with the admin key in FAL_KEY). Four classes: matched; different amount; billed
but not in the ledger; held but never billed (holds reserved and closed inside the range the
records cover). --apply corrects the ledger with an audit row for each change: a different
amount becomes what fal billed, a hold fal never billed becomes 0 (once it closed more than
--grace hours before the end of the records). It refuses to zero holds when the records match
no hold of the range, or fewer than it would zero (an empty, partial or wrong export looks like
that): --allow-zeroing overrides. Running it again changes nothing."""

EPILOG = """\
examples:
  falbudget reconcile billing-events.json --config falbudget.yaml
  falbudget reconcile billing.csv --ledger sqlite:///spend.db --since 2026-11-01 --until 2026-12-01
  FAL_KEY=... falbudget reconcile --from-api --since 2026-11-01 --until 2026-12-01 --apply

exit codes: 0 everything matched, 1 discrepancies found (also when --apply corrected them),
2 bad input, an unreadable file, --apply refused (nothing changed), or fal's API or the ledger
failed
docs: docs/reconcile.md"""


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "reconcile",
        help="compare the ledger with fal's billing records; --apply corrects it",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help="billing records exported from fal: .json (the API's answer or a list of records),"
        " .jsonl (one record per line) or .csv (a header row of fal's field names)",
    )
    parser.add_argument(
        "--from-api",
        action="store_true",
        help="fetch the records from fal's Platform API instead (needs --since; key in FAL_KEY)",
    )
    parser.add_argument(
        "--input-format",
        choices=("json", "jsonl", "csv"),
        help="the FILE's format when its name does not say (.json, .jsonl, .csv)",
    )
    parser.add_argument(
        "--since",
        metavar="DATE",
        help="start of the range the records cover, included (ISO date or time, UTC when no"
        " offset); for a FILE default: the earliest record",
    )
    parser.add_argument(
        "--until",
        metavar="DATE",
        help="end of the range, excluded; default: now with --from-api, the latest record for"
        " a FILE",
    )
    parser.add_argument(
        "--endpoint",
        action="append",
        metavar="ENDPOINT",
        help="only this endpoint's holds, and billed requests without a hold (repeat for"
        " several); records are matched to holds by request id whatever their endpoint",
    )
    add_guard_options(parser)
    parser.add_argument(
        "--apply",
        action="store_true",
        help="correct the ledger: each change is an adjustment with an audit row",
    )
    parser.add_argument(
        "--allow-zeroing",
        action="store_true",
        help="with --apply: zero holds fal never billed even when the records match no hold of"
        " the range, or fewer holds than would be zeroed",
    )
    parser.add_argument(
        "--grace",
        metavar="HOURS",
        default="24",
        help="a hold closed less than HOURS before the end of the range (or now) is not zeroed"
        " yet: fal may not have billed it (default 24, at most 8784: 366 days)",
    )
    parser.add_argument(
        "--now",
        metavar="TIME",
        help="the current time for the grace period and the audit rows (default: the clock)",
    )
    parser.add_argument(
        "--format",
        choices=RECONCILE_FORMATS,
        default="table",
        help="table (default): the discrepancies; json (one document) and csv: every request",
    )
    parser.set_defaults(func=run_reconcile)


def _moment(text: str | None, option: str) -> float | None:
    from falbudget.reconcile import parse_time

    return None if text is None else parse_time(text, name=option)


def _grace_seconds(text: str) -> float:
    from falbudget.reconcile import MAX_GRACE_S

    limit = int(MAX_GRACE_S // 3600)
    try:
        hours = Decimal(text.strip())
    except InvalidOperation:
        hours = Decimal("NaN")
    if not hours.is_finite() or not 0 <= hours <= limit:  # compared before any product
        raise UsageError(
            f"--grace={text!r} is not allowed: a number of hours from 0 to {limit}"
            " (366 days) such as 24"
        )
    return float(hours * 3600)


def _billing(args: argparse.Namespace, now: float) -> BillingRecords:
    from falbudget import reconcile as rc

    since, until = _moment(args.since, "--since"), _moment(args.until, "--until")
    if since is not None and until is not None and until <= since:
        raise UsageError("the range is empty: --until must be after --since")
    if args.from_api:
        if args.file is not None:
            raise UsageError("give a FILE or --from-api, not both")
        if args.input_format is not None:
            raise UsageError("--input-format describes a FILE; --from-api reads fal's API")
        if since is None:
            raise UsageError("--from-api needs --since DATE (and --until, default now)")
        key = rc.api_key_from_env()
        # every endpoint's records: --endpoint narrows the holds, never the records (a request
        # fal bills under another endpoint name must still match its hold)
        return rc.fetch_billing_events(
            key,
            dt.datetime.fromtimestamp(since, tz=dt.UTC),
            dt.datetime.fromtimestamp(now if until is None else until, tz=dt.UTC),
        )
    if args.file is None:
        raise UsageError("give a FILE of billing records, or --from-api --since DATE")
    records = rc.load_billing_file(args.file, args.input_format)
    return rc.BillingRecords(tuple(records), args.file, since, until)


def run_reconcile(args: argparse.Namespace) -> Outcome:
    from falbudget import reconcile as rc

    grace = _grace_seconds(args.grace)
    now = _moment(args.now, "--now")
    now = clock.now() if now is None else now
    billing = _billing(args, now)
    guard = guard_from_args(args, read_only=not args.apply)
    try:
        result = rc.reconcile(
            guard.ledger, billing, now=now, grace_s=grace, endpoints=args.endpoint or ()
        )
        if args.apply:
            try:
                result = rc.apply_corrections(
                    guard.ledger, result, allow_zeroing=args.allow_zeroing
                )
            except rc.ZeroingRefused:
                raise UsageError(refusal_message(result)) from None
    finally:
        guard.close()
    if args.format == "json":
        text = to_json(reconcile_data(result))
    elif args.format == "csv":
        text = reconcile_csv(result)
    else:
        text = reconcile_table(result)
    if result.discrepancies == 0:
        return Outcome(text, EXIT_OK)
    return Outcome(text, EXIT_FOUND, summary_message(result))


# --- renderers: pure ---------------------------------------------------------------------------


def _iso(epoch: float | None) -> str | None:
    from falbudget.reconcile import iso

    return None if epoch is None else iso(epoch)


def _usd(micros: int | None) -> str | None:
    return None if micros is None else format_usd(from_micros(micros))


def _hours(seconds: float) -> str:
    hours = Decimal(repr(seconds)) / 3600
    return format(hours.normalize(), "f") if hours else "0"


def refusal_message(result: Reconciliation) -> str:
    """The one line of --apply refusing to zero holds on thin evidence."""
    return (
        f"--apply refused, nothing was changed: {result.zeroing_refused}. An empty, partial or"
        " wrong export, another team's API key or a range the records do not cover looks like"
        " this; check the records, or give --allow-zeroing to zero them anyway"
    )


def summary_message(result: Reconciliation) -> str:
    """The stderr line of exit 1: how many discrepancies, and what --apply did or would do."""
    found = result.discrepancies
    text = f"{found} discrepanc{'y' if found == 1 else 'ies'} with fal's billing records"
    fixes = result.corrections
    if result.applied:
        written = sum(1 for line in fixes if line.adjustment is not None)
        text += f"; --apply corrected {written}"
    elif fixes and result.zeroing_refused is not None and result.zeroing:
        text += f"; --apply refuses without --allow-zeroing (it would zero {result.zeroing})"
    elif fixes:
        text += f"; --apply would correct {len(fixes)}"
    left = found - len(fixes)
    if left:
        text += f"; {left} need{'s' if left == 1 else ''} a person (see the notes)"
    return text


def _action(line: Line, applied: bool, refused: bool = False) -> str:
    """What --apply does or did with the line, in a few words (``refused``: zeroing needs
    --allow-zeroing)."""
    target = _usd(line.target)
    if line.pending:
        return "none yet: within the grace period"
    if line.stale:
        return "none: the hold changed meanwhile"
    if line.target is not None:
        if not applied:
            if refused and line.kind == "held_not_billed":
                return f"--apply --allow-zeroing sets {target}"
            return f"--apply sets {target}"
        if line.adjustment is not None:
            return f"set to {target} (adjustment {line.adjustment.id})"
        return f"none: already {target}"
    if line.kind == "matched":
        return ""
    if not line.holds:
        return "none: no hold"
    if len(line.holds) > 1:
        return f"none: {len(line.holds)} holds share it"
    return f"none: hold still {line.holds[0].state}"


def line_data(line: Line, applied: bool, refused: bool = False) -> dict[str, Any]:
    """One request as JSON-ready data: money as decimal strings, times ISO 8601 UTC."""
    first = line.holds[0] if line.holds else None
    difference = (
        None if line.billed_micros is None else signed_usd(line.billed_micros - line.counted)
    )
    if line.kind == "held_not_billed":
        difference = signed_usd(-line.counted)
    adjustment = line.adjustment
    return {
        "class": line.kind,
        "request_id": line.request_id,
        "endpoint": line.endpoint,
        "hold_ids": [h.id for h in line.holds],
        "hold_state": None if first is None else first.state,
        "created_at": None if first is None else _iso(first.created_at),
        "ledger": _usd(line.counted),
        "billed": _usd(line.billed_micros),
        "billed_exact": None if line.billed is None else format_usd(line.billed),
        "difference": difference,
        "records": [r.where for r in line.records],
        "target": _usd(line.target),
        "pending": line.pending,
        "action": _action(line, applied, refused),
        "note": line.note,
        "adjustment": None if adjustment is None else adjustment_data(adjustment),
    }


def reconcile_data(result: Reconciliation) -> dict[str, Any]:
    """The whole reconciliation as JSON-ready data (every request, matched ones too)."""
    return {
        "currency": "USD",
        "origin": result.origin,
        "ledger": result.ledger_url,
        "since": _iso(result.since),
        "until": _iso(result.until),
        "now": _iso(result.now),
        "grace_hours": _hours(result.grace_s),
        "endpoints": list(result.endpoints),
        "records": result.records,
        "duplicates": result.duplicates,
        "requests": sum(1 for line in result.lines if line.records),
        "billed": format_usd(result.billed_total),
        "applied": result.applied,
        "zeroing_refused": result.zeroing_refused,
        "counts": {
            **{kind: result.count(kind) for kind in LABELS},
            "pending": result.pending,
            "discrepancies": result.discrepancies,
            "corrections": len(result.corrections),
        },
        "lines": [line_data(line, result.applied, _refused(result)) for line in result.lines],
    }


_CSV_COLUMNS = (
    "class",
    "request_id",
    "endpoint",
    "hold_id",
    "hold_state",
    "created_at",
    "ledger",
    "billed",
    "difference",
    "target",
    "pending",
    "adjustment_id",
    "action",
    "note",
)


def reconcile_csv(result: Reconciliation) -> str:
    """One row per request (matched ones too); several holds sharing a request id are joined
    with spaces in hold_id."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for line in result.lines:
        data = line_data(line, result.applied, _refused(result))
        adjustment = data["adjustment"]
        row = {
            **data,
            "hold_id": " ".join(data["hold_ids"]),
            "pending": "yes" if line.pending else "",
            "adjustment_id": "" if adjustment is None else adjustment["id"],
        }
        writer.writerow(["" if row[c] is None else row[c] for c in _CSV_COLUMNS])
    return out.getvalue().rstrip("\n")


def _refused(result: Reconciliation) -> bool:
    return result.zeroing_refused is not None and not result.applied


def _when(epoch: float | None) -> str:
    text = _iso(epoch)
    return "?" if text is None else minute(text)


def reconcile_table(result: Reconciliation) -> str:
    """For people: what was compared, the count of each class, then a table of the requests
    that did not match (matched ones are only counted), then what --apply did or would do."""

    requests = sum(1 for line in result.lines if line.records)
    head = [
        f"{plural(result.records, 'billing record')} ({plural(requests, 'request')},"
        f" {format_usd(result.billed_total)} USD billed)"
        f" from {result.origin}",
    ]
    if result.duplicates:
        head.append(
            f"{plural(result.duplicates, 'more record')} repeated"
            " another exactly and counted once (see the notes)"
        )
    if result.since is not None and result.until is not None:
        cutoff = _when(min(result.until, result.now) - result.grace_s)
        head.append(
            f"range {_when(result.since)} to {_when(result.until)} UTC; grace"
            f" {_hours(result.grace_s)} h (holds closed after {cutoff} are not zeroed yet)"
        )
    else:
        head.append("no range (no records, no --since/--until): held but never billed not checked")
    counts = ", ".join(f"{LABELS[kind]} {result.count(kind)}" for kind in LABELS)
    if result.pending:
        counts += f" ({result.pending} within the grace period)"
    head.append(counts)
    rows = [
        [
            LABELS[line.kind],
            line.request_id,
            line.holds[0].id[:8] if len(line.holds) == 1 else "" if not line.holds else "several",
            line.holds[0].state if line.holds else "",
            _when(line.holds[0].created_at) if line.holds else "",
            _usd(line.counted) if line.holds else "",
            _usd(line.billed_micros) or "",
            _action(line, result.applied, _refused(result)),
        ]
        for line in result.lines
        if line.kind != "matched"
    ]
    parts = ["\n".join(head)]
    if rows:
        headers = ["class", "request_id", "hold", "state", "created (UTC)", "ledger", "billed"]
        align = ["left", "left", "left", "left", "left", "right", "right", "left"]
        parts.append(tabulate_text(rows, [*headers, "action"], align))
    else:
        parts.append("every request matched")
    fixes = result.corrections
    if result.applied:
        written = [line for line in fixes if line.adjustment is not None]
        if written:
            parts.append(
                f"applied {plural(len(written), 'correction')}"
                + (
                    f" ({len(fixes) - len(written)} already in place)"
                    if len(fixes) > len(written)
                    else ""
                )
                + "; the audit trail: falbudget ledger adjustments"
            )
        else:
            parts.append("nothing to correct")
        stale = sum(1 for line in result.lines if line.stale)
        if stale:
            parts[-1] += (
                f"; {stale} hold{' was' if stale == 1 else 's were'} left alone: changed by"
                " someone else after they were read (reconcile again)"
            )
    elif fixes:
        text = (
            f"--apply would correct {plural(len(fixes), 'hold')}"
            " (each change recorded as an adjustment)"
        )
        if result.zeroing_refused is not None and result.zeroing:
            text = (
                f"--apply refuses to run: {result.zeroing_refused}; with --allow-zeroing it"
                + text.removeprefix("--apply")
            )
        parts.append(text)
    return "\n\n".join(parts)
