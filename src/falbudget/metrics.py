"""Prometheus metrics (``/metrics``) read from the ledger at scrape time.

Every figure about spend, holds and refusals is read from the ledger when Prometheus scrapes, by a
custom collector: every worker and process on one ledger reports the same totals, whichever of
them is scraped. Three families are per process and say so in their help text: the ledger
latency histogram (the calls this process made), the proxy's requests by outcome and the webhook
deliveries. docs/metrics.md lists every metric and its labels.

Money is exposed in USD. Prometheus samples are floating point by format: the ledger's integer
micro-USD are turned into a float only here, at the edge, and are exact to the micro-USD below
2**53 micro-USD (9 billion USD). No sample is ever +Inf or NaN: a bucket without a limit (the
global tracker) has no limit or remaining series.

Needs ``falbudget[metrics]`` (prometheus_client).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from falbudget.errors import ConfigurationError, FalbudgetError, install_hint
from falbudget.guard.caps import GLOBAL_TOTAL, Cap
from falbudget.ledger.base import VISITOR_TAGS, HoldGroup, Ledger
from falbudget.money import from_micros

try:
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
    from prometheus_client.registry import Collector
except ImportError:  # pragma: no cover - the extra is missing
    raise ConfigurationError(f"falbudget metrics need {install_hint('metrics')}") from None

if TYPE_CHECKING:  # pragma: no cover
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from falbudget.guard.core import Guard

log = logging.getLogger("falbudget.metrics")

RECENT = 3600.0
"""The trailing window (seconds) of the ``*_recent`` gauges: admissions, refusals, overruns and
expired holds of the last hour. Gauges over a trailing window, not counters: refusals are pruned
after 31 days, and summing every hold since the ledger began at each scrape would read the whole
history; a window reads only its own rows (the ledgers index holds and refusals by time)."""

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
"""Seconds: a SQLite step takes well under a millisecond, a PostgreSQL one a round trip."""


def _usd(micros: int | Decimal) -> float:
    """Micro-USD (or Decimal USD) as the float a Prometheus sample is."""
    if isinstance(micros, Decimal):
        return float(micros)
    return float(from_micros(micros))


def cap_name(cap: Cap) -> str:
    """The ``cap`` label: the cap's name, else its label ('user day cap 5.00'), as refusals
    record it (:meth:`Cap.label` without a bucket)."""
    return cap.label()


class LedgerCollector(Collector):
    """Reads the ledger at each scrape (see the module docstring)."""

    def __init__(self, guard: Guard, recent: float = RECENT) -> None:
        self.guard = guard
        self.recent = float(recent)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "falbudget_ledger_up",
            "1 when this scrape read the ledger, 0 when the ledger could not be read (the other"
            " ledger figures are then left out of this scrape)",
        )
        try:
            families = list(self._read())
        except FalbudgetError as exc:
            log.warning("falbudget: /metrics could not read the ledger: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        except Exception:  # a driver's own error, a row that does not decode: still an answer
            log.exception("falbudget: /metrics could not read the ledger")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> Iterable[Metric]:
        guard = self.guard
        labels = ["cap", "scope", "window", "bucket"]
        spent = GaugeMetricFamily(
            "falbudget_cap_spent_usd",
            "Settled spend in the cap's current window, USD",
            labels=labels,
        )
        held = GaugeMetricFamily(
            "falbudget_cap_held_usd",
            "Amount held for requests in flight in the cap's current window, USD",
            labels=labels,
        )
        remaining = GaugeMetricFamily(
            "falbudget_cap_remaining_usd",
            "What the cap still admits in its current window (limit - spent - held, at least 0),"
            " USD",
            labels=labels,
        )
        limit = GaugeMetricFamily(
            "falbudget_cap_limit_usd", "The cap's limit per window, USD", labels=labels
        )
        for status in guard.status():
            cap = status.cap
            values = [cap_name(cap), status.bucket.partition("|")[0], cap.window, status.bucket]
            spent.add_metric(values, _usd(status.spent))
            held.add_metric(values, _usd(status.held))
            remaining.add_metric(values, _usd(status.remaining))
            limit.add_metric(values, _usd(cap.limit))
        total = guard.ledger.totals([GLOBAL_TOTAL])[0]
        global_spent = GaugeMetricFamily(
            "falbudget_spent_usd", "Settled spend of every request since the ledger began, USD"
        )
        global_spent.add_metric([], _usd(total.settled))
        global_held = GaugeMetricFamily(
            "falbudget_held_usd", "Amount held now for every request in flight, USD"
        )
        global_held.add_metric([], _usd(total.held))
        yield from (spent, held, remaining, limit, global_spent, global_held)
        yield from self._recent()

    def _recent(self) -> Iterable[Metric]:
        guard = self.guard
        now = guard._now()
        since = now - self.recent
        window = f"in the last {self.recent:g} s"
        admissions: dict[tuple[str, str], int] = {}
        overruns: dict[str, int] = {}
        overrun: dict[str, int] = {}
        expired: dict[str, int] = {}
        for group in guard.ledger.summarize(since=since):
            endpoint = group.endpoint
            names = [cap_name(cap) for cap in guard.caps if _applied(cap, group)]
            for name in names or [""]:
                key = (endpoint, name)
                admissions[key] = admissions.get(key, 0) + group.holds
            overruns[endpoint] = overruns.get(endpoint, 0) + group.overruns
            overrun[endpoint] = overrun.get(endpoint, 0) + group.overrun
            expired[endpoint] = expired.get(endpoint, 0) + group.expired
        admitted = GaugeMetricFamily(
            "falbudget_admissions_recent",
            f"Requests admitted (holds created) {window}, by endpoint and the cap they counted"
            ' against (once under each cap that applied; cap "" when none did)',
            labels=["endpoint", "cap"],
        )
        for (endpoint, name), count in sorted(admissions.items()):
            admitted.add_metric([endpoint, name], count)
        refused = GaugeMetricFamily(
            "falbudget_refusals_recent",
            f'Requests the guard refused {window}, by endpoint and the cap that refused (cap ""'
            " when none did: unknown endpoint, invalid arguments, idempotency conflict)",
            labels=["endpoint", "cap"],
        )
        counts = guard.ledger.refusal_counts(since=since)
        for (endpoint, capped), count in sorted(((k[0], k[1] or ""), n) for k, n in counts.items()):
            refused.add_metric([endpoint, capped], count)
        over_n = GaugeMetricFamily(
            "falbudget_overruns_recent",
            f"Holds created {window} that count more as spent than was held (fal billed more"
            " than quoted), by endpoint",
            labels=["endpoint"],
        )
        over_usd = GaugeMetricFamily(
            "falbudget_overrun_usd_recent",
            f"How much more than held the holds created {window} count as spent, USD",
            labels=["endpoint"],
        )
        gone = GaugeMetricFamily(
            "falbudget_expired_holds_recent",
            f"Holds created {window} that expired after they were submitted (counted as spent,"
            " to reconcile), by endpoint",
            labels=["endpoint"],
        )
        for endpoint in sorted(overruns):
            over_n.add_metric([endpoint], overruns[endpoint])
            over_usd.add_metric([endpoint], _usd(overrun[endpoint]))
            gone.add_metric([endpoint], expired[endpoint])
        yield from (admitted, refused, over_n, over_usd, gone)


def _applied(cap: Cap, group: HoldGroup) -> bool:
    """Whether ``cap`` applied to the holds of ``group`` (a :meth:`Ledger.summarize` group)."""
    bucket = cap.bucket(group.tags, group.first)
    if bucket is not None:
        return bucket in group.buckets
    # groups leave the visitor tags and their buckets out (shared_part): a cap on every value of
    # one that refuses a request without it applied to each hold admitted, as each carried it
    return cap.tag in VISITOR_TAGS and cap.scope == cap.tag and cap.untagged == "refuse"


class TimedLedger:
    """A ledger whose every call is timed into a histogram (``operation`` label: the method),
    then answered by the ledger it wraps; attributes that are not methods pass through."""

    def __init__(self, inner: Ledger, histogram: Histogram) -> None:
        self._inner = inner
        self._histogram = histogram

    @property
    def inner(self) -> Ledger:
        return self._inner

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._inner, name)
        if not callable(found) or name.startswith("_"):
            return found
        observe = self._histogram.labels(operation=name).observe

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return found(*args, **kwargs)
            finally:
                observe(time.perf_counter() - started)

        return timed


class Metrics:
    """The metrics of one process for one guard: a registry of its own (never the global one),
    the ledger collector, and the per-process families.

    ``instrument()`` wraps the guard's ledger so that its calls are timed (the latency
    histogram); ``route()`` is the Starlette route serving the exposition; ``exposition()`` the
    text itself."""

    def __init__(self, guard: Guard, *, recent: float = RECENT) -> None:
        if (
            isinstance(recent, bool)
            or not isinstance(recent, int | float)
            or not 0 < recent <= 400 * 86400  # False for nan
        ):
            raise ConfigurationError(
                f"recent={recent!r} is not allowed: a number of seconds above 0 and at most"
                " 400 days"
            )
        self.guard = guard
        self.registry = CollectorRegistry(auto_describe=False)
        self.ledger_latency = Histogram(
            "falbudget_ledger_latency_seconds",
            "Time of each ledger call this process made, by operation (per process: each worker"
            " reports its own calls)",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.proxy_requests = Counter(
            "falbudget_proxy_requests",
            "Requests this proxy process answered, by outcome and reason (per process: sum over"
            " the workers)",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.webhook_deliveries = Counter(
            "falbudget_webhook_deliveries",
            "Webhook delivery attempts of this process, by webhook and result (delivered,"
            " retried, failed: given up after the bound) (per process)",
            ["webhook", "result"],
            registry=self.registry,
        )
        self.registry.register(LedgerCollector(guard, recent))

    def instrument(self) -> None:
        """Time every call of the guard's ledger from now on (once; a second call is a no-op)."""
        if not isinstance(self.guard.ledger, TimedLedger):
            timed = TimedLedger(self.guard.ledger, self.ledger_latency)
            self.guard.ledger = cast(Ledger, timed)

    def count_request(self, decision: str) -> None:
        """Count a proxy request by its logged decision ('held', 'refused: budget_exceeded',
        'fal refused: release'): outcome before the colon, reason after it."""
        outcome, _, reason = decision.partition(":")
        self.proxy_requests.labels(
            outcome=outcome.strip().replace(" ", "_") or "unknown",
            reason=reason.strip().replace(" ", "_"),
        ).inc()

    def count_delivery(self, webhook: str, result: str) -> None:
        """Count a webhook attempt (``falbudget.alerts.Notifier.on_result``)."""
        self.webhook_deliveries.labels(webhook=webhook, result=result).inc()

    def exposition(self) -> bytes:
        """The text Prometheus scrapes (reads the ledger: blocking)."""
        return generate_latest(self.registry)

    def endpoint(self) -> Callable[[Request], Awaitable[Response]]:
        """A Starlette endpoint serving the exposition; the ledger is read off the event loop."""
        from starlette.responses import Response

        async def serve(request: Request) -> Response:
            body = await asyncio.to_thread(self.exposition)
            return Response(body, media_type=CONTENT_TYPE_LATEST)

        return serve

    def route(self, path: str = "/metrics") -> Route:
        from starlette.routing import Route

        return Route(path, self.endpoint(), methods=["GET"])


__all__ = ["RECENT", "LedgerCollector", "Metrics", "TimedLedger", "cap_name"]
