"""``falbudget proxy``: fal's server-proxy protocol with a budget in front of every spending call.

A Starlette application. Each request names its real target in ``x-fal-target-url`` (as
``@fal-ai/client`` sends it with ``proxyUrl``); the proxy checks the caller's identity and the
target, holds the price of every spending call (queue submit, synchronous run, stream) in the
ledger before forwarding it, adds the fal key itself, and follows each accepted request to its end
so that its hold settles even when the client never comes back. docs/proxy.md has the protocol
and where it differs from ``@fal-ai/server-proxy``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from falbudget.errors import (
    BudgetExceeded,
    ConfigurationError,
    FalbudgetError,
    HoldClosed,
    IdempotencyConflict,
    InvalidArguments,
    LedgerError,
    LedgerUnavailable,
    MissingTag,
    UnknownEndpoint,
    install_hint,
)
from falbudget.money import format_usd
from falbudget.proxy.config import ProxySettings, is_loopback, networks, parse_settings
from falbudget.proxy.identity import JwtVerifier, TokenRefused
from falbudget.proxy.keys import digest, looks_like_key
from falbudget.proxy.targets import SPENDING, Target, TargetRefused, resolve

if TYPE_CHECKING:  # pragma: no cover
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from falbudget.dashboard.config import DashboardSettings
    from falbudget.guard import Guard, Hold
    from falbudget.metrics import Metrics

log = logging.getLogger("falbudget.proxy")

TARGET_HEADER = "x-fal-target-url"
FORWARDED_PLAIN = ("accept", "content-type", "user-agent")
DROPPED_ANSWER_HEADERS = frozenset(
    {"content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive"}
)
APP_NAMESPACES = ("workflows", "comfy")


class _BodyTooLarge(Exception):
    pass


@dataclass
class _Tracked:
    """An accepted queue request this worker follows."""

    hold: Hold
    target: Target
    started: bool = False  # a status answer said IN_PROGRESS or COMPLETED
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Outcomes:
    """What became of each hold (settled, released, kept), by hold id and fal request id; tests
    wait on it instead of sleeping."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}
        self._changed = threading.Condition()

    def record(self, keys: tuple[str | None, ...], outcome: str) -> None:
        with self._changed:
            for key in keys:
                if key:
                    self._seen[key] = outcome
            self._changed.notify_all()

    def get(self, key: str) -> str | None:
        with self._changed:
            return self._seen.get(key)

    def wait(self, key: str, timeout: float = 60.0) -> str:
        """The outcome of hold or request ``key`` once there is one; ``timeout`` only stops a
        test that is already failing (AssertionError)."""
        with self._changed:
            found = self._changed.wait_for(lambda: key in self._seen, timeout)
            assert found, f"no outcome for {key} within {timeout} s"
            return self._seen[key]


