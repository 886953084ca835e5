"""Guarding fal_client: ``guard.wrap(client)`` returns the same client with every call that can
spend going through the guard first.

A refusal (BudgetExceeded, UnknownEndpoint, InvalidArguments) is raised before any HTTP request
and is not an httpx error, so fal_client's retry loop never sees it. What happens to the hold
when a call fails is decided by :func:`failure_policy`, one function for sync and async; the table
is in docs/guard.md.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from falbudget.errors import ConfigurationError, UnknownEndpoint, install_hint
from falbudget.guard import _idempotency

if TYPE_CHECKING:  # pragma: no cover
    from falbudget.guard.core import Guard, Hold

log = logging.getLogger("falbudget.guard")

Action = Literal["settle", "release", "keep"]
SPENDING = ("run", "subscribe", "submit", "stream")
REALTIME = ("realtime", "ws_connect")


def failure_policy(exc: BaseException, *, accepted: bool, call: str) -> Action:
    """What a failed call does to its hold.

    ``accepted``: fal's queue had accepted the request (submit returned a request id).
    ``call``: the client method (run, subscribe, submit, stream, get).
    settle: count the quote as spent; release: give it back; keep: leave the hold submitted, to
    be settled, released or expired (counted as spent) later and listed for reconciliation.
    """
    from fal_client.client import FalClientHTTPError, FalClientTimeoutError

    if isinstance(exc, FalClientHTTPError):
        return answer_policy(exc.status_code, accepted=accepted)
    if isinstance(exc, FalClientTimeoutError):
        # no request id: the submit was sent (it may still be queued at fal) and its answer did
        # not come in time; with one, fal_client cancels, but the job may already run
        return "keep"
    return transport_policy(exc, accepted=accepted, call=call)


def answer_policy(status: int, *, accepted: bool) -> Action:
    """What fal's error answer ``status`` (400 or more) does to a hold: the part of
    :func:`failure_policy` that reads an HTTP status, shared with ``falbudget proxy``."""
    if status >= 500:
        return "release"  # fal: server errors are never billed
    if status == 422:
        return "settle"  # may be billed when GPU time was spent: spent until reconciled
    return "keep" if accepted else "release"  # refused (401, 403, 404, 429...) before work


def transport_policy(exc: BaseException, *, accepted: bool, call: str) -> Action:
    """What an httpx transport error (no answer from fal) does to a hold: the part of
    :func:`failure_policy` that reads a lost connection, shared with ``falbudget proxy``."""
    import httpx

    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return "keep" if accepted else "release"  # nothing reached fal
    if isinstance(exc, httpx.TransportError):
        # sent, then the answer was lost: a run may have run; a submit may be queued (and
        # fal_client may have retried it: one hold for what may be several jobs)
        if accepted:
            return "keep"
        return "settle" if call in ("run", "stream") else "keep"
    return "keep" if accepted else "release"


NO_REQUEST_ID = "no fal request id is known to fetch its result by"


def _unavailable(hold: Hold, why: str) -> Exception:
    """A replay that cannot return the first request's outcome: IdempotencyInProgress while its
    hold is open, IdempotencyReplayed once closed. Raised before any HTTP request."""
    return _idempotency.unavailable(hold.idempotency_key or "", hold._row, why)


def _finish(hold: Hold, exc: BaseException, call: str) -> None:
    # accepted: fal's queue returned a request id (a hold is marked submitted before the request
    # leaves, with no request id yet, so its state alone does not say fal accepted it)
    action = failure_policy(exc, accepted=hold.request_id is not None, call=call)
    try:
        if action == "settle":
            hold.settle()
        elif action == "release":
            hold.release()
    except Exception:  # never mask the caller's error with a ledger error
        log.exception("falbudget: could not %s hold %s after %r", action, hold.id, exc)


async def _afinish(hold: Hold, exc: BaseException, call: str) -> None:
    import asyncio

    await asyncio.to_thread(_finish, hold, exc, call)


@functools.cache
def _signature(function: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(function)


def _binder(method: Callable[..., Any]) -> Callable[..., tuple[str, Mapping[str, Any]]]:
    """A function giving (application, arguments) from a call's args, however they were passed."""
    signature = _signature(getattr(method, "__func__", method))

    def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, Mapping[str, Any]]:
        bound = signature.bind(None, *args, **kwargs)  # None stands for self
        return bound.arguments["application"], bound.arguments.get("arguments") or {}

    return bind


def wrap_client(guard: Guard, client: Any, tags: Mapping[str, str]) -> Any:
    try:
        import fal_client
    except ImportError:
        raise ConfigurationError(f"guard.wrap needs fal-client: {install_hint('fal')}") from None
    if isinstance(client, fal_client.AsyncClient):
        return GuardedAsyncClient(guard, client, dict(tags))
    if isinstance(client, fal_client.SyncClient):
        return GuardedSyncClient(guard, client, dict(tags))
    raise ConfigurationError(
        f"guard.wrap takes a fal_client.SyncClient or AsyncClient, not {type(client).__name__}"
    )


