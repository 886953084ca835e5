"""Reconciliation: the ledger's holds against fal's own per-request billing records.

fal's Platform API lists what it billed, one record per request
(``GET https://api.fal.ai/v1/models/billing-events``, documented at
https://fal.ai/docs/platform-apis/v1/models/billing-events). This module reads such records from
an export file (JSON, JSON Lines or CSV) or fetches them from the API (standard library only),
matches them to the ledger's holds by fal's request id and sorts every request into one of four
classes (docs/reconcile.md says the same for people):

* **matched**: the ledger counts what fal billed;
* **different_amount**: it counts something else (a quote that differed from the bill, a job the
  guard released although fal billed it, or several holds sharing one request id);
* **billed_not_in_ledger**: fal billed a request id no hold carries (a request made outside the
  guard, or one whose process died before the guard learnt its request id);
* **held_not_billed**: a hold counted as spent whose request fal never billed, among the holds
  reserved and closed inside the range the records cover.

Holds are matched by request id against every record (``endpoints`` narrows the holds and the
billed-but-not-in-ledger lines, never the records), and a record repeated exactly (in request id,
endpoint, time, cost and units) counts once; different records of one request are summed.

:func:`apply_corrections` turns each correctable line into a ledger adjustment
(:meth:`falbudget.ledger.base.Ledger.adjust`): the hold then counts what fal billed (0 when fal
billed nothing), every bucket it charged moves by the difference, and an audit row says why. It
checks every correction before the first adjustment, refuses to zero holds on thin evidence (no
record matched a hold of the range, or more holds would be zeroed than matched) unless told to,
and leaves a hold that changed since it was read. Money is ``Decimal`` USD as fal gives it,
turned into integer micro-USD rounding up, exactly (a fraction of a micro-USD counts as a whole
one, as quotes do): the ledger never counts less than fal billed.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    Context,
    Decimal,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from pathlib import Path
from typing import Any, Final, Literal

from falbudget import platform
from falbudget.errors import FalbudgetError, HoldNotFound, LedgerError
from falbudget.ledger._checks import MAX_MICROS
from falbudget.ledger.base import OPEN_STATES, Adjustment, Hold, Ledger
from falbudget.money import format_usd, from_micros, normalize, to_micros

DOCS_URL: Final = "https://fal.ai/docs/platform-apis/v1/models/billing-events"
DEFAULT_API_URL: Final = platform.DEFAULT_API_URL
API_URL_ENV: Final = platform.API_URL_ENV
"""Overrides the Platform API's base URL (tests point it at a local fake server)."""
KEY_ENV: Final = platform.KEY_ENV
EVENTS_PATH: Final = "/models/billing-events"
MAX_RANGE: Final = dt.timedelta(days=90)
"""fal caps one billing-events query at 90 days."""
PAGE_LIMIT: Final = 1000
"""Records asked for per page (fal allows up to 10000)."""
DEFAULT_TIMEOUT_S: Final = 30.0
"""The most one request to fal's API may take, answer body included."""
MAX_ANSWER_BYTES: Final = 16 * 1024 * 1024
"""The largest answer read from fal's API (a page of 1000 records is about 300 KB)."""
DEFAULT_GRACE_S: Final = 24 * 3600.0
"""A hold closed less than this before the end of the records (or now) is not zeroed: fal's
records may not show its request yet."""
MAX_GRACE_S: Final = 366 * 24 * 3600.0
"""The longest grace period (366 days): longer ones would only ever postpone."""
START_MARGIN_S: Final = 3600.0
"""Holds reserved in the first hour of the range are never zeroed: with the clocks of this
machine and fal's apart, their records may lie just before the range."""
NANO: Final = Decimal("0.000000001")
MAX_USD: Final = from_micros(MAX_MICROS)
"""The largest cost a record may give: the most a ledger counts (2**63 - 1 micro-USD)."""
MAX_NANO: Final = MAX_MICROS * 1000
"""The same in nano-USD."""
MAX_PLACES: Final = 40
"""The most decimal places a cost may have (trailing zeros aside); nano-USD need 9."""
_BIG_INT: Final = 40
"""A JSON integer of more digits is read as a Decimal, never int() (refused as too large)."""
_NUMBER: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
"""A decimal number as written in a file (no underscores, no NaN, no other digits)."""
_EXACT: Final = Context(
    prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[InvalidOperation, Inexact, Overflow]
)
"""Sums of costs are exact (a cost has at most 13 + MAX_PLACES digits)."""
_EARLIEST: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_LATEST: Final = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)

Kind = Literal["matched", "different_amount", "billed_not_in_ledger", "held_not_billed"]
KINDS: tuple[Kind, ...] = ("matched", "different_amount", "billed_not_in_ledger", "held_not_billed")
_ORDER: tuple[Kind, ...] = (
    "different_amount",
    "billed_not_in_ledger",
    "held_not_billed",
    "matched",
)
"""The order of the lines: discrepancies first."""
InputFormat = Literal["json", "jsonl", "csv"]
INPUT_FORMATS: tuple[InputFormat, ...] = ("json", "jsonl", "csv")
_SUFFIXES: dict[str, InputFormat] = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
}


class ReconcileError(FalbudgetError, ValueError):
    """Billing records that cannot be read: the message names the file, the record or line, the
    field, the value and what is allowed."""


class ZeroingRefused(ReconcileError):
    """--apply would zero holds on thin evidence (:attr:`Reconciliation.zeroing_refused` says
    why); nothing was changed. ``allow_zeroing=True`` (--allow-zeroing) zeroes them anyway."""


