"""The embedded store: SQLite in WAL mode, one writer, readers per thread.

Writes are serialised by a lock around one connection and run inside
``BEGIN IMMEDIATE`` so that a second process waits for the file lock instead
of failing half-way. Readers use their own connection per thread and see the
last committed state (WAL snapshot isolation).
"""

from __future__ import annotations

import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from auditledger.errors import ConfigError, StoreError
from auditledger.query import Field, Match, Query, Term
from auditledger.store import (
    DETAILS_PENDING,
    VERIFY_CHUNK,
    CheckedChunk,
    Cursor,
    Facets,
    Head,
    LeafRow,
    NativeLines,
    Order,
    Row,
    VerifyChunk,
    merge_positions,
)

_COLUMNS = (
    "e.id, e.tenant, e.seq, e.date, e.resource_type, e.action, e.actor_type, e.actor_id, "
    "e.actor_name, e.outcome, e.idempotency_key, e.body"
)
_FIELD_COLUMNS = {
    Field.RESOURCE: "e.resource_type",
    Field.ACTION: "e.action",
    Field.ACTOR: "e.actor_id",
    Field.ACTOR_TYPE: "e.actor_type",
    Field.OUTCOME: "e.outcome",
    Field.ID: "e.id",
}
# The shipper's native record (formats.native_line) built by SQLite: the body without its closing
# brace, the leaf hash member, the brace and a newline; the body is a BLOB, read as UTF-8 text as is.
_NATIVE_LINE = (
    "CAST(substr(e.body, 1, length(e.body) - 1) AS TEXT) || ',\"leaf_hash\":\"' || lower(hex(l.hash)) "
    "|| '\"}' || char(10)"
)
_NATIVE_FROM = (
    "FROM events e JOIN leaves l ON l.tenant = e.tenant AND l.seq = e.seq "
    "WHERE e.tenant = ? AND e.seq >= ? AND e.seq < ? ORDER BY e.seq"
)
_VERIFY_FIELDS = (
    "e.id, e.date, e.resource_type, e.action, e.actor_type, e.actor_id, e.actor_name, e.outcome, e.body"
)
_VERIFY_POSITIONS = (
    f"SELECT l.seq, l.hash, l.purged, {_VERIFY_FIELDS} FROM leaves l "
    "LEFT JOIN events e ON e.tenant = l.tenant AND e.seq = l.seq "
    "WHERE l.tenant = ? AND l.seq >= ? AND l.seq < ? ORDER BY l.seq"
)
_VERIFY_LEAFLESS = (
    f"SELECT e.seq, NULL, 0, {_VERIFY_FIELDS} FROM events e WHERE e.tenant = ? AND e.seq >= ? AND e.seq < ? "
    "AND NOT EXISTS (SELECT 1 FROM leaves l WHERE l.tenant = e.tenant AND l.seq = e.seq)"
)
# details has no seq index (its key serves key:value search): one sorted pass over the
# range groups every position's rows, where a query per chunk would scan the table again.
_VERIFY_DETAILS = (
    "SELECT seq, count(*), json_group_object(CAST(key AS TEXT), CAST(value AS TEXT)) FROM details "
    "WHERE tenant = ? AND seq >= ? AND seq < ? GROUP BY seq ORDER BY seq"
)
_MIGRATION_RE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
_MAX_CHAR = "\U0010ffff"
# The writer checkpoints by itself only when the background checkpointer has fallen this far
# behind (pages of 4 KiB: 64 MiB of WAL); SQLite's default of 1,000 pages put a checkpoint
# inside one commit in every few.
_WRITER_CHECKPOINT_PAGES = 16_384
_CHECKPOINT_PAUSE = 0.2  # seconds between two background checkpoints while commits go on
# Past this many frames in the WAL, purge's next batch first copies what is left under the writer
# lock, so that its own first write starts the WAL over (see ``purge_write``).
_PURGE_RESTART_FRAMES = _WRITER_CHECKPOINT_PAGES // 4
# The writer's page cache (KiB; pages are taken as used). A group commit of a few thousand
# events touches thousands of details and index pages spread over the file: with SQLite's
# default 2 MiB they were read again on every batch and spilled to the WAL before the commit.
_WRITER_CACHE_KIB = 65_536
_INCREMENTAL = 2  # PRAGMA auto_vacuum: 0 none, 1 full, 2 incremental


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """The dialect's migrations as (version, name, sql), in order."""
    folder = resources.files("auditledger.store") / "migrations" / dialect
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_RE.fullmatch(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    return sorted(found)


# FULL (the default) syncs the WAL at every commit: an acknowledged event survives a power cut.
# NORMAL syncs only at checkpoints: faster single writes, the last commits can be lost on power loss.
_SYNCHRONOUS = ("FULL", "EXTRA", "NORMAL")
_SYNCHRONOUS_LEVEL = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}
_JOURNALS = ("wal", "keep")
_JOIN_SAVEPOINT = "auditledger_append"
_JOINABLE_KEPT = 256  # an application's pool holds a few connections; past this many, check again


def _url_options(url: str) -> tuple[str, dict[str, str]]:
    """``sqlite:///a.db?synchronous=NORMAL`` -> (``sqlite:///a.db``, {"synchronous": "NORMAL"})."""
    base, sep, query = url.partition("?")
    if not sep:
        return url, {}
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - {"synchronous", "journal"})
    if unknown:
        raise ConfigError(f"store URL {url!r}: unknown option {unknown[0]!r}; the options are synchronous, journal")
    return base, options


