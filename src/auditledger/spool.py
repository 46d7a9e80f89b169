"""A durable spool in front of an embedded ledger: the request path pays one small commit.

Recording into :class:`~auditledger.AuditLog` places each batch at once: seq,
date, canonical bytes, leaf hash, Merkle nodes, indexes; on SQLite about
fifteen WAL frames and an fsync per commit, and sequential requests cannot
share a commit. :class:`Spooled` splits that in two:

- ``record_many`` validates the batch as the ledger would (its limits; a bad
  event raises the same :class:`ValidationError` naming ``events[i].field``,
  and nothing of the batch is kept), gives every event an idempotency key and
  an ``occurred_at``, and writes the batch as one row into a SQLite file of its
  own (WAL, ``synchronous=FULL``): one or two WAL frames and one fsync. When it
  returns, the batch is on disk.
- a background thread drains the spool into the ledger, oldest row first,
  one ledger transaction per run of one tenant's rows (up to ``batch_size``
  events), and deletes the rows it placed.

Delivery: a row leaves the spool only after the ledger committed its events.
A crash between that commit and the delete replays the row at the next drain;
the idempotency keys make the ledger answer those events as duplicates instead
of storing them twice. Rows left by a process that died are drained by the next
:class:`Spooled` opened on the file. Several processes (or objects) may share a
spool and a ledger: each drains every row, and the keys store each event once.

A drain the ledger fails (:class:`StoreError`: locked, full, closed) keeps the
rows, keeps the error in ``errors`` and tries again after a backoff. A batch the
ledger refuses as invalid (its limits changed since the batch was spooled) would
block the spool forever: it moves to the spool's ``rejected`` table with the
error, a warning is logged, and the drain goes on.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from auditledger import background
from auditledger.drain import Drain, Rejected, Row
from auditledger.errors import AuditLedgerError, ConfigError, StoreError, ValidationError
from auditledger.ledger import DEFAULT_TENANT, AuditLog
from auditledger.model import EventInput, check_tenant, format_micros
from auditledger.wire import dated_mappings, encode_batch, new_key

_FORMAT = 1  # PRAGMA user_version of a spool file
_SCHEMA = (
    # Row ids grow with each insert, but an emptied table starts them over: a drain deletes the rows
    # it placed by id *and* token (random per row), so that it cannot delete a row spooled after
    # another drain emptied the table under the same id. (AUTOINCREMENT would prevent the reuse at
    # the price of a second page, sqlite_sequence, in every request's commit.) ``total`` is the
    # running count of events up to this row: the events waiting are two primary-key lookups away.
    "CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY, token TEXT NOT NULL, tenant TEXT NOT NULL, "
    "count INTEGER NOT NULL, total INTEGER NOT NULL, events BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rejected (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, count INTEGER NOT NULL, "
    "events BLOB NOT NULL, error TEXT NOT NULL, rejected_at TEXT NOT NULL)",
)
_WAITING = (
    "SELECT (SELECT total FROM spool ORDER BY id DESC LIMIT 1), (SELECT total - count FROM spool ORDER BY id LIMIT 1)"
)
_BUSY_MS = 30_000

_log = logging.getLogger("auditledger.spool")


def _not_drained(spool: Spooled, exc: AuditLedgerError) -> None:
    _log.error("auditledger spool %s: events not drained at exit, kept for the next open: %s", spool.path, exc)


# Spools nobody closed are drained at a normal interpreter exit (what fails stays on disk).
_open_spools: weakref.WeakSet[Spooled] = background.closed_at_exit(_not_drained)


@dataclass(slots=True)
class _Batch:
    """One ``record_many`` call's row, waiting for the commit that writes it (its own or a group's)."""

    tenant: str
    count: int
    blob: bytes
    done: bool = False
    error: StoreError | None = None


class Spooled(Drain):
    """A sink that makes batches durable in a spool file and places them in ``ledger`` in the background.

    ``path``: the spool file; by default ``<ledger file>-spool`` beside a SQLite ledger
    (required for other stores). ``batch_size``: events per ledger transaction, and a
    drain starts as soon as this many wait; ``flush_interval``: seconds the oldest
    waiting event lingers before a drain starts anyway; ``max_pending``: events the
    spool may hold before ``record_many`` refuses more (the ledger is not taking them).
    """

    def __init__(
        self,
        ledger: AuditLog,
        path: str | Path | None = None,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        max_pending: int = 100_000,
    ) -> None:
        super().__init__(ledger, batch_size=batch_size, flush_interval=flush_interval)
        if max_pending < batch_size:
            raise ConfigError(f"max_pending ({max_pending}) must be at least batch_size ({batch_size})")
        self.ledger = ledger
        self.path = Path(path) if path is not None else default_path(ledger)
        self.label = f"the spool {self.path}"
        self.max_pending = max_pending
        self._writer = _open(self.path, "FULL")  # request threads' inserts, under _lock
        # Reads, deletes and checkpoints, under _draining. Its deletes need no sync of their own:
        # one lost at a power cut only replays rows the ledger answers as duplicates, and the
        # next request's synced commit makes it durable with its own row anyway.
        self._drainer = _open(self.path, "NORMAL")
        # Group commit: the batches of calls that came while another call's commit was being
        # written wait here; the first of them then writes them all in one commit, one fsync.
        self._queued: list[_Batch] = []
        self._writing = False  # a call is writing a group (its own batch and those queued before it)
        self._written = threading.Condition(self._lock)  # the waiting calls sleep on it
        self._write_mutex = threading.Lock()  # the request path's connection, one user at a time
        self._start("auditledger-spool-drain")
        _open_spools.add(self)

    # ------------------------------------------------------------ the request path

    def record_many(
        self, events: Iterable[Mapping[str, Any] | EventInput], *, tenant: str = DEFAULT_TENANT
    ) -> list[str]:
        """Validate ``events`` as the ledger would and spool them together (all or none); their idempotency keys.

        On return the batch is in the spool file, synced; the ledger places it within
        about ``flush_interval`` seconds.
        """
        check_tenant(tenant)
        drafts = self.ledger.validate(events)
        if not drafts:
            return []
        batch = dated_mappings(drafts)
        entry = _Batch(tenant, len(batch), encode_batch(batch, drafts))
        with self._lock:
            if self._closed:
                raise StoreError(f"the spool {self.path} is closed")
            self._queued.append(entry)
            while not entry.done and self._writing:
                self._written.wait()
            if not entry.done and self._closed:  # closed while this call waited: no new group starts
                self._queued.remove(entry)
                raise StoreError(f"the spool {self.path} is closed")
            group: list[_Batch] = []
            if not entry.done:  # this call writes the group: its own batch and every one queued
                self._writing = True
                group, self._queued = self._queued, []
        if group:
            self._write_group(group)
        if entry.error is not None:
            raise entry.error
        return [str(e["idempotency_key"]) for e in batch]

    def _write_group(self, group: list[_Batch]) -> None:
        """Write ``group`` in one commit outside the lock, then wake its calls and the drain thread.

        Each batch is its own row and is refused on its own when the spool is full; a failed
        commit fails every batch of the group, none of which is then stored.
        """
        errors: list[StoreError | None] | None = None
        try:
            errors = self._insert(group)
        except StoreError as exc:
            errors = [exc] * len(group)
        finally:
            if errors is None:  # interrupted (KeyboardInterrupt ...): no call of the group may wait forever
                errors = [StoreError(f"the write to the spool {self.path} was interrupted")] * len(group)
            with self._lock:
                stored = 0
                for entry, error in zip(group, errors, strict=True):
                    entry.error, entry.done = error, True
                    stored += 0 if error is not None else entry.count
                self._recorded(stored)
                self._writing = False
                self._written.notify_all()

    def _insert(self, group: list[_Batch]) -> list[StoreError | None]:
        """One row per batch, in one transaction; a batch taking the spool past ``max_pending`` is refused."""
        errors: list[StoreError | None] = []
        try:
            with self._write_mutex, _transaction(self._writer) as conn:
                last, base = conn.execute(_WAITING).fetchone()
                total = last or 0
                waiting = 0 if last is None else last - base
                for entry in group:
                    if waiting + entry.count > self.max_pending:
                        last_error = f"; last error: {self.errors[-1]}" if self.errors else ""
                        errors.append(
                            StoreError(
                                f"the spool {self.path} is full ({waiting} events, max_pending={self.max_pending}): "
                                f"the ledger is not taking them{last_error}"
                            )
                        )
                        continue
                    total += entry.count
                    waiting += entry.count
                    conn.execute(
                        "INSERT INTO spool (token, tenant, count, total, events) VALUES (?, ?, ?, ?, ?)",
                        (new_key(), entry.tenant, entry.count, total, entry.blob),
                    )
                    errors.append(None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to the spool {self.path}: {exc}") from None
        return errors

    @property
    def pending(self) -> int:
        """Events in the spool file (of every process using it), not yet placed in the ledger."""
        last, base = self._query(_WAITING)[0]
        return 0 if last is None else int(last - base)

    def rejected(self) -> list[Rejected]:
        """The batches the ledger refused as invalid at a drain, oldest first."""
        rows = self._query("SELECT id, tenant, events, error, rejected_at FROM rejected ORDER BY id")
        return [Rejected(i, t, orjson.loads(e), err, at) for i, t, e, err, at in rows]

    def _query(self, sql: str) -> list[Any]:
        """A read on the request path's connection (the drain's may be inside a transaction)."""
        with self._write_mutex:
            if self._closed:
                raise StoreError(f"the spool {self.path} is closed")
            try:
                return self._writer.execute(sql).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the spool {self.path}: {exc}") from None

    # ------------------------------------------------------------ draining

    def close(self) -> None:
        """Drain what is left, stop the drain thread and close the spool file.

        Raises the ledger's error if the rest cannot be placed; those rows stay in the
        file and the next :class:`Spooled` opened on it drains them. The ledger stays open.
        """
        with self._lock:
            if self._closed:
                return
            self._stop()
            self._written.notify_all()  # calls queued behind the group being written then give up
            while self._writing:  # a group being written is finished, and drained below
                self._written.wait()
        self._thread.join()
        _open_spools.discard(self)
        try:
            self._drain()
        finally:
            with self._write_mutex:
                for conn in (self._writer, self._drainer):
                    conn.close()

    # ------------------------------------------------------------ the drain's table

    _failures = (sqlite3.Error,)

    def _after_drain(self) -> None:
        # The request path never checkpoints (wal_autocheckpoint=0): the WAL is copied
        # back here, off the request path, so that the next writer can start it over.
        with suppress(sqlite3.Error):
            self._drainer.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _top(self) -> int:
        return int(self._drainer.execute("SELECT coalesce(max(id), 0) FROM spool").fetchone()[0])

    def _lowest(self) -> int | None:
        lowest = self._drainer.execute("SELECT min(id) FROM spool").fetchone()[0]
        return None if lowest is None else int(lowest)

    def _read(self, after: int, upto: int) -> list[Row]:
        found = self._drainer.execute(
            "SELECT id, token, tenant, events FROM spool WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
            (after, upto, self.batch_size),
        )
        return [Row(i, k, t, orjson.loads(e)) for i, k, t, e in found]

    def _delete(self, rows: list[Row]) -> None:
        with _transaction(self._drainer) as conn:
            conn.executemany("DELETE FROM spool WHERE id = ? AND token = ?", [(row.id, row.token) for row in rows])

    def _reject(self, rows: list[Row], exc: ValidationError) -> None:
        at = format_micros(time.time_ns() // 1000)
        with _transaction(self._drainer) as conn:
            for row in rows:
                conn.execute(
                    "INSERT INTO rejected (tenant, count, events, error, rejected_at) VALUES (?, ?, ?, ?, ?)",
                    (row.tenant, len(row.events), orjson.dumps(row.events), str(exc), at),
                )
                conn.execute("DELETE FROM spool WHERE id = ? AND token = ?", (row.id, row.token))
        for row in rows:
            _log.warning(
                "auditledger spool %s: the ledger refused a batch of %d events (tenant %s): %s; "
                "moved to the spool's rejected table",
                self.path,
                len(row.events),
                row.tenant,
                exc,
            )


# ---------------------------------------------------------------- helpers


def default_path(ledger: AuditLog) -> Path:
    """``<ledger file>-spool`` for a ledger on a SQLite file; other stores need ``path=``."""
    url = str(getattr(ledger.store, "url", "")).partition("?")[0]
    file = url.removeprefix("sqlite:///")
    if not url.startswith("sqlite:///") or file in ("", ":memory:"):
        shown = url.split("@")[-1] or type(ledger.store).__name__  # no password in the message
        raise ConfigError(
            f"the spool needs path= for a ledger that is not on a SQLite file ({shown}): "
            "a file on local disk, e.g. Spooled(ledger, '/var/lib/app/audit-spool')"
        )
    return Path(f"{file}-spool").expanduser()


def _open(path: Path, synchronous: str) -> sqlite3.Connection:
    """The spool file in WAL mode; created 0600, as it holds the events' payloads."""
    if not path.parent.is_dir():
        raise ConfigError(f"spool {path}: directory {path.parent} does not exist")
    try:
        # Created owner-only before SQLite opens it: its -wal and -shm files take the same mode.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError as exc:
        raise ConfigError(f"cannot create the spool {path}: {exc.strerror}") from None
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the spool {path}: {exc}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"could not switch the spool {path} to WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        with _transaction(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _FORMAT:
                raise ConfigError(f"spool {path} is format {version}; this version of auditledger reads {_FORMAT}")
            for statement in _SCHEMA:
                conn.execute(statement)
            if version < _FORMAT:
                conn.execute(f"PRAGMA user_version = {_FORMAT}")
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot open the spool {path}: {exc}") from None
    except AuditLedgerError:
        conn.close()
        raise
    return conn


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (the connection is in autocommit mode: ``with conn`` would not begin)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        # A failed COMMIT may leave the transaction open (or SQLite may have rolled it back
        # already): close it either way, so that the next write can begin, and keep the error.
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
