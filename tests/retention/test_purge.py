"""Purge removes exactly the matching payloads, keeps the ledger provable, and respects holds and age."""

from __future__ import annotations

import itertools
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from auditledger import Actor, AuditLog, StoreError, ValidationError
from auditledger.query import parse as parse_query
from auditledger.retention import PurgeFilter, Retention, purge_filter
from auditledger.tree import Tree
from tests.retention.conftest import TENANTS, Base

ADMIN = Actor.user("root@acme.io")


def _remaining(log: AuditLog) -> set[str]:
    return {e.id for tenant in TENANTS for e in log.iter_search(tenant=tenant) if e.resource_type != "AUDITLOG"}


def _combos() -> list[tuple[bool, ...]]:
    return list(itertools.product([False, True], repeat=5))


@pytest.mark.slow
def test_every_filter_combination_removes_exactly_the_matching_events(base_ledger: Base, tmp_path: Path) -> None:
    """All 32 combinations of startDate, namespace, resources, actions, tenant purge what brute force selects."""
    _check_combos(base_ledger, tmp_path, _combos())


def test_representative_filter_combinations_remove_exactly_the_matching_events(
    base_ledger: Base, tmp_path: Path
) -> None:
    """No filter, every filter, and two mixed combinations purge what a brute-force filter selects."""
    combos = _combos()
    _check_combos(base_ledger, tmp_path, [combos[0], combos[-1], combos[10], combos[21]])


def test_representative_combinations_with_the_ordered_details_sweep(base_ledger: Base, tmp_path: Path) -> None:
    """The large-purge path (details deleted in one ordered sweep after the events) purges exactly the same."""
    combos = _combos()
    _check_combos(base_ledger, tmp_path, [combos[0], combos[-1], combos[10], combos[21]], sweep_min=0)


def test_representative_filter_combinations_on_postgresql(base_ledger: Base) -> None:
    """The same brute-force comparison on PostgreSQL (details found through their seq index)."""
    from auditledger.store.copy import copy_ledger
    from tests.store.pg import pg_schema

    combos = _combos()

    @contextmanager
    def on_postgres(_: int) -> Iterator[AuditLog]:
        with pg_schema() as url, AuditLog.open(url) as log, AuditLog.open(f"sqlite:///{base_ledger.path}") as src:
            copy_ledger(src.store, log.store)
            yield log

    _check_combos(base_ledger, None, [combos[0], combos[-1], combos[10], combos[21]], opener=on_postgres)


def _check_combos(
    base_ledger: Base,
    tmp_path: Path | None,
    combos: list[tuple[bool, ...]],
    *,
    sweep_min: int = 20_000,
    opener: Callable[[int], AbstractContextManager[AuditLog]] | None = None,
) -> None:
    now = base_ledger.now

    @contextmanager
    def on_sqlite(i: int) -> Iterator[AuditLog]:
        assert tmp_path is not None
        target = tmp_path / f"c{i}.db"
        shutil.copy(base_ledger.path, target)
        with AuditLog.open(f"sqlite:///{target}") as log:
            yield log

    for i, (start, ns, res, act, tenant) in enumerate(combos):
        with (opener or on_sqlite)(i) as log:
            flt = purge_filter(
                now - timedelta(days=20),
                start_date=now - timedelta(days=70) if start else None,
                namespace="company.team" if ns else None,
                resources=["FLOW", "EXECUTION", "KVSTORE"] if res else None,
                types=["CREATE", "UPDATE", "DELETE"] if act else None,
                tenant="main" if tenant else None,
            )
            expected = {
                e.id
                for e in base_ledger.events
                if (flt.tenant is None or e.tenant == flt.tenant)
                and flt.matches(e.date, e.resource_type, e.action, e.details)
            }
            retention = Retention(log, sweep_min=sweep_min)
            dry = retention.purge(flt, dry_run=True, actor=ADMIN)
            assert dry.count == len(expected), (i, flt)
            result = retention.purge(flt, actor=ADMIN)
            assert result.count == len(expected), (i, flt)
            assert len(expected) > 0 or ns  # the demo data makes most combinations non-empty
            left = _remaining(log)
            assert left == {e.id for e in base_ledger.events} - expected, (i, flt)
            report = log.verify()  # also compares every surviving event's details rows with its body
            assert sum(report.purged.values()) == len(expected)
            assert _orphan_details(log) == 0, (i, flt)
            assert log.store.query("SELECT count(*) FROM leaves WHERE purged <> 0 AND purged <> 1") == [(0,)]


