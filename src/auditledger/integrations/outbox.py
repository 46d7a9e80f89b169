"""A transactional outbox: audit events committed in the application's own transaction.

    engine = create_engine("postgresql+psycopg://app@db/app")      # or the app's SQLite file
    outbox = Outbox(engine, AuditLog.open("sqlite:///audit.db"))    # or Client("http://...", token=...)
    SQLAlchemyAuditor(outbox).install(SessionLocal)

At ``Session.commit()`` the auditor writes the commit's events as one row of the
outbox table (``auditledger_outbox``, created if missing) through the session's
own connection, inside its transaction. The events and the change they describe
commit together or not at all, whatever the database, with no crash window
either way (the default ``before_commit`` writes a second database first, and a
crash between the two commits can leave an event for a change that was not
committed). The request pays one small INSERT in a commit it makes anyway,
instead of the ledger's own commit and fsync.

A background thread then moves the rows into the sink: an embedded
:class:`~auditledger.AuditLog`, or :class:`~auditledger.client.Client` (sent at
once, so that a row leaves the outbox only once the server stored it). The
events are validated when they are written, by the ledger's own check and limits
when the sink is an ``AuditLog``: a bad event makes the commit raise, as with
the other modes. Each event carries an idempotency key and its ``occurred_at``
(the ledger's ``date`` is its placement). What the drain guarantees is in
:mod:`auditledger.drain`: a row is deleted only after the sink stored it, a crash
between the two replays it and the keys store each event once, a row the sink
refuses as invalid is set aside in the table with its error (``rejected()``).

Other integrations (middleware, ``@audited``, the logging handler) can use the
same object as their sink: ``record_many`` writes its batch in a transaction of
its own on the engine. Rows wait while the sink is unreachable (``pending``
tells how many events); the table grows with them, bounded only by the
database. With Alembic, add :func:`outbox_table` to the application's metadata
and pass ``create=False``.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from contextlib import closing
from typing import Any

import orjson

try:
    from sqlalchemy import (
        BigInteger,
        Column,
        Integer,
        LargeBinary,
        MetaData,
        String,
        Table,
        Text,
        bindparam,
        delete,
        func,
        insert,
        inspect,
        select,
        update,
    )
    from sqlalchemy.engine import Engine
    from sqlalchemy.exc import SQLAlchemyError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from auditledger.errors import ConfigError

    raise ConfigError(f"the outbox needs SQLAlchemy: pip install 'auditledger[sqlalchemy]' ({exc})") from None

from auditledger import background
from auditledger.drain import Drain, Rejected, Row
from auditledger.errors import AuditLedgerError, ConfigError, StoreError, ValidationError
from auditledger.integrations.context import Queued
from auditledger.ledger import DEFAULT_TENANT, AuditLog, validated
from auditledger.model import EventInput, check_tenant, format_micros
from auditledger.wire import dated_mappings, encode_batch, new_key, refuse_source

DEFAULT_TABLE = "auditledger_outbox"

_log = logging.getLogger("auditledger.outbox")


def outbox_table(metadata: MetaData, name: str = DEFAULT_TABLE) -> Table:
    """The outbox table, for an application that creates its tables itself (Alembic)."""
    return Table(
        name,
        metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        # Random per row: SQLite reuses the ids of an emptied table, and a drain deletes by both.
        Column("token", String(36), nullable=False),
        Column("tenant", String(64), nullable=False),
        Column("count", Integer, nullable=False),
        # JSON: the batch, each event keyed. The length makes MySQL's column a LONGBLOB (its BLOB stops at 64 KiB).
        Column("events", LargeBinary(2**32 - 1), nullable=False),
        Column("error", Text, nullable=True),  # set when the sink refused the batch as invalid
        Column("rejected_at", String(32), nullable=True),
    )


def _not_drained(outbox: Outbox, exc: AuditLedgerError) -> None:
    _log.error("auditledger %s: events not drained at exit, kept for the next start: %s", outbox.label, exc)


# Outboxes nobody closed are drained at a normal interpreter exit (what fails stays in the table).
_open_outboxes: weakref.WeakSet[Outbox] = background.closed_at_exit(_not_drained)


class Outbox(Drain):
    """Audit events written in the application's transactions, placed in ``sink`` in the background.

    ``engine``: the application's engine (the sessions audited into this outbox must use
    its database). ``table``: the outbox table's name. ``batch_size``: events per
    ``record_many`` of the sink, and a drain starts as soon as this many wait;
    ``flush_interval``: seconds the oldest waiting event lingers before a drain starts
    anyway. ``create``: create the table when it is missing.
    """

    def __init__(
        self,
        engine: Engine,
        sink: Any,
        *,
        table: str = DEFAULT_TABLE,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        create: bool = True,
    ) -> None:
        super().__init__(sink, batch_size=batch_size, flush_interval=flush_interval)
        if not isinstance(engine, Engine):
            raise ConfigError(f"Outbox needs the application's SQLAlchemy Engine, got {type(engine).__name__}")
        if isinstance(sink, Outbox | Queued) or callable(getattr(sink, "queue_many", None)):
            raise ConfigError(
                f"the outbox's sink must store events before it answers (an AuditLog, or a Client), "
                f"not {type(sink).__name__}: the outbox deletes a row once its sink answered"
            )
        if not callable(getattr(sink, "record_many", None)):
            raise ConfigError(
                f"{type(sink).__name__} cannot receive events: it needs a record_many(events, tenant=) method"
            )
        url = engine.url
        if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
            raise ConfigError(
                "the outbox needs a database file: the drain thread reads it on a connection of its own, "
                "and each connection to an in-memory SQLite database is a database of its own"
            )
        self.engine = engine
        self.sink = sink
        self.table = outbox_table(MetaData(), table)
        self.label = f"the outbox {table}"
        t = self.table
        waiting = t.c.error.is_(None)
        self._pending = select(func.coalesce(func.sum(t.c.count), 0)).where(waiting)
        # The request path and the drain run the driver's own SQL on DB-API connections: inside a
        # commit SQLAlchemy hands out no Connection, and a driver call costs a fraction of a Core
        # execution (a drain's four statements took 2.4 ms of CPU through Core, 1.0 ms this way).
        self._insert = _Driver(
            insert(t).values(
                token=bindparam("token"),
                tenant=bindparam("tenant"),
                count=bindparam("count"),
                events=bindparam("events"),
            ),
            engine,
        )
        self._top_id = _Driver(select(func.max(t.c.id)), engine)
        self._lowest_id = _Driver(select(func.min(t.c.id)).where(waiting), engine)
        self._read_rows = _Driver(
            select(t.c.id, t.c.token, t.c.tenant, t.c.events)
            .where(waiting, t.c.id > bindparam("after"), t.c.id <= bindparam("upto"))
            .order_by(t.c.id)
            .limit(bindparam("limit")),
            engine,
        )
        self._delete_rows = _Driver(
            delete(t).where(t.c.id == bindparam("row_id"), t.c.token == bindparam("row_token")), engine
        )
        self._reject_rows = _Driver(
            update(t)
            .where(t.c.id == bindparam("row_id"), t.c.token == bindparam("row_token"))
            .values(error=bindparam("error"), rejected_at=bindparam("at")),
            engine,
        )
        self._conn: Any = None  # the drain's DB-API connection, while a drain runs
        if create:
            try:
                t.create(engine, checkfirst=True)
            except SQLAlchemyError as exc:
                # Another process may have created it between the check and the CREATE.
                if not _exists(engine, table):
                    raise StoreError(f"cannot create {self.label}: {_reason(exc)}") from None
        elif not _exists(engine, table):
            raise ConfigError(
                f"{self.label} does not exist in {url.render_as_string()}: create it (outbox_table() in the "
                "application's metadata, or its migrations) or pass create=True"
            )
        # On DB-API connections the failures are the driver's own exceptions.
        self._driver_error: type[BaseException] = getattr(getattr(engine.dialect, "dbapi", None), "Error", Exception)
        self._failures = (SQLAlchemyError, self._driver_error)
        self._start("auditledger-outbox-drain")
        _open_outboxes.add(self)

    # ------------------------------------------------------------ the request path

    def write(
        self, dbapi_connection: Any, events: Iterable[Mapping[str, Any] | EventInput], *, tenant: str = DEFAULT_TENANT
    ) -> list[str]:
        """Validate ``events`` and write them as one row through ``dbapi_connection``, inside the
        transaction open on it (all or none); their idempotency keys.

        The events are checked as the sink would check them: an ``AuditLog`` sink with its
        own limits; any other (the client) with the default limits, as the server does. A
        bad one raises :class:`ValidationError` naming ``events[i].field`` and nothing is
        written. The row is the application's until its transaction commits: call
        :meth:`committed` with the number of events then, so that the drain thread knows.
        """
        check_tenant(tenant)
        if isinstance(self.sink, AuditLog):
            drafts = self.sink.validate(events)
        else:
            drafts = validated(events)  # the default limits, as the server's
            for i, draft in enumerate(drafts):
                refuse_source(draft, f"events[{i}].source")
        if not drafts:
            return []
        batch = dated_mappings(drafts)
        values = {"token": new_key(), "tenant": tenant, "count": len(batch), "events": encode_batch(batch, drafts)}
        try:
            self._insert.run(dbapi_connection, values)
        except self._driver_error as exc:
            raise StoreError(f"cannot write to {self.label}: {exc}") from None
        return [str(e["idempotency_key"]) for e in batch]

    def committed(self, count: int) -> None:
        """``count`` events written by :meth:`write` were committed by the application: the drain may take them."""
        with self._lock:
            self._recorded(count)

    def record_many(
        self, events: Iterable[Mapping[str, Any] | EventInput], *, tenant: str = DEFAULT_TENANT
    ) -> list[str]:
        """Validate ``events`` and write them in a transaction of their own (all or none); their idempotency keys.

        For events that belong to no session's transaction (``@audited``, the logging handler).
        """
        if self._closed:
            raise StoreError(f"{self.label} is closed")
        try:
            with self.engine.begin() as conn:
                keys = self.write(conn.connection.dbapi_connection, events, tenant=tenant)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot write to {self.label}: {_reason(exc)}") from None
        self.committed(len(keys))
        return keys

    @property
    def pending(self) -> int:
        """Events in the outbox table (of every process using it), not yet placed in the sink."""
        try:
            with self.engine.connect() as conn:
                return int(conn.execute(self._pending).scalar_one())
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read {self.label}: {_reason(exc)}") from None

    def rejected(self) -> list[Rejected]:
        """The batches the sink refused as invalid at a drain, oldest first (they stay in the table)."""
        t = self.table
        query = select(t.c.id, t.c.tenant, t.c.events, t.c.error, t.c.rejected_at).where(t.c.error.is_not(None))
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(query.order_by(t.c.id)).all()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read {self.label}: {_reason(exc)}") from None
        return [Rejected(int(i), str(tn), orjson.loads(e), str(err), str(at)) for i, tn, e, err, at in rows]

    # ------------------------------------------------------------ draining

    def close(self) -> None:
        """Place what is left, then stop the drain thread; raises if the rest cannot be placed (it stays).

        The engine and the sink stay open.
        """
        with self._lock:
            if self._closed:
                return
            self._stop()
        self._thread.join()
        _open_outboxes.discard(self)
        self._drain()

    def _describe(self, exc: BaseException) -> str:
        return _reason(exc) if isinstance(exc, SQLAlchemyError) else str(exc)

    def _drain_rows(self) -> None:
        """A drain on one pooled DB-API connection, each statement its own short transaction."""
        self._conn = self.engine.raw_connection()
        try:
            super()._drain_rows()
        finally:
            conn, self._conn = self._conn, None
            conn.close()  # back to the pool

    def _top(self) -> int:
        (found,) = self._query(self._top_id, {})
        return int(found[0] or 0)

    def _lowest(self) -> int | None:
        (found,) = self._query(self._lowest_id, {})
        return None if found[0] is None else int(found[0])

    def _read(self, after: int, upto: int) -> list[Row]:
        found = self._query(self._read_rows, {"after": after, "upto": upto, "limit": self.batch_size})
        return [Row(int(i), str(k), str(tn), orjson.loads(e)) for i, k, tn, e in found]

    def _query(self, statement: _Driver, values: dict[str, Any]) -> list[Any]:
        try:
            return statement.rows(self._conn, values)
        finally:
            self._conn.commit()  # ends the read's transaction (PostgreSQL opens one for a SELECT)

    def _delete(self, rows: list[Row]) -> None:
        try:
            self._delete_rows.run_many(self._conn, [{"row_id": r.id, "row_token": r.token} for r in rows])
            self._conn.commit()
        except BaseException:
            self._conn.rollback()
            raise

    def _reject(self, rows: list[Row], exc: ValidationError) -> None:
        at = format_micros(time.time_ns() // 1000)
        try:
            self._reject_rows.run_many(
                self._conn, [{"row_id": r.id, "row_token": r.token, "error": str(exc), "at": at} for r in rows]
            )
            self._conn.commit()
        except BaseException:
            self._conn.rollback()
            raise
        for row in rows:
            _log.warning(
                "auditledger %s: the sink refused a batch of %d events (tenant %s): %s; kept in the table, not drained",
                self.label,
                len(row.events),
                row.tenant,
                exc,
            )


class _Driver:
    """A statement compiled once for ``engine``'s driver, run on its DB-API connections."""

    def __init__(self, statement: Any, engine: Engine) -> None:
        compiled = statement.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
        self.sql = str(compiled)
        # Positional paramstyles (SQLite's qmark) take a tuple in this order; the others a mapping.
        self.order = tuple(compiled.positiontup or ()) if engine.dialect.positional else ()
        # Parameters the dialect adds with their own values (SQLite's "LIMIT ? OFFSET ?" offset 0).
        self.fixed = {k: v for k, v in compiled.params.items() if v is not None}

    def params(self, values: Mapping[str, Any]) -> Any:
        merged = {**self.fixed, **values} if self.fixed else values
        return tuple(merged[name] for name in self.order) if self.order else dict(merged)

    def run(self, conn: Any, values: Mapping[str, Any]) -> None:
        with closing(conn.cursor()) as cursor:
            cursor.execute(self.sql, self.params(values))

    def run_many(self, conn: Any, many: Sequence[Mapping[str, Any]]) -> None:
        with closing(conn.cursor()) as cursor:
            cursor.executemany(self.sql, [self.params(values) for values in many])

    def rows(self, conn: Any, values: Mapping[str, Any]) -> list[Any]:
        with closing(conn.cursor()) as cursor:
            cursor.execute(self.sql, self.params(values))
            return list(cursor.fetchall())


def _exists(engine: Engine, table: str) -> bool:
    try:
        return bool(inspect(engine).has_table(table))
    except SQLAlchemyError:
        return False


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's message, without SQLAlchemy's statement dump and background link."""
    orig = getattr(exc, "orig", None)
    return str(orig) if orig is not None else str(exc).split("\n")[0]


__all__ = ["DEFAULT_TABLE", "Outbox", "outbox_table"]
