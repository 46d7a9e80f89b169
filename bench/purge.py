"""Purge benchmark: purge rate beside the raw SQLite ceiling, ingest stalls during the purge, space reclaimed.

    python bench/purge.py --events 1000000 --db /tmp/purge-bench.db

Fills ``--db`` once with demo events dated over 90 days (a later run with the
same ``--events`` reuses it: filling 1M takes ~10 minutes) and never purges
that file itself: every measurement runs on a fresh copy next to it.

1. The raw ceiling, on a copy: plain SQL, no ingest, no filter, no holds,
   5,000 positions per transaction with the purge gate open: delete the
   details rows (found by their whole key from the bodies, the one way the
   details table can be searched by position), the events by seq range, and
   mark the leaves purged. Once with the store's pragmas (synchronous=FULL,
   the build's secure_delete), once with purge's (NORMAL, FAST).
2. ``Retention.purge`` of everything older than 30 days on another copy while
   a thread records batches of ``--ingest-batch`` events: purge rate, the
   ingest call latencies during the purge and the incremental vacuum (the
   longest is how long ingest was blocked), events lost (must be 0), verify.
3. Space: file size before and after, bytes freed per purged event, and the
   bytes each purged position still costs (its leaf row and tree nodes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta

from auditledger import Actor, AuditLog
from auditledger.demo import demo_events
from auditledger.model import to_micros
from auditledger.retention import Retention, purge_filter
from auditledger.store.sqlite import _WRITER_CHECKPOINT_PAGES

_SIDE = ("", "-wal", "-shm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--db", default="/tmp/auditledger-purge-bench.db", help="the filled ledger (kept, reused)")
    parser.add_argument("--ingest-batch", type=int, default=10, help="events per concurrent ingest call")
    parser.add_argument("--ceiling-window", type=int, default=5000, help="positions per raw-ceiling transaction")
    parser.add_argument("--skip-ceiling", action="store_true", help="only run the purge")
    parser.add_argument("--refill", action="store_true", help="fill --db again even if it holds --events events")
    parser.add_argument("--reuse", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old docs
    args = parser.parse_args()

    filled_at = fill(args.db, args.events, args.refill)
    cut = filled_at - timedelta(days=30)
    print(f"load average {os.getloadavg()[0]:.2f}; purging every event older than 30 days of 90")
    if not args.skip_ceiling:
        for label, pragmas in (("store pragmas: synchronous=FULL, secure_delete as built", {}),
                               ("purge pragmas: synchronous=NORMAL, secure_delete=FAST",
                                {"synchronous": "NORMAL", "secure_delete": "FAST"})):
            path = copy_of(args.db, ".ceiling")
            events, details, seconds = raw_ceiling(path, to_micros(cut), args.ceiling_window, pragmas)
            print(f"raw ceiling ({label}): {events / seconds:,.0f} events/s "
                  f"({(events + details) / seconds:,.0f} rows/s: {events:,} events + {details:,} details "
                  f"in {seconds:.1f}s)")
            remove(path)
    purge_run(copy_of(args.db, ".run"), cut, args.ingest_batch)


def fill(path: str, events: int, refill: bool) -> datetime:
    """Fill ``path`` unless it already holds ``events`` events; the moment its dates were laid out from."""
    if os.path.exists(path) and not refill:
        conn = sqlite3.connect(path)
        size = conn.execute("SELECT size FROM heads WHERE tenant = 'main'").fetchone()
        last = conn.execute("SELECT last_date FROM heads WHERE tenant = 'main'").fetchone()
        conn.close()
        if size is not None and size[0] == events:
            print(f"reusing {path} ({events:,} events)")
            # The last event sits one day before the moment of filling.
            return datetime.fromtimestamp(last[0] / 1e6, UTC) + timedelta(days=1)
    remove(path)
    now = datetime.now(UTC)
    log = AuditLog.open(f"sqlite:///{path}")
    start = now - timedelta(days=90)
    span = timedelta(days=89)
    t0 = time.perf_counter()
    chunk = 20_000
    source = demo_events(events, seed=1)
    for lo in range(0, events, chunk):
        n = min(chunk, events - lo)
        batch = [next(source) for _ in range(n)]
        log.backfill(batch, [start + span * ((lo + i) / events) for i in range(n)])
    log.close()
    print(f"filled {events:,} events in {time.perf_counter() - t0:.1f}s")
    return now


def raw_ceiling(path: str, cut: int, window: int, pragmas: dict[str, str]) -> tuple[int, int, float]:
    """Delete what the purge deletes with plain SQL; (events, details rows, seconds)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")  # the store's default
    for name, value in pragmas.items():
        conn.execute(f"PRAGMA {name} = {value}")
    hi = conn.execute("SELECT seq FROM events WHERE tenant = 'main' AND date >= ? ORDER BY date LIMIT 1", (cut,))
    end = int(hi.fetchone()[0])
    events = details = 0
    t0 = time.perf_counter()
    for pos in range(0, end, window):
        span = (pos, min(pos + window, end))
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE purge_gate SET open = 1")
        details += conn.execute(
            "DELETE FROM details WHERE (tenant, key, value, seq) IN (SELECT e.tenant, j.key, j.value, e.seq "
            "FROM events e, json_each(CAST(e.body AS TEXT), '$.details') j "
            "WHERE e.tenant = 'main' AND e.seq >= ? AND e.seq < ?)",
            span,
        ).rowcount
        events += conn.execute("DELETE FROM events WHERE tenant = 'main' AND seq >= ? AND seq < ?", span).rowcount
        conn.execute("UPDATE leaves SET purged = 1 WHERE tenant = 'main' AND seq >= ? AND seq < ?", span)
        conn.execute("UPDATE purge_gate SET open = 0")
        conn.execute("COMMIT")
    seconds = time.perf_counter() - t0
    conn.close()
    return events, details, seconds


