"""Webhook alerts against a local HTTP receiver on 127.0.0.1 that fails, times out and answers
slowly. The sleep between attempts and the clocks are fakes: nothing waits for a retry, and no
assertion is about time. MAGI-1 at its defaults costs 0.80 USD (docs/pricing.md).
"""

from __future__ import annotations

import datetime as dt
import gc
import http.server
import json
import logging
import math
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from falbudget import BudgetExceeded, Cap, Guard
from falbudget.alerts import Notifier, RefusalRule, Webhook, body, retry_after
from falbudget.errors import ConfigurationError, LedgerUnavailable, UnknownEndpoint
from falbudget.guard.config import load_config
from falbudget.ledger import Ledger, open_ledger
from falbudget.ledger.memory import MemoryLedger
from ledger_backends import PROCESS_BACKENDS, backend_params, store_url

MAGI = "fal-ai/magi/image-to-video"
REQ = {"prompt": "a cat", "image_url": "https://example.invalid/cat.png"}
NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC).timestamp()


class Receiver:
    """An HTTP server on 127.0.0.1 answering each POST as ``script`` says, in order (then 200):
    a status code, (status, headers), "hang" (answers only once released: the client times
    out) or "slow" (answers 200 after 50 ms)."""

    def __init__(self, script: list[Any] | None = None) -> None:
        self.script = list(script or [])
        self.posts: list[tuple[dict[str, str], Any]] = []
        self.release = threading.Event()
        self.arrived = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                payload = json.loads(self.rfile.read(length))
                with receiver.arrived:
                    receiver.posts.append((dict(self.headers.items()), payload))
                    action = receiver.script.pop(0) if receiver.script else 200
                    receiver.arrived.notify_all()
                headers: dict[str, str] = {}
                if action == "hang":
                    receiver.release.wait()
                    action = 200
                elif action == "slow":
                    time.sleep(0.05)  # a slow answer, well within the client's timeout
                    action = 200
                if isinstance(action, tuple):
                    action, headers = action
                try:
                    self.send_response(action)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:  # the client gave up (a timeout)
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int) -> None:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.posts) >= count, 60), self.posts

    def bodies(self) -> list[Any]:
        return [body for _, body in self.posts]

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(script: list[Any] | None = None) -> Receiver:
        made.append(Receiver(script))
        return made[-1]

    yield make
    for one in made:
        one.stop()


class FakeTime:
    """The notifier's monotonic clock and sleep: a sleep records its length and moves the clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def notifier(*webhooks: Webhook, fake: FakeTime | None = None, **options: Any) -> Notifier:
    fake = fake or FakeTime()
    options.setdefault("timeout", 10.0)
    return Notifier(
        webhooks,
        clock=lambda: NOW,
        monotonic=fake.monotonic,
        sleep=fake.sleep,
        random=lambda: 0.5,
        **options,
    )


def monthly() -> Cap:
    # 50% = 2.00, 80% = 3.20, 100% = 4.00 USD
    return Cap("4.00", window="month", alert_at=[0.5, 0.8, 1.0], name="monthly")


def spend_once(guard: Guard) -> None:
    with guard.reserve(MAGI, REQ):
        pass


# -- thresholds, once each ------------------------------------------------------------------------
def test_two_guards_on_one_ledger_send_each_threshold_once(
    ledger_factory: Callable[[], Ledger], receiver: Callable[..., Receiver]
) -> None:
    got = receiver()
    hooks = [Webhook(got.url), Webhook(got.url + "?slack", format="slack")]
    guards = []
    for _ in range(2):
        guard = Guard(ledger_factory(), [monthly()], clock=lambda: NOW)
        notifier(*hooks).attach(guard)
        guards.append(guard)
    # A, B, A, B, A: 0.80 each; the totals after each: 0.80, 1.60, 2.40, 3.20, 4.00
    for index in range(5):
        spend_once(guards[index % 2])
    for guard in guards:
        assert guard.notifier is not None and guard.notifier.flush(60)
    # each notifier delivers on its own thread: arrivals may interleave, so sort them
    json_bodies = sorted((b for b in got.bodies() if "event" in b), key=lambda b: b["fraction"])
    slack_bodies = sorted((b for b in got.bodies() if "text" in b), key=lambda b: b["text"])
    assert [(b["fraction"], b["spent"], b["limit"]) for b in json_bodies] == [
        ("0.5", "2.40", "4.00"),  # crossed by A's second request (the third in all)
        ("0.8", "3.20", "4.00"),  # B's second
        ("1.0", "4.00", "4.00"),  # A's third
    ]
    first = json_bodies[0]
    assert first == {
        "version": 1,
        "event": "threshold",
        "id": "threshold:global|month@UTC:2026-11:0.5@4.00",
        "at": "2026-11-24T12:00:00Z",
        "summary": (
            "falbudget: monthly reached 50% of its limit: spent 2.40 of 4.00 USD"
            " (global|month@UTC:2026-11)"
        ),
        "cap": "monthly",
        "bucket": "global|month@UTC:2026-11",
        "window": "month",
        "fraction": "0.5",
        "spent": "2.40",
        "limit": "4.00",
    }
    assert [b["text"] for b in slack_bodies] == sorted(b["summary"] for b in json_bodies)
    headers = next(h for h, b in got.posts if "event" in b)
    assert headers["content-type"] == "application/json"
    assert headers["x-falbudget-event"] == "threshold"


_CHILD = """
import sys
from falbudget import Cap, Guard
from falbudget.alerts import Notifier, Webhook
url, hook, now = sys.argv[1], sys.argv[2], float(sys.argv[3])
cap = Cap("4.00", window="month", alert_at=[0.5, 0.8, 1.0], name="monthly")
guard = Guard(url, [cap], clock=lambda: now)
Notifier([Webhook(hook)], clock=lambda: now).attach(guard)
with guard.reserve("fal-ai/magi/image-to-video",
                   {"prompt": "a cat", "image_url": "https://example.invalid/cat.png"}):
    pass
