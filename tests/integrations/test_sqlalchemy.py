"""SQLAlchemy flush capture: events per instance, masking, transactions and bulk refusal."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy import String, create_engine, delete, event, insert, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool

from auditledger import Actor, AuditLog
from auditledger.errors import ConfigError, ValidationError
from auditledger.integrations import audit_scope
from auditledger.integrations.sqlalchemy import MASK, MASK_CHANGED, SKIP_OPTION, SQLAlchemyAuditor, audit_model
from auditledger.store.sqlite import SQLiteStore
from auditledger.testing import Capture, assert_recorded, recorded


class Base(DeclarativeBase):
    pass


@audit_model("SECRET", details={"namespace": "namespace", "key": "key"}, secret=("value",), ignore=("touched",))
class Secret(Base):
    __tablename__ = "secrets"
    id: Mapped[int] = mapped_column(primary_key=True)
    namespace: Mapped[str] = mapped_column(String(50))
    key: Mapped[str] = mapped_column(String(50))
    value: Mapped[str] = mapped_column(String(200))
    touched: Mapped[datetime | None] = mapped_column(default=None)


@audit_model("NOTE")
class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(200))


class Plain(Base):
    __tablename__ = "plain"
    id: Mapped[int] = mapped_column(primary_key=True)


@pytest.fixture
def capture() -> Capture:
    return Capture()


@pytest.fixture
def sessions(capture: Capture) -> Iterator[sessionmaker[Session]]:
    engine = create_engine("sqlite://", poolclass=StaticPool)
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    auditor = SQLAlchemyAuditor(capture).install(factory)
    with audit_scope(Actor.user("anna@acme.io", ip="10.0.0.1")):
        yield factory
    auditor.remove()
    engine.dispose()


def stored_secret(s: Session, value: str = "x") -> Secret:
    """A committed SECRET team/db (its CREATE recorded)."""
    secret = Secret(namespace="team", key="db", value=value)
    s.add(secret)
    s.commit()
    return secret


def test_create_update_delete_record_before_and_after(sessions: sessionmaker[Session], capture: Capture) -> None:
    """Insert, change and delete give CREATE/UPDATE/DELETE with full, changed-only and full states."""
    with sessions() as s:
        secret = Secret(namespace="team", key="db", value="hunter2")
        s.add(secret)
        s.commit()
        secret.namespace = "ops"
        s.commit()
        s.delete(secret)
        s.commit()
    create = assert_recorded(capture, resource="SECRET", action="CREATE", actor="anna@acme.io", count=1)
    assert create["after"] == {"id": 1, "namespace": "team", "key": "db", "value": MASK}
    assert create["before"] is None
    update_ = assert_recorded(capture, action="UPDATE", details={"namespace": "ops", "key": "db"}, count=1)
    assert (update_["before"], update_["after"]) == ({"namespace": "team"}, {"namespace": "ops"})
    delete_ = assert_recorded(capture, action="DELETE", count=1)
    assert delete_["before"] == {"id": 1, "namespace": "ops", "key": "db", "value": MASK}
    assert delete_["actor"]["ip"] == "10.0.0.1"


def test_secret_change_is_visible_but_masked(sessions: sessionmaker[Session], capture: Capture) -> None:
    """Changing a secret column records that it changed, never either value."""
    with sessions() as s:
        secret = stored_secret(s, "old-password")
        secret.value = "new-password"
        s.commit()
    event = assert_recorded(capture, action="UPDATE")
    assert event["before"] == {"value": MASK} and event["after"] == {"value": MASK_CHANGED}
    assert "password" not in repr(recorded(capture))


def test_ignored_columns_and_unchanged_values_record_nothing(
    sessions: sessionmaker[Session], capture: Capture
) -> None:
    """Touching only ignored columns, or setting a column to its own value, is no UPDATE."""
    with sessions() as s:
        secret = stored_secret(s)
        secret.touched = datetime.now(UTC)
        secret.namespace = "team"
        s.commit()
    assert [e["action"] for e in recorded(capture)] == ["CREATE"]


def test_update_after_expiry_still_knows_the_old_value(sessions: sessionmaker[Session], capture: Capture) -> None:
    """With attributes expired by a commit, the old value is loaded before the set (active history)."""
    with sessions() as s:
        note = Note(text="first")
        s.add(note)
        s.commit()  # expires every attribute
        note.text = "second"
        s.commit()
    event = assert_recorded(capture, resource="NOTE", action="UPDATE", details={"id": "1"})
    assert (event["before"], event["after"]) == ({"text": "first"}, {"text": "second"})


def test_changes_between_flushes_each_record_their_own_before(
    sessions: sessionmaker[Session], capture: Capture
) -> None:
    """A column changed, flushed and changed again in one transaction gives two UPDATEs, each from the last value."""
    with sessions() as s:
        secret = stored_secret(s)
        secret.namespace = "ops"
        s.flush()
        secret.key = "cache"
        secret.namespace = "dev"
        s.commit()
    updates = [(e["before"], e["after"]) for e in recorded(capture) if e["action"] == "UPDATE"]
    assert updates == [
        ({"namespace": "team"}, {"namespace": "ops"}),
        ({"namespace": "ops", "key": "db"}, {"namespace": "dev", "key": "cache"}),
    ]


def test_an_actor_switched_mid_scope_is_the_next_events_actor(capture: Capture) -> None:
    """The scope's resolved actor follows a change of actor (a login route learns who tries from the body)."""
    engine = create_engine("sqlite://", poolclass=StaticPool)
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    SQLAlchemyAuditor(capture).install(factory)
    with audit_scope(Actor.user("anna"), ip="10.0.0.1") as scope, factory() as s:
        s.add(Note(text="by anna"))
        s.commit()
        scope.actor = Actor.user("bob")
        s.add(Note(text="by bob"))
        s.commit()
        scope.ip = "10.0.0.2"
        s.add(Note(text="by bob elsewhere"))
        s.commit()
    actors = [(e["actor"]["id"], e["actor"]["ip"]) for e in recorded(capture)]
    assert actors == [("anna", "10.0.0.1"), ("bob", "10.0.0.1"), ("bob", "10.0.0.2")]


