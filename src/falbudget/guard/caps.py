"""Caps: a limit on spend over a scope and a calendar window, and the ledger buckets they map to."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from falbudget.errors import ConfigurationError
from falbudget.ledger._checks import MAX_MICROS
from falbudget.money import format_usd, from_micros, to_decimal, to_micros

Window = Literal["total", "day", "week", "month"]
WINDOWS: tuple[str, ...] = get_args(Window)
GLOBAL_TOTAL = "global|total"
"""The bucket every admitted request charges, cap or not: global spend over all time."""


Untagged = Literal["refuse", "skip"]
UNTAGGED: tuple[str, ...] = get_args(Untagged)
SCOPE_FORMS = (
    "'global', a tag name such as 'user' (each value its own budget), or 'user=ann' (one value)"
)


def parse_scope(
    scope: object, *, what: str = "scope", one_value: bool = False
) -> tuple[str, str | None]:
    """'global' -> ('global', None); 'project' -> ('project', None): each project its own bucket;
    'project=alpha' -> ('project', 'alpha'): that project only. Any tag name works like project.

    ``TAG=VALUE`` is the one spelling falbudget writes (in buckets, output, JSON and ``--tag``);
    ``TAG:VALUE``, the spelling of earlier versions, is still read so that existing configuration
    files, code and scripts keep working. The tag name is an identifier, so the first '=' or ':'
    ends it: a value may itself contain either. ``what`` names the field in errors;
    ``one_value`` asks for one scope value ('user=ann'), as the CLI's ``--scope`` does.
    """
    forms = "TAG=VALUE such as user=ann or project=alpha" if one_value else SCOPE_FORMS
    if not isinstance(scope, str) or not scope.strip():
        raise ConfigurationError(f"{what}={scope!r} is not allowed: {forms}")
    text = scope.strip()
    cut = re.search("[=:]", text)
    name, sep, value = (text, "", "")
    if cut is not None:
        name, sep, value = text[: cut.start()], cut.group(), text[cut.end() :]
    if one_value and not (sep and value and name != "global"):
        raise ConfigurationError(f"{what}={scope!r} is not allowed: {forms}")
    if name == "global":
        if sep:
            raise ConfigurationError(f"{what}={scope!r} is not allowed: 'global' takes no value")
        return "global", None
    if not name.isidentifier():
        raise ConfigurationError(
            f"{what}={scope!r} is not allowed: the tag name must be an identifier such as"
            " 'project', 'user' or 'endpoint'"
        )
    if sep and not value:
        raise ConfigurationError(f"{what}={scope!r} is not allowed: a value must follow {sep!r}")
    return name, (value if sep else None)


def scope_text(tag: str, value: str | None) -> str:
    """The one spelling of a scope: 'global', 'user' (each value) or 'user=ann'."""
    return tag if value is None else f"{tag}={value}"


MAX_LIMIT = from_micros(MAX_MICROS)
"""The largest limit (or max_per_request) a cap may have: what a ledger can count, 2**63 - 1
micro-USD (9223372036854.775807 USD)."""


def _countable(name: str, given: object, amount: Decimal) -> None:
    """ConfigurationError unless ``amount`` fits in a ledger's counters (checked when the cap is
    made, not at the first reservation)."""
    try:
        fits = to_micros(amount) <= MAX_MICROS
    except ValueError:  # more digits than to_micros takes
        fits = False
    if not fits:
        raise ConfigurationError(
            f"{name}={given!r} is not allowed: at most {format_usd(MAX_LIMIT)} USD, what a ledger"
            " can count (2**63 - 1 micro-USD)"
        )


@dataclass(frozen=True, init=False)
class Cap:
    """A spend limit. ``Cap("10.00", scope="project=alpha", window="day", tz="Europe/Paris")``.

    ``limit`` and ``max_per_request`` take Decimal, str or int (a float is refused: it cannot hold
    cents exactly). ``scope``: "global", a tag name ("project": each project its own limit), or
    "tag=value" ("project=alpha": that project only; "project:alpha" is read too); "endpoint" is
    always a tag. ``window``: "total" or a calendar "day", "week" (from Monday) or "month" in the
    IANA time zone ``tz``. ``alert_at``: fractions of the limit (0.5, 0.8, 1.0) at which settled
    spend raises an alert, once per window. ``untagged``: what a request without the cap's tag
    meets: "refuse" (default; the guard raises MissingTag before anything is held) or "skip" (the
    cap does not apply to it: such a request is not limited by this cap at all).
    """

    limit: Decimal
    scope: str
    window: Window
    tz: str
    max_per_request: Decimal | None
    alert_at: tuple[Decimal, ...]
    name: str | None
    untagged: Untagged
    _tag: str = field(repr=False, compare=False)
    _value: str | None = field(repr=False, compare=False)
    _zone: ZoneInfo | None = field(repr=False, compare=False)

    def __init__(
        self,
        limit: Decimal | str | int,
        *,
        scope: str = "global",
        window: str = "total",
        tz: str = "UTC",
        max_per_request: Decimal | str | int | None = None,
        alert_at: Iterable[float | Decimal | str] = (),
        name: str | None = None,
        untagged: Untagged = "refuse",
    ) -> None:
        try:
            limit_d = to_decimal(limit, what="limit")
            per_request = (
                None
                if max_per_request is None
                else to_decimal(max_per_request, what="max_per_request")
            )
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        if limit_d < 0:
            raise ConfigurationError(f"limit={limit!r} is not allowed: it must be 0 or more")
        if per_request is not None and per_request <= 0:
            raise ConfigurationError(
                f"max_per_request={max_per_request!r} is not allowed: it must be above 0"
            )
        _countable("limit", limit, limit_d)
        if per_request is not None:
            _countable("max_per_request", max_per_request, per_request)
        tag, value = parse_scope(scope)
        if untagged not in UNTAGGED:
            raise ConfigurationError(
                f"untagged={untagged!r} is not allowed: 'refuse' (a request without the cap's"
                " tag is refused) or 'skip' (the cap does not apply to it)"
            )
        if tag == "global" and untagged != "refuse":
            raise ConfigurationError(
                f"untagged={untagged!r} is not allowed on scope 'global': every request is in"
                " the global scope; untagged applies to a cap on a tag such as 'user'"
            )
        if window not in WINDOWS:
            raise ConfigurationError(
                f"window={window!r} is not allowed: one of {', '.join(WINDOWS)}"
            )
        try:
            zone = ZoneInfo(tz) if isinstance(tz, str) and tz else None
        except (ZoneInfoNotFoundError, ValueError):
            zone = None
        if zone is None:
            raise ConfigurationError(
                f"tz={tz!r} is not allowed: an IANA time zone name such as 'UTC' or 'Europe/Paris'"
            )
        fractions = []
        for raw in alert_at:
            try:
                fraction = Decimal(str(raw)) if isinstance(raw, float) else to_decimal(raw)
            except ValueError:
                fraction = Decimal(-1)
            if not fraction.is_finite():  # a float nan or inf: Decimal('NaN') cannot be compared
                fraction = Decimal(-1)
            if isinstance(raw, bool) or not Decimal(0) < fraction <= Decimal(10):
                raise ConfigurationError(
                    f"alert_at value {raw!r} is not allowed: a fraction of the limit above 0 and"
                    " at most 10, such as 0.5 or 1.0"
                )
            fractions.append(fraction)
        object.__setattr__(self, "limit", limit_d)
        object.__setattr__(self, "scope", scope_text(tag, value))
        object.__setattr__(self, "window", window)
        object.__setattr__(self, "tz", tz)
        object.__setattr__(self, "max_per_request", per_request)
        object.__setattr__(self, "alert_at", tuple(sorted(set(fractions))))
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "untagged", untagged)
        object.__setattr__(self, "_tag", tag)
        object.__setattr__(self, "_value", value)
        object.__setattr__(self, "_zone", zone)

    def __str__(self) -> str:
        """The cap as a person reads it: 'the cap of 50.00 USD a day for each project', 'the
        cap "team" of 500.00 USD a month (Europe/Paris) for all requests, at most 2.00 USD a
        request'. ``repr()`` keeps every field."""
        period = {"total": "in all", "day": "a day", "week": "a week", "month": "a month"}
        zone = "" if self.window == "total" or self.tz == "UTC" else f" ({self.tz})"
        if self._tag == "global":
            whom = "for all requests"
        elif self._value is None:
            whom = f"for each {self._tag}"
        else:
            whom = f"for {self._tag} {self._value}"
        named = f" {json.dumps(self.name, ensure_ascii=False)}" if self.name else ""
        text = f"the cap{named} of {format_usd(self.limit)} USD {period[self.window]}{zone} {whom}"
        if self.max_per_request is not None:
            text += f", at most {format_usd(self.max_per_request)} USD a request"
        return text

    @property
    def limit_micros(self) -> int:
        return to_micros(self.limit)

    @property
    def tag(self) -> str | None:
        """The tag the cap is keyed on ('user' for scope 'user' or 'user=ann'); None: global."""
        return None if self._tag == "global" else self._tag

    def lacks_tag(self, tags: Mapping[str, str]) -> bool:
        """True when a request with ``tags`` must be refused for want of this cap's tag: the cap
        is keyed on a tag the request does not carry and ``untagged`` is "refuse"."""
        return self.untagged == "refuse" and self._tag != "global" and self._tag not in tags

    def label(self, bucket: str | None = None) -> str:
        """How messages name the cap: 'global total cap 10.00', 'user=ann day (Europe/Paris)
        cap 2.00' (the scope instance taken from ``bucket`` when given)."""
        if self.name:
            return self.name
        scope = bucket.partition("|")[0] if bucket else self.scope
        zone = "" if self.window == "total" or self.tz == "UTC" else f" ({self.tz})"
        return f"{scope} {self.window}{zone} cap {format_usd(self.limit)}"

    def scope_value(self, tags: Mapping[str, str]) -> str | None:
        """The scope instance this request falls in ('global', 'project=alpha'), or None when the
        cap does not apply to a request with these tags."""
        if self._tag == "global":
            return "global"
        got = tags.get(self._tag)
        if got is None or (self._value is not None and got != self._value):
            return None
        return f"{self._tag}={got}"

    def window_key(self, now: float) -> str:
        """'total', or the window containing ``now`` in the cap's zone: 'day@UTC:2026-11-24',
        'week@Europe/Paris:2026-11-23' (its Monday), 'month@UTC:2026-11'."""
        if self.window == "total":
            return "total"
        local = dt.datetime.fromtimestamp(now, tz=self._zone).date()
        if self.window == "day":
            start = local.isoformat()
        elif self.window == "week":
            start = (local - dt.timedelta(days=local.weekday())).isoformat()
        else:
            start = f"{local.year:04d}-{local.month:02d}"
        return f"{self.window}@{self.tz}:{start}"

    def bucket(self, tags: Mapping[str, str], now: float) -> str | None:
        """The ledger bucket this cap charges for a request with ``tags`` at ``now``."""
        scope = self.scope_value(tags)
        if scope is None:
            return None
        return f"{scope}|{self.window_key(now)}"

    def bucket_for_scope(self, scope: str, now: float) -> str | None:
        """The bucket of scope instance ``scope`` ('global', 'project=alpha') at ``now``, when
        this cap covers it."""
        tag, value = parse_scope(scope)
        if tag == "global":
            return f"global|{self.window_key(now)}" if self._tag == "global" else None
        if value is None or tag != self._tag or self._value not in (None, value):
            return None
        return f"{tag}={value}|{self.window_key(now)}"
