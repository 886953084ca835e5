"""The real @fal-ai/client (npm, pinned in tests/node/package-lock.json) run by Node against
`falbudget proxy`, which forwards to the fake fal server: subscribe; queue submit, status and
result; a refusal the client surfaces as its 402; a cancel. Each client uses a virtual key.

Needs node and `npm ci` in tests/node (.ci/run does both); elsewhere the tests skip and say why,
and with CI=true they fail instead.
MAGI defaults = 0.80 (DESIGN.md section 1).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakefal import DEFAULT_OUTPUT, FakeFal
from falbudget import Cap, Guard
from falbudget.proxy.keys import digest, new_key
from needs import must_run
from proxyserver import ProxyServer, settings_for

NODE_DIR = Path(__file__).resolve().parent / "node"
NOW = 1_790_000_000.0


def node_missing() -> str | None:
    """Why the Node tests cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed (Debian: nodejs; .ci/run installs it)"
    if not (NODE_DIR / "node_modules" / "@fal-ai" / "client").is_dir():
        return "run `npm ci` in tests/node first (.ci/run does)"
    return None


def require_node() -> None:
    must_run("the Node client tests", node_missing())


@pytest.fixture
def proxy(fake_fal: FakeFal) -> Iterator[tuple[ProxyServer, Guard, str]]:
    require_node()
    guard = Guard("memory://", [Cap("1.60", scope="user")], clock=lambda: NOW)
    key_id, key = new_key()
    guard.ledger.create_key(key_id, digest(key), {"user": "ann"}, now=NOW)
    server = ProxyServer(guard, settings_for(fake_fal, anonymous=False, follow_interval=0.01))
    with server:
        yield server, guard, key


def client(server: ProxyServer, key: str, scenario: str) -> dict[str, Any]:
    done = subprocess.run(
        ["node", "client.mjs", scenario, server.url],
        cwd=NODE_DIR,
        # no FAL_KEY: the client would send it (Authorization: Key ...); the proxy holds it
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("FAL_KEY")},
            "FALBUDGET_KEY": key,
            "NO_PROXY": "127.0.0.1",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    outcome: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return outcome


def test_subscribe_through_the_proxy(proxy: Any, fake_fal: FakeFal) -> None:
    server, guard, key = proxy
    outcome = client(server, key, "subscribe")
    assert outcome["data"] == DEFAULT_OUTPUT
    assert server.proxy.outcomes.wait(outcome["requestId"]) == "settled"
    [hold] = guard.ledger.holds()
    assert (hold.state, hold.tags["user"], hold.spent_amount) == ("settled", "ann", 800_000)
    sent = next(r for r in fake_fal.requests if r.kind == "submit")
    assert sent.headers["authorization"].startswith("Key ") and key not in str(sent.headers)


def test_queue_submit_status_result(proxy: Any, fake_fal: FakeFal) -> None:
    server, _guard, key = proxy
    outcome = client(server, key, "queue")
    assert outcome["status"] == "COMPLETED" and outcome["data"] == DEFAULT_OUTPUT
    assert server.proxy.outcomes.wait(outcome["requestId"]) == "settled"
    assert fake_fal.count("submit") == 1


def test_a_refusal_reaches_the_client_as_its_402(proxy: Any, fake_fal: FakeFal) -> None:
    server, _guard, key = proxy
    fake_fal.queue_polls = 10**9  # the two admitted jobs stay queued: 1.60 held of 1.60
    for _ in range(2):
        assert client(server, key, "refused") == {"refused": False}
    outcome = client(server, key, "refused")
    assert outcome["refused"] is True and outcome["status"] == 402
    assert outcome["body"]["error"] == "budget_exceeded"
    assert (outcome["body"]["price"], outcome["body"]["remaining"]) == ("0.80", "0.00")
    assert outcome["body"]["cap"] == "user=ann total cap 1.60"
    assert fake_fal.count("submit") == 2


def test_a_cancel_before_the_job_starts_releases(proxy: Any, fake_fal: FakeFal) -> None:
    server, guard, key = proxy
    fake_fal.queue_polls = 10**9
    outcome = client(server, key, "cancel")
    assert server.proxy.outcomes.wait(outcome["requestId"]) == "released"
    assert fake_fal.cancelled == [outcome["requestId"]]
    assert [h.state for h in guard.ledger.holds()] == ["released"]