def test_rollback_and_savepoints_drop_their_events(sessions: sessionmaker[Session], capture: Capture) -> None:
    """Events of a rolled-back savepoint or transaction are never recorded; a released savepoint's are."""
    with sessions() as s:
        s.add(Note(text="kept"))
        nested = s.begin_nested()
        s.add(Note(text="dropped in savepoint"))
        s.flush()
        nested.rollback()
        kept = s.begin_nested()
        s.add(Note(text="released"))
        kept.commit()
        s.commit()
        s.add(Note(text="rolled back"))
        s.flush()
        s.rollback()
    texts = [e["after"]["text"] for e in recorded(capture)]
    assert texts == ["kept", "released"]


def test_unaudited_classes_record_nothing(sessions: sessionmaker[Session], capture: Capture) -> None:
    """Only marked classes are audited."""
    with sessions() as s:
        s.add(Plain())
        s.commit()
    assert recorded(capture) == []


def test_a_refusing_sink_aborts_the_commit(capture: Capture) -> None:
    """If the ledger refuses the batch, the application's change is not committed (before_commit mode)."""
    engine = create_engine("sqlite://", poolclass=StaticPool)
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    SQLAlchemyAuditor(capture).install(factory)
    with factory() as s:  # no actor anywhere: the event is the system's; a bad tenant makes the sink refuse
        with audit_scope(tenant="Not A Tenant"):
            s.add(Note(text="never stored"))
            with pytest.raises(ValidationError, match="tenant"):
                s.commit()
        s.rollback()
    with factory() as s:
        assert s.query(Note).count() == 0
    assert recorded(capture) == []


def test_bulk_statements_on_audited_classes_are_refused(sessions: sessionmaker[Session]) -> None:
    """Bulk UPDATE/DELETE/INSERT would bypass the trail: refused with a message saying what to do instead."""
    with sessions() as s:
        s.add(Note(text="a"))
        s.commit()
        for stmt in (update(Note).values(text="b"), delete(Note)):
            with pytest.raises(ConfigError, match=r"bulk (UPDATE|DELETE) on audited Note \(NOTE\)"):
                s.execute(stmt)
        with pytest.raises(ConfigError, match="bulk INSERT"):
            s.execute(insert(Note), [{"text": "c"}])
        s.rollback()
        s.execute(update(Note).values(text="b").execution_options(**{SKIP_OPTION: True}))
        s.execute(update(Plain).values(id=5))  # unaudited classes are not our business
        s.commit()


