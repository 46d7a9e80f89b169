"""verify's checks that SQLite runs itself, beside the Python pass over the leaf hashes.

``AuditLog.verify`` re-hashes every stored body in Python (hashlib) and compares every
indexed column and details row with the hashed bytes. Parsing every body in Python cost
more than the rest of verify together, so on SQLite the comparisons run inside the database,
in worker threads, while the calling thread hashes (``sqlite3`` releases the GIL while a
statement steps, and these statements return one row per chunk, not one per event):

- the columns check reads each event's hashed fields with one ``json_extract`` of several
  paths and compares the rendered JSON with ``json_array`` of the indexed columns: equal
  texts mean equal values (both sides escape strings as the canonical form does); a
  canonical body whose text differs only in form is a false alarm, never a miss. The
  hashed ``date`` goes back as text (its SHA-256) and is compared in Python with the
  indexed date (formatting it here cost more than the rest of the statement). The same
  worker hands over each chunk's leaf hashes as one digest, which the hash pass compares
  with its bodies' hashes (so it reads no leaves where no position is purged);
- the details check builds, per chunk, one text of ``seq:details`` lines from the bodies
  and the same from the details rows (one sorted pass over the range: the table has no
  seq index): equal texts (compared by SHA-256) mean equal details for every position,
  leftovers of a purged position included.

Any difference, error or doubt sends the chunk back to the exact per-event check in
Python (``verify.check_exact``), which names the first bad position; so these checks only
have to say "all equal" when the exact check would, and may raise false alarms. One
difference in reading: a body naming a member twice (the ledger never writes one, so its
leaf hash must have been rewritten to match it, which ``verify --against`` catches) is read
first-wins here and last-wins by orjson in the exact check.
"""

from __future__ import annotations

import hashlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from typing import Any

from auditledger.errors import StoreError
from auditledger.store import CheckedChunk, DatabaseChecks

CHUNK = 5000  # positions per chunk: small, so that the threads' work overlaps from start to end
# Chunks a worker may run ahead of the verdicts asked for: its answers are digests, a few hundred
# bytes a chunk, so it can run through the sort of the details check without waiting.
AHEAD = 256

# The hashed fields the columns check reads, in the order of _INDEXED below.
_PATHS = (
    "'$.v', '$.seq', '$.tenant', '$.id', '$.resource_type', '$.action', "
    "'$.actor.type', '$.actor.id', '$.actor.name', '$.outcome'"
)
_INDEXED = (
    "1, e.seq, e.tenant, e.id, e.resource_type, e.action, e.actor_type, e.actor_id, e.actor_name, e.outcome"
)
# ``->`` renders JSON (a string comes back quoted, a missing member as NULL): a chunk's
# dates are one JSON list without its brackets, its details one ``seq:object`` per line.
def columns_check(body_as_text: bool) -> str:
    """The columns check; ``body_as_text`` hands the JSON functions the body as text, not as the stored BLOB.

    From SQLite 3.45 on, a JSON function given a BLOB first tries to read it as JSONB: on
    3.51.1 that made this statement cost half as much again (55.2k against 36.5k instructions
    per event on 3.40.1); with the body cast to text it costs 34.7k there, and 36.8k on 3.40.1,
    where the plain form is kept. Both forms give the same rows (a test runs both).
    """
    source = (
        "(SELECT seq, tenant, id, resource_type, action, actor_type, actor_id, actor_name, outcome, "
        "CAST(body AS TEXT) AS body FROM events)"
        if body_as_text
        else "events"
    )
    return f"""
SELECT group_concat(CASE WHEN NOT same THEN seq END),
       CAST(group_concat(hashed_date, ',') AS BLOB),
       CAST(group_concat(CASE WHEN details IS NOT '{{}}' THEN seq || ':' || coalesce(details, 'none') END, char(10))
            AS BLOB)
FROM (SELECT e.seq AS seq,
             json_extract(e.body, {_PATHS}) IS json_array({_INDEXED}) AND typeof(e.seq) IS 'integer' AS same,
             e.body -> '$.date' AS hashed_date,
             e.body -> '$.details' AS details
      FROM {source} e WHERE e.tenant = ? AND e.seq >= ? AND e.seq < ? ORDER BY e.seq)
"""


