"""The one conformance suite: every Store must pass it, SQLite and PostgreSQL alike.

Search results are checked against a plain-Python reading of each Query over
the events we recorded, so both stores are held to the same meaning.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from auditledger import AuditLog
from auditledger.errors import StoreError, VerificationError
from auditledger.model import Event, to_micros
from auditledger.query import Field, Match, Query, Term, parse
from auditledger.store import Cursor, Head
from tests.store.pg import pg_schema


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh SQLite file, or a fresh PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'conformance.db'}"
        return
    with pg_schema() as url:
        yield url


@pytest.fixture
def log(store_url: str) -> Iterator[AuditLog]:
    ledger = AuditLog.open(store_url)
    yield ledger
    ledger.close()


USERS = [("anna@acme.io", "Anna Schmidt"), ("ben@acme.io", None), ("100%_sure", "Per%cent"), ("zoë@acme.io", "Zoë")]
NAMESPACES = ["company", "company.team", "company.team.data", "companyx", "other", "naïve.ünicode"]
RESOURCES = ["FLOW", "EXECUTION", "SECRET", "KV_STORE"]
ACTIONS = ["CREATE", "UPDATE", "DELETE", "LOGIN"]


def sample(i: int) -> dict[str, Any]:
    user, name = USERS[i % len(USERS)]
    details = {"namespace": NAMESPACES[i % len(NAMESPACES)], "flowId": f"flow-{i % 7}"}
    if i % 5 == 0:
        details["executionId"] = f"ex{i:04d}"
    if i % 11 == 0:
        details["note"] = "50% off_today"
    return {
        "resource_type": RESOURCES[i % len(RESOURCES)],
        "action": ACTIONS[(i // 2) % len(ACTIONS)],
        "actor": {"type": "SERVICE_ACCOUNT" if i % 6 == 0 else "USER", "id": user, "name": name},
        "details": details,
        "outcome": "failure" if i % 9 == 0 else "success",
        "after": {"i": i},
    }


def populate(log: AuditLog, n: int = 120) -> datetime:
    """``n`` events in ``main`` and a few in ``other``, dated an hour apart over past days; the first date."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=n + 2)
    dates = [start + timedelta(hours=i) for i in range(n)]
    log.backfill([sample(i) for i in range(n)], dates)
    log.record_many([sample(i) for i in range(10)], tenant="other")
    return start


def _matches(value: str | None, wanted: str, match: Match) -> bool:
    if value is None:
        return False
    if match is Match.EXACT:
        return value == wanted
    if match is Match.PREFIX:
        return value.startswith(wanted)
    if match is Match.NAMESPACE:
        return value == wanted or value.startswith(wanted + ".")
    if match is Match.CONTAINS:
        return wanted in value
    return value.endswith(wanted)


def _term_holds(event: Event, term: Term) -> bool:
    plain = {
        Field.RESOURCE: event.resource_type,
        Field.ACTION: event.action,
        Field.ACTOR: event.actor.id,
        Field.ACTOR_TYPE: str(event.actor.type),
        Field.OUTCOME: str(event.outcome),
        Field.ID: event.id,
    }
    if term.field is Field.DETAIL:
        assert term.key is not None
        holds = any(_matches(event.details.get(term.key), v, term.match) for v in term.values)
    elif term.field is Field.TEXT:
        in_details = Match.PREFIX if term.match is Match.EXACT else term.match
        holds = any(
            any(_matches(d, v, in_details) for d in event.details.values())
            or _matches(event.actor.id, v, term.match)
            or _matches(event.actor.name, v, term.match)
            for v in term.values
        )
    else:
        holds = any(_matches(plain[term.field], v, term.match) for v in term.values)
    return holds != term.negate


def reference(event: Event, query: Query) -> bool:
    """What ``query`` means, read without SQL."""
    if query.after is not None and event.date < query.after:
        return False
    if query.before is not None and event.date >= query.before:
        return False
    if not all(_term_holds(event, t) for t in query.terms):
        return False
    return not query.any_of or any(reference(event, q) for q in query.any_of)


