"""AuditLog: recording, search, idempotency and verify against tampering with the file."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from auditledger import Actor, AuditLog, NotFoundError, Query, ValidationError, VerificationError, canonical
from auditledger.demo import demo_events
from auditledger.query import Field, Match, Term


def flow(i: int, ns: str = "company.team") -> dict[str, object]:
    return {
        "resource_type": "FLOW",
        "action": "UPDATE",
        "actor": {"type": "USER", "id": f"user{i % 3}@acme.io"},
        "details": {"namespace": ns, "flowId": f"f{i}"},
        "before": f"id: f{i}\nrev: {i}\n",
        "after": f"id: f{i}\nrev: {i + 1}\n",
    }


def test_seq_is_gap_free_per_tenant(ledger: AuditLog) -> None:
    """Each tenant counts its own positions 0, 1, 2 ... across batches."""
    a = ledger.record_many([flow(i) for i in range(3)])
    b = ledger.record_many([flow(i) for i in range(2)], tenant="acme")
    c = ledger.record_many([flow(9)])
    assert [r.seq for r in a + c] == [0, 1, 2, 3]
    assert [r.seq for r in b] == [0, 1]
    assert all(r.tenant == "acme" for r in b)


def test_dates_strictly_increase_and_ids_are_uuid7(ledger: AuditLog) -> None:
    """Dates never go backwards within a tenant and ids are version-7 UUIDs."""
    receipts = ledger.record_many([flow(i) for i in range(50)])
    dates = [r.date for r in receipts]
    assert dates == sorted(dates) and len(set(dates)) == len(dates)
    assert all(r.id[14] == "7" for r in receipts)


def test_get_round_trips_every_field(ledger: AuditLog) -> None:
    """What was recorded is what get returns."""
    r = ledger.record(
        "SECRET",
        "CREATE",
        Actor.service_account("sa-ci", "CI", ip="10.0.0.7"),
        details={"namespace": "company", "key": "TOKEN"},
        after={"key": "TOKEN", "value": "******"},
        outcome="failure",
    )
    event = ledger.get(r.id)
    assert event.seq == r.seq and event.date == r.date
    assert event.actor == Actor.service_account("sa-ci", "CI", ip="10.0.0.7")
    assert event.details == {"namespace": "company", "key": "TOKEN"}
    assert event.after == {"key": "TOKEN", "value": "******"} and event.before is None
    assert event.outcome == "failure"


def test_get_is_tenant_scoped(ledger: AuditLog) -> None:
    """An event of another tenant is not found."""
    r = ledger.record_many([flow(1)], tenant="acme")[0]
    with pytest.raises(NotFoundError):
        ledger.get(r.id, tenant="main")
    assert ledger.get(r.id, tenant="acme").id == r.id


def test_refused_batch_stores_nothing(ledger: AuditLog) -> None:
    """One invalid event refuses the whole batch, named by index."""
    batch = [flow(i) for i in range(5)]
    batch[3]["resource_type"] = "bad type"
    with pytest.raises(ValidationError) as info:
        ledger.record_many(batch)
    assert info.value.field == "events[3].resource_type"
    assert ledger.count() == 0 and ledger.tenants() == []


def test_validate_checks_as_record_many_does_and_stores_nothing(ledger: AuditLog) -> None:
    """validate answers the checked events, or raises record_many's error naming the index; nothing is stored."""
    drafts = ledger.validate([flow(0), flow(1)])
    assert [d.details["flowId"] for d in drafts] == ["f0", "f1"]
    batch = [flow(0), dict(flow(1), after="x" * (ledger.limits.max_state_bytes + 1))]
    with pytest.raises(ValidationError) as info:
        ledger.validate(batch)
    with pytest.raises(ValidationError) as recorded:
        ledger.record_many(batch)
    assert info.value.field == recorded.value.field == "events[1].after"
    assert ledger.count() == 0


