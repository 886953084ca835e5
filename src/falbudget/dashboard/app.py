"""The dashboard as a Starlette application: HTML pages (usable without JavaScript, every asset
served from here) and the JSON API under ``/api/v1`` over the same figures (``figures``).

Access (docs/dashboard.md): without a token only loopback clients are answered; with one,
every request carries it (``Authorization: Bearer TOKEN``, or HTTP Basic with the token as the
password, which a browser asks for). Write actions are POST forms carrying the admin token and
``confirm=yes``; each one done is appended to the audit log (JSON Lines).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from decimal import Decimal
from importlib import resources
from typing import TYPE_CHECKING, Any, cast, get_args
from urllib.parse import parse_qs

from falbudget.dashboard.config import DashboardSettings, default_audit_log
from falbudget.dashboard.figures import BadQuery, Figures, iso
from falbudget.errors import ConfigurationError, FalbudgetError, install_hint
from falbudget.ledger.base import HoldState

if TYPE_CHECKING:  # pragma: no cover
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Receive, Scope, Send

    from falbudget.guard.core import Guard
    from falbudget.report import Report

log = logging.getLogger("falbudget.dashboard")
API = "/api/v1"
MAX_FORM_BYTES = 4096
HOLD_STATES: tuple[str, ...] = get_args(HoldState)


def _loopback(host: str | None) -> bool:
    """Whether the peer ``host`` is this machine: 127.0.0.0/8, ::1, or an IPv4 loopback address
    mapped into IPv6 (::ffff:127.0.0.1, how a dual-stack socket shows a local IPv4 client)."""
    if host is None:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback


def _loopback_name(host: str) -> bool:
    """Whether a Host header (``name[:port]``, ``[v6]:port``) names this machine: localhost
    (or a name under .localhost) or a loopback address."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else ""
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    name = name.rstrip(".")
    return name == "localhost" or name.endswith(".localhost") or _loopback(name)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class _Access:
    """ASGI middleware: the token (or loopback) rule for every request of the dashboard."""

    def __init__(
        self, app: ASGIApp, token: str | None, client_ip: Callable[[Request], str] | None = None
    ) -> None:
        self.app, self.token, self.client_ip = app, token, client_ip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self._problem(scope)
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, message = problem
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        if status == 401:
            headers.append((b"www-authenticate", b'Basic realm="falbudget dashboard"'))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": message.encode() + b"\n"})

    def _problem(self, scope: Scope) -> tuple[int, str] | None:
        if self.token is None:
            if self.client_ip is not None:  # behind the proxy's trusted proxies: who they name
                from starlette.requests import Request

                host: str | None = self.client_ip(Request(scope))
            else:
                client = scope.get("client")
                host = client[0] if client else None
            if not _loopback(host):
                return 403, "the dashboard answers loopback clients only unless a token is set"
            name = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if name and not _loopback_name(name):
                # a page of another site whose name now resolves to 127.0.0.1 (DNS rebinding)
                # would read the figures: without a token, only a loopback name is answered
                return 403, (
                    f"Host {name[:100]!r} is not allowed without a token: open the dashboard"
                    " as localhost, 127.0.0.1 or [::1]"
                )
            return None
        given = _token(dict(scope["headers"]).get(b"authorization", b"").decode("latin-1"))
        if given is not None and _same(given, self.token):
            return None
        return 401, "a token is required: Authorization: Bearer TOKEN (or Basic, any user name)"


def _token(header: str) -> str | None:
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