def _orphan_details(log: AuditLog) -> int:
    """Details rows whose event is gone: a purge must leave none."""
    rows = log.store.query(
        "SELECT count(*) FROM details d WHERE NOT EXISTS "
        "(SELECT 1 FROM events e WHERE e.tenant = d.tenant AND e.seq = d.seq)"
    )
    return int(rows[0][0])


def test_dry_run_changes_nothing(copy_ledger: AuditLog, base_ledger: Base) -> None:
    """A dry run reports the count but removes nothing and records nothing."""
    before = copy_ledger.store.heads()
    result = Retention(copy_ledger).purge(purge_filter(base_ledger.now - timedelta(days=30)), dry_run=True)
    assert result.count > 0
    assert copy_ledger.store.heads() == before
    assert sum(copy_ledger.verify().purged.values()) == 0


def test_purge_is_recorded_as_an_auditlog_delete_event(copy_ledger: AuditLog, base_ledger: Base) -> None:
    """The purge appends AUDITLOG/DELETE carrying its filter, count and actor."""
    result = Retention(copy_ledger).purge(
        purge_filter(base_ledger.now - timedelta(days=30), namespace="company"), actor=ADMIN
    )
    (event,) = list(copy_ledger.iter_search("resource:AUDITLOG action:DELETE"))
    assert event.actor.id == "root@acme.io"
    assert event.details["count"] == str(result.count)
    assert event.details["purgedNamespace"] == "company"
    assert event.after["filter"]["namespace"] == "company"
    assert result.event_ids == [event.id]


def test_recent_events_survive_without_force(copy_ledger: AuditLog, base_ledger: Base) -> None:
    """Without force the end date is clipped to the minimum retention age; force lifts it."""
    now = base_ledger.now
    retention = Retention(copy_ledger, min_age=timedelta(days=7))
    result = retention.purge(purge_filter(now), actor=ADMIN)
    assert result.clipped
    cutoff = now - timedelta(days=7)
    recent = {e.id for e in base_ledger.events if e.tenant == "main" and e.date >= cutoff}
    assert recent and recent <= _remaining(copy_ledger)
    assert not any(e.date < cutoff for e in copy_ledger.iter_search() if e.resource_type != "AUDITLOG")
    forced = retention.purge(purge_filter(now), actor=ADMIN, force=True)
    assert not forced.clipped
    assert forced.count == len(recent)
    copy_ledger.verify()


@pytest.mark.parametrize("sweep_min", [20_000, 0])
def test_held_events_survive_until_released(copy_ledger: AuditLog, base_ledger: Base, sweep_min: int) -> None:
    """A legal hold protects its matching events (and their details) from a purge; after release they can go."""
    retention = Retention(copy_ledger, sweep_min=sweep_min)
    hold = retention.create_hold("resource:SECRET", "litigation 2026-17", actor=ADMIN)
    secrets = {e.id for e in base_ledger.events if e.tenant == "main" and e.resource_type == "SECRET"}
    assert secrets
    result = retention.purge(purge_filter(base_ledger.now - timedelta(days=10)), actor=ADMIN)
    assert result.held > 0
    assert secrets <= _remaining(copy_ledger)
    copy_ledger.verify()  # the held events' details rows are all there
    assert [h.id for h in retention.holds()] == [hold.id]
    retention.release_hold(hold.id, actor=ADMIN)
    assert retention.holds() == []
    retention.purge(purge_filter(base_ledger.now - timedelta(days=10)), actor=ADMIN)
    old = {e.id for e in base_ledger.events if e.date < base_ledger.now - timedelta(days=10)}
    assert not (secrets & old & _remaining(copy_ledger))
    kinds = [(e.resource_type, e.action) for e in copy_ledger.iter_search("resource:LEGAL_HOLD", order="asc")]
    assert kinds == [("LEGAL_HOLD", "CREATE"), ("LEGAL_HOLD", "DELETE")]
    copy_ledger.verify()