class Proxy:
    """The proxy's state in one worker: the guard, the upstream client and the followers."""

    def __init__(
        self,
        guard: Guard,
        settings: ProxySettings,
        fal_key: str,
        jwt: JwtVerifier | None = None,
    ) -> None:
        self.guard = guard
        self._jwt = jwt
        self.settings = settings
        self._fal_key = fal_key
        self._trusted = networks(settings.trusted_proxies)
        self._client: httpx.AsyncClient | None = None
        self._tracked: dict[str, _Tracked] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.outcomes = Outcomes()
        self.metrics: Metrics | None = None
        """The proxy's Prometheus metrics (None: proxy.metrics_path is null)."""
        self._metrics_allow = networks(settings.metrics_allow)

    # -- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        import httpx

        timeout = httpx.Timeout(self.settings.timeout, connect=self.settings.connect_timeout)
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        # trust_env=False: an HTTP(S)_PROXY in the environment must not see the fal key
        self._client = httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)
        await self._resume()

    async def _resume(self) -> None:
        """Follow again the queue requests a proxy had accepted and not seen end (a restart):
        the submitted holds with a fal request id and the ``ip`` tag every proxy request
        carries. With several workers each follows them; the first to see the end settles."""
        from falbudget.guard.core import Hold

        try:
            rows = await asyncio.to_thread(self.guard.ledger.holds, states=("submitted",))
        except Exception as exc:  # the proxy still serves; those holds expire as documented
            log.warning("falbudget proxy: could not read submitted holds to follow: %s", exc)
            return
        for row in rows:
            request_id = row.request_id
            if request_id is None or "ip" not in row.tags or request_id in self._tracked:
                continue
            hold = Hold(self.guard, row, None, False)
            target = resolve(
                f"https://queue.fal.run/{_app_base(row.endpoint)}/requests/{request_id}/status",
                "GET",
                self.settings.upstreams,
            )
            tracked = _Tracked(hold, target)
            self._tracked[request_id] = tracked
            self._spawn(self._follower(tracked, request_id), f"follow:{request_id}")

    async def stop(self) -> None:
        """Stop following (the holds stay submitted in the ledger, valid until they expire),
        let settles and releases under way finish, close the upstream client and the ledger."""
        for tracked in self._tracked.values():
            tracked.done.set()
        followers = [t for t in self._tasks if t.get_name().startswith("follow:")]
        for task in followers:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
        await asyncio.to_thread(self.guard.close)

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:  # pragma: no cover - started by the lifespan
            raise RuntimeError("the proxy has not started")
        return self._client

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        """Run ``coro`` as a task that outlives the request that started it (a settle after the
        client hung up must still happen)."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- identity --------------------------------------------------------------------------
    def client_ip(self, request: Request) -> str:
        """The caller's address: the peer's, or, when the peer is a trusted proxy, the nearest
        address in X-Forwarded-For that is not a trusted proxy."""
        peer = request.client.host if request.client else "unknown"
        if not self._is_trusted(peer):
            return peer
        forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return peer  # a malformed chain: trust only the peer
            if not self._is_trusted(hop):
                return hop
        return hops[0] if hops else peer

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    async def identify(self, request: Request) -> dict[str, str]:
        """The tags of the caller (always with ``ip``), or TokenRefused: no identity the
        configuration accepts. A bearer token, when sent, must be valid: a bad one is never
        read as anonymous traffic. A virtual key (fbk_...) carries its tags and ``key``."""
        ip = self.client_ip(request)
        authorization = request.headers.get("authorization", "").strip()
        if authorization:
            scheme, _, token = authorization.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise TokenRefused("the authorization header must be 'Bearer <token>'")
            if looks_like_key(token):
                key = await asyncio.to_thread(self.guard.ledger.find_key, digest(token))
                if key is None:
                    raise TokenRefused("unknown key")
                if key.revoked_at is not None:
                    raise TokenRefused(f"key {key.id} has been revoked")
                return {**key.tags, "key": key.id, "ip": ip}
            if self._jwt is None:
                raise TokenRefused("not a falbudget key, and this proxy verifies no JWTs")
            return {**self._jwt.tags(token), "ip": ip}
        header = self.settings.trusted_header
        if header is not None:
            value = request.headers.get(header.name, "").strip()
            if value:
                return {header.tag: value, "ip": ip}
        if self.settings.anonymous:
            return {"ip": ip}
        raise TokenRefused("no identity: send a token or key the proxy accepts")

    # -- the request -----------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        entry: dict[str, Any] = {"method": request.method}
        try:
            response = await self._handle(request, entry)
        except Exception:
            log.exception("falbudget proxy: internal error")
            entry["decision"] = "error"
            response = _json(500, {"detail": "internal error in falbudget proxy"})
        entry["status"] = response.status_code
        entry["ms"] = round((time.perf_counter() - started) * 1000, 2)
        log.info("%s", json.dumps(entry, sort_keys=True))
        if self.metrics is not None:
            self.metrics.count_request(str(entry.get("decision", "unknown")))
        return response

    async def serve_metrics(self, request: Request) -> Response:
        """``/metrics`` for a scraper on loopback or in proxy.metrics_allow; 403 otherwise."""
        assert self.metrics is not None
        address = self.client_ip(request)
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            ip = None
        if ip is None or not (ip.is_loopback or any(ip in net for net in self._metrics_allow)):
            return _json(
                403,
                {
                    "detail": f"metrics are served to loopback and proxy.metrics_allow, not to"
                    f" {address}",
                    "error": "forbidden",
                },
            )
        return await self.metrics.endpoint()(request)

    async def _handle(self, request: Request, entry: dict[str, Any]) -> Response:
        url = request.headers.get(TARGET_HEADER)
        if not url:
            entry["decision"] = "refused: no target"
            return _json(400, {"detail": f"missing the {TARGET_HEADER} header"})
        try:
            target = resolve(url, request.method, self.settings.upstreams)
        except TargetRefused as exc:
            entry["decision"] = "refused: target"
            return _json(exc.status, {"detail": str(exc), "error": "target_not_allowed"})
        entry.update(kind=target.kind, endpoint=target.endpoint)
        if target.request_id:
            entry["request_id"] = target.request_id
        try:
            tags = await self.identify(request)
        except TokenRefused as exc:
            entry["decision"] = "refused: identity"
            return _json(401, {"detail": str(exc), "error": "unauthorized"})
        except LedgerError as exc:  # the key could not be looked up: fail closed
            entry["decision"] = "refused: ledger"
            return _json(
                503, {"detail": f"the budget ledger is unavailable: {exc}", "error": "ledger"}
            )
        entry["tags"] = tags
        try:
            body = await self._body(request)
        except _BodyTooLarge:
            entry["decision"] = "refused: body too large"
            return _json(
                413,
                {"detail": f"the request body is over {self.settings.max_body_bytes} bytes"},
            )
        if target.kind in SPENDING:
            return await self._spend(request, target, tags, body, entry)
        entry["decision"] = "passed"
        return await self._pass(request, target, body)

    async def _body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise _BodyTooLarge
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    def _headers(self, request: Request) -> dict[str, str]:
        """What is sent upstream: the caller's x-fal-* headers (not the target), accept,
        content-type and user-agent; the fal key; never the caller's authorization."""
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.startswith("x-fal-") and name != TARGET_HEADER
        }
        for name in FORWARDED_PLAIN:
            if name in request.headers:
                headers[name] = request.headers[name]
        from falbudget import __version__

        headers["authorization"] = f"Key {self._fal_key}"
        headers["x-fal-client-proxy"] = f"falbudget/{__version__}"
        return headers

    async def _send(self, request: Request, target: Target, body: bytes) -> httpx.Response:
        upstream = self.client.build_request(
            request.method,
            target.url,
            headers=self._headers(request),
            content=body if request.method != "GET" else None,
        )
        return await self.client.send(upstream, stream=True)

    # -- spending calls --------------------------------------------------------------------
    async def _spend(
        self,
        request: Request,
        target: Target,
        tags: dict[str, str],
        body: bytes,
        entry: dict[str, Any],
    ) -> Response:
        try:
            arguments = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            entry["decision"] = "refused: bad JSON"
            return _json(400, {"detail": f"the request body is not JSON: {exc}"})
        if not isinstance(arguments, dict):
            entry["decision"] = "refused: bad JSON"
            return _json(
                400, {"detail": f"the request body must be a JSON object, not {_kind(arguments)}"}
            )
        try:
            hold = await asyncio.to_thread(self._acquire, target.endpoint, arguments, tags)
        except FalbudgetError as exc:
            scope = {**tags, "endpoint": target.endpoint}
            status, payload = _refusal(exc, scope, self.guard._now())
            entry["decision"] = f"refused: {payload['error']}"
            if isinstance(exc, BudgetExceeded):
                entry["price"] = format_usd(exc.amount)
            return _json(status, payload)
        entry.update(price=format_usd(hold.amount), hold=hold.id, decision="held")
        try:
            answer = await self._send(request, target, body)
        except Exception as exc:
            action = _transport_action(exc, target.kind)
            await self._close(hold, action, None)
            entry["decision"] = f"upstream failed: {action}"
            return _json(
                504 if _is_timeout(exc) else 502,
                {"detail": f"fal did not answer: {type(exc).__name__}", "error": "upstream"},
            )
        if answer.status_code >= 400:
            content = await _read(answer)
            action = _answer_action(answer.status_code, accepted=False)
            await self._close(hold, action, None)
            entry["decision"] = f"fal refused: {action}"
            return _relay(answer, content)
        if target.kind == "submit":
            content = await _read(answer)
            request_id = _field(content, "request_id")
            if request_id is None:
                entry["decision"] = "submitted: no request id"
                log.warning(
                    "falbudget proxy: submit of hold %s: no request_id in fal's answer", hold.id
                )
                return _relay(answer, content)
            entry.update(request_id=request_id, decision="submitted")
            await hold.amark_submitted(request_id)
            self._follow(hold, target, request_id, content)
            return _relay(answer, content)
        entry["decision"] = "forwarded"
        return self._stream(answer, lambda: self._close(hold, "settle", None))

    def _acquire(self, endpoint: str, arguments: dict[str, Any], tags: dict[str, str]) -> Hold:
        """Hold the price, then mark the hold submitted before any byte leaves (a death from
        then on counts it as spent): one trip to a worker thread for both steps."""
        hold = self.guard.reserve(endpoint, arguments, **tags).acquire()
        try:
            hold.mark_submitted()
        except BaseException:
            with contextlib.suppress(Exception):
                hold.release()  # nothing was sent
            raise
        return hold

    async def _close(self, hold: Hold, action: str, request_id: str | None) -> None:
        """Settle, release or keep ``hold``; never raises (logged), records the outcome."""
        try:
            if action == "settle":
                await hold.asettle_billed()  # fal's bill when the guard reads it, else the quote
            elif action == "release":
                await hold.arelease()
        except HoldClosed as exc:
            log.warning("falbudget proxy: hold %s: %s", hold.id, exc)
            action = hold.state
        except Exception:
            log.exception("falbudget proxy: could not %s hold %s", action, hold.id)
            action = "failed"
        outcome = {"settle": "settled", "release": "released", "keep": "kept"}.get(action, action)
        self.outcomes.record((hold.id, request_id or hold.request_id), outcome)

    # -- calls that spend nothing ------------------------------------------------------------
    async def _pass(self, request: Request, target: Target, body: bytes) -> Response:
        try:
            answer = await self._send(request, target, body)
        except Exception as exc:
            return _json(
                504 if _is_timeout(exc) else 502,
                {"detail": f"fal did not answer: {type(exc).__name__}", "error": "upstream"},
            )
        tracked = self._tracked.get(target.request_id or "")
        if target.kind == "status" and not target.path.endswith("/stream"):
            content = await _read(answer)
            if tracked is not None and answer.status_code == 200:
                await self._observe_status(tracked, content)
            return _relay(answer, content)
        if target.kind == "cancel":
            content = await _read(answer)
            if tracked is not None and answer.status_code == 202 and not tracked.started:
                await self._finish(tracked, "release")
            return _relay(answer, content)
        if target.kind == "result" and tracked is not None:
            content = await _read(answer)
            if answer.status_code == 200:
                await self._finish(tracked, "settle")
            elif answer.status_code >= 500 or answer.status_code == 422:
                await self._finish(tracked, _answer_action(answer.status_code, accepted=True))
            return _relay(answer, content)
        return self._stream(answer, None)

    def _stream(
        self, answer: httpx.Response, on_end: Callable[[], Awaitable[None]] | None
    ) -> Response:
        from starlette.responses import StreamingResponse

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in answer.aiter_bytes():
                    yield chunk
            finally:
                # run to the end even if the client hung up (this generator is then cancelled)
                self._spawn(_after_stream(answer, on_end), "stream-end")

        return StreamingResponse(
            body(), status_code=answer.status_code, headers=_answer_headers(answer)
        )

    # -- following accepted requests ---------------------------------------------------------
    def _follow(self, hold: Hold, target: Target, request_id: str, content: bytes) -> None:
        status_url = _field(content, "status_url")
        try:
            status_target = resolve(status_url or "", "GET", self.settings.upstreams)
            if status_target.kind != "status":
                raise TargetRefused(412, "not a status URL")
        except TargetRefused:
            base = _app_base(target.endpoint)
            status_target = resolve(
                f"https://queue.fal.run/{base}/requests/{request_id}/status",
                "GET",
                self.settings.upstreams,
            )
        tracked = _Tracked(hold, status_target)
        self._tracked[request_id] = tracked
        self._spawn(self._follower(tracked, request_id), f"follow:{request_id}")

    async def _follower(self, tracked: _Tracked, request_id: str) -> None:
        settings = self.settings
        deadline = time.monotonic() + settings.follow_for
        headers = {"authorization": f"Key {self._fal_key}", "accept": "application/json"}
        try:
            while time.monotonic() < deadline:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(tracked.done.wait(), settings.follow_interval)
                if tracked.done.is_set():
                    return
                try:
                    answer = await self.client.get(tracked.target.url, headers=headers)
                except Exception as exc:
                    log.info("falbudget proxy: status of %s: %s", request_id, type(exc).__name__)
                    continue
                if answer.status_code != 200:
                    continue
                await self._observe_status(tracked, answer.content)
            if not tracked.done.is_set():
                log.warning(
                    "falbudget proxy: %s not finished after %s s; hold %s stays submitted",
                    request_id,
                    settings.follow_for,
                    tracked.hold.id,
                )
                self.outcomes.record((tracked.hold.id, request_id), "kept")
        finally:
            self._tracked.pop(request_id, None)

    async def _observe_status(self, tracked: _Tracked, content: bytes) -> None:
        """A status answer seen (by the follower or passed through to a client)."""
        state = _field(content, "status")
        if state == "IN_PROGRESS":
            tracked.started = True
        if state != "COMPLETED" or tracked.done.is_set():
            return
        error_type = _field(content, "error_type")
        if error_type == "cancelled" and not tracked.started:
            await self._finish(tracked, "release")
            return
        tracked.started = True
        result_url = tracked.target.url.rsplit("/status", 1)[0]
        headers = {"authorization": f"Key {self._fal_key}", "accept": "application/json"}
        try:
            answer = await self.client.get(result_url, headers=headers)
        except Exception as exc:
            log.info("falbudget proxy: result of %s: %s", tracked.target.request_id, exc)
            return
        if answer.status_code == 200:
            await self._finish(tracked, "settle")
        elif answer.status_code >= 400:
            await self._finish(tracked, _answer_action(answer.status_code, accepted=True))

    async def _finish(self, tracked: _Tracked, action: str) -> None:
        if tracked.done.is_set():
            return
        tracked.done.set()
        await self._close(tracked.hold, action, tracked.hold.request_id)


