"""The billing fetcher and proxy environment variables (issue 9, item 9).

The key must never travel over plain HTTP anywhere but to this machine: with ``http_proxy`` set,
urllib sent a request for ``http://127.0.0.1:PORT`` (the key in its Authorization header) to the
proxy, in clear text. A loopback address is now reached directly; fal's https:// address still
goes through the proxy the environment names, as a CONNECT tunnel that never shows the key.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from fakebilling import ADMIN_KEY, FakeBilling, event
from falbudget.reconcile import BillingApiError, fetch_billing_events

NOV1 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
NOV8 = dt.datetime(2026, 11, 8, tzinfo=dt.UTC)
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy")


class RecordingProxy:
    """A listener on 127.0.0.1 that records the first bytes of every connection it accepts and
    answers 403 (a proxy that refuses): whether it was contacted, and what it was told."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.received: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                try:
                    while b"\r\n\r\n" not in data and len(data) < 65536:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    self.received.append(data)
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    self.received.append(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() under way
        self._listener.close()
        self._thread.join(timeout=5)


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingProxy]:
    """Every proxy variable points at the recorder, and nothing is exempt from it."""
    recorder = RecordingProxy()
    for name in ("no_proxy", "NO_PROXY", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, recorder.url)
    yield recorder
    recorder.close()


@pytest.fixture(scope="module")
def billing() -> Iterator[FakeBilling]:
    with FakeBilling() as server:
        yield server


# run in a fresh interpreter, the proxy variables set before falbudget is imported (as for the CLI)
FETCH = """
import datetime as dt, sys
from falbudget.reconcile import BillingApiError, fetch_billing_events
since, until = dt.datetime(2026, 11, 1, tzinfo=dt.UTC), dt.datetime(2026, 11, 8, tzinfo=dt.UTC)
try:
    got = fetch_billing_events(sys.argv[1], since, until, base_url=sys.argv[2], timeout_s=20)
    print("records:", [r.request_id for r in got.records])
except BillingApiError as exc:
    print("error:", exc)
"""


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_loopback_api_is_reached_directly_whatever_the_proxy_variables_say(
    billing: FakeBilling, proxy: RecordingProxy, host: str
) -> None:
    billing.reset()
    billing.events = [event("r1", "2026-11-02T09:00:00Z", 800_000_000)]
    base = f"http://{host}:{billing.port}/v1"
    done = subprocess.run(
        [sys.executable, "-c", FETCH, ADMIN_KEY, base],
        env=dict(os.environ),  # the proxy fixture's variables, no NO_PROXY
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "records: ['r1']\n"
    assert proxy.received == []  # the proxy was never contacted
    assert [r.headers["authorization"] for r in billing.requests] == [f"Key {ADMIN_KEY}"]


def test_a_remote_https_api_goes_through_the_proxy_as_a_tunnel_without_the_key(
    proxy: RecordingProxy,
) -> None:
    """The proxy is honoured for fal's address, and is only asked to open a tunnel: the key
    would travel inside TLS. Here the proxy refuses, so the fetch fails with one clear error."""
    with pytest.raises(BillingApiError) as info:
        fetch_billing_events(ADMIN_KEY, NOV1, NOV8, base_url="https://api.fal.ai/v1")
    assert len(proxy.received) == 1
    assert proxy.received[0].startswith(b"CONNECT api.fal.ai:443 ")
    assert ADMIN_KEY.encode() not in proxy.received[0]
    assert b"Authorization" not in proxy.received[0]
    assert ADMIN_KEY not in str(info.value)
    assert "cannot reach fal's billing API at https://api.fal.ai/v1" in str(info.value)
