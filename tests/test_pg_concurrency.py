"""Several OS processes appending to one PostgreSQL ledger produce one gap-free order per tenant.

Each process records batches for 3 tenants (single-tenant batches through
``record_many`` and mixed ones through ``append``) and prints the receipts it
got back; only those count as acknowledged. ``AUDITLEDGER_PG_CONCURRENCY_EVENTS``
raises the total for a longer run (default 2,400).

The HTTP variant runs 4 ``auditledger serve`` processes on one database with
16 concurrent clients (``AUDITLEDGER_PG_HTTP_EVENTS``, default 3,200; the
issue's full run is 200000), then sends a tenth of that again (at least 3,200)
killing one server mid-ingest. Its time limit grows with the count.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import pytest

from auditledger import AuditLog
from auditledger.demo import demo_events
from tests.store.pg import pg_schema

pytestmark = pytest.mark.postgres

HTTP_EVENTS = int(os.environ.get("AUDITLEDGER_PG_HTTP_EVENTS", "3200"))
TENANTS = ("acme", "globex", "initech")
PROCESSES = 4
BATCH = 40
CLIENTS = 16
Acks = list[tuple[str, str, int]]  # (id, tenant, seq) of every event a server acknowledged

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


# ---------------------------------------------------------------- over HTTP: `auditledger serve` x 4


SERVE = "from auditledger.cli import main; main()"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_servers(url: str, count: int) -> list[tuple[subprocess.Popen[bytes], str]]:
    servers = []
    for _ in range(count):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, "serve", "--db", url, "--port", str(port), "--insecure-dev"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "AUDITLEDGER_LOG_LEVEL": "warning"},
        )
        servers.append((proc, f"http://127.0.0.1:{port}"))
    deadline = time.monotonic() + 60
    for proc, base in servers:
        while True:
            assert proc.poll() is None, "a server exited on start"
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "servers did not start within 60 s"
            time.sleep(0.2)
    return servers


def stop(servers: list[tuple[subprocess.Popen[bytes], str]]) -> None:
    for proc, _ in servers:
        if proc.poll() is None:
            proc.terminate()
    for proc, _ in servers:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def client(bases: list[str], number: int, posts: int, batch: int, acknowledged: Acks, lock: threading.Lock) -> None:
    """Post batches round-robin; a server that refuses or vanishes is left for the next one (not acknowledged)."""
    events = list(demo_events(batch, seed=number))
    with httpx.Client(timeout=60) as http:
        for i in range(posts):
            tenant = TENANTS[(number + i) % 3]
            for attempt in range(len(bases)):
                base = bases[(number + i + attempt) % len(bases)]
                try:
                    answer = http.post(f"{base}/api/v1/{tenant}/auditlogs", json=events)
                except httpx.TransportError:
                    continue
                if answer.status_code == 201:
                    with lock:
                        acknowledged += [(r["id"], tenant, r["seq"]) for r in answer.json()["receipts"]]
                    break


def check_ledger(url: str, acknowledged: list[tuple[str, str, int]]) -> None:
    """Every acknowledged event present exactly once at its position; every tenant gap-free; verify passes."""
    log = AuditLog.open(url)
    try:
        assert len({a[0] for a in acknowledged}) == len(acknowledged)
        assert len({(t, s) for _, t, s in acknowledged}) == len(acknowledged)
        log.verify()  # gap-free seqs per tenant, every leaf hash, the heads
        stored = Counter((str(i), str(t), int(s)) for i, t, s in log.store.query("SELECT id, tenant, seq FROM events"))
        assert all(stored[a] == 1 for a in acknowledged)
    finally:
        log.close()


def load(bases: list[str], posts: int, acknowledged: list[tuple[str, str, int]]) -> list[threading.Thread]:
    lock = threading.Lock()
    threads = [
        threading.Thread(target=client, args=(bases, n, posts, BATCH, acknowledged, lock)) for n in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    return threads


@pytest.mark.slow
@pytest.mark.timeout(300 + HTTP_EVENTS // 100)  # 200k events: ~4 min of ingest and a verify on a busy 2-core box
def test_four_servers_one_gap_free_ledger_even_when_one_is_killed() -> None:
    """4 `serve` on one PostgreSQL, 16 clients, 3 tenants; then SIGKILL one mid-ingest: nothing acknowledged lost."""
    posts = max(1, HTTP_EVENTS // (CLIENTS * BATCH))
    kill_posts = max(1, max(3200, HTTP_EVENTS // 10) // (CLIENTS * BATCH))
    with pg_schema() as url:
        AuditLog.open(url).close()
        servers = start_servers(url, PROCESSES)
        bases = [base for _, base in servers]
        try:
            acknowledged: list[tuple[str, str, int]] = []
            for t in load(bases, posts, acknowledged):
                t.join(timeout=1800)
            assert len(acknowledged) == CLIENTS * posts * BATCH
            check_ledger(url, acknowledged)

            during: list[tuple[str, str, int]] = []
            threads = load(bases, kill_posts, during)
            while len(during) < CLIENTS * kill_posts * BATCH // 4 and any(t.is_alive() for t in threads):
                time.sleep(0.02)
            servers[0][0].send_signal(signal.SIGKILL)
            for t in threads:
                t.join(timeout=1800)
            assert servers[0][0].wait(timeout=10) == -signal.SIGKILL
            # The others kept serving: every batch found a live server, and they still answer.
            assert len(during) == CLIENTS * kill_posts * BATCH
            answer = httpx.post(f"{bases[1]}/api/v1/acme/auditlogs", json=list(demo_events(1)), timeout=30)
            assert answer.status_code == 201
        finally:
            stop(servers)
        check_ledger(url, acknowledged + during)
