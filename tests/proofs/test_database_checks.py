"""verify's checks run by SQLite itself (store/sqlite_verify.py): they must miss nothing on their own.

A chunk the database checks disagree on is checked again one event at a time, so a false
alarm only costs time; a miss would let tampering through. Here the exact check is
replaced by one that records which chunk it was asked for: every attack must send its own
chunk there, and an untouched ledger of varied events (escapes, no actor name, empty
details, occurred_at, source, text and JSON payloads) must send none.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from auditledger import AuditLog, canonical, verify
from auditledger.errors import VerificationError
from auditledger.model import event_input, with_source
from auditledger.store import DETAILS_PENDING, DatabaseChecks, sqlite_verify
from tests.proofs.conftest import attacker

SIZE = 300
CHUNK = 64  # several chunks, so that the lag between the hash pass and the verdicts is exercised


def _draft(i: int) -> dict[str, object]:
    actor: dict[str, object] = {"type": "USER", "id": f"user-{i % 7}@acme.io"}
    if i % 3:
        actor["name"] = ["Zoë \"Z\" O'Brien", "tab\there", "back\\slash", "日本語", "ctl\x01\x1f"][i % 5]
    if i % 4 == 0:
        actor.update(ip="10.0.0.1", user_agent="curl/8 {x}")
    details = {} if i % 11 == 0 else {
        "namespace": f"company.team{i % 5}",
        "flowId": f"flow-{i}",
        "note": ["a\"b", "line\nbreak", "\\", "\u2028", "}{,:\"details\":{"][i % 5],
        "date": "2001-01-01",
    }
    return {
        "resource_type": ["FLOW", "EXECUTION", "CUSTOM_THING"][i % 3],
        "action": ["CREATE", "UPDATE", "EXECUTE"][i % 3],
        "actor": actor,
        "details": details,
        "before": None if i % 2 else {"details": {"namespace": "x"}, "id": "y", "date": "z"},
        "after": "source: |\n  a: b" if i % 5 == 0 else {"n": i, "nested": [1, {"k": "v"}]},
        "outcome": "failure" if i % 6 == 0 else "success",
        "occurred_at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i) if i % 7 == 0 else None,
    }


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Path]:
    db = tmp_path / "ledger.db"
    with AuditLog.open(f"sqlite:///{db}") as log:
        drafts = [event_input(_draft(i)) for i in range(SIZE)]
        drafts = [with_source(d, {"token": "t1", "ip": "10.1.1.1"}) if i % 9 == 0 else d for i, d in enumerate(drafts)]
        log.append([("main", d) for d in drafts])
    yield db


@pytest.fixture(params=[False, True], ids=["body-blob", "body-text"])
def asked(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> list[tuple[int, int]]:
    """The chunks sent to the exact check (which then runs as usual).

    Each test runs with both forms of the columns check: the body handed to the JSON
    functions as stored and cast to text (the form taken on SQLite 3.45 and later).
    """
    monkeypatch.setattr(sqlite_verify, "CHUNK", CHUNK)
    monkeypatch.setattr(sqlite_verify, "_COLUMNS_CHECK", sqlite_verify.columns_check(request.param))
    chunks: list[tuple[int, int]] = []
    exact = verify.check_exact

    def recorded(store: object, tenant: str, start: int, end: int, head_size: int) -> int:
        chunks.append((start, end))
        return exact(store, tenant, start, end, head_size)  # type: ignore[arg-type]

    monkeypatch.setattr(verify, "check_exact", recorded)
    return chunks


def tamper(db: Path, *statements: str) -> None:
    conn = attacker(db)
    conn.create_function("leaf_hash", 1, canonical.leaf_hash)
    for statement in statements:
        conn.execute(statement)
    assert conn.total_changes, "the attack changed nothing"
    conn.close()


def verified(db: Path) -> tuple[int | None, str]:
    with AuditLog.open(f"sqlite:///{db}") as log:
        try:
            log.verify(processes=1)
        except VerificationError as exc:
            return exc.seq, exc.message
    return None, ""


def chunk_of(seq: int) -> tuple[int, int]:
    return seq // CHUNK * CHUNK, min(seq // CHUNK * CHUNK + CHUNK, SIZE)


def test_varied_untouched_events_raise_no_alarm(ledger: Path, asked: list[tuple[int, int]]) -> None:
    """Escaped texts, missing names, empty details, source and occurred_at: the database agrees on all."""
    assert verified(ledger) == (None, "")
    assert asked == []


ATTACKS = {
    "id": (37, ["UPDATE events SET id = '01900000-0000-7000-8000-000000000000' WHERE seq = 37"]),
    "resource_type": (70, ["UPDATE events SET resource_type = 'FLOW' WHERE seq = 70 AND resource_type <> 'FLOW'",
                           "UPDATE events SET resource_type = 'USER' WHERE seq = 70 AND resource_type = 'FLOW'"]),
    "action": (130, ["UPDATE events SET action = 'DELETE' WHERE seq = 130"]),
    "actor type": (131, ["UPDATE events SET actor_type = 'SYSTEM' WHERE seq = 131"]),
    "actor id": (132, ["UPDATE events SET actor_id = 'mallory' WHERE seq = 132"]),
    "actor name removed": (133, ["UPDATE events SET actor_name = NULL WHERE seq = 133"]),
    "actor name added": (135, ["UPDATE events SET actor_name = 'Mallory' WHERE seq = 135"]),
    "actor name escaped": (145, ["UPDATE events SET actor_name = replace(actor_name, '\"', '\\\"') WHERE seq = 145"]),
    "outcome": (140, ["UPDATE events SET outcome = 'failure' WHERE seq = 140 AND outcome = 'success'"]),
    "date": (150, ["UPDATE events SET date = date + 1 WHERE seq = 150"]),
    "date not an integer": (240, ["UPDATE events SET date = date + 0.5 WHERE seq = 240"]),
    "date as text": (241, ["UPDATE events SET date = 'yesterday' WHERE seq = 241"]),
    "seq": (160, ["UPDATE events SET seq = -1 WHERE seq = 160", "UPDATE leaves SET seq = -1 WHERE seq = 160"]),
    "details value": (170, ["UPDATE details SET value = 'forged' WHERE seq = 170 AND key = 'namespace'"]),
    "details key": (171, ["UPDATE details SET key = 'namespacf' WHERE seq = 171 AND key = 'namespace'"]),
    "details row deleted": (172, ["DELETE FROM details WHERE seq = 172 AND key = 'flowId'"]),
    "details row added": (176, ["INSERT INTO details VALUES ('main', 'extra', 'x', 176)"]),
    "details key twice": (177, ["INSERT INTO details VALUES ('main', 'namespace', 'zzz', 177)"]),
    "details on empty": (198, ["INSERT INTO details VALUES ('main', 'namespace', 'x', 198)"]),
    "details escaped": (180, ["UPDATE details SET value = '\\\"' WHERE seq = 182 AND key = 'note'",
                              "UPDATE details SET value = 'a\\\"b' WHERE seq = 180 AND key = 'note'"]),
    "details as a number": (183, ["UPDATE details SET value = 5 WHERE seq = 183 AND key = 'namespace'"]),
    "body": (190, ["UPDATE events SET body = CAST(replace(CAST(body AS TEXT), 'flow-190', 'flow-999') AS BLOB) "
                   "WHERE seq = 190"]),
    "leaf": (191, ["UPDATE leaves SET hash = zeroblob(32) WHERE seq = 191"]),
    "event deleted": (200, ["DELETE FROM events WHERE seq = 200"]),
    "leaf deleted": (201, ["DELETE FROM leaves WHERE seq = 201"]),
    "purged, details left": (
        202,
        ["DELETE FROM events WHERE seq = 202", "UPDATE leaves SET purged = 1 WHERE seq = 202"],
    ),
    "column as a blob": (210, ["UPDATE events SET actor_id = CAST(actor_id AS BLOB) WHERE seq = 210"]),
    "body as text": (211, ["UPDATE events SET body = CAST(body AS TEXT) WHERE seq = 211"]),
    "leaf of another event": (
        212,
        ["UPDATE leaves SET hash = (SELECT hash FROM leaves WHERE seq = 211) WHERE seq = 212"],
    ),
    # the chunk's leaf hashes joined are unchanged: only their lengths tell
    "leaf bytes moved to the next": (
        224,
        ["UPDATE leaves SET hash = CAST(substr((SELECT hash FROM leaves WHERE seq = 224), 32, 1) || hash AS BLOB) "
         "WHERE seq = 225",
         "UPDATE leaves SET hash = substr(hash, 1, 31) WHERE seq = 224"],
    ),
    # body, column and leaf rewritten alike (231 has no details): each body still hashes to the leaf
    # of its place in the chunk, but the event's seq is no position
    "seq not an integer": (
        231,
        ["UPDATE events SET seq = 231.5, body = CAST(replace(CAST(body AS TEXT), '\"seq\":231,', '\"seq\":231.5,') "
         "AS BLOB) WHERE seq = 231",
         "UPDATE leaves SET hash = (SELECT leaf_hash(body) FROM events WHERE seq = 231.5) WHERE seq = 231"],
    ),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_every_attack_sends_its_chunk_to_the_exact_check(
    ledger: Path, asked: list[tuple[int, int]], attack: str
) -> None:
    """The database checks alone flag the attacked chunk; the exact check then names the position."""
    seq, statements = ATTACKS[attack]
    tamper(ledger, *statements)
    bad, message = verified(ledger)
    assert asked and asked[0][0] == chunk_of(seq)[0], (asked, message)
    if attack != "body as text":  # a text body hashes as its UTF-8 bytes: only its column type changed
        assert bad == seq, message


def doubt(monkeypatch: pytest.MonkeyPatch, verdicts: dict[int, str]) -> None:
    """The database's verdicts on the chunks ``verdicts`` names replaced: "none" (cannot tell), "differ"."""
    real = sqlite_verify._Verdicts.verdict

    def doubtful(self: sqlite_verify._Verdicts, index: int) -> DatabaseChecks | None:
        found = real(self, index)
        kind = verdicts.get(index)
        return None if kind == "none" or found is None else found._replace(agree=False) if kind else found

    monkeypatch.setattr(sqlite_verify._Verdicts, "verdict", doubtful)


