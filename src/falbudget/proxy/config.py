"""The ``proxy:`` section of a falbudget configuration file, checked when the proxy starts."""

from __future__ import annotations

import ipaddress
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from falbudget.errors import ConfigurationError

FAL_HOSTS = ("fal.run", "queue.fal.run", "rest.fal.ai")
"""The only hosts a target may name (fal's run, queue and storage hosts)."""

DEFAULT_ROUTE = "/api/fal/proxy"
MAX_BODY_BYTES = 4 * 1024 * 1024

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HeaderIdentity(_Strict):
    """Trust a header that an authenticating reverse proxy sets: its value becomes tag ``tag``."""

    name: StrictStr
    tag: StrictStr = "user"


class JwtIdentity(_Strict):
    """Verify a JWT the app issues (``Authorization: Bearer <token>``); its claims become tags."""

    algorithm: Literal["HS256", "RS256"]
    secret_env: StrictStr | None = None  # HS256: the variable holding the shared secret
    public_key_file: StrictStr | None = None  # RS256: the PEM file of the app's public key
    claims: dict[StrictStr, StrictStr] = Field(default_factory=lambda: {"sub": "user"})
    audience: StrictStr | None = None
    issuer: StrictStr | None = None
    leeway: float = Field(default=30.0, ge=0, le=3600, allow_inf_nan=False)


class ProxySettings(_Strict):
    route: StrictStr = DEFAULT_ROUTE
    fal_key_env: StrictStr = "FAL_KEY"
    # fal host -> base URL it is served from (tests: the local fake); https, or http to loopback
    upstreams: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    max_body_bytes: StrictInt = Field(default=MAX_BODY_BYTES, gt=0, le=1024 * 1024 * 1024)
    connect_timeout: float = Field(default=10.0, gt=0, le=600, allow_inf_nan=False)
    timeout: float = Field(default=120.0, gt=0, le=3600, allow_inf_nan=False)
    # following an accepted queue request to its end: poll its status every follow_interval s,
    # for at most follow_for s (then the hold stays submitted, counted as spent at expiry)
    follow_interval: float = Field(default=2.0, gt=0, le=3600, allow_inf_nan=False)
    follow_for: float = Field(default=3600.0, gt=0, le=7 * 86400, allow_inf_nan=False)
    anonymous: StrictBool = False
    trusted_proxies: list[StrictStr] = Field(default_factory=list)
    trusted_header: HeaderIdentity | None = None
    jwt: JwtIdentity | None = None
    cors_origins: list[StrictStr] = Field(default_factory=list)
    # Prometheus metrics (docs/metrics.md): the path (null: not served) and the networks that may
    # scrape it besides loopback (the figures name users and projects: not for the internet)
    metrics_path: StrictStr | None = "/metrics"
    metrics_allow: list[StrictStr] = Field(default_factory=list)


def parse_settings(section: dict[str, Any] | None, source: str) -> ProxySettings:
    """The proxy section checked; ConfigurationError names the file, the field and the value."""
    try:
        settings = ProxySettings.model_validate(section or {})
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in error["loc"])
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        if error["type"] not in ("extra_forbidden", "missing"):
            message = f"{message} (got {error.get('input')!r})"
        raise ConfigurationError(f"{source}: proxy.{field}: {message}") from None
    if not settings.route.startswith("/"):
        raise ConfigurationError(
            f"{source}: proxy.route={settings.route!r} is not allowed: a path starting with '/'"
        )
    for host, base in settings.upstreams.items():
        if host not in FAL_HOSTS:
            raise ConfigurationError(
                f"{source}: proxy.upstreams: {host!r} is not allowed: one of {', '.join(FAL_HOSTS)}"
            )
        check_upstream(base, f"{source}: proxy.upstreams.{host}")
    for name in ("trusted_proxies", "metrics_allow"):
        for entry in getattr(settings, name):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ConfigurationError(
                    f"{source}: proxy.{name}: {entry!r} is not allowed: an IP address or"
                    " network such as 10.0.0.0/8"
                ) from None
    path = settings.metrics_path
    if path is not None and (not path.startswith("/") or path == settings.route):
        raise ConfigurationError(
            f"{source}: proxy.metrics_path={path!r} is not allowed: a path starting with '/',"
            " other than proxy.route, or null to serve no metrics"
        )
    jwt = settings.jwt
    if jwt is not None:
        if jwt.algorithm == "HS256" and (not jwt.secret_env or jwt.public_key_file):
            raise ConfigurationError(
                f"{source}: proxy.jwt: HS256 needs secret_env (the variable holding the secret)"
                " and no public_key_file"
            )
        if jwt.algorithm == "RS256" and (not jwt.public_key_file or jwt.secret_env):
            raise ConfigurationError(
                f"{source}: proxy.jwt: RS256 needs public_key_file (a PEM file) and no secret_env"
            )
        if not jwt.claims:
            raise ConfigurationError(f"{source}: proxy.jwt.claims: map at least one claim to a tag")
    if settings.follow_interval > settings.follow_for:
        raise ConfigurationError(
            f"{source}: proxy.follow_interval={settings.follow_interval!r} is not allowed: at most"
            f" follow_for ({settings.follow_for!r})"
        )
    return settings


def check_upstream(base: str, what: str) -> None:
    """An upstream base URL: https anywhere, plain http only to a loopback address."""
    split = urlsplit(base)
    allowed = "an https:// URL, or http:// to a loopback address (127.0.0.1, ::1, localhost)"
    if split.scheme not in ("http", "https") or not split.hostname or split.query:
        raise ConfigurationError(f"{what}={base!r} is not allowed: {allowed}")
    if split.username or split.password:
        raise ConfigurationError(f"{what}: a URL with a user name or password is not allowed")
    if split.scheme == "http" and not is_loopback(split.hostname):
        raise ConfigurationError(f"{what}={base!r} is not allowed: {allowed}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def networks(entries: list[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)