def test_embedded_ledger_gets_one_atomic_batch_per_commit(tmp_path: object) -> None:
    """With an AuditLog sink, a commit of three changes appends three events in one batch with consecutive seq."""
    ledger = AuditLog.open("memory://")
    engine = create_engine("sqlite://", poolclass=StaticPool)
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    SQLAlchemyAuditor(ledger, write="after_commit").install(factory)
    batches: list[int] = []
    ledger.on_commit(lambda receipts: batches.append(len(receipts)))
    with factory() as s:
        s.add_all([Note(text="1"), Note(text="2"), Note(text="3")])
        s.commit()
    assert batches == [3]
    assert [e.seq for e in ledger.iter_search(order="asc")] == [0, 1, 2]
    assert_recorded(ledger, resource="NOTE", action="CREATE", actor="auditledger", count=3)


def test_bad_declarations_are_refused() -> None:
    """Misnamed columns, a secret state column and bad resource types fail at declaration."""
    with pytest.raises(ConfigError, match="no column 'nope'"):
        audit_model("NOTE", secret=("nope",))(Note)
    with pytest.raises(ConfigError, match="cannot also be secret"):
        audit_model("NOTE", state="text", secret=("text",))
    with pytest.raises(ConfigError, match="resource type"):
        audit_model("not valid")
    with pytest.raises(ConfigError, match="not a mapped class"):
        audit_model("NOTE")(type("Unmapped", (), {}))


def test_bulk_statements_are_refused_before_they_reach_the_database(sessions: sessionmaker[Session]) -> None:
    """No SQL of a refused statement reaches SQLite (its trace of executed statements shows none); the
    flush's own INSERT/UPDATE/DELETE pass, and an ORM statement sent through the session's Core
    connection is refused too."""
    with sessions() as s:
        note = Note(text="a")
        s.add(note)
        s.commit()
        sent: list[str] = []
        dbapi = s.connection().connection.dbapi_connection
        assert dbapi is not None
        dbapi.set_trace_callback(lambda sql: sent.append(sql.split()[0]))
        try:
            for stmt in (update(Note).values(text="b"), delete(Note).where(Note.id == note.id)):
                with pytest.raises(ConfigError, match="bulk"):
                    s.execute(stmt)
            with pytest.raises(ConfigError, match="bulk INSERT"):
                s.execute(insert(Note), [{"text": "c"}, {"text": "d"}])
            with pytest.raises(ConfigError, match="bulk INSERT"):
                s.execute(insert(Note), [{"text": "c"}])
            with pytest.raises(ConfigError, match="bulk UPDATE"):
                s.connection().execute(update(Note).values(text="e"))
            assert not {"UPDATE", "DELETE", "INSERT"} & set(sent)
            note.text = "changed through the session"
            s.add(Note(text="new"))
            s.commit()
            s.delete(note)
            s.commit()
            assert {"UPDATE", "DELETE", "INSERT"} <= set(sent)
        finally:
            dbapi.set_trace_callback(None)
    with sessions() as s:
        assert [n.text for n in s.query(Note)] == ["new"]


