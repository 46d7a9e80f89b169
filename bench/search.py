"""First-page search latency on a large SQLite ledger, per filter class.

Builds (once, cached under /tmp) a ledger of demo events spread over the last
90 days, then times ``AuditLog.search`` (first page, newest first) for each
filter class and prints p50/p95 in milliseconds. Target: p95 < 50 ms each.

    python bench/search.py [--events 1000000] [--runs 30] [--page 25]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from auditledger import AuditLog
from auditledger.demo import demo_events
from auditledger.store.sqlite import SQLiteStore


def build(path: Path, events: int) -> None:
    tmp = path.with_suffix(".building")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        p.unlink(missing_ok=True)
    # synchronous=OFF only while building a throwaway benchmark file.
    log = AuditLog(SQLiteStore(f"sqlite:///{tmp}", synchronous="OFF"))
    end = datetime.now(UTC) - timedelta(minutes=1)
    start = end - timedelta(days=90)
    step = (end - start) / events
    batch: list[dict[str, object]] = []
    dates: list[datetime] = []
    began = time.perf_counter()
    for i, event in enumerate(demo_events(events, seed=7)):
        batch.append(event)
        dates.append(start + step * i)
        if len(batch) == 5000:
            log.backfill(batch, dates)
            batch, dates = [], []
            if (i + 1) % 100_000 == 0:
                print(f"  built {i + 1:,} events in {time.perf_counter() - began:.0f} s", flush=True)
    if batch:
        log.backfill(batch, dates)
    log.store.query("ANALYZE")
    log.close()
    tmp.rename(path)


def classes(now: datetime) -> dict[str, str]:
    day = timedelta(days=1)
    return {
        "details key:value": "namespace:company.team flowId:daily-etl",
        "resource+action": "resource:FLOW action:UPDATE",
        "actor": "actor:anna@acme.io",
        "date range": f"after:{(now - 30 * day).date()} before:{(now - 20 * day).date()}",
        "combined": "namespace:company resource:FLOW,EXECUTION action:UPDATE actor:anna@acme.io after:-60d",
        "negation": "-action:READ -resource:EXECUTION -actor.type:SYSTEM",
        "free word": "billing",
        "free word, no match": "zzz-nowhere",
        "free word, an actor's name": '"Grace Liu"',
        "rare details value": "executionId:zzz-none",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--page", type=int, default=25)
    parser.add_argument("--db", type=Path, default=None, help="Ledger file (default /tmp/auditledger-bench-N.db).")
    args = parser.parse_args()
    path = args.db or Path(f"/tmp/auditledger-bench-{args.events}.db")
    if not path.exists():
        print(f"building {path} with {args.events:,} demo events (once)...", flush=True)
        build(path, args.events)
    log = AuditLog.open(f"sqlite:///{path}")
    print(f"{log.count(cap=10**9):,} events in {path}")
    print(f"{'filter class':<22} {'p50 ms':>8} {'p95 ms':>8} {'hits':>6}  query")
    for name, text in classes(datetime.now(UTC)).items():
        times = []
        hits = 0
        for i in range(args.runs + 3):
            start = time.perf_counter()
            page = log.search(text, limit=args.page)
            elapsed = (time.perf_counter() - start) * 1000
            if i >= 3:  # warm-up runs left out
                times.append(elapsed)
            hits = len(page.events)
        times.sort()
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        print(f"{name:<22} {statistics.median(times):8.2f} {p95:8.2f} {hits:6d}  {text}")
    log.close()


if __name__ == "__main__":
    main()