_COLUMNS_CHECK = columns_check(sqlite3.sqlite_version_info >= (3, 45, 0))

# The details rows of a whole range in one pass, one row per chunk (``(seq - start) / chunk``).
# Rows come out of the primary key in key order and SQLite's sorter keeps that order among
# rows of one seq, so each object lists its keys sorted as the canonical form does; were it
# ever not so, the texts would differ and the chunk would take the exact check.
_DETAILS_CHECK = """
SELECT (seq - ?) / ?, CAST(group_concat(seq || ':' || indexed, char(10)) AS BLOB)
FROM (SELECT seq, json_group_object(CAST(key AS TEXT), CAST(value AS TEXT)) AS indexed FROM details
      WHERE tenant = ? AND seq >= ? AND seq < ? GROUP BY seq ORDER BY seq)
GROUP BY 1 ORDER BY 1
"""
# A chunk's leaf hashes as one text, and whether there is one of 32 bytes at every position
# (integer seqs, unique, in the range: as many as the range holds means all of them). The hash
# pass compares the digest of this text with the digest of its bodies' leaf hashes, so where an
# event is stored at every position it reads no leaves (a third of its reading). The primary
# key's range scan gives the seq order (an ORDER BY here costs half the statement again); any
# other order would make the digests differ, a false alarm.
_LEAVES_CHECK = """
SELECT count(*) = ?1 AND sum(length(hash) = 32 AND typeof(hash) = 'blob' AND typeof(seq) = 'integer') = ?1,
       CAST(group_concat(hash, '') AS BLOB)
FROM leaves WHERE tenant = ?2 AND seq >= ?3 AND seq < ?4
"""
# The hash pass's reads: events, and leaves only where some position holds no event (two plain
# range scans cost a fifth less than the join; the hash pass pairs them by seq).
_LEAVES = "SELECT seq, hash, purged FROM leaves WHERE tenant = ? AND seq >= ? AND seq < ? ORDER BY seq"
_EVENTS = "SELECT seq, date, body FROM events WHERE tenant = ? AND seq >= ? AND seq < ? ORDER BY seq"

_DONE = object()  # a worker's last item
_SORT_CACHE_KIB = 65_536


@contextmanager
def checked_chunks(
    connect: Callable[[], sqlite3.Connection], url: str, tenant: str, start: int, end: int
) -> Generator[Iterator[CheckedChunk], None, None]:
    """Chunks of ``[start, end)``; two worker threads run the checks, each chunk's verdict comes on asking.

    The hash pass over a chunk need not wait for its verdict (the details check gives none
    before it has sorted the whole range); the workers stop when the context is left. Each
    of the three connections reads in a read transaction of its own. A write between their
    starts (appends never touch the range; a purge may) can make the texts differ: then the
    chunk takes the exact check, which reads one snapshot.
    """
    size = CHUNK
    chunks = [(lo, min(lo + size, end)) for lo in range(start, end, size)]
    stop = threading.Event()
    verdicts = _Verdicts(queue.Queue(maxsize=AHEAD), queue.Queue(maxsize=AHEAD))
    workers = [
        _Worker(connect, stop, verdicts.columns, lambda conn: _columns(conn, stop, tenant, chunks)),
        _Worker(connect, stop, verdicts.details, lambda conn: _details(conn, stop, tenant, start, end, size)),
    ]
    conn = connect()

    def read() -> Iterator[CheckedChunk]:
        try:
            for index, (lo, hi) in enumerate(chunks):
                events = conn.execute(_EVENTS, (tenant, lo, hi)).fetchall()
                leaves = None if len(events) == hi - lo else conn.execute(_LEAVES, (tenant, lo, hi)).fetchall()
                yield CheckedChunk(lo, hi, leaves, events, partial(verdicts.verdict, index))
        except sqlite3.Error as exc:
            raise StoreError(f"read failed on {url}: {exc}") from None

    try:
        try:
            conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise StoreError(f"read failed on {url}: {exc}") from None
        for worker in workers:
            worker.start()
        yield read()
    finally:
        stop.set()
        for worker in workers:
            worker.halt()
        with suppress(sqlite3.Error):
            conn.close()


