"""SQLite's first-page rewrites (date range as seq range, frequent details values tested per row,
rare free words collected through indexes) return exactly what the plain translation returns;
purge's details sweep deletes in one pass where it can."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from auditledger import AuditLog
from auditledger.demo import demo_events
from auditledger.query import Query, parse
from auditledger.store.sqlite import SQLiteStore, where_clause

N = 5000


@pytest.fixture(scope="module")
def store() -> Iterator[SQLiteStore]:
    log = AuditLog.open("memory://")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        {
            "resource_type": ("FLOW", "EXECUTION")[i % 2],
            "action": ("CREATE", "UPDATE", "READ")[i % 3],
            "actor": {"type": "USER", "id": "named", "name": "Named Person"}
            if i % 11 == 0
            else {"type": "USER", "id": f"user{i % 7}"},
            "details": {"namespace": ("a", "a.b", "a.c", "z", "ab")[i % 5], "flowId": f"f{i % 4}"}
            | ({"rare": "yes"} if i % 1000 == 0 else {}),
        }
        for i in range(N)
    ]
    log.backfill(events, [start + timedelta(minutes=i) for i in range(N)], tenant="t")
    assert isinstance(log.store, SQLiteStore)
    yield log.store
    log.close()


QUERIES = [
    "namespace:a",
    "namespace:a flowId:f1",
    "-namespace:a",
    "namespace:=a",
    "flowId:f*",
    "-flowId:f2 namespace:a.b",
    "rare:yes",
    "namespace:a rare:yes",
    "after:2026-01-02 before:2026-01-03",
    "after:2026-01-03T10:00Z namespace:a action:UPDATE",
    "before:2025-12-01",
    "f1",
    "f",
    "a.b",
    "-f2 user3",
    "use*",
    "after:2027-01-01",
    "user3",
    "nomatch",
    "-nomatch",
    "-user3 namespace:a",
    "user3 rare:yes",
    '"Named Person"',
    "Named",
    "Nam*",
    "*amed*",
]


def plain(store: SQLiteStore, query: Query, order: str = "DESC") -> list[int]:
    where, params = where_clause("t", query)
    sql = f"SELECT e.seq FROM events e WHERE {where} ORDER BY e.seq {order}"
    return [seq for (seq,) in store.query(sql, params)]


@pytest.mark.parametrize("text", QUERIES)
def test_rewrites_return_the_same_rows(store: SQLiteStore, text: str) -> None:
    """Pages (both orders, with the cursor) and counts equal the plain translation's rows."""
    query = parse(text)
    for order in ("desc", "asc"):
        expected = plain(store, query, order.upper())
        got: list[int] = []
        rows = store.search("t", query, limit=700, order=order)  # type: ignore[arg-type]
        got += [r.seq for r in rows]
        assert got == expected[:700]
    assert store.count("t", query, cap=N) == len(plain(store, query))
    facets = store.facets("t", query, bucket_micros=3_600_000_000)
    assert sum(facets.action.values()) == len(plain(store, query))


def test_frequent_values_are_tested_per_row(store: SQLiteStore) -> None:
    """A frequent details value and a namespace with children become primary-key lookups; a rare one does not."""
    where, params = store._where("t", parse("namespace:a rare:yes"))
    assert where.count("EXISTS") == 1 and where.count("e.seq IN (SELECT") == 1  # 3000 matches vs 5
    assert params[params.index("namespace") + 1 : params.index("namespace") + 4] == ["a", "a.b", "a.c"]
    assert "ab" not in params  # a sibling, not a child
    where, _ = store._where("t", parse("f"))  # a frequent free word (every flowId starts with f)
    assert "EXISTS" in where
    where, _ = store._where("t", parse("after:2026-01-02"))
    assert "e.seq >= ?" in where and "e.date" not in where


def test_frequent_details_are_point_lookups_on_a_file_never_analysed() -> None:
    """Without ANALYZE statistics, a free word frequent under several keys still binds the whole primary key.

    With the keys ORed inside one EXISTS, SQLite bound only the tenant and scanned the tenant's
    details once per row: such a free word took a minute at 100k events.
    """
    with AuditLog.open("memory://") as log:
        actor = {"type": "USER", "id": "u"}
        log.record_many(
            [
                {
                    "resource_type": "FLOW",
                    "action": "UPDATE",
                    "actor": actor,
                    "details": {"owner": ("x1", "x1:a", "x1:b")[i % 3], "approver": "x1", "n": str(i)},
                }
                for i in range(2500)
            ]
        )
        store = log.store
        assert isinstance(store, SQLiteStore)
        assert not store.query("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'")
        where, params = store._where("main", parse("x1"))
        plan = store.query(f"EXPLAIN QUERY PLAN SELECT e.seq FROM events e WHERE {where} ORDER BY e.seq DESC", params)
        lookups = [row[3] for row in plan if "SEARCH d USING PRIMARY KEY" in row[3]]
        assert lookups, plan
        for detail in lookups:
            assert "key=?" in detail and "seq=?" in detail, detail
        assert len(log.search("x1", limit=10).events) == 10


