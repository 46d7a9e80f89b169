"""AuditLog.verify's fast paths: ranges checked in worker processes, details compared per position, PostgreSQL."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from auditledger import AuditLog
from auditledger.errors import VerificationError
from auditledger.verify import split
from tests.proofs.conftest import SIZE, Signed, attacker, fill
from tests.store.pg import admin_connect, pg_schema


def tamper(db: Path, *statements: str) -> None:
    conn = attacker(db)
    for statement in statements:
        conn.execute(statement)
    conn.close()


def first_bad(url: str, processes: int) -> tuple[int | None, str]:
    with AuditLog.open(url) as log, pytest.raises(VerificationError) as info:
        log.verify(processes=processes)
    return info.value.seq, info.value.message


ATTACKS = {
    "body": ["UPDATE events SET body = CAST(CAST(body AS TEXT) || ' ' AS BLOB) WHERE seq = 400"],
    "column": ["UPDATE events SET actor_id = 'mallory' WHERE seq = 450"],
    "details": ["UPDATE details SET value = 'forged' WHERE seq = 350"],
    "gap": [f"DELETE FROM {table} WHERE seq = 320" for table in ("events", "details", "leaves")],
    "gap at a range's end": ["DELETE FROM events WHERE seq = 299", "DELETE FROM leaves WHERE seq = 299"],
    "short": [f"DELETE FROM events WHERE seq >= {SIZE - 2}", f"DELETE FROM leaves WHERE seq >= {SIZE - 2}"],
    "date": ["UPDATE events SET date = 0 WHERE seq = 500"],
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_two_processes_name_the_same_first_bad_position_as_one(signed: Signed, attack: str) -> None:
    """Checking the ledger in two worker processes fails at the same position with the same message as in-process."""
    tamper(signed.db, *ATTACKS[attack])
    alone = first_bad(signed.url, 1)
    assert alone[0] is not None
    assert first_bad(signed.url, 2) == alone


def test_the_lowest_bad_range_wins(signed: Signed) -> None:
    """With damage in both halves, the worker of the second half finds its own, but the first half's is reported."""
    tamper(
        signed.db,
        "UPDATE events SET action = 'READ' WHERE seq = 520",
        "UPDATE events SET action = 'READ' WHERE seq = 130",
    )
    assert first_bad(signed.url, 2)[0] == 130
    assert first_bad(signed.url, 3)[0] == 130


def test_untouched_ledger_passes_in_processes(signed: Signed) -> None:
    """Worker processes agree that an untouched ledger is whole and count every position once."""
    with AuditLog.open(signed.url) as log:
        assert log.verify(processes=3).sizes == {"main": SIZE}


def test_details_left_behind_by_a_purge_are_named(signed: Signed) -> None:
    """A purged position whose details rows were kept (search would still match it) fails at that position."""
    tamper(signed.db, "DELETE FROM events WHERE seq = 42", "UPDATE leaves SET purged = 1 WHERE seq = 42")
    seq, message = first_bad(signed.url, 1)
    assert seq == 42 and "details rows were left behind" in message
    tamper(signed.db, "DELETE FROM details WHERE seq = 42")
    with AuditLog.open(signed.url) as log:
        assert log.verify().purged == {"main": 1}


def test_a_details_key_stored_twice_is_named(signed: Signed) -> None:
    """A second row for a key of an event (search would match a value it never had) fails at that event."""
    tamper(signed.db, "INSERT INTO details (tenant, key, value, seq) VALUES ('main', 'namespace', 'zzz', 61)")
    seq, message = first_bad(signed.url, 1)
    assert seq == 61 and "stored twice" in message


def test_a_details_row_of_another_key_is_named(signed: Signed) -> None:
    """An extra details row under a key the event does not have fails at that event, naming the details."""
    tamper(signed.db, "INSERT INTO details (tenant, key, value, seq) VALUES ('main', 'zzz', 'forged', 62)")
    seq, message = first_bad(signed.url, 1)
    assert seq == 62 and "indexed details" in message


