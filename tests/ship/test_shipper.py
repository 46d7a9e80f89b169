"""The shipper's contract: offsets, lookback, filters, retries, isolation, at-least-once, delete."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from auditledger import AuditLog
from auditledger.demo import demo_events
from auditledger.errors import ConfigError
from auditledger.ship import ProgressEvent, Shipper, run_shipper, ship_checkpoint
from auditledger.ship import offsets as offset_store
from tests.ship.conftest import FAST_RETRY, Receiver, Request, fill


def _webhook(receiver: Receiver, **extra: object) -> dict[str, object]:
    return {"logExporters": [{"id": "hook", "type": "webhook", "url": receiver.url + "/in", **extra}], **FAST_RETRY}


def _ids(receiver: Receiver) -> list[str]:
    return [orjson.loads(line)["id"] for r in receiver.requests for line in r.body.splitlines() if line]


def test_ships_everything_then_resumes_from_the_offset(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """A first run ships all recent events in order; a second ships only what was recorded since."""
    log, ids = filled
    out = run_shipper(log, {**_webhook(receiver), "batchSize": 50})
    assert out["shipped"] == {"hook": 120} and out["offsets"] == {"hook": 120} and out["errors"] == {}
    assert _ids(receiver) == ids
    assert len(receiver.requests) == 3
    more = fill(log, 7, seed=9)
    receiver.requests.clear()
    out = run_shipper(log, _webhook(receiver))
    assert out["shipped"] == {"hook": 7} and _ids(receiver) == more


def test_native_records_carry_the_id_and_a_verifiable_leaf_hash(
    filled: tuple[AuditLog, list[str]], receiver: Receiver
) -> None:
    """Each native record holds the event id, and its leaf hash is SHA-256(0x00 || record without leaf_hash)."""
    log, _ = filled
    run_shipper(log, _webhook(receiver))
    line = receiver.requests[0].body.splitlines()[0]
    record = orjson.loads(line)
    canonical = line.replace(b',"leaf_hash":"' + record["leaf_hash"].encode() + b'"}', b"}")
    assert hashlib.sha256(b"\x00" + canonical).hexdigest() == record["leaf_hash"]
    assert log.get(record["id"]).leaf_hash.hex() == record["leaf_hash"]


def test_first_run_starts_lookback_period_back(ledger: AuditLog, receiver: Receiver) -> None:
    """Without an offset, only events dated within lookbackPeriod are shipped."""
    now = datetime.now(UTC)
    events = list(demo_events(10, seed=1))
    dates = [now - timedelta(days=3)] * 5 + [now - timedelta(hours=1)] * 5
    receipts = ledger.backfill(events, dates)
    out = run_shipper(ledger, {**_webhook(receiver), "lookbackPeriod": "P1D"})
    assert out["shipped"] == {"hook": 5}
    assert _ids(receiver) == [r.id for r in receipts[5:]]


def test_resources_and_query_filter_what_is_shipped(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """Only matching events are sent, and the offset still reaches the head (nothing left pending)."""
    log, _ = filled
    out = run_shipper(log, {**_webhook(receiver), "resources": ["FLOW"], "query": "action:CREATE,UPDATE"})
    sent = [orjson.loads(line) for r in receiver.requests for line in r.body.splitlines()]
    expected = [e.id for e in log.iter_search("resource:FLOW action:CREATE,UPDATE", order="asc")]
    assert [s["id"] for s in sent] == expected and expected
    assert {(s["resource_type"], s["action"] in ("CREATE", "UPDATE")) for s in sent} == {("FLOW", True)}
    assert out["offsets"] == {"hook": 120} and out["lag"] == {"hook": 0}


def test_server_errors_are_retried_until_accepted(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """Two 500s and a 503 then success: every event arrives, the offset is the head."""
    log, ids = filled
    receiver.failures = [500, 500, 503]
    out = run_shipper(log, _webhook(receiver))
    assert out["errors"] == {} and out["offsets"] == {"hook": 120}
    assert set(_ids(receiver)) == set(ids)


def test_timeouts_are_retried(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """A destination that does not answer in time is retried; the batch then arrives."""
    log, ids = filled
    receiver.hangs, receiver.hang_seconds = 1, 1.5
    out = run_shipper(log, _webhook(receiver, timeout="PT0.3S"))
    assert out["errors"] == {} and out["offsets"] == {"hook": 120}
    assert set(_ids(receiver)) == set(ids)


def test_exhausted_retries_keep_the_offset_and_recover_later(
    filled: tuple[AuditLog, list[str]], receiver: Receiver
) -> None:
    """A batch never accepted leaves the offset before it; a later run ships from there, skipping nothing."""
    log, ids = filled
    receiver.failures = [200, 500, 500, 500, 500, 500]  # first batch accepted, the second never
    out = run_shipper(log, {**_webhook(receiver), "batchSize": 40})
    assert out["offsets"] == {"hook": 40} and "gave up after 5 attempts" in out["errors"]["hook"]
    assert offset_store.load(log.store, "main", "LogShipper-state", "hook") == 40
    out = run_shipper(log, {**_webhook(receiver), "batchSize": 40})
    assert out["errors"] == {} and out["offsets"] == {"hook": 120} and out["shipped"] == {"hook": 80}
    assert set(_ids(receiver)) == set(ids)


def test_a_refused_batch_is_not_retried_and_not_skipped(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """A 400 is permanent: one attempt, an error reported, the offset unchanged."""
    log, _ = filled
    receiver.failures = [400]
    out = run_shipper(log, _webhook(receiver))
    assert len(receiver.requests) == 1 and "answered 400" in out["errors"]["hook"]
    assert out["offsets"] == {"hook": 0} and out["shipped"] == {"hook": 0}


def test_one_failing_exporter_does_not_stop_the_others(
    filled: tuple[AuditLog, list[str]], receiver: Receiver, tmp_path: Path
) -> None:
    """Exporters keep separate offsets: a broken one is reported while the file exporter ships everything."""
    log, _ = filled
    spec = {
        "logExporters": [
            {"id": "broken", "type": "webhook", "url": "http://127.0.0.1:9/nothing-listens", "timeout": "PT0.2S"},
            {"id": "files", "type": "file", "directory": str(tmp_path)},
        ],
        **FAST_RETRY,
    }
    out = run_shipper(log, spec)
    assert out["shipped"] == {"broken": 0, "files": 120}
    assert set(out["errors"]) == {"broken"}
    assert out["offsets"] == {"broken": 0, "files": 120}


def test_offset_keys_are_independent(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """A new offsetKey re-ships from lookbackPeriod back; resetting one does the same."""
    log, _ = filled
    run_shipper(log, _webhook(receiver))
    assert run_shipper(log, {**_webhook(receiver), "offsetKey": "other"})["shipped"] == {"hook": 120}
    assert offset_store.reset(log.store, "main", "other") == 1
    assert run_shipper(log, {**_webhook(receiver), "offsetKey": "other"})["shipped"] == {"hook": 120}
    assert run_shipper(log, _webhook(receiver))["shipped"] == {"hook": 0}


def test_secrets_never_appear_in_errors(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """A secret echoed back by a failing destination is redacted from the reported error."""
    log, _ = filled
    receiver.respond = lambda r: (401, f"bad token {r.headers['authorization']}".encode())
    out = run_shipper(
        log,
        _webhook(receiver, headers={"Authorization": "{{ secret('HOOK_TOKEN') }}"}),
        secrets={"HOOK_TOKEN": "s3cr3t-token-value"},
    )
    assert "s3cr3t-token-value" not in out["errors"]["hook"] and "****" in out["errors"]["hook"]


def test_delete_purges_only_what_every_exporter_shipped(ledger: AuditLog, tmp_path: Path) -> None:
    """delete: true purges shipped events through retention (older than its minimum age); payloads go, leaves stay."""
    now = datetime.now(UTC)
    receipts = ledger.backfill(list(demo_events(20, seed=2)), [now - timedelta(days=30)] * 20)
    spec = {
        "logExporters": [{"id": "f", "type": "file", "directory": str(tmp_path)}],
        "delete": True,
        "lookbackPeriod": "P60D",
    }
    out = run_shipper(ledger, spec)
    assert out["shipped"] == {"f": 20} and out["purged"] == 20
    assert ledger.count() == 1  # the purge's own AUDITLOG/DELETE event
    ledger.verify()
    lines = b"".join(p.read_bytes() for p in tmp_path.glob("*.ndjson"))
    assert {orjson.loads(x)["id"] for x in lines.splitlines()} == {r.id for r in receipts}


def test_delete_with_a_query_is_refused(ledger: AuditLog, tmp_path: Path) -> None:
    """Purging by date would remove events a query did not ship, so the combination is a ConfigError."""
    with pytest.raises(ConfigError, match="delete"):
        Shipper(
            ledger,
            {
                "logExporters": [{"id": "f", "type": "file", "directory": str(tmp_path)}],
                "delete": True,
                "query": "action:CREATE",
            },
        )


def test_ship_checkpoint_goes_to_object_storing_exporters(tmp_path: Path, receiver: Receiver) -> None:
    """A checkpoint text is stored by file/object exporters and skipped by log APIs."""
    spec = {
        "logExporters": [
            {"id": "f", "type": "file", "directory": str(tmp_path)},
            {"id": "hook", "type": "webhook", "url": receiver.url},
        ]
    }
    where = ship_checkpoint(spec, "checkpoints/main/000042.txt", "example.org/log\n42\nroot\n")
    assert set(where) == {"f"}
    assert Path(where["f"]).read_text() == "example.org/log\n42\nroot\n"
    assert not receiver.requests
    with pytest.raises(ConfigError):
        ship_checkpoint(spec, "../escape", "x")


def test_progress_reports_rate_inputs_and_lag(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """The progress callback sees the running total and the lag behind the head after each batch."""
    log, _ = filled
    seen: list[ProgressEvent] = []
    Shipper(log, {**_webhook(receiver), "batchSize": 50}, progress=seen.append).run()
    assert [(p.shipped, p.lag) for p in seen] == [(50, 70), (100, 20), (120, 0)]


def test_webhook_signature_checks_out(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """The HMAC-SHA256 header verifies over timestamp + '.' + body with the shared secret."""
    import hmac

    log, _ = filled

    def check(req: Request) -> tuple[int, bytes]:
        stamp = req.headers["x-auditledger-timestamp"]
        mac = hmac.new(b"shared", stamp.encode() + b"." + req.raw, hashlib.sha256).hexdigest()
        assert req.headers["x-auditledger-signature"] == f"sha256={mac}"
        assert req.headers["content-type"] == "application/x-ndjson"
        assert req.headers["idempotency-key"].startswith("main:LogShipper-state:0-")
        return 200, b""

    receiver.respond = check
    out = run_shipper(log, _webhook(receiver, secret="shared", gzip=True))
    assert out["errors"] == {} and receiver.requests[0].headers["content-encoding"] == "gzip"


def test_a_capturing_exporter_instance_can_be_shipped_to(filled: tuple[AuditLog, list[str]]) -> None:
    """auditledger.testing's CapturingExporter plugs into a Shipper with no logExporters in the spec."""
    from auditledger.testing import CapturingExporter

    log, ids = filled
    capture = CapturingExporter()
    result = Shipper(log, {"offsetKey": "tests"}, exporters=[capture]).run()
    assert result.ok and [r.id for r in capture.records] == ids
    assert capture.events[0]["leaf_hash"] == log.get(ids[0]).leaf_hash.hex()


def test_retry_after_is_honoured_up_to_the_cap(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """A 429 with Retry-After waits that long (capped by maxRetryDelay) before the next attempt."""
    log, _ = filled
    calls: list[int] = []

    def limited(req: Request) -> tuple[int, bytes, dict[str, str]]:
        calls.append(1)
        return (
            (429, b"slow down", {"Retry-After": "5" if len(calls) == 1 else "60"})
            if len(calls) <= 2
            else (200, b"", {})
        )

    receiver.respond = limited
    waits: list[float] = []
    result = Shipper(log, {**_webhook(receiver), "maxRetryDelay": "PT7S"}, sleep=waits.append).run()
    assert result.ok and waits == [5.0, 7.0]


def test_offsets_never_move_backwards(filled: tuple[AuditLog, list[str]]) -> None:
    """Of two runs of one shipper saving at once, the offset further ahead stays."""
    log, _ = filled
    offset_store.save(log.store, "main", "k", "e", 100, 100)
    offset_store.save(log.store, "main", "k", "e", 60, 60)
    assert offset_store.load(log.store, "main", "k", "e") == 100