def test_a_bad_hold_query_or_reason_is_refused(copy_ledger: AuditLog) -> None:
    """Holds need a query that parses and a reason."""
    retention = Retention(copy_ledger)
    with pytest.raises(ValidationError):
        retention.create_hold("resource:", "x")
    with pytest.raises(ValidationError, match="reason"):
        retention.create_hold("resource:FLOW", " ")


def test_tree_roots_are_unchanged_by_purge(copy_ledger: AuditLog, base_ledger: Base) -> None:
    """Leaf hashes stay, so the Merkle root at every earlier size is the same after a purge."""
    sizes = [1, 100, 333, TENANTS["main"]]
    before = [Tree.current(copy_ledger.store, "main").root_at(n) for n in sizes]
    Retention(copy_ledger).purge(purge_filter(base_ledger.now - timedelta(days=8)), actor=ADMIN)
    tree = Tree.current(copy_ledger.store, "main")
    assert [tree.root_at(n) for n in sizes] == before
    copy_ledger.verify()


def test_the_store_still_refuses_deletes_after_a_purge(copy_ledger: AuditLog, base_ledger: Base) -> None:
    """The purge gate is shut again once the purge committed."""
    Retention(copy_ledger).purge(purge_filter(base_ledger.now - timedelta(days=30)), actor=ADMIN)
    path = copy_ledger.store.url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError, match="only be removed by purge"):
        conn.execute("DELETE FROM events")
    conn.close()


def _guards(path: str) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name").fetchall()
    conn.close()
    return rows


def test_the_writer_still_refuses_deletes_after_purge_batches_without_triggers(
    copy_ledger: AuditLog, base_ledger: Base
) -> None:
    """Purge batches run with their triggers dropped inside the transaction: once they commit, every trigger
    is back as it was, and the writer's own cached statements (those purge ran) are refused again."""
    path = copy_ledger.store.url.removeprefix("sqlite:///")
    before = _guards(path)
    assert {"events_no_delete", "details_no_delete", "leaves_no_update"} <= {name for name, _ in before}
    Retention(copy_ledger, sweep_min=0).purge(purge_filter(base_ledger.now - timedelta(days=30)), actor=ADMIN)
    assert _guards(path) == before
    statements = [  # the texts the purge ran on the writer connection: sqlite3 keeps them prepared
        ("DELETE FROM events AS e WHERE e.tenant = ? AND e.seq >= ? AND e.seq < ? AND +e.date < ?",
         ["main", 0, 10**9, 2**62], "only be removed by purge"),
        ("UPDATE leaves SET purged = 1 WHERE tenant = ? AND seq >= ? AND seq < ? AND purged = ?",
         ["main", 0, 10**9, 0], "append-only"),
        ("DELETE FROM details WHERE tenant = ? AND (key, value, seq) > (?, ?, ?) AND (key, value, seq) <= (?, ?, ?) "
         "AND seq < ? AND (seq >= ? OR EXISTS (SELECT 1 FROM leaves l WHERE l.tenant = details.tenant "
         "AND l.seq = details.seq AND l.purged = 2))", ["main", "", "", -1, "\U0010ffff", "", 0, 10**9, 0],
         "only be removed by purge"),
    ]
    for sql, params, refusal in statements:
        with pytest.raises(StoreError, match=refusal), copy_ledger.store.write() as txn:
            txn.execute(sql, params)
    copy_ledger.verify()


