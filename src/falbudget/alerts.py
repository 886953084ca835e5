"""Webhook alerts: a cap's ``alert_at`` thresholds, overruns and refusals above a rate, posted to
the team's webhooks (a documented JSON body, or Slack's ``{"text": ...}``). docs/alerts.md.

* Once per window across every process: a threshold fires when the ledger's ``claim_alert``
  (bucket, threshold) says this process is the first (the bucket names the cap's window); the
  refusal rate likewise claims (``refusals|<period>``, the rule) once per period of ``within``
  seconds. An overrun fires from the process that settled the hold, once per hold.
* Never blocking or slowing an admission: the guard's hooks put a job on a bounded queue and
  return; one background thread delivers with httpx, retrying (5xx, 408, 429, a timeout, a
  connection error) with exponential backoff and jitter, honouring Retry-After, for at most
  ``max_attempts`` attempts and ``max_total`` seconds. Each failed attempt is logged (WARNING)
  and counted; a delivery given up (the bound, or an answer no retry helps: another 4xx) and
  one that cannot be queued are logged at ERROR with the whole payload: never lost silently.
  Deliveries still queued when the process ends are delivered first (:meth:`close`, also run
  at interpreter exit), for at most 30 s; what is left then is logged at ERROR too.

Clocks and the sleep between attempts are injected (tests run without waiting).
"""

from __future__ import annotations

import atexit
import datetime as dt
import email.utils
import json
import logging
import math
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from falbudget.errors import ConfigurationError, FalbudgetError, install_hint
from falbudget.ledger.base import Hold, Refusal
from falbudget.money import format_usd, from_micros

if TYPE_CHECKING:  # pragma: no cover
    import httpx

    from falbudget.guard.core import Alert, Guard

log = logging.getLogger("falbudget.alerts")

Event = Literal["threshold", "overrun", "refusals"]
EVENTS: tuple[Event, ...] = ("threshold", "overrun", "refusals")
Format = Literal["json", "slack"]
BODY_VERSION = 1
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""A header name (RFC 9110 token)."""
_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?")
"""A header value httpx sends as given: printable ASCII, no line break, no edge spaces (httpx
raised on the others at each post, with the value in its message, or as a UnicodeEncodeError)."""
RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Answers a later attempt may change; any other status of 400 or more is given up at once."""


@dataclass(frozen=True)
class Webhook:
    """Where alerts go: an http(s) ``url``, the body ``format``, the ``events`` it receives and
    extra ``headers`` (an Authorization header, say). ``name`` labels it in logs and metrics."""

    url: str
    format: Format = "json"
    events: tuple[Event, ...] = EVENTS
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # secrets: not shown
    name: str = ""

    def __post_init__(self) -> None:
        check_url(self.url, "url")
        if self.format not in ("json", "slack"):
            raise ConfigurationError(f"format={self.format!r} is not allowed: 'json' or 'slack'")
        for event in self.events:
            if event not in EVENTS:
                raise ConfigurationError(
                    f"events: {event!r} is not allowed: any of {', '.join(EVENTS)}"
                )
        for key, value in self.headers.items():
            # a value is often a secret (Authorization): never in a message, only what is wrong
            if not isinstance(key, str) or not _TOKEN.fullmatch(key):
                raise ConfigurationError(
                    f"headers: the name {key!r} is not allowed: a header name (letters, digits"
                    " and !#$%&'*+-.^_`|~)"
                )
            if not isinstance(value, str) or not _VALUE.fullmatch(value):
                raise ConfigurationError(
                    f"headers: the value of {key} is not allowed (not shown: it may be a"
                    " secret): a string of printable ASCII characters, without line breaks or"
                    " leading or trailing spaces"
                )
        if not self.name:
            object.__setattr__(self, "name", urlsplit(self.url).hostname or "webhook")


