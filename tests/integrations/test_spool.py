"""Spooled: batches durable in a spool file on return, placed in the ledger once, in order, even across crashes."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.held_writes import queued_behind_a_held_write

from auditledger import Actor, AuditLog, ConfigError, StoreError, ValidationError
from auditledger.integrations import audit_scope
from auditledger.integrations.context import build_event, emit
from auditledger.model import Limits
from auditledger.spool import Spooled
from auditledger.store.sqlite import SQLiteStore
from auditledger.testing import recorded

NEVER = 3600.0  # a flush_interval no test waits for: nothing drains unless the test asks


def event(n: int, **fields: Any) -> dict[str, Any]:
    return {"resource_type": "FLOW", "action": "UPDATE", "actor": Actor.user("anna@acme.io"),
            "details": {"flowId": f"f{n}"}, **fields}


def flow_ids(ledger: AuditLog) -> list[str]:
    return [e["details"]["flowId"] for e in recorded(ledger)]


def known_keys(ledger: AuditLog, keys: list[str]) -> list[str]:
    """Those of ``keys`` the ledger holds (asked by recording them again: the known ones store nothing)."""
    receipts = ledger.record_many([event(-1, idempotency_key=key) for key in keys])
    assert all(r.duplicate for r in receipts), "a key the ledger did not hold was stored now"
    return keys


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[AuditLog]:
    log = AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}")
    yield log
    log.close()


def run(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True)


def killed_after(proc: subprocess.Popen[str], marker: str) -> None:
    """Wait for ``marker`` on the child's output, then SIGKILL it: no atexit, no close, no drain."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == marker, line
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


RECORD_THEN_WAIT = """
import sys, time
from auditledger import Actor, AuditLog
from auditledger.spool import Spooled
spool = Spooled(AuditLog.open(sys.argv[1]), flush_interval=3600)
keys = spool.record_many([{"resource_type": "FLOW", "action": "CREATE", "actor": Actor.user("anna@acme.io"),
                           "details": {"flowId": f"f{i}"}} for i in range(3)])
print("recorded", flush=True)
time.sleep(3600)
"""


def test_a_batch_survives_sigkill_before_any_drain(tmp_path: Path) -> None:
    """Events acknowledged by record_many are on disk when the process is killed; the next open places them."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    killed_after(run(RECORD_THEN_WAIT, url), "recorded")
    with AuditLog.open(url) as ledger:
        assert ledger.count() == 0  # nothing reached the ledger before the kill
        spool = Spooled(ledger)  # the default path: beside the ledger's file
        spool.flush()
        assert spool.pending == 0
        spool.close()
        assert flow_ids(ledger) == ["f0", "f1", "f2"]
        assert ledger.verify().sizes == {"main": 3}


KILLED_AT_COMMIT = """
import os, signal, sys
from auditledger import Actor, AuditLog
from auditledger.spool import Spooled
ledger = AuditLog.open(sys.argv[1])
spool = Spooled(ledger, flush_interval=3600)
spool.record_many([{"resource_type": "FLOW", "action": "CREATE", "actor": Actor.user("anna@acme.io"),
                    "details": {"flowId": f"f{i}"}} for i in range(3)])
ledger.on_commit(lambda receipts: (print("committed", flush=True), os.kill(os.getpid(), signal.SIGKILL)))
spool.flush()
"""


def test_a_crash_between_the_ledger_commit_and_the_delete_stores_nothing_twice(tmp_path: Path) -> None:
    """Rows placed but not yet deleted are drained again; their idempotency keys make them duplicates."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    proc = run(KILLED_AT_COMMIT, url)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    with AuditLog.open(url) as ledger:
        assert flow_ids(ledger) == ["f0", "f1", "f2"]  # the ledger committed ...
        with sqlite3.connect(tmp_path / "audit.db-spool") as spool_file:  # ... and the spool still holds the row
            assert spool_file.execute("SELECT count(*), sum(count) FROM spool").fetchone() == (1, 3)
        Spooled(ledger).close()
        assert flow_ids(ledger) == ["f0", "f1", "f2"]
        assert ledger.verify().sizes == {"main": 3}