class SQLiteStore:
    """The default store, embedded in the process."""

    def __init__(
        self,
        url: str,
        *,
        synchronous: str | None = None,
        journal: str | None = None,
        busy_timeout_ms: int = 30_000,
    ) -> None:
        self.url = url
        url, options = _url_options(url)
        if "synchronous" in options and options["synchronous"].upper() not in _SYNCHRONOUS:
            raise ConfigError(f"store URL {self.url!r}: synchronous must be one of {', '.join(_SYNCHRONOUS)}")
        # wal (the default) switches the file to WAL; keep leaves the file's journal mode as it is:
        # a ledger inside an application's database, written in the application's transactions
        # (join), must not change how the application's own commits work.
        journal = (journal or options.get("journal", "wal")).lower()
        if journal not in _JOURNALS:
            raise ConfigError(f"store URL {self.url!r}: journal must be one of {', '.join(_JOURNALS)}")
        self._journal = journal
        self._joinable: dict[int, sqlite3.Connection] = {}  # connections check_joinable accepted
        # OFF is for throwaway files only (benchmark set-up), so only code can ask for it.
        synchronous = synchronous or options.get("synchronous", "FULL")
        if synchronous.upper() not in (*_SYNCHRONOUS, "OFF"):
            raise ConfigError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
        if url.startswith("memory://") or url in ("sqlite://", "sqlite:///:memory:"):
            # One shared in-memory database per store, reachable by every thread's connection.
            self._target = f"file:auditledger-{uuid.uuid4().hex}?mode=memory&cache=shared"
            self._memory = True
        else:
            path = url.removeprefix("sqlite:///")
            if not path:
                raise ConfigError(f"store URL {url!r} has no file path")
            parent = Path(path).expanduser().resolve().parent
            if not parent.is_dir():
                raise ConfigError(f"store URL {url!r}: directory {parent} does not exist")
            self._target = f"file:{Path(path).expanduser()}"
            self._memory = False
        self._synchronous = synchronous.upper()
        self._busy_ms = busy_timeout_ms
        self._local = threading.local()
        self._write_lock = _WriterLock()
        self._wal_frames = 0  # frames in the WAL at purge's last checkpoint
        self._writer = self._connect()
        self._all: list[sqlite3.Connection] = [self._writer]
        self._migrate()
        self._checkpointer: _Checkpointer | None = None
        self._writer.execute(f"PRAGMA cache_size = -{_WRITER_CACHE_KIB}")
        (mode,) = self._writer.execute("PRAGMA journal_mode").fetchone()
        if not self._memory and mode == "wal":
            self._writer.execute(f"PRAGMA wal_autocheckpoint = {_WRITER_CHECKPOINT_PAGES}")
            self._checkpointer = _Checkpointer(self._connect, self.url)

    # ------------------------------------------------------------ connections

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self._target, uri=True, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_ms)}")
            if not self._memory and self._journal == "wal":
                # auto_vacuum only takes effect on a new file and must come before WAL mode is set,
                # or the header is written without it (purge's incremental vacuum needs it). Set on
                # a file that has it already, it rewrites the header and syncs (~8 ms, a write
                # lock): every connection paid that, verify's three each time it ran.
                if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != _INCREMENTAL:
                    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal":
                    raise StoreError(f"could not switch {self.url} to WAL mode (got {mode})")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.url}: {exc}") from None
        return conn

    def reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            self._all.append(conn)
        return conn

    def close(self) -> None:
        self._joinable.clear()
        if self._checkpointer is not None:
            self._checkpointer.stop()
        for conn in self._all:
            with suppress(sqlite3.Error):
                conn.close()
        self._all.clear()

    def _migrate(self) -> None:
        conn = self._writer
        with self._write_lock:
            if self._journal == "wal":
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect on a new file
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
            for version, name, sql in migrations("sqlite"):
                if version in done:
                    continue
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    # executescript would commit; run statement by statement inside our transaction.
                    for statement in _split_sql(sql):
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
                        (version, name),
                    )
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK")
                    raise StoreError(f"migration {version:04d}_{name} failed on {self.url}: {exc}") from None

    def schema_version(self) -> int:
        row = self.reader().execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    # ------------------------------------------------------------ writing

    @contextmanager
    def write(self) -> Iterator[SQLiteWriteTxn]:
        with self._write_lock:
            conn = self._writer
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot start a write on {self.url}: {exc}") from None
            try:
                yield SQLiteWriteTxn(conn)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StoreError(f"commit failed on {self.url}: {exc}") from None
            if self._checkpointer is not None:
                self._checkpointer.poke()

    @contextmanager
    def raw_write(self) -> Iterator[sqlite3.Connection]:
        """The writer connection inside ``BEGIN IMMEDIATE``, for dialect code such as purge."""
        with self.write() as txn:
            yield txn.conn

    def check_joinable(self, conn: sqlite3.Connection) -> None:
        """Refuse, with a :class:`ConfigError` saying why, a connection that :meth:`join` must not write through.

        It must be open on this store's file, and its commits must be at least as durable
        as this store's own (its ``synchronous`` level, a journal that survives a crash):
        otherwise an application commit could be acknowledged while its events were not
        yet on disk.
        """
        if self._memory:
            raise ConfigError(f"{self.url}: an in-memory ledger cannot share an application's transactions")
        # Its file cannot change, so it is checked once; its durability can (any PRAGMA on it), so every time.
        known = self._joinable.get(id(conn)) is conn  # held here, so its id cannot belong to another connection
        try:
            files = {} if known else {name: path for _, name, path in conn.execute("PRAGMA database_list")}
            (level,) = conn.execute("PRAGMA synchronous").fetchone()
            (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        except sqlite3.Error as exc:
            raise ConfigError(f"{self.url}: cannot inspect the application's connection: {exc}") from None
        if not known:
            mine = self._target.removeprefix("file:")
            theirs = files.get("main") or ""
            if not theirs or not Path(theirs).exists() or not Path(theirs).samefile(mine):
                raise ConfigError(
                    f"{self.url}: the application's connection is on {theirs or 'an in-memory database'!r}, not on "
                    "the ledger's file; open the ledger on the application's database to share its transactions"
                )
        if str(mode).lower() in ("off", "memory"):
            raise ConfigError(
                f"{self.url}: the application's connection runs journal_mode={mode}: its commits are not "
                "crash-safe, so they cannot carry the audit events"
            )
        if int(level) < _SYNCHRONOUS_LEVEL[self._synchronous]:
            names = {v: k for k, v in _SYNCHRONOUS_LEVEL.items()}
            raise ConfigError(
                f"{self.url}: the application's connection runs synchronous={names.get(int(level), level)}, "
                f"the ledger {self._synchronous}: its commits would not make the audit events as durable; "
                f"set PRAGMA synchronous={self._synchronous} on the application's connections "
                "(or open the ledger with ?synchronous=... to accept less)"
            )
        if known:
            return
        if len(self._joinable) >= _JOINABLE_KEPT:
            self._joinable.clear()
        self._joinable[id(conn)] = conn

    @contextmanager
    def join(self, conn: sqlite3.Connection) -> Iterator[SQLiteWriteTxn]:
        """A write inside the caller's own transaction on ``conn`` (see :meth:`check_joinable`).

        Nothing is committed here: the caller's commit makes the rows durable together with
        its own changes, in one commit and one sync, and its rollback takes them back. A
        savepoint makes this write all or nothing inside that transaction. This store's
        lock is not taken: the caller may already hold the file's write lock, and waiting
        for a writer of this store that waits for that file lock would deadlock; SQLite's
        file lock serialises the two (a head read before the caller's first write is
        checked by the write itself: a stale snapshot cannot write, and ``leaves`` is keyed
        by position).
        """
        try:
            if not conn.in_transaction:
                conn.execute("BEGIN")  # the caller's commit ends it; a bare savepoint would commit on release
            conn.execute(f"SAVEPOINT {_JOIN_SAVEPOINT}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to {self.url} in the application's transaction: {exc}") from None
        try:
            yield SQLiteWriteTxn(conn)
        except BaseException:
            with suppress(sqlite3.Error):
                conn.execute(f"ROLLBACK TO {_JOIN_SAVEPOINT}")
                conn.execute(f"RELEASE {_JOIN_SAVEPOINT}")
            raise
        try:
            conn.execute(f"RELEASE {_JOIN_SAVEPOINT}")
        except sqlite3.Error as exc:
            raise StoreError(f"write failed on {self.url} in the application's transaction: {exc}") from None

    # ------------------------------------------------------------ purge (retention's hooks)

    @contextmanager
    def purge_write(self, *, lift_guards: bool = True) -> Iterator[SQLiteWriteTxn]:
        """One purge batch: a write transaction whose commit skips the fsync and the zeroing of freed pages.

        No acknowledged write depends on that fsync: the purge's own AUDITLOG event and every
        ingest commit after the batch sync the WAL, batch included. A machine that loses power
        first simply has not purged that batch yet. ``secure_delete = FAST`` (Debian builds
        default to ON) still zeroes deleted cells inside pages; whole freed pages keep their old
        bytes until reused or cut off by the incremental vacuum that ends a large purge. Zeroing
        them doubled the bytes a purge writes.

        With ``lift_guards`` the triggers that refuse purge's deletes and leaf updates are dropped
        at the start of the transaction and created again, from their own stored text, just
        before its commit (see ``_lifted_guards``).
        """
        with self._write_lock:
            conn = self._writer
            if self._wal_frames > _PURGE_RESTART_FRAMES:
                self._restart_wal(conn)
            (sync,) = conn.execute("PRAGMA synchronous").fetchone()
            (secure,) = conn.execute("PRAGMA secure_delete").fetchone()
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA secure_delete = FAST")
            try:
                with self.write() as txn:
                    if lift_guards:
                        with _lifted_guards(txn):
                            yield txn
                    else:
                        yield txn
            finally:
                conn.execute(f"PRAGMA synchronous = {int(sync)}")
                conn.execute(f"PRAGMA secure_delete = {int(secure)}")

    def checkpoint(self) -> bool:
        """Copy the WAL into the database file now, from this thread, without the writer lock (PASSIVE).

        Purge calls it between batches: it writes faster than the background checkpointer
        copies, and once the WAL passes the writer's threshold the copy runs inside a
        commit, often an ingest one (0.7-1.3 s stalls at 1M events). Waiting for the copy
        paces purge to the disk instead. False when another checkpoint was running.
        """
        with suppress(sqlite3.Error):
            (busy, frames, _), = self.reader().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self._wal_frames = max(0, frames)
            return not busy
        return False

    def _restart_wal(self, conn: sqlite3.Connection) -> None:
        """Under the writer lock: copy the frames the last checkpoint left, so the next write restarts the WAL.

        SQLite starts the WAL over only when a write transaction begins with every frame
        already copied. Purge's checkpoints run outside the lock, and the ingest commit that
        was waiting for the batch lands meanwhile, so that almost never held: the WAL grew
        past the writer's backstop (17.5k frames at 1M events) and the backstop's copy then
        ran inside an ingest commit. Here only that last commit's frames are left to copy.
        """
        with suppress(sqlite3.Error):
            (busy, frames, copied), = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            if not busy and frames == copied:
                self._wal_frames = 0

    def writers_waiting(self) -> int:
        """How many threads wait for the writer now (purge lets them in before its next batch)."""
        return self._write_lock.waiting

    def forget_purged_actors(self, tenant: str) -> int:
        """Drop the actors that no remaining event of ``tenant`` names: a purge takes their names along.

        The search for them runs on a reader, outside the write lock (an actor renamed long ago may
        mean a walk over that actor's entries); each one found is checked again as it is deleted,
        in case an event of it arrived meanwhile.
        """
        gone = self._query(f"SELECT actor_id, actor_name FROM actors WHERE tenant = ? AND {_NO_EVENT}", [tenant])
        if not gone:
            return 0
        with self.write() as txn:
            return sum(
                txn.execute(
                    f"DELETE FROM actors WHERE tenant = ? AND actor_id = ? AND actor_name = ? AND {_NO_EVENT}",
                    [tenant, actor_id, name],
                )
                for actor_id, name in gone
            )

    def purge_details_sql(self, events_where: str) -> str:
        """The statement deleting the details rows of the events ``events_where`` selects (alias ``e``).

        The details key is (tenant, key, value, seq) with no index on seq: the keys are read
        from the hashed bodies, so every row is found by its whole primary key.
        """
        return (
            "DELETE FROM details WHERE (tenant, key, value, seq) IN (SELECT e.tenant, j.key, j.value, e.seq "
            f"FROM events e, json_each(CAST(e.body AS TEXT), '$.details') j WHERE {events_where})"
        )

    def sweep_purged_details(
        self,
        txn: SQLiteWriteTxn,
        tenant: str,
        span: tuple[int, int],
        after: DetailsKey,
        rows: int,
        *,
        pending_below: bool = True,
    ) -> tuple[DetailsKey | None, int]:
        """Delete the details rows of purged positions among the next ``rows`` rows of the key after ``after``.

        ``span`` is (first, end): every position in [first, end) is known purged, and none
        from end on is looked at; below first, rows go whose leaf is marked DETAILS_PENDING,
        unless the caller knows none is (``pending_below`` False) or first is 0. Walking the
        table in key order reads and rewrites each page once for the whole purge, where deleting
        a large purge's details batch by batch rewrote pages scattered over the table every batch.
        Returns where to resume (None at the end) and how many rows went.
        """
        upper = txn.query(_SWEEP_NEXT, [tenant, *after, max(0, rows - 1)])
        end: DetailsKey = (upper[0][0], upper[0][1], upper[0][2]) if upper else (_MAX_CHAR, "", 0)
        if span[0] <= 0 or not pending_below:
            deleted = txn.execute(_SWEEP_DELETE_RANGE, [tenant, *after, *end, span[1], span[0]])
        else:
            deleted = txn.execute(_SWEEP_DELETE, [tenant, *after, *end, span[1], span[0]])
        return (end if upper else None), deleted

    # ------------------------------------------------------------ reading

    def get(self, tenant: str | None, id: str) -> Row | None:
        sql = f"SELECT {_COLUMNS} FROM events e WHERE e.id = ?"
        params: list[Any] = [id]
        if tenant is not None:
            sql += " AND e.tenant = ?"
            params.append(tenant)
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    def get_by_seq(self, tenant: str, seq: int) -> Row | None:
        rows = self._rows(f"SELECT {_COLUMNS} FROM events e WHERE e.tenant = ? AND e.seq = ?", [tenant, seq])
        return rows[0] if rows else None

    def search(
        self, tenant: str | None, query: Query, *, limit: int, after: Cursor | None = None, order: Order = "desc"
    ) -> list[Row]:
        where, params = self._where(tenant, query)
        direction = "DESC" if order == "desc" else "ASC"
        cmp = "<" if order == "desc" else ">"
        if after is not None:
            if tenant is not None:
                where += f" AND e.seq {cmp} ?"
                params.append(after.seq)
            else:
                where += f" AND (e.date, e.tenant, e.seq) {cmp} (?, ?, ?)"
                params += [after.date, after.tenant, after.seq]
        order_by = (
            f"e.seq {direction}"
            if tenant is not None
            else f"e.date {direction}, e.tenant {direction}, e.seq {direction}"
        )
        sql = f"SELECT {_COLUMNS} FROM events e WHERE {where} ORDER BY {order_by} LIMIT ?"
        params.append(int(limit))
        return self._rows(sql, params)

    def count(self, tenant: str | None, query: Query, *, cap: int) -> int:
        where, params = self._where(tenant, query)
        sql = f"SELECT count(*) FROM (SELECT 1 FROM events e WHERE {where} LIMIT ?)"
        params.append(int(cap) + 1)
        return int(self._query(sql, params)[0][0])

    def facets(self, tenant: str | None, query: Query, *, bucket_micros: int, counts: bool = True) -> Facets:
        where, params = self._where(tenant, query)

        def count_by(column: str) -> dict[str, int]:
            if not counts:
                return {}
            sql = f"SELECT {column}, count(*) FROM events e WHERE {where} GROUP BY 1 ORDER BY 2 DESC, 1"
            return {str(k): int(n) for k, n in self._query(sql, params)}

        step = max(1, int(bucket_micros))
        timeline = self._query(
            f"SELECT (e.date / {step}) * {step}, count(*) FROM events e WHERE {where} GROUP BY 1 ORDER BY 1", params
        )
        return Facets(
            count_by("e.resource_type"),
            count_by("e.action"),
            count_by("e.actor_type"),
            [(int(b), int(n)) for b, n in timeline],
        )

    def _where(self, tenant: str | None, query: Query) -> tuple[str, list[Any]]:
        """where_clause with two rewrites for one tenant that keep the first page fast on large ledgers.

        * A tenant's dates increase with seq (the ledger places them so, verify checks it), so a
          top-level date range is the seq range between the first entries at or after each bound:
          an ordered range of the (tenant, seq) index instead of sorting every entry in the range.
        * A details term matching many entries is tested per row by primary-key lookups
          (``EXISTS``) instead of first collecting every matching seq (see ``_dense_values``).
        * A free word matching few entries is collected from the indexes, actors included (see
          ``_rare_actors``), instead of testing every entry of the tenant for it.
        """
        if tenant is None:
            return where_clause(tenant, query, self._keys_for(tenant, query))
        bounds: list[tuple[str, int]] = []
        if query.after is not None or query.before is not None:
            from auditledger.model import to_micros

            for moment, op in ((query.after, ">="), (query.before, "<")):
                if moment is not None:
                    row = self._query(
                        "SELECT seq FROM events WHERE tenant = ? AND date >= ? ORDER BY date LIMIT 1",
                        [tenant, to_micros(moment)],
                    )
                    bounds.append((f"e.seq {op} ?", int(row[0][0]) if row else 1 << 62))
            query = Query(query.terms, None, None, query.any_of)
        keys = self._keys_for(tenant, query)
        where, params = where_clause(tenant, query, keys, self._dense_values(tenant, keys), self._rare_actors(tenant))
        for cond, value in bounds:
            where += f" AND {cond}"
            params.append(value)
        return where, params

    def _dense_values(self, tenant: str, keys: Sequence[str]) -> DenseValues:
        """For a details term or free word matching at least _DENSE entries, the (key, value) pairs it stands for.

        Collecting the seqs of a frequent value (``namespace:company``) costs more than the
        whole first page; a rare one is cheapest collected. Prefix, namespace and free-word
        terms are expanded into their distinct values by skipping along the primary key.
        """
        conn = self.reader()

        def pairs(term: Term) -> list[tuple[str, str]] | None:
            found: list[tuple[str, str]] = []
            word = term.field is Field.TEXT
            match = Match.PREFIX if word and term.match is Match.EXACT else term.match
            for key in keys if word else [term.key or ""]:
                for value in term.values:
                    if match is Match.EXACT:
                        found.append((key, value))
                        continue
                    if match is Match.PREFIX:
                        low, high = value, value + _MAX_CHAR
                    elif match is Match.NAMESPACE:
                        found.append((key, value))
                        low, high = value + ".", value + "." + _MAX_CHAR
                    else:
                        return None
                    rows = conn.execute(_VALUES_IN_RANGE, (tenant, key, low, high, _MAX_EXPAND))
                    found += [(key, v) for (v,) in rows]
                    if len(found) > _MAX_EXPAND:
                        return None
            if not found:
                return None
            cond, params = _pairs_cond(found)
            (n,) = conn.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM details d WHERE d.tenant = ? AND ({cond}) LIMIT {_DENSE})",
                [tenant, *params],
            ).fetchone()
            return found if n >= _DENSE else None

        return pairs

    def _rare_actors(self, tenant: str) -> RareActors:
        """For a free word not frequent in details, the ids of the actors whose id or name it matches.

        None means "test each entry": the word is frequent among the actors, where the first
        page fills fast (``_term`` asks only for words ``_dense_values`` found rare in details).
        Otherwise the ids, found in the small ``actors`` table, let the whole word be collected
        through indexes: a word matching nothing costs a few lookups, not a pass over every
        entry of the tenant.
        """
        conn = self.reader()

        def actors(term: Term) -> list[str] | None:
            # The same comparison as the per-entry test of _term: a plain word equals an actor's id or name.
            by_id, id_params = _match("a.actor_id", term)
            by_name, name_params = _match("a.actor_name", term)
            rows = conn.execute(
                f"SELECT DISTINCT a.actor_id FROM actors a WHERE a.tenant = ? AND ({by_id} OR {by_name}) "
                f"LIMIT {_MAX_EXPAND + 1}",
                [tenant, *id_params, *name_params],
            ).fetchall()
            ids = [str(i) for (i,) in rows]
            if len(ids) > _MAX_EXPAND:
                return None
            if not ids:
                return ids
            (n,) = conn.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM events WHERE tenant = ? "
                f"AND actor_id IN ({','.join('?' * len(ids))}) LIMIT {_DENSE})",
                [tenant, *ids],
            ).fetchone()
            return ids if n < _DENSE else None

        return actors

    def _keys_for(self, tenant: str | None, query: Query) -> list[str]:
        return detail_keys(self.reader(), tenant) if has_text(query) else []

    def heads(self) -> list[Head]:
        return [
            Head(t, s, d) for t, s, d in self._query("SELECT tenant, size, last_date FROM heads ORDER BY tenant", [])
        ]

    def scan(self, tenant: str, start: int = 0, end: int | None = None) -> Iterator[LeafRow]:
        """Leaves joined with their events, read in chunks so memory stays flat."""
        stop = end if end is not None else 1 << 62
        chunk = 5000
        pos = start
        conn = self.reader()
        while pos < stop:
            hi = min(pos + chunk, stop)
            leaves = conn.execute(
                "SELECT seq, hash, purged FROM leaves WHERE tenant = ? AND seq >= ? AND seq < ? ORDER BY seq",
                (tenant, pos, hi),
            ).fetchall()
            rows = {
                r.seq: r
                for r in self._rows(
                    f"SELECT {_COLUMNS} FROM events e WHERE e.tenant = ? AND e.seq >= ? AND e.seq < ?",
                    [tenant, pos, hi],
                    with_details=True,
                )
            }
            yield from merge_positions(leaves, rows)
            if not leaves and not rows:
                more = conn.execute(
                    "SELECT min(seq) FROM (SELECT seq FROM leaves WHERE tenant = ? AND seq >= ? "
                    "UNION ALL SELECT seq FROM events WHERE tenant = ? AND seq >= ?)",
                    (tenant, hi, tenant, hi),
                ).fetchone()[0]
                if more is None:
                    return
                hi = int(more)
            pos = hi

    def verify_chunks(self, tenant: str, start: int, end: int) -> Generator[VerifyChunk, None, None]:
        """Positions for verify, all read in one snapshot (a read transaction of its own connection).

        An in-memory store reads without one: its shared cache would lock writers out meanwhile.
        """
        conn = self.reader() if self._memory else self._connect()
        try:
            if not self._memory:
                conn.execute("BEGIN")
            groups = conn.execute(_VERIFY_DETAILS, (tenant, start, end))
            pending = groups.fetchone()
            for lo in range(start, end, VERIFY_CHUNK):
                hi = min(lo + VERIFY_CHUNK, end)
                positions = conn.execute(_VERIFY_POSITIONS, (tenant, lo, hi)).fetchall()
                joined = sum(1 for p in positions if p[11] is not None)
                (stored,) = conn.execute(
                    "SELECT count(*) FROM events WHERE tenant = ? AND seq >= ? AND seq < ?", (tenant, lo, hi)
                ).fetchone()
                if stored != joined:  # events with no leaf: rare, so looked for only when the counts differ
                    positions += conn.execute(_VERIFY_LEAFLESS, (tenant, lo, hi)).fetchall()
                    positions.sort(key=lambda p: int(p[0]))
                details: dict[int, tuple[int, str]] = {}
                while pending is not None and pending[0] < hi:
                    details[pending[0]] = (pending[1], pending[2])
                    pending = groups.fetchone()
                yield VerifyChunk(positions, details)
        except sqlite3.Error as exc:
            raise StoreError(f"read failed on {self.url}: {exc}") from None
        finally:
            if not self._memory:
                with suppress(sqlite3.Error):
                    conn.close()

    def checked_chunks(
        self, tenant: str, start: int, end: int
    ) -> AbstractContextManager[Iterator[CheckedChunk]] | None:
        """The database's checks in worker threads (``sqlite_verify``); not for an in-memory store,
        whose shared cache would lock writers out while three connections read."""
        if self._memory:
            return None
        from auditledger.store import sqlite_verify

        return sqlite_verify.checked_chunks(self._connect, self.url, tenant, start, end)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._query(sql, params)

    def native_lines(self, tenant: str, start: int, end: int) -> NativeLines:
        """One aggregate row per window: no Python object per event, and the GIL is free while SQLite works."""
        conn = self.reader()
        params = (tenant, start, end)
        try:
            lines = _native_aggregate(conn, params)
            if lines is not None:
                return lines
            rows = conn.execute(f"SELECT e.seq, CAST({_NATIVE_LINE} AS BLOB) {_NATIVE_FROM}", params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"read failed on {self.url}: {exc}") from None
        return NativeLines([seq for seq, _ in rows], b"".join([line for _, line in rows]))

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        try:
            return self.reader().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"read failed on {self.url}: {exc}") from None

    def _rows(self, sql: str, params: Sequence[Any], *, with_details: bool = False) -> list[Row]:
        raw = self._query(sql, params)
        details: dict[tuple[str, int], dict[str, str]] = {}
        if with_details and raw:
            tenant = raw[0][1]
            seqs = [r[2] for r in raw]
            for key, value, seq in self._query(
                "SELECT key, value, seq FROM details WHERE tenant = ? AND seq >= ? AND seq <= ?",
                [tenant, min(seqs), max(seqs)],
            ):
                details.setdefault((tenant, seq), {})[key] = value
        return [
            Row(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                r[8],
                r[9],
                r[10],
                _blob(r[11]),
                b"",
                details.get((r[1], r[2]), {}),
            )
            for r in raw
        ]


