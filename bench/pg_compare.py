"""PostgreSQL and SQLite side by side: batched ingest, then search p50/p95 per filter class.

The same demo events (spread over the last ``--days`` days, so that PostgreSQL
holds several monthly partitions) go into a fresh SQLite file and a fresh
PostgreSQL schema through ``AuditLog.backfill`` in batches; then each filter
class runs ``--queries`` first-page searches (50 events, newest first) with
varying values on both stores.

    python bench/pg_compare.py [--events 200000] [--batch 1000] [--queries 40]
        [--pg postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import psycopg

from auditledger import AuditLog
from auditledger.demo import FLOW_NAMES, NAMESPACES, USERS, demo_events
from auditledger.model import to_micros

EXECUTION_IDS: list[str] = []  # filled from the data, so that rare lookups hit


def _day(moment: datetime) -> str:
    return f"after:{moment.date()} before:{(moment + timedelta(days=1)).date()}"


CLASSES: dict[str, Callable[[random.Random, datetime], str]] = {
    "newest (no filter)": lambda r, now: "",
    "resource + action": lambda r, now: f"resource:{r.choice(['FLOW', 'EXECUTION', 'SECRET'])} action:UPDATE",
    "actor": lambda r, now: f"actor:{r.choice(USERS)[0]}",
    "detail exact (flowId)": lambda r, now: f"flowId:{r.choice(FLOW_NAMES)}",
    "detail rare (executionId)": lambda r, now: f"executionId:{r.choice(EXECUTION_IDS)}",
    "namespace and children": lambda r, now: f"namespace:{r.choice(NAMESPACES)}",
    "free word": lambda r, now: r.choice(["daily-etl", "company.finance", "grace@acme.io", "sync"]),
    "date range (1 day)": lambda r, now: _day(now - timedelta(days=r.randrange(1, 80))),
    "negation": lambda r, now: f"resource:EXECUTION -action:{r.choice(['CREATE', 'UPDATE'])}",
    "contains (*x*)": lambda r, now: f"flowId:*{r.choice(['etl', 'model', 'report'])}*",
}


def ingest(url: str, events: int, batch: int, days: int) -> tuple[float, AuditLog]:
    log = AuditLog.open(url)
    end = datetime.now(UTC) - timedelta(minutes=1)
    start = end - timedelta(days=days)
    step = (end - start) / max(events, 1)
    ensure = getattr(log.store, "ensure_partitions", None)
    if ensure is not None:
        ensure(to_micros(start), to_micros(end))
    source = demo_events(events)
    took = 0.0
    done = 0
    while done < events:
        chunk = list(itertools.islice(source, batch))
        dates = [start + step * (done + i) for i in range(len(chunk))]
        t0 = time.perf_counter()
        log.backfill(chunk, dates)
        took += time.perf_counter() - t0
        done += len(chunk)
    return events / took, log


def search_times(log: AuditLog, queries: int) -> dict[str, tuple[float, float, int]]:
    now = datetime.now(UTC)
    if not EXECUTION_IDS:
        rows = log.store.query("SELECT value FROM details WHERE key = 'executionId' ORDER BY seq LIMIT 500")
        EXECUTION_IDS.extend(r[0] for r in rows[::5])
    out = {}
    for name, make in CLASSES.items():
        rng = random.Random(name)
        times = []
        hits = 0
        log.search(make(rng, now), limit=50)  # one warm-up per class
        for _ in range(queries):
            text = make(rng, now)
            t0 = time.perf_counter()
            page = log.search(text, limit=50)
            times.append((time.perf_counter() - t0) * 1000)
            hits += len(page.events)
        times.sort()
        p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
        out[name] = (statistics.median(times), p95, hits // queries)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    schema = f"al_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    pg_url = f"{args.pg}{'&' if '?' in args.pg else '?'}options={quote(f'-csearch_path={schema}', safe='')}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results = {}
            for name, url in (("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}"), ("postgres", pg_url)):
                rate, log = ingest(url, args.events, args.batch, args.days)
                if name == "postgres":
                    with psycopg.connect(pg_url, autocommit=True) as conn:
                        conn.execute("ANALYZE")
                results[name] = (rate, search_times(log, args.queries))
                log.close()
    finally:
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    print(f"events: {args.events}, batch: {args.batch}, queries per class: {args.queries}, days: {args.days}")
    print(f"ingest (AuditLog.backfill, one process): sqlite {results['sqlite'][0]:,.0f} events/s, "
          f"postgres {results['postgres'][0]:,.0f} events/s")
    print(f"{'search, first page of 50':<28} {'sqlite p50':>10} {'p95':>8} {'postgres p50':>13} {'p95':>8} {'hits':>5}")
    for cls in CLASSES:
        s50, s95, hits = results["sqlite"][1][cls]
        p50, p95, _ = results["postgres"][1][cls]
        print(f"{cls:<28} {s50:>8.1f}ms {s95:>6.1f}ms {p50:>11.1f}ms {p95:>6.1f}ms {hits:>5}")


if __name__ == "__main__":
    main()
