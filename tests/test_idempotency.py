"""Idempotency keys behave as payment APIs do (issue 9, part 2): a key is bound to the request it
was first used for, a replay never sends a second request, and keys are remembered for a stated
time after their hold closes. On every backend (memory, SQLite, PostgreSQL), sync and async, and
through the real fal_client against the local fake fal server.

Prices by hand (docs/pricing.md), MAGI-1 image to video: the defaults (96 frames, 720p, 16
steps) cost 0.80; at 480p 0.80 x 0.5 = 0.40; 192 frames cost 0.80 + 4 x 0.20 = 1.60. MAGI-1 text
to video (fal-ai/magi) with its defaults costs 0.80 too.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import fal_client
import pytest

from fakefal import DEFAULT_OUTPUT, FakeFal
from falbudget import (
    Cap,
    ConfigurationError,
    Guard,
    IdempotencyConflict,
    IdempotencyInProgress,
    IdempotencyReplayed,
    InvalidArguments,
)
from falbudget.guard.config import load_config
from falbudget.ledger import Ledger
from ledger_backends import (
    PROCESS_BACKENDS,
    backend_params,
    settle_under_key,
    store_url,
)

MAGI = "fal-ai/magi/image-to-video"
TEXT = "fal-ai/magi"
ARGS = {"prompt": "a fox", "image_url": "https://example.invalid/fox.png"}  # 0.80
ARGS_480 = {**ARGS, "resolution": "480p"}  # 0.40
ARGS_192 = {**ARGS, "num_frames": 192}  # 1.60
T0 = 1_764_000_000.0  # 2025-11-24 16:00 UTC
DAY = 86_400.0


class Clock:
    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(ledger_factory: Callable[[], Ledger]) -> Callable[[], Ledger]:
    """A new ledger object on this test's store on each call, on every backend."""
    return ledger_factory


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(store: Callable[[], Ledger], clock: Clock, limit: str = "1.00", **kw: Any) -> Guard:
    return Guard(store(), [Cap(limit)], clock=clock, **kw)


# -- a key is bound to its request ----------------------------------------------------------------
def test_a_key_reused_for_a_dearer_request_is_a_conflict_that_holds_nothing(
    store: Callable[[], Ledger], clock: Clock
) -> None:
    """The issue's example: 0.40 settled under K1, then 1.60 under K1 against a 1.00 cap."""
    guard = make(store, clock)
    with guard.reserve(MAGI, ARGS_480, idempotency_key="K1") as first:
        pass
    with pytest.raises(IdempotencyConflict) as info:
        guard.reserve(MAGI, ARGS_192, idempotency_key="K1").acquire()
    error = info.value
    assert (error.key, error.hold_id, error.state, error.differs) == (
        "K1",
        first.id,
        "settled",
        ("arguments",),
    )
    assert str(error) == (
        f"idempotency_key='K1' is not allowed for this request: it is bound to hold {first.id}"
        f" (settled, {MAGI}), and this request differs in its arguments; nothing was held or"
        " sent. Use a new key for a new request (a key is remembered for 24 h after its hold"
        " closes)"
    )
    assert (guard.spent(), guard.held()) == (Decimal("0.40"), Decimal("0"))
    assert [h.id for h in guard.ledger.holds()] == [first.id]


def test_another_endpoint_or_other_tags_under_a_key_are_conflicts(
    store: Callable[[], Ledger], clock: Clock
) -> None:
    guard = make(store, clock, "10.00")
    with guard.reserve(MAGI, ARGS, idempotency_key="K1", project="alpha"):
        pass
    with pytest.raises(IdempotencyConflict, match="differs in its endpoint 'fal-ai/magi'") as info:
        guard.reserve(TEXT, {"prompt": "a fox"}, idempotency_key="K1", project="alpha").acquire()
    assert info.value.differs == ("endpoint",)
    with pytest.raises(IdempotencyConflict, match="differs in its tags;") as info:
        guard.reserve(MAGI, ARGS, idempotency_key="K1", project="beta").acquire()
    assert info.value.differs == ("tags",)
    with pytest.raises(IdempotencyConflict, match="differs in its tags;"):
        guard.reserve(MAGI, ARGS, idempotency_key="K1").acquire()  # no tag is a tag change too
    assert guard.spent() == Decimal("0.80")
    assert len(guard.ledger.holds()) == 1


