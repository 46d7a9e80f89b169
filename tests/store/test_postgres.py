"""What only the PostgreSQL store has: partitions, migrations it records, a read replica URL, clear URL errors."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from auditledger import AuditLog
from auditledger.errors import ConfigError, StoreError
from auditledger.query import parse
from auditledger.store import open_store
from auditledger.store.postgres import PostgresStore, split_url
from auditledger.store.postgres_sql import filtered, portable
from auditledger.store.sqlite import migrations
from tests.store.pg import admin_connect, pg_schema

pytestmark = pytest.mark.postgres


def test_partitions_exist_ahead_and_new_events_land_in_this_month() -> None:
    """Opening makes this month's and the next two months' partitions; appends go to this month's."""
    with pg_schema() as url, AuditLog.open(url) as log:
        store = log.store
        assert isinstance(store, PostgresStore)
        now = datetime.now(UTC)
        month = f"events_{now:%Y_%m}"
        assert month in store.partitions() and len(store.partitions()) == 4  # 3 months + default
        log.record("FLOW", "CREATE", {"type": "USER", "id": "a"})
        assert store.query(f"SELECT count(*) FROM {month}") == [(1,)]
        old = now - timedelta(days=120)
        event = {"resource_type": "FLOW", "action": "READ", "actor": {"type": "USER", "id": "a"}}
        log.backfill([event], [old], tenant="history")  # a new tenant: its first date may lie in the past
        assert store.query("SELECT count(*) FROM events_default") == [(1,)]
        # That month's rows sit in the default partition: its partition is skipped, not an error.
        start = int(old.timestamp() * 1e6)
        assert store.ensure_partitions(start, start + 1) == []
        older = int((old - timedelta(days=60)).timestamp() * 1e6)
        assert store.ensure_partitions(older, older + 1) == [f"events_{old - timedelta(days=60):%Y_%m}"]
        log.verify()


def test_migrations_are_recorded_once_even_when_servers_open_together() -> None:
    """Every postgres migration is applied once and recorded, with 4 stores opening at the same time."""
    with pg_schema() as url:
        errors: list[BaseException] = []

        def open_one() -> None:
            try:
                open_store(url).close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        store = open_store(url)
        try:
            versions = [v for (v,) in store.query("SELECT version FROM schema_migrations ORDER BY version")]
            assert versions == [v for v, _, _ in migrations("postgres")]
            assert store.schema_version() == versions[-1]  # type: ignore[attr-defined]
        finally:
            store.close()


def test_searches_go_to_the_read_url() -> None:
    """With read_url, search and count read the replica (here: another schema) while get reads the primary."""
    with pg_schema() as primary, pg_schema() as replica:
        AuditLog.open(replica).close()  # an empty, migrated "replica"
        url = f"{primary}&read_url={quote(replica, safe='')}"
        with AuditLog.open(url) as log:
            receipt = log.record("FLOW", "CREATE", {"type": "USER", "id": "a"})
            assert log.get(receipt.id).id == receipt.id
            assert log.search().events == [] and log.count() == 0
        with AuditLog.open(primary) as log:
            assert log.count() == 1


def test_bad_urls_fail_with_a_clear_error() -> None:
    """Unknown databases and bad pool sizes are named in a StoreError/ConfigError, passwords never shown."""
    admin_connect().close()  # skip when the server is missing
    with pytest.raises(StoreError, match="al_does_not_exist"):
        open_store("postgresql://postgres:s3cret@127.0.0.1:5432/al_does_not_exist")
    try:
        open_store("postgresql://postgres:s3cret@127.0.0.1:5432/al_does_not_exist")
    except StoreError as exc:
        assert "s3cret" not in str(exc)
    with pytest.raises(ConfigError, match="pool_max"):
        open_store("postgresql://postgres@127.0.0.1:5432/test?pool_max=lots")


def test_url_parameters_of_ours_are_kept_from_libpq() -> None:
    """read_url and pool sizes are taken out of the URL; libpq's own parameters stay."""
    conninfo, ours = split_url("postgres://u@h/db?options=-csearch_path%3Dx&pool_max=3&read_url=postgresql%3A%2F%2Fr")
    assert conninfo == "postgresql://u@h/db?options=-csearch_path%3Dx"
    assert ours == {"pool_max": "3", "read_url": "postgresql://r"}


