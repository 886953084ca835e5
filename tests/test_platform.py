"""The shared client for fal's Platform API (falbudget.platform): retries on 429 and 5xx that
honour Retry-After, bounded in count and in time, against the local fake billing API. The
waits are recorded, never slept (falbudget.platform._sleep is replaced)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import pytest

from fakebilling import ADMIN_KEY, FakeBilling, event
from falbudget import platform
from falbudget.reconcile import BillingApiError, fetch_billing_events

NOV1 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
NOV8 = dt.datetime(2026, 11, 8, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeBilling]:
    with FakeBilling() as fake:
        yield fake


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr("falbudget.platform._sleep", slept.append)
    return slept


@pytest.fixture
def fake(server: FakeBilling) -> Iterator[FakeBilling]:
    server.reset()
    server.events = [event("r1", "2026-11-02T09:00:00Z", 800_000_000)]
    yield server
    server.reset()


def fetch(fake: FakeBilling, **kwargs: object) -> list[str]:
    got = fetch_billing_events(ADMIN_KEY, NOV1, NOV8, base_url=fake.base_url, **kwargs)  # type: ignore[arg-type]
    return [r.request_id for r in got.records]


def test_a_429_is_tried_again_after_the_seconds_fal_asks(
    fake: FakeBilling, waits: list[float]
) -> None:
    fake.fail(429, headers={"Retry-After": "7"}, times=2)
    assert fetch(fake) == ["r1"]
    assert waits == [7.0, 7.0]  # as asked, twice
    assert len(fake.requests) == 3


def test_a_5xx_without_retry_after_backs_off_half_a_second_doubling(
    fake: FakeBilling, waits: list[float]
) -> None:
    fake.fail(503, times=1)
    fake.fail(500, times=1)
    fake.fail(502, times=1)
    assert fetch(fake) == ["r1"]
    assert waits == [0.5, 1.0, 2.0]
    assert len(fake.requests) == 4


def test_retries_are_bounded_in_count(fake: FakeBilling, waits: list[float]) -> None:
    fake.fail(503)
    with pytest.raises(BillingApiError) as info:
        fetch(fake, retries=2)
    assert waits == [0.5, 1.0]
    assert len(fake.requests) == 3
    assert info.value.status == 503
    assert str(info.value).endswith(": try again later (3 attempts)")
    fake.reset()
    fake.fail(503)
    waits.clear()
    with pytest.raises(BillingApiError):
        fetch(fake, retries=0)
    assert (waits, len(fake.requests)) == ([], 1)


def test_a_wait_past_the_time_budget_is_not_made(fake: FakeBilling, waits: list[float]) -> None:
    # 61 s is more than the 60 s budget: the error comes at once and says what fal asked
    fake.fail(429, headers={"Retry-After": "61"})
    with pytest.raises(BillingApiError) as info:
        fetch(fake)
    assert waits == []
    assert len(fake.requests) == 1
    assert "fal asks to retry after 61 s: try again later" in str(info.value)
    # 25 s + 25 s fit in 60 s, a third 25 s does not
    fake.reset()
    fake.fail(429, headers={"Retry-After": "25"})
    with pytest.raises(BillingApiError):
        fetch(fake)
    assert waits == [25.0, 25.0]
    assert len(fake.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 501])
def test_other_statuses_are_never_tried_again(
    fake: FakeBilling, waits: list[float], status: int
) -> None:
    if status == 401:
        with pytest.raises(BillingApiError):
            fetch_billing_events("wrong-key", NOV1, NOV8, base_url=fake.base_url)
    else:
        fake.fail(status)
        with pytest.raises(BillingApiError) as info:
            fetch(fake)
        assert info.value.status == status
    assert (waits, len(fake.requests)) == ([], 1)


def test_an_http_date_retry_after_is_read() -> None:
    assert platform.retry_after_s("12") == 12.0
    assert platform.retry_after_s("Thu, 01 Jan 1970 00:00:00 GMT") == 0.0  # long past: no wait
    assert platform.retry_after_s("soon") is None
    assert platform.retry_after_s(None) is None


def test_the_client_refuses_bad_settings_and_plain_http_elsewhere() -> None:
    for kwargs, message in [
        ({"retries": 11}, "retries=11 is not allowed: an integer from 0 to 10"),
        ({"retries": True}, "retries=True is not allowed"),
        ({"timeout_s": 0}, "timeout_s=0 is not allowed"),
        ({"retry_budget_s": -1}, "retry_budget_s=-1 is not allowed"),
        ({"base_url": "http://example.com/v1"}, "is not allowed: an https:// URL"),
    ]:
        with pytest.raises(platform.PlatformApiError, match=message):
            platform.PlatformClient(ADMIN_KEY, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(platform.PlatformApiError, match="no API key"):
        platform.PlatformClient(" ")


def test_the_key_id_never_the_secret() -> None:
    assert platform.key_id_of("abc-id:s3cr3t") == "abc-id"
    assert platform.key_id_of("justasecret") == "key"


# -- the estimate and usage endpoints, against the fake Platform API ------------------------------
def test_estimate_and_usage_read_fal_s_answers_as_decimals() -> None:
    from fakeplatform import ESTIMATE_PATH, FakePlatform

    with FakePlatform() as fake:
        fake.add("fal-ai/flux/dev", "0.025", "megapixels")
        with platform.PlatformClient(ADMIN_KEY, base_url=fake.base_url) as client:
            # 0.025 x 7 units = 0.175, by hand
            assert client.estimate("fal-ai/flux/dev", 7) == Decimal("0.175")
            sent = fake.calls(ESTIMATE_PATH)[0]
            assert sent.method == "POST"
            usage = client.usage(
                endpoint_ids=["fal-ai/flux/dev"],
                start="2026-11-01",
                end="2026-12-01",
                expand=["summary"],
            )
        assert usage["summary"][0]["cost"] == Decimal("0.075")  # never a float
        assert usage["query"] == {
            "endpoint_id": ["fal-ai/flux/dev"],
            "start": ["2026-11-01"],
            "end": ["2026-12-01"],
            "expand": ["summary"],
        }
        with (
            platform.PlatformClient(ADMIN_KEY, base_url=fake.base_url) as client,
            pytest.raises(platform.PlatformApiError, match="51 endpoints are not allowed"),
        ):
            client.usage(endpoint_ids=[f"e{n}" for n in range(51)])