def test_the_bulk_guard_follows_every_engine_and_leaves_when_removed(capture: Capture) -> None:
    """Installed on a sessionmaker, a Session subclass or one session, the guard covers the engine each
    session uses, a bind given later included; remove() takes it off."""
    for kind in ("maker", "class", "session"):
        engine = create_engine("sqlite://", poolclass=StaticPool)
        Base.metadata.create_all(engine)

        class Scoped(Session):
            pass

        session = Scoped(bind=engine)
        target: Any = {"maker": sessionmaker(), "class": Scoped, "session": session}[kind]
        auditor = SQLAlchemyAuditor(capture).install(target)
        s = session if kind == "session" else sessionmaker(engine, class_=Scoped)() if kind == "class" else target(
            bind=engine
        )
        with pytest.raises(ConfigError, match="bulk UPDATE on audited Note"):
            s.execute(update(Note).values(text="x"))
        s.rollback()
        auditor.remove()
        s.execute(update(Note).values(text="x"))  # no auditor any more: not ours to refuse
        s.close()
        engine.dispose()


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[tuple[sessionmaker[Session], AuditLog]]:
    """An app database holding the ledger's tables too; the auditor writes in the session's transactions."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    ledger = AuditLog(SQLiteStore(url, journal="keep"))
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    auditor = SQLAlchemyAuditor(ledger, write="in_transaction").install(factory)
    with audit_scope(Actor.user("anna")):
        yield factory, ledger
    auditor.remove()
    engine.dispose()
    ledger.close()


def test_in_transaction_commits_the_change_and_its_events_together(
    shared: tuple[sessionmaker[Session], AuditLog],
) -> None:
    """One commit stores the rows and their events; before it nothing is visible, a rollback keeps neither,
    and savepoints keep their usual meaning."""
    factory, ledger = shared
    committed: list[int] = []
    ledger.on_commit(lambda receipts: committed.extend(r.seq for r in receipts))
    with factory() as s:
        s.add(Note(text="rolled back"))
        s.flush()
        assert ledger.count() == 0
        s.rollback()
        s.add(Note(text="kept"))
        nested = s.begin_nested()
        s.add(Note(text="dropped in savepoint"))
        s.flush()
        nested.rollback()
        s.add(Secret(namespace="team", key="db", value="hunter2"))
        s.commit()
    assert committed == [0, 1]
    assert [(e.resource_type, e.after) for e in ledger.iter_search(order="asc")] == [
        ("NOTE", {"id": 1, "text": "kept"}),
        ("SECRET", {"id": 1, "namespace": "team", "key": "db", "value": MASK}),
    ]
    with factory() as s:
        assert [n.text for n in s.query(Note)] == ["kept"]
    assert ledger.verify().sizes == {"main": 2}


def _refused_then_after(factory: sessionmaker[Session]) -> None:
    """A commit whose batch the ledger refuses (a bad tenant) raises and stores nothing; after a rollback the
    session commits the next change."""
    with factory() as s:
        with audit_scope(tenant="Not A Tenant"):
            s.add(Note(text="never stored"))
            with pytest.raises(ValidationError, match="tenant"):
                s.commit()
        s.rollback()
        s.add(Note(text="after"))
        s.commit()
    with factory() as s:
        assert [n.text for n in s.query(Note)] == ["after"]


def test_in_transaction_a_refused_batch_commits_nothing(shared: tuple[sessionmaker[Session], AuditLog]) -> None:
    """The ledger refusing the events (a bad tenant) makes commit() raise: neither the change nor any event
    is stored, and the session can roll back and go on."""
    factory, ledger = shared
    _refused_then_after(factory)
    assert ledger.count() == 1


def test_in_transaction_needs_a_ledger_on_the_sessions_database(tmp_path: Path, capture: Capture) -> None:
    """A sink that is not a ledger, or a ledger on another file, is a ConfigError; the change is not committed."""
    with pytest.raises(ConfigError, match="must be an AuditLog"):
        SQLAlchemyAuditor(capture, write="in_transaction")
    with pytest.raises(ConfigError, match="write must be"):
        SQLAlchemyAuditor(capture, write="later")  # type: ignore[arg-type]
    ledger = AuditLog.open(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    SQLAlchemyAuditor(ledger, write="in_transaction").install(factory)
    with factory() as s:
        s.add(Note(text="not stored"))
        with pytest.raises(ConfigError, match="not on the ledger's file"):
            s.commit()
        s.rollback()
        assert s.query(Note).count() == 0
    engine.dispose()
    ledger.close()


WriteMode = Literal["before_commit", "after_commit", "in_transaction"]


@pytest.fixture(params=["before_commit", "after_commit", "in_transaction"])
def on_files(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[sessionmaker[Session], AuditLog]]:
    """An app on a SQLite file and a ledger on its own file (in the app's file for in_transaction)."""
    mode: WriteMode = request.param
    app = f"sqlite:///{tmp_path / 'app.db'}"
    ledger = AuditLog(SQLiteStore(app, journal="keep")) if mode == "in_transaction" else AuditLog.open(
        f"sqlite:///{tmp_path / 'audit.db'}"
    )
    engine = create_engine(app)
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    auditor = SQLAlchemyAuditor(ledger, write=mode).install(factory)
    with audit_scope(Actor.user("anna")):
        yield factory, ledger
    auditor.remove()
    engine.dispose()
    ledger.close()


def finalise_drafts(s: Session, *_args: Any) -> None:
    """A user's hook that changes audited objects late in the commit: stored drafts become final, and get a
    sibling."""
    for obj in list(s.identity_map.values()):
        if isinstance(obj, Note) and obj.text == "draft":
            obj.text = "final"
            s.add(Note(text="sibling"))


def trail(ledger: AuditLog) -> list[tuple[str, Any, Any]]:
    return [(e.action, e.before, e.after) for e in ledger.iter_search(order="asc")]


@pytest.mark.parametrize("hook", ["before_commit", "after_flush_postexec"])
def test_changes_made_late_in_the_commit_are_recorded_once(
    on_files: tuple[sessionmaker[Session], AuditLog], hook: str
) -> None:
    """A user's before_commit listener registered after the auditor, or an after_flush_postexec hook, that
    changes audited objects during commit: SQLAlchemy flushes those changes in the commit, and each is
    recorded exactly once, in every write mode."""
    factory, ledger = on_files
    event.listen(factory, hook, finalise_drafts)
    try:
        with factory() as s:
            draft = Note(text="draft")  # held: the identity map keeps unchanged objects weakly
            s.add(draft)
            if hook == "before_commit":
                s.flush()  # stored before the commit starts, in every mode
            s.commit()  # after_flush_postexec: the commit's first flush makes the change
            s.add(Note(text="later"))
            s.commit()
        with factory() as s:
            assert sorted(n.text for n in s.query(Note)) == ["final", "later", "sibling"]
    finally:
        event.remove(factory, hook, finalise_drafts)
    assert trail(ledger) == [
        ("CREATE", None, {"id": 1, "text": "draft"}),
        ("CREATE", None, {"id": 2, "text": "sibling"}),  # one flush: new objects first, then changed ones
        ("UPDATE", {"text": "draft"}, {"text": "final"}),
        ("CREATE", None, {"id": 3, "text": "later"}),
    ]
    assert ledger.verify().sizes == {"main": 4}


def test_a_commit_that_fails_after_a_late_flush_records_nothing(
    on_files: tuple[sessionmaker[Session], AuditLog],
) -> None:
    """A later before_commit listener flushes a change of its own, then raises: the commit fails, the
    session rolls back, and neither the change it flushed nor the ones before it are recorded."""
    factory, ledger = on_files

    def flush_then_refuse(s: Session) -> None:
        finalise_drafts(s)
        s.flush()
        raise RuntimeError("refused by the application")

    event.listen(factory, "before_commit", flush_then_refuse)
    try:
        with factory() as s:
            draft = Note(text="draft")  # held: the identity map keeps unchanged objects weakly
            s.add(draft)
            s.flush()
            with pytest.raises(RuntimeError, match="refused"):
                s.commit()
            s.rollback()
    finally:
        event.remove(factory, "before_commit", flush_then_refuse)
    with factory() as s:
        assert s.query(Note).count() == 0
        s.add(Note(text="after"))
        s.commit()
    assert trail(ledger) == [("CREATE", None, {"id": 1, "text": "after"})]


def test_with_a_later_listener_a_refused_batch_still_aborts_the_commit(capture: Capture, tmp_path: Path) -> None:
    """When a listener after the auditor's defers the batch to the connection's COMMIT, a sink refusing
    it there still makes commit() raise with nothing committed, and the session goes on after a rollback."""
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    SQLAlchemyAuditor(capture).install(factory)
    event.listen(factory, "before_commit", finalise_drafts)
    _refused_then_after(factory)
    assert [e["after"]["text"] for e in recorded(capture)] == ["after"]
    engine.dispose()


def test_a_session_inside_an_outer_transaction_records_at_its_commit(capture: Capture, tmp_path: Path) -> None:
    """A session bound to a connection already in a transaction commits no connection itself: with a
    listener after the auditor's, the batch is written at the session's commit, before the outer one."""
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    Base.metadata.create_all(engine)
    with engine.connect() as conn:
        conn.begin()
        factory = sessionmaker(bind=conn)
        SQLAlchemyAuditor(capture).install(factory)
        event.listen(factory, "before_commit", finalise_drafts)
        with factory() as s:
            draft = Note(text="draft")
            s.add(draft)
            s.flush()
            s.commit()
        assert [(e["action"], e["after"]["text"]) for e in recorded(capture)] == [
            ("CREATE", "draft"),
            ("CREATE", "sibling"),
            ("UPDATE", "final"),
        ]
        conn.commit()
    engine.dispose()