class _WriterLock:
    """The writer's lock: reentrant (purge_write holds it across write()'s commit and its own pragma
    resets) and counting the threads waiting for it.

    A lock is not fair: a purge that released it and took it again a millisecond later often
    beat a waiting ingest thread, which then waited through several batches. Purge now waits
    until the count is zero before its next batch.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._count = threading.Lock()
        self.waiting = 0

    def __enter__(self) -> None:
        with self._count:
            self.waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._count:
                self.waiting -= 1

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class _Checkpointer:
    """Copies the WAL into the database file on its own thread and connection.

    SQLite's automatic checkpoint runs inside the ``COMMIT`` that crosses the
    threshold, so every few commits one request also waited for the copy and
    the database file's fsync. Here each commit only wakes this thread, which
    runs a passive checkpoint (it never blocks the writer or the readers) at
    most every ``_CHECKPOINT_PAUSE`` seconds. Durability is untouched: a commit
    is durable once its WAL frames are synced, before any checkpoint. The WAL
    starts over once a checkpoint has copied every frame before the next write
    begins; if this thread ever falls far behind, the writer's own automatic
    checkpoint (``_WRITER_CHECKPOINT_PAGES``) still bounds the WAL.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], url: str) -> None:
        self._connect = connect
        self._name = f"auditledger-checkpoint {url}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poke(self) -> None:
        """A commit happened: its frames wait in the WAL (called by the writer, under its lock)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        try:
            conn = self._connect()
        except StoreError:
            return  # the writer's own automatic checkpoint still bounds the WAL
        try:
            while True:
                self._wake.wait()
                if self._stop.is_set():
                    return
                self._wake.clear()
                with suppress(sqlite3.Error):  # busy or failing: the next commit wakes us again
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                if self._stop.wait(_CHECKPOINT_PAUSE):
                    return
        finally:
            conn.close()


# The triggers that refuse what purge does (row deletes of events and details, marking leaves)
# unless the purge gate is open.
_PURGE_GUARDS = ("events_no_delete", "details_no_delete", "leaves_no_update")


@contextmanager
def _lifted_guards(txn: SQLiteWriteTxn) -> Iterator[None]:
    """Purge's triggers dropped for the body of ``txn``'s transaction and created again before it commits.

    A row trigger costs SQLite more than the test it makes: each deleted or updated row runs
    the trigger's program, and a delete with a trigger on its table is done in two passes
    (the keys collected first, each row then looked up again). On the details sweep that was
    three quarters of its time, on the leaves update two thirds. Inside the transaction no other
    connection sees the change: every committed state has the triggers, exactly as stored
    (their text is read back from the schema here), and a batch that fails rolls back to them.
    Other connections re-read the schema once after such a commit (well under a millisecond).
    """
    marks = ",".join("?" * len(_PURGE_GUARDS))
    stored = txn.query(f"SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name IN ({marks})",
                       _PURGE_GUARDS)
    for name, _ in stored:
        txn.execute(f'DROP TRIGGER "{name}"')
    yield
    for _, sql in stored:
        txn.execute(sql)


_NO_EVENT = (
    "NOT EXISTS (SELECT 1 FROM events e WHERE e.tenant = actors.tenant AND e.actor_id = actors.actor_id "
    "AND coalesce(e.actor_name, '') = actors.actor_name)"
)
DetailsKey = tuple[str, str, int]  # a details primary key without its tenant: (key, value, seq)
_SWEEP_NEXT = (
    "SELECT key, value, seq FROM details WHERE tenant = ? AND (key, value, seq) > (?, ?, ?) "
    "ORDER BY key, value, seq LIMIT 1 OFFSET ?"
)
_SWEEP_DELETE = (
    "DELETE FROM details WHERE tenant = ? AND (key, value, seq) > (?, ?, ?) AND (key, value, seq) <= (?, ?, ?) "
    "AND seq < ? AND (seq >= ? OR EXISTS (SELECT 1 FROM leaves l WHERE l.tenant = details.tenant "
    f"AND l.seq = details.seq AND l.purged = {DETAILS_PENDING}))"
)
# The same when no position below the range waits for a sweep: with no subquery SQLite deletes
# in one pass as it walks the key, where the form above first copies every key it deletes into
# a temporary index and then seeks each one again (2.7x the time on 261k rows).
_SWEEP_DELETE_RANGE = (
    "DELETE FROM details WHERE tenant = ? AND (key, value, seq) > (?, ?, ?) AND (key, value, seq) <= (?, ?, ?) "
    "AND seq < ? AND seq >= ?"
)


def _native_aggregate(conn: sqlite3.Connection, params: tuple[str, int, int]) -> NativeLines | None:
    """A window's native lines as one aggregate, or None where SQLite cannot give them so.

    That is when the window is over SQLite's largest value (1 GB by default: big
    events in a big batch), or when the lines came out of seq order (SQLite
    before 3.44 does not promise an aggregate's order). The caller reads row by row then.
    """
    try:
        seq_text, data = conn.execute(
            f"SELECT group_concat(seq), CAST(group_concat(line, '') AS BLOB) "
            f"FROM (SELECT e.seq AS seq, {_NATIVE_LINE} AS line {_NATIVE_FROM})",
            params,
        ).fetchone()
    except sqlite3.DataError:
        return None
    seqs = list(map(int, seq_text.split(","))) if seq_text else []
    return NativeLines(seqs, data or b"") if all(a < b for a, b in pairwise(seqs)) else None


def _blob(value: object) -> bytes:
    """Stored bytes; a text put there behind our back still hashes as its UTF-8 bytes."""
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")


_LEAVES_PER_INSERT = 250  # 750 parameters, under every SQLite's limit (999 before 3.32)
_EVENT_FIELDS = 12  # Row: id ... body, the events table's columns in order, then leaf_hash and details
_INSERT_LEAF = "INSERT INTO leaves (tenant, seq, hash) VALUES (?, ?, ?)"
_INSERT_EVENT = (  # Row's first fields, in the columns' order
    "INSERT INTO events (id, tenant, seq, date, resource_type, action, actor_type, actor_id, "
    "actor_name, outcome, idempotency_key, body) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_DETAIL = "INSERT INTO details (tenant, key, value, seq) VALUES (?, ?, ?, ?)"
_INSERT_ACTOR = "INSERT OR IGNORE INTO actors (tenant, actor_id, actor_name) VALUES (?, ?, ?)"
# One event's details in one statement (the texts are built once, then taken from sqlite3's statement cache).
_DETAILS_PER_STATEMENT = 16
_INSERT_DETAILS = {
    n: "INSERT INTO details (tenant, key, value, seq) VALUES " + ",".join(["(?, ?, ?, ?)"] * n)
    for n in range(1, _DETAILS_PER_STATEMENT + 1)
}


class SQLiteWriteTxn:
    """The operations of one ``BEGIN IMMEDIATE`` transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def head(self, tenant: str) -> Head:
        row = self.conn.execute("SELECT size, last_date FROM heads WHERE tenant = ?", (tenant,)).fetchone()
        return Head(tenant, 0, 0) if row is None else Head(tenant, row[0], row[1])

    def find_idempotent(self, tenant: str, keys: Sequence[str]) -> dict[str, tuple[str, int]]:
        found: dict[str, tuple[str, int]] = {}
        for i in range(0, len(keys), 500):
            part = list(keys[i : i + 500])
            marks = ",".join("?" * len(part))
            for key, id, seq in self.conn.execute(
                f"SELECT idempotency_key, id, seq FROM events WHERE tenant = ? AND idempotency_key IN ({marks})",
                [tenant, *part],
            ):
                found[key] = (id, seq)
        return found

    def insert(self, rows: Sequence[Row]) -> None:
        try:
            if len(rows) == 1:
                self._insert_one(rows[0])
                return
            # 250 leaves per statement: one step (and one hand-over of the interpreter lock) per
            # row cost ~6,000 more instructions per appended event (callgrind, bench/http_ingest.py).
            for i in range(0, len(rows), _LEAVES_PER_INSERT):
                chunk = rows[i : i + _LEAVES_PER_INSERT]
                self.conn.execute(
                    "INSERT INTO leaves (tenant, seq, hash) VALUES " + ",".join(["(?, ?, ?)"] * len(chunk)),
                    [value for r in chunk for value in (r.tenant, r.seq, r.leaf_hash)],
                )
            self.conn.executemany(_INSERT_EVENT, [r[:_EVENT_FIELDS] for r in rows])
            self.conn.executemany(_INSERT_DETAIL, [(r.tenant, k, v, r.seq) for r in rows for k, v in r.details.items()])
            # A batch has few distinct actors: the table free words search learns them in a few lookups.
            self.conn.executemany(_INSERT_ACTOR, sorted({(r.tenant, r.actor_id, r.actor_name or "") for r in rows}))
        except sqlite3.Error as exc:
            raise StoreError(f"insert failed: {exc}") from None

    def _insert_one(self, r: Row) -> None:
        """One event (an embedded app's request): ``execute`` costs half of a one-row ``executemany``,
        and its details go in one multi-row statement."""
        execute = self.conn.execute
        execute(_INSERT_LEAF, (r.tenant, r.seq, r.leaf_hash))
        execute(_INSERT_EVENT, r[:_EVENT_FIELDS])
        details = r.details
        if 0 < len(details) <= _DETAILS_PER_STATEMENT:
            execute(
                _INSERT_DETAILS[len(details)],
                [value for k, v in details.items() for value in (r.tenant, k, v, r.seq)],
            )
        elif details:
            self.conn.executemany(_INSERT_DETAIL, [(r.tenant, k, v, r.seq) for k, v in details.items()])
        execute(_INSERT_ACTOR, (r.tenant, r.actor_id, r.actor_name or ""))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            return self.conn.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"write failed: {exc}") from None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"read failed: {exc}") from None

    def set_head(self, head: Head) -> None:
        try:
            self.conn.execute(
                "INSERT INTO heads (tenant, size, last_date) VALUES (?, ?, ?) "
                "ON CONFLICT (tenant) DO UPDATE SET size = excluded.size, last_date = excluded.last_date",
                (head.tenant, head.size, head.last_date),
            )
        except sqlite3.Error as exc:  # like insert: a StoreError (503), not a stray sqlite3 error (500)
            raise StoreError(f"head update failed: {exc}") from None