@pytest.mark.parametrize("word", ["nomatch", "user3", '"Named Person"'])
def test_a_rare_free_word_is_collected_through_indexes(store: SQLiteStore, word: str) -> None:
    """A free word matching few entries (or none) never scans the tenant's events: it is one set
    collected from the details primary key and the actor index (a missing word took seconds at 1M)."""
    where, params = store._where("t", parse(word))
    plan = store.query(f"EXPLAIN QUERY PLAN SELECT e.seq FROM events e WHERE {where} ORDER BY e.seq DESC", params)
    events = [row[3] for row in plan if row[3].startswith(("SCAN e ", "SEARCH e "))]
    # Each entry is looked up by seq from the collected set; the old form bound only the tenant.
    assert len(events) == 1 and "seq=?" in events[0], events


def test_a_frequent_actor_word_is_tested_per_row(store: SQLiteStore) -> None:
    """A word naming an actor of thousands of entries keeps the per-row test: its first page fills at once."""
    with AuditLog.open("memory://") as log:
        log.record_many([{"resource_type": "FLOW", "action": "READ", "actor": {"type": "USER", "id": "busy"}}] * 2500)
        sqlite = log.store
        assert isinstance(sqlite, SQLiteStore)
        where, _ = sqlite._where("main", parse("busy"))
        assert "UNION" not in where and "e.actor_id = ?" in where
        assert len(log.search("busy", limit=10).events) == 10


def test_a_file_from_before_the_actors_table_gets_it_on_upgrade(tmp_path: Path) -> None:
    """Migration 0008 fills ``actors`` from the events already stored, so rare-word search holds on old files."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with AuditLog.open(url) as log:
        log.record("FLOW", "CREATE", {"type": "USER", "id": "old", "name": "Old Timer"})
    # Undo migration 0008, as in a file made before it.
    conn = sqlite3.connect(tmp_path / "old.db")
    conn.executescript("DROP TABLE actors; DELETE FROM schema_migrations WHERE version = 8;")
    conn.close()
    with AuditLog.open(url) as log:
        assert log.store.query("SELECT tenant, actor_id, actor_name FROM actors") == [("main", "old", "Old Timer")]
        assert [e.actor.id for e in log.search('"Old Timer"').events] == ["old"]
        log.record("FLOW", "CREATE", {"type": "USER", "id": "new"})
        assert ("main", "new", "") in log.store.query("SELECT tenant, actor_id, actor_name FROM actors")


def test_a_details_sweep_from_position_zero_deletes_in_one_pass(tmp_path: Path) -> None:
    """A sweep whose every position below its end goes deletes as it walks the key, with no temporary index.

    The general form (positions below ``first`` only where their leaf waits for the sweep)
    has a subquery, and with it SQLite first copies every key it deletes and seeks it again.
    """
    log = AuditLog.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    store = log.store
    assert isinstance(store, SQLiteStore)
    try:
        log.record_many(list(demo_events(300)))
        (below,), = store.reader().execute("SELECT count(*) FROM details WHERE seq < 100").fetchall()
        (above,), = store.reader().execute("SELECT count(*) FROM details WHERE seq >= 100").fetchall()
        assert below > 0 and above > 0
        seen: list[str] = []
        with store.purge_write() as txn:
            txn.conn.set_trace_callback(seen.append)
            resume, deleted = store.sweep_purged_details(txn, "main", (0, 100), ("", "", -1), 1_000_000)
            txn.conn.set_trace_callback(None)
            (statement,) = [sql for sql in seen if sql.lstrip().upper().startswith("DELETE FROM DETAILS")]
            opcodes = {row[1] for row in txn.conn.execute(f"EXPLAIN {statement}")}
        assert "OpenEphemeral" not in opcodes, statement
        assert (resume, deleted) == (None, below)
        assert store.reader().execute("SELECT count(*) FROM details WHERE seq < 100").fetchall() == [(0,)]
        assert store.reader().execute("SELECT count(*) FROM details WHERE seq >= 100").fetchall() == [(above,)]
    finally:
        log.close()
