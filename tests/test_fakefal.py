"""The fake fal.ai server works with the real fal_client 1.0.3 (and pins the client's behaviour
that falbudget relies on: what is retried, what a timeout raises, when)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import fal_client
import httpx
import pytest
from fal_client.auth import MissingCredentialsError

from fakefal import DEFAULT_OUTPUT, FakeFal, patched_fal_client, sync_client

APP = "fal-ai/kling-video/v2/master/text-to-video"
ARGS = {"prompt": "a cat", "duration": "5"}
MAX_ATTEMPTS = 10  # fal_client.client.MAX_ATTEMPTS

AsyncFactory = Callable[..., fal_client.AsyncClient]


# -- happy paths -----------------------------------------------------------------------------


def test_sync_run(fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient) -> None:
    assert fal_sync_client.run(APP, ARGS) == DEFAULT_OUTPUT
    assert fake_fal.calls == [("POST", f"/{APP}", ARGS)]
    request = fake_fal.requests[0]
    assert request.kind == "run"
    assert request.headers["authorization"] == "Key dummy"


def test_module_level_run_uses_fal_key(fake_fal: FakeFal) -> None:
    assert fal_client.run(APP, ARGS) == DEFAULT_OUTPUT
    assert fake_fal.kinds() == ["run"]


def test_submit_then_get(fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient) -> None:
    fake_fal.queue_polls, fake_fal.progress_polls = 2, 1
    handle = fal_sync_client.submit(APP, ARGS)
    assert fake_fal.calls == [("POST", f"/{APP}", ARGS)]
    assert handle.request_id == fake_fal.jobs[0].request_id
    assert handle.status_url.endswith(f"/fal-ai/kling-video/requests/{handle.request_id}/status")

    assert handle.get(interval=0) == DEFAULT_OUTPUT
    assert fake_fal.kinds() == ["submit", "status", "status", "status", "status", "result"]
    assert fake_fal.requests[-1].path == f"/fal-ai/kling-video/requests/{handle.request_id}"


def test_subscribe_reports_queue_updates(
    fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    fake_fal.queue_polls, fake_fal.progress_polls = 2, 1
    enqueued: list[str] = []
    updates: list[fal_client.Status] = []
    result = fal_sync_client.subscribe(
        APP,
        ARGS,
        interval=0.001,
        with_logs=True,
        on_enqueue=enqueued.append,
        on_queue_update=updates.append,
    )
    assert result == DEFAULT_OUTPUT
    assert enqueued == [fake_fal.jobs[0].request_id]
    assert [type(u).__name__ for u in updates] == ["Queued", "Queued", "InProgress", "Completed"]
    assert updates[0] == fal_client.Queued(position=1)
    assert isinstance(updates[2], fal_client.InProgress) and updates[2].logs
    # iter_events polls to COMPLETED, then get() polls once more before fetching the result.
    assert fake_fal.kinds() == ["submit"] + ["status"] * 5 + ["result"]
    assert fake_fal.requests[1].query == {"logs": "true"}


def test_status_result_cancel_by_request_id(
    fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    fake_fal.queue_polls = 5
    handle = fal_sync_client.submit(APP, ARGS)
    status = fal_sync_client.status(APP, handle.request_id)
    assert status == fal_client.Queued(position=4)
    fal_sync_client.cancel(APP, handle.request_id)
    assert fake_fal.cancelled == [handle.request_id]
    assert fake_fal.requests[-1].as_tuple() == (
        "PUT",
        f"/fal-ai/kling-video/requests/{handle.request_id}/cancel",
        None,
    )
    with pytest.raises(fal_client.FalClientHTTPError) as info:
        fal_sync_client.result(APP, handle.request_id)
    assert info.value.status_code == 400


def test_stream(fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient) -> None:
    assert list(fal_sync_client.stream(APP, ARGS)) == [{"partial": True}, DEFAULT_OUTPUT]
    assert fake_fal.calls == [("POST", f"/{APP}/stream", ARGS)]


def test_async_subscribe_and_run(fake_fal: FakeFal, fal_async_client: AsyncFactory) -> None:
    fake_fal.queue_polls = 1

    async def main() -> tuple[object, object]:
        client = fal_async_client()
        return await client.subscribe(APP, ARGS, interval=0.001), await client.run(APP, ARGS)

    assert asyncio.run(main()) == (DEFAULT_OUTPUT, DEFAULT_OUTPUT)
    # A second event loop gets its own client (the module-level async_client would fail here).
    assert asyncio.run(main()) == (DEFAULT_OUTPUT, DEFAULT_OUTPUT)
    assert fake_fal.kinds().count("submit") == 2
    assert fake_fal.kinds().count("run") == 2


# -- errors and retries ----------------------------------------------------------------------


def test_500_on_submit_is_not_retried(
    fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    fake_fal.fail("submit", 500, {"detail": "boom", "error_type": "internal_error"})
    with pytest.raises(fal_client.FalClientHTTPError) as info:
        fal_sync_client.subscribe(APP, ARGS)
    assert info.value.status_code == 500
    assert info.value.message == "boom" and info.value.error_type == "internal_error"
    assert fake_fal.kinds() == ["submit"]
    assert fake_fal.jobs == []


def test_422_detail_list_on_run(fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient) -> None:
    detail = [{"loc": ["body", "prompt"], "msg": "field required", "type": "missing"}]
    fake_fal.fail("run", 422, {"detail": detail})
    with pytest.raises(fal_client.FalClientHTTPError) as info:
        fal_sync_client.run(APP, {})
    assert info.value.status_code == 422
    message: object = info.value.message  # typed str, but "detail" is passed through as is
    assert message == detail
    assert fake_fal.count() == 1


@pytest.mark.parametrize(
    ("status", "body", "headers", "attempts"),
    [
        (503, {"detail": "overloaded"}, {}, 1),  # 5xx from fal itself: not retried
        (503, "<html>502 Bad Gateway nginx</html>", {}, MAX_ATTEMPTS),  # "ingress" error
        (502, "nginx", {"x-fal-request-id": "r1"}, 1),  # request id => from the app: no retry
        (504, "nginx", {"X-Fal-Request-Timeout-Type": "user"}, 1),  # start_timeout hit
        (429, {"detail": "rate limited"}, {}, MAX_ATTEMPTS),
        (408, None, {}, MAX_ATTEMPTS),
        (409, None, {}, MAX_ATTEMPTS),
        (401, None, {}, 1),
    ],
)
def test_which_statuses_are_retried(
    fake_fal: FakeFal,
    fal_sync_client: fal_client.SyncClient,
    status: int,
    body: object,
    headers: dict[str, str],
    attempts: int,
) -> None:
    # fake_fal patches the backoff to 0 s; unpatched, 10 attempts sleep ~51 s (sync).
    fake_fal.fail("submit", status, body, headers=headers)
    with pytest.raises(fal_client.FalClientHTTPError) as info:
        fal_sync_client.submit(APP, ARGS)
    assert info.value.status_code == status
    assert fake_fal.kinds() == ["submit"] * attempts


def test_retry_then_success(fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient) -> None:
    fake_fal.fail("run", 429, times=2)
    assert fal_sync_client.run(APP, ARGS) == DEFAULT_OUTPUT
    assert fake_fal.kinds() == ["run", "run", "run"]


def test_job_ending_in_error(fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient) -> None:
    fake_fal.progress_polls = 1
    fake_fal.fail_job(422, "content policy", error_type="content_policy_violation")
    updates: list[fal_client.Status] = []
    with pytest.raises(fal_client.FalClientHTTPError) as info:
        fal_sync_client.subscribe(APP, ARGS, interval=0, on_queue_update=updates.append)
    assert info.value.status_code == 422
    assert info.value.error_type == "content_policy_violation"
    assert updates[-1] == fal_client.Completed(
        logs=None,
        metrics={"inference_time": 0.01},
        error="content policy",
        error_type="content_policy_violation",
    )
    assert fake_fal.kinds()[0] == "submit" and fake_fal.kinds()[-1] == "result"


def test_missing_credentials_sends_nothing(
    fake_fal: FakeFal, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FAL_KEY")
    monkeypatch.setenv("FAL_HOME_DIR", str(tmp_path))  # no `fal auth login` token file
    with pytest.raises(MissingCredentialsError):
        fal_client.SyncClient().run(APP, ARGS)
    assert fake_fal.requests == []


# -- timeouts --------------------------------------------------------------------------------


def test_client_timeout_after_queue_accepted_cancels(
    fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    fake_fal.queue_polls = 1_000_000
    with pytest.raises(fal_client.FalClientTimeoutError) as info:
        # client_timeout must be > 1: it also becomes start_timeout (X-Fal-Request-Timeout).
        fal_sync_client.subscribe(APP, ARGS, client_timeout=1.05, interval=0.01)
    job = fake_fal.jobs[0]
    assert info.value.request_id == job.request_id and info.value.timeout == 1.05
    assert fake_fal.requests[0].headers["x-fal-request-timeout"] == "1.05"
    assert fake_fal.cancelled == [job.request_id]
    assert fake_fal.count("submit") == 1 and fake_fal.count("cancel") == 1


def test_client_timeout_before_submit_answered(
    fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    fake_fal.delay("submit")  # the queue accepts the job but the answer never comes
    with (
        pytest.warns(UserWarning, match="start_timeout"),
        pytest.raises(fal_client.FalClientTimeoutError) as info,
    ):
        fal_sync_client.subscribe(APP, ARGS, client_timeout=0.2, start_timeout=2)
    assert info.value.request_id is None  # so nothing is cancelled...
    assert fake_fal.kinds() == ["submit"]
    assert len(fake_fal.jobs) == 1  # ...although a job exists server-side


def test_async_client_timeout_cancels(fake_fal: FakeFal, fal_async_client: AsyncFactory) -> None:
    fake_fal.progress_polls = 1_000_000

    async def main() -> None:
        await fal_async_client().subscribe(
            APP, ARGS, client_timeout=0.2, start_timeout=2, interval=0.01
        )

    with pytest.warns(UserWarning), pytest.raises(fal_client.FalClientTimeoutError) as info:
        asyncio.run(main())
    assert info.value.request_id == fake_fal.jobs[0].request_id
    assert fake_fal.cancelled == [info.value.request_id]


def test_client_timeout_of_one_second_or_less_needs_start_timeout(
    fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    with pytest.raises(ValueError, match="greater than 1"):
        fal_sync_client.subscribe(APP, ARGS, client_timeout=0.5)
    assert fake_fal.requests == []


def test_run_timeout_is_a_raw_httpx_error(
    fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    fake_fal.delay("run")
    with pytest.raises(httpx.ReadTimeout):
        fal_sync_client.run(APP, ARGS, timeout=0.1, start_timeout=2)
    assert fake_fal.kinds() == ["run"]  # X-Fal-Request-Timeout present: not retried


def test_submit_read_timeout_is_retried_and_duplicates_jobs(fake_fal: FakeFal) -> None:
    fake_fal.delay("submit")
    client = sync_client(default_timeout=0.02)  # the submit POST's read timeout
    with pytest.raises(httpx.ReadTimeout):
        client.submit(APP, ARGS)
    assert fake_fal.kinds() == ["submit"] * MAX_ATTEMPTS
    assert len(fake_fal.jobs) == MAX_ATTEMPTS  # each attempt was accepted by the queue


# -- the helpers themselves --------------------------------------------------------------------


def test_patched_fal_client_outside_pytest() -> None:
    import fal_client.client as fc

    original = fc.QUEUE_URL_FORMAT
    with FakeFal() as fake, patched_fal_client(fake):
        assert fake.queue_url == fc.QUEUE_URL_FORMAT
        assert sync_client().subscribe(APP, ARGS, interval=0) == DEFAULT_OUTPUT
        assert fake.kinds() == ["submit", "status", "result"]
    assert fc.QUEUE_URL_FORMAT == original == "https://queue.fal.run/"


def test_reset_retires_leftover_jobs(
    fake_fal: FakeFal, fal_sync_client: fal_client.SyncClient
) -> None:
    fake_fal.queue_polls = 1_000_000
    handle = fal_sync_client.submit(APP, ARGS)
    fake_fal.reset()
    assert handle.get(interval=0) == DEFAULT_OUTPUT  # an old job completes at once
    assert fake_fal.requests == []
    assert [r.kind for r in fake_fal.stale_requests] == ["status", "result"]