class _Verdicts:
    """The workers' answers, matched chunk by chunk; ``verdict`` is asked in chunk order."""

    def __init__(self, columns: queue.Queue[Any], details: queue.Queue[Any]) -> None:
        self.columns, self.details = columns, details
        self._columns_alive = True
        self._details_state = "reading"  # "reading", "done" (no rows past the last read) or "failed"
        self._row: tuple[int, bytes | None] | None = None  # the latest (chunk index, digest) of the details rows

    def verdict(self, index: int) -> DatabaseChecks | None:
        found = self.columns.get() if self._columns_alive else None
        if found is _DONE or isinstance(found, BaseException):  # the worker is gone: no more verdicts
            self._columns_alive, found = False, None
        while self._details_state == "reading" and (self._row is None or self._row[0] < index):
            item = self.details.get()
            if item is _DONE or isinstance(item, BaseException):
                self._details_state = "done" if item is _DONE else "failed"
            else:
                self._row = item
        if found is None or self._details_state == "failed":
            return None
        flagged, dates, body_details, leaves = found
        rows = self._row[1] if self._row is not None and self._row[0] == index else None
        return DatabaseChecks(flagged is None and body_details == rows, dates, leaves)


def _columns(
    conn: sqlite3.Connection, stop: threading.Event, tenant: str, chunks: list[tuple[int, int]]
) -> Generator[Any, None, None]:
    for lo, hi in chunks:
        if stop.is_set():
            return
        try:
            flagged, dates, details = conn.execute(_COLUMNS_CHECK, (tenant, lo, hi)).fetchone()
            complete, leaves = conn.execute(_LEAVES_CHECK, (hi - lo, tenant, lo, hi)).fetchone()
            yield flagged, _digest(dates), _digest(details), _digest(leaves) if complete else None
        except sqlite3.Error:  # a body that is not JSON, a column that cannot go into JSON ...
            yield None  # this chunk takes the exact check; the next ones are checked here again


def _details(
    conn: sqlite3.Connection, stop: threading.Event, tenant: str, start: int, end: int, chunk: int
) -> Generator[Any, None, None]:
    if stop.is_set():
        return
    # The sort keeps more of the range in memory before it spills to temporary files: a tenth
    # less CPU at 50,000 events than with the default 2 MiB (memory taken only as used).
    conn.execute(f"PRAGMA cache_size = -{_SORT_CACHE_KIB}")
    cursor = conn.execute(_DETAILS_CHECK, (start, chunk, tenant, start, end))
    while (row := cursor.fetchone()) is not None:
        yield int(row[0]), _digest(row[1])


def _digest(text: bytes | None) -> bytes | None:
    """A chunk's text as SHA-256 (hashlib releases the GIL for it): what is kept and compared, not megabytes."""
    return None if text is None else hashlib.sha256(text).digest()


class _Worker(threading.Thread):
    """One read connection in one read transaction, feeding ``out`` until done or stopped."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        stop: threading.Event,
        out: queue.Queue[Any],
        produce: Callable[[sqlite3.Connection], Generator[Any, None, None]],
    ) -> None:
        super().__init__(name="auditledger-verify", daemon=True)
        self._open, self._halted, self._out, self._produce = connect, stop, out, produce
        self._conn: sqlite3.Connection | None = None
        self._ready = threading.Event()

    def run(self) -> None:
        try:
            self._conn = conn = self._open()
            self._ready.set()
            conn.execute("BEGIN")
            for item in self._produce(conn):
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as exc:  # handed to the reader, which leaves the chunks to the exact check
            self._put(exc)
        finally:
            self._ready.set()
            if self._conn is not None:
                with suppress(sqlite3.Error):
                    self._conn.close()

    def _put(self, item: object) -> bool:
        while not self._halted.is_set():
            with suppress(queue.Full):
                self._out.put(item, timeout=0.05)
                return True
        return False

    def halt(self) -> None:
        """Interrupt a statement still running and wait for the thread."""
        if self.is_alive():
            self._ready.wait()
            if self._conn is not None:
                with suppress(sqlite3.Error):
                    self._conn.interrupt()
            self.join()
