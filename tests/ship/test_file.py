"""The NDJSON file exporter: rotation, gzip members, Kestra's formats, and recovery of a cut file."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from auditledger import AuditLog
from auditledger.ship import run_shipper


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.glob("auditlog-*") if not p.name.endswith(".part"))


def _ids(files: list[Path]) -> list[str]:
    out = []
    for f in files:
        data = gzip.decompress(f.read_bytes()) if f.name.endswith(".gz") else f.read_bytes()
        out += [orjson.loads(line)["id"] for line in data.splitlines()]
    return out


def test_rotation_by_lines_and_bytes(filled: tuple[AuditLog, list[str]], tmp_path: Path) -> None:
    """maxLinesPerFile and maxBytesPerFile both start a new file; together the files hold every event in order."""
    log, ids = filled
    run_shipper(log, {"logExporters": [{"id": "a", "type": "file", "directory": str(tmp_path / "a"),
                                        "maxLinesPerFile": 25}]})
    files = _files(tmp_path / "a")
    assert [len(f.read_bytes().splitlines()) for f in files] == [25, 25, 25, 25, 20]
    assert _ids(files) == ids
    run_shipper(log, {"logExporters": [{"id": "b", "type": "file", "directory": str(tmp_path / "b"),
                                        "maxBytesPerFile": 1}], "batchSize": 10})
    files = _files(tmp_path / "b")
    assert len(files) == 12 and _ids(files) == ids  # a file closes after each batch once over the size


def test_rotation_by_age(filled: tuple[AuditLog, list[str]], tmp_path: Path) -> None:
    """rotateEvery closes a file once it is older than the duration."""
    log, ids = filled
    run_shipper(log, {"logExporters": [{"id": "a", "type": "file", "directory": str(tmp_path),
                                        "rotateEvery": "PT0.000001S"}], "batchSize": 40})
    files = _files(tmp_path)
    assert len(files) == 3 and _ids(files) == ids


def test_gzip_files_are_concatenated_members(filled: tuple[AuditLog, list[str]], tmp_path: Path) -> None:
    """Each batch is one gzip member; standard gzip readers see one continuous NDJSON file."""
    log, ids = filled
    run_shipper(log, {"logExporters": [{"id": "a", "type": "file", "directory": str(tmp_path), "gzip": True}],
                      "batchSize": 30})
    files = _files(tmp_path)
    assert len(files) == 1 and files[0].name.endswith(".ndjson.gz")
    with gzip.open(files[0]) as f:
        assert [orjson.loads(line)["id"] for line in f] == ids


@pytest.mark.parametrize(("fmt", "suffix", "starts"), [("ION", ".ion", b"{"), ("rfc5424", ".log", b"<"),
                                                        ("cef", ".log", b"CEF:0|"), ("ocsf", ".ndjson", b"{")])
def test_formats(filled: tuple[AuditLog, list[str]], tmp_path: Path, fmt: str, suffix: str, starts: bytes) -> None:
    """Kestra's ION (JSON text, valid Ion) and our syslog, CEF and OCSF lines, one event a line."""
    log, _ = filled
    run_shipper(log, {"logExporters": [{"id": "a", "type": "file", "directory": str(tmp_path), "format": fmt}]})
    (f,) = _files(tmp_path)
    assert f.name.endswith(suffix)
    lines = f.read_bytes().splitlines()
    assert len(lines) == 120 and all(line.startswith(starts) for line in lines)


def test_a_cut_part_file_is_truncated_and_kept(tmp_path: Path, ledger: AuditLog) -> None:
    """A .part file left by a killed run keeps its whole lines (or gzip members) and gets a final name."""
    (tmp_path / "auditlog-main-x-000000000000.ndjson.part").write_bytes(b'{"id":"a"}\n{"id":"b"}\n{"id":"c')
    member = gzip.compress(b'{"id":"d"}\n')
    (tmp_path / "auditlog-main-y-000000000010.ndjson.gz.part").write_bytes(member + member[:7])
    run_shipper(ledger, {"logExporters": [{"id": "a", "type": "file", "directory": str(tmp_path)}]})
    run_shipper(ledger, {"logExporters": [{"id": "a", "type": "file", "directory": str(tmp_path), "gzip": True}]})
    assert not list(tmp_path.glob("*.part"))
    plain = tmp_path / "auditlog-main-x-000000000000-recovered.ndjson"
    assert plain.read_bytes() == b'{"id":"a"}\n{"id":"b"}\n'
    packed = tmp_path / "auditlog-main-y-000000000010-recovered.ndjson.gz"
    assert gzip.decompress(packed.read_bytes()) == b'{"id":"d"}\n'


def test_prefix_must_not_be_a_path(ledger: AuditLog) -> None:
    """logFilePrefix is a name; a path there is a ConfigError naming the property."""
    from auditledger.errors import ConfigError

    with pytest.raises(ConfigError, match=r"logExporters\[0\].logFilePrefix"):
        run_shipper(ledger, {"logExporters": [{"id": "a", "type": "file", "logFilePrefix": "../x"}]})