def test_the_same_request_however_written_replays_and_charges_once(
    store: Callable[[], Ledger], clock: Clock
) -> None:
    guard = make(store, clock)
    with guard.reserve(MAGI, ARGS, idempotency_key="K", user="ann", project="p") as first:
        pass
    spelled_out = {
        "num_inference_steps": 16,
        "resolution": "720p",
        "num_frames": 96,
        **dict(reversed(list(ARGS.items()))),
    }
    with guard.reserve(MAGI, spelled_out, idempotency_key="K", project="p", user="ann") as again:
        pass
    assert again.replayed and again.id == first.id and again.state == "settled"
    assert guard.spent() == Decimal("0.80")


def test_a_replayed_hold_is_left_to_its_first_request(
    store: Callable[[], Ledger], clock: Clock
) -> None:
    """Leaving the block of a replay neither settles nor releases the first request's hold: that
    request may still be running on fal."""
    guard = make(store, clock)
    first = guard.reserve(MAGI, ARGS, idempotency_key="K").acquire()
    with pytest.raises(RuntimeError), guard.reserve(MAGI, ARGS, idempotency_key="K") as replay:
        assert replay.replayed and replay.id == first.id
        raise RuntimeError("the replaying code failed")
    with guard.reserve(MAGI, ARGS, idempotency_key="K"):
        pass
    assert guard.ledger.get_hold(first.id).state == "held"
    assert (guard.held(), guard.spent()) == (Decimal("0.80"), Decimal("0"))
    first.settle()
    assert (guard.held(), guard.spent()) == (Decimal("0"), Decimal("0.80"))


def test_a_released_request_may_be_retried_with_its_key_but_no_other(
    store: Callable[[], Ledger], clock: Clock
) -> None:
    guard = make(store, clock)
    with pytest.raises(RuntimeError), guard.reserve(MAGI, ARGS, idempotency_key="K") as first:
        raise RuntimeError("not sent")
    assert first.state == "released"
    with pytest.raises(IdempotencyConflict, match=r"\(released, "):
        guard.reserve(MAGI, ARGS_480, idempotency_key="K").acquire()
    with guard.reserve(MAGI, ARGS, idempotency_key="K") as retry:
        assert (retry.replayed, retry.id) == (False, first.id)
    assert guard.spent() == Decimal("0.80")


def test_async_reservations_follow_the_same_rules(
    store: Callable[[], Ledger], clock: Clock
) -> None:
    guard = make(store, clock)

    async def scenario() -> None:
        async with guard.areserve(MAGI, ARGS_480, idempotency_key="K"):
            pass
        async with guard.areserve(MAGI, ARGS_480, idempotency_key="K") as again:
            assert again.replayed
        with pytest.raises(IdempotencyConflict):
            await guard.areserve(MAGI, ARGS_192, idempotency_key="K").aacquire()

    asyncio.run(scenario())
    assert (guard.spent(), guard.held()) == (Decimal("0.40"), Decimal("0"))


@pytest.mark.parametrize("key", ["", "   ", 42, b"K"])
def test_a_bad_key_is_refused_before_anything_is_held(
    store: Callable[[], Ledger], clock: Clock, key: Any
) -> None:
    guard = make(store, clock)
    with pytest.raises(ConfigurationError) as info:
        guard.reserve(MAGI, ARGS, idempotency_key=key)
    assert str(info.value) == (
        f"idempotency_key={key!r} is not allowed: a non-empty string such as 'job-42', or None"
    )
    assert guard.ledger.holds() == []


def test_arguments_that_are_not_json_cannot_be_bound_to_a_key(
    store: Callable[[], Ledger], clock: Clock
) -> None:
    guard = Guard(store(), [Cap("1.00")], clock=clock, on_unknown="allow")
    with pytest.raises(InvalidArguments, match=r"arguments=.* JSON values to be bound"):
        guard.reserve("fal-ai/unpriced", {"when": object()}, idempotency_key="K")
    assert guard.ledger.holds() == []