def check_url(url: object, what: str) -> str:
    """``url`` when it is an http:// or https:// URL with a host; ConfigurationError otherwise."""
    allowed = "an http:// or https:// URL with a host, such as https://hooks.example.com/x"
    if not isinstance(url, str):
        raise ConfigurationError(f"{what}={url!r} is not allowed: {allowed}")
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname
    except ValueError:
        scheme, host = "", None
    if scheme not in ("http", "https") or not host:
        raise ConfigurationError(f"{what}={url!r} is not allowed: {allowed}")
    return url


@dataclass(frozen=True)
class RefusalRule:
    """Fire a ``refusals`` alert when ``count`` refusals or more were recorded in the trailing
    ``within`` seconds; at most once per period of ``within`` seconds, across processes."""

    count: int = 10
    within: float = 300.0

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ConfigurationError(f"count={self.count!r} is not allowed: a whole number >= 1")
        within = self.within
        if (
            isinstance(within, bool)
            or not isinstance(within, int | float)
            or not (1 <= within <= 31 * 86400)
        ):
            raise ConfigurationError(
                f"within={within!r} is not allowed: seconds from 1 to 2678400 (31 days, what the"
                " ledger keeps of refusals)"
            )


@dataclass(frozen=True)
class Delivery:
    """One payload for one webhook: the JSON document and the id that names it."""

    webhook: Webhook
    payload: Mapping[str, Any]


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def _usd(value: Decimal | int) -> str:
    return format_usd(from_micros(value) if isinstance(value, int) else value)


def threshold_payload(alert: Alert, at: float) -> dict[str, Any]:
    """The JSON body of a threshold alert (docs/alerts.md)."""
    cap = alert.cap
    percent = format(alert.fraction * 100, "f").rstrip("0").rstrip(".")
    name = cap.label(alert.bucket)
    return {
        "version": BODY_VERSION,
        "event": "threshold",
        "id": f"threshold:{alert.bucket}:{alert.fraction}@{cap.limit}",
        "at": _iso(at),
        "summary": (
            f"falbudget: {name} reached {percent}% of its limit: spent {_usd(alert.spent)} of"
            f" {_usd(alert.limit)} USD ({alert.bucket})"
        ),
        "cap": name,
        "bucket": alert.bucket,
        "window": cap.window,
        "fraction": str(alert.fraction),
        "spent": _usd(alert.spent),
        "limit": _usd(alert.limit),
    }


def overrun_payload(hold: Hold, at: float) -> dict[str, Any]:
    """The JSON body of an overrun: fal billed more than was held for a request."""
    return {
        "version": BODY_VERSION,
        "event": "overrun",
        "id": f"overrun:{hold.id}",
        "at": _iso(at),
        "summary": (
            f"falbudget: overrun on {hold.endpoint}: hold {hold.id} counts"
            f" {_usd(hold.spent_amount)} USD as spent, {_usd(hold.overrun)} more than the"
            f" {_usd(hold.amount)} held"
        ),
        "hold_id": hold.id,
        "endpoint": hold.endpoint,
        "request_id": hold.request_id,
        "held": _usd(hold.amount),
        "spent": _usd(hold.spent_amount),
        "overrun": _usd(hold.overrun),
        "tags": dict(hold.tags),
    }


def refusals_payload(
    rule: RefusalRule, counts: Mapping[tuple[str, str | None], int], at: float, period: int
) -> dict[str, Any]:
    """The JSON body of a refusal-rate alert: the counts of the trailing window."""
    total = sum(counts.values())
    by = [
        {"endpoint": endpoint, "cap": cap, "count": count}
        for (endpoint, cap), count in sorted(
            counts.items(), key=lambda item: (-item[1], item[0][0], item[0][1] or "")
        )
    ]
    return {
        "version": BODY_VERSION,
        "event": "refusals",
        "id": f"refusals:{period}:{rule.count}@{rule.within:g}",
        "at": _iso(at),
        "summary": (
            f"falbudget: {total} requests refused in the last {rule.within:g} s (alert at"
            f" {rule.count})"
        ),
        "count": total,
        "within": rule.within,
        "threshold": rule.count,
        "by": by,
    }


