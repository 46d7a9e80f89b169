"""Purge benchmark: purge rate, ingest latency during a large purge, space reclaimed.

    python bench/purge.py --events 1000000 --db /tmp/purge-bench.db

Fills a SQLite ledger with demo events dated over 90 days, then purges every
event older than 30 days while a second thread keeps recording small batches.
Prints the purge rate, the ingest latencies seen during the purge (the
longest is how long ingest was blocked), that no ingested event was lost,
that verify passes, and the file size before and after (with the bytes each
purged event still costs: its leaf row).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta

from auditledger import Actor, AuditLog
from auditledger.demo import demo_events
from auditledger.retention import Retention, purge_filter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--db", default="/tmp/auditledger-purge-bench.db")
    parser.add_argument("--ingest-batch", type=int, default=10, help="events per concurrent ingest call")
    parser.add_argument("--reuse", action="store_true", help="keep an existing filled database")
    args = parser.parse_args()

    if not args.reuse:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(args.db + suffix):
                os.remove(args.db + suffix)
    log = AuditLog.open(f"sqlite:///{args.db}")
    now = datetime.now(UTC)
    if not args.reuse:
        start = now - timedelta(days=90)
        span = timedelta(days=89)
        t0 = time.perf_counter()
        chunk = 20_000
        events = demo_events(args.events, seed=1)
        for lo in range(0, args.events, chunk):
            n = min(chunk, args.events - lo)
            batch = [next(events) for _ in range(n)]
            log.backfill(batch, [start + span * ((lo + i) / args.events) for i in range(n)])
        print(f"filled {args.events:,} events in {time.perf_counter() - t0:.1f}s")
    retention = Retention(log, reclaim_threshold=1)
    size_before = retention.file_bytes() or 0
    before_head = {h.tenant: h.size for h in log.store.heads()}["main"]

    latencies: list[float] = []
    ingested = 0
    stop = threading.Event()

    def ingest() -> None:
        nonlocal ingested
        actor = Actor.service_account("bench")
        while not stop.is_set():
            t = time.perf_counter()
            log.record_many(
                [{"resource_type": "EXECUTION", "action": "CREATE", "actor": actor, "details": {"n": str(i)}}
                 for i in range(args.ingest_batch)]
            )
            latencies.append(time.perf_counter() - t)
            ingested += args.ingest_batch
            time.sleep(0.002)

    thread = threading.Thread(target=ingest)
    thread.start()
    time.sleep(0.5)
    quiet = list(latencies)
    t0 = time.perf_counter()
    result = retention.purge(purge_filter(now - timedelta(days=30)), actor=Actor.system("bench"), reclaim=False)
    purge_s = time.perf_counter() - t0
    during = latencies[len(quiet):]
    t1 = time.perf_counter()
    retention.reclaim()
    reclaim_s = time.perf_counter() - t1
    during_all = latencies[len(quiet):]
    stop.set()
    thread.join()
    size_after = retention.file_bytes() or 0
    head = {h.tenant: h.size for h in log.store.heads()}["main"]
    report = log.verify()
    print(f"purged {result.count:,} events in {purge_s:.1f}s = {result.count / purge_s:,.0f} events/s "
          f"({result.batches} batches)")
    print(f"reclaim (incremental vacuum) {reclaim_s:.1f}s")
    if during:
        print(f"ingest during purge: {len(during)} calls of {args.ingest_batch}, "
              f"median {statistics.median(during) * 1000:.1f} ms, "
              f"p99 {sorted(during)[int(len(during) * 0.99) - 1] * 1000:.1f} ms, max {max(during) * 1000:.1f} ms")
        print(f"ingest during purge+reclaim: max {max(during_all) * 1000:.1f} ms")
    lost = before_head + ingested + len(result.event_ids) - head
    print(f"ingested {ingested:,} events concurrently, lost {lost}; verify ok: {report.sizes['main']:,} positions, "
          f"{report.purged['main']:,} purged")
    print(f"file {size_before / 1e6:.1f} MB -> {size_after / 1e6:.1f} MB; "
          f"kept per purged event ~{(size_after - (size_before - size_after) * 0) / max(1, head) :.0f} B/position "
          f"(leaf row), freed {(size_before - size_after) / max(1, result.count):.0f} B per purged event")
    log.close()


if __name__ == "__main__":
    main()
