"""Outbox: a commit's events as one row in the application's own transaction, placed in the ledger once, in order."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import MetaData, String, create_engine, event, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from tests.store.pg import pg_schema

from auditledger import Actor, AuditLog, ConfigError, StoreError, ValidationError
from auditledger.integrations import audit_scope
from auditledger.integrations.context import Queued
from auditledger.integrations.decorators import audited
from auditledger.integrations.outbox import DEFAULT_TABLE, Outbox, outbox_table
from auditledger.integrations.sqlalchemy import MASK, MASK_CHANGED, SQLAlchemyAuditor, audit_model
from auditledger.model import Limits
from auditledger.testing import recorded

NEVER = 3600.0  # a flush_interval no test waits for: nothing drains unless the test asks


class Base(DeclarativeBase):
    pass


@audit_model("SECRET", details={"namespace": "namespace", "key": "key"}, secret=("value",))
class Secret(Base):
    __tablename__ = "secrets"
    id: Mapped[int] = mapped_column(primary_key=True)
    namespace: Mapped[str] = mapped_column(String(50))
    key: Mapped[str] = mapped_column(String(50))
    value: Mapped[str] = mapped_column(String(200))


@audit_model("NOTE")
class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(500))


def settled(outbox: Outbox) -> Outbox:
    """``outbox`` once its drain thread sleeps with nothing due (its drain at open done): only flush() drains now.

    Without it the drain every Outbox starts at open could still be running when the test's first commit lands.
    """
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with outbox._lock:
            if not outbox._again and outbox._ready._waiters:  # type: ignore[attr-defined]
                return outbox
        time.sleep(0.001)
    raise AssertionError("the drain thread never went to sleep")


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


def rows(engine: Engine, table: str = DEFAULT_TABLE) -> list[dict[str, Any]]:
    """The outbox table's rows as the application's database holds them, by id."""
    t = outbox_table(MetaData(), table)
    with engine.connect() as conn:
        found = conn.execute(select(t).order_by(t.c.id)).mappings().all()
    return [{**row, "events": orjson.loads(row["events"])} for row in found]


def texts(ledger: AuditLog) -> list[str]:
    return [e["after"]["text"] for e in recorded(ledger)]


def known_keys(ledger: AuditLog, keys: list[str]) -> bool:
    """Whether the ledger holds every one of ``keys`` (recorded again, each is answered as a duplicate)."""
    receipts = ledger.record_many(
        [{"resource_type": "NOTE", "action": "CREATE", "actor": Actor.user("x"), "idempotency_key": k} for k in keys]
    )
    return all(r.duplicate for r in receipts)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def app_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The application's database: a SQLite file, or a fresh PostgreSQL schema through psycopg 3."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.db'}"
    else:
        with pg_schema() as url:
            yield url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """The application's SQLite file with its tables."""
    app = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    Base.metadata.create_all(app)
    yield app
    app.dispose()


@pytest.fixture
def any_engine(app_url: str) -> Iterator[Engine]:
    """The application's database with its tables, on each database the outbox supports."""
    app = create_engine(app_url)
    assert app.dialect.driver in ("pysqlite", "psycopg")
    Base.metadata.create_all(app)
    yield app
    app.dispose()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[AuditLog]:
    """The ledger, on a SQLite file of its own."""
    log = AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}")
    yield log
    log.close()


def audited_sessions(outbox: Outbox) -> tuple[sessionmaker[Session], SQLAlchemyAuditor]:
    factory = sessionmaker(outbox.engine)
    return factory, SQLAlchemyAuditor(outbox).install(factory)


@pytest.fixture
def app(any_engine: Engine, ledger: AuditLog) -> Iterator[tuple[sessionmaker[Session], Outbox]]:
    """Audited sessions into an outbox on the application's database, as anna, nothing drained unless flushed."""
    outbox = settled(Outbox(any_engine, ledger, flush_interval=NEVER))
    factory, auditor = audited_sessions(outbox)
    with audit_scope(Actor.user("anna@acme.io", ip="10.0.0.1")):
        yield factory, outbox
    auditor.remove()
    outbox.close()


