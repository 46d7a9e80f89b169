"""Durable batches placed into a sink by a background thread: what the spool and the outbox share.

Both keep each recorded batch as one row (an id, a random token, the tenant and the
events as JSON, every event with its idempotency key) in a table of their own: the
spool in a SQLite file beside the ledger, the outbox in the application's database.
A :class:`Drain` places those rows into its sink, oldest first, one ``record_many``
per run of one tenant's rows (up to ``batch_size`` events), and deletes each row
once the sink has stored it:

- a crash between the sink's commit and the delete replays rows, which the
  idempotency keys turn into duplicates answered, not events stored twice;
- a row id can come back once the table was emptied (SQLite reuses them), so rows
  are deleted by id *and* token, and a drain stops where it finds its ids reused;
- a failure of the sink (:class:`StoreError`) keeps the rows and the error (in
  ``errors``) and the thread tries again after a backoff; a batch the sink refuses
  as invalid would block the table forever, so it is set aside with the error.

The thread sleeps until rows are recorded, then lingers until ``batch_size`` events
wait or ``flush_interval`` seconds have passed since the oldest, as the client's
sender does.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Self

from auditledger import background
from auditledger.errors import AuditLedgerError, ConfigError, StoreError, ValidationError

_BACKOFF = 0.1  # seconds after the first failed drain, doubled each time ...
_MAX_BACKOFF = 10.0  # ... up to this
_EVENT_INDEX = re.compile(r"events\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class Row:
    """One recorded batch waiting to be placed."""

    id: int
    token: str
    tenant: str
    events: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A batch the sink refused as invalid when it was drained, kept aside with the error."""

    id: int
    tenant: str
    events: list[dict[str, Any]]
    error: str
    rejected_at: str


def check_sizes(batch_size: int, flush_interval: float) -> None:
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if flush_interval < 0:
        raise ConfigError(f"flush_interval must not be negative, got {flush_interval}")