guard.close()  # delivers what is queued before the process ends
"""


@pytest.mark.parametrize("kind", backend_params(PROCESS_BACKENDS))
def test_another_process_crossing_a_threshold_sends_it_once(
    kind: str, tmp_path: Path, receiver: Callable[..., Receiver]
) -> None:
    got = receiver()
    url = store_url(kind, tmp_path)
    guard = Guard(open_ledger(url), [monthly()], clock=lambda: NOW)
    notifier(Webhook(got.url)).attach(guard)
    try:
        for _ in range(3):  # 2.40: 50% (here)
            spend_once(guard)
        subprocess.run([sys.executable, "-c", _CHILD, url, got.url, repr(NOW)], check=True)
        spend_once(guard)  # 4.00: 100% (here); the child's 0.80 made 3.20: 80% (there)
        assert guard.notifier is not None and guard.notifier.flush(60)
    finally:
        guard.close()
    assert sorted(b["fraction"] for b in got.bodies()) == ["0.5", "0.8", "1.0"]


_EXIT_CHILD = """
import sys
from falbudget.alerts import Notifier, Webhook
note = Notifier([Webhook(sys.argv[1])])
note._post("overrun", {"event": "overrun", "id": "x1", "summary": "s", "version": 1})
# the process ends here, without close(): the queue is delivered at exit all the same
"""


def test_a_process_ending_without_close_delivers_its_queue(
    receiver: Callable[..., Receiver],
) -> None:
    got = receiver()
    subprocess.run([sys.executable, "-c", _EXIT_CHILD, got.url], check=True)
    assert [b["id"] for b in got.bodies()] == ["x1"]


# -- delivery: retries, bounds, a receiver that fails, times out, answers slowly ----------------
def post_one(note: Notifier) -> None:
    note._post("overrun", {"event": "overrun", "id": "x1", "summary": "s", "version": 1})


def test_failures_are_retried_with_backoff_and_retry_after(
    receiver: Callable[..., Receiver],
) -> None:
    got = receiver([500, (503, {"Retry-After": "7"}), 200])
    fake = FakeTime()
    results: list[str] = []
    note = notifier(Webhook(got.url), fake=fake)
    note.on_result = lambda name, result: results.append(result)
    post_one(note)
    assert note.flush(60)
    # delays with random 0.5: base 1 s x 2**(n-1), half fixed and half jitter: 0.5 + 0.25 = 0.75;
    # then 1.0 + 0.5 = 1.5, but Retry-After asks 7
    assert fake.sleeps == [0.75, 7.0]
    assert len(got.posts) == 3
    assert results == ["retried", "retried", "delivered"]


def test_a_delivery_failing_past_the_bound_is_logged_with_its_payload(
    receiver: Callable[..., Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    got = receiver([500] * 10)
    fake = FakeTime()
    note = notifier(Webhook(got.url), fake=fake, max_attempts=4)
    with caplog.at_level(logging.WARNING, logger="falbudget.alerts"):
        post_one(note)
        assert note.flush(60)
    assert fake.sleeps == [0.75, 1.5, 3.0]  # (0.5, 1, 2) + half as jitter; 4 attempts
    assert len(got.posts) == 4
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "gave up after 4 attempt(s): HTTP 500" in errors[0]
    assert '"id": "x1"' in errors[0]  # the payload, so nothing is lost silently
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 3


def test_the_total_time_bound_stops_retries(
    receiver: Callable[..., Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    got = receiver([500] * 10)
    fake = FakeTime()
    note = notifier(Webhook(got.url), fake=fake, max_total=2.0)
    with caplog.at_level(logging.ERROR, logger="falbudget.alerts"):
        post_one(note)
        assert note.flush(60)
    # waited 0.75; the next wait (1.5) would end at 2.25 > 2
    assert fake.sleeps == [0.75]
    assert len(got.posts) == 2
    assert "would pass max_total 2 s" in caplog.records[-1].getMessage()


def test_an_answer_no_retry_changes_is_given_up_at_once(
    receiver: Callable[..., Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    got = receiver([404])
    fake = FakeTime()
    note = notifier(Webhook(got.url), fake=fake)
    with caplog.at_level(logging.ERROR, logger="falbudget.alerts"):
        post_one(note)
        assert note.flush(60)
    assert fake.sleeps == [] and len(got.posts) == 1
    assert "HTTP 404, which no retry changes" in caplog.records[-1].getMessage()


def test_a_receiver_that_times_out_is_retried(receiver: Callable[..., Receiver]) -> None:
    got = receiver(["hang", 200])
    fake = FakeTime()
    results: list[str] = []
    note = notifier(Webhook(got.url), fake=fake, timeout=0.2)
    note.on_result = lambda name, result: results.append(result)
    post_one(note)
    assert note.flush(60)
    assert results == ["retried", "delivered"]
    assert fake.sleeps == [0.75]


def test_a_slow_receiver_is_waited_for(receiver: Callable[..., Receiver]) -> None:
    got = receiver(["slow"])
    fake = FakeTime()
    results: list[str] = []
    note = notifier(Webhook(got.url), fake=fake, timeout=30.0)
    note.on_result = lambda name, result: results.append(result)
    post_one(note)
    assert note.flush(60)
    assert results == ["delivered"] and fake.sleeps == []


def test_delivery_never_blocks_the_settle_that_fired_it(
    receiver: Callable[..., Receiver],
) -> None:
    got = receiver(["hang"])
    guard = Guard("memory://", [Cap("1.00", alert_at=[0.5])], clock=lambda: NOW)
    note = notifier(Webhook(got.url), timeout=3600.0)
    note.attach(guard)
    spend_once(guard)  # 0.80 >= 50% of 1.00: fires
    got.wait_for(1)  # the receiver holds the delivery, unanswered ...
    assert note._queue.unfinished_tasks == 1  # ... and the settle above has returned already
    got.release.set()
    assert note.flush(60)


def test_a_full_queue_is_logged_with_the_payload(
    receiver: Callable[..., Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    got = receiver(["hang"])
    note = notifier(Webhook(got.url), queue_size=1, timeout=3600.0)
    post_one(note)
    got.wait_for(1)  # taken by the worker, held by the receiver
    with caplog.at_level(logging.ERROR, logger="falbudget.alerts"):
        post_one(note)  # waits in the queue (size 1)
        post_one(note)  # no room
    assert "the delivery queue is full" in caplog.records[-1].getMessage()
    assert '"id": "x1"' in caplog.records[-1].getMessage()
    got.release.set()
    assert note.flush(60)


# -- overruns and refusals ----------------------------------------------------------------------
def test_an_overrun_is_sent(receiver: Callable[..., Receiver]) -> None:
    got = receiver()
    guard = Guard("memory://", [Cap("10.00")], clock=lambda: NOW)
    notifier(Webhook(got.url, events=("overrun",))).attach(guard)
    hold = guard.reserve(MAGI, REQ, user="ann").acquire()
    hold.settle("0.95")
    assert guard.notifier is not None and guard.notifier.flush(60)
    (body,) = got.bodies()
    assert (body["event"], body["held"], body["spent"], body["overrun"]) == (
        "overrun",
        "0.80",
        "0.95",
        "0.15",  # 0.95 - 0.80
    )
    assert body["tags"] == {"user": "ann", "endpoint": MAGI}


def test_refusals_above_the_rate_are_sent_once_per_window(
    ledger_factory: Callable[[], Ledger], receiver: Callable[..., Receiver]
) -> None:
    got = receiver()
    clock = [NOW]
    guards = []
    for _ in range(2):
        guard = Guard(ledger_factory(), [Cap("1.00")], clock=lambda: clock[0])
        rule = RefusalRule(count=3, within=60)
        Notifier(
            [Webhook(got.url, events=("refusals",))], refusal_rule=rule, clock=guard._now
        ).attach(guard)
        guards.append(guard)
    spend_once(guards[0])  # 0.80 of 1.00: the next request is refused
    for index in range(6):  # six refusals, alternating guards: the third one passes the rate
        with pytest.raises(BudgetExceeded):
            guards[index % 2].reserve(MAGI, REQ).acquire()
        for guard in guards:
            assert guard.notifier is not None and guard.notifier.flush(60)
    (body,) = got.bodies()
    assert (body["event"], body["count"], body["threshold"], body["within"]) == (
        "refusals",
        3,
        3,
        60,
    )
    assert body["by"] == [{"endpoint": MAGI, "cap": "global total cap 1.00", "count": 3}]
    # 61 s later the six are out of the trailing minute: one more refusal is under the rate
    clock[0] = NOW + 61
    with pytest.raises(BudgetExceeded):
        guards[0].reserve(MAGI, REQ).acquire()
    assert guards[0].notifier is not None and guards[0].notifier.flush(60)
    assert len(got.posts) == 1


# -- configuration -------------------------------------------------------------------------------
def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "falbudget.yaml"
    path.write_text("ledger: memory://\n" + text, encoding="utf-8")
    return str(path)


def test_webhooks_are_read_from_the_configuration(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            "webhooks:\n"
            "  - url: https://hooks.example.com/a\n"
            "    format: slack\n"
            "    events: [threshold]\n"
            "    headers: {Authorization: Bearer t}\n"
            "refusal_alert: {count: 5, within: 120}\n",
        )
    )
    guard = config.build_guard()
    note = guard.notifier
    assert note is not None
    (hook,) = note.webhooks
    assert (hook.url, hook.format, hook.events, hook.name) == (
        "https://hooks.example.com/a",
        "slack",
        ("threshold",),
        "hooks.example.com",
    )
    assert dict(hook.headers) == {"Authorization": "Bearer t"}
    assert note.refusal_rule == RefusalRule(5, 120.0)
    guard.close()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "webhooks:\n  - url: ftp://hooks.example.com/a\n",
            "webhooks.0: url='ftp://hooks.example.com/a' is not allowed: an http:// or https://",
        ),
        ("webhooks:\n  - url: https://\n", "webhooks.0: url='https://' is not allowed"),
        ("webhooks:\n  - url: https://h/x\n    format: teams\n", "webhooks.0.format:"),
        ("webhooks:\n  - url: https://h/x\n    events: [spend]\n", "webhooks.0.events.0:"),
        ("webhooks:\n  - url: https://h/x\n    events: []\n", "webhooks.0.events:"),
        ("webhooks:\n  - {}\n", "webhooks.0.url:"),
        ("refusal_alert: {count: 0}\n", "refusal_alert.count:"),
        ("refusal_alert: {within: .inf}\n", "refusal_alert.within:"),
    ],
)
def test_a_bad_webhook_configuration_names_the_field(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=r"falbudget.yaml: " + message.replace("?", r"\?")):
        load_config(write(tmp_path, text)).build_guard()


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after("7", NOW) == 7.0
    # an HTTP date 30 s after NOW (2026-11-24 12:00:00 UTC)
    assert retry_after("Tue, 24 Nov 2026 12:00:30 GMT", NOW) == 30.0
    assert retry_after("soon", NOW) is None
    assert retry_after(None, NOW) is None


def test_retry_after_takes_ascii_digits_only() -> None:
    # '²' is a digit to str.isdigit but not to float(): it was a ValueError in the worker, and
    # the delivery vanished without its ERROR line
    assert retry_after("²", NOW) is None
    assert retry_after("٣", NOW) is None  # ARABIC-INDIC DIGIT THREE


def test_a_retry_after_no_one_can_read_still_retries_and_delivers(
    receiver: Callable[..., Receiver],
) -> None:
    got = receiver([(503, {"Retry-After": "²"}), 200])
    fake = FakeTime()
    results: list[str] = []
    note = notifier(Webhook(got.url), fake=fake)
    note.on_result = lambda name, result: results.append(result)
    post_one(note)
    assert note.flush(60)
    assert fake.sleeps == [0.75]  # the backoff alone: 0.5 + 0.5 * 0.5 (Retry-After unreadable)
    assert results == ["retried", "delivered"]


@pytest.mark.parametrize(
    "value",
    [
        '"Bearer s3cr3t\\n"',  # a line break: httpx refused it at each post, value in its message
        '"Bearer s3cr3t "',  # a trailing space, likewise
        '"Bearer s3cr3t\\u00e9"',  # not ASCII: a UnicodeEncodeError in the worker
    ],
)
def test_a_header_httpx_cannot_send_is_refused_without_showing_it(
    tmp_path: Path, value: str
) -> None:
    text = f"webhooks:\n  - url: https://h/x\n    headers:\n      Authorization: {value}\n"
    with pytest.raises(ConfigurationError) as raised:
        load_config(write(tmp_path, text)).build_guard()
    message = str(raised.value)
    assert "falbudget.yaml: webhooks.0: headers: the value of Authorization is not" in message
    assert "s3cr3t" not in message


def test_a_webhooks_secret_headers_are_not_in_its_repr() -> None:
    hook = Webhook("https://h/x", headers={"Authorization": "Bearer s3cr3t"})
    assert "s3cr3t" not in repr(hook)
    assert hook.headers == {"Authorization": "Bearer s3cr3t"}  # still sent


def test_the_slack_text_escapes_what_slack_reads_as_markup() -> None:
    # a tag value reaches the summary through the bucket (user=<value>): unescaped, Slack read
    # <!channel> as a mention of the whole channel. Slack asks for &amp; &lt; &gt; and no more
    # (https://api.slack.com/reference/surfaces/formatting#escaping)
    hook = Webhook("https://h/x", format="slack")
    payload = {"summary": "falbudget: user=<!channel> & <https://x|y> reached 50%"}
    text = json.loads(body(hook, payload))["text"]
    assert text == "falbudget: user=&lt;!channel&gt; &amp; &lt;https://x|y&gt; reached 50%"
    # the JSON body is the payload itself, unescaped
    assert json.loads(body(Webhook("https://h/x"), payload)) == payload


def test_close_waits_at_most_its_timeout_in_all() -> None:
    # the worker is busy (a job that waits for an event); flush is replaced by one that times out
    # as a real one would, moving the fake clock by its whole timeout: the join after it must get
    # what is left of the 30 s, 0, not another 30 s (a hang of 60 s at exit)
    fake = FakeTime()
    note = notifier(Webhook("http://127.0.0.1:9/hook"), fake=fake)
    busy = threading.Event()

    def wait_until_set() -> None:
        busy.wait()

    note._enqueue(wait_until_set, "a busy job")
    assert note._thread is not None
    waited: list[float | None] = []

    def flush(timeout: float | None = None) -> bool:
        fake.now += timeout or 0.0
        return False

    def join(timeout: float | None = None) -> None:
        waited.append(timeout)

    note.flush = flush  # type: ignore[method-assign]
    thread = note._thread
    thread.join = join  # type: ignore[method-assign]
    note.close(30.0)
    assert waited == [0.0]  # 30 s budget - 30 s spent in flush
    busy.set()
    threading.Thread.join(thread, 60)
    assert not thread.is_alive()


class _ClaimDown(MemoryLedger):
    """A memory ledger whose alert claims fail (the server went away after the settle)."""

    def claim_alert(self, bucket: str, threshold: str) -> bool:
        raise LedgerUnavailable("connection lost")


def test_a_threshold_check_that_fails_leaves_the_settle_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 0.80 settled of 1.00 crosses 0.5 (0.50): the claim fails. The spend is recorded; the settle
    # raised all the same, so a caller took a recorded settle for a failed one
    ledger = _ClaimDown()
    guard = Guard(ledger, [Cap("1.00", alert_at=[0.5])], clock=lambda: NOW)
    with caplog.at_level(logging.ERROR, logger="falbudget"), guard.reserve(MAGI, REQ) as hold:
        pass
    assert hold.state == "settled"
    assert guard.spent() == Decimal("0.80")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "alert thresholds could not be checked: connection lost" in errors[0]


@pytest.mark.parametrize("size", [0, -1, True, 2.5])
def test_the_queue_is_always_bounded(size: Any) -> None:
    # queue.Queue(0) (or a negative size) has no bound: deliveries would pile up in memory
    with pytest.raises(ConfigurationError, match=rf"queue_size={size!r} is not allowed"):
        Notifier([Webhook("https://h/x")], queue_size=size)


def test_a_refusal_check_dropped_by_a_full_queue_does_not_stop_later_ones(
    receiver: Callable[..., Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    got = receiver()
    guard = Guard("memory://", [Cap("1.00")], clock=lambda: NOW)
    rule = RefusalRule(count=1, within=60)
    note = notifier(Webhook(got.url, events=("refusals",)), refusal_rule=rule, queue_size=1)
    note.attach(guard)
    started, release = threading.Event(), threading.Event()

    def busy() -> None:
        started.set()
        release.wait()

    assert note._enqueue(busy, "a busy job")
    assert started.wait(60)  # the worker holds the busy job: the queue (1 place) is empty
    assert note._enqueue(lambda: None, "a job that fills the queue")
    with caplog.at_level(logging.ERROR, logger="falbudget.alerts"), pytest.raises(UnknownEndpoint):
        guard.reserve("fal-ai/nope", {})  # its rate check finds the queue full: dropped
    assert "a refusal-rate check: the delivery queue is full" in caplog.text
    release.set()
    assert note.flush(60)
    with pytest.raises(UnknownEndpoint):
        guard.reserve("fal-ai/nope", {})  # queues a check again (it stayed 'pending' forever)
    assert note.flush(60)
    (body,) = got.bodies()
    assert (body["event"], body["count"]) == ("refusals", 2)  # both refusals, in the minute


def test_webhooks_without_httpx_are_refused_when_the_file_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # without httpx the worker thread died at its first alert (an ImportError on that thread):
    # every alert after it queued for nothing, and close() waited its whole 30 s
    monkeypatch.setitem(sys.modules, "httpx", None)  # import httpx raises ImportError
    with pytest.raises(
        ConfigurationError,
        match=r"falbudget.yaml: webhooks: webhooks need httpx: pip install 'falbudget\[",
    ):
        load_config(write(tmp_path, "webhooks:\n  - url: https://h/x\n")).build_guard()


class _CountingClaims(MemoryLedger):
    """A memory ledger counting the alert claims asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.claims: list[tuple[str, str]] = []

    def claim_alert(self, bucket: str, threshold: str) -> bool:
        self.claims.append((bucket, threshold))
        return super().claim_alert(bucket, threshold)