def test_each_commit_is_one_row_in_the_apps_database_and_flush_places_the_events(
    app: tuple[sessionmaker[Session], Outbox], ledger: AuditLog
) -> None:
    """CREATE/UPDATE/DELETE commits write one row each (secrets masked), nothing reaches the ledger before a
    drain; flush() places them in order with their before/after and actor, and empties the table."""
    factory, outbox = app
    with factory() as s:
        secret = Secret(namespace="team", key="db", value="hunter2")
        s.add_all([secret, Note(text="first")])
        s.commit()
        assert outbox.pending == 2 and len(rows(outbox.engine)) == 1
        secret.namespace, secret.value = "ops", "swordfish"
        s.commit()
        s.delete(secret)
        s.commit()
    table = rows(outbox.engine)
    assert [(r["count"], r["tenant"], r["error"]) for r in table] == [(2, "main", None)] + [(1, "main", None)] * 2
    assert outbox.pending == 4 and ledger.count() == 0
    stored_rows = repr(table)
    assert "hunter2" not in stored_rows and "swordfish" not in stored_rows
    keys = [e["idempotency_key"] for r in table for e in r["events"]]
    assert all(e["occurred_at"] for r in table for e in r["events"])

    outbox.flush()
    assert outbox.pending == 0 and rows(outbox.engine) == []
    trail = [(e["resource_type"], e["action"], e["details"], e["before"], e["after"]) for e in recorded(ledger)]
    assert trail == [
        ("SECRET", "CREATE", {"namespace": "team", "key": "db"}, None,
         {"id": 1, "namespace": "team", "key": "db", "value": MASK}),
        ("NOTE", "CREATE", {"id": "1"}, None, {"id": 1, "text": "first"}),
        ("SECRET", "UPDATE", {"namespace": "ops", "key": "db"}, {"namespace": "team", "value": MASK},
         {"namespace": "ops", "value": MASK_CHANGED}),
        ("SECRET", "DELETE", {"namespace": "ops", "key": "db"},
         {"id": 1, "namespace": "ops", "key": "db", "value": MASK}, None),
    ]  # fmt: skip
    assert {(e["actor"]["id"], e["actor"]["ip"]) for e in recorded(ledger)} == {("anna@acme.io", "10.0.0.1")}
    assert "hunter2" not in repr(recorded(ledger))
    assert len(set(keys)) == 4 and known_keys(ledger, keys)
    assert ledger.verify().sizes == {"main": 4}


def test_rollback_and_a_rolled_back_savepoint_leave_no_row(
    app: tuple[sessionmaker[Session], Outbox], ledger: AuditLog
) -> None:
    """A rolled-back transaction writes no row; a rolled-back savepoint's events are not in its commit's row."""
    factory, outbox = app
    with factory() as s:
        s.add(Note(text="rolled back"))
        s.flush()
        s.rollback()
        assert rows(outbox.engine) == [] and outbox.pending == 0
        s.add(Note(text="kept"))
        nested = s.begin_nested()
        s.add(Note(text="dropped in savepoint"))
        s.flush()
        nested.rollback()
        released = s.begin_nested()
        s.add(Note(text="released"))
        released.commit()
        s.commit()
    [row] = rows(outbox.engine)
    assert [e["after"]["text"] for e in row["events"]] == ["kept", "released"] and outbox.pending == 2
    outbox.flush()
    assert texts(ledger) == ["kept", "released"]


def test_a_failed_outbox_insert_fails_the_commit_and_the_change_is_not_committed(
    app: tuple[sessionmaker[Session], Outbox], ledger: AuditLog
) -> None:
    """With the outbox table dropped behind the outbox's back, commit() raises the database's error and the
    application's change is rolled back with it."""
    factory, outbox = app
    outbox.table.drop(outbox.engine)
    with factory() as s:
        s.add(Note(text="never stored"))
        with pytest.raises(Exception, match="auditledger_outbox") as info:
            s.commit()
        assert not isinstance(info.value, AssertionError)
        s.rollback()
    with factory() as s:
        assert s.query(Note).count() == 0
    outbox.table.create(outbox.engine)
    with factory() as s:  # the table back, the next commit goes through
        s.add(Note(text="after"))
        s.commit()
    outbox.flush()
    assert texts(ledger) == ["after"]


