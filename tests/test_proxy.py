"""`falbudget proxy` served for real (uvicorn on 127.0.0.1) in front of the fake fal server,
driven over HTTP as @fal-ai/client drives fal's server proxy: the target in x-fal-target-url.

Prices (DESIGN.md section 1): MAGI defaults = 0.80; 144 frames = 0.80 + 2 x 0.20 = 1.20.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakefal import DEFAULT_OUTPUT, FakeFal
from falbudget import Cap, ConfigurationError, Guard
from falbudget.ledger import Ledger, MemoryLedger, open_ledger
from ledger_backends import BACKENDS, backend_params, make_ledger_factory
from proxyserver import FAL_KEY, QUEUE, RUN, ProxyServer, settings_for, target_headers

MAGI = "fal-ai/magi/image-to-video"
ARGS = {"prompt": "a fox", "image_url": "https://example.invalid/fox.png"}
ARGS_120 = {**ARGS, "num_frames": 144}
NOW = 1_790_000_000.0  # a fixed moment: no test reads the wall clock for "now"
SUBMIT = f"{QUEUE}/{MAGI}"
FAST = {"follow_interval": 0.01}


@pytest.fixture(params=backend_params(BACKENDS))
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Ledger:
    return make_ledger_factory(request.param, tmp_path)()


def make_guard(ledger: Ledger | str, *caps: Cap, **options: Any) -> Guard:
    return Guard(ledger, list(caps), clock=lambda: NOW, hold_ttl=3600, **options)


@pytest.fixture
def serve(fake_fal: FakeFal) -> Iterator[Any]:
    servers: list[ProxyServer] = []

    def start(guard: Guard, base_dir: str = ".", **section: Any) -> ProxyServer:
        server = ProxyServer(guard, settings_for(fake_fal, **section), base_dir=base_dir).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def post(server: ProxyServer, target: str, body: Any, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url, content=content, headers=target_headers(target, headers))


def get(server: ProxyServer, target: str, **headers: str) -> httpx.Response:
    return httpx.get(server.url, headers=target_headers(target, headers))


def states(guard: Guard) -> list[str]:
    return sorted(h.state for h in guard.ledger.holds())


# -- 1. the protocol ---------------------------------------------------------------------------


def test_submit_is_forwarded_with_the_proxys_key_and_only_fal_headers(
    serve: Any, fake_fal: FakeFal
) -> None:
    server = serve(make_guard("memory://", Cap("10.00")))
    answer = post(
        server,
        SUBMIT,
        ARGS,
        cookie="session=abc",
        **{"x-fal-queue-priority": "low", "x-custom": "no"},
    )
    assert answer.status_code == 200
    assert answer.json()["request_id"]
    [sent] = [r for r in fake_fal.requests if r.kind == "submit"]
    assert sent.path == f"/{MAGI}" and sent.body == ARGS
    assert sent.headers["authorization"] == f"Key {FAL_KEY}"
    assert sent.headers["x-fal-queue-priority"] == "low"
    assert sent.headers["x-fal-client-proxy"].startswith("falbudget/")
    for name in ("x-fal-target-url", "cookie", "x-custom"):
        assert name not in sent.headers
    assert FAL_KEY not in answer.text and FAL_KEY not in str(answer.headers)


def test_missing_target_is_400_and_other_routes_404(serve: Any, fake_fal: FakeFal) -> None:
    server = serve(make_guard("memory://", Cap("10.00")))
    answer = httpx.post(server.url, json=ARGS)
    assert answer.status_code == 400
    assert "x-fal-target-url" in answer.json()["detail"]
    assert httpx.post(f"{server.base}/other", json=ARGS).status_code == 404
    assert fake_fal.count() == 0


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("http://127.0.0.1:1/queue/fal-ai/x/y", 412),  # loopback, not a configured upstream
        ("https://evil.example/fal-ai/x/y", 412),
        ("https://fal.run.evil.example/fal-ai/x/y", 412),
        ("https://evilfal.run/fal-ai/x/y", 412),
        ("https://user:pw@fal.run/fal-ai/x/y", 412),
        ("https://fal.run:8443/fal-ai/x/y", 412),
        ("http://fal.run/fal-ai/x/y", 412),
        ("file:///etc/passwd", 412),
        ("https://fal.run/../../etc", 412),
        ("https://rest.fal.ai/billing/user", 403),
        ("https://fal.run/x", 403),
        ("not a url", 412),
        ("https://rest.alpha.fal.ai/tokens/", 412),  # a realtime token: realtime is refused
    ],
)
def test_targets_outside_fals_hosts_are_refused(
    serve: Any, fake_fal: FakeFal, target: str, status: int
) -> None:
    guard = make_guard("memory://", Cap("10.00"))
    server = serve(guard)
    answer = post(server, target, ARGS)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == "target_not_allowed"
    assert fake_fal.count() == 0
    assert guard.ledger.holds() == []


def test_methods_that_do_not_fit_a_host_are_refused(serve: Any, fake_fal: FakeFal) -> None:
    server = serve(make_guard("memory://", Cap("10.00")))
    assert get(server, f"{RUN}/{MAGI}").status_code == 405
    assert get(server, SUBMIT).status_code == 405
    assert fake_fal.count() == 0


def test_calls_that_spend_nothing_pass_through(serve: Any, fake_fal: FakeFal) -> None:
    guard = make_guard("memory://", Cap("10.00"))
    server = serve(guard, follow_interval=3600)  # the client does the polling here
    fake_fal.progress_polls = 1
    request_id = post(server, SUBMIT, ARGS).json()["request_id"]
    base = f"{QUEUE}/fal-ai/magi/requests/{request_id}"
    first = get(server, f"{base}/status")
    assert first.status_code == 200 and first.json()["status"] == "IN_PROGRESS"
    assert guard.ledger.holds()[0].state == "submitted"
    assert get(server, f"{base}/status").json()["status"] == "COMPLETED"
    result = get(server, base)
    assert result.status_code == 200 and result.json() == DEFAULT_OUTPUT
    assert server.proxy.outcomes.wait(request_id) == "settled"
    assert fake_fal.kinds().count("submit") == 1
    assert [h.spent_amount for h in guard.ledger.holds()] == [800_000]


def test_storage_upload_initiation_passes_through_unbudgeted(serve: Any, fake_fal: FakeFal) -> None:
    guard = make_guard("memory://", Cap("10.00"))
    server = serve(guard)
    target = "https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3"
    answer = post(server, target, {"file_name": "a.png", "content_type": "image/png"})
    assert answer.status_code == 404  # the fake serves no uploads; what matters: it got there
    [sent] = fake_fal.requests
    assert sent.kind == "rest" and sent.path == "/storage/upload/initiate"
    assert sent.query == {"storage_type": "fal-cdn-v3"}
    assert guard.ledger.holds() == []


# -- 2. every spending call is guarded and followed to its end ----------------------------------


def test_a_submit_is_settled_by_the_proxy_when_the_client_never_comes_back(
    serve: Any, fake_fal: FakeFal, ledger: Ledger
) -> None:
    guard = make_guard(ledger, Cap("10.00"))
    server = serve(guard, **FAST)
    fake_fal.queue_polls, fake_fal.progress_polls = 2, 2
    answer = post(server, SUBMIT, ARGS_120)
    request_id = answer.json()["request_id"]
    assert server.proxy.outcomes.wait(request_id) == "settled"
    [hold] = guard.ledger.holds()
    assert (hold.state, hold.request_id, hold.spent_amount) == ("settled", request_id, 1_200_000)
    kinds = fake_fal.kinds()
    assert kinds.count("submit") == 1 and kinds.count("result") == 1
    assert kinds.count("status") == 5  # 2 in queue, 2 in progress, then COMPLETED
    assert guard.spent() == Decimal("1.20")


def test_a_refusal_is_402_naming_the_cap_and_nothing_reaches_fal(
    serve: Any, fake_fal: FakeFal, ledger: Ledger
) -> None:
    guard = make_guard(ledger, Cap("2.00", name="team"))
    server = serve(guard, follow_interval=3600)
    assert post(server, SUBMIT, ARGS_120).status_code == 200  # 1.20 held of 2.00
    fake_fal.reset()
    for target in (SUBMIT, f"{RUN}/{MAGI}", f"{RUN}/{MAGI}/stream"):
        answer = post(server, target, ARGS_120)  # 1.20 more would make 2.40
        assert answer.status_code == 402
        body = answer.json()
        assert body["error"] == "budget_exceeded"
        assert body["cap"] == "team"
        assert (body["price"], body["held"], body["remaining"]) == ("1.20", "1.20", "0.80")
        assert "budget exceeded" in body["detail"]
    assert fake_fal.count() == 0
    assert states(guard) == ["submitted"]


def test_a_run_is_held_then_settled_when_its_answer_has_been_sent(
    serve: Any, fake_fal: FakeFal, ledger: Ledger
) -> None:
    guard = make_guard(ledger, Cap("10.00"))
    server = serve(guard)
    answer = post(server, f"{RUN}/{MAGI}", ARGS_120)
    assert answer.status_code == 200 and answer.json() == DEFAULT_OUTPUT
    [hold] = guard.ledger.holds()
    assert server.proxy.outcomes.wait(hold.id) == "settled"
    assert guard.ledger.get_hold(hold.id).spent_amount == 1_200_000


def test_a_stream_is_passed_on_and_settled_at_its_end(
    serve: Any, fake_fal: FakeFal, ledger: Ledger
) -> None:
    guard = make_guard(ledger, Cap("10.00"))
    server = serve(guard)
    answer = post(server, f"{RUN}/{MAGI}/stream", ARGS)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/event-stream"
    assert answer.text.count("data: ") == 2
    [hold] = guard.ledger.holds()
    assert server.proxy.outcomes.wait(hold.id) == "settled"
    assert [r.path for r in fake_fal.requests] == [f"/{MAGI}/stream"]
    assert guard.spent() == Decimal("0.80")


@pytest.mark.parametrize("kind", ["submit", "run"])
def test_fal_5xx_releases_the_hold(
    serve: Any, fake_fal: FakeFal, ledger: Ledger, kind: str
) -> None:
    guard = make_guard(ledger, Cap("10.00"))
    server = serve(guard)
    fake_fal.fail(kind, 503, {"detail": "overloaded"})
    target = SUBMIT if kind == "submit" else f"{RUN}/{MAGI}"
    answer = post(server, target, ARGS)
    assert answer.status_code == 503 and answer.json() == {"detail": "overloaded"}
    [hold] = guard.ledger.holds()
    assert server.proxy.outcomes.wait(hold.id) == "released"
    assert guard.ledger.get_hold(hold.id).state == "released"
    assert guard.spent() == 0


def test_fal_422_settles_the_hold_as_the_wrapper_does(
    serve: Any, fake_fal: FakeFal, ledger: Ledger
) -> None:
    guard = make_guard(ledger, Cap("10.00"))
    server = serve(guard)
    fake_fal.fail("run", 422, {"detail": [{"msg": "bad image"}]})
    answer = post(server, f"{RUN}/{MAGI}", ARGS)
    assert answer.status_code == 422
    [hold] = guard.ledger.holds()
    assert server.proxy.outcomes.wait(hold.id) == "settled"
    assert guard.spent() == Decimal("0.80")


def test_a_job_that_fails_with_5xx_is_released_by_the_follower(
    serve: Any, fake_fal: FakeFal, ledger: Ledger
) -> None:
    guard = make_guard(ledger, Cap("10.00"))
    server = serve(guard, **FAST)
    fake_fal.fail_job(500, "worker crashed")
    request_id = post(server, SUBMIT, ARGS).json()["request_id"]
    assert server.proxy.outcomes.wait(request_id) == "released"
    assert states(guard) == ["released"]


def test_a_submit_that_times_out_before_an_answer_stays_submitted(
    serve: Any, fake_fal: FakeFal, ledger: Ledger
) -> None:
    # the wrapper's policy: a submit whose answer never came (no request id) was sent, and fal
    # may have queued it: the hold stays submitted, counted as spent at expiry unless reconciled
    guard = make_guard(ledger, Cap("10.00"))
    server = serve(guard, timeout=0.2)
    fake_fal.delay("submit")
    answer = post(server, SUBMIT, ARGS)
    assert answer.status_code == 504
    assert answer.json()["error"] == "upstream"
    [hold] = guard.ledger.holds()
    assert server.proxy.outcomes.wait(hold.id) == "kept"
    assert guard.ledger.get_hold(hold.id).state == "submitted"
    assert fake_fal.count("submit") == 1  # it did reach fal


def test_an_accepted_request_that_never_ends_stays_submitted(
    serve: Any, fake_fal: FakeFal, ledger: Ledger
) -> None:
    # a timeout after acceptance: kept submitted (counted as spent at expiry, reconciled later)
    guard = make_guard(ledger, Cap("10.00"))
    server = serve(guard, follow_interval=0.01, follow_for=0.05)
    fake_fal.queue_polls = 10**9
    request_id = post(server, SUBMIT, ARGS).json()["request_id"]
    assert server.proxy.outcomes.wait(request_id) == "kept"
    [hold] = guard.ledger.holds()
    assert (hold.state, hold.request_id) == ("submitted", request_id)


def test_a_cancel_fal_confirms_before_the_job_started_releases(
    serve: Any, fake_fal: FakeFal, ledger: Ledger
) -> None:
    guard = make_guard(ledger, Cap("10.00"))
    server = serve(guard, follow_interval=3600)
    fake_fal.queue_polls = 5
    request_id = post(server, SUBMIT, ARGS).json()["request_id"]
    cancel = httpx.put(
        server.url,
        headers=target_headers(f"{QUEUE}/fal-ai/magi/requests/{request_id}/cancel"),
    )
    assert cancel.status_code == 202
    assert server.proxy.outcomes.wait(request_id) == "released"
    assert fake_fal.cancelled == [request_id]
    assert states(guard) == ["released"]


def test_a_cancel_after_the_job_started_keeps_the_hold(
    serve: Any, fake_fal: FakeFal, ledger: Ledger
) -> None:
    guard = make_guard(ledger, Cap("10.00"))
    server = serve(guard, follow_interval=3600)
    fake_fal.progress_polls = 5
    request_id = post(server, SUBMIT, ARGS).json()["request_id"]
    base = f"{QUEUE}/fal-ai/magi/requests/{request_id}"
    assert get(server, f"{base}/status").json()["status"] == "IN_PROGRESS"
    cancel = httpx.put(server.url, headers=target_headers(f"{base}/cancel"))
    assert cancel.status_code == 202
    assert server.proxy.outcomes.get(request_id) is None
    assert states(guard) == ["submitted"]  # it ran: fal may bill it; reconcile decides


def test_unpriced_endpoints_are_refused_unless_allowed(serve: Any, fake_fal: FakeFal) -> None:
    server = serve(make_guard("memory://", Cap("10.00")))
    answer = post(server, f"{QUEUE}/fal-ai/unknown-model", {"prompt": "x"})
    assert answer.status_code == 403
    assert answer.json()["error"] == "unpriced"
    assert "fal-ai/unknown-model" in answer.json()["detail"]
    assert fake_fal.count() == 0
    allowing = serve(make_guard("memory://", Cap("10.00"), on_unknown="allow"))
    assert post(allowing, f"{QUEUE}/fal-ai/unknown-model", {"prompt": "x"}).status_code == 200
    assert fake_fal.count("submit") == 1


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{not json", 400, "not JSON"),
        (b"[1, 2]", 400, "a JSON object, not an array"),
        (b'"text"', 400, "a JSON object, not a string"),
        (
            json.dumps({**ARGS, "num_frames": 500}).encode(),
            400,
            "num_frames=500 is not allowed",
        ),
        (json.dumps({"image_url": "https://x.invalid/a.png"}).encode(), 400, "prompt"),
    ],
)
def test_bad_bodies_are_refused_before_anything_is_held(
    serve: Any, fake_fal: FakeFal, body: bytes, status: int, says: str
) -> None:
    guard = make_guard("memory://", Cap("10.00"))
    server = serve(guard)
    answer = post(server, SUBMIT, body)
    assert answer.status_code == status
    assert says in answer.json()["detail"]
    assert fake_fal.count() == 0 and guard.ledger.holds() == []


def test_oversized_bodies_are_refused(serve: Any, fake_fal: FakeFal) -> None:
    guard = make_guard("memory://", Cap("10.00"))
    server = serve(guard, max_body_bytes=1000)
    big = json.dumps({**ARGS, "prompt": "x" * 2000}).encode()
    assert post(server, SUBMIT, big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield big[:600]
        yield big[600:]

    answer = httpx.post(server.url, content=chunks(), headers=target_headers(SUBMIT))
    assert answer.status_code == 413
    assert fake_fal.count() == 0 and guard.ledger.holds() == []


# -- 3. who is spending --------------------------------------------------------------------------


def test_no_identity_is_401_and_never_reaches_fal(serve: Any, fake_fal: FakeFal) -> None:
    guard = make_guard("memory://", Cap("10.00"))
    server = serve(guard, anonymous=False)
    answer = post(server, SUBMIT, ARGS)
    assert answer.status_code == 401
    assert fake_fal.count() == 0 and guard.ledger.holds() == []


def test_a_trusted_header_names_the_user_and_per_user_caps_apply(
    serve: Any, fake_fal: FakeFal, ledger: Ledger
) -> None:
    guard = make_guard(ledger, Cap("1.60", scope="user"))
    server = serve(guard, anonymous=False, trusted_header={"name": "x-auth-user", "tag": "user"})
    assert post(server, SUBMIT, ARGS).status_code == 401  # no header, no anonymous traffic
    for _ in range(2):
        assert post(server, SUBMIT, ARGS, **{"x-auth-user": "ann"}).status_code == 200
    refused = post(server, SUBMIT, ARGS, **{"x-auth-user": "ann"})
    assert refused.status_code == 402
    assert refused.json()["cap"] == "user=ann total cap 1.60"
    assert post(server, SUBMIT, ARGS, **{"x-auth-user": "bob"}).status_code == 200
    assert fake_fal.count("submit") == 3
    assert sorted(h.tags["user"] for h in guard.ledger.holds()) == ["ann", "ann", "bob"]


def test_anonymous_visitors_are_capped_per_ip(
    serve: Any, fake_fal: FakeFal, ledger: Ledger
) -> None:
    guard = make_guard(ledger, Cap("1.60", scope="ip"))
    server = serve(guard, anonymous=True)
    assert post(server, SUBMIT, ARGS).status_code == 200
    # X-Forwarded-For from a peer that is not a trusted proxy is ignored: same visitor
    assert post(server, SUBMIT, ARGS, **{"x-forwarded-for": "203.0.113.9"}).status_code == 200
    answer = post(server, SUBMIT, ARGS, **{"x-forwarded-for": "203.0.113.10"})
    assert answer.status_code == 402
    assert answer.json()["cap"] == "ip=127.0.0.1 total cap 1.60"
    assert fake_fal.count("submit") == 2


def test_forwarded_for_is_trusted_only_from_configured_proxies(
    serve: Any, fake_fal: FakeFal
) -> None:
    guard = make_guard("memory://", Cap("0.80", scope="ip"))
    server = serve(guard, anonymous=True, trusted_proxies=["127.0.0.0/8"])
    for visitor in ("203.0.113.9", "203.0.113.10"):
        chain = f"198.51.100.1, {visitor}"  # the first hop is the visitor's claim: ignored
        assert post(server, SUBMIT, ARGS, **{"x-forwarded-for": chain}).status_code == 200
    again = post(server, SUBMIT, ARGS, **{"x-forwarded-for": "203.0.113.9"})
    assert again.status_code == 402
    assert sorted(h.tags["ip"] for h in guard.ledger.holds()) == ["203.0.113.10", "203.0.113.9"]


# -- 4. safe to expose ---------------------------------------------------------------------------


def test_cors_preflight_for_a_configured_origin(serve: Any, fake_fal: FakeFal) -> None:
    server = serve(make_guard("memory://", Cap("10.00")), cors_origins=["https://app.example"])
    preflight = httpx.options(
        server.url,
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "x-fal-target-url, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    other = httpx.options(
        server.url,
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in other.headers
    assert fake_fal.count() == 0


def test_one_log_line_per_request_without_secrets(
    serve: Any, fake_fal: FakeFal, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(make_guard("memory://", Cap("10.00")), **FAST)
    caplog.set_level(logging.INFO, logger="falbudget.proxy")
    answer = post(server, SUBMIT, ARGS, cookie="session=caller-token-777")
    request_id = answer.json()["request_id"]
    server.proxy.outcomes.wait(request_id)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.getMessage().startswith("{")]
    [line] = lines
    assert line["endpoint"] == MAGI and line["kind"] == "submit"
    assert line["tags"] == {"ip": "127.0.0.1"}
    assert (line["price"], line["decision"], line["request_id"], line["status"]) == (
        "0.80",
        "submitted",
        request_id,
        200,
    )
    assert FAL_KEY not in caplog.text and "caller-token-777" not in caplog.text


def test_configuration_errors_name_the_field() -> None:
    from falbudget.proxy.config import parse_settings

    cases = [
        ({"upstreams": {"fal.run": "http://10.0.0.5/run"}}, "proxy.upstreams.fal.run"),
        ({"upstreams": {"evil.example": "https://x"}}, "proxy.upstreams: 'evil.example'"),
        ({"max_body_bytes": 0}, "proxy.max_body_bytes"),
        ({"trusted_proxies": ["not-an-ip"]}, "proxy.trusted_proxies: 'not-an-ip'"),
        ({"bogus": 1}, "proxy.bogus: unknown key"),
        ({"route": "api"}, "proxy.route='api'"),
    ]
    for section, says in cases:
        with pytest.raises(ConfigurationError, match=r"f\.yaml: ") as info:
            parse_settings(section, "f.yaml")
        assert says in str(info.value)


@pytest.mark.parametrize(
    ("config", "args", "env", "says"),
    [
        ("proxy:\n  upstreams: {fal.run: 'http://10.0.0.5/run'}\n", [], {}, "proxy.upstreams"),
        ("ledger: memory://\n", [], {"FAL_KEY": ""}, "set FAL_KEY"),
        ("ledger: memory://\n", ["--workers", "0"], {}, "--workers='0' is not allowed"),
        ("ledger: memory://\n", ["--port", "x"], {}, "--port='x' is not allowed"),
        ("ledger: memory://\n", ["--workers", "2"], {}, "needs a ledger the workers share"),
    ],
)
def test_the_cli_refuses_a_bad_start_with_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    config: str,
    args: list[str],
    env: dict[str, str],
    says: str,
) -> None:
    from falbudget.cli import main

    monkeypatch.setenv("FAL_KEY", "k")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "falbudget.yaml"
    path.write_text(config)
    assert main(["proxy", "--config", str(path), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert says in err


def test_shutdown_lets_a_request_in_flight_finish_and_settle(
    fake_fal: FakeFal, ledger: Ledger
) -> None:
    guard = make_guard(ledger, Cap("10.00"))
    server = ProxyServer(guard, settings_for(fake_fal)).start()
    fake_fal.delay("run")  # the run waits at fal until the reset below
    answers: list[httpx.Response] = []
    client = threading.Thread(target=lambda: answers.append(post(server, f"{RUN}/{MAGI}", ARGS)))
    client.start()
    fake_fal.wait_for("run")  # the request is in flight, its hold submitted
    stopping = threading.Thread(target=server.stop)
    stopping.start()  # graceful: uvicorn stops accepting and waits for the request in flight
    fake_fal.reset()  # fal answers now
    client.join(60)
    stopping.join(60)
    [answer] = answers
    assert answer.status_code == 200 and answer.json() == DEFAULT_OUTPUT
    # the proxy closed its ledger on the way out: read the store afresh
    reader = ledger if isinstance(ledger, MemoryLedger) else open_ledger(ledger.url)
    [hold] = reader.holds()
    assert (hold.state, hold.spent_amount) == ("settled", 800_000)


def test_a_client_that_hangs_up_mid_run_is_still_charged(
    serve: Any, fake_fal: FakeFal, ledger: Ledger
) -> None:
    guard = make_guard(ledger, Cap("10.00"))
    server = serve(guard, timeout=30)
    fake_fal.delay("run")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            server.url,
            content=json.dumps(ARGS).encode(),
            headers=target_headers(f"{RUN}/{MAGI}"),
            timeout=httpx.Timeout(30, read=0.2),
        )
    [hold] = guard.ledger.holds()
    fake_fal.reset()  # fal finishes the run the client gave up on: it bills it
    assert server.proxy.outcomes.wait(hold.id) == "settled"
    assert guard.spent() == Decimal("0.80")


def test_fal_unreachable_releases_the_hold(fake_fal: FakeFal, ledger: Ledger) -> None:
    import socket

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    guard = make_guard(ledger, Cap("10.00"))
    dead = {
        "fal.run": f"http://127.0.0.1:{port}/run",
        "queue.fal.run": f"http://127.0.0.1:{port}/q",
    }
    with ProxyServer(guard, settings_for(fake_fal, upstreams=dead)) as server:
        answer = post(server, SUBMIT, ARGS)
        assert answer.status_code == 502 and answer.json()["error"] == "upstream"
        [hold] = guard.ledger.holds()
        assert server.proxy.outcomes.wait(hold.id) == "released"
        assert guard.ledger.get_hold(hold.id).state == "released"


def test_a_restarted_proxy_follows_the_requests_it_had_accepted(
    fake_fal: FakeFal, ledger: Ledger
) -> None:
    guard = make_guard(ledger, Cap("10.00"))
    first = ProxyServer(guard, settings_for(fake_fal, follow_interval=3600)).start()
    request_id = post(first, SUBMIT, ARGS).json()["request_id"]
    first.stop()  # the hold stays submitted in the ledger
    reader = ledger if isinstance(ledger, MemoryLedger) else open_ledger(ledger.url)
    assert [h.state for h in reader.holds()] == ["submitted"]
    again = make_guard(reader, Cap("10.00"))
    with ProxyServer(again, settings_for(fake_fal, **FAST)) as second:
        assert second.proxy.outcomes.wait(request_id) == "settled"
        [hold] = again.ledger.holds()
        assert (hold.state, hold.request_id, hold.spent_amount) == ("settled", request_id, 800_000)


def test_the_proxy_settles_from_fals_bill_and_a_ceiling_to_the_bill(
    serve: Any, fake_fal: FakeFal, ledger: Ledger
) -> None:
    from falbudget.pricing.loader import parse_table
    from test_settle_from_billing import CEILING_TABLE, Bill

    # an endpoint priced only after the call: the hold is its 0.50 ceiling, and the proxy's
    # follower settles it at what fal billed, 0.07 (no settle_from needed for a ceiling)
    bill = Bill(fake_fal, "0.07")
    guard = make_guard(ledger, Cap("10.00"), table=parse_table(CEILING_TABLE), billing=bill)
    server = serve(guard, **FAST)
    request_id = post(server, f"{QUEUE}/fal-ai/any-llm", {"prompt": "hi"}).json()["request_id"]
    assert server.proxy.outcomes.wait(request_id) == "settled"
    assert bill.asked == [request_id]
    [hold] = guard.ledger.holds()
    assert (hold.amount, hold.spent_amount) == (500_000, 70_000)
    # and a hold the proxy picks up again after a restart (read back with no quote) is still
    # known for a ceiling by its endpoint
    from falbudget.guard.core import Hold

    assert Hold(guard, hold, None, False)._is_ceiling() is True


def test_the_proxy_honours_settle_from_billing(
    serve: Any, fake_fal: FakeFal, ledger: Ledger
) -> None:
    from test_settle_from_billing import Bill

    bill = Bill(fake_fal, "1.10")  # fal billed 1.10 for a request quoted 1.20
    guard = make_guard(ledger, Cap("10.00"), settle_from="billing", billing=bill)
    server = serve(guard, **FAST)
    request_id = post(server, SUBMIT, ARGS_120).json()["request_id"]
    assert server.proxy.outcomes.wait(request_id) == "settled"
    assert guard.spent() == Decimal("1.10")
