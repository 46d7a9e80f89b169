"""Shipper offsets: per (tenant, offsetKey, exporter id) the next seq to ship.

Kept in the ledger's own database (migration 0005) through the store's
portable SQL, and written only after a destination accepted a batch, so a
crash re-sends at most the batch in flight (at-least-once).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from auditledger.store import Store


@dataclass(frozen=True, slots=True)
class Offset:
    tenant: str
    offset_key: str
    exporter: str
    next_seq: int
    shipped: int
    updated_at: int  # microseconds since the epoch


def load(store: Store, tenant: str, offset_key: str, exporter: str) -> int | None:
    rows = store.query(
        "SELECT next_seq FROM ship_offsets WHERE tenant = ? AND offset_key = ? AND exporter = ?",
        [tenant, offset_key, exporter],
    )
    return int(rows[0][0]) if rows else None


def save(store: Store, tenant: str, offset_key: str, exporter: str, next_seq: int, shipped: int) -> None:
    now = time.time_ns() // 1000
    with store.write() as txn:
        txn.execute(
            "INSERT INTO ship_offsets (tenant, offset_key, exporter, next_seq, shipped, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, offset_key, exporter) DO UPDATE SET "
            # Never backwards: of two runs of one shipper at once, the one further ahead keeps its offset.
            "next_seq = CASE WHEN excluded.next_seq > ship_offsets.next_seq THEN excluded.next_seq "
            "ELSE ship_offsets.next_seq END, shipped = ship_offsets.shipped + excluded.shipped, "
            "updated_at = excluded.updated_at",
            [tenant, offset_key, exporter, next_seq, shipped, now],
        )


def all_offsets(store: Store, tenant: str | None = None) -> list[Offset]:
    sql = "SELECT tenant, offset_key, exporter, next_seq, shipped, updated_at FROM ship_offsets"
    params: list[str] = []
    if tenant is not None:
        sql += " WHERE tenant = ?"
        params.append(tenant)
    return [
        Offset(str(t), str(k), str(e), int(n), int(s), int(u))
        for t, k, e, n, s, u in store.query(sql + " ORDER BY 1, 2, 3", params)
    ]


def reset(store: Store, tenant: str, offset_key: str, exporter: str | None = None) -> int:
    """Forget offsets so that the next run starts ``lookbackPeriod`` back (Kestra: clearing re-ships)."""
    sql = "DELETE FROM ship_offsets WHERE tenant = ? AND offset_key = ?"
    params = [tenant, offset_key]
    if exporter is not None:
        sql += " AND exporter = ?"
        params.append(exporter)
    with store.write() as txn:
        return txn.execute(sql, params)