def test_a_threshold_is_claimed_once_not_at_every_settle_above_it() -> None:
    # cap 4.00, alert_at 0.5 (2.00): settles of 0.80 reach 0.80, 1.60, 2.40, 3.20, 4.00; the
    # threshold is crossed at the third and each settle after it asked the ledger again (a write)
    ledger = _CountingClaims()
    guard = Guard(ledger, [Cap("4.00", alert_at=[0.5])], clock=lambda: NOW)
    fired: list[Any] = []
    guard.on_alert = fired.append
    for _ in range(5):
        spend_once(guard)
    assert ledger.claims == [("global|total", "0.5@4.00")]
    assert len(fired) == 1


def test_close_lets_go_of_the_exit_hook(receiver: Callable[..., Receiver]) -> None:
    # a process making a guard per job kept every closed notifier (and its guard and ledger)
    # alive in atexit's list until it ended
    got = receiver()
    note = notifier(Webhook(got.url))
    post_one(note)  # starts the worker, which registers the hook
    note.close()
    assert [b["id"] for b in got.bodies()] == ["x1"]
    gone = weakref.ref(note)
    del note
    gc.collect()
    assert gone() is None


@pytest.mark.parametrize(
    ("option", "value"),
    [("base_delay", -1.0), ("max_delay", -5), ("base_delay", math.nan), ("max_delay", math.inf)],
)
def test_retry_delays_are_checked(option: str, value: float) -> None:
    # a negative pause reached time.sleep (ValueError) at the first retry, in the worker
    with pytest.raises(ConfigurationError, match=rf"{option}=.* is not allowed: seconds, 0 or"):
        Notifier([Webhook("https://h/x")], **{option: value})
