"""The guard's YAML configuration file: ledger URL, caps, hold_ttl, idempotency_ttl, on_unknown,
price table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from falbudget.errors import ConfigurationError, FalbudgetError
from falbudget.guard import _idempotency
from falbudget.guard.core import MAX_HOLD_TTL

if TYPE_CHECKING:  # pragma: no cover
    from falbudget.guard.core import Guard

CONFIG_ENV = "FALBUDGET_CONFIG"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _amount(value: object) -> object:
    """Money in the file: a string or a whole number. Checked before the union is tried, so an
    error names the field itself (not ``limit.str``) and says what is allowed."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(
            "a decimal amount written as a string such as '10.00', or a whole number"
            " (a float cannot hold cents exactly)"
        )
    return value


def _fraction(value: object) -> object:
    """An alert fraction: a number or a decimal string; never a boolean (YAML's true is not 1)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("a fraction of the limit above 0, such as 0.5 or 1.0")
    return value


_Amount = Annotated[StrictStr | StrictInt, BeforeValidator(_amount)]
_Fraction = Annotated[StrictStr | StrictInt | StrictFloat, BeforeValidator(_fraction)]


class CapConfig(_Strict):
    limit: _Amount
    scope: StrictStr = "global"
    window: Literal["total", "day", "week", "month"] = "total"
    tz: StrictStr = "UTC"
    max_per_request: _Amount | None = None
    alert_at: list[_Fraction] = Field(default_factory=list)
    name: StrictStr | None = None
    untagged: Literal["refuse", "skip"] = "refuse"


_Event = Literal["threshold", "overrun", "refusals"]


def _all_events() -> list[_Event]:
    return ["threshold", "overrun", "refusals"]


class WebhookConfig(_Strict):
    url: StrictStr
    format: Literal["json", "slack"] = "json"
    events: list[_Event] = Field(default_factory=_all_events, min_length=1)
    headers: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    name: StrictStr | None = None


class RefusalAlertConfig(_Strict):
    count: StrictInt = Field(default=10, ge=1)
    within: float = Field(default=300.0, ge=1, le=31 * 86400, strict=True, allow_inf_nan=False)


class GuardConfig(_Strict):
    ledger: StrictStr | None = None
    # one table, or several layered: the first that prices an endpoint wins
    pricing: StrictStr | Annotated[list[StrictStr], Field(min_length=1)] | None = None
    # strict: a number of seconds; YAML's true or a quoted "60" is refused, as Guard refuses them;
    # bounded as Guard bounds it (.inf and .nan too), so the file is refused when it is read
    hold_ttl: float = Field(default=3600.0, gt=0, le=MAX_HOLD_TTL, strict=True, allow_inf_nan=False)
    # seconds an idempotency key is remembered after its hold closes: 1 hour to 365 days
    idempotency_ttl: float = Field(
        default=_idempotency.DEFAULT_TTL,
        ge=_idempotency.MIN_TTL,
        le=_idempotency.MAX_TTL,
        strict=True,
    )
    on_unknown: Literal["deny", "allow"] = "deny"
    # settle each hold from fal's bill (billing events by request id) instead of the quote
    settle_from: Literal["quote", "billing"] = "quote"
    caps: list[CapConfig] = Field(default_factory=list)
    # webhook alerts (docs/alerts.md): thresholds, overruns and refusals above a rate
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    refusal_alert: RefusalAlertConfig = Field(default_factory=RefusalAlertConfig)
    # the `falbudget proxy` section: checked by falbudget.proxy.config when the proxy starts
    proxy: dict[str, Any] | None = None
    # the dashboard (`falbudget serve`, or mounted in the proxy): falbudget.dashboard.config
    dashboard: dict[str, Any] | None = None

    source: str = Field(default="<config>", exclude=True)

    def build_guard(self, *, read_only: bool = False, **overrides: Any) -> Guard:
        """A Guard with these settings; keyword overrides win (ledger=..., clock=...).
        ``read_only``: open the ledger URL read-only (see ``open_ledger``), once the rest of
        the configuration has been checked."""
        from falbudget.guard.caps import Cap
        from falbudget.guard.core import Guard
        from falbudget.pricing.loader import default_table, layered_table

        caps = []
        for index, item in enumerate(self.caps):
            try:
                caps.append(
                    Cap(
                        item.limit,
                        scope=item.scope,
                        window=item.window,
                        tz=item.tz,
                        max_per_request=item.max_per_request,
                        alert_at=item.alert_at,
                        name=item.name,
                        untagged=item.untagged,
                    )
                )
            except ConfigurationError as exc:
                raise ConfigurationError(f"{self.source}: caps.{index}: {exc}") from None
        settings: dict[str, Any] = {
            "ledger": self.ledger,
            "caps": caps,
            "hold_ttl": self.hold_ttl,
            "idempotency_ttl": self.idempotency_ttl,
            "on_unknown": self.on_unknown,
            "settle_from": self.settle_from,
        }
        if self.pricing is not None:
            try:
                settings["table"] = (
                    layered_table(self.pricing)
                    if isinstance(self.pricing, list)
                    else default_table(self.pricing)
                )
            except FalbudgetError as exc:
                raise type(exc)(f"{self.source}: pricing: {exc}") from None
        settings.update(overrides)
        webhooks = self.webhooks_of()
        try:
            if read_only and (settings["ledger"] is None or isinstance(settings["ledger"], str)):
                from falbudget.ledger import default_ledger_url, open_ledger

                url = settings["ledger"] or default_ledger_url()
                settings["ledger"] = open_ledger(url, read_only=True)
            guard = Guard(**settings)
        except FalbudgetError as exc:
            raise type(exc)(f"{self.source}: {exc}") from None
        if webhooks and not read_only:
            from falbudget.alerts import Notifier, RefusalRule

            rule = RefusalRule(self.refusal_alert.count, self.refusal_alert.within)
            try:
                notifier = Notifier(webhooks, refusal_rule=rule, clock=guard._now)
            except ConfigurationError as exc:
                guard.close()
                raise ConfigurationError(f"{self.source}: webhooks: {exc}") from None
            notifier.attach(guard)
        return guard

    def webhooks_of(self) -> list[Any]:
        """The configured webhooks, checked (ConfigurationError names webhooks.N.field)."""
        from falbudget.alerts import Webhook

        found = []
        for index, item in enumerate(self.webhooks):
            try:
                found.append(
                    Webhook(
                        url=item.url,
                        format=item.format,
                        events=tuple(dict.fromkeys(item.events)),
                        headers=dict(item.headers),
                        name=item.name or "",
                    )
                )
            except ConfigurationError as exc:
                raise ConfigurationError(f"{self.source}: webhooks.{index}: {exc}") from None
        return found


def config_path(path: str | os.PathLike[str] | None = None) -> str | None:
    """The configuration file in use: ``path``, else ``FALBUDGET_CONFIG``, else None."""
    if path is not None:
        return os.fspath(path)
    return os.environ.get(CONFIG_ENV) or None


def load_config(path: str | os.PathLike[str] | None = None) -> GuardConfig:
    """Read and validate a configuration file; errors name the file and the field."""
    import yaml

    name = config_path(path)
    if name is None:
        raise ConfigurationError(f"no configuration file: give --config PATH or set {CONFIG_ENV}")
    from falbudget.pricing.loader import yaml_loader

    try:
        text = Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"{name}: cannot read the configuration: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"{name}: the configuration is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    try:
        # the price table's loader: a key given twice (a second `caps:`) is an error, not a
        # silent replacement of the first
        document = yaml.load(text, Loader=yaml_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None)
        said = f": {problem}" if problem else ""
        raise ConfigurationError(f"{name}: not valid YAML{where}{said}") from None
    except RecursionError:
        raise ConfigurationError(f"{name}: not readable YAML: nested too deeply") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigurationError(f"{name}: the configuration must be a YAML mapping")
    if "source" in document:
        raise ConfigurationError(f"{name}: source: unknown key")
    try:
        config = GuardConfig.model_validate(document)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] != "missing":
            message = f"{message} (got {error.get('input')!r})"
        raise ConfigurationError(f"{name}: {field}: {message}") from None
    pricing: str | list[str] | None = config.pricing
    if isinstance(pricing, str) and not os.path.isabs(pricing):
        pricing = str(Path(name).parent / pricing)
    elif isinstance(pricing, list):  # each relative to this file
        pricing = [p if os.path.isabs(p) else str(Path(name).parent / p) for p in pricing]
    ledger = config.ledger
    if ledger is not None:  # a relative SQLite path is relative to this file, as pricing: is
        from falbudget.ledger import resolve_ledger_url

        ledger = resolve_ledger_url(ledger, os.path.dirname(os.path.abspath(name)))
    return config.model_copy(update={"source": name, "pricing": pricing, "ledger": ledger})
