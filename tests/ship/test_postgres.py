"""The shipper on PostgreSQL: migration 0005, portable offset SQL and seq windows, filtered and not."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from auditledger import AuditLog
from auditledger.ship import offsets, run_shipper
from tests.ship.conftest import fill
from tests.store.pg import pg_schema

pytestmark = pytest.mark.postgres


def test_ship_resume_and_filter_on_postgres(tmp_path: Path) -> None:
    """Offsets round-trip through ship_offsets on PostgreSQL; unfiltered and filtered runs ship the right events."""
    pytest.importorskip("psycopg", reason="psycopg (auditledger[postgres]) is not installed")
    with pg_schema() as url, AuditLog.open(url) as log:
        ids = fill(log, 90)
        spec = {"logExporters": [{"id": "f", "type": "file", "directory": str(tmp_path / "all")}], "batchSize": 40}
        out = run_shipper(log, spec)
        assert out["errors"] == {} and out["offsets"] == {"f": 90}
        lines = b"".join(p.read_bytes() for p in sorted((tmp_path / "all").glob("*.ndjson")))
        records = [orjson.loads(x) for x in lines.splitlines()]
        assert [r["id"] for r in records] == ids
        assert records[0]["leaf_hash"] == log.get(ids[0]).leaf_hash.hex()
        fill(log, 5, seed=4)
        assert run_shipper(log, spec)["shipped"] == {"f": 5}
        assert offsets.load(log.store, "main", "LogShipper-state", "f") == 95
        flt = {"logExporters": [{"id": "g", "type": "file", "directory": str(tmp_path / "flows")}],
               "resources": ["FLOW"]}
        out = run_shipper(log, flt)
        expected = [e.id for e in log.iter_search("resource:FLOW", order="asc")]
        files = (tmp_path / "flows").glob("*.ndjson")
        got = [orjson.loads(x)["id"] for p in files for x in p.read_bytes().splitlines()]
        assert got == expected and out["offsets"] == {"g": 95}
