"""One client for fal's Platform API (https://api.fal.ai/v1, ``Authorization: Key ...``).

It serves the model catalog, pricing, the price estimate and billing events; the reconcile
fetcher and ``falbudget pricing sync`` both run on it. What every request gets:

* the base URL is ``https://`` anywhere, ``http://`` only to this machine (127.0.0.1,
  localhost, [::1]: the tests' fake server); ``FALBUDGET_FAL_API_URL`` points it elsewhere;
* a loopback host is reached directly, whatever the proxy variables say; an https host goes
  through the proxy the environment names, as a CONNECT tunnel (the key stays inside TLS);
* no redirect is followed (the key would go with it): a 3xx is an error naming its target;
* a total deadline per attempt (``timeout_s``, the answer's last byte included: a socket
  watchdog cuts an answer that trickles) and a size cap on the answer;
* 429 and 5xx answers are tried again, at most ``retries`` times, waiting as ``Retry-After``
  asks or else 0.5 s, 1 s, 2 s, ... (at most 8 s); the waits of one request total at most
  ``retry_budget_s`` (60 s): a wait past it is not made, the error comes at once and says what
  fal asked. One request therefore ends within (retries + 1) x timeout_s + retry_budget_s;
* the key never appears in an error (every part of ``id:secret`` is masked).

Answers are parsed with numbers as :class:`decimal.Decimal` (never float); unknown fields are
left to the caller to ignore.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from falbudget.errors import FalbudgetError, install_hint

if TYPE_CHECKING:  # imported when a client is made: reading a billing file needs no httpx
    import httpx

DEFAULT_API_URL: Final = "https://api.fal.ai/v1"
API_URL_ENV: Final = "FALBUDGET_FAL_API_URL"
KEY_ENV: Final = "FAL_KEY"
MAX_ANSWER_BYTES: Final = 64 * 1024 * 1024
DEFAULT_TIMEOUT_S: Final = 60.0
DEFAULT_RETRIES: Final = 3
DEFAULT_RETRY_BUDGET_S: Final = 60.0
BACKOFF_FIRST_S: Final = 0.5
BACKOFF_MAX_S: Final = 8.0
RETRIED: Final = frozenset({429, 500, 502, 503, 504})
"""Statuses tried again. 501 (not implemented) and other 5xx are final; all 5xx are unbilled."""

_sleep: Callable[[float], None] = time.sleep
"""How the client waits between attempts (tests replace it to record the waits)."""


class PlatformApiError(FalbudgetError):
    """fal's Platform API could not be reached, refused the request or answered nonsense.
    ``status`` is the HTTP status when there was one. The message never contains the key."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def api_url_from_env(environ: Mapping[str, str] | None = None) -> str:
    """FALBUDGET_FAL_API_URL, else https://api.fal.ai/v1."""
    env = os.environ if environ is None else environ
    return env.get(API_URL_ENV, "").strip() or DEFAULT_API_URL


def api_key_from_env(
    environ: Mapping[str, str] | None = None,
    *,
    error: type[PlatformApiError] = PlatformApiError,
    purpose: str = "reading fal's Platform API needs an API key",
) -> str:
    """The key fal_client would use: FAL_KEY, else FAL_KEY_ID:FAL_KEY_SECRET."""
    env = os.environ if environ is None else environ
    key = env.get(KEY_ENV, "").strip()
    if key:
        return key
    key_id, secret = env.get("FAL_KEY_ID", "").strip(), env.get("FAL_KEY_SECRET", "").strip()
    if key_id and secret:
        return f"{key_id}:{secret}"
    raise error(
        f"FAL_KEY is not set: {purpose} (set FAL_KEY, or FAL_KEY_ID and FAL_KEY_SECRET, as for"
        " fal_client)"
    )


def key_id_of(api_key: str) -> str:
    """The public half of an ``id:secret`` key (what a synced table may name), else ``"key"``."""
    head, sep, _ = api_key.partition(":")
    return head if sep and head else "key"


def loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(base: str, error: type[PlatformApiError] = PlatformApiError) -> None:
    """https:// anywhere; http:// only to this machine (a local fake in tests): the key must
    not cross a network in clear text."""
    try:
        parts = urlsplit(base)
        scheme, host = parts.scheme, parts.hostname
    except (ValueError, TypeError):
        scheme, host = "", None
    if host and (scheme == "https" or (scheme == "http" and loopback(host))):
        return
    raise error(
        f"base URL {base!r} is not allowed: an https:// URL (http:// only to this machine:"
        " 127.0.0.1, localhost or [::1]; the admin key must not cross a network in clear text)"
    )