def test_portable_placeholders_leave_literals_alone() -> None:
    """? becomes %s outside quotes and comments; % is escaped; numbered placeholders are refused."""
    assert portable("SELECT '?%', \"a?\" FROM t WHERE x = ? -- ?\n AND y LIKE '%' || ?") == (
        "SELECT '?%%', \"a?\" FROM t WHERE x = %s -- ?\n AND y LIKE '%%' || %s"
    )
    assert portable("SELECT 'it''s ?' /* ? */, ?") == "SELECT 'it''s ?' /* ? */, %s"
    with pytest.raises(StoreError, match="numbered"):
        portable("SELECT ?1")


def test_the_documented_roles_cannot_change_the_ledger() -> None:
    """docs/postgres.md's roles, run as written: the server role appends and reads but cannot alter; purge can purge."""
    doc = (Path(__file__).parents[2] / "docs" / "postgres.md").read_text("utf-8")
    block = doc.split("<!-- roles:begin -->")[1].split("<!-- roles:end -->")[0]
    block = block.strip().removeprefix("```sql").removesuffix("```")
    role = f"al_{uuid.uuid4().hex[:8]}"
    with pg_schema() as url:
        schema = unquote(url).split("search_path=")[1]
        AuditLog.open(url).close()
        script = block.replace("auditledger_app", f"{role}_app").replace("auditledger_purge", f"{role}_purge")
        script = script.replace("SCHEMA auditledger ", f"SCHEMA {schema} ").replace("auditledger.", f"{schema}.")
        with admin_connect() as conn:
            conn.execute(script.encode())
        try:
            app_url = url.replace("postgres@", f"{role}_app@", 1)
            with AuditLog.open(app_url) as log:
                event = {"resource_type": "FLOW", "action": "CREATE", "actor": {"type": "USER", "id": "a"}}
                log.record_many([event] * 3)
                assert log.count() == 3 and log.verify().sizes == {"main": 3}
                month = f"events_{datetime.now(UTC):%Y_%m}"
                for statement in (
                    "UPDATE events SET action = 'READ'", "DELETE FROM events", "TRUNCATE events",
                    "UPDATE purge_gate SET open = 1", "UPDATE leaves SET purged = 1", f"DELETE FROM {month}",
                    f"UPDATE {month} SET action = 'READ'", f"DROP TABLE {month}",
                    "DROP TRIGGER events_no_update ON events",
                ):
                    # Refused by the privileges themselves, before any trigger runs.
                    with pytest.raises(StoreError, match=r"permission denied|must be owner"), log.store.write() as txn:
                        txn.execute(statement)
            purge_url = url.replace("postgres@", f"{role}_purge@", 1)
            with AuditLog.open(purge_url) as log:
                with log.store.write() as txn:
                    txn.execute("UPDATE purge_gate SET open = 1")
                    txn.execute("DELETE FROM details WHERE tenant = 'main' AND seq = 0")
                    assert txn.execute("DELETE FROM events WHERE tenant = 'main' AND seq = 0") == 1
                    txn.execute("UPDATE leaves SET purged = 1 WHERE tenant = 'main' AND seq = 0")
                    txn.execute("UPDATE purge_gate SET open = 0")
                assert log.verify().purged == {"main": 1}
        finally:
            with admin_connect() as conn:
                conn.execute(f"DROP OWNED BY {role}_app, {role}_purge")
                conn.execute(f"DROP ROLE {role}_app, {role}_purge")


