"""Faults: a full disk and a read-only database answer 503 with Retry-After, store nothing half, and recover."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from auditledger.store.sqlite import SQLiteStore
from tests.reliability.conftest import Live
from tests.store.pg import pg_schema


def _batch(n: int, size: int, tag: str) -> list[dict[str, Any]]:
    return [
        {
            "resource_type": "FLOW",
            "action": "UPDATE",
            "actor": {"type": "USER", "id": "anna"},
            "details": {"n": str(i)},
            "after": {"blob": f"{tag}-{i}-" + "x" * size},
            "idempotency_key": f"{tag}-{i}",
        }
        for i in range(n)
    ]


@contextmanager
def _writer_pragma(live: Live, pragma: str, undo: str) -> Iterator[sqlite3.Connection]:
    """Set a PRAGMA on the store's writer connection (the test hook) and undo it afterwards."""
    store = live.ledger.store
    assert isinstance(store, SQLiteStore)
    conn = store._writer  # the one connection every write goes through
    with store._write_lock:
        conn.execute(pragma)
    try:
        yield conn
    finally:
        with store._write_lock:
            conn.execute(undo)


def _state(live: Live) -> tuple[int, int]:
    report = live.ledger.verify(tenant="acme")
    rows = live.ledger.store.query("SELECT count(*) FROM events WHERE tenant = ?", ["acme"])
    return report.sizes["acme"], int(rows[0][0])


def _refused_then_recovered(live: Live, pragma: str, undo: str, expect: str) -> None:
    with live.client("ingest@acme") as http:
        assert http.post("/api/v1/acme/auditlogs", json=_batch(5, 10, "before")).status_code == 201
        size_before = _state(live)
        with _writer_pragma(live, pragma, undo):
            answer = http.post("/api/v1/acme/auditlogs", json=_batch(200, 4000, "during"))
            assert answer.status_code == 503, answer.text
            assert answer.headers.get("retry-after", "").isdigit()
            assert expect in answer.json()["message"], answer.json()
            assert _state(live) == size_before, "nothing of the refused batch was stored"
            assert http.get("/readyz").status_code in (200, 503)  # answers, whatever it says
        again = http.post("/api/v1/acme/auditlogs", json=_batch(200, 4000, "during"))
        assert again.status_code == 201, again.text
        assert [r["duplicate"] for r in again.json()["receipts"]] == [False] * 200
    size, count = _state(live)
    assert size == count == size_before[0] + 200


def test_disk_full_is_503_and_recovers(make_live: Callable[..., Live]) -> None:
    """With no page left (PRAGMA max_page_count), ingest answers 503 naming the cause; after space returns it works."""
    live = make_live()
    store = live.ledger.store
    assert isinstance(store, SQLiteStore)
    pages = int(store._writer.execute("PRAGMA page_count").fetchone()[0])
    _refused_then_recovered(live, f"PRAGMA max_page_count = {pages + 2}", "PRAGMA max_page_count = 1073741823",
                            "full")


def test_read_only_database_is_503_and_recovers(make_live: Callable[..., Live]) -> None:
    """A database that turned read-only (PRAGMA query_only) refuses ingest with 503; writable again, it works."""
    live = make_live()
    _refused_then_recovered(live, "PRAGMA query_only = ON", "PRAGMA query_only = OFF", "readonly")


@pytest.mark.parametrize(
    "table, when",
    [("leaves", "INSERT"), ("events", "INSERT"), ("details", "INSERT"), ("tree_nodes", "INSERT"),
     ("tree_heads", "INSERT"), ("heads", "INSERT")],
)
def test_failure_at_any_statement_of_a_commit_is_503_and_atomic(
    make_live: Callable[..., Live], table: str, when: str
) -> None:
    """An I/O-like failure injected at each table the commit writes answers 503 and stores nothing of the batch."""
    live = make_live()
    store = live.ledger.store
    assert isinstance(store, SQLiteStore)
    with live.client("ingest@acme") as http:
        before = _state(live) if live.ledger.store.heads() else (0, 0)
        with store._write_lock:
            store._writer.execute(
                f"CREATE TRIGGER inject_fault BEFORE {when} ON {table} BEGIN SELECT RAISE(FAIL, 'injected fault'); END"
            )
        answer = http.post("/api/v1/acme/auditlogs", json=_batch(300, 10, "x"))  # 300: a full tile of tree nodes
        assert answer.status_code == 503, answer.text
        assert "injected fault" in answer.json()["message"] and answer.headers["retry-after"].isdigit()
        assert (_state(live) if live.ledger.store.heads() else (0, 0)) == before
        with store._write_lock:
            store._writer.execute("DROP TRIGGER inject_fault")
        assert http.post("/api/v1/acme/auditlogs", json=_batch(300, 10, "x")).status_code == 201
    assert _state(live) == (before[0] + 300, before[1] + 300)


@pytest.mark.postgres
@pytest.mark.parametrize("table", ["leaves", "events", "details", "tree_nodes", "tree_heads", "heads"])
def test_postgres_failure_at_any_table_is_503_and_atomic(make_live: Callable[..., Live], table: str) -> None:
    """On PostgreSQL too, a failure injected at each table a commit writes is a 503 and stores nothing."""
    import psycopg

    with pg_schema() as url:
        live = make_live(db=url)
        with live.client("ingest@acme") as http, psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE FUNCTION inject_fault() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'injected fault'; END $$"
            )
            conn.execute(f"CREATE TRIGGER inject_fault BEFORE INSERT OR UPDATE ON {table} "
                         "FOR EACH ROW EXECUTE FUNCTION inject_fault()")
            answer = http.post("/api/v1/acme/auditlogs", json=_batch(300, 10, "x"))
            assert answer.status_code == 503, answer.text
            assert "injected fault" in answer.json()["message"] and answer.headers["retry-after"].isdigit()
            assert _state(live) == (0, 0)
            conn.execute(f"DROP TRIGGER inject_fault ON {table}")
            assert http.post("/api/v1/acme/auditlogs", json=_batch(300, 10, "x")).status_code == 201
        assert _state(live) == (300, 300)
        live.stop()
