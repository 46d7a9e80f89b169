"""Options in SQLite store URLs: ``sqlite:///path.db?synchronous=NORMAL``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from auditledger import AuditLog
from auditledger.errors import ConfigError
from auditledger.store.sqlite import SQLiteStore


@pytest.mark.parametrize(("option", "level"), [("", 2), ("?synchronous=NORMAL", 1), ("?synchronous=extra", 3)])
def test_the_synchronous_option_sets_the_pragma(tmp_path: Path, option: str, level: int) -> None:
    """The URL's synchronous option reaches the connections (PRAGMA answers 1 NORMAL, 2 FULL, 3 EXTRA);
    without it the durable FULL applies."""
    store = SQLiteStore(f"sqlite:///{tmp_path / 'a.db'}{option}")
    try:
        assert store.query("PRAGMA synchronous")[0][0] == level
    finally:
        store.close()


def test_the_option_is_not_part_of_the_file_name(tmp_path: Path) -> None:
    """Events recorded through a URL with options land in the file the path names, and read back without it."""
    with AuditLog.open(f"sqlite:///{tmp_path / 'a.db'}?synchronous=NORMAL") as log:
        log.record("FLOW", "CREATE", {"type": "USER", "id": "anna"})
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db") == ["a.db"]
    with AuditLog.open(f"sqlite:///{tmp_path / 'a.db'}") as log:
        assert log.count() == 1


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("?synchronous=OFF", "synchronous must be one of FULL, EXTRA, NORMAL"),
        ("?journal=delete", "journal must be one of wal, keep"),
        ("?cache=big", "unknown option 'cache'"),
    ],
)
def test_bad_options_are_refused_by_name(tmp_path: Path, option: str, message: str) -> None:
    """An unknown option or an unsafe level is a ConfigError naming it, and no file is created."""
    with pytest.raises(ConfigError, match=message):
        SQLiteStore(f"sqlite:///{tmp_path / 'a.db'}{option}")
    assert list(tmp_path.iterdir()) == []



def test_a_new_connection_opens_while_a_write_is_in_progress(tmp_path: Path) -> None:
    """A new file gets incremental auto_vacuum; a later connection (verify opens three, each thread
    its reader) does not set it again: that rewrote and synced the header, so it waited for the
    write lock, behind a long write, and failed once the busy timeout ran out."""
    db = tmp_path / "a.db"
    with AuditLog.open(f"sqlite:///{db}") as log:
        log.record("FLOW", "CREATE", {"type": "USER", "id": "anna"})
    store = SQLiteStore(f"sqlite:///{db}", busy_timeout_ms=300)
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        assert store.query("PRAGMA auto_vacuum")[0][0] == 2
        writer.execute("BEGIN IMMEDIATE")
        conn = store._connect()  # before: "database is locked" once the busy timeout ran out
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1
        conn.close()
    finally:
        writer.close()
        store.close()