def test_idempotency_key_stores_once(ledger: AuditLog) -> None:
    """A retried batch with the same idempotency keys is stored once."""
    batch = [dict(flow(i), idempotency_key=f"k{i}") for i in range(4)]
    first = ledger.record_many(batch)
    again = ledger.record_many([*batch, dict(flow(9), idempotency_key="k9")])
    assert [r.id for r in again[:4]] == [r.id for r in first]
    assert all(r.duplicate for r in again[:4]) and not again[4].duplicate
    assert ledger.count() == 5


def test_search_filters_and_pages_newest_first(ledger: AuditLog) -> None:
    """Details, resource, actor and date filters select the right rows; cursors page through all."""
    ledger.record_many([flow(i, "company.team" if i % 2 else "company.other") for i in range(25)])
    ledger.record("USER", "LOGIN", Actor.user("anna@acme.io"), details={"username": "anna@acme.io"})
    ns = Query((Term(Field.DETAIL, ("company.team",), key="namespace", match=Match.NAMESPACE),))
    seen = []
    cursor = None
    while True:
        page = ledger.search(ns, limit=5, cursor=cursor)
        seen += [e.seq for e in page.events]
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == sorted((i for i in range(25) if i % 2), reverse=True)
    logins = ledger.search(Query((Term(Field.ACTION, ("LOGIN",)),)))
    assert [e.resource_type for e in logins.events] == ["USER"]
    by_actor = ledger.search(Query((Term(Field.ACTOR, ("user1@acme.io",)),)), limit=100)
    assert {e.actor.id for e in by_actor.events} == {"user1@acme.io"} and len(by_actor.events) == 8
    future = ledger.search(Query(after=datetime.now(UTC) + timedelta(days=1)))
    assert future.events == []


def test_search_text_language(ledger: AuditLog) -> None:
    """The search language text form is accepted by search()."""
    ledger.record_many([flow(i) for i in range(3)])
    page = ledger.search("namespace:company flowId:f1 -action:READ")
    assert [e.details["flowId"] for e in page.events] == ["f1"]


def test_backfill_keeps_past_dates_and_refuses_future(ledger: AuditLog) -> None:
    """Imported events keep their dates; a future date is refused."""
    past = datetime.now(UTC) - timedelta(days=30)
    r = ledger.backfill([flow(1)], [past])[0]
    assert r.date == past
    with pytest.raises(ValidationError):
        ledger.backfill([flow(2)], [datetime.now(UTC) + timedelta(days=1)])


def test_untouched_demo_ledger_verifies(ledger: AuditLog) -> None:
    """A ledger written only through the API verifies."""
    events = list(demo_events(500))
    for i in range(0, 500, 100):
        ledger.record_many(events[i : i + 100])
    report = ledger.verify()
    assert report.sizes == {"main": 500}


# ---------------------------------------------------------------- tampering with the file


def _tampered(db_path: Path, *statements: str) -> None:
    conn = sqlite3.connect(db_path)
    for trigger in (
        "events_no_update",
        "events_no_delete",
        "details_no_delete",
        "details_no_update",
        "leaves_no_delete",
        "leaves_no_update",
        "leaves_key_no_update",
    ):
        conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def _fresh(tmp_path: Path) -> tuple[Path, AuditLog]:
    path = tmp_path / "t.db"
    log = AuditLog.open(f"sqlite:///{path}")
    log.record_many([flow(i) for i in range(20)])
    return path, log