# -- guard.call never calls again ---------------------------------------------------------------
def test_call_never_calls_again_under_a_replayed_key(
    store: Callable[[], Ledger], clock: Clock
) -> None:
    guard = make(store, clock, "2.00")
    calls: list[str] = []

    def send(endpoint: str, arguments: object) -> str:
        calls.append(endpoint)
        return "done"

    open_hold = guard.reserve(MAGI, ARGS_480, idempotency_key="busy").acquire()
    with pytest.raises(IdempotencyInProgress) as busy:
        guard.call(send, MAGI, ARGS_480, idempotency_key="busy")
    assert (busy.value.key, busy.value.hold_id, busy.value.state) == ("busy", open_hold.id, "held")
    assert guard.call(send, MAGI, ARGS, idempotency_key="K") == "done"
    with pytest.raises(IdempotencyReplayed, match=r"guard\.call keeps no result to return") as done:
        guard.call(send, MAGI, ARGS, idempotency_key="K")
    assert done.value.state == "settled"

    async def asend(endpoint: str, arguments: object) -> str:
        return send(endpoint, arguments)

    async def scenario() -> None:
        with pytest.raises(IdempotencyReplayed):
            await guard.acall(asend, MAGI, ARGS, idempotency_key="K")
        with pytest.raises(IdempotencyInProgress):
            await guard.acall(asend, MAGI, ARGS_480, idempotency_key="busy")

    asyncio.run(scenario())
    assert calls == [MAGI]
    assert guard.ledger.get_hold(open_hold.id).state == "held"
    assert (guard.spent(), guard.held()) == (Decimal("0.80"), Decimal("0.40"))


# -- how long a key is remembered -----------------------------------------------------------------
def test_a_key_is_remembered_for_24_hours_after_its_hold_closes(
    store: Callable[[], Ledger], clock: Clock
) -> None:
    guard = make(store, clock, "5.00")
    assert guard.idempotency_ttl == DAY
    hold = guard.reserve(MAGI, ARGS_480, idempotency_key="K").acquire()
    clock.now = T0 + 7_200  # open for two hours: the 24 h run from the close
    hold.settle()
    clock.now = T0 + 7_200 + DAY  # exactly 24 h after the close: still remembered
    with pytest.raises(IdempotencyConflict):
        guard.reserve(MAGI, ARGS, idempotency_key="K").acquire()
    assert guard.reserve(MAGI, ARGS_480, idempotency_key="K").acquire().replayed
    clock.now = T0 + 7_200 + DAY + 0.001  # forgotten: a new request under the key
    with guard.reserve(MAGI, ARGS, idempotency_key="K") as fresh:
        assert not fresh.replayed and fresh.id != hold.id
    assert guard.spent() == Decimal("1.20")  # 0.40 + 0.80
    assert [h.idempotency_key for h in guard.ledger.holds()] == ["K", "K"]
    with pytest.raises(IdempotencyConflict):  # the key is bound to the new request now
        guard.reserve(MAGI, ARGS_480, idempotency_key="K").acquire()


def test_the_lifetime_is_set_on_the_guard(store: Callable[[], Ledger], clock: Clock) -> None:
    guard = make(store, clock, "5.00", idempotency_ttl=3_600)
    with guard.reserve(MAGI, ARGS_480, idempotency_key="K"):
        pass
    assert guard.ledger.holds()[0].idempotency_ttl == 3_600.0
    clock.now = T0 + 3_600
    assert guard.reserve(MAGI, ARGS_480, idempotency_key="K").acquire().replayed
    clock.now = T0 + 3_601
    with guard.reserve(MAGI, ARGS, idempotency_key="K") as fresh:
        assert not fresh.replayed
    assert guard.spent() == Decimal("1.20")


def test_a_key_keeps_the_lifetime_it_was_bound_with(
    store: Callable[[], Ledger], clock: Clock
) -> None:
    """A guard configured with a shorter lifetime does not shorten another's promise."""
    long = make(store, clock, "5.00", idempotency_ttl=2 * DAY)
    short = make(store, clock, "5.00", idempotency_ttl=3_600)
    with long.reserve(MAGI, ARGS_480, idempotency_key="K"):
        pass
    clock.now = T0 + DAY
    with pytest.raises(IdempotencyConflict, match="remembered for 48 h after its hold closes"):
        short.reserve(MAGI, ARGS, idempotency_key="K").acquire()


