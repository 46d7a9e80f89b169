"""A shipper process killed mid-batch (SIGKILL) and run again: nothing skipped, offsets right."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import orjson
import pytest

from auditledger import AuditLog
from auditledger.ship import offsets, run_shipper
from tests.ship.conftest import Receiver, Request

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")

WEBHOOK_SCRIPT = """
import sys
from auditledger import AuditLog
from auditledger.ship import run_shipper
log = AuditLog.open(sys.argv[1])
run_shipper(log, {"logExporters": [{"id": "hook", "type": "webhook", "url": sys.argv[2], "timeout": "PT60S"}],
                  "batchSize": 30})
"""

FILE_SCRIPT = """
import os, signal, sys
from auditledger import AuditLog
from auditledger.ship import run_shipper
from auditledger.ship.exporters.file import FileExporter

calls = 0

def dying(real):
    def send(self, batch):
        global calls
        calls += 1
        if calls == 3:  # the third batch: half a line reaches the disk, then the process dies
            self._file.write(b'{"v":1,"id":"half-writ')
            self._file.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, batch)
    return send

# Native lines go through send_lines, other formats through send: the kill must hit either way.
FileExporter.send = dying(FileExporter.send)
FileExporter.send_lines = dying(FileExporter.send_lines)
log = AuditLog.open(sys.argv[1])
run_shipper(log, {"logExporters": [{"id": "f", "type": "file", "directory": sys.argv[2], "gzip": sys.argv[3] == "1"}],
                  "batchSize": 30})
"""


def _run(script: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_killed_while_the_destination_holds_a_batch(
    filled: tuple[AuditLog, list[str]], receiver: Receiver, db_url: str
) -> None:
    """SIGKILL while batch 3 is in flight: offset stays at 60; the re-run re-sends batch 3 and the rest."""
    log, ids = filled
    arrived: list[Request] = []
    release = threading.Event()

    def respond(req: Request) -> tuple[int, bytes]:
        arrived.append(req)
        if len(arrived) == 3:
            release.wait(60)  # hold the third batch until the shipper is killed
        return 200, b""

    receiver.respond = respond
    proc = _run(WEBHOOK_SCRIPT, db_url, receiver.url + "/in")
    try:
        deadline = time.monotonic() + 60
        while len(arrived) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(arrived) == 3, "the third batch never arrived"
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=30)
        release.set()
    assert proc.returncode == -signal.SIGKILL, err.decode()
    assert offsets.load(log.store, "main", "LogShipper-state", "hook") == 60
    receiver.respond = lambda r: (200, b"")
    out = run_shipper(log, {"logExporters": [{"id": "hook", "type": "webhook", "url": receiver.url + "/in"}],
                            "batchSize": 30})
    assert out["errors"] == {} and out["offsets"] == {"hook": 120} and out["shipped"] == {"hook": 60}
    got = [orjson.loads(line)["id"] for r in receiver.requests for line in r.body.splitlines()]
    assert set(got) == set(ids)
    assert len(got) == 150  # batch 3 arrived twice: at-least-once, de-duplicable by id
    assert len(set(got)) == 120


@pytest.mark.parametrize("compressed", [False, True])
def test_killed_mid_write_to_a_file(filled: tuple[AuditLog, list[str]], db_url: str, tmp_path: Path,
                                    compressed: bool) -> None:
    """SIGKILL with half a line on disk: the re-run repairs the file; every event is in a whole line."""
    log, ids = filled
    out_dir = tmp_path / "out"
    proc = _run(FILE_SCRIPT, db_url, str(out_dir), "1" if compressed else "0")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    assert offsets.load(log.store, "main", "LogShipper-state", "f") == 60
    assert list(out_dir.glob("*.part"))
    out = run_shipper(log, {"logExporters": [{"id": "f", "type": "file", "directory": str(out_dir),
                                              "gzip": compressed}], "batchSize": 30})
    assert out["errors"] == {} and out["offsets"] == {"f": 120}
    assert not list(out_dir.glob("*.part"))
    got = []
    for f in sorted(out_dir.iterdir()):
        data = gzip.decompress(f.read_bytes()) if compressed else f.read_bytes()
        got += [orjson.loads(line)["id"] for line in data.splitlines()]  # every line parses
    assert set(got) == set(ids) and len(got) == 120  # batches 1-2 in the repaired file, 3-4 in the new one
