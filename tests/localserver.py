"""What the local fake servers (tests/fakefal.py, tests/fakebilling.py) share: a threading HTTP
server on 127.0.0.1 (a free port by default) run in a daemon thread, quiet about clients that hang
up, whose handler hands every request to the fake's ``_dispatch(handler)``."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True  # never join handler threads (a delayed one may be asleep)
    request_queue_size = 256  # many connections at once (the proxy's concurrency tests)
    fake: LocalServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up on a delayed answer: expected, stay quiet.
        pass


class Handler(BaseHTTPRequestHandler):
    server: QuietServer
    protocol_version = "HTTP/1.1"  # keep-alive, like fal: pooled connections get reused
    disable_nagle_algorithm = True  # headers and body go out in two writes
    text_type = "text/html; charset=utf-8"  # what a string payload is sent as

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        self.server.fake._dispatch(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    def send_json(
        self,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
        *,
        drip_s: float = 0.0,
    ) -> None:
        """Answer ``payload`` as JSON (a string: as text of the handler's ``text_type``).
        ``drip_s`` > 0 writes the body one byte at a time with that pause between bytes, until
        the fake stops."""
        if isinstance(payload, str):
            data, ctype = payload.encode(), self.text_type
        else:
            data, ctype = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if drip_s <= 0:
            self.wfile.write(data)
            return
        for byte in data:
            if self.server.fake.stopping.is_set():
                return
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(drip_s)


class LocalServer:
    """Start/stop (or use as a context manager) a :class:`QuietServer` serving ``handler``.
    Subclasses implement ``_dispatch(handler)``; ``_wake`` is set on stop so that handlers
    sleeping in a scripted delay return at once."""

    name = "localserver"

    def __init__(
        self, handler: type[Handler] = Handler, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._server = QuietServer((host, port), handler)
        self._server.fake = self
        self.host: str = host
        self.port: int = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _dispatch(self, handler: Handler) -> None:
        raise NotImplementedError

    def start(self) -> Any:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"{self.name}:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