EXIT_WITHOUT_CLOSE = """
import sys
from auditledger import Actor, AuditLog
from auditledger.spool import Spooled
spool = Spooled(AuditLog.open(sys.argv[1]), flush_interval=3600)
spool.record_many([{"resource_type": "FLOW", "action": "CREATE", "actor": Actor.user("anna@acme.io")}])
"""


def test_a_normal_exit_drains_what_nobody_closed(tmp_path: Path) -> None:
    """The atexit hook places the spooled events before the interpreter ends."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    proc = run(EXIT_WITHOUT_CLOSE, url)
    proc.communicate()
    assert proc.returncode == 0
    with AuditLog.open(url) as ledger:
        assert ledger.count() == 1
    with sqlite3.connect(tmp_path / "audit.db-spool") as spool_file:
        assert spool_file.execute("SELECT count(*) FROM spool").fetchone() == (0,)


def test_record_many_validates_with_the_ledger_limits_and_spools_nothing_of_a_bad_batch(tmp_path: Path) -> None:
    """An event over the ledger's own limit raises the ledger's ValidationError naming events[i]; nothing is spooled."""
    small = AuditLog(SQLiteStore(f"sqlite:///{tmp_path / 'audit.db'}"), limits=Limits(max_state_bytes=100))
    spool = Spooled(small, flush_interval=NEVER)
    try:
        with pytest.raises(ValidationError) as info:
            spool.record_many([event(0), event(1, after="x" * 101)])
        assert info.value.field == "events[1].after"
        with pytest.raises(ValidationError) as surrogate:
            spool.record_many([event(0), event(1, details={"flowId": "\ud800"})])
        assert surrogate.value.field == "events[1].details.flowId"
        assert spool.pending == 0
    finally:
        spool.close()
        small.close()


def test_keys_and_occurred_at_are_given_at_the_call_site(ledger: AuditLog) -> None:
    """Each event gets an idempotency key (its own kept) and occurred_at = when recorded; date = its placement."""
    spool = Spooled(ledger, flush_interval=NEVER)
    given = "2026-01-02T03:04:05.000006Z"
    before = time.time()
    keys = spool.record_many([event(0, idempotency_key="my-key"), event(1, occurred_at=given), event(2)])
    after = time.time()
    spool.close()
    assert keys[0] == "my-key" and len(set(keys)) == 3
    first, second, third = ledger.iter_search(order="asc")
    assert first.occurred_at is not None and before <= first.occurred_at.timestamp() <= after
    assert first.date >= first.occurred_at
    assert second.occurred_at is not None and second.occurred_at.isoformat() == "2026-01-02T03:04:05.000006+00:00"
    again = ledger.record_many([event(9, idempotency_key=keys[2])])  # the key reached the ledger
    assert again[0].duplicate and again[0].seq == third.seq


def test_a_full_spool_refuses_more_and_names_the_limit(ledger: AuditLog) -> None:
    """Past max_pending waiting events, record_many raises StoreError naming the limit and keeps none of the batch."""
    spool = Spooled(ledger, batch_size=3, max_pending=3, flush_interval=NEVER)
    try:
        spool.record_many([event(0), event(1)])
        with pytest.raises(StoreError, match="max_pending=3"):
            spool.record_many([event(2), event(3)])
        assert spool.pending == 2
    finally:
        spool.close()
    assert flow_ids(ledger) == ["f0", "f1"]


def test_a_failing_ledger_keeps_the_rows_and_the_error_then_they_drain(tmp_path: Path) -> None:
    """While the ledger's file is locked, drains fail with StoreError (kept in errors); the rows stay and go later."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    ledger = AuditLog(SQLiteStore(url, busy_timeout_ms=50))
    blocker = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    spool = Spooled(ledger, flush_interval=0)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another process holding the ledger's write lock
        spool.record_many([event(0), event(1)])
        with pytest.raises(StoreError, match="locked"):
            spool.flush()
        deadline = time.monotonic() + 30
        while not spool.errors and time.monotonic() < deadline:  # the background drain failed too
            time.sleep(0.01)
        assert spool.errors and isinstance(spool.errors[-1], StoreError)
        assert spool.pending == 2 and ledger.count() == 0
        blocker.execute("ROLLBACK")
        spool.flush()
        assert spool.pending == 0
    finally:
        blocker.close()
        spool.close()
    assert flow_ids(ledger) == ["f0", "f1"]
    ledger.close()


