"""Native lines built by the store (Store.native_lines) and the exporters that send them as they are."""

from __future__ import annotations

import gzip
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from auditledger import AuditLog
from auditledger.retention import Retention, purge_filter
from auditledger.ship import run_shipper
from auditledger.ship.formats import Record, native_line
from auditledger.store import sqlite as sqlite_store
from tests.ship.conftest import Receiver, fill
from tests.store.pg import pg_schema


@pytest.fixture(params=["sqlite", "postgres"])
def any_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditLog]:
    if request.param == "sqlite":
        with AuditLog.open(f"sqlite:///{tmp_path / 'ledger.db'}") as log:
            yield log
        return
    pytest.importorskip("psycopg", reason="psycopg (auditledger[postgres]) is not installed")
    with pg_schema() as url, AuditLog.open(url) as log:
        yield log


def _expected(log: AuditLog, start: int, end: int) -> tuple[list[int], bytes]:
    """The lines formats.native_line makes from each stored event of the window (the reference)."""
    rows = log.store.query(
        "SELECT e.seq, e.id, e.date, e.body, l.hash FROM events e JOIN leaves l "
        "ON l.tenant = e.tenant AND l.seq = e.seq WHERE e.tenant = ? AND e.seq >= ? AND e.seq < ? ORDER BY e.seq",
        ["main", start, end],
    )
    records = [Record(seq, id, date, bytes(body), bytes(leaf)) for seq, id, date, body, leaf in rows]
    return [r.seq for r in records], b"".join(native_line(r) + b"\n" for r in records)


def _purge_flows(log: AuditLog) -> int:
    flt = purge_filter(datetime.now(UTC) + timedelta(days=1), resources=["FLOW"])
    return Retention(log).purge(flt, force=True).count


def test_store_lines_equal_the_python_native_lines(any_log: AuditLog) -> None:
    """Both stores build, byte for byte, the lines native_line makes, in seq order, skipping purged events."""
    fill(any_log, 60)
    assert _purge_flows(any_log) > 0
    for start, end in [(0, 60), (7, 31), (0, 10_000), (500, 600)]:
        seqs, data = _expected(any_log, start, end)
        got = any_log.store.native_lines("main", start, end)
        assert got.seqs == seqs and got.data == data
    assert any_log.store.native_lines("main", 0, 60).seqs != list(range(60))  # the gaps were there
    assert any_log.store.native_lines("other", 0, 60) == ([], b"")


def test_sqlite_falls_back_to_rows_when_the_aggregate_is_out_of_order(
    ledger: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If SQLite's aggregate ever came out of seq order, the row-by-row read gives the same lines."""
    fill(ledger, 40)
    want = ledger.store.native_lines("main", 3, 33)
    monkeypatch.setattr(sqlite_store, "pairwise", lambda seqs: [(1, 0)])  # every window looks unordered
    assert ledger.store.native_lines("main", 3, 33) == want
    assert want.seqs == list(range(3, 33))


def test_sqlite_reads_row_by_row_a_window_over_its_largest_value(ledger: AuditLog) -> None:
    """A window whose lines together pass SQLite's value limit still comes whole, read row by row."""
    fill(ledger, 40)
    want = ledger.store.native_lines("main", 0, 40)
    assert len(want.data) > 8_000
    conn = ledger.store.reader()  # this thread's connection, the one native_lines uses here
    old = conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 8_000)  # each line fits, the window does not
    try:
        assert ledger.store.native_lines("main", 0, 40) == want
    finally:
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, old)


def test_a_record_rebuilt_from_its_native_line(filled: tuple[AuditLog, list[str]]) -> None:
    """Record.from_native gives back the seq, id, date, canonical bytes and leaf hash the line was made from."""
    log, ids = filled
    row = log.store.query(
        "SELECT e.seq, e.id, e.date, e.body, l.hash FROM events e JOIN leaves l "
        "ON l.tenant = e.tenant AND l.seq = e.seq WHERE e.tenant = ? AND e.seq = ?",
        ["main", 5],
    )[0]
    original = Record(*row)
    again = Record.from_native(native_line(original))
    assert (again.seq, again.id, again.date, again.body, again.leaf_hash) == tuple(row)
    assert again.id == ids[5]


@pytest.mark.parametrize("compressed", [False, True])
def test_files_rotated_inside_a_window_are_named_and_filled_right(
    filled: tuple[AuditLog, list[str]], tmp_path: Path, compressed: bool
) -> None:
    """Rotation in the middle of a window of lines: each file holds its lines and names its first and last seq."""
    log, _ = filled
    spec = {"logExporters": [{"id": "a", "type": "file", "directory": str(tmp_path), "maxLinesPerFile": 35,
                              "gzip": compressed}], "batchSize": 50}
    assert run_shipper(log, spec)["offsets"] == {"a": 120}
    files = sorted(tmp_path.glob("auditlog-*"))
    _, everything = _expected(log, 0, 120)
    contents = [gzip.decompress(f.read_bytes()) if compressed else f.read_bytes() for f in files]
    assert b"".join(contents) == everything
    for f, content in zip(files, contents, strict=True):
        seqs = [orjson.loads(line)["seq"] for line in content.splitlines()]
        first, last = f.name.split(".")[0].split("-")[-2:]
        assert (int(first), int(last)) == (seqs[0], seqs[-1])
    assert [len(c.splitlines()) for c in contents] == [35, 35, 35, 15]


def test_webhook_and_datadog_bodies_from_lines(filled: tuple[AuditLog, list[str]], receiver: Receiver) -> None:
    """The webhook posts the store's lines as its NDJSON body; Datadog wraps each line as a log's message."""
    log, ids = filled
    run_shipper(log, {"logExporters": [{"id": "w", "type": "webhook", "url": receiver.url + "/in"}], "batchSize": 70})
    _, everything = _expected(log, 0, 120)
    assert b"".join(r.body for r in receiver.requests) == everything
    assert receiver.requests[1].headers["idempotency-key"] == "main:LogShipper-state:70-119"
    receiver.requests.clear()
    run_shipper(log, {"logExporters": [{"id": "d", "type": "datadog", "basePath": receiver.url, "apiKey": "k",
                                        "chunk": 50, "tags": ["env:test"]}]})
    items = [item for r in receiver.requests for item in orjson.loads(r.body)]
    assert [item["message"].encode() + b"\n" for item in items] == everything.splitlines(keepends=True)
    assert {(i["ddsource"], i["ddtags"], i["service"]) for i in items} == {("auditledger", "env:test", "auditledger")}
    assert len(items) == len(ids)