def queries(start: datetime, some_id: str) -> list[Query]:
    T = Term
    qs = [Query()]
    for field, value in [
        (Field.RESOURCE, "FLOW"), (Field.ACTION, "UPDATE"), (Field.ACTOR, "anna@acme.io"),
        (Field.ACTOR_TYPE, "SERVICE_ACCOUNT"), (Field.OUTCOME, "failure"), (Field.ID, some_id),
    ]:
        qs += [Query((T(field, (value,)),)), Query((T(field, (value,), negate=True),))]
    for match, value in [
        (Match.EXACT, "company.team"), (Match.PREFIX, "company"), (Match.NAMESPACE, "company.team"),
        (Match.NAMESPACE, "company"), (Match.CONTAINS, "team"), (Match.SUFFIX, ".data"), (Match.PREFIX, "naïve.ü"),
    ]:
        qs.append(Query((T(Field.DETAIL, (value,), key="namespace", match=match),)))
        qs.append(Query((T(Field.DETAIL, (value,), key="namespace", match=match, negate=True),)))
    qs += [
        # LIKE's wildcards and SQL quotes are plain characters to every store.
        Query((T(Field.DETAIL, ("50%",), key="note", match=Match.PREFIX),)),
        Query((T(Field.DETAIL, ("% off_",), key="note", match=Match.CONTAINS),)),
        Query((T(Field.DETAIL, ("_",), key="note", match=Match.SUFFIX),)),
        Query((T(Field.ACTOR, ("100%",), match=Match.PREFIX),)),
        Query((T(Field.DETAIL, ("x' OR '1'='1",), key="namespace"),)),
        Query((T(Field.DETAIL, ("ex0005", "ex0010", "nope"), key="executionId"),)),
        Query((T(Field.DETAIL, ("flow-1",), key="executionId"),)),  # right value, wrong key
        Query((T(Field.DETAIL, ("",), key="executionId", match=Match.PREFIX, negate=True),)),  # key absent
        Query((T(Field.RESOURCE, ("FLOW", "SECRET")), T(Field.ACTION, ("CREATE",), negate=True))),
        Query((T(Field.RESOURCE, ("EXEC",), match=Match.PREFIX), T(Field.ACTOR, ("acme.io",), match=Match.SUFFIX))),
        Query((T(Field.ACTION, ("AT",), match=Match.CONTAINS),)),
        Query((T(Field.TEXT, ("anna",)),)),
        Query((T(Field.TEXT, ("company.team",)),)),
        Query((T(Field.TEXT, ("Per%",)),)),
        Query((T(Field.TEXT, ("Zoë",)),)),
        Query((T(Field.TEXT, ("ben@acme.io",), negate=True),)),  # actor_name NULL: negation still holds
        Query((T(Field.TEXT, ("team",), match=Match.CONTAINS),)),
        Query(after=start + timedelta(hours=30)),
        Query(before=start + timedelta(hours=30)),
        Query(after=start + timedelta(hours=10), before=start + timedelta(hours=20, minutes=1)),
        Query((T(Field.RESOURCE, ("FLOW",)),), after=start + timedelta(hours=50)),
        Query(any_of=(Query((T(Field.RESOURCE, ("SECRET",)),)), Query((T(Field.OUTCOME, ("failure",)),)))),
        Query(
            (T(Field.ACTOR_TYPE, ("USER",)),),
            any_of=(
                Query((T(Field.DETAIL, ("company",), key="namespace", match=Match.NAMESPACE),)),
                Query((T(Field.ACTION, ("LOGIN",)),), before=start + timedelta(hours=40)),
            ),
        ),
        parse("resource:FLOW,EXECUTION -action:DELETE namespace:company"),
        parse("flowId:flow-3 outcome:success"),
    ]
    return qs


def test_search_matches_the_reference_for_every_field_and_match(log: AuditLog) -> None:
    """Every Term field, match, negation, OR-group and date range selects exactly what the reference selects."""
    start = populate(log)
    every = {t: list(log.iter_search(tenant=t, order="asc")) for t in ("main", "other")}
    everything = every["main"] + every["other"]
    for query in queries(start, every["main"][17].id):
        for tenant in ("main", None):
            pool = every["main"] if tenant == "main" else everything
            expected = {e.id for e in pool if reference(e, query)}
            got = [e.id for e in log.iter_search(query, tenant=tenant)]
            assert len(got) == len(set(got)), query
            assert set(got) == expected, (tenant, query)
            assert log.count(query, tenant=tenant) == len(expected), (tenant, query)