def test_an_unparseable_body_with_a_matching_leaf_names_its_position(signed: Signed) -> None:
    """Bytes that are not an event, stored with their own leaf hash, fail at their position with the tenant named."""
    import hashlib

    body = b"not json"
    conn = attacker(signed.db)
    conn.execute("UPDATE events SET body = ? WHERE seq = 7", (body,))
    conn.execute("UPDATE leaves SET hash = ? WHERE seq = 7", (hashlib.sha256(b"\x00" + body).digest(),))
    conn.close()
    seq, message = first_bad(signed.url, 1)
    assert seq == 7 and "tenant 'main'" in message and "not a valid canonical event" in message


def test_split_covers_every_position_once() -> None:
    """The ranges handed to workers are consecutive, cover [0, size) exactly and are never empty."""
    for size in (0, 1, 2, 5, 599, 600, 1_000_003):
        for parts in (1, 2, 3, 8):
            ranges = split(size, parts)
            assert ranges[0][0] == 0 and ranges[-1][1] == size
            assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
            assert size == 0 or all(lo < hi for lo, hi in ranges)


def test_in_memory_ledger_verifies_in_process(tmp_path: Path) -> None:
    """An in-memory store cannot be opened by another process: asking for workers still verifies, in-process."""
    with AuditLog.open("memory://") as log:
        fill(log, 30)
        assert log.verify(processes=2).sizes == {"main": 30}


@pytest.mark.postgres
def test_verify_on_postgres_names_the_first_bad_position() -> None:
    """On PostgreSQL, in-process and in two workers: untouched passes; edited details and columns are named."""
    with pg_schema() as url, AuditLog.open(url) as log:
        fill(log, 300)
        fill(log, 20, tenant="other")
        assert log.verify(processes=1).sizes == {"main": 300, "other": 20}
        assert log.verify(processes=2).sizes == {"main": 300, "other": 20}
        schema = unquote(url).split("search_path=", 1)[1]
        with admin_connect() as admin:
            admin.execute(f"SET search_path = {schema}")
            admin.execute("SET session_replication_role = replica")  # triggers off, as an attacker with rights
            admin.execute("UPDATE details SET value = 'forged' WHERE tenant = 'main' AND seq = 250")
            admin.execute("UPDATE events SET outcome = 'failure' WHERE tenant = 'main' AND seq = 260")
        for processes in (1, 2):
            with pytest.raises(VerificationError) as info:
                log.verify(tenant="main", processes=processes)
            assert info.value.seq == 250 and "indexed details" in info.value.message


def test_against_names_a_missing_leaf(signed: Signed) -> None:
    """Recomputing the tree from the leaves stops at the first missing position and names it."""
    from auditledger import tree

    with AuditLog.open(signed.url) as log:
        fill(log, 4200 - SIZE)  # past the first 4,096-leaf block
    tamper(signed.db, "DELETE FROM leaves WHERE seq = 4100")
    with AuditLog.open(signed.url) as log, pytest.raises(VerificationError) as info:
        tree.verify_against(log, signed.checkpoint.read_text(), [signed.vkey])
    assert info.value.seq == 4100 and "ledger position 4100 is missing" in info.value.message


@pytest.mark.parametrize("executable", ["/nonexistent/python", "/bin/false"])
def test_workers_that_cannot_start_or_fail_leave_the_work_to_this_process(
    signed: Signed, monkeypatch: pytest.MonkeyPatch, executable: str
) -> None:
    """No interpreter to start, or workers that exit with an error: verify still checks everything, in-process."""
    tamper(signed.db, "UPDATE events SET action = 'READ' WHERE seq = 450")
    monkeypatch.setattr(sys, "executable", executable)
    assert first_bad(signed.url, 2)[0] == 450
