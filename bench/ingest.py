"""Embedded ingest throughput: ``AuditLog.record_many`` against raw SQLite.

The baseline inserts the same rows (ids, dates, canonical bytes and leaf hashes
made before its clock starts) with
``sqlite3.executemany`` through the store's own writer connection and
transactions (same tables, indexes, triggers, pragmas and background
checkpoint): no validation, no canonical encoding, no hashing, no id or seq
assignment, no Merkle tree.

    python bench/ingest.py [--events 200000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path

import orjson

from auditledger import AuditLog, canonical
from auditledger.demo import demo_events
from auditledger.ledger import uuid7
from auditledger.model import event_input
from auditledger.store.sqlite import SQLiteStore


def ours(path: Path, batches: list[bytes], count: int) -> float:
    """``record_many`` per batch, each parsed from its JSON bytes inside the timed loop.

    The input waits as bytes (as in a queue or a request body), not as 200k live dicts:
    those would make every full garbage collection during the run walk the benchmark's
    own input, a cost no application that records events as they happen pays.
    """
    log = AuditLog.open(f"sqlite:///{path}")
    start = time.perf_counter()
    for body in batches:
        log.record_many(orjson.loads(body))
    elapsed = time.perf_counter() - start
    log.close()
    return count / elapsed


def baseline(path: Path, events: list[dict[str, object]], batch: int) -> float:
    # The store's own writer connection and transactions: same schema, indexes, triggers,
    # pragmas and background checkpointing; only what the rows go through differs.
    store = SQLiteStore(f"sqlite:///{path}")
    leaves, rows, details = [], [], []
    first = time.time_ns() // 1000
    for seq, raw in enumerate(events):
        # The very rows the ledger would store (UUIDv7 id, real dates, canonical bytes, leaf
        # hash), all made before the clock starts.
        e = event_input(raw)
        date = first + seq
        id = uuid7(date // 1000, os.urandom(10))
        body = canonical.encode(e, id=id, tenant="main", seq=seq, date=date)
        leaves.append(("main", seq, canonical.leaf_hash(body)))
        rows.append(
            (id, "main", seq, date, e.resource_type, e.action, str(e.actor.type), e.actor.id, e.actor.name,
             str(e.outcome), None, body)
        )
        details.append([("main", k, v, seq) for k, v in e.details.items()])
    start = time.perf_counter()
    for i in range(0, len(events), batch):
        with store.raw_write() as conn:
            conn.executemany("INSERT INTO leaves (tenant, seq, hash) VALUES (?, ?, ?)", leaves[i : i + batch])
            conn.executemany(
                "INSERT INTO events (id, tenant, seq, date, resource_type, action, actor_type, actor_id, "
                "actor_name, outcome, idempotency_key, body) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                rows[i : i + batch],
            )
            conn.executemany(
                "INSERT INTO details (tenant, key, value, seq) VALUES (?, ?, ?, ?)",
                [d for part in details[i : i + batch] for d in part],
            )
            conn.execute(
                "INSERT INTO heads (tenant, size, last_date) VALUES ('main', ?, ?) "
                "ON CONFLICT (tenant) DO UPDATE SET size = excluded.size, last_date = excluded.last_date",
                (i + batch, i + batch),
            )
    elapsed = time.perf_counter() - start
    store.close()
    return len(events) / elapsed


def measure(count: int, batch: int) -> tuple[float, float]:
    """(raw baseline rows/s, ``record_many`` events/s) for ``count`` demo events."""
    events = list(demo_events(count))
    batches = [orjson.dumps(events[i : i + batch]) for i in range(0, len(events), batch)]
    with tempfile.TemporaryDirectory() as tmp:
        base = baseline(Path(tmp) / "baseline.db", events, batch)
        del events
        gc.collect()
        mine = ours(Path(tmp) / "ledger.db", batches, count)
    return base, mine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    base, mine = measure(args.events, args.batch)
    print(f"events: {args.events}, batch: {args.batch}")
    print(f"raw sqlite3.executemany baseline: {base:,.0f} rows/s")
    print(f"AuditLog.record_many:             {mine:,.0f} events/s")
    print(f"ratio: {mine / base:.2f}")


if __name__ == "__main__":
    main()
