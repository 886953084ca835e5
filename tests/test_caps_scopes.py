"""No silent way past a scoped cap, and one spelling of a scope (issue 9, section 3).

A cap keyed on a tag ('user', 'project=alpha') refuses a request without that tag before
anything is held (MissingTag), unless the cap says ``untagged="skip"``. The guard runs on every
ledger backend (memory, SQLite, PostgreSQL), sync and async, and through the fal_client wrapper
against the local fake fal server. Prices (docs/pricing.md): MAGI defaults = 0.80.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import fal_client
import pytest

import falbudget
from fakefal import FakeFal
from falbudget import BudgetExceeded, Cap, ConfigurationError, FalbudgetError, Guard, MissingTag
from falbudget.guard.caps import parse_scope
from falbudget.ledger import open_ledger
from ledger_backends import BACKENDS, backend_params
from test_cli import assert_usage_error, run

MAGI = "fal-ai/magi/image-to-video"
REQ = {"prompt": "a cat", "image_url": "https://example.invalid/cat.png"}
T0 = 1_795_521_600.0  # 2026-11-24 12:00 UTC


@pytest.fixture(params=backend_params(BACKENDS))
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'spend.db'}"
    from pgutil import postgres_test_url

    return postgres_test_url()


def make(url: str, caps: list[Cap]) -> Guard:
    return Guard(open_ledger(url), caps, clock=lambda: T0)


def nothing_held(guard: Guard) -> None:
    assert guard.ledger.holds() == []
    assert guard.spent() == 0 and guard.held() == 0


# -- the refusal ---------------------------------------------------------------------------------


def test_a_request_without_the_caps_tag_is_refused_before_anything_is_held(
    ledger_url: str,
) -> None:
    cap = Cap("2.00", scope="user", window="day")
    guard = make(ledger_url, [Cap("100.00"), cap])
    try:
        for tags in ({}, {"project": "alpha"}):
            with pytest.raises(MissingTag) as info:
                guard.reserve(MAGI, REQ, **tags)
            err = info.value
            assert (err.cap, err.tag, err.close_matches) == (cap, "user", ())
            assert err.given == tuple(tags)
            assert isinstance(err, FalbudgetError) and not isinstance(err, BudgetExceeded)
            assert "missing tag 'user'" in str(err) and "'user day cap 2.00'" in str(err)
        with pytest.raises(MissingTag):
            guard.check(MAGI, REQ)  # check says so too, rather than "fits"
        with pytest.raises(MissingTag):
            guard.call(lambda *a: None, MAGI, REQ)
        nothing_held(guard)
        # with the tag, the same request passes and charges the user's bucket
        with guard.reserve(MAGI, REQ, user="ann"):
            pass
        assert guard.spent("user=ann", "day") == Decimal("0.80")
    finally:
        guard.close()


def test_async_reserve_and_acall_refuse_too(ledger_url: str) -> None:
    guard = make(ledger_url, [Cap("2.00", scope="user")])

    async def scenario() -> None:
        with pytest.raises(MissingTag):
            async with guard.areserve(MAGI, REQ):
                pass  # pragma: no cover - never entered

        async def fn(*args: Any) -> None:  # pragma: no cover - never called
            raise AssertionError("called")

        with pytest.raises(MissingTag):
            await guard.acall(fn, MAGI, REQ, tags={"project": "x"})

    try:
        asyncio.run(scenario())
        nothing_held(guard)
    finally:
        guard.close()


@pytest.mark.parametrize(
    ("tags", "close"),
    [
        ({"usr": "ann"}, ("usr",)),  # a typo
        ({"User": "ann", "team": "a"}, ("User",)),  # a capital
        ({"team": "a"}, ()),  # nothing close: no guess
    ],
)
def test_did_you_mean_names_the_given_tag_close_to_the_missing_one(
    tags: dict[str, str], close: tuple[str, ...]
) -> None:
    guard = make("memory://", [Cap("2.00", scope="user")])
    with pytest.raises(MissingTag) as info:
        guard.reserve(MAGI, REQ, **tags)
    assert info.value.close_matches == close
    message = str(info.value)
    assert ("did you mean 'user' where you wrote" in message) == bool(close)
    for name in close:
        assert repr(name) in message
    assert f"tags given: {', '.join(sorted(tags))}" in message


def test_a_cap_on_one_value_refuses_a_request_without_its_tag() -> None:
    alpha = Cap("1.00", scope="project=alpha")
    guard = make("memory://", [alpha])
    with pytest.raises(MissingTag) as info:
        guard.reserve(MAGI, REQ, user="ann")
    assert (info.value.cap, info.value.tag) == (alpha, "project")
    # another project carries the tag: the cap is on alpha only and does not apply
    with guard.reserve(MAGI, REQ, project="beta"):
        pass
    assert guard.spent() == Decimal("0.80") and guard.spent("project=alpha") == 0


def test_the_endpoint_tag_is_never_missing() -> None:
    guard = make("memory://", [Cap("1.00", scope="endpoint")])
    with guard.reserve(MAGI, REQ):
        pass
    assert guard.spent(f"endpoint={MAGI}") == Decimal("0.80")


# -- the opt-out ---------------------------------------------------------------------------------


def test_untagged_skip_lets_a_request_without_the_tag_past_that_cap(ledger_url: str) -> None:
    per_user = Cap("0.80", scope="user", untagged="skip")
    guard = make(ledger_url, [Cap("10.00"), per_user])
    try:
        with guard.reserve(MAGI, REQ):  # no user: the per-user cap is skipped, global charged
            pass
        with guard.reserve(MAGI, REQ, user="ann"):  # ann's 0.80 is now used up
            pass
        with pytest.raises(BudgetExceeded) as info:
            guard.reserve(MAGI, REQ, user="ann").acquire()
        assert info.value.cap is per_user
        with guard.reserve(MAGI, REQ):  # without the tag it still passes: the risk
            pass
        assert guard.spent() == Decimal("2.40")
        assert guard.spent("user=ann") == Decimal("0.80")
        assert [h.tags.get("user") for h in guard.ledger.holds()] == [None, "ann", None]
    finally:
        guard.close()


def test_untagged_from_the_configuration_file(tmp_path: Path) -> None:
    config = tmp_path / "falbudget.yaml"
    config.write_text(
        "ledger: memory://\n"
        "caps:\n"
        "  - {limit: '2.00', scope: user}\n"
        "  - {limit: '2.00', scope: project, untagged: skip}\n"
        "  - {limit: '2.00', scope: team, untagged: refuse}\n"
    )
    guard = Guard.from_config(str(config), clock=lambda: T0)
    assert [c.untagged for c in guard.caps] == ["refuse", "skip", "refuse"]
    with guard.reserve(MAGI, REQ, user="ann", team="a"):  # no project: skipped
        pass
    with pytest.raises(MissingTag, match="missing tag 'team'"):
        guard.reserve(MAGI, REQ, user="ann", project="p")


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("caps:\n  - {limit: '1', scope: user, untagged: allow}\n", ("caps.0.untagged", "'allow'")),
        ("caps:\n  - {limit: '1', untagged: skip}\n", ("caps.0: untagged='skip'", "'global'")),
    ],
)
def test_a_bad_untagged_is_named(tmp_path: Path, text: str, needles: tuple[str, ...]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigurationError) as info:
        Guard.from_config(str(config))
    for needle in (str(config), *needles):
        assert needle in str(info.value)


def test_a_bad_untagged_in_code_is_named() -> None:
    with pytest.raises(ConfigurationError, match="untagged='never' is not allowed: 'refuse'"):
        Cap("1", scope="user", untagged="never")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not allowed on scope 'global'"):
        Cap("1", untagged="skip")
    assert Cap("1", scope="user").untagged == "refuse"


# -- through the fal_client wrapper ----------------------------------------------------------------


@pytest.fixture(params=backend_params(BACKENDS))
def fal_guard(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Guard]:
    url = "memory://"
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fal.db'}"
    elif request.param == "postgres":
        from pgutil import postgres_test_url

        url = postgres_test_url()
    guard = Guard(url, [Cap("10.00"), Cap("2.00", scope="user")], hold_ttl=30)
    yield guard
    guard.close()


def test_the_wrapper_refuses_without_an_http_request(
    fal_guard: Guard, fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    fal = fal_guard.wrap(fal_sync_client, project="alpha")
    for call in (fal.run, fal.subscribe, fal.submit):
        with pytest.raises(MissingTag, match="missing tag 'user'"):
            call(MAGI, REQ)
    with pytest.raises(MissingTag):
        list(fal.stream(MAGI, REQ))
    assert fake_fal.count() == 0
    nothing_held(fal_guard)
    # tagged through with_options, the call goes out and settles against ann's cap
    fal.with_options(user="ann").run(MAGI, REQ)
    assert fake_fal.count() == 1
    assert fal_guard.spent("user=ann") == Decimal("0.80")


def test_the_async_wrapper_refuses_without_an_http_request(
    fal_guard: Guard, fake_fal: FakeFal, fal_async_client: Any
) -> None:
    async def scenario() -> None:
        fal = fal_guard.wrap(fal_async_client(), usr="ann")
        with pytest.raises(MissingTag, match="did you mean 'user' where you wrote 'usr'"):
            await fal.run(MAGI, REQ)
        with pytest.raises(MissingTag):
            await fal.subscribe(MAGI, REQ, interval=0.001)

    asyncio.run(scenario())
    assert fake_fal.count() == 0
    nothing_held(fal_guard)


# -- the CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("FALBUDGET_CONFIG", "FALBUDGET_LEDGER", "FALBUDGET_PRICING"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "falbudget.yaml"
    path.write_text(
        "ledger: sqlite:///spend.db\n"
        "caps:\n"
        "  - {limit: '2.00', scope: user, window: day}\n"
        "  - {limit: '40.00', scope: project}\n"
        "  - {limit: '5.00', scope: 'team=red'}\n"
        "  - {limit: '100.00', window: month}\n"
    )
    guard = Guard.from_config(str(path), clock=lambda: T0)  # creates the ledger, empty
    guard.close()
    return path


def test_cli_quote_with_a_missing_tag_is_exit_2(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    result = run(capsys, "quote", MAGI, "--config", str(config), "--tag", "usr=ann")
    assert_usage_error(
        result,
        "missing tag 'user'",
        "cap 'user day cap 2.00'",
        "did you mean 'user' where you wrote 'usr'?",
    )
    assert "no cap applies" not in result[2]


def test_cli_status_lists_every_cap_even_with_no_values_yet(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    code, out, err = run(capsys, "budget", "status", "--config", str(config), "--format", "json")
    assert (code, err) == (0, "")
    rows = [
        (c["scope"], c["limit"], c["spent"], c["held"], c["remaining"], c.get("note"))
        for c in json.loads(out)["caps"]
    ]
    assert rows == [
        ("user", "2.00", "0.00", "0.00", "2.00", "none today"),  # a daily cap
        ("project", "40.00", "0.00", "0.00", "40.00", "no values yet"),
        ("team=red", "5.00", "0.00", "0.00", "5.00", None),  # one value: its own bucket
        ("global", "100.00", "0.00", "0.00", "100.00", None),
    ]
    code, out, err = run(capsys, "budget", "status", "--config", str(config))
    assert (code, err) == (0, "")
    assert "no caps configured" not in out
    scopes = [line.split("  ")[0] for line in out.splitlines()[2:6]]
    assert scopes == [
        "user (none today)",
        "project (no values yet)",
        "team=red",
        "global",
    ]


def test_cli_status_says_none_today_for_a_daily_cap_spent_from_yesterday(
    capsys: pytest.CaptureFixture[str], config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ann spends from the daily per-user cap on day one; on day two no user has yet: the cap
    # has values (ann's, yesterday), just none in today's window, and says so
    guard = Guard.from_config(str(config), clock=lambda: T0)
    with guard.reserve(MAGI, REQ, user="ann", project="p", team="blue") as hold:
        hold.settle()
    guard.close()
    args = ("budget", "status", "--config", str(config), "--format", "json")
    monkeypatch.setenv("FALBUDGET_NOW", "2026-11-24T13:00Z")
    code, out, err = run(capsys, *args)
    assert (code, err) == (0, "")
    assert [(c["scope"], c.get("note")) for c in json.loads(out)["caps"]][:2] == [
        ("user=ann", None),  # today, 0.80 spent of 2.00
        ("project=p", None),
    ]
    monkeypatch.setenv("FALBUDGET_NOW", "2026-11-25T13:00Z")
    code, out, err = run(capsys, *args)
    assert (code, err) == (0, "")
    assert [(c["scope"], c.get("note")) for c in json.loads(out)["caps"]][:2] == [
        ("user", "none today"),
        ("project=p", None),  # a total cap: ann's project still counts
    ]


def test_cli_status_without_caps_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FALBUDGET_CONFIG", raising=False)
    ledger = tmp_path / "spend.db"
    open_ledger(f"sqlite:///{ledger}").close()
    code, out, _ = run(capsys, "budget", "status", "--ledger", f"sqlite:///{ledger}")
    assert code == 0 and "no caps configured" in out


def test_status_lists_a_per_value_cap_once_values_come() -> None:
    guard = make("memory://", [Cap("2.00", scope="user")])
    [waiting] = guard.status()
    assert (waiting.bucket, waiting.spent, waiting.remaining) == ("user|total", 0, Decimal("2.00"))
    with guard.reserve(MAGI, REQ, user="bob"):
        pass
    with guard.reserve(MAGI, REQ, user="ann"):
        pass
    assert [(s.bucket, s.spent) for s in guard.status()] == [
        ("user=ann|total", Decimal("0.80")),
        ("user=bob|total", Decimal("0.80")),
    ]


# -- one spelling ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("global", ("global", None)),
        ("user", ("user", None)),
        ("user=ann", ("user", "ann")),
        ("user:ann", ("user", "ann")),  # the spelling of earlier versions
        ("endpoint=fal-ai/magi/image-to-video", ("endpoint", "fal-ai/magi/image-to-video")),
        ("team=a:b", ("team", "a:b")),  # the first separator ends the tag name
        ("team:a=b", ("team", "a=b")),
        (" user=ann ", ("user", "ann")),
    ],
)
def test_parse_scope(text: str, parsed: tuple[str, str | None]) -> None:
    assert parse_scope(text) == parsed


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "'global', a tag name"),
        ("user=", "a value must follow '='"),
        ("global=x", "'global' takes no value"),
        ("my tag=x", "an identifier"),
    ],
)
def test_parse_scope_errors(text: str, needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        parse_scope(text)


def test_one_spelling_in_the_api_and_the_output() -> None:
    old, new = Cap("1.00", scope="user:ann"), Cap("1.00", scope="user=ann")
    assert old == new and old.scope == "user=ann" and old.label() == "user=ann total cap 1.00"
    guard = make("memory://", [old])
    with guard.reserve(MAGI, REQ, user="ann") as hold:
        assert hold._row.buckets == ("global|total", "user=ann|total")
    assert guard.spent("user=ann") == guard.spent("user:ann") == Decimal("0.80")
    assert [s.bucket for s in guard.status()] == ["user=ann|total"]


def test_missing_tag_is_exported() -> None:
    assert falbudget.MissingTag is MissingTag and "MissingTag" in falbudget.__all__
