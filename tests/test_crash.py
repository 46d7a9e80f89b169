"""SIGKILL in the middle of record_many loops leaves a ledger that verifies with every acknowledged event."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from auditledger import AuditLog

WRITER = """
import sys
from auditledger import AuditLog
from auditledger.demo import demo_events
log = AuditLog.open(sys.argv[1])
events = list(demo_events(200))
while True:
    for r in log.record_many(events):
        pass
    print(r.id, flush=True)
"""


def test_sigkill_mid_batch_loses_no_acknowledged_event(tmp_path: Path) -> None:
    """Kill writers at several moments; each acknowledged batch is present and the ledger verifies."""
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    acknowledged: list[str] = []
    for delay in (0.4, 0.9, 1.3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, url], stdout=subprocess.PIPE, text=True)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        # Only complete lines were acknowledged; a cut last line was not.
        lines = out.split("\n")
        acknowledged += [line for line in lines[:-1] if line]
    assert acknowledged, "the writer made progress"
    with AuditLog.open(url) as log:
        report = log.verify()
        assert report.sizes["main"] % 200 == 0  # whole batches only
        for event_id in acknowledged:
            assert log.get(event_id).id == event_id