def test_append_assigns_gap_free_seqs_and_rising_dates_per_tenant(log: AuditLog) -> None:
    """Batches and single records get seq 0, 1, 2 ... per tenant, with strictly increasing dates."""
    receipts = log.record_many([sample(i) for i in range(5)])
    receipts += [log.record(**sample(5))]
    receipts += log.record_many([sample(i) for i in range(3)], tenant="t2")
    receipts += log.record_many([sample(i) for i in range(4)])
    main = [r for r in receipts if r.tenant == "main"]
    assert [r.seq for r in main] == list(range(10))
    assert [r.seq for r in receipts if r.tenant == "t2"] == [0, 1, 2]
    assert all(a.date < b.date for a, b in itertools.pairwise(main))
    heads = {h.tenant: h for h in log.store.heads()}
    assert [h.tenant for h in log.store.heads()] == ["main", "t2"]
    assert heads["main"].size == 10 and heads["t2"].size == 3
    assert heads["main"].last_date == to_micros(main[-1].date)
    assert log.verify().sizes == {"main": 10, "t2": 3}


def test_idempotency_key_returns_the_first_receipt(log: AuditLog) -> None:
    """A repeated idempotency key stores nothing new and answers with the first id and seq, per tenant."""
    first = log.record(**sample(1), idempotency_key="k1")
    again = log.record(**sample(2), idempotency_key="k1")
    in_batch = log.record_many([{**sample(3), "idempotency_key": "k2"}, {**sample(4), "idempotency_key": "k2"}])
    elsewhere = log.record(**sample(1), idempotency_key="k1", tenant="t2")
    assert (again.id, again.seq, again.duplicate) == (first.id, first.seq, True)
    assert [r.duplicate for r in in_batch] == [False, True] and in_batch[0].id == in_batch[1].id
    assert not elsewhere.duplicate and elsewhere.seq == 0
    assert log.count(tenant="main") == 2
    assert log.verify().sizes == {"main": 2, "t2": 1}


def test_get_is_scoped_by_tenant(log: AuditLog) -> None:
    """get finds an event by id in its tenant or across tenants, and nothing elsewhere or for unknown ids."""
    receipt = log.record(**sample(3), tenant="t1")
    row = log.store.get("t1", receipt.id)
    assert row is not None and (row.tenant, row.seq, row.resource_type) == ("t1", 0, "KV_STORE")
    assert row.actor_id == "zoë@acme.io" and row.actor_name == "Zoë" and row.outcome == "success"
    assert log.store.get(None, receipt.id) == row
    assert log.store.get("main", receipt.id) is None
    assert log.store.get(None, "018f0000-0000-7000-8000-000000000000") is None
    assert log.store.get(None, "not-a-uuid") is None
    assert log.get(receipt.id, tenant="t1").details == sample(3)["details"]


@pytest.mark.parametrize("order", ["desc", "asc"])
def test_cursor_paging_walks_every_event_once_in_order(log: AuditLog, order: str) -> None:
    """Pages of 7 follow each other without gaps or repeats, in one tenant and across tenants."""
    populate(log, 40)
    for tenant in ("main", None):
        seen: list[Event] = []
        cursor = None
        while True:
            page = log.search(tenant=tenant, limit=7, cursor=cursor, order=order)  # type: ignore[arg-type]
            seen += page.events
            if page.cursor is None:
                break
            cursor = page.cursor
        keys = [(e.date, e.tenant, e.seq) for e in seen]
        assert keys == sorted(keys, reverse=order == "desc")
        assert len(seen) == (40 if tenant == "main" else 50) == len({e.id for e in seen})
        filtered = log.search("resource:FLOW", tenant=tenant, limit=3, order=order)  # type: ignore[arg-type]
        nxt = log.search("resource:FLOW", tenant=tenant, limit=3, cursor=filtered.cursor, order=order)  # type: ignore[arg-type]
        assert all(e.resource_type == "FLOW" for e in filtered.events + nxt.events)
        assert not {e.id for e in filtered.events} & {e.id for e in nxt.events}


def test_count_stops_past_the_cap(log: AuditLog) -> None:
    """count reads at most cap + 1 matches, so callers can say "more than cap"."""
    populate(log, 30)
    assert log.store.count("main", Query(), cap=5) == 6
    assert log.store.count("main", Query(), cap=100) == 30
    assert log.store.count(None, Query(), cap=1000) == 40