# -- helpers -----------------------------------------------------------------------------------


def _refusal(
    exc: FalbudgetError, tags: Mapping[str, str], now: float
) -> tuple[int, dict[str, Any]]:
    if isinstance(exc, BudgetExceeded):
        cap = exc.cap
        return 402, {
            "detail": str(exc),
            "error": "budget_exceeded",
            "cap": cap.label(cap.bucket(tags, now)),
            "scope": cap.scope_value(tags),
            "window": cap.window,
            "price": format_usd(exc.amount),
            "spent": format_usd(exc.spent),
            "held": format_usd(exc.held),
            "remaining": format_usd(exc.remaining),
        }
    if isinstance(exc, InvalidArguments):
        return 400, {
            "detail": str(exc),
            "error": "invalid_arguments",
            "parameter": exc.parameter,
            "allowed": exc.allowed,
        }
    if isinstance(exc, UnknownEndpoint):
        return 403, {"detail": f"{exc}; the proxy refuses unpriced endpoints", "error": "unpriced"}
    if isinstance(exc, MissingTag | IdempotencyConflict | ConfigurationError):
        return 403, {"detail": str(exc), "error": "refused"}
    if isinstance(exc, LedgerUnavailable):
        return 503, {"detail": f"the budget ledger is unavailable: {exc}", "error": "ledger"}
    return 503, {"detail": str(exc), "error": "ledger"}


