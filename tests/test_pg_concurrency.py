"""Several OS processes appending to one PostgreSQL ledger produce one gap-free order per tenant.

Each process records batches for 3 tenants (single-tenant batches through
``record_many`` and mixed ones through ``append``) and prints the receipts it
got back; only those count as acknowledged. ``AUDITLEDGER_PG_CONCURRENCY_EVENTS``
raises the total for a longer run (default 2,400).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from auditledger import AuditLog
from tests.store.pg import pg_schema

pytestmark = pytest.mark.postgres

TENANTS = ("acme", "globex", "initech")
PROCESSES = 4
BATCH = 40

WORKER = """
import json, sys
from auditledger import AuditLog
from auditledger.demo import demo_events
from auditledger.model import event_input

url, proc, batches, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
tenants = ("acme", "globex", "initech")
events = list(demo_events(size, seed=proc))
log = AuditLog.open(url)
for b in range(batches):
    if b % 4 == 3:  # a mixed batch, tenants in an order that differs between processes
        order = tenants[proc % 3:] + tenants[:proc % 3]
        items = [(order[i % 3], event_input(e)) for i, e in enumerate(events)]
        receipts = log.append(items)
    else:
        receipts = log.record_many(events, tenant=tenants[(proc + b) % 3])
    sys.stdout.write("".join(json.dumps([r.id, r.tenant, r.seq]) + "\\n" for r in receipts))
    sys.stdout.flush()
log.close()
"""


def run_writers(url: str, total: int) -> list[tuple[str, str, int]]:
    batches = max(1, total // (PROCESSES * BATCH))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, str(p), str(batches), str(BATCH)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(PROCESSES)
    ]
    acknowledged: list[tuple[str, str, int]] = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        acknowledged += [tuple(json.loads(line)) for line in out.splitlines()]  # type: ignore[misc]
    return acknowledged


@pytest.mark.slow
def test_four_processes_produce_one_gap_free_verified_order() -> None:
    """4 processes over 3 tenants: seqs unique and gap-free, every acknowledged event present, verify ok."""
    total = int(os.environ.get("AUDITLEDGER_PG_CONCURRENCY_EVENTS", "2400"))
    with pg_schema() as url:
        AuditLog.open(url).close()  # migrate once, as `auditledger db upgrade` would
        acknowledged = run_writers(url, total)
        log = AuditLog.open(url)
        try:
            assert len(acknowledged) == (total // (PROCESSES * BATCH)) * PROCESSES * BATCH
            assert len({a[0] for a in acknowledged}) == len(acknowledged)  # ids unique
            assert len({(t, s) for _, t, s in acknowledged}) == len(acknowledged)  # positions unique
            per_tenant = Counter(t for _, t, _ in acknowledged)
            report = log.verify()
            assert report.sizes == dict(per_tenant)
            for tenant in TENANTS:
                seqs = sorted(s for _, t, s in acknowledged if t == tenant)
                assert seqs == list(range(len(seqs)))
            for id, tenant, seq in acknowledged[:: max(1, len(acknowledged) // 200)]:
                row = log.store.get(tenant, id)
                assert row is not None and row.seq == seq
            assert log.count(tenant=None, cap=10**9) == len(acknowledged)
        finally:
            log.close()
