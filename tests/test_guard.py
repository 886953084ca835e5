"""The guard over the memory and SQLite ledgers: expectations computed by hand.

MAGI-1 prices used below (docs/pricing.md): defaults (96 frames, 720p, 16 steps) = 0.80;
144 frames = 0.80 + 2 x 0.20 = 1.20; 144 frames at 480p = 0.60.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from decimal import Decimal
from pathlib import Path

import pytest

import falbudget
from falbudget import BudgetExceeded, Cap, ConfigurationError, Guard, InvalidArguments
from falbudget.ledger import open_ledger

MAGI = "fal-ai/magi/image-to-video"
REQ = {"prompt": "a cat", "image_url": "https://example.invalid/cat.png"}
REQ_120 = {**REQ, "num_frames": 144}  # 1.20


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def utc(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()


@pytest.fixture(params=["memory", "sqlite"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    return f"sqlite:///{tmp_path / 'spend.db'}"


@pytest.fixture
def clock() -> Clock:
    return Clock(utc(2026, 11, 24, 12, 0, 0))


def make(ledger_url: str, caps: list[Cap], clock: Clock, **kw: object) -> Guard:
    return Guard(open_ledger(ledger_url), caps, clock=clock, **kw)  # type: ignore[arg-type]


def test_admitted_request_settles_at_its_quote(ledger_url: str, clock: Clock) -> None:
    guard = make(ledger_url, [Cap("2.00")], clock)
    with guard.reserve(MAGI, REQ) as hold:
        assert hold.amount == Decimal("0.80")
        assert guard.held() == Decimal("0.80")
        assert guard.spent() == Decimal("0.00")
    assert hold.state == "settled"
    assert guard.spent() == Decimal("0.80")
    assert guard.held() == Decimal("0")
    assert guard.remaining() == Decimal("1.20")


def test_refusal_carries_the_figures_and_holds_nothing(ledger_url: str, clock: Clock) -> None:
    cap = Cap("2.00")
    guard = make(ledger_url, [cap], clock)
    for _ in range(2):
        with guard.reserve(MAGI, REQ):
            pass
    with pytest.raises(BudgetExceeded) as info:
        guard.reserve(MAGI, REQ).acquire()
    err = info.value
    assert err.cap is cap
    assert err.quote is not None and err.quote.total == Decimal("0.80")
    assert (err.spent, err.held, err.remaining) == (Decimal("1.60"), 0, Decimal("0.40"))
    assert "remaining 0.40" in str(err)
    assert guard.spent() == Decimal("1.60") and guard.held() == 0


def test_equal_to_the_limit_passes(ledger_url: str, clock: Clock) -> None:
    guard = make(ledger_url, [Cap("1.60")], clock)
    for _ in range(2):
        with guard.reserve(MAGI, REQ):
            pass
    assert guard.remaining() == Decimal("0")
    with pytest.raises(BudgetExceeded):
        guard.reserve(MAGI, REQ).acquire()


def test_an_exception_releases_and_propagates(ledger_url: str, clock: Clock) -> None:
    guard = make(ledger_url, [Cap("2.00")], clock)
    with pytest.raises(RuntimeError, match="boom"), guard.reserve(MAGI, REQ) as hold:
        raise RuntimeError("boom")
    assert hold.state == "released"
    assert guard.spent() == 0 and guard.held() == 0


def test_a_submitted_hold_survives_an_exception(ledger_url: str, clock: Clock) -> None:
    guard = make(ledger_url, [Cap("2.00")], clock)
    with pytest.raises(RuntimeError), guard.reserve(MAGI, REQ) as hold:
        hold.mark_submitted("req-1")
        raise RuntimeError("lost the connection while polling")
    assert hold.state == "submitted"
    assert guard.held() == Decimal("0.80")


def test_the_full_request_is_validated_before_anything_is_held(
    ledger_url: str, clock: Clock
) -> None:
    guard = make(ledger_url, [Cap("2.00")], clock)
    with pytest.raises(InvalidArguments, match="prompt"):
        guard.reserve(MAGI, {"image_url": "https://example.invalid/x.png"})
    with pytest.raises(InvalidArguments, match="num_frames"):
        guard.reserve(MAGI, {**REQ, "num_frames": 120.0})
    assert guard.held() == 0 and guard.ledger.holds() == []


def test_unknown_endpoint_fails_closed_or_passes_unpriced(
    ledger_url: str, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    guard = make(ledger_url, [Cap("2.00")], clock)
    with pytest.raises(falbudget.UnknownEndpoint, match="magi/image-to-video"):
        guard.reserve("fal-ai/magi/image-to-vide", REQ)
    open_guard = make(ledger_url, [Cap("2.00")], clock, on_unknown="allow")
    with caplog.at_level(logging.WARNING), open_guard.reserve("acme/other", {"x": 1}) as hold:
        assert hold.amount == 0
    assert "acme/other is not priced" in caplog.text


def test_max_per_request(ledger_url: str, clock: Clock) -> None:
    guard = make(ledger_url, [Cap("100", max_per_request="1.00")], clock)
    with pytest.raises(BudgetExceeded, match=r"max_per_request 1\.00"):
        guard.reserve(MAGI, REQ_120)
    with guard.reserve(MAGI, REQ):
        pass
    assert guard.spent() == Decimal("0.80")


def test_scopes_project_user_endpoint(ledger_url: str, clock: Clock) -> None:
    caps = [
        Cap("1.00", scope="project=alpha"),
        Cap("1.60", scope="user"),  # each user their own 1.60
        Cap("100", scope=f"endpoint={MAGI}"),
    ]
    guard = make(ledger_url, caps, clock)
    with guard.reserve(MAGI, REQ, project="alpha", user="ann"):
        pass
    # alpha has 0.20 left: refused, whoever asks
    with pytest.raises(BudgetExceeded) as info:
        guard.reserve(MAGI, REQ, project="alpha", user="bob").acquire()
    assert info.value.cap is caps[0]
    # project beta is not capped; ann has 0.80 left of her 1.60, bob all of his
    with guard.reserve(MAGI, REQ, project="beta", user="ann"):
        pass
    with pytest.raises(BudgetExceeded) as info:
        guard.reserve(MAGI, REQ, project="beta", user="ann").acquire()
    assert info.value.cap is caps[1]
    with guard.reserve(MAGI, REQ, project="beta", user="bob"):
        pass
    assert guard.spent("project=alpha") == Decimal("0.80")
    assert guard.spent("user=ann") == Decimal("1.60")
    assert guard.spent("user=bob") == Decimal("0.80")
    assert guard.spent(f"endpoint={MAGI}") == Decimal("2.40")
    assert guard.spent() == Decimal("2.40")
    # the spelling of earlier versions is still read, and names the same scope
    assert guard.spent("user:ann") == Decimal("1.60")
    assert guard.spent(f"endpoint:{MAGI}") == Decimal("2.40")
    with pytest.raises(ConfigurationError, match="no cap tracks"):
        guard.spent("project=beta")


def test_day_window_rolls_over_at_midnight_in_the_caps_zone(ledger_url: str) -> None:
    # 22:59:59 UTC on 24 November is 23:59:59 in Paris (UTC+1 in winter)
    clock = Clock(utc(2026, 11, 24, 22, 59, 59))
    guard = make(ledger_url, [Cap("1.00", window="day", tz="Europe/Paris")], clock)
    with guard.reserve(MAGI, REQ):
        pass
    with pytest.raises(BudgetExceeded):
        guard.reserve(MAGI, REQ).acquire()
    clock.now = utc(2026, 11, 24, 23, 0, 0)  # midnight in Paris: a new day
    assert guard.spent(window="day") == 0
    with guard.reserve(MAGI, REQ):
        pass
    assert guard.spent(window="day") == Decimal("0.80")
    assert guard.spent() == Decimal("1.60")  # all time, all windows


def test_week_starts_monday_and_month_on_the_first(ledger_url: str) -> None:
    # 2026-11-29 is a Sunday, 2026-11-30 a Monday
    clock = Clock(utc(2026, 11, 29, 23, 59, 0))
    caps = [Cap("1.00", window="week"), Cap("100", window="month")]
    guard = make(ledger_url, caps, clock)
    with guard.reserve(MAGI, REQ):
        pass
    with pytest.raises(BudgetExceeded):
        guard.reserve(MAGI, REQ).acquire()
    clock.now = utc(2026, 11, 30, 0, 0, 0)
    with guard.reserve(MAGI, REQ):
        pass
    assert guard.spent(window="week") == Decimal("0.80")
    assert guard.spent(window="month") == Decimal("1.60")
    clock.now = utc(2026, 12, 1, 0, 0, 0)
    assert guard.spent(window="month") == 0
    assert guard.spent(window="week") == Decimal("0.80")


def test_idempotency_key_charges_once(ledger_url: str, clock: Clock) -> None:
    guard = make(ledger_url, [Cap("2.00")], clock)
    for _ in range(3):
        with guard.reserve(MAGI, REQ, idempotency_key="job-42") as hold:
            pass
    assert hold.replayed
    assert guard.spent() == Decimal("0.80")


def test_expired_holds_released_or_counted_as_spent(ledger_url: str, clock: Clock) -> None:
    guard = make(ledger_url, [Cap("2.00")], clock, hold_ttl=60)
    dead = guard.reserve(MAGI, REQ).acquire()  # its process "died" before sending
    sent = guard.reserve(MAGI, REQ).acquire()
    sent.mark_submitted("req-7")  # fal accepted it, then the process died
    assert guard.held() == Decimal("1.60")
    clock.now += 59.5
    assert guard.release_expired() == []
    clock.now += 1
    expired = {h.id: h.state for h in guard.release_expired()}
    assert expired == {dead.id: "released", sent.id: "expired"}
    assert guard.held() == 0
    assert guard.spent() == Decimal("0.80")


def test_renew_keeps_a_live_hold(ledger_url: str, clock: Clock) -> None:
    guard = make(ledger_url, [Cap("2.00")], clock, hold_ttl=60)
    hold = guard.reserve(MAGI, REQ).acquire()
    clock.now += 50
    hold.renew()
    clock.now += 50  # 100 s after the reservation, 50 after the renewal
    assert guard.release_expired() == []
    assert hold.expires_at == pytest.approx(clock.now - 50 + 60)


def test_settle_at_another_amount(ledger_url: str, clock: Clock) -> None:
    guard = make(ledger_url, [Cap("2.00")], clock)
    with guard.reserve(MAGI, REQ) as hold:
        hold.settle("0.50")
    assert guard.spent() == Decimal("0.50")
    with pytest.raises(ValueError, match="float"):
        hold.settle(0.5)  # type: ignore[arg-type]


def test_alerts_fire_once_per_window(ledger_url: str, clock: Clock) -> None:
    seen: list[tuple[Decimal, Decimal]] = []
    cap = Cap("1.60", window="day", alert_at=(0.5, 1.0))
    guard = make(ledger_url, [cap], clock, on_alert=lambda a: seen.append((a.fraction, a.spent)))
    with guard.reserve(MAGI, REQ):
        pass
    assert seen == [(Decimal("0.5"), Decimal("0.80"))]
    with guard.reserve(MAGI, REQ):
        pass
    assert seen == [(Decimal("0.5"), Decimal("0.80")), (Decimal("1.0"), Decimal("1.60"))]
    clock.now += 86400  # the next day: a new window, the alerts may fire again
    with guard.reserve(MAGI, REQ):
        pass
    assert seen[-1] == (Decimal("0.5"), Decimal("0.80")) and len(seen) == 3


def test_check_decides_without_holding(ledger_url: str, clock: Clock) -> None:
    guard = make(ledger_url, [Cap("1.00")], clock)
    decision = guard.check(MAGI, REQ)
    assert decision.allowed and decision.amount == Decimal("0.80")
    assert decision.caps[0].remaining == Decimal("1.00")
    assert guard.held() == 0
    denied = guard.check(MAGI, REQ_120)
    assert not denied.allowed and denied.refused_by is not None


def test_two_guards_on_one_ledger_see_the_same_figures(tmp_path: Path, clock: Clock) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = Guard(url, [Cap("2.00")], clock=clock)
    second = Guard(url, [Cap("2.00")], clock=clock)
    with first.reserve(MAGI, REQ):
        assert second.held() == Decimal("0.80")
    assert second.spent() == Decimal("0.80")
    with second.reserve(MAGI, REQ_120):
        pass
    assert first.remaining() == Decimal("0.00")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 10.0}, "float"),
        ({"limit": "ten"}, "limit='ten'"),
        ({"limit": "-1"}, "0 or more"),
        ({"limit": "1", "window": "year"}, "window='year'"),
        ({"limit": "1", "tz": "Mars/Olympus"}, "tz='Mars/Olympus'"),
        ({"limit": "1", "scope": "team:"}, "a value must follow"),
        ({"limit": "1", "scope": "global:x"}, "takes no value"),
        ({"limit": "1", "max_per_request": "0"}, "max_per_request"),
        ({"limit": "1", "alert_at": (0,)}, "alert_at"),
    ],
)
def test_bad_caps_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Cap(**kwargs)  # type: ignore[arg-type]


def test_bad_guard_settings() -> None:
    with pytest.raises(ConfigurationError, match="hold_ttl"):
        Guard("memory://", hold_ttl=0)
    with pytest.raises(ConfigurationError, match="on_unknown"):
        Guard("memory://", on_unknown="maybe")  # type: ignore[arg-type]


def test_config_file(tmp_path: Path, clock: Clock) -> None:
    config = tmp_path / "falbudget.yaml"
    config.write_text(
        f"ledger: sqlite:///{tmp_path / 'c.db'}\n"
        "hold_ttl: 120\n"
        "caps:\n"
        "  - limit: '1.00'\n"
        "    window: day\n"
        "    tz: Europe/Paris\n"
        "  - limit: 50\n"
        "    scope: project\n"
    )
    guard = Guard.from_config(str(config), clock=clock)
    assert guard.hold_ttl == 120
    assert [c.limit for c in guard.caps] == [Decimal("1.00"), Decimal("50")]
    with guard.reserve(MAGI, REQ, project="p"):
        pass
    with pytest.raises(BudgetExceeded):
        guard.reserve(MAGI, REQ, project="p").acquire()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("caps:\n  - limit: '1'\n    windo: day\n", "caps.0.windo: unknown key"),
        ("caps:\n  - limit: 1.5\n", "caps.0.limit"),
        ("caps:\n  - limit: '1'\n    tz: Nowhere\n", "caps.0: tz='Nowhere'"),
        ("hold_ttl: -5\n", "hold_ttl"),
        ("on_unknown: sometimes\n", "on_unknown"),
        ("ledger: ftp://x\n", "ftp://x"),
        ("caps: [\n", "not valid YAML"),
    ],
)
def test_bad_config_names_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigurationError) as info:
        Guard.from_config(str(config))
    assert str(config) in str(info.value)
    assert message in str(info.value)


def test_async_reserve_and_call(ledger_url: str, clock: Clock) -> None:
    guard = make(ledger_url, [Cap("2.00")], clock)

    async def fake_fal(endpoint: str, arguments: dict[str, object]) -> str:
        await asyncio.sleep(0)
        return f"done {endpoint}"

    async def scenario() -> None:
        async with guard.areserve(MAGI, REQ) as hold:
            assert hold.amount == Decimal("0.80")
        assert await guard.acall(fake_fal, MAGI, REQ_120) == f"done {MAGI}"
        with pytest.raises(BudgetExceeded):
            async with guard.areserve(MAGI, REQ):
                pass

    asyncio.run(scenario())
    assert guard.spent() == Decimal("2.00")


def test_call_settles_or_releases(ledger_url: str, clock: Clock) -> None:
    guard = make(ledger_url, [Cap("2.00")], clock)
    calls: list[tuple[str, object]] = []

    def send(endpoint: str, arguments: dict[str, object], *, timeout: int) -> int:
        calls.append((endpoint, timeout))
        return 200

    assert guard.call(send, MAGI, REQ, timeout=5, tags={"project": "p"}) == 200
    assert calls == [(MAGI, 5)]

    def broken(endpoint: str, arguments: dict[str, object]) -> None:
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        guard.call(broken, MAGI, REQ)
    assert guard.spent() == Decimal("0.80") and guard.held() == 0


def test_a_long_call_renews_its_hold(tmp_path: Path) -> None:
    import time

    guard = Guard(f"sqlite:///{tmp_path / 'r.db'}", [Cap("2.00")], hold_ttl=0.3)
    observed: list[float] = []

    def slow(endpoint: str, arguments: object) -> None:
        hold_row = guard.ledger.holds(states=["submitted"])[0]  # marked before fn runs
        start = hold_row.expires_at
        time.sleep(0.5)  # longer than hold_ttl: without renewal the hold would be overdue
        observed.append(guard.ledger.get_hold(hold_row.id).expires_at - start)

    guard.call(slow, MAGI, REQ)
    assert observed[0] > 0  # the keep-alive pushed the expiry while the call ran
    assert guard.spent() == Decimal("0.80")
