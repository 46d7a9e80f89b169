"""HTTP client of an ``auditledger serve`` server, sync and async, on httpx.

    from auditledger.client import Client
    with Client("http://127.0.0.1:8080", token="alt_...") as client:
        client.record("FLOW", "UPDATE", Actor.user("anna@acme.io"), details={"namespace": "company.team"})

``record`` only queues: a background flush (a thread for :class:`Client`, a
task for :class:`AsyncClient`) sends batches of ``batch_size`` events every
``flush_interval`` seconds, and ``flush()``/``close()`` send what is left.
``record_many`` sends at once and returns the receipts. Every event gets an
``idempotency_key`` (a random UUID unless the caller gives one), so a batch
that is retried after a lost answer is stored once: the server answers the
known keys with their first id and seq. Requests are retried on 429, 503 and
connection errors with exponential backoff, honouring ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import httpx

from auditledger.errors import AuditLedgerError, AuthError, ConflictError, NotFoundError, StoreError, ValidationError
from auditledger.model import Actor, format_date

_RETRY_STATUS = frozenset({429, 502, 503, 504})


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
        return float(min(self.max_backoff, self.backoff * (2**attempt)) * (0.5 + random.random() / 2))


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
    """A synchronous client with a background flush thread."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        tenant: str = "main",
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_retries: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 10.0,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self.tenant = tenant
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._policy = _Policy(max_retries, backoff, max_backoff)
        self._buffer: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.errors: list[AuditLedgerError] = []  # failures of background flushes, newest last

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

    def record(self, resource_type: str, action: str, actor: Actor | Mapping[str, Any], *,
               tenant: str | None = None, **fields: Any) -> str:
        """Queue one event for the background flush; returns its idempotency key."""
        event = event_dict(resource_type, action, actor, **fields)
        with self._lock:
            if self._closed:
                raise StoreError("the client is closed")
            self._buffer.append((tenant or self.tenant, event))
            full = len(self._buffer) >= self.batch_size
            if self._thread is None:
                self._thread = threading.Thread(target=self._flusher, name="auditledger-client-flush", daemon=True)
                self._thread.start()
        if full:
            self._wake.set()
        return str(event["idempotency_key"])

    def record_many(self, events: Iterable[Mapping[str, Any]], *, tenant: str | None = None) -> list[dict[str, Any]]:
        """Send events now (in batches of ``batch_size``) and return their receipts."""
        batch = [_keyed(e) for e in events]
        receipts: list[dict[str, Any]] = []
        for i in range(0, len(batch), self.batch_size):
            receipts += self._send(tenant or self.tenant, batch[i : i + self.batch_size])
        return receipts

    def _send(self, tenant: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        response = self._request("POST", f"/api/v1/{tenant}/auditlogs", json={"events": events})
        receipts: list[dict[str, Any]] = response.json()["receipts"]
        return receipts

    def flush(self) -> None:
        """Send everything queued now; raises the error if a batch cannot be sent (it stays queued)."""
        with self._send_lock:
            while True:
                with self._lock:
                    if not self._buffer:
                        return
                    tenant = self._buffer[0][0]
                    take = [e for t, e in self._buffer[: self.batch_size] if t == tenant]
                    take = take[: self.batch_size]
                self._send(tenant, take)  # on failure the batch stays queued for the next flush
                with self._lock:
                    sent = {id(e) for e in take}
                    self._buffer = [(t, e) for t, e in self._buffer if id(e) not in sent]

    def _flusher(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self.flush()
            except AuditLedgerError as exc:
                self.errors.append(exc)
            with self._lock:
                if self._closed and not self._buffer:
                    return

    # ------------------------------------------------------------ reading

    def search(self, q: str | None = None, *, tenant: str | None = None, size: int = 50, page: int = 1,
               cursor: str | None = None, params: Mapping[str, str] | None = None) -> dict[str, Any]:
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
        """Flush what is queued, stop the background thread and close the connection pool."""
        with self._lock:
            self._closed = True
        self._wake.set()
        try:
            self.flush()
        finally:
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """An asyncio client; the background flush is a task started by the first ``record``."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        tenant: str = "main",
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_retries: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 10.0,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self.tenant = tenant
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._policy = _Policy(max_retries, backoff, max_backoff)
        self._buffer: list[tuple[str, dict[str, Any]]] = []
        self._send_lock = asyncio.Lock()
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

    def record(self, resource_type: str, action: str, actor: Actor | Mapping[str, Any], *,
               tenant: str | None = None, **fields: Any) -> str:
        """Queue one event for the background flush; returns its idempotency key."""
        if self._closed:
            raise StoreError("the client is closed")
        event = event_dict(resource_type, action, actor, **fields)
        self._buffer.append((tenant or self.tenant, event))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flusher())
        return str(event["idempotency_key"])

    async def record_many(
        self, events: Iterable[Mapping[str, Any]], *, tenant: str | None = None
    ) -> list[dict[str, Any]]:
        batch = [_keyed(e) for e in events]
        receipts: list[dict[str, Any]] = []
        for i in range(0, len(batch), self.batch_size):
            receipts += await self._send(tenant or self.tenant, batch[i : i + self.batch_size])
        return receipts

    async def _send(self, tenant: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        response = await self._request("POST", f"/api/v1/{tenant}/auditlogs", json={"events": events})
        receipts: list[dict[str, Any]] = response.json()["receipts"]
        return receipts

    async def flush(self) -> None:
        async with self._send_lock:
            while self._buffer:
                tenant = self._buffer[0][0]
                take = [e for t, e in self._buffer[: self.batch_size] if t == tenant]
                await self._send(tenant, take)
                sent = {id(e) for e in take}
                self._buffer = [(t, e) for t, e in self._buffer if id(e) not in sent]

    async def _flusher(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.flush_interval if len(self._buffer) < self.batch_size else 0)
            try:
                await self.flush()
            except AuditLedgerError as exc:
                self.errors.append(exc)

    async def search(self, q: str | None = None, *, tenant: str | None = None, size: int = 50, page: int = 1,
                     cursor: str | None = None, params: Mapping[str, str] | None = None) -> dict[str, Any]:
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