def test_reclaim_space_drops_only_emptied_past_months() -> None:
    """A past month's partition is dropped once purge emptied it; one still holding rows stays; verify passes."""
    with pg_schema() as url, AuditLog.open(url) as log:
        store = log.store
        assert isinstance(store, PostgresStore)
        now = datetime.now(UTC)
        old, older = now - timedelta(days=95), now - timedelta(days=160)
        store.ensure_partitions(int(older.timestamp() * 1e6), int(old.timestamp() * 1e6) + 1)
        event = {"resource_type": "FLOW", "action": "READ", "actor": {"type": "USER", "id": "a"}}
        log.backfill([event, event], [older, old], tenant="history")
        with store.write() as txn:
            txn.execute("UPDATE purge_gate SET open = 1")
            txn.execute("DELETE FROM details WHERE tenant = 'history' AND seq = 0")
            txn.execute("DELETE FROM events WHERE tenant = 'history' AND seq = 0")
            txn.execute("UPDATE leaves SET purged = 1 WHERE tenant = 'history' AND seq = 0")
            txn.execute("UPDATE purge_gate SET open = 0")
        used = store.space_used()
        dropped = store.reclaim_space(None)
        assert 0 < store.space_used() < used
        assert f"events_{older:%Y_%m}" in dropped and f"events_{old:%Y_%m}" not in dropped
        assert f"events_{now:%Y_%m}" in store.partitions()
        assert log.verify().purged == {"history": 1}


@pytest.mark.parametrize("dense_at", [1, 10**9])
def test_frequent_and_rare_details_terms_select_the_same_rows(dense_at: int) -> None:
    """Details terms tested per row (frequent) or collected first (rare) both select what the reference selects."""
    from tests.store.test_conformance import populate, queries, reference

    with pg_schema() as url, AuditLog.open(url) as log:
        store = log.store
        assert isinstance(store, PostgresStore)
        store.dense_at = dense_at
        start = populate(log)
        every = list(log.iter_search(order="asc"))
        for query in queries(start, every[17].id):
            expected = [e.id for e in reversed(every) if reference(e, query)]
            assert [e.id for e in log.iter_search(query)] == expected, query
            assert log.count(query) == len(expected), query
        _, where, _ = filtered("main", parse("-flowId:flow-1 company"), ["namespace"], store._dense("main"))
        assert ("EXISTS" in where) == (dense_at == 1)
        # A frequent namespace is probed per row by (tenant, seq), its children by left(), not by a range.
        _, where, _ = filtered("main", parse("namespace:company"), [], store._dense("main"))
        assert ("EXISTS" in where and "left(d.value" in where) == (dense_at == 1)


def test_a_space_in_libpq_options_reaches_the_server() -> None:
    """Two settings in one `options` parameter (space-separated) both apply: the space is not sent as '+'."""
    with pg_schema() as url:
        conninfo, _ = split_url(url.replace("options=", "options=-cwork_mem%3D7MB%20", 1))
        assert "+" not in conninfo
        with AuditLog.open(url.replace("options=", "options=-cwork_mem%3D7MB%20", 1)) as log:
            assert log.store.query("SELECT current_setting('work_mem')") == [("7MB",)]
            assert log.store.query("SELECT count(*) FROM heads") == [(0,)]  # the schema is the search path


@pytest.mark.parametrize(
    ("text", "alone"),
    [
        ("namespace:company", True),
        ("namespace:company,company.team", True),
        ("namespace:company.team,companyx", True),
        ("namespace:=company", True),
        ("flowId:flow-1,flow-2", True),
        ("flowId:flow-1,flow-1", True),
        ("namespace:comp*,company*", True),
        ("namespace:*team*", True),
        ("namespace:*.data", True),
        ("namespace:*team*,*data*", False),  # contains: whether two values overlap is not known
        ("executionId:none", True),
    ],
)
def test_a_single_details_term_is_counted_from_details_alone_as_the_reference_counts(text: str, alone: bool) -> None:
    """A count of one details term (overlapping values included) reads details only and equals the reference."""
    from auditledger.store.postgres_sql import details_count
    from tests.store.test_conformance import populate, reference

    with pg_schema() as url, AuditLog.open(url) as log:
        populate(log)
        query = parse(text)
        expected = sum(1 for e in log.iter_search(order="asc") if reference(e, query))
        assert log.count(query) == expected
        assert log.count(query, cap=3) == min(expected, 4)  # the cap + 1, as for every count
        assert (details_count("main", query, 10) is not None) == alone
        assert details_count("main", parse(f"{text} after:2020-01-01"), 10) is None
        assert details_count("main", parse(f"-{text}"), 10) is None