def test_an_event_the_ledger_refuses_fails_the_commit_and_writes_nothing(
    app: tuple[sessionmaker[Session], Outbox], ledger: AuditLog
) -> None:
    """An event over the ledger's own limits makes commit() raise its ValidationError naming events[i]: the
    change is not committed and the outbox holds nothing; the session goes on after a rollback."""
    factory, outbox = app
    ledger.limits = Limits(max_state_bytes=100)
    with factory() as s:
        s.add_all([Note(text="small"), Note(text="x" * 200)])
        with pytest.raises(ValidationError) as info:
            s.commit()
        assert info.value.field == "events[1].after" and "100" in str(info.value)
        s.rollback()
        assert rows(outbox.engine) == [] and outbox.pending == 0
        s.add(Note(text="after"))
        s.commit()
    with factory() as s:
        assert [n.text for n in s.query(Note)] == ["after"]
    outbox.flush()
    assert texts(ledger) == ["after"]


def test_a_commit_wakes_the_drain_thread(engine: Engine, ledger: AuditLog) -> None:
    """After a commit the drain thread places the row by itself (flush_interval=0), without flush()."""
    with settled(Outbox(engine, ledger, flush_interval=0)) as outbox:
        factory, _ = audited_sessions(outbox)
        with audit_scope(Actor.user("anna@acme.io")), factory() as s:
            s.add(Note(text="soon"))
            s.commit()
        eventually(lambda: ledger.count() == 1, "the drain thread placed the row")
        eventually(lambda: outbox.pending == 0, "the drain thread deleted the row")
    assert texts(ledger) == ["soon"]


def test_late_changes_in_the_commit_are_in_its_row(engine: Engine, ledger: AuditLog) -> None:
    """A before_commit listener after the auditor's changes an object during commit(): its UPDATE is written
    in the same row, in the same transaction (the batch deferred to the connection's COMMIT)."""

    def finalise(s: Session) -> None:
        for obj in list(s.identity_map.values()):
            if isinstance(obj, Note) and obj.text == "draft":
                obj.text = "final"

    with Outbox(engine, ledger, flush_interval=NEVER) as outbox:
        factory, _ = audited_sessions(outbox)
        event.listen(factory, "before_commit", finalise)
        with audit_scope(Actor.user("anna@acme.io")), factory() as s:
            draft = Note(text="draft")
            s.add(draft)
            s.flush()
            s.commit()
        [row] = rows(engine)
        assert [(e["action"], e["after"]) for e in row["events"]] == [
            ("CREATE", {"id": 1, "text": "draft"}),
            ("UPDATE", {"text": "final"}),
        ]
    with sessionmaker(engine)() as s:
        assert [n.text for n in s.query(Note)] == ["final"]
    assert ledger.count() == 2


AUDITED_COMMITS = """
import sys, time
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from auditledger import Actor, AuditLog
from auditledger.integrations import audit_scope
from auditledger.integrations.outbox import Outbox
from auditledger.integrations.sqlalchemy import SQLAlchemyAuditor, audit_model

class Base(DeclarativeBase):
    pass

@audit_model("NOTE")
class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(500))

engine = create_engine(sys.argv[1])
Base.metadata.create_all(engine)
outbox = Outbox(engine, AuditLog.open(sys.argv[2]), flush_interval=3600)
while outbox._again or not outbox._ready._waiters:  # its drain at open done: nothing drains from here
    time.sleep(0.001)
factory = sessionmaker(engine)
SQLAlchemyAuditor(outbox).install(factory)
with audit_scope(Actor.user("anna@acme.io")), factory() as s:
    for i in range(3):
        s.add(Note(text=f"n{i}"))
        s.commit()
print("committed", flush=True)
if sys.argv[3] == "wait":
    time.sleep(3600)
"""


