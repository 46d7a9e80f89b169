"""Copy a ledger from one store to another (``auditledger migrate``), verifying as it goes.

Events keep their id, seq, date and canonical bytes, so every leaf hash, tree
root, checkpoint and proof made before the move still holds after it. Each
source position is checked before it is written (its bytes hash to its leaf;
the columns the target indexes are taken from the hashed event itself, never
from the source's columns), and each tenant is verified on the target once
copied. An interrupted copy resumes: positions the target already holds are
compared hash by hash and skipped.

The Merkle tree (``tree_heads``, ``tree_nodes``) is grown on the target in the
same transaction as each chunk, as ``ledger.append`` does, and its root is
compared with the source's. Features' own tables (checkpoints, tokens, jobs,
shipper offsets ...) are copied row by row when both stores have them: every
table that is not the ledger's own, with the columns both sides share,
``ON CONFLICT DO NOTHING`` (rows already on the target are kept).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from auditledger import canonical, tree
from auditledger.errors import ConflictError, VerificationError
from auditledger.model import to_micros
from auditledger.store import Head, LeafRow, Row, Store

CORE_TABLES = frozenset({"leaves", "heads", "events", "details", "purge_gate", "schema_migrations"})
DERIVED_TABLES = frozenset({"tree_heads", "tree_nodes", "actors"})  # rebuilt on the target as events arrive
Progress = Callable[[str, int, int], None]  # (tenant or table, done, total)


@dataclass(slots=True)
class CopyReport:
    """What was copied: positions per tenant (purged ones among them) and rows per feature table."""

    sizes: dict[str, int] = field(default_factory=dict)
    purged: dict[str, int] = field(default_factory=dict)
    tables: dict[str, int] = field(default_factory=dict)
    skipped_tables: list[str] = field(default_factory=list)


def copy_ledger(source: Store, target: Store, *, chunk: int = 2000, progress: Progress | None = None) -> CopyReport:
    """Copy every tenant, then the features' tables; raise at the first position that does not verify."""
    from auditledger.ledger import AuditLog

    report = CopyReport()
    _prepare_partitions(source, target)
    target_heads = {h.tenant: h for h in target.heads()}
    for head in source.heads():
        done = target_heads.get(head.tenant, Head(head.tenant, 0, 0)).size
        if done > head.size:
            raise ConflictError(
                f"tenant {head.tenant!r}: the target holds {done} positions, the source only {head.size}"
            )
        _check_prefix(source, target, head.tenant, done, chunk)
        pos = done
        while pos < head.size:
            positions = list(source.scan(head.tenant, pos, min(pos + chunk, head.size)))
            _write_chunk(target, head, pos, positions)
            pos += len(positions)
            if progress:
                progress(head.tenant, pos, head.size)
        with target.write() as txn:
            txn.set_head(Head(head.tenant, head.size, head.last_date))
        verified = AuditLog(target).verify(tenant=head.tenant)
        _compare_roots(source, target, head)
        report.sizes[head.tenant] = verified.sizes[head.tenant]
        report.purged[head.tenant] = verified.purged[head.tenant]
    _copy_tables(source, target, report, progress)
    return report


def _checked_rows(tenant: str, start: int, positions: list[LeafRow]) -> Iterator[tuple[LeafRow, Row | None]]:
    for offset, pos in enumerate(positions):
        expected = start + offset
        if pos.seq != expected:
            raise VerificationError(f"source tenant {tenant!r}: position {expected} is missing", expected)
        if not pos.leaf_hash:
            raise VerificationError(f"source tenant {tenant!r}: an event is stored with no leaf", pos.seq)
        if pos.row is None:
            if not pos.purged:
                raise VerificationError(f"source tenant {tenant!r}: event removed without a purge", pos.seq)
            yield pos, None
            continue
        row = pos.row
        if canonical.leaf_hash(row.body) != pos.leaf_hash:
            raise VerificationError(f"source tenant {tenant!r}: stored event does not match its leaf hash", pos.seq)
        event = canonical.decode(row.body, pos.leaf_hash)
        if (event.tenant, event.seq, event.id) != (tenant, pos.seq, row.id):
            raise VerificationError(f"source tenant {tenant!r}: the hashed event names another position", pos.seq)
        yield pos, Row(
            event.id, tenant, event.seq, to_micros(event.date), event.resource_type, event.action,
            str(event.actor.type), event.actor.id, event.actor.name, str(event.outcome), row.idempotency_key,
            row.body, pos.leaf_hash, dict(event.details),
        )


