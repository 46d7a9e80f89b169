"""One writer per ledger, with group commit.

Requests hand their validated events to :meth:`Writer.submit` and wait on the
returned future. A single thread takes what is queued, waits a few
milliseconds for more (``group_commit_ms``), places everything in one
``ledger.append`` transaction and resolves each request's future only after
the commit: an acknowledged event is durable. While one commit runs, the
next group gathers (and is committed as soon as the writer is free, without
waiting the window again), so throughput grows with load while a lone request
waits at most the window plus one commit.

The queue is bounded in events; when full, :meth:`submit` raises
:class:`Overloaded` and the API answers 503 with ``Retry-After``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from auditledger.canonical import Prepared
from auditledger.errors import AuditLedgerError, StoreError
from auditledger.ledger import AuditLog, Receipt, prepare
from auditledger.model import EventInput


class Overloaded(AuditLedgerError):
    """The writer's queue is full; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(slots=True)
class _Request:
    items: Sequence[Prepared]
    future: Future[list[Receipt]]


@dataclass(slots=True)
class WriterStats:
    """Counters the /metrics route exposes."""

    commits: int = 0
    events: int = 0
    failures: int = 0
    commit_seconds: float = 0.0


class Writer:
    """The group-commit writer of one ledger."""

    def __init__(
        self,
        ledger: AuditLog,
        *,
        window_ms: float = 2.0,
        max_events: int = 10_000,
        max_queued: int = 100_000,
        retry_after: int = 1,
    ) -> None:
        self.ledger = ledger
        self.window = window_ms / 1000.0
        self.max_events = max_events
        self.max_queued = max_queued
        self.retry_after = retry_after
        self.stats = WriterStats()
        self._pending: deque[_Request] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None

    @property
    def queued(self) -> int:
        return self._queued

    def alive(self) -> bool:
        return not self._closing and (self._thread is None or self._thread.is_alive())

    def submit(self, tenant: str, drafts: Sequence[EventInput]) -> Future[list[Receipt]]:
        """Queue ``drafts`` for ``tenant``; the future gives their receipts after the commit."""
        return self.submit_prepared(prepare([(tenant, d) for d in drafts]))

    def submit_prepared(self, drafts: Sequence[Prepared]) -> Future[list[Receipt]]:
        """``submit`` for events prepared by the caller's thread (``ledger.prepare``): the
        canonical encoding and most of the hashing stay out of the single writer."""
        future: Future[list[Receipt]] = Future()
        if not drafts:
            future.set_result([])
            return future
        with self._cond:
            if self._closing:
                raise StoreError("the server is shutting down")
            if self._queued and self._queued + len(drafts) > self.max_queued:
                raise Overloaded(
                    f"the writer has {self._queued} events queued (limit {self.max_queued})", self.retry_after
                )
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="auditledger-writer", daemon=True)
                self._thread.start()
            self._pending.append(_Request(drafts, future))
            self._queued += len(drafts)
            self._cond.notify()
        return future

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def _take(self) -> list[_Request] | None:
        with self._cond:
            # Requests that queued up during the last commit are a group already: waiting the
            # window then only idles the writer (6 % of its time under bench/http_ingest.py,
            # where a request almost never joined during that wait). The window is for a
            # writer woken by a lone request, so that others arriving just after share its commit.
            backlog = bool(self._pending)
            while not self._pending and not self._closing:
                self._cond.wait()
            if not self._pending:
                return None
            if self.window > 0 and not self._closing and not backlog:
                deadline = time.monotonic() + self.window
                while self._queued < self.max_events and not self._closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            group: list[_Request] = []
            size = 0
            while self._pending and (not group or size + len(self._pending[0].items) <= self.max_events):
                request = self._pending.popleft()
                group.append(request)
                size += len(request.items)
            self._queued -= size
            return group

    def _run(self) -> None:
        while True:
            group = self._take()
            if group is None:
                return
            self._commit(group)

    def _commit(self, group: list[_Request]) -> None:
        items = [item for request in group for item in request.items]
        start = time.perf_counter()
        try:
            receipts = self.ledger.append_prepared(items)
        except Exception as exc:  # every failure must reach the waiting requests
            if len(group) == 1:
                self.stats.failures += 1
                group[0].future.set_exception(exc)
                return
            # One request's problem must not fail the others: commit them one by one.
            for request in group:
                self._commit([request])
            return
        self.stats.commits += 1
        self.stats.events += len(items)
        self.stats.commit_seconds += time.perf_counter() - start
        pos = 0
        for request in group:
            n = len(request.items)
            request.future.set_result(receipts[pos : pos + n])
            pos += n