def purge_run(path: str, cut: datetime, ingest_batch: int) -> None:
    log = AuditLog.open(f"sqlite:///{path}")
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
                 for i in range(ingest_batch)]
            )
            latencies.append(time.perf_counter() - t)
            ingested += ingest_batch
            time.sleep(0.002)

    thread = threading.Thread(target=ingest)
    thread.start()
    time.sleep(0.5)
    quiet = list(latencies)
    t0 = time.perf_counter()
    result = retention.purge(purge_filter(cut), actor=Actor.system("bench"), reclaim=False)
    purge_s = time.perf_counter() - t0
    wal_purge = _wal_frames(path)
    during = latencies[len(quiet):]
    t1 = time.perf_counter()
    retention.reclaim()
    reclaim_s = time.perf_counter() - t1
    wal_vacuum = _wal_frames(path)
    during_reclaim = latencies[len(quiet) + len(during):]
    stop.set()
    thread.join()
    size_after = retention.file_bytes() or 0
    head = {h.tenant: h.size for h in log.store.heads()}["main"]
    report = log.verify()
    print(f"purge: {result.count:,} events in {purge_s:.1f}s = {result.count / purge_s:,.0f} events/s "
          f"({result.batches} batches); incremental vacuum {reclaim_s:.1f}s")
    if quiet:
        print(f"ingest before the purge: {len(quiet)} calls of {ingest_batch}, median "
              f"{statistics.median(quiet) * 1000:.1f} ms")
    for label, calls in (("during purge", during), ("during vacuum", during_reclaim)):
        if calls:
            print(f"ingest {label}: {len(calls)} calls of {ingest_batch}, median "
                  f"{statistics.median(calls) * 1000:.1f} ms, p99 {_p99(calls) * 1000:.1f} ms, "
                  f"max {max(calls) * 1000:.1f} ms, {sum(c > 0.2 for c in calls)} over 200 ms")
    # The -wal file never shrinks here, so its size is the most frames the WAL held at once.
    print(f"WAL high-water mark: {wal_purge:,} frames after the purge, {wal_vacuum:,} after the vacuum "
          f"(the writer's backstop checkpoint runs past {_WRITER_CHECKPOINT_PAGES:,})")
    lost = before_head + ingested + len(result.event_ids) - head
    print(f"ingested {ingested:,} events concurrently, lost {lost}; verify ok: {report.sizes['main']:,} positions, "
          f"{report.purged['main']:,} purged")
    kept = _bytes_of(path, ("leaves", "tree_nodes")) / max(1, head)
    print(f"file {size_before / 1e6:.1f} MB -> {size_after / 1e6:.1f} MB; freed "
          f"{(size_before - size_after) / max(1, result.count):,.0f} B per purged event; each position keeps "
          f"~{kept:.0f} B (its leaf row and share of tree nodes)")
    log.close()
    remove(path)


def _wal_frames(path: str) -> int:
    """Frames the ``-wal`` file has room for (a 32-byte header, then 24-byte frame headers with their pages)."""
    conn = sqlite3.connect(path)
    (page,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    size = os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0
    return max(0, size - 32) // (int(page) + 24)


def _p99(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.99) - 1)]


def _bytes_of(path: str, tables: tuple[str, ...]) -> int:
    """Bytes of ``tables`` (their b-tree pages), from SQLite's dbstat table."""
    conn = sqlite3.connect(path)
    marks = ",".join("?" * len(tables))
    (total,) = conn.execute(f"SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN ({marks})", tables).fetchone()
    conn.close()
    return int(total)


def copy_of(path: str, suffix: str) -> str:
    target = path + suffix
    remove(target)
    for side in _SIDE:
        if os.path.exists(path + side):
            shutil.copyfile(path + side, target + side)
    # Flush the copy now: its writeback would otherwise delay every fsync of the run that follows
    # (ingest commits took 150 ms before the purge had even started, one 0.9 s).
    os.sync()
    return target


def remove(path: str) -> None:
    for side in _SIDE:
        if os.path.exists(path + side):
            os.remove(path + side)


if __name__ == "__main__":
    main()