@pytest.mark.parametrize(
    ("statements", "bad_seq", "words"),
    [
        (["UPDATE events SET body = replace(body, 'rev: 8', 'rev: 9') WHERE seq = 7"], 7, "leaf hash"),
        (["DELETE FROM events WHERE seq = 5"], 5, "removed without a purge"),
        (["DELETE FROM events WHERE seq = 5", "DELETE FROM leaves WHERE seq = 5"], 5, "missing"),
        (
            [
                "UPDATE events SET seq = -1 WHERE seq = 3",
                "UPDATE events SET seq = 3 WHERE seq = 4",
                "UPDATE events SET seq = 4 WHERE seq = -1",
            ],
            3,
            "",
        ),
        (["UPDATE events SET action = 'READ' WHERE seq = 11"], 11, "indexed action"),
        (["DELETE FROM details WHERE seq = 12 AND key = 'flowId'"], 12, "details"),
        (["DELETE FROM events WHERE seq = 19", "DELETE FROM leaves WHERE seq = 19"], 19, "head says"),
    ],
    ids=[
        "payload-edited",
        "row-deleted",
        "row-and-leaf-deleted",
        "rows-swapped",
        "column-edited",
        "details-row-deleted",
        "tail-truncated",
    ],
)
def test_tampering_fails_verify_at_first_bad_seq(
    tmp_path: Path, statements: list[str], bad_seq: int, words: str
) -> None:
    """Editing the SQLite file behind the triggers makes verify fail and name the first bad seq."""
    path, log = _fresh(tmp_path)
    log.verify()
    log.close()
    _tampered(path, *statements)
    with AuditLog.open(f"sqlite:///{path}") as again, pytest.raises(VerificationError) as info:
        again.verify()
    assert info.value.seq == bad_seq, str(info.value)
    assert words in str(info.value)


def test_triggers_refuse_update_and_delete(tmp_path: Path) -> None:
    """The store itself refuses UPDATE and DELETE on events and leaves."""
    path, log = _fresh(tmp_path)
    log.close()
    conn = sqlite3.connect(path)
    for statement in (
        "UPDATE events SET action = 'READ'",
        "DELETE FROM events",
        "DELETE FROM leaves",
        "UPDATE leaves SET hash = x'00'",
        "DELETE FROM details",
    ):
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(statement)
    conn.close()


def test_schema_migrations_are_recorded(ledger: AuditLog) -> None:
    """The applied schema versions are recorded in the database."""
    rows = ledger.store.query("SELECT version, name FROM schema_migrations ORDER BY version")
    assert rows[0] == (1, "init")


def test_uuid7_from_hex_randomness_equals_the_byte_form() -> None:
    """The append path's ``uuid7_hex`` gives exactly ``uuid7`` of the same bytes (version 7, variant 10)."""
    import os

    from auditledger.ledger import uuid7, uuid7_hex

    for ms in (0, 1, 1_732_000_000_123, (1 << 48) - 1):
        for _ in range(300):
            rand = os.urandom(10)
            assert uuid7_hex(ms, rand.hex()) == uuid7(ms, rand)


def test_a_batch_over_several_leaves_statements_is_stored_whole(ledger: AuditLog, db_url: str) -> None:
    """A batch of 2 x 250 + 101 events (leaves go in by statements of 250 rows) stores one leaf per
    position, each the hash of its event, and verifies; so does a batch that fills statements exactly."""
    first = ledger.record_many([flow(i) for i in range(601)])
    second = ledger.record_many([flow(i) for i in range(250)], tenant="acme")
    assert [r.seq for r in first] == list(range(601)) and [r.seq for r in second] == list(range(250))
    report = ledger.verify()
    assert report.sizes == {"main": 601, "acme": 250}
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        rows = conn.execute(
            "SELECT l.seq, l.hash, e.body FROM leaves l JOIN events e ON e.tenant = l.tenant AND e.seq = l.seq "
            "WHERE l.tenant = 'main' ORDER BY l.seq"
        ).fetchall()
    assert [seq for seq, _, _ in rows] == list(range(601))
    assert all(bytes(leaf) == canonical.leaf_hash(bytes(body)) for _, leaf, body in rows)


def test_uuid7_hex_never_reuses_another_milliseconds_prefix() -> None:
    """The remembered millisecond text of ``uuid7_hex`` follows the argument, back and forth."""
    import os

    from auditledger.ledger import uuid7, uuid7_hex

    for ms in (5, 1_732_000_000_123, 5, 6, 1_732_000_000_123):
        rand = os.urandom(10)
        assert uuid7_hex(ms, rand.hex()) == uuid7(ms, rand)
