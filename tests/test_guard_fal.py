"""guard.wrap() around the real fal_client 1.0.3, talking to the local fake fal server.

Prices (docs/pricing.md): MAGI defaults = 0.80; 144 frames = 0.80 + 2 x 0.20 = 1.20.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from decimal import Decimal
from pathlib import Path

import fal_client
import httpx
import pytest

from fakefal import DEFAULT_OUTPUT, FakeFal
from falbudget import (
    BudgetExceeded,
    Cap,
    Guard,
    IdempotencyReplayed,
    InvalidArguments,
    UnknownEndpoint,
)

MAGI = "fal-ai/magi/image-to-video"
ARGS = {"prompt": "a fox", "image_url": "https://example.invalid/fox.png"}
ARGS_120 = {**ARGS, "num_frames": 144}


@pytest.fixture(params=["memory", "sqlite"])
def guard(request: pytest.FixtureRequest, tmp_path: Path) -> Guard:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'fal.db'}"
    return Guard(url, [Cap("2.00")], hold_ttl=30)


def states(guard: Guard) -> list[str]:
    return [h.state for h in guard.ledger.holds()]


# -- refusals never reach fal ------------------------------------------------------------------


def test_a_refused_call_makes_no_http_request(
    guard: Guard, fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    fal = guard.wrap(fal_sync_client)
    fal.run(MAGI, ARGS_120)  # 1.20 of 2.00
    fake_fal.reset()
    for call in (fal.run, fal.subscribe, fal.submit):
        with pytest.raises(BudgetExceeded) as info:
            call(MAGI, ARGS_120)  # 1.20 more would make 2.40
        assert not isinstance(info.value, httpx.HTTPError)
    with pytest.raises(BudgetExceeded):
        list(fal.stream(MAGI, ARGS_120))
    with pytest.raises(InvalidArguments, match="prompt"):
        fal.run(MAGI, {"image_url": "https://example.invalid/x.png"})
    with pytest.raises(UnknownEndpoint):
        fal.run("fal-ai/unpriced", {"prompt": "x"})
    with pytest.raises(UnknownEndpoint), fal.realtime("fal-ai/unpriced-realtime"):
        pass
    assert fake_fal.count() == 0
    assert guard.spent() == Decimal("1.20") and guard.held() == 0


def test_async_refusal_makes_no_http_request(
    guard: Guard, fake_fal: FakeFal, fal_async_client: object
) -> None:
    async def scenario() -> None:
        fal = guard.wrap(fal_async_client())  # type: ignore[operator]
        assert await fal.run(MAGI, ARGS_120) == DEFAULT_OUTPUT
        with pytest.raises(BudgetExceeded):
            await fal.subscribe(MAGI, ARGS_120, interval=0.001)

    asyncio.run(scenario())
    assert fake_fal.kinds() == ["run"]
    assert guard.spent() == Decimal("1.20")


# -- admitted calls reach fal once and settle --------------------------------------------------


def test_run_reaches_the_server_once_and_settles(
    guard: Guard, fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    fal = guard.wrap(fal_sync_client, project="alpha")
    assert fal.run(application=MAGI, arguments=ARGS) == DEFAULT_OUTPUT
    assert fake_fal.calls == [("POST", f"/{MAGI}", ARGS)]
    assert guard.spent() == Decimal("0.80") and states(guard) == ["settled"]
    assert guard.ledger.holds()[0].tags["project"] == "alpha"


def test_wrapped_methods_keep_their_signatures(
    guard: Guard, fal_sync_client: fal_client.SyncClient
) -> None:
    fal = guard.wrap(fal_sync_client)
    for name in ("run", "subscribe", "submit", "stream", "realtime", "ws_connect"):
        assert inspect.signature(getattr(fal, name)) == inspect.signature(
            getattr(fal_sync_client, name)
        ), name
    assert fal.status == fal_sync_client.status  # non-spending calls pass through as they are


def test_run_marks_the_hold_submitted_before_the_request_leaves(
    guard: Guard, fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    fake_fal.delay("run")  # fal holds the answer until reset()
    fal = guard.wrap(fal_sync_client)
    results: list[object] = []
    call = threading.Thread(target=lambda: results.append(fal.run(MAGI, ARGS)))
    call.start()
    fake_fal.wait_for("run")  # the request is at fal, no answer yet
    hold = guard.ledger.holds()[0]
    # a death from here on expires it as spent: fal may bill what it received
    assert (hold.state, hold.request_id) == ("submitted", None)
    fake_fal.reset()  # the answer comes
    call.join(timeout=60)
    assert results == [DEFAULT_OUTPUT] and states(guard) == ["settled"]


def test_async_run_and_stream_mark_the_hold_before_the_request_leaves(
    guard: Guard, fake_fal: FakeFal, fal_async_client: object
) -> None:
    async def scenario() -> None:
        fal = guard.wrap(fal_async_client())  # type: ignore[operator]
        fake_fal.delay("run")
        task = asyncio.create_task(fal.run(MAGI, ARGS))
        await asyncio.to_thread(fake_fal.wait_for, "run")
        assert [(h.state, h.request_id) for h in guard.ledger.holds()] == [("submitted", None)]
        fake_fal.reset()
        assert await task == DEFAULT_OUTPUT
        events = fal.stream(MAGI, ARGS)  # nothing leaves before the first read
        assert [h.state for h in guard.ledger.holds()] == ["settled"]
        assert [event async for event in events][-1] == DEFAULT_OUTPUT

    asyncio.run(scenario())
    assert states(guard) == ["settled", "settled"] and guard.spent() == Decimal("1.60")


def test_a_stream_marks_its_hold_on_the_first_read(
    guard: Guard, fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    events = guard.wrap(fal_sync_client).stream(MAGI, ARGS)
    assert states(guard) == ["held"] and fake_fal.count() == 0  # not sent yet
    fake_fal.delay("stream")
    reader = threading.Thread(target=lambda: list(events))
    reader.start()
    fake_fal.wait_for("stream")
    assert [(h.state, h.request_id) for h in guard.ledger.holds()] == [("submitted", None)]
    fake_fal.reset()
    reader.join(timeout=60)
    assert states(guard) == ["settled"]


def test_subscribe_passes_keywords_and_records_the_request_id(
    guard: Guard, fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    fake_fal.queue_polls = 2
    enqueued: list[str] = []
    updates: list[object] = []
    fal = guard.wrap(fal_sync_client)
    result = fal.subscribe(
        MAGI, ARGS, interval=0.001, on_enqueue=enqueued.append, on_queue_update=updates.append
    )
    assert result == DEFAULT_OUTPUT
    request_id = fake_fal.jobs[0].request_id
    assert enqueued == [request_id]
    assert len(updates) == 3  # Queued x2, Completed: the user's callback still runs
    hold = guard.ledger.holds()[0]
    assert (hold.state, hold.request_id) == ("settled", request_id)
    assert fake_fal.count("submit") == 1


def test_submit_marks_submitted_then_get_settles(
    guard: Guard, fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    fal = guard.wrap(fal_sync_client)
    handle = fal.submit(MAGI, ARGS)
    assert handle.request_id == fake_fal.jobs[0].request_id
    assert states(guard) == ["submitted"] and guard.held() == Decimal("0.80")
    assert handle.get(interval=0.001) == DEFAULT_OUTPUT
    assert states(guard) == ["settled"] and guard.spent() == Decimal("0.80")


def test_a_queued_job_that_fails_on_fal_side_is_released(
    guard: Guard, fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    fake_fal.fail_job(500, "worker crashed")
    handle = guard.wrap(fal_sync_client).submit(MAGI, ARGS)
    with pytest.raises(fal_client.FalClientHTTPError):
        handle.get(interval=0.001)
    assert states(guard) == ["released"] and guard.spent() == 0


@pytest.mark.parametrize(
    ("status", "state", "spent"),
    [
        (500, "released", Decimal("0")),  # fal: server errors are never billed
        (503, "released", Decimal("0")),
        (422, "settled", Decimal("0.80")),  # may be billed: spent until reconciled
        (401, "released", Decimal("0")),  # refused before any work
    ],
)
def test_run_errors_follow_the_policy(
    guard: Guard,
    fake_fal: FakeFal,
    fal_sync_client: fal_client.SyncClient,
    status: int,
    state: str,
    spent: Decimal,
) -> None:
    fake_fal.fail("run", status)
    with pytest.raises(fal_client.FalClientHTTPError):
        guard.wrap(fal_sync_client).run(MAGI, ARGS)
    assert fake_fal.count("run") == 1
    assert states(guard) == [state]
    assert guard.spent() == spent and guard.held() == 0


def test_5xx_on_submit_releases(
    guard: Guard, fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    fake_fal.fail("submit", 500)
    with pytest.raises(fal_client.FalClientHTTPError):
        guard.wrap(fal_sync_client).subscribe(MAGI, ARGS, interval=0.001)
    assert states(guard) == ["released"] and guard.held() == 0


def test_timeout_before_fal_answered_keeps_the_hold_submitted(
    guard: Guard, fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    fake_fal.delay("submit")  # no answer to the submit: no request id ever reaches the client
    fal = guard.wrap(fal_sync_client)
    with pytest.warns(UserWarning), pytest.raises(fal_client.FalClientTimeoutError) as info:
        fal.subscribe(MAGI, ARGS, client_timeout=0.3, start_timeout=2, interval=0.001)
    assert info.value.request_id is None
    # the submit reached fal (the fake server holds its answer back): it may be queued and billed
    assert fake_fal.count("submit") >= 1
    assert states(guard) == ["submitted"] and guard.held() == Decimal("0.80")


def test_timeout_after_fal_accepted_keeps_the_hold_submitted(
    guard: Guard, fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    fake_fal.queue_polls = 1_000_000
    fal = guard.wrap(fal_sync_client)
    with pytest.warns(UserWarning), pytest.raises(fal_client.FalClientTimeoutError) as info:
        fal.subscribe(MAGI, ARGS, client_timeout=0.3, start_timeout=2, interval=0.01)
    hold = guard.ledger.holds()[0]
    assert hold.request_id == info.value.request_id == fake_fal.jobs[0].request_id
    assert hold.state == "submitted"  # the job may still run and be billed
    assert guard.held() == Decimal("0.80")


def test_a_connection_refused_releases(guard: Guard, fake_fal: FakeFal) -> None:
    client = fal_client.SyncClient(key="dummy")
    fal = guard.wrap(client)
    import fal_client.client as fc

    # a port nothing listens on: fal_client retries the connect error, then raises it
    closed = "http://127.0.0.1:9/"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fc, "RUN_URL_FORMAT", closed)
        with pytest.raises(httpx.ConnectError):
            fal.run(MAGI, ARGS)
    assert states(guard) == ["released"]


def test_stream_settles_when_consumed(
    guard: Guard, fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    events = list(guard.wrap(fal_sync_client).stream(MAGI, ARGS))
    assert events[-1] == DEFAULT_OUTPUT
    assert states(guard) == ["settled"] and fake_fal.count("stream") == 1


def test_idempotency_key_through_the_wrapper(
    guard: Guard, fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    fal = guard.wrap(fal_sync_client).with_options(idempotency_key="job-1", user="ann")
    fal.run(MAGI, ARGS)
    with pytest.raises(IdempotencyReplayed):  # a retry of the same logical request: not sent
        fal.run(MAGI, ARGS)
    assert guard.spent() == Decimal("0.80")
    assert fake_fal.count("run") == 1


def test_async_submit_subscribe_and_errors(
    guard: Guard, fake_fal: FakeFal, fal_async_client: object
) -> None:
    fake_fal.queue_polls = 1
    enqueued: list[str] = []

    async def on_enqueue(request_id: str) -> None:
        enqueued.append(request_id)

    async def scenario() -> None:
        fal = guard.wrap(fal_async_client())  # type: ignore[operator]
        result = await fal.subscribe(MAGI, ARGS, interval=0.001, on_enqueue=on_enqueue)
        assert result == DEFAULT_OUTPUT
        handle = await fal.submit(MAGI, ARGS)
        assert guard.held() == Decimal("0.80")
        assert await handle.get(interval=0.001) == DEFAULT_OUTPUT
        fake_fal.fail("run", 502)
        with pytest.raises(fal_client.FalClientHTTPError):
            await fal.run(MAGI, {**ARGS, "resolution": "480p"})  # 0.40: 2.00 in all

    asyncio.run(scenario())
    assert enqueued == [fake_fal.jobs[0].request_id]
    assert sorted(states(guard)) == ["released", "settled", "settled"]
    assert guard.spent() == Decimal("1.60") and guard.held() == 0


def test_wrap_refuses_other_objects(guard: Guard) -> None:
    from falbudget import ConfigurationError

    with pytest.raises(ConfigurationError, match="SyncClient or AsyncClient"):
        guard.wrap(object())