class _Audit:
    """Appends one JSON line per write action to ``path`` (created with its folder)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, entry: Mapping[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self._lock:
            folder = os.path.dirname(self.path)
            if folder:
                os.makedirs(folder, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as file:
                file.write(line)
        log.info("dashboard action: %s", line.strip())


def create_dashboard(
    guard: Guard,
    settings: DashboardSettings | None = None,
    *,
    metrics: bool = False,
    client_ip: Callable[[Request], str] | None = None,
) -> Starlette:
    """The dashboard of ``guard`` (its ledger and caps, read at its clock) as an ASGI app; mount
    it anywhere (``falbudget proxy`` mounts it at /dashboard). The guard is not closed by it.

    ``metrics``: also serve ``/metrics`` (docs/metrics.md) under the dashboard's access rules,
    with the guard's ledger calls timed and its webhook deliveries counted (``falbudget serve``;
    the proxy serves its own).
    ``client_ip``: the caller's address the loopback rule judges (default: the peer's); the
    proxy passes its own, which follows X-Forwarded-For from its trusted proxies only, so that
    a reverse proxy on this machine does not make every client look local."""
    try:
        import jinja2
        from starlette.applications import Starlette
        from starlette.responses import HTMLResponse, JSONResponse
        from starlette.routing import Mount, Route
        from starlette.staticfiles import StaticFiles
    except ImportError:  # pragma: no cover - the extra is missing
        raise ConfigurationError(
            f"falbudget serve needs its extra: {install_hint('serve')}"
        ) from None
    from falbudget.dashboard import chart as charts

    settings = settings or DashboardSettings()
    figures = Figures(guard, settings.tz)
    audit = _Audit(settings.audit_log or default_audit_log())
    here = resources.files("falbudget.dashboard")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(here / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    from falbudget.cli.render import cents

    env.filters["cents"] = cents
    env.filters["when"] = _when
    env.filters["decimal"] = _decimal
    spec = json.loads((here / "openapi.json").read_text(encoding="utf-8"))

    def page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        root = request.scope.get("root_path", "")
        context.setdefault("now", iso(figures.now(), settings.tz))
        context.setdefault("title", "Not done" if status >= 400 else "falbudget")
        html = env.get_template(name).render(
            root=root, admin=settings.admin_token is not None, tz=settings.tz, **context
        )
        return HTMLResponse(html, status_code=status)

    def handled(
        endpoint: Callable[[Request], Response], *, api: bool
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await asyncio.to_thread(endpoint, request)
            except BadQuery as exc:
                if api:
                    return JSONResponse({"error": str(exc)}, status_code=400)
                return page(request, "error.html", 400, message=str(exc))
            except FalbudgetError as exc:
                log.warning("dashboard: %s: %s", request.url.path, exc)
                if api:
                    return JSONResponse({"error": str(exc)}, status_code=503)
                return page(request, "error.html", 503, message=str(exc))

        return run

    # -- pages ----------------------------------------------------------------------------
    def caps_page(request: Request) -> Response:
        return page(request, "caps.html", title="Caps", **figures.caps())

    def spend_page(request: Request) -> Response:
        since, until = request.query_params.get("since"), request.query_params.get("until")
        report = figures.report(since, until)
        data = figures.report_data(report)
        svgs: list[dict[str, Any]] = [
            {
                "title": f"{cap['cap']}: spend over time",
                "svg": charts.chart(report, line, f"{cap['cap']}: daily spend", f"c{i}"),
                "cap": cap,
            }
            for i, (line, cap) in enumerate(
                zip(report.chart_caps, _chart_cap_data(report, data), strict=True)
            )
        ]
        if not svgs:
            svgs = [
                {
                    "title": "Daily spend",
                    "svg": charts.chart(report, None, "daily spend", "c0"),
                    "cap": None,
                }
            ]
        return page(
            request,
            "spend.html",
            title="Spend",
            report=data,
            charts=svgs,
            picked={"since": since or data["since"][:10], "until": until or data["until"][:10]},
        )

    def activity_page(request: Request) -> Response:
        since, until = figures.window(
            request.query_params.get("since"), request.query_params.get("until")
        )
        return page(
            request,
            "activity.html",
            title="Activity",
            in_flight=figures.in_flight(),
            overruns=figures.overruns(since, until),
            reconciliation=figures.reconciliation(),
            refusals=figures.refusals(since, until, limit=50),
            since=iso(since, settings.tz),
            until=iso(until, settings.tz),
        )

    def keys_page(request: Request) -> Response:
        since, until = request.query_params.get("since"), request.query_params.get("until")
        report = figures.report(since, until, by_key=True)
        return page(request, "keys.html", title="Keys", **figures.keys(report))

    # -- write actions: a confirmation page (GET), then a POST with the admin token ----------
    def _client(request: Request) -> str | None:
        if client_ip is not None:
            return client_ip(request)
        return request.client.host if request.client else None

    def _record(request: Request, action: str, outcome: str, **details: Any) -> None:
        entry = {"at": figures.now(), "action": action, "outcome": outcome}
        audit.record({**entry, "client": _client(request), **details})

    async def _form(request: Request) -> dict[str, str] | None:
        """The fields of the posted form (the first value of each); None: over MAX_FORM_BYTES
        (read no further than that)."""
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return None
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {name: values[0] for name, values in fields.items()}

    async def _refused(request: Request, action: str, **details: Any) -> Response | None:
        """None when the form carries the admin token and confirm=yes; otherwise the refusal,
        recorded in the audit log (whatever the reason) with the client's address."""
        form = await _form(request)
        if form is None:
            status, message = 413, f"the form is too large: at most {MAX_FORM_BYTES} bytes"
        elif settings.admin_token is None:
            status, message = (
                403,
                "write actions are off: the dashboard has no admin token"
                " (set FALBUDGET_DASHBOARD_ADMIN_TOKEN, or the variable dashboard.admin_token_env"
                " names)",
            )
        elif not _same(form.get("admin_token", ""), settings.admin_token):
            status, message = 403, "the admin token is not right"
        elif form.get("confirm") != "yes":
            status, message = 400, "confirm=yes is required: tick the box"
        else:
            return None
        _record(request, action, "refused", reason=message, **details)
        return page(request, "error.html", status, message=message)

    def _failed(request: Request, action: str, exc: FalbudgetError, **details: Any) -> Response:
        log.warning("dashboard: %s: %s", request.url.path, exc)
        _record(request, action, "failed", reason=str(exc), **details)
        return page(request, "error.html", 503, message=str(exc))

    def release_confirm(request: Request) -> Response:
        overdue = [h for h in figures.in_flight()["holds"] if h["overdue"]]
        return page(request, "release.html", title="Release expired holds", overdue=overdue)

    async def release_do(request: Request) -> Response:
        refused = await _refused(request, "release-expired")
        if refused is not None:
            return refused
        try:
            closed = await asyncio.to_thread(guard.release_expired)
        except FalbudgetError as exc:
            return _failed(request, "release-expired", exc)
        _record(request, "release-expired", "done", holds=[h.id for h in closed])
        rows = [figures.hold_row(h) for h in closed]
        return page(request, "done.html", title="Released expired holds", closed=rows, key=None)

    def revoke_confirm(request: Request) -> Response:
        key_id = request.path_params["key_id"]
        known = [k for k in guard.ledger.api_keys() if k.id == key_id]
        if not known:
            return page(request, "error.html", 404, message=f"no key {key_id!r}")
        return page(request, "revoke.html", title=f"Revoke key {key_id}", key=known[0])

    async def revoke_do(request: Request) -> Response:
        from falbudget.errors import KeyNotFound

        key_id = request.path_params["key_id"]
        refused = await _refused(request, "revoke-key", key=key_id)
        if refused is not None:
            return refused
        try:
            key = await asyncio.to_thread(guard.ledger.revoke_key, key_id, now=figures.now())
        except KeyNotFound:
            _record(request, "revoke-key", "refused", reason="no such key", key=key_id)
            return page(request, "error.html", 404, message=f"no key {key_id!r}")
        except FalbudgetError as exc:
            return _failed(request, "revoke-key", exc, key=key_id)
        _record(request, "revoke-key", "done", key=key.id)
        return page(request, "done.html", title=f"Revoked key {key.id}", closed=None, key=key.id)

    # -- the JSON API ---------------------------------------------------------------------
    def api_status(request: Request) -> Response:
        return JSONResponse(figures.caps())

    def api_report(request: Request) -> Response:
        q = request.query_params
        return JSONResponse(figures.report_data(figures.report(q.get("since"), q.get("until"))))

    def api_holds(request: Request) -> Response:
        return JSONResponse(figures.in_flight())

    def api_history(request: Request) -> Response:
        q = request.query_params
        limit = _limit(q.get("limit", "100"))
        states: list[HoldState] = []
        for state in q.getlist("state"):
            if state not in HOLD_STATES:
                allowed = ", ".join(HOLD_STATES)
                raise BadQuery(f"state={state!r} is not allowed: one of {allowed}")
            states.append(cast("HoldState", state))
        page = figures.history(cursor=q.get("cursor"), limit=limit, states=states or None)
        return JSONResponse(page)

    def api_keys(request: Request) -> Response:
        q = request.query_params
        report = figures.report(q.get("since"), q.get("until"), by_key=True)
        return JSONResponse(figures.keys(report))

    def api_activity(request: Request) -> Response:
        q = request.query_params
        since, until = figures.window(q.get("since"), q.get("until"))
        return JSONResponse(
            {
                "since": iso(since, settings.tz),
                "until": iso(until, settings.tz),
                "overruns": figures.overruns(since, until),
                "reconciliation": figures.reconciliation(),
            }
        )

    def api_refusals(request: Request) -> Response:
        q = request.query_params
        since, until = figures.window(q.get("since"), q.get("until"))
        return JSONResponse(figures.refusals(since, until, limit=_limit(q.get("limit", "100"))))

    async def api_spec(request: Request) -> Response:
        return JSONResponse(spec)

    def api_index(request: Request) -> Response:
        return page(request, "api.html", title="API")

    routes = [
        Route("/", handled(caps_page, api=False)),
        Route("/spend", handled(spend_page, api=False)),
        Route("/activity", handled(activity_page, api=False)),
        Route("/keys", handled(keys_page, api=False)),
        Route("/api", handled(api_index, api=False)),
        Route("/actions/release-expired", handled(release_confirm, api=False)),
        Route("/actions/release-expired", release_do, methods=["POST"]),
        Route("/keys/{key_id}/revoke", handled(revoke_confirm, api=False)),
        Route("/keys/{key_id}/revoke", revoke_do, methods=["POST"]),
        Route(f"{API}/status", handled(api_status, api=True)),
        Route(f"{API}/report", handled(api_report, api=True)),
        Route(f"{API}/holds", handled(api_holds, api=True)),
        Route(f"{API}/history", handled(api_history, api=True)),
        Route(f"{API}/keys", handled(api_keys, api=True)),
        Route(f"{API}/activity", handled(api_activity, api=True)),
        Route(f"{API}/refusals", handled(api_refusals, api=True)),
        Route(f"{API}/openapi.json", api_spec),
        Mount("/static", StaticFiles(directory=str(here / "static")), name="static"),
    ]
    lifespan = None
    if metrics:
        from falbudget.metrics import Metrics

        exposition = Metrics(guard)
        if guard.notifier is not None:
            guard.notifier.on_result = exposition.count_delivery
        routes.insert(0, exposition.route("/metrics"))

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            exposition.instrument()  # from now on the guard's ledger calls are timed
            yield

    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(_Access, token=settings.token, client_ip=client_ip)
    app.state.figures = figures
    return app


