"""HTTP client of an ``auditledger serve`` server, sync and async, on httpx.

    from auditledger.client import Client
    with Client("http://127.0.0.1:8080", token="alt_...") as client:
        client.record("FLOW", "UPDATE", Actor.user("anna@acme.io"), details={"namespace": "company.team"})

``record`` validates the event (a bad one raises :class:`ValidationError`
at the call site) and queues it; ``record_many`` sends at once and returns
the receipts. Every event gets an ``idempotency_key`` (a random UUID unless
the caller gives one), so a batch that is retried after a lost answer is
stored once: the server answers the known keys with their first id and seq.
Requests are retried on 429, 502-504 and connection errors with exponential
backoff, honouring ``Retry-After``.

The background sender (a thread for :class:`Client`, a task for
:class:`AsyncClient`) sleeps until an event is queued, then lingers until
``batch_size`` events are queued or ``flush_interval`` seconds have passed
since the oldest one, and sends what is queued at that moment. It does not
chase events that arrive while a batch is in flight: they wait for the next
linger. On a busy application that means one request per ``flush_interval``
rather than one per event, which is what keeps the sender's CPU (httpx,
JSON) and the server's commits away from the application's requests.

Delivery: events leave the queue only once the server has stored them. A
batch that fails after the retries stays at the head of the queue, the error
is kept in ``errors`` and the sender tries again after a backoff. The queue
is bounded (``max_queue``): when the server has been unreachable that long,
``record`` raises :class:`StoreError` instead of growing without limit.
``flush()`` sends what is queued and raises if it cannot; ``close()`` flushes
and stops the sender. A :class:`Client` still open at interpreter exit is
flushed by an ``atexit`` hook; a killed process loses what it had queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import httpx
import orjson

from auditledger import background
from auditledger.errors import (
    AuditLedgerError,
    AuthError,
    ConfigError,
    ConflictError,
    NotFoundError,
    StoreError,
    ValidationError,
)
from auditledger.model import Actor, EventInput, event_input, format_date
from auditledger.wire import event_mapping, refuse_source

_RETRY_STATUS = frozenset({429, 502, 503, 504})
_JSON = {"content-type": "application/json"}


def event_dict(
    resource_type: str,
    action: str,
    actor: Actor | Mapping[str, Any],
    *,
    details: Mapping[str, Any] | None = None,
    before: Any = None,
    after: Any = None,
    outcome: str = "success",
    occurred_at: datetime | str | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """One event as the ingest route takes it, with an idempotency key."""
    event: dict[str, Any] = {
        "resource_type": resource_type,
        "action": action,
        "actor": actor.to_dict() if isinstance(actor, Actor) else dict(actor),
        "outcome": str(outcome),
        "idempotency_key": idempotency_key or str(uuid.uuid4()),
    }
    if details:
        event["details"] = dict(details)
    if before is not None:
        event["before"] = before
    if after is not None:
        event["after"] = after
    if occurred_at is not None:
        event["occurred_at"] = format_date(occurred_at) if isinstance(occurred_at, datetime) else occurred_at
    return event


def _keyed(event: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(event)
    if isinstance(out.get("actor"), Actor):
        out["actor"] = out["actor"].to_dict()
    out.setdefault("idempotency_key", str(uuid.uuid4()))
    return out


def _wire(raw: Mapping[str, Any] | EventInput) -> dict[str, Any]:
    """Validate one event here, where the caller can see the error, and shape it for the ingest route."""
    event = event_input(raw)
    refuse_source(event)
    return event_mapping(event)


def _body(events: list[dict[str, Any]]) -> bytes:
    """The ingest body, encoded by orjson (several times faster than the json module httpx uses)."""
    return orjson.dumps({"events": events}, option=orjson.OPT_NON_STR_KEYS)


def _receipts(response: httpx.Response) -> list[dict[str, Any]]:
    """The receipts of an ingest answer; anything else (a proxy's page) is a StoreError, not a dead sender."""
    try:
        receipts = response.json()["receipts"]
    except (ValueError, KeyError, TypeError):
        raise StoreError(f"the server's answer ({response.status_code}) holds no receipts") from None
    if not isinstance(receipts, list):
        raise StoreError(f"the server's answer ({response.status_code}) holds no receipts")
    return receipts


class _Queue:
    """Events waiting for a client's background sender, oldest first, bounded (both clients use it)."""

    def __init__(self, batch_size: int, flush_interval: float, max_queue: int) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        if flush_interval < 0:
            raise ConfigError(f"flush_interval must not be negative, got {flush_interval}")
        if max_queue < batch_size:
            raise ConfigError(f"max_queue ({max_queue}) must be at least batch_size ({batch_size})")
        self.events: deque[tuple[str, dict[str, Any]]] = deque()
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.oldest = 0.0  # monotonic time the linger of the queued events started

    def admit(self, tenant: str, batch: list[dict[str, Any]], errors: list[AuditLedgerError]) -> bool:
        """Append a validated batch, or refuse it when the queue is full; whether the sender should wake."""
        waiting = len(self.events)
        if waiting + len(batch) > self.max_queue:
            last = f"; last error: {errors[-1]}" if errors else ""
            raise StoreError(
                f"the client's queue is full ({waiting} events, max_queue={self.max_queue}): "
                f"the server is not taking them{last}"
            )
        self.events.extend((tenant, event) for event in batch)
        if waiting == 0:
            self.oldest = time.monotonic()
            return True  # the linger starts now
        return waiting < self.batch_size <= len(self.events)  # a full batch goes at once

    def due_in(self) -> float | None:
        """Seconds until the queued events are due (0 or less: now); None when nothing is queued."""
        if not self.events:
            return None
        if len(self.events) >= self.batch_size:
            return 0.0
        return self.oldest + self.flush_interval - time.monotonic()

    def head(self, limit: int) -> tuple[str, list[dict[str, Any]]]:
        """The first run of one tenant's events, at most ``limit`` of them (they stay queued)."""
        tenant = self.events[0][0]
        batch = []
        for owner, event in itertools.islice(self.events, min(limit, self.batch_size)):
            if owner != tenant:
                break
            batch.append(event)
        return tenant, batch

    def drop(self, count: int) -> None:
        """Forget the ``count`` oldest events, now stored; what came in meanwhile waits for its own linger."""
        for _ in range(count):
            self.events.popleft()
        if self.events:
            self.oldest = time.monotonic()


_log = logging.getLogger("auditledger.client")


def _not_delivered(client: Client, exc: AuditLedgerError) -> None:
    _log.error("auditledger client: %d queued events not delivered at exit: %s", client.pending, exc)


# Clients nobody closed send what they still hold at a normal interpreter exit.
_open_clients: weakref.WeakSet[Client] = background.closed_at_exit(_not_delivered)


def _error(response: httpx.Response) -> AuditLedgerError:
    try:
        body = response.json()
        message, field = str(body.get("message", response.text)), body.get("field")
    except ValueError:
        message, field = response.text[:200], None
    status = response.status_code
    if status in (400, 413, 422):
        return ValidationError(str(field or "request"), message)
    if status in (401, 403):
        return AuthError(message, status)
    if status == 404:
        return NotFoundError(message)
    if status == 409:
        return ConflictError(message)
    return StoreError(f"server answered {status}: {message}")


class _Policy:
    """Retry timing: exponential backoff with jitter, or the server's Retry-After."""

    def __init__(self, max_retries: int, backoff: float, max_backoff: float) -> None:
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            header = response.headers.get("retry-after", "")
            if header.isdigit():
                return min(float(header), self.max_backoff)
        return background.backoff(attempt, self.backoff, self.max_backoff)


def _params(
    q: str | None, size: int, page: int, cursor: str | None, extra: Mapping[str, str] | None
) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = [("size", str(size)), ("page", str(page))]
    if q:
        params.append(("q", q))
    if cursor:
        params.append(("cursor", cursor))
    params += list((extra or {}).items())
    return params


class Client:
    """A synchronous client with a background sender thread (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        tenant: str = "main",
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_queue: int = 100_000,
        max_retries: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 10.0,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._queue = _Queue(batch_size, flush_interval, max_queue)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self.tenant = tenant
        self.batch_size = batch_size
        self._policy = _Policy(max_retries, backoff, max_backoff)
        self._lock = threading.Lock()  # guards the queue: request threads append, the sender takes
        self._ready = threading.Condition(self._lock)  # the sender sleeps on it
        self._sending = threading.Lock()  # one sender at a time: the background thread or flush()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.errors: list[AuditLedgerError] = []  # failures of background sends, newest last
        _open_clients.add(self)

    # ------------------------------------------------------------ HTTP

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt >= self._policy.max_retries:
                    raise StoreError(f"cannot reach the server: {exc}") from None
            else:
                if response.status_code not in _RETRY_STATUS:
                    if response.is_error:
                        raise _error(response)
                    return response
                if attempt >= self._policy.max_retries:
                    raise _error(response)
            time.sleep(self._policy.delay(attempt, response))
            attempt += 1

    # ------------------------------------------------------------ writing

    def record(
        self,
        resource_type: str,
        action: str,
        actor: Actor | Mapping[str, Any],
        *,
        tenant: str | None = None,
        **fields: Any,
    ) -> str:
        """Validate one event and queue it for the background sender; returns its idempotency key."""
        return self.queue_many([event_dict(resource_type, action, actor, **fields)], tenant=tenant)[0]

    def queue_many(self, events: Iterable[Mapping[str, Any] | EventInput], *, tenant: str | None = None) -> list[str]:
        """Validate events and queue them together (all or none); returns their idempotency keys."""
        batch = [_wire(e) for e in events]
        with self._lock:
            if self._closed:
                raise StoreError("the client is closed")
            if self._queue.admit(tenant or self.tenant, batch, self.errors):
                self._ready.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="auditledger-client-send", daemon=True)
                self._thread.start()
        return [str(e["idempotency_key"]) for e in batch]

    @property
    def pending(self) -> int:
        """Events queued and not yet stored by the server."""
        return len(self._queue.events)

    def record_many(self, events: Iterable[Mapping[str, Any]], *, tenant: str | None = None) -> list[dict[str, Any]]:
        """Send events now (in batches of ``batch_size``) and return their receipts."""
        batch = [_keyed(e) for e in events]
        receipts: list[dict[str, Any]] = []
        for i in range(0, len(batch), self.batch_size):
            receipts += self._send(tenant or self.tenant, batch[i : i + self.batch_size])
        return receipts

    def _send(self, tenant: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        response = self._request("POST", f"/api/v1/{tenant}/auditlogs", content=_body(events), headers=_JSON)
        return _receipts(response)

    def flush(self) -> None:
        """Send what is queued now; raises the error if a batch cannot be sent (it stays queued)."""
        self._send_queued(self.pending)

    def _send_queued(self, limit: int) -> None:
        """Send up to ``limit`` events from the head of the queue; each batch leaves it once stored."""
        with self._sending:
            while limit > 0:
                with self._lock:
                    if not self._queue.events:
                        return
                    tenant, batch = self._queue.head(limit)
                self._send(tenant, batch)
                with self._lock:
                    self._queue.drop(len(batch))
                limit -= len(batch)

    def _run(self) -> None:
        failures = 0
        while True:
            with self._lock:
                count = self._due()
            if count is None:
                return  # closed: close() sends the rest on its own thread
            try:
                self._send_queued(count)
                failures = 0
            except AuditLedgerError as exc:
                failures += 1
                background.keep(self.errors, exc)
                seconds = self._policy.delay(min(failures, 16), None)
                background.pause(self._ready, lambda: self._closed, seconds)  # close() ends the pause

    def _due(self) -> int | None:
        """Under the lock: sleep until a batch is full or lingered long enough; its size (None once closed).

        A ``flush()`` may empty the queue meanwhile: then sleep again.
        """
        while not self._closed:
            left = self._queue.due_in()
            if left is not None and left <= 0:
                return self.pending
            self._ready.wait(left)
        return None

    # ------------------------------------------------------------ reading

    def search(
        self,
        q: str | None = None,
        *,
        tenant: str | None = None,
        size: int = 50,
        page: int = 1,
        cursor: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One page (Kestra's answer shape plus ``cursor``, ``more``); ``params`` adds Kestra filters."""
        response = self._request(
            "GET", f"/api/v1/{tenant or self.tenant}/auditlogs/search", params=_params(q, size, page, cursor, params)
        )
        answer: dict[str, Any] = response.json()
        return answer

    def get(self, id: str, *, tenant: str | None = None) -> dict[str, Any]:
        """One event in the full shape."""
        answer: dict[str, Any] = self._request("GET", f"/api/v1/{tenant or self.tenant}/auditlogs/{id}").json()
        return answer

    def close(self) -> None:
        """Send what is queued, stop the background sender and close the connection pool.

        Raises the send's error if the rest cannot be delivered after the retries;
        ``pending`` then says how many events were not.
        """
        with self._lock:
            self._closed = True
            self._ready.notify_all()
        try:
            self.flush()
        finally:
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._http.close()
            _open_clients.discard(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """An asyncio client; the background sender is a task started by the first ``record``."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        tenant: str = "main",
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_queue: int = 100_000,
        max_retries: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 10.0,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._queue = _Queue(batch_size, flush_interval, max_queue)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self.tenant = tenant
        self.batch_size = batch_size
        self._policy = _Policy(max_retries, backoff, max_backoff)
        self._wake = asyncio.Event()  # the sender sleeps on it
        self._sending = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.errors: list[AuditLedgerError] = []

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt >= self._policy.max_retries:
                    raise StoreError(f"cannot reach the server: {exc}") from None
            else:
                if response.status_code not in _RETRY_STATUS:
                    if response.is_error:
                        raise _error(response)
                    return response
                if attempt >= self._policy.max_retries:
                    raise _error(response)
            await asyncio.sleep(self._policy.delay(attempt, response))
            attempt += 1

    def record(
        self,
        resource_type: str,
        action: str,
        actor: Actor | Mapping[str, Any],
        *,
        tenant: str | None = None,
        **fields: Any,
    ) -> str:
        """Validate one event and queue it for the background sender; returns its idempotency key."""
        return self.queue_many([event_dict(resource_type, action, actor, **fields)], tenant=tenant)[0]

    def queue_many(self, events: Iterable[Mapping[str, Any] | EventInput], *, tenant: str | None = None) -> list[str]:
        """Validate events and queue them together (all or none); returns their idempotency keys."""
        if self._closed:
            raise StoreError("the client is closed")
        batch = [_wire(e) for e in events]
        if self._queue.admit(tenant or self.tenant, batch, self.errors):
            self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return [str(e["idempotency_key"]) for e in batch]

    @property
    def pending(self) -> int:
        """Events queued and not yet stored by the server."""
        return len(self._queue.events)

    async def record_many(
        self, events: Iterable[Mapping[str, Any]], *, tenant: str | None = None
    ) -> list[dict[str, Any]]:
        batch = [_keyed(e) for e in events]
        receipts: list[dict[str, Any]] = []
        for i in range(0, len(batch), self.batch_size):
            receipts += await self._send(tenant or self.tenant, batch[i : i + self.batch_size])
        return receipts

    async def _send(self, tenant: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        response = await self._request("POST", f"/api/v1/{tenant}/auditlogs", content=_body(events), headers=_JSON)
        return _receipts(response)

    async def flush(self) -> None:
        """Send what is queued now; raises the error if a batch cannot be sent (it stays queued)."""
        await self._send_queued(self.pending)

    async def _send_queued(self, limit: int) -> None:
        async with self._sending:
            while limit > 0 and self._queue.events:
                tenant, batch = self._queue.head(limit)
                await self._send(tenant, batch)
                self._queue.drop(len(batch))
                limit -= len(batch)

    async def _run(self) -> None:
        failures = 0
        while True:
            await self._due()
            try:
                await self._send_queued(self.pending)
                failures = 0
            except AuditLedgerError as exc:
                failures += 1
                background.keep(self.errors, exc)
                await asyncio.sleep(self._policy.delay(min(failures, 16), None))

    async def _due(self) -> None:
        """Sleep until a batch is full or lingered long enough (close() cancels the task)."""
        while (left := self._queue.due_in()) is None or left > 0:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)

    async def search(
        self,
        q: str | None = None,
        *,
        tenant: str | None = None,
        size: int = 50,
        page: int = 1,
        cursor: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        response = await self._request(
            "GET", f"/api/v1/{tenant or self.tenant}/auditlogs/search", params=_params(q, size, page, cursor, params)
        )
        answer: dict[str, Any] = response.json()
        return answer

    async def get(self, id: str, *, tenant: str | None = None) -> dict[str, Any]:
        response = await self._request("GET", f"/api/v1/{tenant or self.tenant}/auditlogs/{id}")
        answer: dict[str, Any] = response.json()
        return answer

    async def close(self) -> None:
        """Stop the background sender, send what is queued and close the connection pool.

        A batch in flight when the sender is cancelled stays queued and is sent
        again here; its idempotency keys store it once.
        """
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self.flush()
        finally:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