def scrub(text: str, secret: str) -> str:
    for part in {secret, *secret.split(":")}:
        if len(part) >= 4:
            text = text.replace(part, "***")
    return text


def loads(text: str) -> Any:
    """JSON with every number a Decimal or an int: money never passes through a float."""
    return json.loads(text, parse_float=Decimal)


def retry_after_s(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), else None."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    return max(0.0, moment.timestamp() - time.time())


class PlatformClient:
    """A connection to fal's Platform API for one key. Use as a context manager (or call
    :meth:`close`). ``service`` names the API in errors ("fal's billing API");
    ``forbidden`` says what a 403 means for the caller; ``error`` is the exception raised.
    ``calls`` counts the HTTP requests sent (retries included)."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        retry_budget_s: float = DEFAULT_RETRY_BUDGET_S,
        max_answer_bytes: int | None = None,
        service: str = "fal's Platform API",
        forbidden: str = "this needs an admin API key",
        error: type[PlatformApiError] = PlatformApiError,
    ) -> None:
        self.error = error
        if not isinstance(api_key, str) or not api_key.strip():
            raise error("no API key: set FAL_KEY")
        if (
            isinstance(timeout_s, bool)
            or not isinstance(timeout_s, int | float)
            or not 0 < timeout_s <= 3600
        ):
            raise error(f"timeout_s={timeout_s!r} is not allowed: seconds, above 0, at most 3600")
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
            raise error(f"retries={retries!r} is not allowed: an integer from 0 to 10")
        if (
            isinstance(retry_budget_s, bool)
            or not isinstance(retry_budget_s, int | float)
            or not 0 <= retry_budget_s <= 3600
        ):
            raise error(f"retry_budget_s={retry_budget_s!r} is not allowed: seconds, 0 to 3600")
        self.base = (base_url or api_url_from_env()).rstrip("/")
        check_base_url(self.base, error)
        self.api_key = api_key
        self.timeout_s = float(timeout_s)
        self.retries = retries
        self.retry_budget_s = float(retry_budget_s)
        self.max_answer_bytes = max_answer_bytes
        self.service = service
        self.forbidden = forbidden
        self.calls = 0
        self.waits: list[float] = []
        from falbudget import __version__

        try:
            import httpx
        except ImportError:
            raise error(
                f"talking to fal's Platform API needs httpx: {install_hint('platform')}"
            ) from None
        local = loopback(urlsplit(self.base).hostname)
        self._http = httpx.Client(
            trust_env=not local,  # loopback: never through a proxy
            follow_redirects=False,
            headers={
                "Authorization": f"Key {api_key}",
                "Accept": "application/json",
                "User-Agent": f"falbudget/{__version__}",
            },
        )

    def __enter__(self) -> PlatformClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- requests -----------------------------------------------------------------------------
    def get_bytes(self, path: str, params: Iterable[tuple[str, str]] = ()) -> bytes:
        return self._send("GET", path, list(params), None)

    def get_json(self, path: str, params: Iterable[tuple[str, str]] = ()) -> Any:
        return self._json(self.get_bytes(path, params), path)

    def post_json(self, path: str, body: Any) -> Any:
        data = json.dumps(body, default=str).encode()
        return self._json(self._send("POST", path, [], data), path)

    def _json(self, raw: bytes, path: str) -> Any:
        try:
            return loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise self.error(f"{self.base}{path}: the answer is not JSON") from None

    def _send(
        self, method: str, path: str, params: list[tuple[str, str]], body: bytes | None
    ) -> bytes:
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._attempt(method, path, params, body)
            except PlatformApiError as exc:
                wait = self._retry_wait(exc, attempt, waited)
                if wait is None:
                    if attempt > 1:
                        raise self.error(f"{exc} ({attempt} attempts)", status=exc.status) from None
                    raise
            self.waits.append(wait)
            waited += wait
            _sleep(wait)

    def _retry_wait(self, exc: PlatformApiError, attempt: int, waited: float) -> float | None:
        if exc.status not in RETRIED or attempt > self.retries:
            return None
        asked = getattr(exc, "retry_after", None)
        wait = (
            asked
            if isinstance(asked, float)
            else min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (attempt - 1))
        )
        if waited + wait > self.retry_budget_s:
            return None
        return wait

    def _attempt(
        self, method: str, path: str, params: list[tuple[str, str]], body: bytes | None
    ) -> bytes:
        url = self.base + path
        deadline = time.monotonic() + self.timeout_s
        late = self.error(
            f"cannot reach {self.service} at {self.base}: no complete answer within"
            f" {self.timeout_s:g} s"
        )
        import httpx

        limit = MAX_ANSWER_BYTES if self.max_answer_bytes is None else self.max_answer_bytes
        too_big = self.error(
            f"{url}: the answer is larger than {limit} bytes; ask for smaller pages"
        )
        self.calls += 1
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            with self._http.stream(
                method,
                url,
                params=tuple(params),
                content=body,
                headers=headers,
                timeout=httpx.Timeout(self.timeout_s),
            ) as answer:
                watchdog = _Watchdog(answer, deadline)
                try:
                    if answer.status_code >= 300:
                        raise self._http_error(answer, url)
                    length = answer.headers.get("Content-Length")
                    if length is not None and length.strip().isdigit() and int(length) > limit:
                        raise too_big
                    chunks: list[bytes] = []
                    size = 0
                    for chunk in answer.iter_raw(65536):
                        if time.monotonic() >= deadline:
                            raise late
                        size += len(chunk)
                        if size > limit:
                            raise too_big
                        chunks.append(chunk)
                    if time.monotonic() >= deadline:
                        raise late
                    return b"".join(chunks)
                finally:
                    watchdog.cancel()
        except PlatformApiError:
            raise
        except httpx.TimeoutException:
            raise late from None
        except (httpx.HTTPError, OSError) as exc:
            if time.monotonic() >= deadline:
                raise late from None
            raise self.error(
                f"cannot reach {self.service} at {self.base}:"
                f" {scrub(str(exc) or type(exc).__name__, self.api_key)}"
            ) from None

    def _http_error(self, answer: httpx.Response, url: str) -> PlatformApiError:
        import httpx

        status = answer.status_code
        raw = b""
        try:
            for chunk in answer.iter_raw(2000):
                raw += chunk
                if len(raw) >= 2000:
                    break
        except (httpx.HTTPError, OSError):  # a broken answer: what came is the detail
            pass
        detail = raw[:2000].decode("utf-8", "replace")
        try:
            parsed = json.loads(detail)
            if isinstance(parsed, Mapping) and "detail" in parsed:
                detail = str(parsed["detail"])
        except (ValueError, RecursionError):  # not JSON: the text as it came
            pass
        detail = scrub(" ".join(detail.split())[:200], self.api_key)
        said = f" ({detail})" if detail else ""
        service = self.service
        retry_after: float | None = None
        if status == 401:
            text = f"fal refused the API key (HTTP 401){said}: check FAL_KEY"
        elif status == 403:
            text = f"the API key may not do this (HTTP 403){said}: {self.forbidden}"
        elif 300 <= status < 400:
            location = answer.headers.get("Location")
            target = (
                f" to {scrub(location.split('?', 1)[0], self.api_key)[:200]}" if location else ""
            )
            text = (
                f"{service} answered with a redirect (HTTP {status}{target}): falbudget"
                f" follows none, since the API key would go with it; set {API_URL_ENV} to the"
                " address that answers"
            )
        elif status == 429:
            retry = answer.headers.get("Retry-After")
            retry_after = retry_after_s(retry)
            after = f"; fal asks to retry after {retry} s" if retry else ""
            text = f"{service} limits the rate (HTTP 429){said}{after}: try again later"
        elif status >= 500:
            retry_after = retry_after_s(answer.headers.get("Retry-After"))
            text = f"{service} failed (HTTP {status}){said}: try again later"
        else:
            text = f"{service} refused the request (HTTP {status}){said}"
        error = self.error(f"{url}: {text}", status=status)
        error.retry_after = retry_after  # type: ignore[attr-defined]
        return error

    # -- the endpoints ------------------------------------------------------------------------
    def paged(
        self,
        path: str,
        params: Sequence[tuple[str, str]],
        items_key: str,
        *,
        max_pages: int = 10_000,
    ) -> Iterable[tuple[int, list[Any]]]:
        """Each page's ``items_key`` list, following ``next_cursor`` while ``has_more`` is
        true. A page without the list, a has_more that is not a boolean, a missing or repeated
        cursor are errors (a server stuck on one page is not followed for ever)."""
        url = self.base + path
        cursor: str | None = None
        seen: set[str] = set()
        for page in range(1, max_pages + 1):
            query = [*params, ("cursor", cursor)] if cursor is not None else list(params)
            body = self.get_json(path, query)
            items = body.get(items_key) if isinstance(body, Mapping) else None
            if not isinstance(items, list):
                raise self.error(f"{url}: page {page} is not an answer with a {items_key} list")
            more = body.get("has_more", False)
            if not isinstance(more, bool):
                raise self.error(
                    f"{url}: page {page}: has_more={more!r} is not allowed: true or false (a JSON"
                    " boolean, as fal gives it)"
                )
            yield page, items
            if not more:
                return
            cursor = body.get("next_cursor")
            if not isinstance(cursor, str) or not cursor:
                raise self.error(f"{url}: page {page} says has_more but gives no next_cursor")
            if cursor in seen:
                raise self.error(f"{url}: page {page} repeats cursor {cursor!r}; stopping")
            seen.add(cursor)
        raise self.error(f"{url}: more than {max_pages} pages; narrow the query")

    def models(
        self, *, endpoint_ids: Sequence[str] = (), expand_openapi: bool = False
    ) -> list[Mapping[str, Any]]:
        """The catalog (``GET /models``), every page; with ``endpoint_ids`` only those (50 a
        call); ``expand_openapi`` asks for each endpoint's OpenAPI 3.0 schema."""
        extra = [("expand", "openapi-3.0")] if expand_openapi else []
        found: list[Mapping[str, Any]] = []
        batches: list[list[str]] = (
            [list(endpoint_ids[i : i + 50]) for i in range(0, len(endpoint_ids), 50)]
            if endpoint_ids
            else [[]]
        )
        for batch in batches:
            params = [*(("endpoint_id", e) for e in batch), *extra]
            for _, items in self.paged("/models", params, "models"):
                found.extend(m for m in items if isinstance(m, Mapping))
        return found

    def prices(self, endpoint_ids: Sequence[str]) -> list[Mapping[str, Any]]:
        """``GET /models/pricing`` for each id, 50 ids a call, every page."""
        found: list[Mapping[str, Any]] = []
        ids = list(dict.fromkeys(endpoint_ids))
        for start in range(0, len(ids), 50):
            params = [("endpoint_id", e) for e in ids[start : start + 50]]
            for _, items in self.paged("/models/pricing", params, "prices"):
                found.extend(p for p in items if isinstance(p, Mapping))
        return found

    def usage(
        self,
        *,
        endpoint_ids: Sequence[str] = (),
        start: str | None = None,
        end: str | None = None,
        expand: Sequence[str] = (),
    ) -> Mapping[str, Any]:
        """``GET /models/usage``: billed unit quantities and unit prices, filtered by endpoint
        (1 to 50) and an ISO date range (``end`` excluded); ``expand`` asks for
        ``time_series`` and/or ``summary``. fal's answer is returned as it came (numbers as
        Decimal): its shape beyond a JSON object is not documented enough to read further."""
        if len(endpoint_ids) > 50:
            raise self.error(f"{len(endpoint_ids)} endpoints are not allowed: fal takes 1 to 50")
        params = [("endpoint_id", e) for e in endpoint_ids]
        params += [(name, value) for name, value in (("start", start), ("end", end)) if value]
        params += [("expand", item) for item in expand]
        body = self.get_json("/models/usage", params)
        if not isinstance(body, Mapping):
            raise self.error(f"{self.base}/models/usage: the answer is not a JSON object")
        return body

    def estimate(self, endpoint_id: str, unit_quantity: Decimal | int) -> Decimal:
        """``POST /models/pricing/estimate`` by unit price: the cost of ``unit_quantity`` units."""
        body = self.post_json(
            "/models/pricing/estimate",
            {
                "estimate_type": "unit_price",
                "endpoints": {endpoint_id: {"unit_quantity": unit_quantity}},
            },
        )
        total = body.get("total_cost") if isinstance(body, Mapping) else None
        if isinstance(total, bool) or not isinstance(total, int | Decimal):
            raise self.error(
                f"{self.base}/models/pricing/estimate: total_cost={total!r} is not a number"
            )
        return Decimal(total)


class _Watchdog:
    """Shuts the answer's socket down at ``deadline`` (time.monotonic()): httpx bounds each
    read, not an answer that trickles in one byte at a time."""

    def __init__(self, answer: httpx.Response, deadline: float) -> None:
        stream = answer.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        self._timer: threading.Timer | None = None
        if isinstance(sock, socket.socket):
            self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), _cut, (sock,))
            self._timer.daemon = True
            self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _cut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