def test_a_batch_refused_at_drain_is_set_aside_and_the_rest_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch valid when spooled but over the draining ledger's limits moves to ``rejected``, with a warning."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    roomy = AuditLog.open(url)
    strict = AuditLog(SQLiteStore(url), limits=Limits(max_state_bytes=100))  # the next process, with a lower limit
    first = Spooled(roomy, flush_interval=NEVER)
    first.record_many([event(0)])
    first.record_many([event(1), event(2, after="x" * 500)])  # one batch: refused as a whole
    first.record_many([event(3)])
    second = Spooled(strict, flush_interval=NEVER)
    with caplog.at_level(logging.WARNING, logger="auditledger.spool"):
        second.flush()
    assert flow_ids(strict) == ["f0", "f3"]
    [rejected] = second.rejected()
    assert [e["details"]["flowId"] for e in rejected.events] == ["f1", "f2"]
    assert "events[1].after" in rejected.error and "100" in rejected.error
    assert "refused a batch of 2 events" in caplog.text
    assert second.pending == 0
    for spool in (first, second):
        spool.close()
    roomy.close()
    strict.close()


def test_two_spools_on_one_file_lose_nothing_and_store_nothing_twice(tmp_path: Path) -> None:
    """Two Spooled objects (as two processes) record and drain the same spool at once: every event once, in order."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    ledgers = [AuditLog.open(url), AuditLog.open(url)]
    spools = [Spooled(log, batch_size=7, flush_interval=0.001) for log in ledgers]
    keys: list[list[str]] = [[], []]

    def work(n: int) -> None:
        for i in range(60):
            keys[n] += spools[n].record_many([event(1000 * n + i)])
            if i % 10 == 0:
                spools[n].flush()

    threads = [threading.Thread(target=work, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for spool in spools:
        spool.close()
    stored = recorded(ledgers[0])
    assert len(stored) == 120 and known_keys(ledgers[0], keys[0] + keys[1])
    for n in (0, 1):  # each object's events keep the order they were spooled in
        mine = [e["details"]["flowId"] for e in stored if int(e["details"]["flowId"][1:]) // 1000 == n]
        assert mine == [f"f{1000 * n + i}" for i in range(60)]
    assert ledgers[0].verify().sizes == {"main": 120}
    for log in ledgers:
        log.close()


def test_tenants_keep_their_own_batches(ledger: AuditLog) -> None:
    """Runs of one tenant's rows go to that tenant, in the order they were spooled."""
    with Spooled(ledger, flush_interval=NEVER) as spool:
        spool.record_many([event(0)], tenant="acme")
        spool.record_many([event(1)])
        spool.record_many([event(2)], tenant="acme")
    assert [e.details["flowId"] for e in ledger.iter_search(tenant="acme", order="asc")] == ["f0", "f2"]
    assert [e.details["flowId"] for e in ledger.iter_search(order="asc")] == ["f1"]


def test_a_sink_for_the_integrations(ledger: AuditLog) -> None:
    """emit() through audit_scope(sink=Spooled(...)) returns the keys; the events carry the scope's actor."""
    spool = Spooled(ledger, flush_interval=NEVER)
    with audit_scope(Actor.user("anna@acme.io"), request_id="req-7", sink=spool):
        keys = emit([build_event("FLOW", "DELETE", details={"flowId": "hello"})])
    assert len(keys) == 1 and ledger.count() == 0
    spool.close()
    [stored] = recorded(ledger)
    assert known_keys(ledger, keys) and stored["actor"]["id"] == "anna@acme.io"
    assert stored["details"] == {"requestId": "req-7", "flowId": "hello"}


