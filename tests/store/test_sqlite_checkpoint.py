"""The SQLite store copies its WAL into the database file off the writer's path."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from auditledger import AuditLog
from auditledger.demo import demo_events
from auditledger.store import sqlite as sqlite_store
from auditledger.store.sqlite import SQLiteStore


def _checkpoint_threads(url: str) -> list[threading.Thread]:
    """The checkpoint threads of the store at ``url`` (other tests' stores may still run theirs)."""
    return [t for t in threading.enumerate() if t.name == f"auditledger-checkpoint {url}"]


def test_commits_leave_the_checkpoint_to_a_background_thread(tmp_path: Path) -> None:
    """The writer's own automatic checkpoint is pushed far out, yet the database file receives the commits."""
    path = tmp_path / "ledger.db"
    store = SQLiteStore(f"sqlite:///{path}")
    log = AuditLog(store)
    try:
        (pages,) = store._writer.execute("PRAGMA wal_autocheckpoint").fetchone()
        assert pages >= 10_000  # SQLite's default (1,000) would checkpoint inside every few commits
        before = path.stat().st_size
        events = list(demo_events(1500))
        for i in range(0, len(events), 500):
            log.record_many(events[i : i + 500])
        # Only a checkpoint writes pages into the main file; the writer's threshold is not reached.
        deadline = time.monotonic() + 10
        while path.stat().st_size < before + 500_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.stat().st_size >= before + 500_000
        assert len(_checkpoint_threads(store.url)) == 1
    finally:
        log.close()


def test_closing_the_store_stops_its_checkpoint_thread(tmp_path: Path) -> None:
    """No checkpoint thread outlives its store, and every committed event is still there after reopening."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with AuditLog.open(url) as log:
        receipts = log.record_many(list(demo_events(300)))
        assert len(_checkpoint_threads(url)) == 1
    assert _checkpoint_threads(url) == []
    with AuditLog.open(url) as log:
        assert log.verify().sizes["main"] == 300
        assert log.get(receipts[-1].id).seq == 299


def test_a_memory_store_has_no_checkpoint_thread() -> None:
    """An in-memory ledger has no WAL, so it starts no checkpoint thread."""
    with AuditLog.open("memory://") as log:
        log.record_many(list(demo_events(10)))
        assert not [t for t in threading.enumerate() if t.name.endswith(log.store.url)]


def test_the_writer_keeps_a_large_page_cache(tmp_path: Path) -> None:
    """The writer's page cache holds a group commit's pages (SQLite's 2 MiB default re-read and spilled them)."""
    store = SQLiteStore(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        (kib,) = store._writer.execute("PRAGMA cache_size").fetchone()
        assert kib <= -65_536  # negative: KiB
        (reader_kib,) = store.reader().execute("PRAGMA cache_size").fetchone()
        assert reader_kib == -2000  # readers keep SQLite's default
    finally:
        store.close()


def test_purge_batches_let_the_wal_start_over_while_other_commits_keep_coming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ingest commit landing during each of purge's checkpoints no longer keeps the WAL from starting over.

    SQLite restarts the WAL only when a write begins with every frame copied. Each round here is
    what a purge with ingest running does: an ingest commit that is still open while purge copies
    the WAL outside the lock, then purge's next batch. Without the copy under the lock the WAL
    grew by every round's frames toward the writer's 64 MiB backstop.
    """
    monkeypatch.setattr(sqlite_store, "_PURGE_RESTART_FRAMES", 40)
    path = tmp_path / "ledger.db"
    store = SQLiteStore(f"sqlite:///{path}")
    try:
        assert store._checkpointer is not None
        store._checkpointer.stop()  # its own timing would race with the order below
        store._checkpointer = None
        store._writer.execute("CREATE TABLE scratch (x BLOB)")
        wal = Path(f"{path}-wal")
        sizes = []
        for _ in range(40):
            with store.write() as txn:
                txn.execute(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20) "
                    "INSERT INTO scratch SELECT randomblob(3000) FROM n"
                )
                assert store.checkpoint()  # copies up to the last commit; this one lands after it
            with store.purge_write(lift_guards=False) as txn:
                txn.execute("DELETE FROM scratch WHERE rowid IN (SELECT rowid FROM scratch LIMIT 20)")
            sizes.append(wal.stat().st_size)
        # About 22 frames a round: forty rounds without a restart would leave ~900 frames (3.6 MB).
        assert max(sizes) < 8 * sizes[0], sizes
        (count,), = store.reader().execute("SELECT count(*) FROM scratch").fetchall()
        assert count == 0
    finally:
        store.close()