def _answer_action(status: int, *, accepted: bool) -> str:
    from falbudget.guard.fal import answer_policy

    return answer_policy(status, accepted=accepted)


def _transport_action(exc: BaseException, kind: str) -> str:
    from falbudget.guard.fal import transport_policy

    return transport_policy(exc, accepted=False, call=kind)


def _is_timeout(exc: BaseException) -> bool:
    import httpx

    return isinstance(exc, httpx.TimeoutException)


async def _read(answer: httpx.Response) -> bytes:
    try:
        return await answer.aread()
    finally:
        await answer.aclose()


async def _after_stream(
    answer: httpx.Response, on_end: Callable[[], Awaitable[None]] | None
) -> None:
    with contextlib.suppress(Exception):
        await answer.aclose()
    if on_end is not None:
        await on_end()


def _answer_headers(answer: httpx.Response) -> dict[str, str]:
    return {
        name: value
        for name, value in answer.headers.items()
        if name.lower() not in DROPPED_ANSWER_HEADERS
    }


def _relay(answer: httpx.Response, content: bytes) -> Response:
    from starlette.responses import Response

    return Response(content, status_code=answer.status_code, headers=_answer_headers(answer))


def _json(status: int, payload: Mapping[str, Any]) -> Response:
    from starlette.responses import JSONResponse

    return JSONResponse(dict(payload), status_code=status)