def slack_text(text: str) -> str:
    """``text`` as Slack's ``text`` field reads it literally: &, < and > escaped as Slack asks
    (https://api.slack.com/reference/surfaces/formatting#escaping). Unescaped, a tag value or cap
    name such as ``<!channel>`` notified the whole channel, and ``<https://x|y>`` made a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def body(webhook: Webhook, payload: Mapping[str, Any]) -> bytes:
    """What is posted: the payload itself (json) or Slack's ``{"text": summary}``."""
    if webhook.format == "slack":
        return json.dumps(
            {"text": slack_text(str(payload["summary"]))}, ensure_ascii=False
        ).encode()
    return json.dumps(payload, ensure_ascii=False, sort_keys=True).encode()


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), or None."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # str.isdigit alone takes '²', which float() refuses
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - now)


class Notifier:
    """Posts alerts to ``webhooks`` from one background thread (see the module docstring).

    ``clock`` gives epoch seconds (event times, Retry-After dates, the refusal window);
    ``monotonic`` and ``sleep`` time the retries (tests pass fakes: nothing waits);
    ``random`` the jitter in [0, 1); ``transport`` an httpx transport (tests: none needed, a
    local receiver); ``on_result(webhook name, result)`` counts each attempt (delivered,
    retried, failed) for the metrics."""

    def __init__(
        self,
        webhooks: Sequence[Webhook],
        *,
        refusal_rule: RefusalRule | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        random: Callable[[], float] = random.random,
        timeout: float = 10.0,
        max_attempts: int = 6,
        max_total: float = 300.0,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        queue_size: int = 1000,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        for name, count, top in (
            ("max_attempts", max_attempts, 100),
            ("queue_size", queue_size, 10**6),
        ):
            # queue.Queue(0) has no bound at all: a full queue must drop, never grow
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= top:
                raise ConfigurationError(
                    f"{name}={count!r} is not allowed: a whole number from 1 to {top}"
                )
        for name, value in (("timeout", timeout), ("max_total", max_total)):
            if not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ConfigurationError(f"{name}={value!r} is not allowed: seconds above 0")
        for name, value in (("base_delay", base_delay), ("max_delay", max_delay)):
            # a negative pause made time.sleep raise in the worker at the first retry
            if isinstance(value, bool) or not (
                isinstance(value, int | float) and 0 <= value < math.inf
            ):
                raise ConfigurationError(f"{name}={value!r} is not allowed: seconds, 0 or more")
        try:  # here, not on the worker thread: there it died at the first alert, silently
            import httpx  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                f"webhooks need httpx: {install_hint('metrics')} (or the proxy extra)"
            ) from None
        self.webhooks = tuple(webhooks)
        self.refusal_rule = refusal_rule or RefusalRule()
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._random = random
        self.timeout = float(timeout)
        self.max_attempts = max_attempts
        self.max_total = float(max_total)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._queue: queue.Queue[Delivery | Callable[[], None] | None] = queue.Queue(queue_size)
        self._transport = transport
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._refusal_check_pending = False
        self._claimed_period: int | None = None
        self.guard: Guard | None = None
        self.on_result: Callable[[str, str], object] | None = None

    # -- wiring ------------------------------------------------------------------------------
    def attach(self, guard: Guard) -> None:
        """Listen to ``guard``'s thresholds, overruns and refusals (its callbacks set before
        keep being called first)."""
        self.guard = guard
        before_alert = guard.on_alert
        before_refusal = guard.on_refusal
        before_overrun = guard.on_overrun

        def on_alert(alert: Alert) -> None:
            if before_alert is not None:
                before_alert(alert)
            self.threshold(alert)

        def on_refusal(refusal: Refusal) -> None:
            if before_refusal is not None:
                before_refusal(refusal)
            self.refused(refusal)

        def on_overrun(hold: Hold) -> None:
            if before_overrun is not None:
                before_overrun(hold)
            self.overrun(hold)

        guard.on_alert = on_alert
        guard.on_refusal = on_refusal
        guard.on_overrun = on_overrun
        guard.notifier = self

    def threshold(self, alert: Alert) -> None:
        """A threshold the guard claimed (once per window across processes)."""
        self._post("threshold", threshold_payload(alert, self._clock()))

    def overrun(self, hold: Hold) -> None:
        self._post("overrun", overrun_payload(hold, self._clock()))

    def refused(self, refusal: Refusal) -> None:
        """A refusal: the rate is checked on the background thread, once for any number of
        refusals that arrive while a check is pending."""
        if not any("refusals" in w.events for w in self.webhooks):
            return
        with self._lock:
            if self._refusal_check_pending:
                return
            self._refusal_check_pending = True
        if not self._enqueue(self._check_refusals, "a refusal-rate check"):
            with self._lock:  # not queued: the next refusal queues one (else none ever would)
                self._refusal_check_pending = False

    def _check_refusals(self) -> None:
        with self._lock:
            self._refusal_check_pending = False
        guard = self.guard
        if guard is None:
            return
        rule = self.refusal_rule
        now = self._clock()
        period = math.floor(now / rule.within)
        if self._claimed_period == period:
            return
        try:
            counts = guard.ledger.refusal_counts(since=now - rule.within)
            if sum(counts.values()) < rule.count:
                return
            if not guard.ledger.claim_alert(f"refusals|{period}", f"{rule.count}@{rule.within:g}"):
                self._claimed_period = period
                return
        except FalbudgetError as exc:
            log.error("falbudget: could not check the refusal rate: %s", exc)
            return
        self._claimed_period = period
        self._post("refusals", refusals_payload(rule, counts, now, period))

    # -- the queue ---------------------------------------------------------------------------
    def _post(self, event: Event, payload: dict[str, Any]) -> None:
        for webhook in self.webhooks:
            if event in webhook.events:
                self._enqueue(Delivery(webhook, payload), f"the {event} alert to {webhook.name}")

    def _enqueue(self, job: Delivery | Callable[[], None], what: str) -> bool:
        """Put ``job`` on the queue without waiting (True); a full or closed queue is an ERROR
        with the payload (never silent), and False."""
        if self._closed:
            self._lost(job, f"{what}: the notifier is closed")
            return False
        self._start()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._lost(job, f"{what}: the delivery queue is full ({self._queue.maxsize} waiting)")
            return False
        return True

    def _lost(self, job: Delivery | Callable[[], None] | None, why: str) -> None:
        if isinstance(job, Delivery):
            log.error(
                "falbudget: webhook %s: not delivered: %s; payload: %s",
                job.webhook.name,
                why,
                json.dumps(job.payload, sort_keys=True),
            )
            self._count(job.webhook, "failed")
        elif job is not None:
            log.error("falbudget: %s", why)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="falbudget-webhooks", daemon=True
                )
                self._thread.start()
                # a process that ends without guard.close() still delivers (or logs) its queue
                atexit.register(self.close)

    def _run(self) -> None:
        import httpx

        with httpx.Client(
            timeout=self.timeout, transport=self._transport, trust_env=False
        ) as client:
            while True:
                job = self._queue.get()
                try:
                    if job is None:
                        return
                    if isinstance(job, Delivery):
                        self.deliver(job, client)
                    else:
                        job()
                except Exception as exc:  # the worker must outlive any one job
                    if isinstance(job, Delivery):  # given up, with its payload: never silent
                        self._give_up(job, f"{type(exc).__name__} while posting", 1)
                    else:
                        log.exception("falbudget: webhook worker: a job failed")
                finally:
                    self._queue.task_done()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued job is done (tests, shutdown); False if ``timeout`` passed."""
        done = self._queue.all_tasks_done
        with done:
            return done.wait_for(lambda: self._queue.unfinished_tasks == 0, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Deliver what is queued (for at most ``timeout`` s in all, the wait for the worker
        to stop included), then stop; what is left is logged at ERROR with its payload."""
        if self._closed:
            return
        self._closed = True
        # the exit hook held this notifier, its guard and its ledger for the life of the process
        atexit.unregister(self.close)
        if self._thread is None:
            return
        deadline = self._monotonic() + timeout
        self.flush(timeout)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            self._lost(job, "still queued when the notifier closed")
            self._queue.task_done()
        self._queue.put(None)
        # one bound for the whole close (the atexit hook's promise): a delivery still retrying
        # is not waited for a second ``timeout``
        self._thread.join(max(0.0, deadline - self._monotonic()))

    # -- delivery ----------------------------------------------------------------------------
    def delay(self, attempt: int) -> float:
        """Seconds before attempt ``attempt + 1``: exponential (base_delay * 2**(attempt-1),
        at most max_delay) with equal jitter (half fixed, half random)."""
        step = min(float(self.max_delay), float(self.base_delay) * 2.0 ** (attempt - 1))
        return step / 2 + float(self._random()) * step / 2

    def deliver(self, job: Delivery, client: httpx.Client) -> bool:
        """Post ``job`` until it is delivered or the bound is reached; True when delivered."""
        import httpx

        webhook = job.webhook
        content = body(webhook, job.payload)
        headers = {
            "content-type": "application/json",
            "user-agent": "falbudget-webhooks",
            "x-falbudget-event": str(job.payload["event"]),
            "x-falbudget-delivery": str(job.payload["id"]),
            **webhook.headers,
        }
        started = self._monotonic()
        why = ""
        for attempt in range(1, self.max_attempts + 1):
            wait: float | None = None
            try:
                answer = client.post(webhook.url, content=content, headers=headers)
            except httpx.HTTPError as exc:
                why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if answer.status_code < 300:
                    self._count(webhook, "delivered")
                    return True
                why = f"HTTP {answer.status_code}"
                if answer.status_code not in RETRYABLE:
                    self._give_up(job, f"{why}, which no retry changes", attempt)
                    return False
                wait = retry_after(answer.headers.get("retry-after"), self._clock())
            if attempt == self.max_attempts:
                break
            pause = self.delay(attempt)
            if wait is not None:
                pause = max(pause, wait)
            if self._monotonic() - started + pause > self.max_total:
                bound = f"the next attempt would pass max_total {self.max_total:g} s"
                self._give_up(job, f"{why}; {bound}", attempt)
                return False
            log.warning(
                "falbudget: webhook %s: attempt %d failed (%s); retrying in %.1f s",
                webhook.name,
                attempt,
                why,
                pause,
            )
            self._count(webhook, "retried")
            self._sleep(pause)
        self._give_up(job, f"{why}; {self.max_attempts} attempts made", self.max_attempts)
        return False

    def _give_up(self, job: Delivery, why: str, attempts: int) -> None:
        log.error(
            "falbudget: webhook %s: gave up after %d attempt(s): %s; payload: %s",
            job.webhook.name,
            attempts,
            why,
            json.dumps(job.payload, sort_keys=True),
        )
        self._count(job.webhook, "failed")

    def _count(self, webhook: Webhook, result: str) -> None:
        if self.on_result is not None:
            try:
                self.on_result(webhook.name, result)
            except Exception:
                log.exception("falbudget: counting a webhook delivery failed")


__all__ = [
    "EVENTS",
    "Delivery",
    "Notifier",
    "RefusalRule",
    "Webhook",
    "body",
    "check_url",
    "overrun_payload",
    "refusals_payload",
    "retry_after",
    "slack_text",
    "threshold_payload",
]