def test_scan_returns_ranges_with_leaves_and_details(log: AuditLog) -> None:
    """scan yields every position of [start, end) in order, with its leaf hash and the row's details."""
    receipts = log.record_many([sample(i) for i in range(12)])
    positions = list(log.store.scan("main", 3, 9))
    assert [p.seq for p in positions] == list(range(3, 9))
    first = positions[0]
    assert first.row is not None and first.row.id == receipts[3].id and len(first.leaf_hash) == 32
    assert dict(first.row.details) == sample(3)["details"] and not first.purged
    assert len(list(log.store.scan("main"))) == 12
    assert list(log.store.scan("nobody")) == []


@pytest.mark.parametrize("count", [0, 1, 16, 17, 64])
def test_one_event_keeps_every_detail(log: AuditLog, count: int) -> None:
    """A single recorded event (SQLite's one-statement path, up to 16 details, then row by row) stores each detail."""
    details = {f"k{i:02d}": f"v{i}" for i in range(count)}
    receipt = log.record("FLOW", "UPDATE", {"type": "USER", "id": "ann"}, details=details)
    (position,) = log.store.scan("main", receipt.seq, receipt.seq + 1)
    assert position.row is not None and dict(position.row.details) == details
    assert log.get(receipt.id).details == details
    if count:
        assert log.count(parse(f"k{count - 1:02d}:v{count - 1}")) == 1
    assert log.verify().sizes == {"main": 1}


def _purge(log: AuditLog, seq: int, *, mark_leaf: bool = True) -> None:
    """The purge path as retention runs it: open the gate, delete, mark the leaf, close the gate."""
    with log.store.write() as txn:
        txn.execute("UPDATE purge_gate SET open = 1")
        txn.execute("DELETE FROM details WHERE tenant = ? AND seq = ?", ["main", seq])
        assert txn.execute("DELETE FROM events WHERE tenant = ? AND seq = ?", ["main", seq]) == 1
        if mark_leaf:
            txn.execute("UPDATE leaves SET purged = 1 WHERE tenant = ? AND seq = ?", ["main", seq])
        txn.execute("UPDATE purge_gate SET open = 0")


def test_purge_keeps_the_leaf_and_verify_still_passes(log: AuditLog) -> None:
    """A purged position keeps its leaf hash: scan shows it purged and verify counts it."""
    log.record_many([sample(i) for i in range(6)])
    _purge(log, 2)
    position = next(iter(log.store.scan("main", 2, 3)))
    assert position.purged and position.row is None and len(position.leaf_hash) == 32
    report = log.verify()
    assert report.sizes == {"main": 6} and report.purged == {"main": 1}
    assert log.count() == 5


def test_verify_names_an_event_removed_without_a_purge(log: AuditLog) -> None:
    """Deleting an event but leaving its leaf unmarked is caught by verify at that position."""
    log.record_many([sample(i) for i in range(4)])
    _purge(log, 1, mark_leaf=False)
    with pytest.raises(VerificationError) as info:
        log.verify()
    assert info.value.seq == 1


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET action = 'READ'",
        "DELETE FROM events",
        "UPDATE details SET value = 'x'",
        "DELETE FROM details",
        "DELETE FROM leaves",
        "UPDATE leaves SET hash = ?",
        "UPDATE leaves SET purged = 1",
    ],
)
def test_triggers_refuse_changes_outside_purge(log: AuditLog, statement: str) -> None:
    """UPDATE and DELETE of events, details and leaves fail while the purge gate is closed; nothing changes."""
    log.record_many([sample(i) for i in range(3)])
    with pytest.raises(StoreError), log.store.write() as txn:
        txn.execute(statement, [b"\0" * 32] if "?" in statement else [])
    log.verify()
    assert log.count() == 3


def test_leaf_hashes_stay_fixed_even_with_the_gate_open(log: AuditLog) -> None:
    """Purge may only mark leaves: rewriting a hash or deleting a leaf fails with the gate open."""
    log.record_many([sample(i) for i in range(2)])
    for statement in ("UPDATE leaves SET hash = ?", "DELETE FROM leaves", "UPDATE events SET action = 'READ'"):
        with pytest.raises(StoreError), log.store.write() as txn:
            txn.execute("UPDATE purge_gate SET open = 1")
            txn.execute(statement, [b"\1" * 32] if "?" in statement else [])
    log.verify()