class Drain:
    """The background thread placing stored rows into ``sink``; subclasses keep the rows.

    They implement :meth:`_top`, :meth:`_lowest`, :meth:`_read`, :meth:`_delete` and
    :meth:`_reject` on their table, name their failures in ``_failures`` (the driver's
    exception classes, reported as :class:`StoreError`), call :meth:`_recorded` under
    ``_lock`` once rows are durable, and :meth:`_start` at the end of their ``__init__``.
    """

    label = "the drain"  # names the table in messages: "the spool /var/lib/app/audit.db-spool"
    _failures: tuple[type[BaseException], ...] = ()

    def __init__(self, sink: Any, *, batch_size: int, flush_interval: float) -> None:
        check_sizes(batch_size, flush_interval)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.errors: list[AuditLedgerError] = []  # failures of background drains, newest last
        self._sink = sink
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)  # the drain thread sleeps on it
        self._draining = threading.Lock()  # one drain at a time: the thread, flush() or close()
        self._waiting = 0  # events this object recorded since its last drain started
        self._oldest = 0.0  # monotonic time the first of them was recorded
        self._again = True  # drain at once: rows a previous process left, or a failed drain's
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _start(self, name: str) -> None:
        self._thread.name = name
        self._thread.start()

    def flush(self) -> None:
        """Place what is stored now in the sink and wait; raises the sink's error (the rows stay)."""
        if self._closed:
            raise StoreError(f"{self.label} is closed")
        self._drain()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ what the table does

    def _top(self) -> int:
        """The highest row id now in the table (0 when empty)."""
        raise NotImplementedError

    def _lowest(self) -> int | None:
        """The lowest row id now in the table, rows set aside excluded."""
        raise NotImplementedError

    def _read(self, after: int, upto: int) -> list[Row]:
        """Up to ``batch_size`` rows with ``after < id <= upto``, by id."""
        raise NotImplementedError

    def _delete(self, rows: list[Row]) -> None:
        raise NotImplementedError

    def _reject(self, rows: list[Row], exc: ValidationError) -> None:
        raise NotImplementedError

    def _describe(self, exc: BaseException) -> str:
        """One of ``_failures`` as the message of the :class:`StoreError` that reports it."""
        return str(exc)

    def _after_drain(self) -> None:
        """Housekeeping after each drain, failed or not (the spool checkpoints its WAL)."""

    # ------------------------------------------------------------ the thread

    def _recorded(self, count: int) -> None:
        """Under ``_lock``: ``count`` events are durable; wake the thread when its linger starts or a batch is full."""
        if not count:
            return
        first = self._waiting == 0
        self._waiting += count
        if first:
            self._oldest = time.monotonic()
        if first or self._waiting >= self.batch_size:
            self._ready.notify()

    def _stop(self) -> None:
        """Under ``_lock``: mark closed and wake the thread (it then ends; join it outside the lock)."""
        self._closed = True
        self._ready.notify_all()

    def _run(self) -> None:
        failures = 0
        while self._due():
            try:
                self._drain()
                failures = 0
            except AuditLedgerError as exc:
                failures += 1
                background.keep(self.errors, exc)
                seconds = background.backoff(min(failures, 16), _BACKOFF, _MAX_BACKOFF)
                background.pause(self._ready, lambda: self._closed, seconds)  # close() ends the pause

    def _due(self) -> bool:
        """Sleep until a drain is due (see ``_left``); False once closed."""
        with self._lock:
            while not self._closed:
                left = self._left()
                if left is not None and left <= 0:
                    self._again = False
                    return True
                self._ready.wait(left)
        return False

    def _left(self) -> float | None:
        """Under the lock: seconds until ``batch_size`` events wait or the oldest lingered ``flush_interval``.

        None when nothing waits: the thread sleeps until events are recorded.
        """
        if self._again or self._waiting >= self.batch_size:
            return 0.0
        if self._waiting:
            return self._oldest + self.flush_interval - time.monotonic()
        return None

    def _drain(self) -> None:
        """Place every row stored up to now (by any process) in the sink, oldest first, deleting each once placed.

        When it fails, the rows stay and the drain thread tries again after its backoff,
        whether this drain was its own or a ``flush()``'s.
        """
        with self._draining:
            with self._lock:
                self._waiting = 0  # what is recorded from here on waits for the next drain's linger
            try:
                self._drain_rows()
            except AuditLedgerError:
                self._retry()
                raise
            except self._failures as exc:
                self._retry()
                raise StoreError(f"cannot drain {self.label}: {self._describe(exc)}") from None
            finally:
                self._after_drain()

    def _drain_rows(self) -> None:
        upto = self._top()
        after = 0
        while True:
            rows = self._read(after, upto)
            if not rows:
                return
            for run in runs(rows, self.batch_size):
                self._place(run)
            after = rows[-1].id
            if self._started_over(after):
                return

    def _retry(self) -> None:
        with self._lock:
            self._again = True
            self._ready.notify()

    def _started_over(self, after: int) -> bool:
        """Whether a row id at or below ``after`` (placed and deleted) is in the table again.

        After another drain emptied the table, which placed every row this one had still
        to place, the rows there now are newer: they wait for the next drain, in order.
        (In a database whose ids commit out of order, PostgreSQL's sequences, the row may
        be one committed late: the next drain, which starts from the lowest, places it.)
        """
        lowest = self._lowest()
        return lowest is not None and lowest <= after

    def _place(self, run: list[Row]) -> None:
        """One tenant's rows in one ``record_many`` of the sink, then their delete; a refused row is set aside."""
        while run:
            events = [e for row in run for e in row.events]
            try:
                self._sink.record_many(events, tenant=run[0].tenant)
            except ValidationError as exc:
                bad, error = refused_rows(run, exc)
                self._reject(bad, error)
                run = [row for row in run if row not in bad]
                continue
            except AuditLedgerError:
                raise
            except Exception as exc:  # a ledger closed under us raises sqlite3's own errors
                raise StoreError(
                    f"the sink failed to take the events of {self.label}: {type(exc).__name__}: {exc}"
                ) from None
            self._delete(run)
            return


def runs(rows: list[Row], batch_size: int) -> Iterable[list[Row]]:
    """Consecutive rows of one tenant, up to ``batch_size`` events (a row is never split: it is one batch)."""
    run: list[Row] = []
    size = 0
    for row in rows:
        if run and (row.tenant != run[0].tenant or size + len(row.events) > batch_size):
            yield run
            run, size = [], 0
        run.append(row)
        size += len(row.events)
    if run:
        yield run


def refused_rows(run: list[Row], exc: ValidationError) -> tuple[list[Row], ValidationError]:
    """The row holding the event the sink named (``events[i]...``; all rows when it names none),
    and the error with the event's index in its own batch."""
    found = _EVENT_INDEX.match(exc.field)
    if found is None:
        return run, exc
    index = int(found.group(1))
    for row in run:
        if index < len(row.events):
            return [row], ValidationError(f"events[{index}]{exc.field[found.end() :]}", exc.message)
        index -= len(row.events)
    return run, exc
