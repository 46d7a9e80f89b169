"""``auditledger migrate``: a ledger moves between stores unchanged, verified, resumably."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditledger import AuditLog, tree
from auditledger.cli import app
from auditledger.demo import demo_events
from auditledger.errors import ConflictError, VerificationError
from auditledger.store import open_store
from auditledger.store.copy import copy_ledger
from tests.store.pg import pg_schema

runner = CliRunner()


@pytest.fixture(params=["sqlite", "postgres"])
def target_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where the ledger goes: another SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'target.db'}"
        return
    with pg_schema() as url:
        yield url


def make_source(path: Path, n: int = 300) -> str:
    url = f"sqlite:///{path}"
    with AuditLog.open(url) as log:
        events = list(demo_events(n))
        log.record_many(events[: n // 2])
        log.record_many(events[n // 2 :], tenant="acme")
        log.record(**{**events[0], "idempotency_key": "k-1"})
        with log.store.write() as txn:  # a purged position, through the purge path
            txn.execute("UPDATE purge_gate SET open = 1")
            txn.execute("DELETE FROM details WHERE tenant = 'main' AND seq = 3")
            txn.execute("DELETE FROM events WHERE tenant = 'main' AND seq = 3")
            txn.execute("UPDATE leaves SET purged = 1 WHERE tenant = 'main' AND seq = 3")
            txn.execute("UPDATE purge_gate SET open = 0")
        with log.store.write() as txn:
            txn.execute(
                "INSERT INTO checkpoints (tenant, size, root, note, created_at) VALUES (?, ?, ?, ?, ?)",
                ["main", 10, b"\1" * 32, "a signed note\n", 1],
            )
    return url


def snapshot(url: str) -> dict[str, list[tuple[object, ...]]]:
    store = open_store(url)
    try:
        return {
            "leaves": store.query("SELECT tenant, seq, hash, purged FROM leaves ORDER BY tenant, seq"),
            "events": store.query(
                "SELECT id, tenant, seq, date, resource_type, action, actor_type, actor_id, actor_name, outcome, "
                "idempotency_key, body FROM events ORDER BY tenant, seq"
            ),
            "details": store.query("SELECT tenant, key, value, seq FROM details ORDER BY tenant, seq, key"),
            "heads": store.query("SELECT tenant, size, last_date FROM heads ORDER BY tenant"),
            "checkpoints": store.query("SELECT tenant, size, root, note FROM checkpoints ORDER BY tenant, size"),
        }
    finally:
        store.close()


def test_migrate_copies_every_position_byte_for_byte(tmp_path: Path, target_url: str) -> None:
    """Ids, seqs, dates, bytes, details, purged leaves, heads and checkpoints arrive unchanged; trees agree."""
    source = make_source(tmp_path / "source.db")
    result = runner.invoke(app, ["migrate", "--from", source, "--to", target_url, "--chunk", "64"])
    assert result.exit_code == 0, result.output
    assert "checkpoints: 1 rows copied" in result.output
    assert snapshot(target_url) == snapshot(source)
    with AuditLog.open(target_url) as log:
        assert log.verify().purged == {"acme": 0, "main": 1}
        assert log.search("namespace:company", limit=5).events
        src, dst = open_store(source), log.store
        try:
            for tenant in ("main", "acme"):
                assert tree.Tree(dst.query, tenant).root() == tree.Tree(src.query, tenant).root()
        finally:
            src.close()
        duplicate = log.record(**next(iter(demo_events(1))), idempotency_key="k-1")
        assert duplicate.duplicate  # idempotency keys came along


def test_migrate_resumes_and_refuses_another_ledger(tmp_path: Path, target_url: str) -> None:
    """A second run copies only what is new; a target holding a different ledger is refused."""
    source = make_source(tmp_path / "source.db", 60)
    src, dst = open_store(source), open_store(target_url)
    try:
        copy_ledger(src, dst, chunk=16)
        AuditLog(src).record_many(list(demo_events(25, seed=9)))  # the store stays open
        report = copy_ledger(src, dst, chunk=16)
        assert report.sizes == {"acme": 30, "main": 56}
        assert snapshot(target_url)["leaves"] == snapshot(source)["leaves"]
        other = make_source(tmp_path / "other.db", 60)  # same shape, different events
        third = open_store(other)
        with pytest.raises(ConflictError):
            copy_ledger(third, dst)
        third.close()
    finally:
        src.close()
        dst.close()


def test_migrate_stops_at_a_tampered_position(tmp_path: Path, target_url: str) -> None:
    """An event whose bytes no longer match its leaf stops the copy with the position named, exit 1."""
    source = make_source(tmp_path / "source.db", 40)
    conn = sqlite3.connect(tmp_path / "source.db")
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET body = CAST(replace(CAST(body AS TEXT), 'USER', 'USEr') AS BLOB) WHERE seq = 7")
    conn.commit()
    conn.close()
    result = runner.invoke(app, ["migrate", "--from", source, "--to", target_url, "--chunk", "5"])
    assert result.exit_code == 1
    assert "does not match its leaf hash" in result.output and "7" in result.output
    with pytest.raises(VerificationError), AuditLog.open(source) as log:
        log.verify()


def test_db_upgrade_reports_the_schema_version(tmp_path: Path) -> None:
    """`db upgrade` applies migrations to a new store and prints its schema version."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    result = runner.invoke(app, ["db", "upgrade", "--db", url])
    assert result.exit_code == 0, result.output
    assert "schema version" in result.output
    assert runner.invoke(app, ["migrate", "--from", url, "--to", url]).exit_code == 1
