"""A local fake of fal.ai's queue API and sync ``run`` API, for tests driving the real fal_client.

One :class:`FakeFal` is a ``ThreadingHTTPServer`` on ``127.0.0.1`` (free port). fal_client 1.0.3
builds every URL from module-level constants of ``fal_client.client``; :func:`fal_client_patches`
lists the replacements and :func:`patched_fal_client` / :func:`patch_with_monkeypatch` apply them.
The fake serves, under path prefixes that stand for fal's hosts:

* ``/run/<endpoint>``                    (fal.run)       POST -> the output; ``.../stream`` -> SSE
* ``/queue/<endpoint>``                  (queue.fal.run) POST -> submit: request_id + three URLs
* ``/queue/<owner>/<alias>/requests/<id>/status``  GET  -> IN_QUEUE / IN_PROGRESS / COMPLETED
* ``/queue/<owner>/<alias>/requests/<id>``         GET  -> the result
* ``/queue/<owner>/<alias>/requests/<id>/cancel``  PUT  -> 202 / 400 ALREADY_COMPLETED / 404
* ``/rest/...`` (rest.fal.ai), ``/cdn/...`` (v3.fal.media), ``/ws/...`` (wss://fal.run): always
  404 (no uploads, no realtime), but logged like everything else

Recorded paths drop the prefix, so they read like fal's: ``("POST", "/fal-ai/x/y", {...})``.
Jobs advance per status poll, not per wall-clock time, so tests are deterministic.

Every knob is reset by :meth:`FakeFal.reset`. A reset also *retires* the jobs of the previous test
(their polls answer COMPLETED at once and are logged in ``stale_requests``) and wakes any
handler sleeping in a :meth:`FakeFal.delay`, so background threads that fal_client leaves
behind after a ``client_timeout`` finish quickly instead of polling into the next test.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from localserver import Handler, LocalServer

if TYPE_CHECKING:
    import fal_client
    import pytest

__all__ = [
    "DEFAULT_OUTPUT",
    "DUMMY_KEY",
    "KINDS",
    "Failure",
    "FakeFal",
    "Kind",
    "RecordedRequest",
    "async_client_for_loop",
    "fal_client_patches",
    "fal_env",
    "patch_with_monkeypatch",
    "patched_fal_client",
    "sync_client",
]

DEFAULT_OUTPUT: dict[str, Any] = {"video": {"url": "https://example.invalid/v.mp4"}, "seed": 42}
DUMMY_KEY = "dummy"
APP_NAMESPACES = ("workflows", "comfy")  # as fal_client.client.APP_NAMESPACES

Kind = Literal["submit", "status", "result", "cancel", "run", "stream", "rest", "cdn", "unknown"]
KINDS: tuple[Kind, ...] = (
    "submit",
    "status",
    "result",
    "cancel",
    "run",
    "stream",
    "rest",
    "cdn",
    "unknown",
)
_PREFIXES: dict[str, str] = {"/run/": "run", "/queue/": "queue", "/rest/": "rest", "/cdn/": "cdn"}


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request the fake received. ``path`` has no host prefix and no query string."""

    method: str
    path: str
    body: Any  # decoded JSON; the raw text if it is not JSON; None if empty
    kind: Kind
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names

    def as_tuple(self) -> tuple[str, str, Any]:
        return (self.method, self.path, self.body)


