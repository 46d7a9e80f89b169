"""SQLite's first-page rewrites (date range as seq range, frequent details values tested per row)
return exactly what the plain translation returns."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from auditledger import AuditLog
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
            "actor": {"type": "USER", "id": f"user{i % 7}"},
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
