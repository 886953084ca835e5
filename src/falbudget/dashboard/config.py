"""The ``dashboard:`` section of a falbudget configuration file and the dashboard's settings.

Tokens are never written in the file: it names the environment variables that hold them
(``token_env``, ``admin_token_env``), as the proxy section names the fal key's variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, ValidationError

from falbudget.errors import ConfigurationError

TOKEN_ENV = "FALBUDGET_DASHBOARD_TOKEN"
ADMIN_TOKEN_ENV = "FALBUDGET_DASHBOARD_ADMIN_TOKEN"
MOUNT = "/dashboard"
"""Where ``falbudget proxy`` serves the dashboard when ``dashboard.in_proxy`` is true."""


class DashboardSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tz: StrictStr = "UTC"
    token_env: StrictStr = TOKEN_ENV
    admin_token_env: StrictStr = ADMIN_TOKEN_ENV
    audit_log: StrictStr | None = None
    in_proxy: StrictBool = False


@dataclass(frozen=True)
class DashboardSettings:
    """What the dashboard app needs: the zone its times and days are shown in; ``token``
    (None: only loopback clients are answered) and ``admin_token`` (None: no write action is
    offered); ``audit_log``: the JSON Lines file each write action is appended to."""

    tz: str = "UTC"
    token: str | None = None
    admin_token: str | None = None
    audit_log: str | None = None
    in_proxy: bool = False


def parse_section(section: dict[str, Any] | None, source: str, base_dir: str) -> DashboardSettings:
    """The section checked, the tokens read from the variables it names; ConfigurationError
    names the file, the field and the value."""
    from falbudget.report import zone

    try:
        parsed = DashboardSection.model_validate(section or {})
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in error["loc"])
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        if error["type"] != "extra_forbidden":
            message = f"{message} (got {error.get('input')!r})"
        raise ConfigurationError(f"{source}: dashboard.{field}: {message}") from None
    try:
        zone(parsed.tz)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{source}: dashboard.{exc}") from None
    audit = parsed.audit_log
    if audit is not None and not os.path.isabs(audit):
        audit = os.path.join(base_dir, audit)
    return DashboardSettings(
        tz=parsed.tz,
        token=os.environ.get(parsed.token_env, "").strip() or None,
        admin_token=os.environ.get(parsed.admin_token_env, "").strip() or None,
        audit_log=audit,
        in_proxy=parsed.in_proxy,
    )


def default_audit_log() -> str:
    """The audit file when the configuration names none: beside the default ledger, in the
    user data directory."""
    import platformdirs

    return os.path.join(platformdirs.user_data_dir("falbudget"), "dashboard-audit.jsonl")
