"""A real browser through `falbudget proxy`: Debian's headless Chromium, driven by playwright-core,
loads a page from one origin that calls the proxy on another (so CORS is exercised) with
@fal-ai/client bundled for the browser by esbuild. An anonymous visitor gets a video URL from the
fake fal server, then, with their IP's cap spent, a refusal the page can show.

Needs node, `npm ci` in tests/node and /usr/bin/chromium (.ci/run installs all three); elsewhere
the test skips and says why, and with CI=true it fails instead.
MAGI defaults = 0.80 (DESIGN.md section 1).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fakefal import DEFAULT_OUTPUT, FakeFal
from falbudget import Cap, Guard
from needs import chromium_missing, must_run
from proxyserver import ProxyServer, settings_for
from test_proxy_node import NODE_DIR, node_missing

NOW = 1_790_000_000.0


def require_browser() -> None:
    must_run("the browser test", node_missing() or chromium_missing())


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    """The demo page and the bundled client, served from their own origin."""
    require_browser()
    root = tmp_path / "site"
    root.mkdir()
    shutil.copy(NODE_DIR / "page.html", root / "index.html")
    esbuild = NODE_DIR / "node_modules" / ".bin" / "esbuild"
    subprocess.run(
        [
            str(esbuild),
            "browser_entry.js",
            "--bundle",
            "--format=iife",
            "--platform=browser",
            f"--outfile={root / 'fal.js'}",
            "--log-level=warning",
        ],
        cwd=NODE_DIR,
        check=True,
        timeout=120,
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_browser_gets_a_video_then_a_refusal_it_can_show(
    site: str, fake_fal: FakeFal, tmp_path: Path
) -> None:
    guard = Guard("memory://", [Cap("0.80", scope="ip")], clock=lambda: NOW)
    settings = settings_for(fake_fal, anonymous=True, cors_origins=[site])
    with ProxyServer(guard, settings) as proxy:
        done = subprocess.run(
            ["node", "browser.mjs", f"{site}/index.html?proxy={proxy.url}", str(tmp_path / "p")],
            cwd=NODE_DIR,
            env={**os.environ, "NO_PROXY": "127.0.0.1"},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        first, second = seen["results"]
        assert first == {
            "ok": True,
            "url": DEFAULT_OUTPUT["video"]["url"],
            "requestId": first["requestId"],
        }
        assert proxy.proxy.outcomes.wait(first["requestId"]) == "settled"
    assert second["ok"] is False and second["status"] == 402
    assert second["body"]["cap"] == "ip=127.0.0.1 total cap 0.80"
    assert seen["video"] == DEFAULT_OUTPUT["video"]["url"]
    assert seen["refusal"] == "refused: 0.00 USD left"
    assert fake_fal.count("submit") == 1
    submit = next(r for r in fake_fal.requests if r.kind == "submit")
    assert submit.headers["authorization"].startswith("Key ")