def test_a_purge_batch_keeps_its_triggers_for_every_other_connection(copy_ledger: AuditLog) -> None:
    """While a purge batch runs without its triggers, other connections still see them; a batch that fails
    rolls back to them."""
    store: Any = copy_ledger.store
    path = store.url.removeprefix("sqlite:///")
    before = _guards(path)
    with store.purge_write() as txn:
        inside = {r[0] for r in txn.query("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        assert "details_no_delete" not in inside
        assert _guards(path) == before  # another connection reads the last commit
    assert _guards(path) == before
    with pytest.raises(RuntimeError), store.purge_write() as txn:
        raise RuntimeError("batch failed")
    assert _guards(path) == before
    with pytest.raises(StoreError, match="only be removed by purge"), store.write() as txn:
        txn.execute("DELETE FROM details")


@pytest.mark.parametrize("column", ["hash", "seq", "tenant"])
def test_a_leaf_key_cannot_change_even_inside_a_purge_batch(copy_ledger: AuditLog, column: str) -> None:
    """The gate triggers are lifted in a purge batch; the one that keeps a leaf's hash, seq and tenant is not."""
    store: Any = copy_ledger.store
    value = {"hash": "x'00'", "seq": "seq + 1000000", "tenant": "'other'"}[column]
    with pytest.raises(StoreError, match="append-only"), store.purge_write() as txn:
        txn.execute("UPDATE purge_gate SET open = 1")
        txn.execute(f"UPDATE leaves SET purged = 1, {column} = {value} WHERE tenant = 'main' AND seq = 0")
    copy_ledger.verify()


def test_bad_filters_are_refused() -> None:
    """Dates must be ISO 8601 with a zone, start before end, names well formed, types or actions not both."""
    with pytest.raises(ValidationError, match="endDate"):
        purge_filter("yesterday")
    with pytest.raises(ValidationError, match="no time zone"):
        purge_filter("2026-01-01T00:00:00")
    with pytest.raises(ValidationError, match="startDate"):
        purge_filter("2026-01-01T00:00:00Z", start_date="2026-02-01T00:00:00Z")
    with pytest.raises(ValidationError, match="resources"):
        purge_filter("2026-01-01T00:00:00Z", resources=["flow"])
    with pytest.raises(ValidationError, match="types"):
        purge_filter("2026-01-01T00:00:00Z", types=["CREATE"], actions=["DELETE"])


def test_a_large_purge_shrinks_the_database(copy_ledger: AuditLog, base_ledger: Base) -> None:
    """After purging most events the space in use and the file both shrink (incremental vacuum)."""
    retention = Retention(copy_ledger, reclaim_threshold=1)
    before = retention.file_bytes()
    result = retention.purge(purge_filter(base_ledger.now - timedelta(days=8)), actor=ADMIN)
    after = retention.file_bytes()
    assert before is not None and after is not None
    assert result.bytes_after is not None and result.bytes_before is not None
    assert result.bytes_after < result.bytes_before
    assert after < before * 0.6


def test_an_interrupted_purge_records_what_it_removed(copy_ledger: AuditLog, base_ledger: Base) -> None:
    """A purge that fails part-way raises, yet its AUDITLOG/DELETE event records the batches it committed."""
    path = copy_ledger.store.url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    conn.execute(  # a store failure in the middle of the purge, at position 300 of tenant main
        "CREATE TRIGGER fail_at_300 BEFORE DELETE ON events WHEN OLD.tenant = 'main' AND OLD.seq = 300 "
        "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="disk on fire"):
        Retention(copy_ledger, batch_size=100).purge(purge_filter(base_ledger.now - timedelta(days=8)), actor=ADMIN)
    (event,) = list(copy_ledger.iter_search("resource:AUDITLOG action:DELETE"))
    purged = copy_ledger.verify().purged["main"]
    assert 100 <= purged <= 300  # the batches before the one holding position 300
    assert event.details["count"] == str(purged)
    assert event.details["interrupted"] == "true"
    assert "disk on fire" in event.after["interrupted"]


def _interrupt_sweep(retention: Retention, flt: PurgeFilter) -> None:
    """Purge ``flt`` with every details delete refused, so its sweep fails after the events went; then allow them."""
    path = retention.ledger.store.url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    try:
        conn.execute(
            "CREATE TRIGGER fail_sweep BEFORE DELETE ON details BEGIN SELECT RAISE(ABORT, 'sweep cut short'); END"
        )
        conn.commit()
        with pytest.raises(StoreError, match="sweep cut short"):
            retention.purge(flt, actor=ADMIN)
        conn.execute("DROP TRIGGER fail_sweep")
        conn.commit()
    finally:
        conn.close()


def test_the_next_large_purge_finishes_an_interrupted_details_sweep(copy_ledger: AuditLog, base_ledger: Base) -> None:
    """Events purged before a failed details sweep keep no details rows once the next large purge has run."""
    retention = Retention(copy_ledger, sweep_min=0)
    flt = purge_filter(base_ledger.now - timedelta(days=30), tenant="main")
    _interrupt_sweep(retention, flt)
    assert _orphan_details(copy_ledger) > 0  # the events went, their details could not
    copy_ledger.verify()  # their leaves say the details are still to be swept: not a tampering
    again = retention.purge(flt, actor=ADMIN)
    assert again.count == 0
    assert _orphan_details(copy_ledger) == 0
    assert copy_ledger.store.query("SELECT count(*) FROM leaves WHERE purged <> 0 AND purged <> 1") == [(0,)]
    copy_ledger.verify()


def test_a_start_date_purge_also_finishes_an_interrupted_sweep_below_its_range(
    copy_ledger: AuditLog, base_ledger: Base
) -> None:
    """A sweep whose range starts past position 0 still removes the details an earlier, interrupted sweep left
    below that range (it looks for such leaves once); with none there it deletes by range alone."""
    retention = Retention(copy_ledger, sweep_min=0)
    _interrupt_sweep(retention, purge_filter(base_ledger.now - timedelta(days=60), tenant="main"))
    assert _orphan_details(copy_ledger) > 0
    later = purge_filter(
        base_ledger.now - timedelta(days=30), start_date=base_ledger.now - timedelta(days=60), tenant="main"
    )
    expected = [
        e.id for e in copy_ledger.iter_search(order="asc", tenant="main")
        if base_ledger.now - timedelta(days=60) <= e.date < base_ledger.now - timedelta(days=30)
    ]
    done = retention.purge(later, actor=ADMIN)
    assert done.count == len(expected) > 0
    assert _orphan_details(copy_ledger) == 0
    assert copy_ledger.store.query("SELECT count(*) FROM leaves WHERE purged <> 0 AND purged <> 1") == [(0,)]
    copy_ledger.verify()


def test_a_purge_takes_the_names_of_actors_it_leaves_no_event_of(tmp_path: Path) -> None:
    """After a purge, the search table of actors (SQLite) keeps only actors some remaining event names,
    and a free word for a purged actor's name finds nothing, like the events themselves."""
    with AuditLog.open(f"sqlite:///{tmp_path / 'a.db'}") as log:
        old = datetime.now(UTC) - timedelta(days=60)
        actors = [
            {"type": "USER", "id": "gone", "name": "Gone Soon"},
            {"type": "USER", "id": "stay", "name": "Old Name"},
        ]
        log.backfill(
            [{"resource_type": "FLOW", "action": "READ", "actor": actor} for actor in actors],
            [old, old + timedelta(seconds=1)],
        )
        log.record("FLOW", "READ", {"type": "USER", "id": "stay", "name": "Stays Here"})
        assert log.count(parse_query('"Gone Soon"')) == 1
        Retention(log).purge(purge_filter(datetime.now(UTC) - timedelta(days=30)))
        names = {tuple(r) for r in log.store.query("SELECT actor_id, actor_name FROM actors WHERE tenant = 'main'")}
        assert ("gone", "Gone Soon") not in names and ("stay", "Old Name") not in names
        assert ("stay", "Stays Here") in names
        assert log.count(parse_query('"Gone Soon"')) == 0
        assert [e.actor.id for e in log.search('"Stays Here"').events] == ["stay"]
