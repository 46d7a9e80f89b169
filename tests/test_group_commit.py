"""AuditLog.record_many from several threads: calls that meet share one commit, each keeps its own outcome."""

from __future__ import annotations

import threading
from typing import Any

from auditledger import Actor, AuditLog, StoreError
from auditledger.testing import recorded
from tests.held_writes import queued_behind_a_held_write


def event(n: int) -> dict[str, Any]:
    return {"resource_type": "FLOW", "action": "UPDATE", "actor": Actor.user("anna@acme.io"), "details": {"n": str(n)}}


def numbers(ledger: AuditLog) -> list[str]:
    return [e["details"]["n"] for e in recorded(ledger)]


class HeldWrite:
    """``AuditLog.append_prepared`` wrapped: the first write waits for ``release``; each write's event count is kept.

    ``fail``: what every write after the first raises (a function of its items), else the real write runs.
    """

    def __init__(self, ledger: AuditLog, fail: Any = None) -> None:
        self.ledger, self.real, self.fail = ledger, ledger.append_prepared, fail
        self.release = threading.Event()
        self.writes: list[int] = []
        ledger.append_prepared = self  # type: ignore[method-assign]

    def __call__(self, items: list[Any], **kwargs: Any) -> Any:
        self.writes.append(len(items))
        if len(self.writes) == 1:
            assert self.release.wait(10), "the test never released the first write"
        elif self.fail is not None and (error := self.fail(items)) is not None:
            raise error
        return self.real(items, **kwargs)


def record_in_threads(ledger: AuditLog, batches: list[list[dict[str, Any]]]) -> list[Any]:
    """``batches[0]`` recorded first (its write held), the others queued behind it; each call's receipts or error."""
    held: HeldWrite = ledger.append_prepared  # type: ignore[assignment]
    calls = [lambda batch=batch: ledger.record_many(batch) for batch in batches]
    return queued_behind_a_held_write(
        calls, held=lambda: bool(held.writes), queued=lambda: len(ledger._queued), release=held.release
    )


def test_calls_that_come_during_a_commit_share_the_next_one_and_keep_their_own_receipts(ledger: AuditLog) -> None:
    """Seven calls arriving while one call's commit is written are written together, each answered its own events."""
    held = HeldWrite(ledger)
    batches = [[event(0)]] + [[event(10 * n + 1), event(10 * n + 2)] for n in range(1, 8)]
    outcome = record_in_threads(ledger, batches)
    assert held.writes == [1, 14]  # the held commit, then one for the seven queued calls
    for batch, receipts in zip(batches, outcome, strict=True):
        assert [r.tenant for r in receipts] == ["main"] * len(batch)
        for e, r in zip(batch, receipts, strict=True):
            assert ledger.get(r.id).details["n"] == e["details"]["n"]  # each call's receipts are its own events
        assert [r.seq for r in receipts] == list(range(receipts[0].seq, receipts[0].seq + len(batch)))
    assert len(numbers(ledger)) == 15
    assert ledger.verify().sizes == {"main": 15}


def test_a_store_error_fails_every_call_of_the_group_and_stores_none(ledger: AuditLog) -> None:
    """A group whose commit the store fails (locked, full) fails each of its calls; the held write is kept alone."""
    HeldWrite(ledger, fail=lambda items: StoreError("commit failed on the ledger: disk I/O error"))
    outcome = record_in_threads(ledger, [[event(n)] for n in range(4)])
    assert not isinstance(outcome[0], Exception)
    assert all(isinstance(exc, StoreError) and "disk I/O error" in str(exc) for exc in outcome[1:])
    assert numbers(ledger) == ["0"]


def test_a_failure_of_one_batch_in_a_group_fails_that_call_only(ledger: AuditLog) -> None:
    """A failure that is not the store's could be one batch's: each batch of the group is written again on its own."""

    def poisoned(items: list[Any]) -> Exception | None:
        has_poison = any(p.draft.details.get("n") == "2" for p in items)
        return ValueError("batch 2 cannot be stored") if has_poison else None

    held = HeldWrite(ledger, fail=poisoned)
    outcome = record_in_threads(ledger, [[event(n)] for n in range(4)])
    assert held.writes == [1, 3, 1, 1, 1]  # the held write, the group, then each of its batches alone
    assert isinstance(outcome[2], ValueError)
    assert all(not isinstance(o, Exception) for i, o in enumerate(outcome) if i != 2)
    assert sorted(numbers(ledger)) == ["0", "1", "3"]
    assert ledger.verify().total == 3


def test_many_threads_place_every_event_once_each_thread_in_its_order(ledger: AuditLog) -> None:
    """Eight threads of fifty one-event calls: every event stored once, each thread's in the order it recorded them."""

    threads = 8

    def work(t: int) -> None:
        for i in range(50):
            ledger.record_many([event(1000 * t + i)])

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    stored = [int(n) for n in numbers(ledger)]
    assert sorted(stored) == sorted(1000 * t + i for t in range(threads) for i in range(50))
    for t in range(threads):
        mine = [n for n in stored if n // 1000 == t]
        assert mine == sorted(mine)
    assert ledger.verify().total == threads * 50
