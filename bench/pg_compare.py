"""PostgreSQL and SQLite side by side: batched ingest, then search p50/p95 per filter class.

Ingest: the same demo events go into a fresh SQLite file and a fresh PostgreSQL
schema through ``AuditLog.backfill`` in batches of ``--batch`` (one process,
one durable transaction per batch: ``synchronous_commit`` stays on). Beside
them, the PostgreSQL ceiling: the same rows, already serialised, binary-COPYed
into the same tables, indexes and partitions in the same batches, with no
validation, no hashing and no Merkle tree.

Search: each filter class runs ``--queries`` first-page searches (50 events,
newest first, tenant ``main``) with varying values on a ledger of ``--events``
demo events spread over the last ``--days`` days. That ledger is loaded by the
bulk path (batches of 10,000; ``synchronous=OFF`` / ``synchronous_commit=off``
while loading a throwaway benchmark database). With ``--keep`` it is kept
(``/tmp/auditledger-pgcompare-N.db`` and schema ``al_pgcompare_N``) and reused
by the next run with the same ``--events``.

    python bench/pg_compare.py [--events 1000000] [--ingest-events 100000] [--batch 1000]
        [--queries 40] [--keep] [--stores postgres,sqlite] [--ingest-processes 2]
        [--pg postgresql://postgres@127.0.0.1:5432/test] [--sqlite-db PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import multiprocessing
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import psycopg

from auditledger import AuditLog
from auditledger.demo import FLOW_NAMES, NAMESPACES, USERS, demo_events
from auditledger.ledger import uuid7_hex
from auditledger.model import to_micros
from auditledger.store.postgres import PostgresStore
from auditledger.store.sqlite import SQLiteStore

EXECUTION_IDS: list[str] = []  # filled from the data, so that rare lookups hit
LOAD_BATCH = 10_000
# Ingest run -> CPU seconds per event of (this Python process, the PostgreSQL backends serving it).
CPU: dict[str, tuple[float, float]] = {}


def backend_cpu(base: str, application_name: str) -> float:
    """CPU seconds so far of the PostgreSQL backends whose connections carry ``application_name``.

    Read from /proc, so only for a server on this machine (nan otherwise). The WAL writer and
    checkpointer are not counted: they are the same for every variant.
    """
    with psycopg.connect(base, autocommit=True) as conn:
        found = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,))
        pids = [p for (p,) in found]
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return total if pids else float("nan")


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
    "free word (rare)": lambda r, now: r.choice(["zzz-none", "nightly-zz", "ghost@acme.io"]),
    "date range (1 day)": lambda r, now: _day(now - timedelta(days=r.randrange(1, 80))),
    "negation": lambda r, now: f"resource:EXECUTION -action:{r.choice(['CREATE', 'UPDATE'])}",
    "contains (*x*)": lambda r, now: f"flowId:*{r.choice(['etl', 'model', 'report'])}*",
}


def _span(days: int) -> tuple[datetime, datetime]:
    end = datetime.now(UTC) - timedelta(minutes=1)
    return end - timedelta(days=days), end


def schema_url(base: str, schema: str, options: str = "") -> str:
    """``base`` with ``schema`` as the search path (and more libpq ``options``)."""
    return f"{base}{'&' if '?' in base else '?'}options={quote(f'-csearch_path={schema} {options}'.strip(), safe='')}"


@contextmanager
def pg_schema(base: str, name: str | None = None, *, keep: bool = False) -> Iterator[tuple[str, str, bool]]:
    """Schema ``name`` (new if missing), its store URL and whether it existed; dropped unless ``keep``."""
    schema = name or f"al_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        existed = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is not None
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    try:
        yield schema, schema_url(base, schema), existed
    finally:
        if not keep:
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


def backfill(log: AuditLog, events: int, batch: int, days: int, server: Callable[[], float] | None = None) -> float:
    """Demo events spread over ``days`` through ``AuditLog.backfill``; the rate in events/s.

    With ``server`` (the store's backends' CPU seconds so far), the CPU per event of both
    sides goes to ``CPU`` under the store's dialect.
    """
    start, end = _span(days)
    step = (end - start) / max(events, 1)
    ensure = getattr(log.store, "ensure_partitions", None)
    if ensure is not None:
        ensure(to_micros(start), to_micros(end))
    source = demo_events(events)
    took = client = 0.0
    done = 0
    server_before = server() if server is not None else 0.0
    while done < events:
        chunk = list(itertools.islice(source, batch))
        dates = [start + step * (done + i) for i in range(len(chunk))]
        t0, c0 = time.perf_counter(), time.process_time()
        log.backfill(chunk, dates)
        took += time.perf_counter() - t0
        client += time.process_time() - c0
        done += len(chunk)
        if batch >= LOAD_BATCH and done % 100_000 == 0:
            print(f"  loaded {done:,} events ({done / took:,.0f}/s)", flush=True)
    if server is not None:
        CPU["postgres"] = (client / events, (server() - server_before) / events)
    return events / took


def _ingest_worker(url: str, tenant: str, events: int, batch: int, days: int, go: Any, out: Any) -> None:
    """One writer process of ``parallel_ingest``: its batches are made before ``go``, so only appends are timed."""
    log = AuditLog.open(url)
    start, end = _span(days)
    step = (end - start) / max(events, 1)
    source = list(demo_events(events))
    batches = [(source[i : i + batch], [start + step * j for j in range(i, min(i + batch, events))])
               for i in range(0, events, batch)]
    go.wait()
    t0 = time.time()
    for chunk, dates in batches:
        log.backfill(chunk, dates, tenant=tenant)
    out.put((t0, time.time()))
    log.close()


def parallel_ingest(url: str, processes: int, events: int, batch: int, days: int) -> float:
    """``processes`` writers on one store, one tenant each, started together; events/s of all of them.

    The deployment of issue 7: several server processes on one PostgreSQL. Each tenant's
    appends take turns on its head row; different tenants append in parallel.
    """
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    each = events // processes
    start, end = _span(days)
    store = PostgresStore(url)  # migrations and partitions once, before the writers start
    store.ensure_partitions(to_micros(start), to_micros(end))
    store.close()
    workers = [
        ctx.Process(target=_ingest_worker, args=(url, f"t{i}", each, batch, days, go, out)) for i in range(processes)
    ]
    for w in workers:
        w.start()
    time.sleep(2 + each / 20_000)  # every worker has made its batches (generous)
    go.set()
    spans = [out.get(timeout=3600) for _ in workers]
    for w in workers:
        w.join()
    return each * processes / (max(e for _, e in spans) - min(s for s, _ in spans))


def raw_rows(events: int, days: int) -> list[tuple[object, ...]]:
    """The demo events as events rows (body: their JSON; one fixed leaf hash), details last.

    Ids are time-ordered like the ledger's (UUIDv7 of the row's date): random UUIDv4 ids land
    all over the id index and made this "ceiling" slower than the product (7.6k vs 10.2k).
    """
    start, end = _span(days)
    first, step = to_micros(start), (to_micros(end) - to_micros(start)) // max(events, 1)
    leaf = hashlib.sha256(b"leaf").digest()
    randomness = os.urandom(10 * max(events, 1)).hex()
    rows: list[tuple[object, ...]] = []
    for seq, e in enumerate(demo_events(events)):
        actor = e["actor"]
        assert isinstance(actor, dict)
        date = first + seq * step
        rows.append(
            (uuid7_hex(date // 1000, randomness[20 * seq : 20 * seq + 20]), "main", seq, date, e["resource_type"],
             e["action"], actor["type"],
             actor["id"], actor.get("name"), e.get("outcome", "success"), None, orjson.dumps(e), leaf,
             e.get("details") or {})
        )
    return rows


def raw_copy(url: str, rows: list[tuple[object, ...]], batch: int, days: int) -> float:
    """The PostgreSQL ceiling: binary COPY of ready rows into our tables, one transaction per batch."""
    start, end = _span(days)
    store = PostgresStore(url)  # same schema, indexes, triggers and partitions
    store.ensure_partitions(to_micros(start), to_micros(end))
    store.close()
    columns = (
        "id, tenant, seq, date, resource_type, action, actor_type, actor_id, actor_name, outcome, idempotency_key, body"
    )
    text, int8, blob = "text", "int8", "bytea"
    with psycopg.connect(url, autocommit=True) as conn:
        app = f"al_pgcompare_raw_{uuid.uuid4().hex[:8]}"
        conn.execute("SELECT set_config('application_name', %s, false)", (app,))
        server_before = backend_cpu(url, app)
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, len(rows), batch):
            chunk = rows[i : i + batch]
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy("COPY leaves (tenant, seq, hash) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types([text, int8, blob])
                    for r in chunk:
                        copy.write_row((r[1], r[2], r[12]))
                with cur.copy(f"COPY events ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types([text, text, int8, int8, text, text, text, text, text, text, text, blob])
                    for r in chunk:
                        copy.write_row(r[:12])
                with cur.copy("COPY details (tenant, key, value, seq) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types([text, text, text, int8])
                    for r in chunk:
                        details = r[13]
                        assert isinstance(details, dict)
                        for k, v in details.items():
                            copy.write_row((r[1], k, v, r[2]))
        took, client = time.perf_counter() - t0, time.process_time() - c0
        CPU["postgres raw COPY"] = (client / len(rows), (backend_cpu(url, app) - server_before) / len(rows))
        return len(rows) / took


def measure_ingest(args: argparse.Namespace) -> dict[str, float]:
    rates: dict[str, float] = {}
    if "sqlite" in args.stores:
        with tempfile.TemporaryDirectory() as tmp:
            log = AuditLog.open(f"sqlite:///{Path(tmp) / 'ingest.db'}")
            rates["sqlite"] = backfill(log, args.ingest_events, args.batch, args.days)
            log.close()
    if "postgres" in args.stores:
        with pg_schema(args.pg) as (schema, url, _):
            app = f"al_pgcompare_{schema}"
            log = AuditLog.open(f"{url}&application_name={app}")
            rates["postgres"] = backfill(
                log, args.ingest_events, args.batch, args.days, server=lambda: backend_cpu(args.pg, app)
            )
            log.close()
        with pg_schema(args.pg) as (_, url, _):
            rates["postgres raw COPY"] = raw_copy(url, raw_rows(args.ingest_events, args.days), args.batch, args.days)
        if args.ingest_processes > 1:
            with pg_schema(args.pg) as (_, url, _):
                rates[f"postgres, {args.ingest_processes} processes"] = parallel_ingest(
                    url, args.ingest_processes, args.ingest_events, args.batch, args.days
                )
    return rates


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


def _loaded(log: AuditLog, events: int) -> bool:
    return sum(h.size for h in log.store.heads()) == events


def search_sqlite(args: argparse.Namespace) -> dict[str, tuple[float, float, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        kept = Path(args.sqlite_db or f"/tmp/auditledger-pgcompare-{args.events}.db")
        path = kept if args.keep else Path(tmp) / "search.db"
        log = AuditLog(SQLiteStore(f"sqlite:///{path}", synchronous="OFF"))
        if not _loaded(log, args.events):
            log.close()
            for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                p.unlink(missing_ok=True)
            log = AuditLog(SQLiteStore(f"sqlite:///{path}", synchronous="OFF"))
            print(f"loading {args.events:,} events into SQLite {path}", flush=True)
            backfill(log, args.events, LOAD_BATCH, args.days)
            log.store.query("ANALYZE")
        try:
            return search_times(log, args.queries)
        finally:
            log.close()


def search_postgres(args: argparse.Namespace) -> dict[str, tuple[float, float, int]]:
    name = f"al_pgcompare_{args.events}" if args.keep else None
    with pg_schema(args.pg, name, keep=args.keep) as (schema, url, existed):
        log = AuditLog.open(url)
        try:
            if existed and not _loaded(log, args.events):
                raise SystemExit(f"schema {name} holds a partial load: DROP SCHEMA {name} CASCADE, then run again")
            if not existed:
                print(f"loading {args.events:,} events into PostgreSQL schema {name or '(temporary)'}", flush=True)
                bulk = AuditLog.open(schema_url(args.pg, schema, "-csynchronous_commit=off"))
                backfill(bulk, args.events, LOAD_BATCH, args.days)
                bulk.close()
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("VACUUM ANALYZE")
            return search_times(log, args.queries)
        finally:
            log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="events of the searched ledger")
    parser.add_argument("--ingest-events", type=int, default=None, help="events of the ingest runs (<= 100,000)")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--ingest-processes", type=int, default=1, help="also ingest with this many processes")
    parser.add_argument("--keep", action="store_true", help="keep the searched ledgers and reuse them")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--sqlite-db", default=None, help="kept SQLite ledger (/tmp/auditledger-pgcompare-N.db)")
    args = parser.parse_args()
    args.stores = [s.strip() for s in args.stores.split(",")]
    if args.ingest_events is None:
        args.ingest_events = min(args.events, 100_000)
    load_before = os.getloadavg()[0]
    rates = measure_ingest(args) if args.ingest_events > 0 else {}
    results = {}
    if "sqlite" in args.stores:
        results["sqlite"] = search_sqlite(args)
    if "postgres" in args.stores:
        results["postgres"] = search_postgres(args)
    print(f"search events: {args.events:,}, ingest events: {args.ingest_events:,}, batch: {args.batch}, "
          f"queries per class: {args.queries}, days: {args.days}; "
          f"load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    for name, rate in rates.items():
        print(f"ingest {name:<22} {rate:>8,.0f} events/s")
    if "postgres raw COPY" in rates and "postgres" in rates:
        print(f"postgres ingest / raw COPY ceiling: {rates['postgres'] / rates['postgres raw COPY']:.2f}")
    for name, (client, server) in CPU.items():
        # Whatever the code, events/s cannot pass cores / (CPU per event) on one machine.
        cores = os.cpu_count() or 1
        print(f"CPU per event, {name:<22} client {client * 1e6:5.1f} us, PostgreSQL backend {server * 1e6:5.1f} us; "
              f"bound on {cores} cores: {cores / (client + server):,.0f} events/s")
    empty = {cls: (float("nan"), float("nan"), 0) for cls in CLASSES}
    sqlite, postgres = results.get("sqlite", empty), results.get("postgres", empty)
    print(f"{'search, first page of 50':<28} {'sqlite p50':>10} {'p95':>8} {'postgres p50':>13} {'p95':>8} {'hits':>5}")
    for cls in CLASSES:
        s50, s95, s_hits = sqlite[cls]
        p50, p95, p_hits = postgres[cls]
        print(f"{cls:<28} {s50:>8.1f}ms {s95:>6.1f}ms {p50:>11.1f}ms {p95:>6.1f}ms {max(s_hits, p_hits):>5}")


if __name__ == "__main__":
    main()