def _limit(raw: str) -> int:
    """A ``limit`` query value: ASCII digits only (``str.isdigit`` also takes "²", which
    ``int`` refuses); the range is checked by the figures."""
    if not (raw.isascii() and raw.isdigit()):
        raise BadQuery(f"limit={raw!r} is not allowed: a whole number from 1 to 1000")
    return int(raw)


def _decimal(text: str) -> Decimal:
    """A money string of the figures ("1.20") as a Decimal, for a page's arithmetic (the
    gauge's bounds): never a float."""
    return Decimal(text)


def _chart_cap_data(report: Report, data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The JSON data of each cap the chart draws (``report.chart_caps``), in its order."""
    by_bucket = {(c["cap"], c["window_key"]): c for c in data["caps"]}
    out = []
    for line in report.chart_caps:
        f = line.forecast
        label = f.cap.label(f.bucket)
        out.append(by_bucket.get((label, f.bucket.partition("|")[2]), {"cap": label}))
    return out


def _when(text: str | None) -> str:
    """An ISO time as a page shows it: '2026-12-01 00:00 UTC' (an offset other than UTC is
    kept: '2026-12-01 00:00+01:00')."""
    if not text:
        return ""
    offset = text[19:]
    return text[:16].replace("T", " ") + (" UTC" if offset in ("+00:00", "Z") else offset)


__all__ = ["create_dashboard"]