@dataclass
class Failure:
    """An error answer for one kind of request. ``body``: a dict/list is sent as JSON, a str as
    text/html (a str containing "nginx" makes 502-504 look like an ingress error, which
    fal_client retries). ``times``: how many requests still get it (None: all of them)."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    times: int | None = None


@dataclass
class Job:
    request_id: str
    endpoint: str  # as submitted: "fal-ai/kling-video/v2/master/text-to-video"
    base: str  # what the request URLs use: "fal-ai/kling-video"
    body: Any
    generation: int
    polls: int = 0
    completed: bool = False  # a status poll has answered COMPLETED
    cancelled: bool = False


class _Handler(Handler):
    def send_sse(self, events: list[Any]) -> None:
        data = "".join(f"data: {json.dumps(e)}\n\n" for e in events).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakeFal(LocalServer):
    """A scriptable fake fal.ai. Use as a context manager, or call start()/stop().

    Knobs (all restored by :meth:`reset`):

    * ``output``: the result of every run / completed job (default :data:`DEFAULT_OUTPUT`)
    * ``queue_polls`` / ``progress_polls``: status polls answered IN_QUEUE (positions count down
      to 0), then IN_PROGRESS, before COMPLETED. Both 0 -> the first poll says COMPLETED.
    * ``logs``: the log lines sent with IN_PROGRESS/COMPLETED when the client asks ``logs=true``
    * :meth:`fail` (an error answer), :meth:`fail_job` (a job that ends in an error result),
      :meth:`delay` (a slow answer, to trip a client timeout)
    """

    name = "fakefal"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(_Handler, host, port)
        self._generation = 0
        self._requests: list[tuple[int, RecordedRequest]] = []
        self._stale: list[RecordedRequest] = []
        self._jobs: dict[str, Job] = {}
        self._arrived = threading.Condition(self._lock)
        """Notified whenever a request is logged (:meth:`wait_for`)."""
        self._failures: dict[Kind, Failure] = {}
        self._delays: dict[Kind, float] = {}
        self._job_error: tuple[str, str | None] | None = None
        self.output: dict[str, Any] = dict(DEFAULT_OUTPUT)
        self.queue_polls = 0
        self.progress_polls = 0
        self.logs: list[dict[str, Any]] = []
        self.reset()

    # -- life cycle -----------------------------------------------------------------------
    @property
    def run_url(self) -> str:
        """What replaces ``https://fal.run/`` (fal_client.client.RUN_URL_FORMAT)."""
        return f"{self.url}/run/"

    @property
    def queue_url(self) -> str:
        """What replaces ``https://queue.fal.run/`` (fal_client.client.QUEUE_URL_FORMAT)."""
        return f"{self.url}/queue/"

    def reset(self) -> None:
        """Forget the request log and every knob; retire the jobs of the previous test and wake
        the handlers sleeping in a delay (they then answer with the fresh settings)."""
        with self._lock:
            self._generation += 1
            self._requests.clear()
            self._stale.clear()
            self._failures.clear()
            self._delays.clear()
            self._job_error = None
            self.output = dict(DEFAULT_OUTPUT)
            self.queue_polls = 0
            self.progress_polls = 0
            self.logs = [
                {
                    "message": "working",
                    "level": "INFO",
                    "source": "user",
                    "timestamp": "2024-01-01T00:00:00Z",
                }
            ]
            old_wake, self._wake = self._wake, threading.Event()
        old_wake.set()

    # -- scripting --------------------------------------------------------------------------
    def fail(
        self,
        kind: Kind,
        status: int,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        times: int | None = None,
    ) -> None:
        """Answer requests of ``kind`` with ``status`` (the next ``times`` ones, or all).
        ``body`` defaults to ``{"detail": "fake error <status>"}``."""
        if body is None:
            body = {"detail": f"fake error {status}"}
        with self._lock:
            self._failures[kind] = Failure(status, body, dict(headers or {}), times)

    def fail_job(
        self,
        status: int = 500,
        detail: Any = "fake job failed",
        error_type: str | None = None,
    ) -> None:
        """Jobs run through the queue, then end in an error: the COMPLETED status carries
        ``error`` (and ``error_type``), and the result endpoint answers ``status``."""
        body: dict[str, Any] = {"detail": detail}
        if error_type is not None:
            body["error_type"] = error_type
        self.fail("result", status, body)
        with self._lock:
            self._job_error = (str(detail), error_type)

    def delay(self, kind: Kind, seconds: float = math.inf) -> None:
        """Sleep ``seconds`` before answering requests of ``kind`` (default: until the next
        reset()/stop()). A delayed submit creates its job first: the queue has accepted the
        request although the client may time out before it reads the request_id."""
        with self._lock:
            self._delays[kind] = seconds

    # -- inspection -------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received since the last reset, oldest first."""
        with self._lock:
            return [r for _, r in self._requests]

    @property
    def calls(self) -> list[tuple[str, str, Any]]:
        """``requests`` as (method, path, json body) tuples."""
        return [r.as_tuple() for r in self.requests]

    @property
    def stale_requests(self) -> list[RecordedRequest]:
        """Requests about jobs of an earlier test (threads fal_client left running)."""
        with self._lock:
            return list(self._stale)

    def count(self, kind: Kind | None = None) -> int:
        """How many requests (of ``kind``) were received since the last reset."""
        return sum(1 for r in self.requests if kind is None or r.kind == kind)

    def kinds(self) -> list[Kind]:
        return [r.kind for r in self.requests]

    def wait_for(self, kind: Kind, count: int = 1, timeout: float = 60.0) -> None:
        """Return once ``count`` requests of ``kind`` have arrived since the last reset (the
        request has reached the server: with :meth:`delay`, its answer is still held back).
        ``timeout`` only stops a test that is already failing: AssertionError."""
        with self._arrived:
            arrived = self._arrived.wait_for(
                lambda: sum(1 for _, r in self._requests if r.kind == kind) >= count, timeout
            )
        assert arrived, f"fakefal: {count} {kind} request(s) never arrived"

    @property
    def jobs(self) -> list[Job]:
        """The jobs submitted since the last reset."""
        with self._lock:
            return [j for j in self._jobs.values() if j.generation == self._generation]

    @property
    def cancelled(self) -> list[str]:
        return [j.request_id for j in self.jobs if j.cancelled]

    # -- serving ----------------------------------------------------------------------------
    def _dispatch(self, h: _Handler) -> None:
        split = urlsplit(h.path)
        host, path = "unknown", split.path
        for prefix, name in _PREFIXES.items():
            if split.path.startswith(prefix):
                host, path = name, split.path[len(prefix) - 1 :]
                break
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
        kind, job_id = _classify(host, h.command, path)
        request = RecordedRequest(
            h.command,
            path,
            body,
            kind,
            dict(parse_qsl(split.query)),
            {k.lower(): v for k, v in h.headers.items()},
        )

        with self._lock:
            generation, wake = self._generation, self._wake
            job = self._jobs.get(job_id) if job_id else None
            if job is not None and job.generation != generation:
                self._stale.append(request)
            else:
                self._requests.append((generation, request))
                self._arrived.notify_all()
            delay = self._delays.get(kind, 0.0)
            if kind == "submit":
                job = self._new_job(path, body, generation)

        if delay:
            wake.wait(None if math.isinf(delay) else delay)

        with self._lock:
            status, payload, headers = self._answer(kind, job, job_id, request)
        if kind == "stream" and status == 200:
            h.send_sse(payload)
        else:
            h.send_json(status, payload, headers)

    def _new_job(self, path: str, body: Any, generation: int) -> Job | None:
        # Called under the lock. A submit that is going to fail creates no job.
        failure = self._failures.get("submit")
        if failure is not None and failure.times != 0:
            return None
        endpoint = path.strip("/")
        parts = endpoint.split("/")
        keep = 3 if parts[0] in APP_NAMESPACES else 2
        job = Job(uuid.uuid4().hex, endpoint, "/".join(parts[:keep]), body, generation)
        self._jobs[job.request_id] = job
        return job

    def _take_failure(self, kind: Kind) -> Failure | None:
        failure = self._failures.get(kind)
        if failure is None or failure.times == 0:
            return None
        if failure.times is not None:
            failure.times -= 1
        return failure

    def _urls(self, job: Job) -> dict[str, str]:
        base = f"{self.queue_url}{job.base}/requests/{job.request_id}"
        return {
            "request_id": job.request_id,
            "response_url": base,
            "status_url": f"{base}/status",
            "cancel_url": f"{base}/cancel",
        }

    def _answer(
        self,
        kind: Kind,
        job: Job | None,
        job_id: str | None,
        request: RecordedRequest,
    ) -> tuple[int, Any, dict[str, str]]:
        # Called under the lock.
        if kind in ("rest", "cdn", "unknown"):
            return 404, {"detail": f"fakefal does not serve {request.path}"}, {}
        failure = self._take_failure(kind)
        if failure is not None:
            return failure.status, failure.body, failure.headers
        if kind == "run":
            return 200, self.output, {"x-fal-request-id": uuid.uuid4().hex}
        if kind == "stream":
            return 200, [{"partial": True}, self.output], {}
        if kind == "submit":
            assert job is not None
            payload = {**self._urls(job), "status": "IN_QUEUE", "queue_position": self.queue_polls}
            return 200, payload, {"x-fal-request-id": job.request_id}
        if job is None:
            return 404, {"detail": f"Request {job_id} not found", "status": "NOT_FOUND"}, {}
        stale = job.generation != self._generation
        if kind == "status":
            return 200, self._status(job, stale, request.query.get("logs") in ("true", "1")), {}
        if kind == "cancel":
            if job.completed or stale:
                return 400, {"status": "ALREADY_COMPLETED"}, {}
            job.cancelled = True
            return 202, {"status": "CANCELLATION_REQUESTED"}, {}
        # result
        if job.cancelled:
            return 400, {"detail": "Request was cancelled", "error_type": "cancelled"}, {}
        if not (job.completed or stale):
            return 400, {"detail": "Request is still in progress"}, {}
        return 200, self.output, {"x-fal-request-id": job.request_id}

    def _status(self, job: Job, stale: bool, with_logs: bool) -> dict[str, Any]:
        job.polls += 1
        payload: dict[str, Any] = self._urls(job)
        logs = list(self.logs) if with_logs else None
        if not (stale or job.cancelled or job.completed):
            if job.polls <= self.queue_polls:
                return {
                    **payload,
                    "status": "IN_QUEUE",
                    "queue_position": self.queue_polls - job.polls,
                    "logs": None,
                }
            if job.polls <= self.queue_polls + self.progress_polls:
                return {**payload, "status": "IN_PROGRESS", "logs": logs}
        job.completed = True
        payload.update(status="COMPLETED", logs=logs, metrics={"inference_time": 0.01})
        if job.cancelled:
            payload.update(error="Request was cancelled", error_type="cancelled")
        elif self._job_error is not None and not stale:
            payload.update(error=self._job_error[0], error_type=self._job_error[1])
        return payload