# ---------------------------------------------------------------- query -> SQL


_DETAIL_KEYS = """
WITH RECURSIVE k(key) AS (
    SELECT min(key) FROM details WHERE tenant = ?1
    UNION ALL
    SELECT (SELECT min(key) FROM details WHERE tenant = ?1 AND key > k.key) FROM k WHERE k.key IS NOT NULL
) SELECT key FROM k WHERE key IS NOT NULL"""


def detail_keys(conn: sqlite3.Connection, tenant: str | None) -> list[str]:
    """The distinct details keys in use, found by skipping along the primary key."""
    tenants = [tenant] if tenant is not None else [t for (t,) in conn.execute("SELECT tenant FROM heads")]
    keys: set[str] = set()
    for name in tenants:
        keys.update(k for (k,) in conn.execute(_DETAIL_KEYS, (name,)))
    return sorted(keys)


_DETAIL_FIELDS = (Field.DETAIL, Field.TEXT)
_DENSE = 2000  # a details term matching this many entries is checked per row, not collected
_MAX_EXPAND = 200  # most distinct values a prefix/namespace term is expanded into
_VALUES_IN_RANGE = """
WITH RECURSIVE v(value) AS (
    SELECT min(value) FROM details WHERE tenant = ?1 AND key = ?2 AND value >= ?3 AND value < ?4
    UNION ALL
    SELECT (SELECT min(value) FROM details WHERE tenant = ?1 AND key = ?2 AND value > v.value AND value < ?4)
    FROM v WHERE v.value IS NOT NULL
) SELECT value FROM v WHERE value IS NOT NULL LIMIT ?5 + 1"""