def test_a_false_alarm_is_settled_by_the_exact_check_of_its_chunk(
    ledger: Path, asked: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verdicts that disagree on an untouched ledger only cost time: verify passes."""
    doubt(monkeypatch, {1: "differ", 3: "differ"})
    assert verified(ledger) == (None, "")
    assert asked == [chunk_of(CHUNK), chunk_of(3 * CHUNK)]


def test_after_a_few_false_alarms_the_rest_takes_the_exact_check_at_once(
    ledger: Path, asked: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each exact check of a chunk reads the details table through: alarms that keep coming end the chunking."""
    doubt(monkeypatch, {0: "differ", 1: "differ", 2: "differ", 3: "differ"})
    assert verified(ledger) == (None, "")
    assert asked == [chunk_of(0), chunk_of(CHUNK), (2 * CHUNK, SIZE)]


def test_when_the_database_cannot_tell_the_rest_takes_the_exact_check(
    ledger: Path, asked: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    doubt(monkeypatch, {1: "none"})
    assert verified(ledger) == (None, "")
    assert asked == [(CHUNK, SIZE)]


def test_a_check_that_fails_in_the_database_leaves_it_to_the_exact_check(
    ledger: Path, asked: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A details check SQLite cannot run (an old SQLite) sends the range to the exact check, which finds the attack."""
    monkeypatch.setattr(sqlite_verify, "_DETAILS_CHECK", "SELECT no_such_function()")
    assert verified(ledger) == (None, "")
    assert asked == [(0, SIZE)]
    asked.clear()
    tamper(ledger, "UPDATE details SET value = 'forged' WHERE seq = 98 AND key = 'namespace'")
    seq, message = verified(ledger)
    assert seq == 98 and "indexed details" in message


def test_a_purge_still_sweeping_its_details_passes(ledger: Path, asked: list[tuple[int, int]]) -> None:
    """Details rows left at a position whose leaf says DETAILS_PENDING are accepted (by the exact check)."""
    tamper(ledger, "DELETE FROM events WHERE seq = 20", f"UPDATE leaves SET purged = {DETAILS_PENDING} WHERE seq = 20")
    assert verified(ledger) == (None, "")
    assert asked == [chunk_of(20)]
    with AuditLog.open(f"sqlite:///{ledger}") as log:
        assert log.verify(processes=1).purged == {"main": 1}


def test_purged_positions_pass_without_the_exact_check(ledger: Path, asked: list[tuple[int, int]]) -> None:
    """A clean purge (event and details rows gone, leaf marked) is counted by the database checks' path."""
    tamper(ledger, "DELETE FROM events WHERE seq < 100", "DELETE FROM details WHERE seq < 100",
           "UPDATE leaves SET purged = 1 WHERE seq < 100")
    with AuditLog.open(f"sqlite:///{ledger}") as log:
        assert log.verify(processes=1).purged == {"main": 100}
    assert asked == []


def test_the_worker_threads_stop_when_verify_stops_early(ledger: Path, asked: list[tuple[int, int]]) -> None:
    """A failure in the first chunk ends verify at once; no worker thread outlives it."""
    before = threading.active_count()
    tamper(ledger, "UPDATE events SET action = 'DELETE' WHERE seq = 1")
    assert verified(ledger)[0] == 1
    assert threading.active_count() == before


def test_a_large_ledger_takes_one_process_per_two_cpus(ledger: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the database checks run in threads, each range keeps two cores busy: half as many processes."""
    monkeypatch.setattr(verify.os, "cpu_count", lambda: 8)
    with AuditLog.open(f"sqlite:///{ledger}") as log:
        assert verify._process_count(log.store, verify.PARALLEL_MIN, None) == 4
        assert verify._process_count(log.store, verify.PARALLEL_MIN - 1, None) == 1
        assert verify._process_count(log.store, 10, 3) == 3
    monkeypatch.setattr(verify.os, "cpu_count", lambda: 2)
    with AuditLog.open(f"sqlite:///{ledger}") as log:
        assert verify._process_count(log.store, verify.PARALLEL_MIN, None) == 1
    with AuditLog.open("memory://") as log:
        assert verify._process_count(log.store, verify.PARALLEL_MIN, None) == 1