class _GuardedBase:
    """Shared by the sync and async faces: options, pass-through of everything not spending."""

    _spending: tuple[str, ...] = ()

    def __init__(
        self,
        guard: Guard,
        client: Any,
        tags: dict[str, str],
        idempotency_key: str | None = None,
    ) -> None:
        self._guard = guard
        self._client = client
        self._tags = tags
        self._key = idempotency_key
        for name in SPENDING:
            original = getattr(client, name)
            setattr(self, name, functools.wraps(original)(self._guarded(name, original)))
        for name in REALTIME:
            original = getattr(client, name)
            setattr(self, name, functools.wraps(original)(self._realtime(original)))

    @property
    def client(self) -> Any:
        """The fal_client client underneath (its calls are not guarded)."""
        return self._client

    def with_options(self, *, idempotency_key: str | None = None, **tags: str) -> Any:
        """The same guarded client with more tags, or an idempotency key for one request:
        ``fal.with_options(idempotency_key="job-7", project="alpha").run(...)``. The same
        request again under the key sends nothing and returns the first one's handle or result;
        another request under it raises IdempotencyConflict."""
        return type(self)(self._guard, self._client, {**self._tags, **tags}, idempotency_key)

    def __getattr__(self, name: str) -> Any:
        # status, result, cancel, get_handle, upload*: they do not start work, pass them through
        return getattr(self._client, name)

    def _reserve(self, method: Callable[..., Any], args: tuple[Any, ...], kwargs: Any) -> Any:
        endpoint, arguments = _binder(method)(args, kwargs)
        return self._guard.reserve(endpoint, arguments, idempotency_key=self._key, **self._tags)

    def _check_realtime(self, application: str) -> None:
        if application not in self._guard.table:
            refused = UnknownEndpoint(
                f"{application} (realtime connections are refused unless the endpoint is priced)"
            )
            # recorded as every other refusal (metrics, alerts, the dashboard read it)
            self._guard._record_refusal(
                refused, application, {**self._tags, "endpoint": application}
            )
            raise refused
        log.warning(
            "falbudget: realtime messages to %s are not metered one by one; the guard does not"
            " hold money for them",
            application,
        )

    def _guarded(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        raise NotImplementedError

    def _realtime(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def realtime(application: str, *args: Any, **kwargs: Any) -> Any:
            self._check_realtime(application)
            return original(application, *args, **kwargs)

        return realtime


class GuardedSyncClient(_GuardedBase):
    """A fal_client.SyncClient whose run, subscribe, submit and stream are guarded."""

    def _guarded(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        if name == "stream":
            return self._stream(original)

        def call(*args: Any, **kwargs: Any) -> Any:
            reservation = self._reserve(original, args, kwargs)  # refusals: before any HTTP
            hold = reservation.acquire()
            if hold.replayed:
                return self._replay(name, hold, kwargs)
            if name == "subscribe":
                kwargs["on_enqueue"] = _marking(hold, kwargs.get("on_enqueue"))
            try:
                hold.mark_submitted()  # before any byte leaves: a death from here counts as spent
                with hold.keepalive():
                    result = original(*args, **kwargs)
            except BaseException as exc:
                _finish(hold, exc, name)
                raise
            if name == "submit":
                hold.mark_submitted(result.request_id)
                return GuardedSyncHandle(result, hold)
            hold.settle_billed()
            return result

        return call

    def _replay(self, name: str, hold: Hold, kwargs: Mapping[str, Any]) -> Any:
        """The same request again under its idempotency key: nothing is sent; the first
        request's handle (submit) or its result fetched by request id (run, subscribe)."""
        if hold.request_id is None:
            raise _unavailable(hold, NO_REQUEST_ID)
        handle = GuardedSyncHandle(self._client.get_handle(hold.endpoint, hold.request_id), hold)
        if name == "submit":
            return handle
        return handle.get(**{k: kwargs[k] for k in ("interval",) if k in kwargs})

    def _stream(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def stream(*args: Any, **kwargs: Any) -> Iterator[Any]:
            hold = self._reserve(original, args, kwargs).acquire()
            if hold.replayed:
                raise _unavailable(hold, "a stream's events cannot be fetched again")
            return _guarded_iter(hold, original(*args, **kwargs))

        return stream


def _guarded_iter(hold: Hold, events: Iterator[Any]) -> Iterator[Any]:
    try:
        hold.mark_submitted()  # the POST leaves on the first read of ``events``
        with hold.keepalive():
            yield from events
    except GeneratorExit:
        hold.settle()  # the consumer stopped early: the request ran, fal bills it
        raise
    except BaseException as exc:
        _finish(hold, exc, "stream")
        raise
    hold.settle()


def _marking(hold: Hold, user: Callable[[str], Any] | None) -> Callable[[str], Any]:
    """An on_enqueue callback that marks the hold submitted, then calls the user's."""

    def on_enqueue(request_id: str) -> Any:
        hold.mark_submitted(request_id)
        return user(request_id) if user is not None else None

    return on_enqueue


class GuardedSyncHandle:
    """fal_client's SyncRequestHandle; ``get()`` settles or releases the hold of the submit."""

    def __init__(self, handle: Any, hold: Hold) -> None:
        self._handle = handle
        self.hold = hold

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        if self.hold.closed:  # a replay of a request whose hold is closed: nothing to decide
            return self._handle.get(*args, **kwargs)
        try:
            with self.hold.keepalive():
                result = self._handle.get(*args, **kwargs)
        except BaseException as exc:
            _finish(self.hold, exc, "get")
            raise
        self.hold.settle_billed()
        return result

    def iter_events(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with self.hold.keepalive():
            yield from self._handle.iter_events(*args, **kwargs)


class GuardedAsyncClient(_GuardedBase):
    """A fal_client.AsyncClient whose run, subscribe, submit and stream are guarded; the ledger
    steps run off the event loop."""

    async def _areserve(
        self, method: Callable[..., Any], args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        """``_reserve`` in a thread: a refusal reads and writes the ledger (the cap's figures,
        the record of the refusal), off the event loop as every other ledger step."""
        return await asyncio.to_thread(self._reserve, method, args, kwargs)

    def _guarded(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        if name == "stream":
            return self._stream(original)

        async def call(*args: Any, **kwargs: Any) -> Any:
            hold = await (await self._areserve(original, args, kwargs)).aacquire()
            if hold.replayed:
                return await self._replay(name, hold, kwargs)
            if name == "subscribe":
                kwargs["on_enqueue"] = _amarking(hold, kwargs.get("on_enqueue"))
            try:
                await hold.amark_submitted()  # before any byte leaves, as in the sync client
                async with hold.akeepalive():
                    result = await original(*args, **kwargs)
            except BaseException as exc:
                await _afinish(hold, exc, name)
                raise
            if name == "submit":
                await hold.amark_submitted(result.request_id)
                return GuardedAsyncHandle(result, hold)
            await hold.asettle_billed()
            return result

        return call

    async def _replay(self, name: str, hold: Hold, kwargs: Mapping[str, Any]) -> Any:
        """The asyncio twin of GuardedSyncClient._replay."""
        if hold.request_id is None:
            raise _unavailable(hold, NO_REQUEST_ID)
        fal_handle = await self._client.get_handle(hold.endpoint, hold.request_id)
        handle = GuardedAsyncHandle(fal_handle, hold)
        if name == "submit":
            return handle
        return await handle.get(**{k: kwargs[k] for k in ("interval",) if k in kwargs})

    def _stream(self, original: Callable[..., Any]) -> Callable[..., Any]:
        async def stream(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            hold = await (await self._areserve(original, args, kwargs)).aacquire()
            if hold.replayed:
                raise _unavailable(hold, "a stream's events cannot be fetched again")
            try:
                await hold.amark_submitted()  # the POST leaves on the first read
                async with hold.akeepalive():
                    async for event in original(*args, **kwargs):
                        yield event
            except GeneratorExit:
                await hold.asettle()
                raise
            except BaseException as exc:
                await _afinish(hold, exc, "stream")
                raise
            await hold.asettle()

        return stream


def _amarking(hold: Hold, user: Callable[[str], Any] | None) -> Callable[[str], Any]:
    async def on_enqueue(request_id: str) -> None:
        await hold.amark_submitted(request_id)
        if user is not None:
            outcome = user(request_id)
            if inspect.isawaitable(outcome):
                await outcome

    return on_enqueue


class GuardedAsyncHandle:
    """fal_client's AsyncRequestHandle; ``await get()`` settles or releases the hold."""

    def __init__(self, handle: Any, hold: Hold) -> None:
        self._handle = handle
        self.hold = hold

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        if self.hold.closed:  # a replay of a request whose hold is closed: nothing to decide
            return await self._handle.get(*args, **kwargs)
        try:
            async with self.hold.akeepalive():
                result = await self._handle.get(*args, **kwargs)
        except BaseException as exc:
            await _afinish(self.hold, exc, "get")
            raise
        await self.hold.asettle_billed()
        return result

    async def iter_events(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async with self.hold.akeepalive():
            async for event in self._handle.iter_events(*args, **kwargs):
                yield event