def _classify(host: str, method: str, path: str) -> tuple[Kind, str | None]:
    if host == "run":
        return ("stream" if path.rstrip("/").endswith("/stream") else "run"), None
    if host == "rest":
        return "rest", None
    if host == "cdn":
        return "cdn", None
    if host != "queue":
        return "unknown", None
    if "/requests/" not in path:
        return ("submit" if method == "POST" else "unknown"), None
    tail = path.split("/requests/", 1)[1].strip("/").split("/")
    if len(tail) == 1 and method == "GET":
        return "result", tail[0]
    if len(tail) == 2 and tail[1] == "status" and method == "GET":
        return "status", tail[0]
    if len(tail) == 2 and tail[1] == "cancel" and method == "PUT":
        return "cancel", tail[0]
    return "unknown", None


# -- pointing fal_client at the fake --------------------------------------------------------


def _zero_retry_delay(*args: Any, **kwargs: Any) -> float:
    return 0.0


def fal_client_patches(fake: FakeFal, *, fast_retries: bool = True) -> dict[str, Any]:
    """Attribute name -> new value, for module ``fal_client.client``.

    fal_client computes these once at import (from FAL_RUN_HOST / FAL_QUEUE_RUN_HOST, always
    https/wss), and reads them as globals at call time, so replacing them is enough; setting
    the environment variables after import changes nothing. With ``fast_retries`` the retry
    backoff (``_get_retry_delay``, used by both the sync and the async retry loop) is 0 s, so
    a retried status costs its 10 attempts but no sleeping."""
    patches: dict[str, Any] = {
        "RUN_URL_FORMAT": fake.run_url,
        "QUEUE_URL_FORMAT": fake.queue_url,
        "REALTIME_URL_FORMAT": f"ws://{fake.host}:{fake.port}/ws/",  # not served: 404
        "REST_URL": f"{fake.url}/rest",
        "CDN_URL": f"{fake.url}/cdn",
    }
    if fast_retries:
        patches["_get_retry_delay"] = _zero_retry_delay
    return patches


