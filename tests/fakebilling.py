"""A local fake of fal's Platform API billing events, for tests of the reconcile fetcher.

One :class:`FakeBilling` is a ``ThreadingHTTPServer`` on ``127.0.0.1`` (free port) serving
``GET /v1/models/billing-events`` as fal documents it
(https://fal.ai/docs/platform-apis/v1/models/billing-events):

* ``Authorization: Key <key>`` is required: a missing or wrong key answers 401, a key in
  ``read_only_keys`` 403 (billing needs an admin key);
* query ``start`` / ``end`` (ISO 8601, ``end`` excluded; both required here, and at most 90 days
  apart, else 400), ``limit`` (>= 1; at most ``max_page``), ``cursor`` (base64 of the page
  number, as fal's ``Mg==`` is page 2), ``endpoint_id`` and ``request_id`` (comma-separated or
  repeated);
* the answer ``{"billing_events": [...], "next_cursor": ..., "has_more": ...}``, newest first.

``base_url`` is what ``FALBUDGET_FAL_API_URL`` takes (``http://127.0.0.1:PORT/v1``). Every
request is recorded (path, query, headers); :meth:`fail` scripts error answers, :meth:`delay` a
slow one, ``redirect_to`` a redirect and ``drip_s`` an answer that trickles in. Everything is
reset by :meth:`reset`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from localserver import Handler, LocalServer

ADMIN_KEY = "fb-admin-key-0123"
EVENTS_PATH = "/v1/models/billing-events"
MAX_DAYS = 90


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names


@dataclass
class Failure:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    times: int | None = None  # how many requests still get it (None: all)


def cursor_for(page: int) -> str:
    return base64.b64encode(str(page).encode()).decode()


def event(
    request_id: str,
    timestamp: str,
    nano_usd: int,
    endpoint: str = "fal-ai/magi/image-to-video",
    units: float = 1,
) -> dict[str, Any]:
    """A billing event as fal's documentation shows one."""
    return {
        "request_id": request_id,
        "endpoint_id": endpoint,
        "timestamp": timestamp,
        "output_units": units,
        "unit_price": 0.8,
        "percent_discount": None,
        "cost_estimate_nano_usd": nano_usd,
    }


def _parse_time(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


class _Handler(Handler):
    text_type = "text/plain; charset=utf-8"


class FakeBilling(LocalServer):
    """The fake billing API. Use as a context manager, or call start()/stop().

    Knobs (restored by :meth:`reset`): ``events`` (served newest first), ``key``,
    ``read_only_keys``, ``max_page`` (the most records a page holds), ``echo_key`` (error details
    repeat the Authorization header, to test that the client scrubs it), ``next_cursor_override``
    (a fixed next_cursor, to script a broken server), ``raw_answer`` (bytes served as the
    answer), ``redirect_to`` (every request answers 302 with this Location), ``drip_s`` (answers
    are written one byte at a time, this many seconds apart), ``repeat_last`` (each page after
    the first starts with the previous page's last event again, as a timestamp cursor can),
    :meth:`fail`, :meth:`delay`.
    """

    name = "fakebilling"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(_Handler, host, port)
        self.reset()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def reset(self) -> None:
        with self._lock:
            self.events: list[dict[str, Any]] = []
            self.key = ADMIN_KEY
            self.read_only_keys: set[str] = set()
            self.max_page = 10_000
            self.echo_key = False
            self.next_cursor_override: str | None = None
            self.raw_answer: bytes | None = None
            self.redirect_to: str | None = None
            self.drip_s = 0.0
            self.repeat_last = False
            self._failures: list[Failure] = []
            self._delay = False
            self._requests: list[Recorded] = []
            old, self._wake = self._wake, threading.Event()
        old.set()

    def fail(
        self,
        status: int,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        times: int | None = None,
    ) -> None:
        """Answer the next ``times`` requests (or all) with ``status``."""
        if body is None:
            body = {"detail": f"fake error {status}"}
        with self._lock:
            self._failures.append(Failure(status, body, dict(headers or {}), times))

    def delay(self) -> None:
        """Answer nothing until the next reset()/stop() (a client timeout fires first)."""
        with self._lock:
            self._delay = True

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    # -- serving ------------------------------------------------------------------------------
    def _dispatch(self, handler: _Handler) -> None:
        parts = urlsplit(handler.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._lock:
            self._requests.append(Recorded(handler.command, parts.path, query, headers))
            delay, wake = self._delay, self._wake
            failure = self._failures[0] if self._failures else None
            redirect, drip = self.redirect_to, self.drip_s
            if failure is not None and failure.times is not None:
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.pop(0)
        if delay:
            wake.wait(timeout=30)
        if parts.path != EVENTS_PATH:
            handler.send_json(404, {"detail": "Not Found"})
            return
        if redirect is not None:
            handler.send_json(302, {"detail": "moved"}, {"Location": redirect})
            return
        auth = headers.get("authorization", "")
        if auth != f"Key {self.key}" and auth.removeprefix("Key ") not in self.read_only_keys:
            detail = f"Invalid API key: {auth}" if self.echo_key else "Invalid API key"
            handler.send_json(401, {"detail": detail})
            return
        if auth.removeprefix("Key ") in self.read_only_keys:
            handler.send_json(403, {"detail": "The key lacks billing:usage:read"})
            return
        if failure is not None:
            body = failure.body
            if self.echo_key and isinstance(body, dict):
                body = {**body, "detail": f"{body.get('detail')} for {auth}"}
            handler.send_json(failure.status, body, failure.headers)
            return
        if self.raw_answer is not None:
            handler.send_json(200, self.raw_answer.decode(), drip_s=drip)
            return
        try:
            start = _parse_time(query["start"][0])
            end = _parse_time(query["end"][0])
            limit = int(query.get("limit", ["50"])[0])
            page = 1
            if "cursor" in query:
                page = int(base64.b64decode(query["cursor"][0], validate=True).decode())
        except (KeyError, ValueError, binascii.Error):
            handler.send_json(400, {"detail": f"bad query {parts.query!r}"})
            return
        if limit < 1 or page < 1:
            handler.send_json(400, {"detail": "limit and page must be >= 1"})
            return
        if end - start > dt.timedelta(days=MAX_DAYS):
            handler.send_json(400, {"detail": "Date range cannot exceed 90 days"})
            return
        endpoints = {e for v in query.get("endpoint_id", []) for e in v.split(",") if e}
        request_ids = {r for v in query.get("request_id", []) for r in v.split(",") if r}
        with self._lock:
            events = [
                e
                for e in self.events
                if start <= _parse_time(e["timestamp"]) < end
                and (not endpoints or e.get("endpoint_id") in endpoints)
                and (not request_ids or e.get("request_id") in request_ids)
            ]
            size = min(limit, self.max_page)
            override = self.next_cursor_override
            repeat = self.repeat_last
        events.sort(key=lambda e: _parse_time(e["timestamp"]), reverse=True)
        chunk = events[(page - 1) * size : page * size]
        if repeat and page > 1:
            chunk = [events[(page - 1) * size - 1], *chunk]
        has_more = page * size < len(events)
        next_cursor = override if override is not None else cursor_for(page + 1)
        handler.send_json(
            200,
            {
                "billing_events": chunk,
                "next_cursor": next_cursor if has_more else None,
                "has_more": has_more,
            },
            drip_s=drip,
        )
