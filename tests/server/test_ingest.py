"""Ingest through the group-commit writer: acknowledgements, idempotent retries, limits, overload."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from auditledger import AuditLog
from auditledger.model import event_input
from auditledger.server.writer import Overloaded, Writer
from tests.server.conftest import Live


def event(i: int, key: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resource_type": "EXECUTION", "action": "CREATE", "actor": {"type": "SERVICE_ACCOUNT", "id": "sa"},
        "details": {"id": f"ex{i}"},
    }
    if key is not None:
        out["idempotency_key"] = key
    return out


def test_retried_batch_is_stored_once(live: Live) -> None:
    """Sending the same batch twice (same idempotency keys) stores each event once and answers the same ids."""
    batch = [event(i, key=f"retry-{i}") for i in range(20)]
    with live.client("ingest@acme") as c:
        first = c.post("/api/v1/acme/auditlogs", json=batch).json()
        second = c.post("/api/v1/acme/auditlogs", json=batch).json()
    assert second["ids"] == first["ids"] and second["seqs"] == first["seqs"]
    assert all(r["duplicate"] for r in second["receipts"]) and not any(r["duplicate"] for r in first["receipts"])
    stored = [e.id for e in live.ledger.iter_search(tenant="acme") if e.id in set(first["ids"])]
    assert len(stored) == 20
    keys = live.ledger.store.query(
        "SELECT count(*) FROM events WHERE tenant = 'acme' AND idempotency_key LIKE 'retry-%'"
    )
    assert keys[0][0] == 20


def test_concurrent_requests_get_gapless_seqs(live: Live) -> None:
    """Many concurrent single-event requests are all acknowledged with distinct seqs and the ledger verifies."""
    tenant = "concurrent"
    token = live.tokens["ingest@*"]

    def send(i: int) -> int:
        r = live.http.post(f"/api/v1/{tenant}/auditlogs", json=event(i), headers=live.as_header(token))
        assert r.status_code == 201, r.text
        return int(r.json()["seqs"][0])

    with ThreadPoolExecutor(8) as pool:
        seqs = sorted(pool.map(send, range(80)))
    assert seqs == list(range(80))
    assert live.ledger.verify(tenant=tenant).sizes[tenant] == 80


def test_source_cannot_be_forged(live: Live) -> None:
    """A client-sent source is refused: the server records the token and IP itself."""
    with live.client("ingest@acme") as c:
        r = c.post("/api/v1/acme/auditlogs", json={**event(1), "source": {"token": "someone-else"}})
    assert r.status_code == 422 and r.json()["field"] == "events[0].source"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{not json", 400, "body"),
        (b"", 400, "body"),
        (b"42", 400, "body"),
        (b'{"events": []}', 422, "events"),
        (b'{"resource_type": "FLOW", "action": "UPDATE", "actor": {"type": "ROBOT", "id": "x"}}', 422, "actor.type"),
        (b'[{"resource_type": "FLOW", "action": "UPDATE", "actor": {"type": "USER", "id": "x"}, "details": 1}]',
         422, "events[0].details"),
    ],
)
def test_bad_bodies_name_the_field(live: Live, body: bytes, status: int, field: str) -> None:
    """Malformed JSON is 400 and an invalid event 422, each naming the field; nothing is stored."""
    with live.client("ingest@acme") as c:
        r = c.post("/api/v1/acme/auditlogs", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status and r.json()["field"] == field


def test_body_too_large_is_413(live: Live) -> None:
    """A body above max_body_bytes gets 413, declared or sent in chunks."""
    big = b"[" + b" " * (live.settings.max_body_bytes + 10) + b"]"
    with live.client("ingest@acme") as c:
        assert c.post("/api/v1/acme/auditlogs", content=big).status_code == 413

        def chunks() -> Any:
            for _ in range(0, len(big), 1 << 16):
                yield b" " * (1 << 16)

        assert c.post("/api/v1/acme/auditlogs", content=chunks()).status_code == 413


def test_too_many_events_is_422(live: Live) -> None:
    """More events than max_batch in one request is refused naming events."""
    with live.client("ingest@acme") as c:
        r = c.post("/api/v1/acme/auditlogs", json=[event(i) for i in range(live.settings.max_batch + 1)])
    assert r.status_code == 422 and r.json()["field"] == "events"


def test_writer_groups_and_refuses_when_full(tmp_path: Any) -> None:
    """The writer places concurrent submissions in shared commits and raises Overloaded past its queue bound."""
    ledger = AuditLog.open(f"sqlite:///{tmp_path / 'w.db'}")
    writer = Writer(ledger, window_ms=50, max_queued=100)
    drafts = [event_input(event(i)) for i in range(10)]
    futures = [writer.submit("t", drafts) for _ in range(5)]
    receipts = [f.result(10) for f in futures]
    assert sorted(r.seq for rs in receipts for r in rs) == list(range(50))
    assert writer.stats.commits < 5  # grouped
    gate = threading.Event()
    ledger.on_commit(lambda _: gate.wait(10))  # hold the writer inside a commit
    blocked = writer.submit("t", drafts)
    while writer.queued:  # wait until the writer picked it up
        time.sleep(0.001)
    queued = [writer.submit("t", drafts) for _ in range(10)]  # 100 events: the bound
    with pytest.raises(Overloaded):
        writer.submit("t", drafts)
    gate.set()
    for f in [blocked, *queued]:
        f.result(10)
    writer.close()
    ledger.close()


def test_writer_commits_a_backlog_without_waiting_the_window(tmp_path: Any) -> None:
    """Events queued while a commit runs are committed as soon as it ends; only a writer woken from
    idle waits the group-commit window for others to join."""
    ledger = AuditLog.open(f"sqlite:///{tmp_path / 'w.db'}")
    writer = Writer(ledger, window_ms=1000)
    gate = threading.Event()
    inside = threading.Event()

    def hold(_: Any) -> None:
        inside.set()
        gate.wait(10)

    ledger.on_commit(hold)
    drafts = [event_input(event(i)) for i in range(3)]
    first = writer.submit("t", drafts)  # from idle: waits the window, then commits and is held
    assert inside.wait(10)
    second = writer.submit("t", drafts)  # queued during that commit: the backlog
    start = time.monotonic()
    gate.set()
    first.result(10)
    assert [r.seq for r in second.result(10)] == [3, 4, 5]
    assert time.monotonic() - start < 0.8
    writer.close()
    ledger.close()


def test_writer_refuses_invalid_text_before_queueing(tmp_path: Any) -> None:
    """An unpaired surrogate is found while the caller prepares its events: a ValidationError naming the
    event and field in the caller's thread, nothing queued, nothing stored."""
    from auditledger.errors import ValidationError

    ledger = AuditLog.open(f"sqlite:///{tmp_path / 'w.db'}")
    writer = Writer(ledger)
    bad = event_input({**event(1), "after": "bad \udc80"})
    with pytest.raises(ValidationError) as info:
        writer.submit("t", [event_input(event(0)), bad])
    assert info.value.field == "events[1].after"
    assert writer.queued == 0 and ledger.count(tenant="t") == 0
    writer.close()
    ledger.close()


def test_overloaded_is_503_with_retry_after(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the writer's queue is full the API answers 503 with Retry-After (clients back off)."""

    def full(self: Writer, prepared: Any) -> Any:
        raise Overloaded("full", 3)

    monkeypatch.setattr(Writer, "submit_prepared", full)
    r = live.http.post("/api/v1/acme/auditlogs", json=event(1), headers=live.as_header(live.tokens["ingest@acme"]))
    assert r.status_code == 503 and r.headers["retry-after"] == "3"