def _write_chunk(target: Store, head: Head, start: int, positions: list[LeafRow]) -> None:
    checked = list(_checked_rows(head.tenant, start, positions))
    rows = [row for _, row in checked if row is not None]
    purged = [pos for pos, row in checked if row is None]
    with target.write() as txn:
        now = txn.head(head.tenant)
        if now.size != start:
            raise ConflictError(f"tenant {head.tenant!r} changed on the target during the copy (size {now.size})")
        txn.insert(rows)
        tree.extend(txn, head.tenant, start, [pos.leaf_hash for pos, _ in checked])
        for pos in purged:
            txn.execute(
                "INSERT INTO leaves (tenant, seq, hash, purged) VALUES (?, ?, ?, 1)",
                [head.tenant, pos.seq, pos.leaf_hash],
            )
        last = max((r.date for r in rows), default=now.last_date)
        txn.set_head(Head(head.tenant, start + len(positions), max(last, now.last_date)))


def _compare_roots(source: Store, target: Store, head: Head) -> None:
    """The target's tree root over the copied leaves equals the source's (when the source's tree is current)."""
    theirs = tree.Tree(source.query, head.tenant)  # read only: the source is never written
    mine = tree.Tree(target.query, head.tenant)
    if mine.size != head.size:
        raise VerificationError(f"tenant {head.tenant!r}: the target's tree has {mine.size} leaves, not {head.size}")
    if theirs.size == head.size and theirs.root() != mine.root():
        raise VerificationError(f"tenant {head.tenant!r}: the target's tree root differs from the source's")


def _check_prefix(source: Store, target: Store, tenant: str, size: int, chunk: int) -> None:
    """The target's first ``size`` leaves must be the source's: a resumed copy, not another ledger."""
    pos = 0
    while pos < size:
        end = min(pos + chunk, size)
        mine = [(p.seq, p.leaf_hash) for p in target.scan(tenant, pos, end)]
        theirs = [(p.seq, p.leaf_hash) for p in source.scan(tenant, pos, end)]
        if mine != theirs:
            raise ConflictError(f"tenant {tenant!r}: the target already holds a different ledger")
        pos = end


def _prepare_partitions(source: Store, target: Store) -> None:
    """On PostgreSQL, monthly partitions for the source's date range, so history is pruned like new data."""
    ensure = getattr(target, "ensure_partitions", None)
    if ensure is None:
        return
    lo, hi = source.query("SELECT min(date), max(date) FROM events")[0]
    if lo is not None:
        ensure(int(lo), int(hi) + 1)


# ---------------------------------------------------------------- features' tables


def tables(store: Store) -> list[str]:
    """The store's own tables (events' partitions left out)."""
    if type(store).__name__ == "SQLiteStore":
        rows = store.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    else:
        rows = store.query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
        )
    return sorted(str(r[0]) for r in rows)


def columns(store: Store, table: str) -> list[str]:
    if type(store).__name__ == "SQLiteStore":
        return [str(r[1]) for r in store.query(f'PRAGMA table_info("{table}")')]
    rows = store.query(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = ? ORDER BY ordinal_position",
        [table],
    )
    return [str(r[0]) for r in rows]


def _copy_tables(source: Store, target: Store, report: CopyReport, progress: Progress | None) -> None:
    theirs = set(tables(target))
    for table in tables(source):
        if table in CORE_TABLES or table in DERIVED_TABLES:
            continue
        if table not in theirs:
            report.skipped_tables.append(table)
            continue
        wanted = set(columns(target, table))
        shared = [c for c in columns(source, table) if c in wanted]
        if not shared:
            report.skipped_tables.append(table)
            continue
        names = ", ".join(f'"{c}"' for c in shared)
        rows: list[tuple[Any, ...]] = source.query(f'SELECT {names} FROM "{table}"')
        insert = f'INSERT INTO "{table}" ({names}) VALUES ({", ".join("?" * len(shared))}) ON CONFLICT DO NOTHING'
        copied = 0
        for i in range(0, len(rows), 1000):
            with target.write() as txn:
                for row in rows[i : i + 1000]:
                    copied += txn.execute(insert, list(row))
            if progress:
                progress(table, min(i + 1000, len(rows)), len(rows))
        report.tables[table] = copied
