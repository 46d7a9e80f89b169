"""A ledger inside an application's SQLite database, written in the application's own transactions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from auditledger import AuditLog
from auditledger.errors import ConfigError, ValidationError
from auditledger.store.sqlite import SQLiteStore

ACTOR = {"type": "USER", "id": "anna"}


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    """An application's database in the rollback-journal mode sqlite3 gives a new file, with one table."""
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    conn.commit()
    conn.close()
    return path


def test_keep_leaves_the_files_journal_mode(app_db: Path, tmp_path: Path) -> None:
    """journal=keep opens the ledger without switching the file to WAL; the default still does."""
    with AuditLog(SQLiteStore(f"sqlite:///{app_db}", journal="keep")) as log:
        log.record("FLOW", "CREATE", ACTOR)
        assert log.count() == 1
    assert sqlite3.connect(app_db).execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    with AuditLog.open(f"sqlite:///{tmp_path / 'own.db'}?journal=keep") as log:
        assert log.store.query("PRAGMA journal_mode")[0][0] == "delete"
    with AuditLog.open(f"sqlite:///{tmp_path / 'wal.db'}") as log:
        assert log.store.query("PRAGMA journal_mode")[0][0] == "wal"


def test_events_commit_and_roll_back_with_the_applications_transaction(app_db: Path) -> None:
    """Written within the app's transaction, events are invisible to others until its commit, and its
    rollback takes them back with its own change; the next batch gets the position the rolled-back one had."""
    log = AuditLog(SQLiteStore(f"sqlite:///{app_db}", journal="keep"))
    app = sqlite3.connect(app_db)
    try:
        app.execute("INSERT INTO notes (text) VALUES ('dropped')")
        log.record_many([{"resource_type": "NOTE", "action": "CREATE", "actor": ACTOR}], within=app)
        assert log.count() == 0  # not committed: another connection sees nothing
        app.rollback()
        assert log.count() == 0
        app.execute("INSERT INTO notes (text) VALUES ('kept')")
        (receipt,) = log.record_many([{"resource_type": "NOTE", "action": "CREATE", "actor": ACTOR}], within=app)
        app.commit()
        assert receipt.seq == 0
        assert [e.seq for e in log.iter_search(order="asc")] == [0]
        assert app.execute("SELECT text FROM notes").fetchall() == [("kept",)]
        assert log.verify().sizes == {"main": 1}
    finally:
        app.close()
        log.close()


def test_a_refused_batch_leaves_the_applications_transaction_as_it_was(app_db: Path) -> None:
    """An invalid event refuses the batch before any write; the app's own change is still there to commit."""
    log = AuditLog(SQLiteStore(f"sqlite:///{app_db}", journal="keep"))
    app = sqlite3.connect(app_db)
    try:
        app.execute("INSERT INTO notes (text) VALUES ('mine')")
        good = {"resource_type": "NOTE", "action": "CREATE", "actor": ACTOR}
        with pytest.raises(ValidationError, match=r"events\[1\]\.action"):
            log.record_many([good, {**good, "action": "no such action"}], within=app)
        assert app.in_transaction
        app.commit()
        assert app.execute("SELECT text FROM notes").fetchall() == [("mine",)]
        assert log.count() == 0
    finally:
        app.close()
        log.close()


def test_a_failed_write_is_undone_inside_the_applications_transaction(app_db: Path) -> None:
    """A write that fails half-way (here: the tree's table is gone) rolls back to its savepoint: the
    app's transaction keeps its own change and none of the ledger's rows."""
    log = AuditLog(SQLiteStore(f"sqlite:///{app_db}", journal="keep"))
    app = sqlite3.connect(app_db)
    try:
        app.execute("INSERT INTO notes (text) VALUES ('mine')")
        app.execute("ALTER TABLE tree_heads RENAME TO tree_heads_away")
        with pytest.raises(Exception, match="tree_heads"):
            log.record_many([{"resource_type": "NOTE", "action": "CREATE", "actor": ACTOR}], within=app)
        assert app.execute("SELECT count(*) FROM leaves").fetchone() == (0,)
        assert app.execute("SELECT count(*) FROM events").fetchone() == (0,)
        assert app.execute("SELECT count(*) FROM notes").fetchone() == (1,)
        app.rollback()
    finally:
        app.close()
        log.close()


def test_commit_callbacks_wait_for_the_applications_commit(app_db: Path) -> None:
    """on_commit runs when the caller says it committed, never during the write."""
    log = AuditLog(SQLiteStore(f"sqlite:///{app_db}", journal="keep"))
    seen: list[int] = []
    log.on_commit(lambda receipts: seen.extend(r.seq for r in receipts))
    app = sqlite3.connect(app_db)
    try:
        receipts = log.record_many([{"resource_type": "NOTE", "action": "CREATE", "actor": ACTOR}], within=app)
        assert seen == []
        app.commit()
        log.committed(receipts)
        assert seen == [0]
    finally:
        app.close()
        log.close()


def test_a_connection_made_less_durable_after_it_was_accepted_is_refused(app_db: Path) -> None:
    """Its file is checked once, its durability at every join: a PRAGMA after the first commit counts."""
    event = [{"resource_type": "NOTE", "action": "CREATE", "actor": ACTOR}]
    log = AuditLog(SQLiteStore(f"sqlite:///{app_db}", journal="keep"))
    conn = sqlite3.connect(app_db)
    try:
        conn.execute("PRAGMA synchronous = FULL")
        log.record_many(event, within=conn)
        conn.commit()
        conn.execute("PRAGMA synchronous = OFF")
        with pytest.raises(ConfigError, match="synchronous=OFF, the ledger FULL"):
            log.record_many(event, within=conn)
        conn.rollback()
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA journal_mode = MEMORY")
        with pytest.raises(ConfigError, match="journal_mode=memory"):
            log.record_many(event, within=conn)
        conn.rollback()
        assert log.count() == 1
    finally:
        conn.close()
        log.close()


def test_connections_that_cannot_carry_the_events_are_refused(app_db: Path, tmp_path: Path) -> None:
    """Another file, a connection whose commits are less durable than the ledger's, a journal that does
    not survive a crash, an in-memory ledger: each a ConfigError saying why, and nothing written."""
    event = [{"resource_type": "NOTE", "action": "CREATE", "actor": ACTOR}]
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    log = AuditLog(SQLiteStore(f"sqlite:///{app_db}", journal="keep"))
    try:
        with sqlite3.connect(other) as conn, pytest.raises(ConfigError, match="not on the ledger's file"):
            log.record_many(event, within=conn)
        conn = sqlite3.connect(app_db)
        conn.execute("PRAGMA synchronous = NORMAL")
        with pytest.raises(ConfigError, match="synchronous=NORMAL, the ledger FULL"):
            log.record_many(event, within=conn)
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA journal_mode = OFF")
        with pytest.raises(ConfigError, match="journal_mode=off"):
            log.record_many(event, within=conn)
        conn.close()
        assert log.count() == 0
    finally:
        log.close()
    with AuditLog(SQLiteStore(f"sqlite:///{app_db}?synchronous=NORMAL", journal="keep")) as relaxed:
        conn = sqlite3.connect(app_db)
        conn.execute("PRAGMA synchronous = NORMAL")
        relaxed.record_many(event, within=conn)  # the ledger asked for no more than that
        conn.commit()
        conn.close()
        assert relaxed.count() == 1
    with AuditLog.open("memory://") as memory, pytest.raises(ConfigError, match="in-memory"):
        memory.record_many(event, within=sqlite3.connect(app_db))