def fal_env(fake: FakeFal) -> dict[str, str]:
    """Environment for the fake: a dummy key (read lazily, on a client's first request) and
    no proxy for the loopback address (httpx honours HTTP(S)_PROXY otherwise)."""
    no_proxy = f"{fake.host},localhost"
    return {"FAL_KEY": DUMMY_KEY, "NO_PROXY": no_proxy, "no_proxy": no_proxy}


def patch_with_monkeypatch(
    monkeypatch: pytest.MonkeyPatch, fake: FakeFal, *, fast_retries: bool = True
) -> None:
    """Point fal_client at ``fake`` with a pytest ``monkeypatch`` (undone after the test)."""
    import fal_client.client as fc

    for name, value in fal_client_patches(fake, fast_retries=fast_retries).items():
        monkeypatch.setattr(fc, name, value)
    for name, value in fal_env(fake).items():
        monkeypatch.setenv(name, value)


@contextmanager
def patched_fal_client(fake: FakeFal, *, fast_retries: bool = True) -> Iterator[FakeFal]:
    """The same without pytest: ``with FakeFal() as fake, patched_fal_client(fake): ...``."""
    import fal_client.client as fc

    patches = fal_client_patches(fake, fast_retries=fast_retries)
    env = fal_env(fake)
    saved_attrs = {name: getattr(fc, name) for name in patches}
    saved_env = {name: os.environ.get(name) for name in env}
    try:
        for name, value in patches.items():
            setattr(fc, name, value)
        os.environ.update(env)
        yield fake
    finally:
        for name, value in saved_attrs.items():
            setattr(fc, name, value)
        for name, old in saved_env.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


# -- clients ----------------------------------------------------------------------------------


def sync_client(**kwargs: Any) -> fal_client.SyncClient:
    """A fresh ``fal_client.SyncClient(key="dummy")``; pass default_timeout=... to shorten the
    submit POST's read timeout (120 s otherwise)."""
    import fal_client

    return fal_client.SyncClient(key=DUMMY_KEY, **kwargs)


_ASYNC_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, fal_client.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def async_client_for_loop(**kwargs: Any) -> fal_client.AsyncClient:
    """An ``AsyncClient(key="dummy")`` for the running event loop (one per loop).

    AsyncClient caches its httpx.AsyncClient, which is bound to the loop that first used it;
    fal_client's module-level ``async_client`` (behind ``fal_client.run_async`` etc.) therefore
    breaks on the second ``asyncio.run()``. Call this inside the coroutine instead."""
    import fal_client

    loop = asyncio.get_running_loop()
    client = _ASYNC_CLIENTS.get(loop)
    if client is None or kwargs:
        client = fal_client.AsyncClient(key=DUMMY_KEY, **kwargs)
        if not kwargs:
            _ASYNC_CLIENTS[loop] = client
    return client
