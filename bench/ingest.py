"""Embedded ingest throughput: ``AuditLog.record_many`` against raw SQLite.

The baseline inserts the same rows, already serialised, with
``sqlite3.executemany`` into the same tables, indexes and pragmas: no
validation, no canonical encoding, no hashing, no id or seq assignment.

    python bench/ingest.py [--events 200000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import tempfile
import time
from pathlib import Path

import orjson

from auditledger import AuditLog
from auditledger.demo import demo_events
from auditledger.store.sqlite import SQLiteStore


def ours(path: Path, events: list[dict[str, object]], batch: int) -> float:
    log = AuditLog.open(f"sqlite:///{path}")
    start = time.perf_counter()
    for i in range(0, len(events), batch):
        log.record_many(events[i : i + batch])
    elapsed = time.perf_counter() - start
    log.close()
    return len(events) / elapsed


def baseline(path: Path, events: list[dict[str, object]], batch: int) -> float:
    SQLiteStore(f"sqlite:///{path}").close()  # same schema, indexes and triggers
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    fake_hash = hashlib.sha256(b"x").digest()
    leaves, rows, details = [], [], []
    for seq, e in enumerate(events):
        actor = e["actor"]
        assert isinstance(actor, dict)
        leaves.append(("main", seq, fake_hash))
        rows.append(
            (
                f"id-{seq}",
                "main",
                seq,
                seq,
                e["resource_type"],
                e["action"],
                actor["type"],
                actor["id"],
                actor.get("name"),
                e.get("outcome", "success"),
                None,
                orjson.dumps(e),
            )
        )
        d = e.get("details") or {}
        assert isinstance(d, dict)
        details.append([("main", k, v, seq) for k, v in d.items()])
    start = time.perf_counter()
    for i in range(0, len(events), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO leaves (tenant, seq, hash) VALUES (?, ?, ?)", leaves[i : i + batch])
        conn.executemany(
            "INSERT INTO events (id, tenant, seq, date, resource_type, action, actor_type, actor_id, actor_name, "
            "outcome, idempotency_key, body) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            rows[i : i + batch],
        )
        conn.executemany(
            "INSERT INTO details (tenant, key, value, seq) VALUES (?, ?, ?, ?)",
            [d for part in details[i : i + batch] for d in part],
        )
        conn.execute("UPDATE heads SET size = ? WHERE tenant = 'main'", (i + batch,))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return len(events) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    events = list(demo_events(args.events))
    with tempfile.TemporaryDirectory() as tmp:
        base = baseline(Path(tmp) / "baseline.db", events, args.batch)
        mine = ours(Path(tmp) / "ledger.db", events, args.batch)
    print(f"events: {args.events}, batch: {args.batch}")
    print(f"raw sqlite3.executemany baseline: {base:,.0f} rows/s")
    print(f"AuditLog.record_many:             {mine:,.0f} events/s")
    print(f"ratio: {mine / base:.2f}")


if __name__ == "__main__":
    main()
