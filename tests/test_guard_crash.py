"""A process killed while its guarded request is at fal: the spend is never lost.

The guard marks a hold submitted *before* the request's bytes leave, so when the process dies
mid-call (SIGKILL: no settle, no release, no cleanup) its hold expires as spent, whichever call
it was in, whether or not fal's queue had returned a request id. A worker process (spawned, in
tests/ledger_backends.py) calls the real fal_client against the fake fal, which holds its answer
back; the test kills the worker once the request has reached the fake, then lets the hold's ttl
pass on a clock of its own.

Price (docs/pricing.md): MAGI defaults (96 frames, 720p, 16 steps) = 0.80.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import signal
from decimal import Decimal
from pathlib import Path

import pytest

from fakefal import FakeFal, Kind, fal_client_patches, fal_env
from falbudget import Guard
from ledger_backends import send_then_die, store_url

T0 = dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC).timestamp()
TTL = 600.0

# (the call the worker is in, the request the fake holds back, fal's queue accepted it)
CALLS: dict[str, tuple[Kind, bool]] = {
    "run": ("run", False),
    "arun": ("run", False),
    "stream": ("stream", False),
    "call": ("run", False),
    "subscribe-sending": ("submit", False),  # the submit POST is out, no request id back
    "subscribe-accepted": ("status", True),  # the queue returned a request id
}
CASES = [
    *(pytest.param("sqlite", call, id=f"sqlite-{call}") for call in CALLS),
    *(
        pytest.param("postgres", call, id=f"postgres-{call}", marks=pytest.mark.postgres)
        for call in ("run", "subscribe-sending")
    ),
]


def kill_mid_call(url: str, fake: FakeFal, call: str) -> None:
    kind, _ = CALLS[call]
    fake.delay(kind)  # the answer never comes while the worker lives
    ctx = multiprocessing.get_context("spawn")
    worker = ctx.Process(
        target=send_then_die,
        args=(
            url,
            fal_client_patches(fake, fast_retries=False),
            fal_env(fake),
            call.partition("-")[0],
            T0,
            TTL,
        ),
    )
    worker.start()
    try:
        fake.wait_for(kind)  # the request reached fal: its bytes have left
        os.kill(worker.pid or 0, signal.SIGKILL)
        worker.join(timeout=30)
    finally:
        if worker.is_alive():  # pragma: no cover - only when the test is already failing
            worker.kill()
    assert worker.exitcode == -signal.SIGKILL


@pytest.mark.parametrize(("kind", "call"), CASES)
def test_a_call_killed_mid_request_counts_as_spent_at_expiry(
    kind: str, call: str, tmp_path: Path, fake_fal: FakeFal
) -> None:
    url = store_url(kind, tmp_path)
    kill_mid_call(url, fake_fal, call)
    _, accepted = CALLS[call]
    request_id = fake_fal.jobs[0].request_id if accepted else None

    now = T0
    guard = Guard(url, clock=lambda: now, hold_ttl=TTL)
    (hold,) = guard.ledger.holds()
    assert (hold.state, hold.request_id) == ("submitted", request_id)
    assert guard.held() == Decimal("0.80") and guard.spent() == 0

    now = T0 + TTL + 1  # past the dead worker's ttl
    (expired,) = guard.release_expired()
    assert (expired.id, expired.state, expired.settled_amount) == (hold.id, "expired", 800_000)
    assert guard.spent() == Decimal("0.80") and guard.held() == 0
    guard.close()