def _field(content: bytes, name: str) -> Any:
    try:
        data = json.loads(content)
    except ValueError:
        return None
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _kind(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean"}.get(type(value), "a number")


def _app_base(endpoint: str) -> str:
    parts = endpoint.split("/")
    return "/".join(parts[: 3 if parts[0] in APP_NAMESPACES else 2])


# -- building the application -------------------------------------------------------------------


def create_app(
    guard: Guard,
    settings: ProxySettings,
    fal_key: str,
    *,
    base_dir: str = ".",
    source: str = "<config>",
    on_ready: Callable[[Proxy], None] | None = None,
    dashboard: DashboardSettings | None = None,
) -> Starlette:
    """The ASGI application for ``guard`` and ``settings``; ``fal_key`` is sent to fal.
    ``base_dir``: where relative paths in the settings (proxy.jwt.public_key_file) start;
    ``source`` names the configuration in errors. ``dashboard``: also serve the dashboard of
    the same guard under /dashboard (configuration: ``dashboard.in_proxy: true``)."""
    try:
        from starlette.applications import Starlette
        from starlette.middleware import Middleware
        from starlette.middleware.cors import CORSMiddleware
        from starlette.routing import BaseRoute, Mount, Route
    except ImportError:  # pragma: no cover - the extra is missing
        raise ConfigurationError(
            f"falbudget proxy needs its extra: {install_hint('proxy')}"
        ) from None

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]
    jwt = None
    if settings.jwt is not None:
        jwt = JwtVerifier(settings.jwt, base_dir, guard._now, source)
    proxy = Proxy(guard, settings, fal_key, jwt)
    routes: list[BaseRoute] = [Route(settings.route, proxy.handle, methods=methods)]
    if settings.metrics_path is not None:
        from falbudget.metrics import Metrics

        proxy.metrics = Metrics(guard)
        if guard.notifier is not None:
            guard.notifier.on_result = proxy.metrics.count_delivery
        routes.insert(0, Route(settings.metrics_path, proxy.serve_metrics, methods=["GET"]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if proxy.metrics is not None:  # from now on the guard's ledger calls are timed
            proxy.metrics.instrument()
        await proxy.start()
        if on_ready is not None:
            on_ready(proxy)
        try:
            yield
        finally:
            await proxy.stop()

    middleware = []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "PUT", "OPTIONS"],
                allow_headers=["*"],
                expose_headers=["x-fal-request-id"],
                max_age=600,
            )
        )
    if dashboard is not None:
        from falbudget.dashboard.app import create_dashboard
        from falbudget.dashboard.config import MOUNT

        routes.append(Mount(MOUNT, create_dashboard(guard, dashboard, client_ip=proxy.client_ip)))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.proxy = proxy
    return app