@pytest.mark.parametrize("bad", [0, 3_599, 3_599.9, 365 * DAY + 1, float("inf"), True, "3600"])
def test_a_lifetime_out_of_bounds_is_refused(bad: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        Guard("memory://", idempotency_ttl=bad)
    assert str(info.value) == (
        f"idempotency_ttl={bad!r} is not allowed: a number of seconds from 3600 (1 hour) to"
        " 31536000 (365 days); the default is 86400 (24 hours)"
    )


def test_the_lifetime_is_set_in_the_config_file(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "falbudget.yaml"
    path.write_text("ledger: memory://\nidempotency_ttl: 7200\n", encoding="utf-8")
    assert Guard.from_config(str(path), clock=clock).idempotency_ttl == 7_200.0
    path.write_text("ledger: memory://\n", encoding="utf-8")
    assert Guard.from_config(str(path)).idempotency_ttl == DAY
    for text, message in [
        ("idempotency_ttl: 60", "greater than or equal to 3600 (got 60)"),
        ("idempotency_ttl: 40000000", "less than or equal to 31536000 (got 40000000)"),
        ("idempotency_ttl: '86400'", "a valid number (got '86400')"),
        ("idempotency_ttl: true", "a valid number (got True)"),
    ]:
        path.write_text(text + "\n", encoding="utf-8")
        with pytest.raises(ConfigurationError) as info:
            load_config(str(path))
        assert str(info.value).startswith(f"{path}: idempotency_ttl: ")
        assert message in str(info.value)


@pytest.mark.parametrize("kind", backend_params(PROCESS_BACKENDS))
def test_a_key_is_remembered_across_processes(kind: str, tmp_path: Path) -> None:
    url = store_url(kind, tmp_path)
    child = multiprocessing.get_context("spawn").Process(
        target=settle_under_key, args=(url, ARGS_480, "job-42", T0, 3 * 3_600.0)
    )
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0
    clock = Clock(T0 + 3 * 3_600)
    guard = Guard(url, [Cap("10.00")], clock=clock)
    try:
        with pytest.raises(IdempotencyConflict, match="remembered for 3 h"):
            guard.reserve(MAGI, ARGS_192, idempotency_key="job-42").acquire()
        assert guard.reserve(MAGI, ARGS_480, idempotency_key="job-42").acquire().replayed
        clock.now = T0 + 3 * 3_600 + 1
        with guard.reserve(MAGI, ARGS_192, idempotency_key="job-42") as fresh:
            assert not fresh.replayed
        assert guard.spent() == Decimal("2.00")  # 0.40 in the child, 1.60 here
    finally:
        guard.close()


# -- through fal_client: a replay never sends a second request ------------------------------------
@pytest.fixture
def guard(store: Callable[[], Ledger]) -> Guard:
    return Guard(store(), [Cap("2.00")], hold_ttl=30)


def test_a_conflicting_key_sends_nothing(
    guard: Guard, fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    fal = guard.wrap(fal_sync_client).with_options(idempotency_key="K")
    assert fal.run(MAGI, ARGS_480) == DEFAULT_OUTPUT
    for call in (fal.run, fal.subscribe, fal.submit):
        with pytest.raises(IdempotencyConflict):
            call(MAGI, ARGS_192)
    with pytest.raises(IdempotencyConflict):
        list(fal.stream(MAGI, ARGS_192))
    assert fake_fal.kinds() == ["run"]
    assert (guard.spent(), guard.held()) == (Decimal("0.40"), Decimal("0"))


def test_a_replayed_submit_returns_the_first_handle_and_sends_nothing(
    guard: Guard, fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    fal = guard.wrap(fal_sync_client).with_options(idempotency_key="K", user="ann")
    first = fal.submit(MAGI, ARGS)
    seen = fake_fal.count()
    again = fal.submit(MAGI, ARGS)
    assert fake_fal.count() == seen == 1
    assert again.request_id == first.request_id
    assert again.hold.replayed and again.hold.id == first.hold.id
    # whoever learns the outcome settles the hold, once
    assert again.get(interval=0.001) == DEFAULT_OUTPUT
    assert first.get(interval=0.001) == DEFAULT_OUTPUT
    assert fake_fal.count("submit") == 1
    assert {r.kind for r in fake_fal.requests[seen:]} == {"status", "result"}
    assert [h.state for h in guard.ledger.holds()] == ["settled"]
    assert (guard.spent(), guard.held()) == (Decimal("0.80"), Decimal("0"))


def test_subscribe_and_run_replays_return_the_result_fetched_by_request_id(
    guard: Guard, fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    fal = guard.wrap(fal_sync_client).with_options(idempotency_key="K")
    assert fal.subscribe(MAGI, ARGS, interval=0.001) == DEFAULT_OUTPUT
    request_id = fake_fal.jobs[0].request_id
    seen = fake_fal.count()
    assert fal.subscribe(MAGI, ARGS, interval=0.001) == DEFAULT_OUTPUT
    assert fal.run(MAGI, ARGS) == DEFAULT_OUTPUT
    replays = fake_fal.requests[seen:]
    assert {r.kind for r in replays} == {"status", "result"}  # no submit, no run
    assert {r.path.split("/requests/")[1].split("/")[0] for r in replays} == {request_id}
    assert (fake_fal.count("submit"), fake_fal.count("run")) == (1, 0)
    assert (guard.spent(), len(guard.ledger.holds())) == (Decimal("0.80"), 1)


def test_a_replay_before_the_first_attempt_has_a_request_id_is_in_progress(
    guard: Guard, fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    first = guard.reserve(MAGI, ARGS, idempotency_key="K").acquire()  # sending, no id yet
    fal = guard.wrap(fal_sync_client).with_options(idempotency_key="K")
    for call in (fal.run, fal.subscribe, fal.submit):
        with pytest.raises(IdempotencyInProgress) as info:
            call(MAGI, ARGS)
        assert (info.value.hold_id, info.value.state) == (first.id, "held")
    with pytest.raises(IdempotencyInProgress):
        list(fal.stream(MAGI, ARGS))
    first.mark_submitted("req-1")
    assert fal.submit(MAGI, ARGS).request_id == "req-1"  # a handle, nothing sent yet
    assert fake_fal.count() == 0
    assert (guard.held(), guard.ledger.get_hold(first.id).state) == (Decimal("0.80"), "submitted")


def test_a_finished_direct_run_is_never_sent_again(
    guard: Guard, fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    """fal's direct run() bypasses the queue: its result cannot be fetched by request id."""
    fal = guard.wrap(fal_sync_client).with_options(idempotency_key="K")
    assert fal.run(MAGI, ARGS) == DEFAULT_OUTPUT
    with pytest.raises(IdempotencyReplayed, match="no fal request id is known"):
        fal.run(MAGI, ARGS)
    with pytest.raises(IdempotencyReplayed):
        list(fal.stream(MAGI, ARGS))
    assert fake_fal.kinds() == ["run"]
    assert guard.spent() == Decimal("0.80")


def test_a_released_request_is_sent_again_with_its_key(
    guard: Guard, fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    fake_fal.fail("run", 500, times=1)  # a server error: never billed, the hold is released
    fal = guard.wrap(fal_sync_client).with_options(idempotency_key="K")
    with pytest.raises(fal_client.FalClientHTTPError):
        fal.run(MAGI, ARGS)
    assert guard.ledger.holds()[0].state == "released"
    assert fal.run(MAGI, ARGS) == DEFAULT_OUTPUT
    assert fake_fal.kinds() == ["run", "run"]
    assert guard.spent() == Decimal("0.80") and len(guard.ledger.holds()) == 1


def test_async_replays_send_nothing(
    guard: Guard, fake_fal: FakeFal, fal_async_client: Callable[[], fal_client.AsyncClient]
) -> None:
    async def scenario() -> None:
        fal = guard.wrap(fal_async_client())
        keyed = fal.with_options(idempotency_key="K")
        assert await keyed.subscribe(MAGI, ARGS, interval=0.001) == DEFAULT_OUTPUT
        request_id = fake_fal.jobs[0].request_id
        seen = fake_fal.count()
        assert await keyed.subscribe(MAGI, ARGS, interval=0.001) == DEFAULT_OUTPUT
        assert await keyed.run(MAGI, ARGS) == DEFAULT_OUTPUT
        handle = await keyed.submit(MAGI, ARGS)
        assert (handle.request_id, handle.hold.replayed) == (request_id, True)
        assert await handle.get(interval=0.001) == DEFAULT_OUTPUT
        assert {r.kind for r in fake_fal.requests[seen:]} == {"status", "result"}
        seen = fake_fal.count()
        for call in (keyed.run, keyed.subscribe, keyed.submit):
            with pytest.raises(IdempotencyConflict):
                await call(MAGI, ARGS_480)
        with pytest.raises(IdempotencyReplayed):
            async for _ in keyed.stream(MAGI, ARGS):
                pass
        busy = await guard.areserve(MAGI, ARGS_480, idempotency_key="B").aacquire()
        waiting = fal.with_options(idempotency_key="B")
        for call in (waiting.run, waiting.subscribe, waiting.submit):
            with pytest.raises(IdempotencyInProgress):
                await call(MAGI, ARGS_480)
        with pytest.raises(IdempotencyInProgress):
            async for _ in waiting.stream(MAGI, ARGS_480):
                pass
        await busy.arelease()
        assert fake_fal.count() == seen
        assert (fake_fal.count("submit"), fake_fal.count("run"), fake_fal.count("stream")) == (
            1,
            0,
            0,
        )

    asyncio.run(scenario())
    assert (guard.spent(), guard.held()) == (Decimal("0.80"), Decimal("0"))