def test_a_failed_write_stores_nothing(log: AuditLog) -> None:
    """An error inside write() rolls back every insert and the head."""
    log.record(**sample(0))
    with pytest.raises(RuntimeError), log.store.write() as txn:
        head = txn.head("main")
        txn.set_head(Head("main", head.size + 5, head.last_date))
        txn.execute("INSERT INTO leaves (tenant, seq, hash) VALUES (?, ?, ?)", ["main", 1, b"\0" * 32])
        raise RuntimeError("boom")
    assert [(h.tenant, h.size) for h in log.store.heads()] == [("main", 1)]
    log.verify()


def test_portable_sql_runs_the_same_on_every_store(log: AuditLog) -> None:
    """execute/query take ? placeholders; ?, % and quotes inside literals stay literal."""
    with log.store.write() as txn:
        # Schemas come from per-dialect migrations; BYTEA is only used here because SQLite takes any type name.
        txn.execute("CREATE TABLE feature_things (name TEXT PRIMARY KEY, n INTEGER NOT NULL, blob BYTEA)")
        assert txn.execute("INSERT INTO feature_things VALUES (?, ?, ?)", ["a", 1, b"\x00\xff"]) == 1
        txn.execute("INSERT INTO feature_things VALUES (?, ?, NULL), ('it''s ? 100%', 3, NULL)", ["b", 2])
        assert txn.query("SELECT count(*) FROM feature_things") == [(3,)]  # sees its own writes
    rows = log.store.query("SELECT name, n, blob FROM feature_things WHERE n >= ? ORDER BY n", [1])
    assert rows == [("a", 1, b"\x00\xff"), ("b", 2, None), ("it's ? 100%", 3, None)]
    assert log.store.query("SELECT n FROM feature_things WHERE name LIKE '%?%' -- a ? comment") == [(3,)]
    with log.store.write() as txn:
        assert txn.execute("UPDATE feature_things SET n = n + 10 WHERE name <> ?", ["a"]) == 2
        assert txn.execute("DELETE FROM feature_things WHERE n > ?", [12]) == 1
        txn.execute("INSERT INTO feature_things VALUES (?, ?, NULL) ON CONFLICT (name) DO NOTHING", ["a", 9])
    assert log.store.query("SELECT name, n FROM feature_things ORDER BY name") == [("a", 1), ("b", 12)]
    with pytest.raises(StoreError):
        log.store.query("SELECT * FROM no_such_table")


def test_facets_count_every_match_by_field_and_bucket(log: AuditLog) -> None:
    """facets counts resource types, actions, actor types and hourly buckets exactly as the reference does."""
    start = populate(log, 60)
    query = parse("namespace:company")
    events = [e for e in log.iter_search(tenant="main") if reference(e, query)]
    facets = log.store.facets("main", query, bucket_micros=3_600_000_000 * 6)
    assert facets.resource_type == dict(Counter(e.resource_type for e in events))
    assert facets.action == dict(Counter(e.action for e in events))
    assert facets.actor_type == dict(Counter(str(e.actor.type) for e in events))
    assert sum(n for _, n in facets.timeline) == len(events)
    assert [b for b, _ in facets.timeline] == sorted(b for b, _ in facets.timeline)
    assert facets.timeline[0][0] <= to_micros(start) + 3_600_000_000 * 6
    assert list(facets.resource_type.values()) == sorted(facets.resource_type.values(), reverse=True)
    timeline_only = log.store.facets("main", query, bucket_micros=3_600_000_000 * 6, counts=False)
    assert timeline_only.timeline == facets.timeline
    assert (timeline_only.resource_type, timeline_only.action, timeline_only.actor_type) == ({}, {}, {})


def test_a_tenant_cursor_is_read_by_its_seq(log: AuditLog) -> None:
    """In one tenant a cursor means "after this seq": a hand-made Cursor(0, tenant, k) pages from k + 1."""
    log.record_many([sample(i) for i in range(10)])
    rows = log.store.search("main", Query(), limit=100, after=Cursor(0, "main", 6), order="asc")
    assert [r.seq for r in rows] == [7, 8, 9]