DenseValues = Callable[[Term], "list[tuple[str, str]] | None"]
RareActors = Callable[[Term], "list[str] | None"]


def _by_key(pairs: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    by_key: dict[str, list[str]] = {}
    for key, value in pairs:
        by_key.setdefault(key, []).append(value)
    return by_key


def _pairs_cond(pairs: Sequence[tuple[str, str]]) -> tuple[str, list[Any]]:
    """``d.key = k AND d.value IN (...)`` for each key of ``pairs``, ORed: primary-key point lookups."""
    by_key = _by_key(pairs)
    parts = [f"(d.key = ? AND d.value IN ({','.join('?' * len(values))}))" for values in by_key.values()]
    params: list[Any] = [item for key, values in by_key.items() for item in (key, *values)]
    return " OR ".join(parts), params


def _exists(pairs: Sequence[tuple[str, str]]) -> tuple[str, list[Any]]:
    """One ``EXISTS`` per key, each a set of primary-key point lookups.

    A single ``EXISTS`` with the keys ORed inside leaves the planner, on a file never
    analysed, with only ``tenant =`` for the index: a scan of the tenant's details per row
    (seconds to minutes at 100k events). Split per key, every lookup is bound on the whole key.
    """
    by_key = _by_key(pairs)
    parts = [
        "EXISTS (SELECT 1 FROM details d WHERE d.tenant = e.tenant AND d.key = ? "
        f"AND d.value IN ({','.join('?' * len(values))}) AND d.seq = e.seq)"
        for values in by_key.values()
    ]
    params: list[Any] = [item for key, values in by_key.items() for item in (key, *values)]
    return "(" + " OR ".join(parts) + ")", params


def where_clause(
    tenant: str | None,
    query: Query,
    keys: Sequence[str] = (),
    dense: DenseValues | None = None,
    actors: RareActors | None = None,
) -> tuple[str, list[Any]]:
    """The WHERE text and parameters of ``query`` over ``events e`` (values always bound).

    ``keys`` are the details keys in use, needed when the query has free words. ``dense``,
    for one tenant, names the exact values of details terms better tested per row; ``actors``
    the actors a rare free word matches, so that the word is collected through indexes.
    """
    parts: list[str] = []
    params: list[Any] = []
    if tenant is not None:
        parts.append("e.tenant = ?")
        params.append(tenant)
    _conjunction(tenant, query, parts, params, keys, dense, actors)
    return (" AND ".join(parts) or "1"), params


def has_text(query: Query) -> bool:
    return any(t.field is Field.TEXT for t in query.terms) or any(has_text(q) for q in query.any_of)


def _conjunction(
    tenant: str | None,
    query: Query,
    parts: list[str],
    params: list[Any],
    keys: Sequence[str],
    dense: DenseValues | None = None,
    actors: RareActors | None = None,
) -> None:
    if query.after is not None:
        from auditledger.model import to_micros

        parts.append("e.date >= ?")
        params.append(to_micros(query.after))
    if query.before is not None:
        from auditledger.model import to_micros

        parts.append("e.date < ?")
        params.append(to_micros(query.before))
    for term in query.terms:
        sql, term_params = _term(tenant, term, keys, dense, actors)
        # NOT of a NULL comparison is NULL, which would drop the row: negate a definite truth value.
        parts.append(f"NOT coalesce(({sql}), 0)" if term.negate else sql)
        params += term_params
    if query.any_of:
        alternatives = []
        for sub in query.any_of:
            sub_parts: list[str] = []
            _conjunction(tenant, sub, sub_parts, params, keys, dense, actors)
            alternatives.append("(" + (" AND ".join(sub_parts) or "1") + ")")
        parts.append("(" + " OR ".join(alternatives) + ")")


def _match(column: str, term: Term) -> tuple[str, list[Any]]:
    """``column`` compared with any of the term's values."""
    values = list(term.values)
    if term.match is Match.EXACT:
        if len(values) == 1:
            return f"{column} = ?", values
        return f"{column} IN ({','.join('?' * len(values))})", values
    alternatives: list[str] = []
    params: list[Any] = []
    for value in values:
        if term.match is Match.PREFIX:
            alternatives.append(f"({column} >= ? AND {column} < ?)")
            params += [value, value + _MAX_CHAR]
        elif term.match is Match.NAMESPACE:
            alternatives.append(f"({column} = ? OR ({column} >= ? AND {column} < ?))")
            params += [value, value + ".", value + "." + _MAX_CHAR]
        elif term.match is Match.CONTAINS:
            alternatives.append(f"instr({column}, ?) > 0")
            params.append(value)
        else:  # SUFFIX
            alternatives.append(f"substr({column}, -?) = ?")
            params += [len(value), value]
    return "(" + " OR ".join(alternatives) + ")", params


def _details_in(tenant: str | None, cond: str, params: list[Any]) -> tuple[str, list[Any]]:
    """Rows having a details entry that satisfies ``cond`` (uncorrelated, so it runs once)."""
    if tenant is not None:
        return f"e.seq IN (SELECT d.seq FROM details d WHERE d.tenant = ? AND {cond})", [tenant, *params]
    return f"(e.tenant, e.seq) IN (SELECT d.tenant, d.seq FROM details d WHERE {cond})", params


def _term(
    tenant: str | None,
    term: Term,
    keys: Sequence[str],
    dense: DenseValues | None = None,
    actors: RareActors | None = None,
) -> tuple[str, list[Any]]:
    pairs = dense(term) if dense is not None and tenant is not None and term.field in _DETAIL_FIELDS else None
    if term.field is Field.DETAIL:
        if pairs:
            return _exists(pairs)
        cond, params = _match("d.value", term)
        return _details_in(tenant, f"d.key = ? AND {cond}", [term.key, *params])
    if term.field is Field.TEXT:
        # A free word matches a details value it starts, or the actor's id or name. Naming each
        # key in use lets every alternative run as a range of the (tenant, key, value) index.
        words = Term(Field.TEXT, term.values, match=Match.PREFIX if term.match is Match.EXACT else term.match)
        cond, params = _match("d.value", words)
        if keys:
            cond = f"d.key IN ({','.join('?' * len(keys))}) AND {cond}"
            params = [*keys, *params]
        ids = actors(term) if actors is not None and tenant is not None and not pairs else None
        if ids is not None:
            return _rare_word(tenant, cond, params, term, ids)
        in_details, details_params = _exists(pairs) if pairs else _details_in(tenant, cond, params)
        actor_cond, actor_params = _match("e.actor_id", term)
        name_cond, name_params = _match("e.actor_name", term)
        return (
            f"({in_details} OR {actor_cond} OR {name_cond})",
            [*details_params, *actor_params, *name_params],
        )
    return _match(_FIELD_COLUMNS[term.field], term)


def _rare_word(
    tenant: str | None, cond: str, params: list[Any], term: Term, ids: Sequence[str]
) -> tuple[str, list[Any]]:
    """A rare free word as one collected set: its details entries, and the entries of the actors
    ``ids`` whose id or name it matches (rechecked per entry: an actor may have changed names)."""
    if not ids:
        return _details_in(tenant, cond, params)
    actor_cond, actor_params = _match("a.actor_id", term)
    name_cond, name_params = _match("a.actor_name", term)
    return (
        f"e.seq IN (SELECT d.seq FROM details d WHERE d.tenant = ? AND {cond} "
        f"UNION SELECT a.seq FROM events a WHERE a.tenant = ? AND a.actor_id IN ({','.join('?' * len(ids))}) "
        f"AND ({actor_cond} OR {name_cond}))",
        [tenant, *params, tenant, *ids, *actor_params, *name_params],
    )


def _split_sql(script: str) -> list[str]:
    """Statements of a migration; triggers keep their inner semicolons."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        if line.strip().startswith("--") or not line.strip():
            continue
        current.append(line)
        text = "\n".join(current)
        if sqlite3.complete_statement(text):
            statements.append(text)
            current = []
    if current:
        statements.append("\n".join(current))
    return statements
