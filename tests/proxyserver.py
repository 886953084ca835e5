"""Running the real `falbudget proxy` application for tests.

:class:`ProxyServer` serves the Starlette app with uvicorn in a thread on a socket bound to
127.0.0.1 before the server starts (so no wait for a port), in front of the local fake fal
server (tests/fakefal.py): the configuration's ``upstreams`` map fal's hosts to the fake's URLs.
``ProxyServer.proxy.outcomes.wait(id)`` returns what became of a hold (by hold id or fal request
id) once the proxy has decided it: tests wait on that, never on the clock.

:func:`start_cli_proxy` starts ``falbudget proxy --workers N`` in a subprocess and returns once
every worker has said it is ready (read from its log, not timed).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import uvicorn

from fakefal import FakeFal
from falbudget.guard import Guard
from falbudget.proxy.app import Proxy, create_app
from falbudget.proxy.config import ProxySettings, parse_settings

FAL_KEY = "fal-key-secret-1234"
ROUTE = "/api/fal/proxy"


def upstreams(fake: FakeFal) -> dict[str, str]:
    """fal's hosts -> the fake's URLs standing for them."""
    return {
        "fal.run": fake.run_url.rstrip("/"),
        "queue.fal.run": fake.queue_url.rstrip("/"),
        "rest.fal.ai": f"{fake.url}/rest",
    }


def settings_for(fake: FakeFal, **section: Any) -> ProxySettings:
    """Proxy settings pointing at ``fake``; ``section`` as the configuration's ``proxy:``."""
    merged: dict[str, Any] = {"upstreams": upstreams(fake), "anonymous": True, **section}
    return parse_settings(merged, "<test>")


class ProxyServer:
    def __init__(
        self, guard: Guard, settings: ProxySettings, fal_key: str = FAL_KEY, base_dir: str = "."
    ) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(512)
        self.port = sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}{settings.route}"
        self._ready = threading.Event()
        self.proxy: Proxy
        self.app = create_app(guard, settings, fal_key, base_dir=base_dir, on_ready=self._on_ready)
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            proxy_headers=False,  # as `falbudget proxy` runs it
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True, name="proxy"
        )
        self._sock = sock

    def _on_ready(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self._ready.set()

    def start(self) -> ProxyServer:
        self._thread.start()
        assert self._ready.wait(60), "the proxy never started"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(60)
        self._sock.close()

    def __enter__(self) -> ProxyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def target_headers(url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {"x-fal-target-url": url, "content-type": "application/json", **(extra or {})}


QUEUE = "https://queue.fal.run"
RUN = "https://fal.run"


@contextmanager
def cli_proxy(config: str, workers: int, env: Mapping[str, str]) -> Iterator[str]:
    """``falbudget proxy --config CONFIG --workers N`` in a subprocess; yields its proxy URL
    once every worker has logged that its application started; stops it with SIGTERM."""
    with socket.socket() as probe:  # a free port (uvicorn binds it again in the parent)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "falbudget",
            "proxy",
            "--config",
            config,
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env={**os.environ, **env},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    ready = 0
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "Application startup complete" in line:
            ready += 1
            if ready == workers:
                break
    assert ready == workers, "the proxy did not start:\n" + "".join(lines)
    drain = threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True)  # type: ignore[union-attr]
    drain.start()
    try:
        yield f"http://127.0.0.1:{port}{ROUTE}"
    finally:
        process.terminate()
        process.wait(60)