@dataclass(frozen=True)
class Loaded:
    guard: Guard
    settings: ProxySettings
    fal_key: str
    source: str
    dashboard: DashboardSettings | None = None

    def app(self) -> Starlette:
        base_dir = os.path.dirname(os.path.abspath(self.source))
        return create_app(
            self.guard,
            self.settings,
            self.fal_key,
            base_dir=base_dir,
            source=self.source,
            dashboard=self.dashboard,
        )


def load(config: str | None = None, **overrides: Any) -> Loaded:
    """The guard, the proxy settings and the fal key from configuration file ``config`` (or
    FALBUDGET_CONFIG); ConfigurationError for anything missing or wrong."""
    from falbudget.guard.config import load_config

    loaded = load_config(config)
    settings = parse_settings(loaded.proxy, loaded.source)
    fal_key = os.environ.get(settings.fal_key_env, "").strip()
    if not fal_key:
        raise ConfigurationError(
            f"{loaded.source}: the fal key: set {settings.fal_key_env} in the proxy's environment"
            " (proxy.fal_key_env names the variable)"
        )
    from falbudget.dashboard.config import parse_section

    base_dir = os.path.dirname(os.path.abspath(loaded.source))
    board = parse_section(loaded.dashboard, loaded.source, base_dir)
    guard = loaded.build_guard(**overrides)
    return Loaded(guard, settings, fal_key, loaded.source, board if board.in_proxy else None)


def app_from_environment() -> Starlette:
    """The factory each uvicorn worker calls (``falbudget proxy --workers N``): the configuration
    file named by FALBUDGET_CONFIG."""
    return load().app()


__all__ = ["Outcomes", "Proxy", "app_from_environment", "create_app", "is_loopback", "load"]