def test_rows_of_a_killed_process_are_placed_once_by_the_next_outbox(tmp_path: Path) -> None:
    """A process SIGKILLed after three audited commits, before any drain, leaves three rows; the next Outbox
    opened on the app's database places every event once, by its drain at open (no flush())."""
    app_url, ledger_url = f"sqlite:///{tmp_path / 'app.db'}", f"sqlite:///{tmp_path / 'audit.db'}"
    proc = subprocess.Popen([sys.executable, "-c", AUDITED_COMMITS, app_url, ledger_url, "wait"],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "committed", line
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(tmp_path / "app.db") as app_file:
        assert app_file.execute(f"SELECT count(*), sum(count) FROM {DEFAULT_TABLE}").fetchone() == (3, 3)
        assert app_file.execute("SELECT count(*) FROM notes").fetchone() == (3,)
    engine = create_engine(app_url)
    with AuditLog.open(ledger_url) as ledger:
        assert ledger.count() == 0  # nothing reached the ledger before the kill
        outbox = Outbox(engine, ledger, flush_interval=NEVER)
        eventually(lambda: outbox.pending == 0, "the drain at open placed the rows")
        outbox.close()
        assert texts(ledger) == ["n0", "n1", "n2"]
        assert ledger.verify().sizes == {"main": 3}
    assert rows(engine) == []
    engine.dispose()


def test_a_normal_exit_drains_the_outbox_nobody_closed(tmp_path: Path) -> None:
    """A process that commits audited changes and exits without close(): the atexit hook places the events."""
    app_url, ledger_url = f"sqlite:///{tmp_path / 'app.db'}", f"sqlite:///{tmp_path / 'audit.db'}"
    proc = subprocess.run([sys.executable, "-c", AUDITED_COMMITS, app_url, ledger_url, "exit"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "committed", proc.stderr
    assert "not drained" not in proc.stderr
    with AuditLog.open(ledger_url) as ledger:
        assert texts(ledger) == ["n0", "n1", "n2"]
    with sqlite3.connect(tmp_path / "app.db") as app_file:
        assert app_file.execute(f"SELECT count(*) FROM {DEFAULT_TABLE}").fetchone() == (0,)


def test_a_full_batch_wakes_the_drain_before_its_linger(engine: Engine, ledger: AuditLog) -> None:
    """Once batch_size events wait, the drain thread places them at once, however long flush_interval is."""
    with settled(Outbox(engine, ledger, batch_size=3, flush_interval=NEVER)) as outbox:
        factory, _ = audited_sessions(outbox)
        with audit_scope(Actor.user("anna@acme.io")), factory() as s:
            s.add(Note(text="a"))
            s.commit()
            s.add_all([Note(text="b"), Note(text="c")])
            s.commit()
        eventually(lambda: outbox.pending == 0, "the full batch was drained")
        assert texts(ledger) == ["a", "b", "c"]


def test_the_auditors_tenant_is_the_rows_and_the_ledgers(engine: Engine, ledger: AuditLog) -> None:
    """SQLAlchemyAuditor(outbox, tenant=...) writes the row for that tenant (write='in_transaction' is the same
    path as the default); the drain places it there."""
    with Outbox(engine, ledger, flush_interval=NEVER) as outbox:
        factory = sessionmaker(engine)
        SQLAlchemyAuditor(outbox, tenant="acme", write="in_transaction").install(factory)
        with audit_scope(Actor.user("anna@acme.io")), factory() as s:
            s.add(Note(text="theirs"))
            s.commit()
        assert [r["tenant"] for r in rows(engine)] == ["acme"]
    assert [e.after for e in ledger.iter_search(tenant="acme")] == [{"id": 1, "text": "theirs"}]
    assert ledger.count() == 0  # the default tenant's


class FailingDelete:
    """``Outbox._delete`` wrapped: fails like a database error while ``failing``; counts the calls."""

    def __init__(self, outbox: Outbox) -> None:
        self.real, self.failing, self.calls = outbox._delete, True, 0
        outbox._delete = self  # type: ignore[method-assign]

    def __call__(self, rows: list[Any]) -> None:
        self.calls += 1
        if self.failing:
            raise OperationalError("DELETE FROM auditledger_outbox", {}, sqlite3.OperationalError("disk I/O error"))
        self.real(rows)


def test_a_replay_after_the_ledger_committed_stores_nothing_twice(
    app: tuple[sessionmaker[Session], Outbox], ledger: AuditLog
) -> None:
    """When the delete fails after the ledger committed, the rows stay and are placed again by each retry; the
    idempotency keys store each event once, and the next drain that deletes empties the table."""
    factory, outbox = app
    with factory() as s:
        for text in ("a", "b", "c"):
            s.add(Note(text=text))
            s.commit()
    keys = [e["idempotency_key"] for r in rows(outbox.engine) for e in r["events"]]
    failing = FailingDelete(outbox)
    with pytest.raises(StoreError, match="disk I/O error"):
        outbox.flush()
    eventually(lambda: failing.calls >= 3, "the drain thread replayed the rows twice")  # its retries after a backoff
    assert texts(ledger) == ["a", "b", "c"]
    assert len(rows(outbox.engine)) == 3 and outbox.pending == 3
    assert outbox.errors and "disk I/O error" in str(outbox.errors[-1])
    failing.failing = False
    outbox.flush()
    assert rows(outbox.engine) == [] and outbox.pending == 0
    assert texts(ledger) == ["a", "b", "c"] and known_keys(ledger, keys)
    assert ledger.verify().sizes == {"main": 3}


def test_a_batch_refused_at_drain_is_set_aside_and_the_rest_is_placed(
    app: tuple[sessionmaker[Session], Outbox], ledger: AuditLog, caplog: pytest.LogCaptureFixture
) -> None:
    """A row valid when committed but over the draining ledger's limits stays in the table with its error
    (rejected() lists it, pending no longer counts it, a warning is logged); the rows around it are placed."""
    factory, outbox = app
    with factory() as s:
        s.add(Note(text="a"))
        s.commit()
        s.add_all([Note(text="b"), Note(text="x" * 200)])  # one commit, one row: refused as a whole
        s.commit()
        s.add(Note(text="c"))
        s.commit()
    ledger.limits = Limits(max_state_bytes=100)
    with caplog.at_level(logging.WARNING, logger="auditledger.outbox"):
        outbox.flush()
    assert texts(ledger) == ["a", "c"]
    [rejected] = outbox.rejected()
    assert [e["after"]["text"] for e in rejected.events] == ["b", "x" * 200] and rejected.tenant == "main"
    assert "events[1].after" in rejected.error and "100" in rejected.error and rejected.rejected_at
    [row] = rows(outbox.engine)
    assert row["id"] == rejected.id and row["error"] == rejected.error and row["rejected_at"] == rejected.rejected_at
    assert outbox.pending == 0
    assert "refused a batch of 2 events" in caplog.text
    outbox.flush()  # set aside: not tried again
    assert texts(ledger) == ["a", "c"] and len(outbox.rejected()) == 1


class Flaky:
    """A sink in front of ``ledger`` that fails with StoreError while ``down`` (a server out of reach)."""

    def __init__(self, ledger: AuditLog) -> None:
        self.ledger, self.down, self.calls = ledger, True, 0

    def record_many(self, events: list[Any], *, tenant: str = "main") -> list[Any]:
        self.calls += 1
        if self.down:
            raise StoreError("the audit server is unreachable")
        return self.ledger.record_many(events, tenant=tenant)


def test_a_failing_sink_keeps_the_rows_and_the_error_and_a_later_drain_places_them(
    engine: Engine, ledger: AuditLog
) -> None:
    """While the sink raises StoreError, flush() raises it, the thread keeps it in errors and the rows stay;
    once the sink is back, the thread's own retry places them."""
    sink = Flaky(ledger)
    outbox = settled(Outbox(engine, sink, flush_interval=NEVER))
    factory, _ = audited_sessions(outbox)
    with audit_scope(Actor.user("anna@acme.io")), factory() as s:
        s.add(Note(text="a"))
        s.commit()
        s.add(Note(text="b"))
        s.commit()
    with pytest.raises(StoreError, match="unreachable"):
        outbox.flush()
    eventually(lambda: bool(outbox.errors), "the drain thread failed too")
    assert isinstance(outbox.errors[-1], StoreError) and "unreachable" in str(outbox.errors[-1])
    assert outbox.pending == 2 and len(rows(engine)) == 2 and ledger.count() == 0
    sink.down = False
    eventually(lambda: outbox.pending == 0, "the thread's retry placed the rows")
    assert texts(ledger) == ["a", "b"] and rows(engine) == []
    outbox.close()


def test_a_closed_ledger_is_a_sink_failure_and_the_next_outbox_places_the_rows(engine: Engine, tmp_path: Path) -> None:
    """A closed ledger fails the drain with a StoreError; the rows stay, close() says so, and the next Outbox
    (a restart) places them."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    closed = AuditLog.open(url)
    outbox = settled(Outbox(engine, closed, flush_interval=NEVER))
    factory, auditor = audited_sessions(outbox)
    with audit_scope(Actor.user("anna@acme.io")), factory() as s:
        s.add(Note(text="a"))
        s.commit()
    closed.close()
    with pytest.raises(StoreError, match="closed database"):
        outbox.flush()
    eventually(lambda: bool(outbox.errors), "the drain thread failed too")
    with pytest.raises(StoreError):
        outbox.close()
    assert outbox.pending == 1
    auditor.remove()
    with AuditLog.open(url) as ledger:
        with Outbox(engine, ledger, flush_interval=NEVER) as restarted:
            restarted.flush()
            assert restarted.pending == 0
        assert texts(ledger) == ["a"]


class Queuing:
    """A client-like object that queues events and answers before storing them."""

    def queue_many(self, events: list[Any], *, tenant: str = "main") -> list[str]:
        return []

    def record_many(self, events: list[Any], *, tenant: str = "main") -> list[str]:
        return []


def test_configuration_errors_are_refused_with_clear_messages(engine: Engine, ledger: AuditLog) -> None:
    """An in-memory SQLite engine, a sink that answers before storing (Queued, a queue_many client, another
    Outbox), a sink without record_many, no Engine, and write='after_commit' are refused with a ConfigError."""
    for memory in ("sqlite://", "sqlite:///:memory:"):
        with pytest.raises(ConfigError, match="needs a database file"):
            Outbox(create_engine(memory), ledger)
    for sink in (Queued(Queuing()), Queuing()):
        with pytest.raises(ConfigError, match=f"must store events before it answers.*not {type(sink).__name__}"):
            Outbox(engine, sink)
    with pytest.raises(ConfigError, match="cannot receive events"):
        Outbox(engine, object())
    with pytest.raises(ConfigError, match="needs the application's SQLAlchemy Engine, got str"):
        Outbox(str(engine.url), ledger)  # type: ignore[arg-type]
    with Outbox(engine, ledger, flush_interval=NEVER) as outbox:
        with pytest.raises(ConfigError, match=r"must store events before it answers.*not Outbox"):
            Outbox(engine, outbox)
        with pytest.raises(ConfigError, match="write='after_commit' would commit the change first"):
            SQLAlchemyAuditor(outbox, write="after_commit")
    assert inspect(engine).get_table_names() == sorted(["notes", "secrets", DEFAULT_TABLE])


def test_after_commit_with_an_outbox_from_the_scope_is_refused_before_the_change_commits(
    engine: Engine, ledger: AuditLog
) -> None:
    """write='after_commit' with the Outbox given by the audit scope is the same misconfiguration: ConfigError,
    and the change is not committed without its events."""
    with Outbox(engine, ledger, flush_interval=NEVER) as outbox:
        factory = sessionmaker(engine)
        SQLAlchemyAuditor(write="after_commit").install(factory)
        with audit_scope(Actor.user("anna@acme.io"), sink=outbox), factory() as s:
            s.add(Note(text="unaudited"))
            with pytest.raises(ConfigError, match="after_commit"):
                s.commit()
            s.rollback()
        with factory() as s:
            assert s.query(Note).count() == 0


def test_audited_changes_in_another_database_are_refused_and_not_committed(
    engine: Engine, ledger: AuditLog, tmp_path: Path
) -> None:
    """A session whose audited classes live in another database than the outbox's engine: commit() raises a
    ConfigError naming both databases, and the change is not committed."""
    other = create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    Base.metadata.create_all(other)
    with Outbox(engine, ledger, flush_interval=NEVER) as outbox:
        factory = sessionmaker(other)
        SQLAlchemyAuditor(outbox).install(factory)
        with audit_scope(Actor.user("anna@acme.io")), factory() as s:
            s.add(Note(text="elsewhere"))
            with pytest.raises(ConfigError) as info:
                s.commit()
            s.rollback()
        assert str(tmp_path / "app.db") in str(info.value) and str(tmp_path / "other.db") in str(info.value)
        split = sessionmaker(binds={Note: other, Secret: engine})
        SQLAlchemyAuditor(outbox).install(split)
        with audit_scope(Actor.user("anna@acme.io")), split() as s:  # one class here, one elsewhere
            s.add_all([Note(text="elsewhere"), Secret(namespace="team", key="db", value="x")])
            with pytest.raises(ConfigError, match="more than one database"):
                s.commit()
            s.rollback()
        assert outbox.pending == 0 and rows(engine) == []
    for db in (engine, other):
        with sessionmaker(db)() as s:
            assert s.query(Note).count() == 0 and s.query(Secret).count() == 0
    other.dispose()


def test_record_many_writes_in_a_transaction_of_its_own_and_is_drained(engine: Engine, ledger: AuditLog) -> None:
    """Events outside any session (@audited with sink=outbox) are one committed row at once, placed by flush()."""
    outbox = settled(Outbox(engine, ledger, flush_interval=NEVER))

    @audited("FLOW", "UPDATE", details={"namespace": "{namespace}", "flowId": "{flow_id}"}, sink=outbox)
    def update_flow(namespace: str, flow_id: str) -> str:
        return "ok"

    with audit_scope(Actor.user("anna@acme.io")):
        assert update_flow("team", "hello") == "ok"
    [row] = rows(engine)  # committed: read on another connection
    assert row["count"] == 1 and row["events"][0]["details"] == {"namespace": "team", "flowId": "hello"}
    keys = outbox.record_many(
        [{"resource_type": "FLOW", "action": "DELETE", "actor": Actor.user("bob"), "details": {"flowId": "x"}}],
        tenant="acme",
    )
    assert outbox.pending == 2 and ledger.count() == 0
    with pytest.raises(ValidationError, match=r"events\[0\]\.resource_type"):
        outbox.record_many([{"resource_type": "not valid", "action": "DELETE", "actor": Actor.user("bob")}])
    assert len(rows(engine)) == 2
    outbox.flush()
    [stored] = ledger.iter_search()
    assert (stored.action, stored.actor.id, str(stored.outcome)) == ("UPDATE", "anna@acme.io", "success")
    [other] = ledger.iter_search(tenant="acme")
    assert other.action == "DELETE" and other.details == {"flowId": "x"}
    assert known_keys_in(ledger, keys, "acme")
    outbox.close()
    with pytest.raises(StoreError, match="closed"):
        outbox.record_many([{"resource_type": "FLOW", "action": "DELETE", "actor": Actor.user("bob")}])


def known_keys_in(ledger: AuditLog, keys: list[str], tenant: str) -> bool:
    receipts = ledger.record_many(
        [{"resource_type": "FLOW", "action": "DELETE", "actor": Actor.user("x"), "idempotency_key": k} for k in keys],
        tenant=tenant,
    )
    return all(r.duplicate for r in receipts)


def test_record_many_reports_a_failed_insert_as_a_store_error(engine: Engine, ledger: AuditLog) -> None:
    """An INSERT the database refuses (the table dropped) is a StoreError naming the outbox, as the code intends."""
    with Outbox(engine, ledger, flush_interval=NEVER) as outbox:
        outbox.table.drop(engine)
        try:
            with pytest.raises(StoreError, match="cannot write to the outbox auditledger_outbox: no such table"):
                outbox.record_many([{"resource_type": "FLOW", "action": "DELETE", "actor": Actor.user("bob")}])
        finally:
            outbox.table.create(engine)


def test_two_outboxes_on_one_database_place_every_event_once(tmp_path: Path) -> None:
    """Two Outbox objects (as two processes) on one app database: each drains the other's rows too, and with
    both committing and draining at once every event is placed once, each one's in commit order."""
    app_url, ledger_url = f"sqlite:///{tmp_path / 'app.db'}", f"sqlite:///{tmp_path / 'audit.db'}"
    engines = [create_engine(app_url), create_engine(app_url)]
    Base.metadata.create_all(engines[0])
    ledgers = [AuditLog.open(ledger_url), AuditLog.open(ledger_url)]
    first = settled(Outbox(engines[0], ledgers[0], flush_interval=NEVER))
    second = settled(Outbox(engines[1], ledgers[1], flush_interval=NEVER))
    factories = [audited_sessions(first)[0], audited_sessions(second)[0]]
    with audit_scope(Actor.user("anna@acme.io")), factories[0]() as s:
        s.add(Note(text="by the first"))
        s.commit()
    assert second.pending == 1
    second.flush()  # the other's row
    assert texts(ledgers[0]) == ["by the first"] and first.pending == 0
    for box in (first, second):  # from here on their threads drain too, small batches soon after each commit
        box.batch_size, box.flush_interval = 3, 0.001

    def work(n: int) -> None:
        with audit_scope(Actor.user(f"user{n}")), factories[n]() as s:
            for i in range(30):
                s.add(Note(text=f"{n}-{i}"))
                s.commit()
                if i % 10 == 9:
                    (first, second)[n].flush()

    threads = [threading.Thread(target=work, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for box in (first, second):
        box.close()
    placed = texts(ledgers[0])[1:]
    assert sorted(placed) == sorted(f"{n}-{i}" for n in (0, 1) for i in range(30))
    for n in (0, 1):
        assert [t for t in placed if t.startswith(f"{n}-")] == [f"{n}-{i}" for i in range(30)]
    assert ledgers[0].verify().sizes == {"main": 61}
    assert rows(engines[0]) == []
    for log in ledgers:
        log.close()
    for db in engines:
        db.dispose()


def test_create_makes_the_table_with_its_columns(engine: Engine, ledger: AuditLog) -> None:
    """create=True (the default) makes auditledger_outbox in the app's database with the columns the drain
    needs; opening it again, or on a database where it exists, leaves it be."""
    with Outbox(engine, ledger, flush_interval=NEVER):
        pass
    with Outbox(engine, ledger, flush_interval=NEVER):
        pass  # already there
    found = inspect(engine)
    columns = {c["name"]: c["nullable"] for c in found.get_columns(DEFAULT_TABLE)}
    assert columns == {
        "id": False, "token": False, "tenant": False, "count": False, "events": False,
        "error": True, "rejected_at": True,
    }  # fmt: skip
    assert found.get_pk_constraint(DEFAULT_TABLE)["constrained_columns"] == ["id"]


def test_a_table_the_app_creates_itself_works_with_create_false(engine: Engine, ledger: AuditLog) -> None:
    """outbox_table(metadata, name) puts the table in the app's metadata (Alembic); create=False then writes
    and drains through it, and creates nothing."""
    with pytest.raises(ConfigError, match=r"the outbox audit_outbox does not exist in sqlite:///.*app\.db: create it"):
        Outbox(engine, ledger, table="audit_outbox", flush_interval=NEVER, create=False)
    metadata = MetaData()
    table = outbox_table(metadata, "audit_outbox")
    assert table.name == "audit_outbox" and [c.name for c in table.columns] == [
        "id", "token", "tenant", "count", "events", "error", "rejected_at",
    ]  # fmt: skip
    metadata.create_all(engine)
    with Outbox(engine, ledger, table="audit_outbox", flush_interval=NEVER, create=False) as outbox:
        factory, _ = audited_sessions(outbox)
        with audit_scope(Actor.user("anna@acme.io")), factory() as s:
            s.add(Note(text="mine"))
            s.commit()
        assert [r["count"] for r in rows(engine, "audit_outbox")] == [1]
        outbox.flush()
        assert rows(engine, "audit_outbox") == []
    assert texts(ledger) == ["mine"]
    assert DEFAULT_TABLE not in inspect(engine).get_table_names()