def test_the_spool_file_is_the_owners_only(ledger: AuditLog, tmp_path: Path) -> None:
    """The default spool sits beside the ledger's file and is created 0600, like key files: it holds payloads."""
    with Spooled(ledger, flush_interval=NEVER) as spool:
        spool.record_many([event(0)])
        assert spool.path == tmp_path / "audit.db-spool"
        for name in ("audit.db-spool", "audit.db-spool-wal"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name


def test_a_ledger_without_a_file_needs_a_path(tmp_path: Path) -> None:
    """An in-memory (or PostgreSQL) ledger has no file to sit beside: a ConfigError asks for path=."""
    with AuditLog.open("memory://") as memory:
        with pytest.raises(ConfigError, match="path="):
            Spooled(memory)
        with Spooled(memory, tmp_path / "spool", flush_interval=NEVER) as spool:
            spool.record_many([event(0)])
        assert memory.count() == 1


def test_a_closed_spool_refuses_events(ledger: AuditLog) -> None:
    """After close(), record_many and flush raise StoreError instead of keeping events nobody drains."""
    spool = Spooled(ledger)
    spool.close()
    with pytest.raises(StoreError, match="closed"):
        spool.record_many([event(0)])
    with pytest.raises(StoreError, match="closed"):
        spool.flush()


def test_a_drain_that_another_emptied_the_spool_under_deletes_only_its_own_rows(tmp_path: Path) -> None:
    """Another drain empties the spool while this one places a row, and new rows take the freed ids: none is lost."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    first_ledger, other_ledger = AuditLog.open(url), AuditLog.open(url)
    recorder = Spooled(AuditLog.open(url), batch_size=100, flush_interval=NEVER)
    drainer = Spooled(first_ledger, batch_size=1, flush_interval=NEVER)  # one row per ledger transaction
    others: list[Spooled] = []

    def meanwhile(_receipts: Any) -> None:
        """After this drain's first ledger commit, before its delete: another drain takes every row, new ones come."""
        if others:
            return
        others.append(Spooled(other_ledger, flush_interval=NEVER))
        others[0].flush()
        assert others[0].pending == 0
        others[0].record_many([event(10)])
        others[0].record_many([event(11)])  # their ids are the ones the first rows had

    recorder.record_many([event(0)])
    recorder.record_many([event(1)])
    recorder.record_many([event(2)])
    first_ledger.on_commit(meanwhile)
    drainer.flush()
    assert others, "the drain placed a row"
    for spool in (drainer, *others, recorder):
        spool.close()
    assert flow_ids(other_ledger) == ["f0", "f1", "f2", "f10", "f11"]
    assert other_ledger.verify().sizes == {"main": 5}
    for log in (first_ledger, other_ledger, recorder.ledger):
        log.close()


class _HeldWrite:
    """``Spooled._insert`` wrapped: the first write waits for ``release``; each write's batch counts are kept."""

    def __init__(self, spool: Spooled, fail_after_first: StoreError | None = None) -> None:
        self.spool, self.real, self.fail = spool, spool._insert, fail_after_first
        self.release = threading.Event()
        self.groups: list[list[int]] = []
        spool._insert = self  # type: ignore[method-assign]

    def __call__(self, group: list[Any]) -> list[StoreError | None]:
        self.groups.append([b.count for b in group])
        if len(self.groups) == 1:
            assert self.release.wait(10), "the test never released the first write"
        elif self.fail is not None:
            raise self.fail
        return self.real(group)


def _record_in_threads(spool: Spooled, batches: list[list[dict[str, Any]]]) -> list[BaseException | None]:
    """``batches[0]`` recorded first (its write held), the others queued behind it; each call's error or None."""
    held: _HeldWrite = spool._insert  # type: ignore[assignment]
    calls = [lambda batch=batch: spool.record_many(batch) for batch in batches]
    outcome = queued_behind_a_held_write(
        calls, held=lambda: bool(held.groups), queued=lambda: len(spool._queued), release=held.release
    )
    return [o if isinstance(o, BaseException) else None for o in outcome]


def test_calls_that_come_during_a_write_share_the_next_commit(ledger: AuditLog) -> None:
    """Seven calls arriving while one call's commit is being written are written together: one commit, one fsync."""
    spool = Spooled(ledger, flush_interval=NEVER)
    held = _HeldWrite(spool)
    outcome = _record_in_threads(spool, [[event(n)] for n in range(8)])
    assert outcome == [None] * 8
    assert held.groups == [[1], [1] * 7]
    spool.flush()
    ids = flow_ids(ledger)
    assert ids[0] == "f0" and sorted(ids) == [f"f{n}" for n in range(8)]
    spool.close()


def test_a_failed_group_commit_fails_every_call_of_the_group_and_stores_none_of_them(ledger: AuditLog) -> None:
    """Each call of a group whose commit fails gets the error; the first write's batch is stored alone."""
    spool = Spooled(ledger, flush_interval=NEVER)
    _HeldWrite(spool, fail_after_first=StoreError("cannot write to the spool: disk I/O error"))
    outcome = _record_in_threads(spool, [[event(n)] for n in range(4)])
    assert outcome[0] is None
    assert all(isinstance(exc, StoreError) and "disk I/O error" in str(exc) for exc in outcome[1:])
    spool.flush()
    assert flow_ids(ledger) == ["f0"]
    spool.close()


def test_in_a_group_each_batch_is_refused_on_its_own_past_max_pending(ledger: AuditLog) -> None:
    """A group whose batches would take the spool past max_pending stores those that fit and refuses the rest."""
    spool = Spooled(ledger, batch_size=1, max_pending=5, flush_interval=NEVER)
    _HeldWrite(spool)
    batches = [[event(0)], [event(1), event(2)], [event(3), event(4)], [event(5), event(6)]]
    outcome = _record_in_threads(spool, batches)
    refused = [i for i, exc in enumerate(outcome) if exc is not None]
    assert len(refused) == 1 and refused[0] != 0
    assert "max_pending=5" in str(outcome[refused[0]])
    assert spool.pending == 5
    spool.flush()
    assert len(flow_ids(ledger)) == 5
    spool.close()


def test_close_waits_for_the_group_being_written_and_refuses_the_calls_queued_behind_it(ledger: AuditLog) -> None:
    """The batch being written when close() is called is stored and placed; calls still queued get 'closed'."""
    spool = Spooled(ledger, flush_interval=NEVER)
    held = _HeldWrite(spool)
    outcome: list[BaseException | None] = [None] * 3

    def call(i: int) -> None:
        try:
            spool.record_many([event(i)])
        except StoreError as exc:
            outcome[i] = exc

    first = threading.Thread(target=call, args=(0,))
    first.start()
    while not held.groups:
        time.sleep(0.001)
    queued = [threading.Thread(target=call, args=(i,)) for i in (1, 2)]
    for thread in queued:
        thread.start()
    while len(spool._queued) < 2:
        time.sleep(0.001)
    closing = threading.Thread(target=spool.close)
    closing.start()
    while not spool._closed:
        time.sleep(0.001)
    held.release.set()
    for thread in (first, *queued, closing):
        thread.join(10)
    assert outcome[0] is None
    assert all(isinstance(exc, StoreError) and "closed" in str(exc) for exc in outcome[1:])
    assert flow_ids(ledger) == ["f0"]


def test_many_threads_recording_at_once_lose_and_double_nothing(ledger: AuditLog) -> None:
    """Eight threads, fifty calls each, through the group commit: every event placed once, each thread's in order."""
    spool = Spooled(ledger, batch_size=64, flush_interval=0.01)

    def calls(t: int) -> None:
        for n in range(50):
            spool.record_many([event(t * 1000 + n)])

    threads = [threading.Thread(target=calls, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    spool.close()
    ids = [int(i[1:]) for i in flow_ids(ledger)]
    assert sorted(ids) == sorted(t * 1000 + n for t in range(8) for n in range(50))
    for t in range(8):
        mine = [i for i in ids if i // 1000 == t]
        assert mine == sorted(mine), f"thread {t}'s events out of order"


def test_a_full_disk_is_named_and_the_spool_takes_batches_again_once_there_is_room(ledger: AuditLog) -> None:
    """SQLite's own error comes back (SQLite has rolled the transaction back: no second error hides it)."""
    spool = Spooled(ledger, flush_interval=NEVER)
    spool.record_many([event(0)])
    (pages,) = spool._writer.execute("PRAGMA page_count").fetchone()
    spool._writer.execute(f"PRAGMA max_page_count = {pages}")  # the spool's file can grow no more
    with pytest.raises(StoreError, match="database or disk is full"):
        spool.record_many([event(n, after="x" * 100_000) for n in range(1, 6)])
    spool._writer.execute("PRAGMA max_page_count = 1073741823")
    spool.record_many([event(6)])
    spool.close()
    assert flow_ids(ledger) == ["f0", "f6"]
