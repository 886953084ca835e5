"""pytest fixtures around :mod:`fakefal`. Load them as a plugin, in tests/conftest.py or in a
test module::

    pytest_plugins = ["fal_fixtures"]

(or ``from fal_fixtures import *`` in conftest.py; importing them by name into a test module
makes ruff report F811 on every test that takes them as parameters).

* ``fake_fal_server`` (session): the running :class:`fakefal.FakeFal`, not patched in.
* ``fake_fal``: the same server, reset before and after the test, with fal_client pointed at it
  (URL constants replaced, retry backoff 0 s, FAL_KEY=dummy, NO_PROXY=127.0.0.1).
* ``fal_sync_client``: a fresh ``fal_client.SyncClient(key="dummy")`` talking to ``fake_fal``.
* ``fal_async_client``: a factory; call it inside a coroutine to get the
  ``AsyncClient(key="dummy")`` of the running event loop (one per ``asyncio.run``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import fal_client
import pytest

from fakefal import FakeFal, async_client_for_loop, patch_with_monkeypatch, sync_client

__all__ = ["fake_fal", "fake_fal_server", "fal_async_client", "fal_sync_client"]


@pytest.fixture(scope="session")
def fake_fal_server() -> Iterator[FakeFal]:
    with FakeFal() as server:
        yield server


@pytest.fixture
def fake_fal(fake_fal_server: FakeFal, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFal]:
    fake_fal_server.reset()
    patch_with_monkeypatch(monkeypatch, fake_fal_server)
    yield fake_fal_server
    # Wake delayed handlers and retire this test's jobs, so threads fal_client left running
    # (sync subscribe(client_timeout=...) does) end now instead of polling into the next test.
    fake_fal_server.reset()


@pytest.fixture
def fal_sync_client(fake_fal: FakeFal) -> fal_client.SyncClient:
    # Not closed on teardown on purpose: after subscribe(client_timeout=...) a fal_client
    # executor thread may still be reading on this client; closing its socket under it leaves
    # that thread blocked until its 120 s read timeout, and interpreter exit joins it.
    return sync_client()


@pytest.fixture
def fal_async_client(fake_fal: FakeFal) -> Callable[..., fal_client.AsyncClient]:
    def make(**kwargs: Any) -> fal_client.AsyncClient:
        return async_client_for_loop(**kwargs)

    return make