class BillingApiError(platform.PlatformApiError):
    """fal's billing API could not be asked or refused the request; ``status`` is the HTTP
    status (None when no answer came). Never carries the API key."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# --- billing records -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BillingRecord:
    """One billing event: fal's ``request_id``, ``endpoint_id``, ``timestamp`` (epoch s),
    ``cost`` in USD exactly as fal gave it, ``output_units`` when given, and where it was read
    (``billing.csv: line 4``)."""

    request_id: str
    endpoint: str | None
    timestamp: float
    cost: Decimal
    units: Decimal | None
    where: str


@dataclass(frozen=True)
class BillingRecords:
    """Records and what they cover: ``origin`` (the file as given, or the API and its range) and
    the range [since, until) of epoch seconds, None when unknown."""

    records: tuple[BillingRecord, ...]
    origin: str
    since: float | None = None
    until: float | None = None


def _bad(where: str, name: str, value: Any, allowed: str) -> ReconcileError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ReconcileError(f"{where}: {name}={shown} is not allowed: {allowed}")


def _missing(where: str, name: str, allowed: str) -> ReconcileError:
    return ReconcileError(f"{where}: {name} is missing: {allowed}")


_TIME_ALLOWED = (
    "an ISO 8601 date or time such as 2026-11-02 or 2026-11-02T10:30:00Z (UTC when no offset"
    " is given)"
)


def parse_time(text: object, *, name: str = "timestamp", where: str | None = None) -> float:
    """An ISO 8601 date or time as epoch seconds; without an offset it is UTC. ReconcileError
    names ``where`` (a record or line) when given."""
    try:
        if not isinstance(text, str):
            raise ValueError(text)
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        if where is not None:
            raise _bad(where, name, text, _TIME_ALLOWED) from None
        raise ReconcileError(f"{name}={text!r} is not allowed: {_TIME_ALLOWED}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    if not _EARLIEST <= moment < _LATEST:
        allowed = "a time from 1970 to 8999"
        if where is not None:
            raise _bad(where, name, text, allowed)
        raise ReconcileError(f"{name}={text!r} is not allowed: {allowed}")
    return moment.timestamp()


def iso(epoch: float) -> str:
    """'2026-11-02T10:30:00Z' (microseconds only when there are some)."""
    moment = dt.datetime.fromtimestamp(epoch, tz=dt.UTC)
    spec = "seconds" if moment.microsecond == 0 else "microseconds"
    return moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


_TOO_LARGE = f"at most {format_usd(MAX_USD)} USD, the most a ledger counts"


def _nano_usd(value: Any, where: str) -> Decimal:
    name = "cost_estimate_nano_usd"
    allowed = "an integer number of nano-USD >= 0 (1500000 is 0.0015 USD)"
    too_large = f"at most {MAX_NANO} nano-USD ({format_usd(MAX_USD)} USD, the most a ledger counts)"
    given = value  # as written, for the messages
    if isinstance(value, bool):
        raise _bad(where, name, value, allowed)
    if isinstance(value, str):
        text = value.strip()
        if not text.isascii() or not text.isdigit():
            raise _bad(where, name, value, allowed)
        if len(text.lstrip("0")) > len(str(MAX_NANO)):  # before int(): no 4300-digit limit
            raise _bad(where, name, value, too_large)
        value = int(text)
    if isinstance(value, Decimal) and value.is_finite() and value > MAX_NANO:
        raise _bad(where, name, value, too_large)  # a JSON integer of more than _BIG_INT digits
    if not isinstance(value, int) or value < 0:
        raise _bad(where, name, given, allowed)
    if value > MAX_NANO:
        raise _bad(where, name, given, too_large)
    return Decimal((0, Decimal(value).as_tuple().digits, -9))  # exact, unlike scaleb


def _decimal(
    value: Any,
    name: str,
    where: str,
    allowed: str = "a decimal amount of USD >= 0 such as 0.60",
    *,
    money: bool = True,
) -> Decimal:
    """A decimal number >= 0 as written (a string or a JSON number, never a float); for money
    (``money``) at most MAX_USD and MAX_PLACES decimal places, so that sums stay exact."""
    if isinstance(value, bool | float):
        raise _bad(where, name, value, allowed)
    if isinstance(value, str) and not _NUMBER.fullmatch(value.strip()):
        raise _bad(where, name, value, allowed)
    try:
        amount = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise _bad(where, name, value, allowed) from None
    if not amount.is_finite() or amount < 0:
        raise _bad(where, name, value, allowed)
    if amount.is_zero():
        return Decimal(0)  # -0 and 0E-50 are 0
    if money:
        if amount > MAX_USD:
            raise _bad(where, name, value, _TOO_LARGE)
        exponent = normalize(amount).as_tuple().exponent
        if isinstance(exponent, int) and -exponent > MAX_PLACES:
            raise _bad(where, name, value, f"at most {MAX_PLACES} decimal places (nano-USD need 9)")
    return amount


def record_from_mapping(data: Mapping[str, Any], where: str) -> BillingRecord:
    """One billing event from its fields (fal's names). ``request_id`` and ``timestamp`` are
    required, and the cost: ``cost_estimate_nano_usd`` (integer nano-USD, the documented field)
    or ``cost_total`` (decimal USD); when both are given they must agree. ``endpoint_id`` and
    ``output_units`` are read when present; other fields are ignored."""
    if not isinstance(data, Mapping):
        shown = repr(data)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise ReconcileError(f"{where}: a billing record must be an object, got {shown}")
    if isinstance(data, _Repeated):
        raise data.error(where)
    request_id = data.get("request_id")
    if not _present(request_id):
        raise _missing(where, "request_id", "fal's request id, a non-empty string")
    if not isinstance(request_id, str):
        raise _bad(where, "request_id", request_id, "a non-empty string")
    endpoint = data.get("endpoint_id")
    if _present(endpoint) and not isinstance(endpoint, str):
        raise _bad(where, "endpoint_id", endpoint, "a string such as fal-ai/magi/image-to-video")
    stamp = data.get("timestamp")
    if not _present(stamp):
        raise _missing(where, "timestamp", "an ISO 8601 time such as 2026-11-02T10:30:00Z")
    timestamp = parse_time(stamp, where=where)
    nano, total = data.get("cost_estimate_nano_usd"), data.get("cost_total")
    costs = []
    if _present(nano):
        costs.append(_nano_usd(nano, where))
    if _present(total):
        costs.append(_decimal(total, "cost_total", where))
    if not costs:
        raise _missing(
            where,
            "the cost",
            "cost_estimate_nano_usd (integer nano-USD) or cost_total (decimal USD)",
        )
    if len(costs) == 2 and costs[0] != costs[1]:
        raise ReconcileError(
            f"{where}: cost_estimate_nano_usd={nano!r} ({format_usd(costs[0])} USD) and"
            f" cost_total={total!r} disagree; fix the export or keep one of them"
        )
    units = data.get("output_units")
    return BillingRecord(
        request_id=request_id.strip(),
        endpoint=endpoint.strip() if isinstance(endpoint, str) and endpoint.strip() else None,
        timestamp=timestamp,
        cost=costs[0],
        units=_decimal(units, "output_units", where, "a decimal number >= 0", money=False)
        if _present(units)
        else None,
        where=where,
    )


class _Repeated(dict[str, Any]):
    """A JSON object that gave a key more than once (json keeps the last value silently):
    ``repeated`` names the first such key and every value it was given."""

    repeated: tuple[str, tuple[Any, ...]]

    def error(self, where: str) -> ReconcileError:
        key, values = self.repeated
        shown = " and ".join(
            repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..." for v in values
        )
        return ReconcileError(
            f"{where}: {key} is given {len(values)} times ({shown}): each field may appear once"
        )


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) == len(pairs):
        return found
    counts: dict[str, int] = {}
    for key, _ in pairs:
        counts[key] = counts.get(key, 0) + 1
    key = next(k for k, _ in pairs if counts[k] > 1)
    repeated = _Repeated(found)
    repeated.repeated = (key, tuple(v for k, v in pairs if k == key))
    return repeated


def _json_int(text: str) -> int | Decimal:
    return int(text) if len(text.lstrip("-")) <= _BIG_INT else Decimal(text)


def _loads(text: str) -> Any:
    """JSON with exact numbers (Decimal, never float; long integers as Decimal, never int()) and
    repeated keys kept visible (:class:`_Repeated`). Raises ValueError or RecursionError."""
    return json.loads(text, parse_float=Decimal, parse_int=_json_int, object_pairs_hook=_object)


def _json_problem(exc: ValueError | RecursionError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"line {exc.lineno}: not valid JSON ({exc.msg})"
    if isinstance(exc, RecursionError):
        return "not readable JSON (nested too deeply)"
    return f"not readable JSON ({exc})"


def _json(text: str, origin: str) -> Any:
    try:
        return _loads(text)
    except (ValueError, RecursionError) as exc:
        raise ReconcileError(
            f"{origin}: {_json_problem(exc)}; a .json file is one document (fal's billing-events"
            " answer, or a list of records), a .jsonl file one record per line"
        ) from None


def _has_more(document: Mapping[str, Any], origin: str) -> bool:
    """A billing-events answer's has_more: a JSON boolean (absent: false, for files)."""
    if isinstance(document, _Repeated):
        raise document.error(origin)
    more = document.get("has_more", False)
    if not isinstance(more, bool):
        raise _bad(origin, "has_more", more, "true or false (a JSON boolean, as fal gives it)")
    return more


def parse_json(text: str, origin: str) -> list[BillingRecord]:
    """A JSON document: fal's billing-events answer (an object whose ``billing_events`` lists
    the records; a page with ``has_more: true`` is refused, since the rest is missing) or a
    list of records."""
    document = _json(text, origin)
    if isinstance(document, Mapping):
        events = document.get("billing_events")
        if not isinstance(events, list):
            raise ReconcileError(
                f"{origin}: billing_events={events!r} is not allowed: a list of billing records"
                " (the shape of fal's GET /v1/models/billing-events answer)"
            )
        if _has_more(document, origin):
            raise ReconcileError(
                f"{origin}: has_more is true: this is one page of a longer answer; fetch every"
                " page (falbudget reconcile --from-api), or join the pages' billing_events"
            )
        return [
            record_from_mapping(r, f"{origin}: billing_events[{i}]") for i, r in enumerate(events)
        ]
    if isinstance(document, list):
        return [record_from_mapping(r, f"{origin}: [{i}]") for i, r in enumerate(document)]
    raise ReconcileError(
        f"{origin}: a {type(document).__name__} is not allowed: fal's billing-events answer (an"
        " object with billing_events) or a list of records"
    )


def parse_jsonl(text: str, origin: str) -> list[BillingRecord]:
    """JSON Lines: one record object per line; blank lines are skipped."""
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{origin}: line {number}"
        try:
            data = _loads(line)
        except json.JSONDecodeError as exc:
            raise ReconcileError(f"{where}: not valid JSON ({exc.msg})") from None
        except (ValueError, RecursionError) as exc:
            raise ReconcileError(f"{where}: {_json_problem(exc)}") from None
        records.append(record_from_mapping(data, where))
    return records


CSV_COLUMNS: Final = (
    "request_id",
    "endpoint_id",
    "timestamp",
    "output_units",
    "cost_estimate_nano_usd",
)
"""The columns a CSV export has (a header row names them, in any order); ``cost_total`` may
stand in for ``cost_estimate_nano_usd``, and other columns are ignored."""


def parse_csv(text: str, origin: str) -> list[BillingRecord]:
    """CSV with a header row naming fal's fields (see :data:`CSV_COLUMNS`); cells are trimmed,
    an empty cell is a missing value."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        fieldnames = reader.fieldnames
    except csv.Error as exc:
        raise _csv_error(exc, reader, origin) from None
    header = [name.strip() for name in fieldnames or []]
    if not header:
        raise ReconcileError(f"{origin}: empty file: a header row naming the columns is needed")
    named = [name for name in header if name]
    for name in dict.fromkeys(named):
        if named.count(name) > 1:
            raise ReconcileError(
                f"{origin}: line 1: the column {name} is given {named.count(name)} times: each"
                " column may appear once"
            )
    missing = [name for name in ("request_id", "timestamp") if name not in header]
    if "cost_estimate_nano_usd" not in header and "cost_total" not in header:
        missing.append("cost_estimate_nano_usd (or cost_total)")
    if missing:
        raise ReconcileError(
            f"{origin}: line 1: the header lacks {', '.join(missing)}; the columns are"
            f" {', '.join(CSV_COLUMNS)} (cost_total may replace cost_estimate_nano_usd)"
        )
    reader.fieldnames = header
    records = []
    for row in _rows(reader, origin):
        where = f"{origin}: line {reader.line_num}"
        if None in row:
            raise ReconcileError(f"{where}: more cells than the header has columns")
        if all(not (value or "").strip() for value in row.values()):
            continue
        cells = {
            key: (value.strip() if isinstance(value, str) else value) for key, value in row.items()
        }
        records.append(record_from_mapping(cells, where))
    return records


def _rows(reader: csv.DictReader[str], origin: str) -> Iterator[dict[str, str | Any]]:
    """The reader's rows; a line the csv module cannot read (a cell over its size limit, a NUL)
    is a ReconcileError naming it."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _csv_error(exc, reader, origin) from None
        yield row


def _csv_error(exc: csv.Error, reader: csv.DictReader[str], origin: str) -> ReconcileError:
    # line_num counts the lines read before the one that failed
    return ReconcileError(f"{origin}: line {reader.line_num + 1}: not readable CSV ({exc})")


def input_format_of(path: str) -> InputFormat:
    """The format a file's name says: .json, .jsonl or .ndjson, .csv."""
    suffix = Path(path).suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    raise ReconcileError(
        f"{path}: cannot tell the format from the name: name it .json, .jsonl or .csv, or give"
        f" --input-format ({', '.join(INPUT_FORMATS)})"
    )


def load_billing_file(path: str, input_format: InputFormat | None = None) -> list[BillingRecord]:
    """The records of an export file; the format from ``input_format`` or the file's suffix.
    Errors name the file as given, the record or line, the field and the value."""
    kind = input_format or input_format_of(path)
    if kind not in INPUT_FORMATS:
        raise ReconcileError(
            f"input format {kind!r} is not allowed: one of {', '.join(INPUT_FORMATS)}"
        )
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReconcileError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if kind == "json":
        return parse_json(text, path)
    if kind == "jsonl":
        return parse_jsonl(text, path)
    return parse_csv(text, path)


# --- fal's billing API ---------------------------------------------------------------------------


def api_key_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The key fal_client would use: FAL_KEY, else FAL_KEY_ID:FAL_KEY_SECRET."""
    return platform.api_key_from_env(
        environ,
        error=BillingApiError,
        purpose="reading fal's billing records needs an admin API key",
    )


def api_url_from_env(environ: Mapping[str, str] | None = None) -> str:
    """FALBUDGET_FAL_API_URL, else https://api.fal.ai/v1."""
    return platform.api_url_from_env(environ)


def _aware(moment: dt.datetime, name: str) -> dt.datetime:
    if not isinstance(moment, dt.datetime):
        raise BillingApiError(f"{name}={moment!r} is not allowed: a datetime with a time zone")
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


def fetch_billing_events(
    api_key: str,
    since: dt.datetime,
    until: dt.datetime,
    *,
    base_url: str | None = None,
    endpoints: Sequence[str] = (),
    request_ids: Sequence[str] = (),
    page_limit: int = PAGE_LIMIT,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_pages: int = 10_000,
    retries: int = platform.DEFAULT_RETRIES,
    client: platform.PlatformClient | None = None,
) -> BillingRecords:
    """Every billing event fal recorded in [since, until) (naive datetimes are UTC), following
    the cursor from page to page, through the shared Platform API client
    (:mod:`falbudget.platform`). ``base_url`` defaults to FALBUDGET_FAL_API_URL, else
    https://api.fal.ai/v1; ``endpoints`` has fal filter by endpoint id (``endpoint_id=``, 1 to
    50; a request fal bills under another endpoint name is then missing, and its hold would look
    unbilled: the CLI fetches every endpoint and narrows the holds instead); ``request_ids``
    (1 to 50) by request id, as the guard does to settle a hold from the bill.

    Records are returned as fal gives them (a record repeated at a page boundary too:
    :func:`reconcile` counts an exact repeat once). No redirect is followed (the key would go
    with it); ``base_url`` must be https://, or http:// to this machine. A loopback address is
    reached directly, whatever the proxy environment variables say; any other goes through the
    https proxy they name, if any, as a CONNECT tunnel (the key stays inside TLS). A 429 or 5xx
    answer is tried again up to ``retries`` times, waiting as Retry-After asks (see
    :mod:`falbudget.platform`).

    Raises BillingApiError (never naming the key) when the range is empty or longer than fal's
    90 days, when a request to fal does not complete within ``timeout_s`` (answer included) or
    its answer is larger than MAX_ANSWER_BYTES, when fal refuses the key (401, 403: billing
    needs an admin key), limits the rate (429) or fails (5xx) past the retries, redirects (3xx)
    or answers something that is not a billing-events page (``has_more`` not a boolean
    included); and ReconcileError for a record that cannot be read."""
    if not isinstance(api_key, str) or not api_key.strip():
        raise BillingApiError("no API key: set FAL_KEY (an admin key can read billing records)")
    start, end = _aware(since, "since"), _aware(until, "until")
    if end <= start:
        raise BillingApiError(
            f"the range is empty: until ({iso(end.timestamp())}) must be after"
            f" since ({iso(start.timestamp())})"
        )
    if end - start > MAX_RANGE:
        raise BillingApiError(
            f"the range {iso(start.timestamp())} to {iso(end.timestamp())} is longer than the 90"
            " days fal allows in one query; reconcile it in parts"
        )
    endpoints = list(endpoints)
    if len(endpoints) > 50:
        raise BillingApiError(f"{len(endpoints)} endpoints are not allowed: fal takes 1 to 50")
    request_ids = list(request_ids)
    if len(request_ids) > 50:
        raise BillingApiError(f"{len(request_ids)} request ids are not allowed: fal takes 1 to 50")
    if isinstance(page_limit, bool) or not isinstance(page_limit, int) or page_limit < 1:
        raise BillingApiError(f"page_limit={page_limit!r} is not allowed: an integer >= 1")
    own = client is None
    if client is None:
        client = platform.PlatformClient(
            api_key,
            base_url=base_url,
            timeout_s=timeout_s,
            retries=retries,
            max_answer_bytes=MAX_ANSWER_BYTES,
            service="fal's billing API",
            forbidden="billing events need an admin API key",
            error=BillingApiError,
        )
    try:
        return _fetch_pages(client, start, end, endpoints, request_ids, page_limit, max_pages)
    finally:
        if own:
            client.close()


BILL_LOOKUP_TIMEOUT_S: Final = 10.0
"""How long the guard waits for fal's bill of one request after the call (one attempt)."""


def bill_lookup(
    api_key: str | None = None,
    *,
    base_url: str | None = None,
    timeout_s: float = BILL_LOOKUP_TIMEOUT_S,
    clock: Any = None,
) -> Any:
    """A ``Guard(billing=...)`` lookup: ``(request_id, reserved_at) -> Decimal | None``, what
    fal's billing events record for that request id (exact repeats counted once), asked from
    the hold's reservation (less an hour, for clocks apart) to now plus an hour. The key is
    read from ``FAL_KEY`` at each lookup unless given; a lookup without one raises
    BillingApiError (the guard logs it and counts the hold at its amount)."""
    from falbudget import clock as falbudget_clock

    now = clock or falbudget_clock.now

    def lookup(request_id: str, reserved_at: float) -> Decimal | None:
        key = api_key or api_key_from_env()
        until = dt.datetime.fromtimestamp(float(now()) + 3600, dt.UTC)
        since = max(dt.datetime.fromtimestamp(reserved_at - 3600, dt.UTC), until - MAX_RANGE)
        got = fetch_billing_events(
            key,
            since,
            until,
            base_url=base_url,
            request_ids=[request_id],
            timeout_s=timeout_s,
            retries=0,
        )
        seen: set[tuple[Any, ...]] = set()
        total: Decimal | None = None
        for record in got.records:
            if record.request_id != request_id:
                continue
            mark = (record.endpoint, record.timestamp, record.cost, record.units)
            if mark in seen:
                continue
            seen.add(mark)
            total = record.cost if total is None else total + record.cost
        return total

    return lookup


def _fetch_pages(
    client: platform.PlatformClient,
    start: dt.datetime,
    end: dt.datetime,
    endpoints: list[str],
    request_ids: list[str],
    page_limit: int,
    max_pages: int,
) -> BillingRecords:
    url = client.base + EVENTS_PATH
    params: dict[str, str] = {
        "start": iso(start.timestamp()),
        "end": iso(end.timestamp()),
        "limit": str(page_limit),
    }
    if endpoints:
        params["endpoint_id"] = ",".join(endpoints)
    if request_ids:
        params["request_id"] = ",".join(request_ids)
    records: list[BillingRecord] = []
    cursor: str | None = None
    seen: set[str] = set()
    for page in range(1, max_pages + 1):
        query = dict(params, cursor=cursor) if cursor is not None else params
        raw = client.get_bytes(EVENTS_PATH, list(query.items()))
        try:
            body = _loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise BillingApiError(f"{url}: the answer is not JSON") from None
        events = body.get("billing_events") if isinstance(body, Mapping) else None
        if not isinstance(events, list):
            raise BillingApiError(
                f"{url}: page {page} is not a billing-events answer (no billing_events list)"
            )
        try:
            more = _has_more(body, f"{url}: page {page}")
        except ReconcileError as exc:
            raise BillingApiError(str(exc)) from None
        records.extend(
            record_from_mapping(event, f"fal API page {page}: billing_events[{i}]")
            for i, event in enumerate(events)
        )
        if not more:
            return BillingRecords(
                tuple(records),
                f"fal billing-events API {params['start']} to {params['end']}",
                start.timestamp(),
                end.timestamp(),
            )
        cursor = body.get("next_cursor")
        if not isinstance(cursor, str) or not cursor:
            raise BillingApiError(f"{url}: page {page} says has_more but gives no next_cursor")
        if cursor in seen:
            raise BillingApiError(f"{url}: page {page} repeats cursor {cursor!r}; stopping")
        seen.add(cursor)
    raise BillingApiError(f"{url}: more than {max_pages} pages; narrow the range")


# --- reconciliation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One request of the reconciliation.

    ``holds``: the ledger's holds for the request id (none for billed_not_in_ledger);
    ``records``: fal's records for it (none for held_not_billed; a record repeated exactly is
    kept once and the note says so); ``billed`` their cost summed (exact USD) and
    ``billed_micros`` that rounded up to micro-USD; ``counted`` what the ledger counts
    (micro-USD: the holds' spent amounts, or the amount held while a hold is open).
    ``target`` is what --apply makes the hold count (None: nothing to apply, ``note`` says why);
    ``pending``: a held_not_billed hold closed within the grace period (listed, not a
    discrepancy, not applied). ``adjustment`` is the audit row written when applied; ``stale``:
    --apply left the hold alone because it changed after it was read (``note`` says how)."""

    kind: Kind
    request_id: str
    holds: tuple[Hold, ...]
    records: tuple[BillingRecord, ...]
    billed: Decimal | None
    billed_micros: int | None
    counted: int
    target: int | None = None
    note: str | None = None
    pending: bool = False
    adjustment: Adjustment | None = None
    stale: bool = False

    @property
    def discrepancy(self) -> bool:
        return self.kind != "matched" and not self.pending

    @property
    def endpoint(self) -> str | None:
        if self.holds:
            return self.holds[0].endpoint
        return next((r.endpoint for r in self.records if r.endpoint), None)


@dataclass(frozen=True)
class Reconciliation:
    """The comparison. ``records``: the distinct records of the lines listed, ``duplicates``:
    the exact repeats among them, counted once. ``zeroing_refused`` says why --apply refuses to
    zero the held_not_billed holds (None: it may): the records matched no hold reserved in the
    range, or fewer holds than would be zeroed."""

    origin: str
    ledger_url: str
    since: float | None
    until: float | None
    now: float
    grace_s: float
    records: int
    lines: tuple[Line, ...]
    applied: bool = False
    endpoints: tuple[str, ...] = field(default_factory=tuple)
    duplicates: int = 0
    zeroing_refused: str | None = None

    def count(self, kind: Kind) -> int:
        return sum(1 for line in self.lines if line.kind == kind)

    @property
    def pending(self) -> int:
        return sum(1 for line in self.lines if line.pending)

    @property
    def discrepancies(self) -> int:
        """Lines that are not matched, leaving out holds within the grace period."""
        return sum(1 for line in self.lines if line.discrepancy)

    @property
    def corrections(self) -> list[Line]:
        """The lines --apply changes: a target, not pending, and not left alone by --apply
        because the hold changed after it was read (``stale``)."""
        return [
            line
            for line in self.lines
            if line.target is not None and not line.pending and not line.stale
        ]

    @property
    def zeroing(self) -> int:
        """The holds --apply would zero (held_not_billed, past the grace period)."""
        return sum(1 for line in self.corrections if line.kind == "held_not_billed")

    @property
    def billed_total(self) -> Decimal:
        with localcontext(_EXACT):
            return sum((line.billed for line in self.lines if line.billed is not None), Decimal(0))


def covered_range(
    records: Sequence[BillingRecord], since: float | None, until: float | None
) -> tuple[float | None, float | None]:
    """The range the records cover: as given, else from the earliest record's time to the
    latest's (None, None without records)."""
    stamps = [r.timestamp for r in records]
    if since is None and stamps:
        since = min(stamps)
    if until is None and stamps:
        until = max(stamps)
    return since, until


def _check_grace(grace_s: object) -> float:
    if (
        isinstance(grace_s, bool)
        or not isinstance(grace_s, int | float)
        or not 0 <= grace_s <= MAX_GRACE_S
    ):
        raise ReconcileError(
            f"grace={grace_s!r} is not allowed: seconds from 0 to {MAX_GRACE_S:.0f} (366 days)"
        )
    return float(grace_s)


def _wanted(
    holds: Sequence[Hold], records: Sequence[BillingRecord], wanted: tuple[str, ...]
) -> bool:
    """Whether a billed request is listed under ``--endpoint``: by its holds' endpoint when it
    has holds (fal may spell the endpoint otherwise, or leave it out), else by its records'
    (a record without an endpoint is kept: it cannot be told apart)."""
    if not wanted:
        return True
    if holds:
        return any(h.endpoint in wanted for h in holds)
    return any(r.endpoint is None or r.endpoint in wanted for r in records)


def reconcile(
    ledger: Ledger,
    billing: BillingRecords,
    *,
    now: float,
    grace_s: float = DEFAULT_GRACE_S,
    endpoints: Sequence[str] = (),
) -> Reconciliation:
    """Compare ``billing`` with the ledger; reads only. See the module docstring for the four
    classes. Holds are matched by request id against every record; ``endpoints`` (when given)
    keeps the lines of those endpoints only (:func:`_wanted`). A record repeated exactly (same
    request id, endpoint, timestamp, cost and units) counts once.

    A hold can be held_not_billed only if it carries a request id no record names, counts a
    spent amount above 0, was reserved at or after ``since`` + START_MARGIN_S and closed before
    ``until`` (the range the records cover, :func:`covered_range`); it is pending when it closed
    after ``min(until, now) - grace_s``. ``zeroing_refused`` is set when the records match no
    hold reserved in that part of the range, or fewer than --apply would zero. Raises
    ReconcileError when the records of one request add up to more than a ledger counts."""
    grace = _check_grace(grace_s)
    wanted = tuple(dict.fromkeys(endpoints))
    by_request: dict[str, list[BillingRecord]] = {}
    repeats: dict[str, list[str]] = {}
    first_of: dict[tuple[object, ...], BillingRecord] = {}
    for record in billing.records:
        identity = (record.request_id, record.endpoint, record.timestamp, record.cost, record.units)
        first = first_of.get(identity)
        if first is not None:
            repeats.setdefault(record.request_id, []).append(
                f"{record.where} repeats {first.where} exactly: counted once"
            )
            continue
        first_of[identity] = record
        by_request.setdefault(record.request_id, []).append(record)
    since, until = covered_range(list(first_of.values()), billing.since, billing.until)
    holds_of: dict[str, list[Hold]] = {}
    for hold in ledger.holds_by_request_id(list(by_request)):
        if hold.request_id is not None:
            holds_of.setdefault(hold.request_id, []).append(hold)
    lines: list[Line] = []
    duplicates = 0
    for request_id, found in by_request.items():
        holds = tuple(holds_of.get(request_id, ()))
        if not _wanted(holds, found, wanted):
            continue
        repeated = repeats.get(request_id, [])
        duplicates += len(repeated)
        lines.append(_billed_line(request_id, tuple(found), holds, repeated))
    refused: str | None = None
    if since is not None and until is not None:
        cutoff = min(until, now) - grace
        start = since + START_MARGIN_S
        matched = 0
        # read as a stream, newest first (memory follows the unbilled holds, not the range);
        # the lines keep the order of the holds' creation, oldest first
        unbilled: list[Line] = []
        for hold in ledger.iter_holds(since=start, until=until) if start < until else ():
            if hold.request_id is None or (wanted and hold.endpoint not in wanted):
                continue
            if hold.request_id in by_request:
                matched += 1
                continue
            if not hold.counts_as_spent or hold.spent_amount == 0 or hold.updated_at >= until:
                continue
            pending = hold.updated_at > cutoff
            unbilled.append(
                Line(
                    kind="held_not_billed",
                    request_id=hold.request_id,
                    holds=(hold,),
                    records=(),
                    billed=None,
                    billed_micros=None,
                    counted=hold.spent_amount,
                    target=0,
                    note="closed within the grace period: fal may not have billed it yet"
                    if pending
                    else None,
                    pending=pending,
                )
            )
        lines.extend(reversed(unbilled))
        zeroing = sum(1 for line in lines if line.kind == "held_not_billed" and not line.pending)
        refused = _zeroing_check(zeroing, matched, len(first_of), since, until)
    lines.sort(key=lambda line: _ORDER.index(line.kind))  # stable: record order within a class
    return Reconciliation(
        origin=billing.origin,
        ledger_url=ledger.url,
        since=since,
        until=until,
        now=now,
        grace_s=grace,
        records=sum(len(line.records) for line in lines),
        lines=tuple(lines),
        endpoints=wanted,
        duplicates=duplicates,
        zeroing_refused=refused,
    )


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _zeroing_check(
    zeroing: int, matched: int, records: int, since: float, until: float
) -> str | None:
    """Why zeroing ``zeroing`` holds is not safe on this evidence, or None. An empty or
    partial export, another team's API key or a wrong range all look like "held but never
    billed" for every hold; real unbilled requests (fal's own failures) are a minority."""
    if not zeroing:
        return None
    holds = _plural(zeroing, "hold")
    span = f"{iso(since + START_MARGIN_S)} to {iso(until)}"
    if not records:
        return f"there are no billing records, and {holds} would be zeroed"
    if not matched:
        return f"no billing record matches a hold reserved from {span}, and {holds} would be zeroed"
    if zeroing > matched:
        return f"{holds} would be zeroed but the records match only {matched} reserved from {span}"
    return None


def _billed_line(
    request_id: str,
    records: tuple[BillingRecord, ...],
    holds: tuple[Hold, ...],
    repeated: Sequence[str] = (),
) -> Line:
    with localcontext(_EXACT):
        billed = sum((r.cost for r in records), Decimal(0))
    if billed > MAX_USD:
        raise ReconcileError(
            f"request {request_id}: its records ({', '.join(r.where for r in records)}) add up to"
            f" {format_usd(billed)} USD: {_TOO_LARGE}"
        )
    micros = to_micros(billed)
    notes = list(repeated)
    if not holds:
        return Line(
            "billed_not_in_ledger",
            request_id,
            holds,
            records,
            billed,
            micros,
            0,
            note="; ".join(["no hold carries this request id; nothing to apply", *notes]),
        )
    open_holds = [h for h in holds if h.state in OPEN_STATES]
    counted = sum(h.amount if h in open_holds else h.spent_amount for h in holds)
    kind: Kind = "matched" if counted == micros else "different_amount"
    target: int | None = None
    if len(holds) > 1:
        notes.insert(0, f"{len(holds)} holds carry this request id; correct them by hand")
    elif open_holds:
        notes.insert(
            0,
            f"the hold is still {holds[0].state}: settle or release it (or let it expire), then"
            " reconcile again",
        )
    elif kind == "different_amount":
        target = micros
    note = "; ".join(notes) if notes else None
    return Line(kind, request_id, holds, records, billed, micros, counted, target, note)


def _same(seen: Hold, now: Hold) -> bool:
    """Whether a hold still counts as it did when the reconciliation read it."""
    return (seen.state, seen.settled_amount, seen.adjusted_amount, seen.amount) == (
        now.state,
        now.settled_amount,
        now.adjusted_amount,
        now.amount,
    )


def _reread(ledger: Ledger, hold_id: str) -> Hold | None:
    """The hold as the ledger has it now; None when it is gone (deleted by hand)."""
    try:
        return ledger.get_hold(hold_id)
    except HoldNotFound:
        return None


def _stale(line: Line, now: Hold | None) -> Line:
    if now is None:
        why = "the hold is gone"
    else:
        why = f"it counts {format_usd(from_micros(now.spent_amount))} now ({now.state})"
    return replace(
        line,
        stale=True,
        note=f"the hold changed after it was read ({why}): not corrected; reconcile again",
    )


def apply_corrections(
    ledger: Ledger,
    result: Reconciliation,
    *,
    now: float | None = None,
    allow_zeroing: bool = False,
) -> Reconciliation:
    """Adjust every correctable line's hold to its target (what fal billed, 0 for a hold fal
    never billed), with an audit row naming the records' origin; lines within the grace period,
    without a single closed hold, or billed but not in the ledger are left alone.

    Everything is checked before the first adjustment, and nothing is changed when a check
    fails: ZeroingRefused when ``result.zeroing_refused`` (unless ``allow_zeroing``), and
    ReconcileError when a target is not a ledger amount or the corrections would take a bucket
    past the largest total a ledger keeps. Each hold is read again first: one that already
    counts its target (a second run, or another reconciler got there first) writes nothing, and
    one that changed otherwise since ``result`` read it is left alone (``stale``). Returns the
    reconciliation with each applied line's ``adjustment``."""
    when = result.now if now is None else now
    lines = list(result.lines)
    fixes = [
        i
        for i, line in enumerate(lines)
        if line.target is not None and not line.pending and len(line.holds) == 1
    ]
    if (
        result.zeroing_refused is not None
        and not allow_zeroing
        and any(lines[i].kind == "held_not_billed" for i in fixes)
    ):
        raise ZeroingRefused(
            f"refusing to zero holds on thin evidence: {result.zeroing_refused}; nothing was"
            " changed"
        )
    for i in fixes:
        target = lines[i].target
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target <= MAX_MICROS:
            raise ReconcileError(
                f"request {lines[i].request_id}: target={target!r} is not allowed: micro-USD from"
                f" 0 to {MAX_MICROS}; nothing was changed"
            )
    fresh = {h.id: h for h in ledger.holds_by_request_id([lines[i].request_id for i in fixes])}
    plan: list[int] = []
    moves: dict[str, int] = {}
    for i in fixes:
        line, seen = lines[i], lines[i].holds[0]
        hold = fresh.get(seen.id) or _reread(ledger, seen.id)  # re-opened: no request id now
        if hold is not None and hold.spent_amount == line.target:
            continue  # already in place
        if hold is None or not _same(seen, hold):
            lines[i] = _stale(line, hold)
            continue
        assert line.target is not None
        for key in hold.buckets:
            moves[key] = moves.get(key, 0) + line.target - hold.spent_amount
        plan.append(i)
    for total in ledger.totals(list(moves)):
        if total.settled + total.held + moves[total.key] > MAX_MICROS:
            raise ReconcileError(
                f"the corrections would take bucket {total.key!r} past {MAX_MICROS} micro-USD,"
                " the largest total a ledger keeps; nothing was changed"
            )
    done = 0
    for i in plan:
        line, seen = lines[i], lines[i].holds[0]
        assert line.target is not None
        current = _reread(ledger, seen.id)
        if current is not None and current.spent_amount == line.target:
            continue
        if current is None or not _same(seen, current):
            lines[i] = _stale(line, current)
            continue
        try:
            row = ledger.adjust(seen.id, line.target, now=when, **_why(line, result))
        except LedgerError as exc:
            raise ReconcileError(
                f"request {line.request_id} (hold {seen.id}): {exc}; {_plural(done, 'correction')}"
                " before it applied, the rest not"
            ) from None
        done += row is not None
        lines[i] = replace(line, adjustment=row)
    return replace(result, lines=tuple(lines), applied=True)


def _why(line: Line, result: Reconciliation) -> dict[str, str]:
    """The audit row's reason and source."""
    counted = format_usd(from_micros(line.counted))
    if line.kind == "held_not_billed":
        covered = (
            f" from {iso(result.since)} to {iso(result.until)}"
            if result.since is not None and result.until is not None
            else ""
        )
        return {"reason": f"not billed{covered}; counted {counted}", "source": result.origin}
    billed = "?" if line.billed is None else format_usd(line.billed)
    return {
        "reason": f"billed {billed}; counted {counted}",
        "source": "; ".join(r.where for r in line.records),
    }
