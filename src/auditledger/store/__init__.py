"""The storage protocol and how a URL picks an implementation.

A store keeps, per tenant, the leaf hashes of the ledger (never removed), the
events' canonical bytes with the columns search filters on (removed only by
purge), and the details as an indexed ``(key, value)`` table. Dialect SQL
lives in the dialect's module; the ledger speaks only this protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

from auditledger.errors import ConfigError
from auditledger.query import Query

Order = Literal["desc", "asc"]


@dataclass(slots=True)
class Head:
    """A tenant's ledger size and the date of its last entry (microseconds)."""

    tenant: str
    size: int
    last_date: int


class Row(NamedTuple):
    """One event as stored (a tuple: built by the thousand on every scan)."""

    id: str
    tenant: str
    seq: int
    date: int  # microseconds since the epoch, UTC
    resource_type: str
    action: str
    actor_type: str
    actor_id: str
    actor_name: str | None
    outcome: str
    idempotency_key: str | None
    body: bytes
    leaf_hash: bytes
    details: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: the last row's (date, tenant, seq)."""

    date: int
    tenant: str
    seq: int


# leaves.purged: 0 stored, 1 purged, DETAILS_PENDING purged while a large purge has still to sweep
# away its details rows (see retention.py); verify accepts leftover details only there.
DETAILS_PENDING = 2


class LeafRow(NamedTuple):
    """One position of a tenant's ledger as verify reads it; ``row`` is None once purged or lost."""

    seq: int
    leaf_hash: bytes
    purged: bool
    row: Row | None


class NativeLines(NamedTuple):
    """Stored events of one seq window as the shipper's native NDJSON, built by the database.

    Line ``i`` is the event at ``seqs[i]``: its canonical bytes with the leaf
    hash (lowercase hex) appended as a last member ``leaf_hash``, then ``\\n``.
    """

    seqs: list[int]
    data: bytes


class VerifyChunk(NamedTuple):
    """Consecutive positions as verify reads them: plain tuples, no model objects (its hot loop).

    ``positions``: ``(seq, leaf hash, purged, id, date, resource_type, action, actor_type,
    actor_id, actor_name, outcome, body)`` in seq order. The event fields are None where no
    event is stored (purged or lost); an event stored with no leaf (forged) comes with a leaf
    hash of None. ``details``: seq -> (number of details rows, JSON object of their key -> value)
    for every position of the chunk that has details rows, whether or not its event exists.
    """

    positions: list[tuple[Any, ...]]
    details: dict[int, tuple[int, str]]


VERIFY_CHUNK = 20_000  # positions per VerifyChunk


class DatabaseChecks(NamedTuple):
    """What the database found comparing one chunk's events with their hashed bytes.

    ``agree``: every event's indexed columns (but its date) and details rows say what its
    hashed bytes say, and no details rows are left at a position without an event.
    ``dates``: SHA-256 of the hashed dates in seq order, as JSON strings joined by ``,`` (None
    when the chunk holds no event); verify compares it with the same of the indexed dates.
    ``leaves``: SHA-256 of the chunk's leaf hashes joined in seq order, when every position
    of the chunk has a leaf of 32 bytes (else None); verify compares it with the same of the
    bodies' leaf hashes where it did not read the leaves itself.
    """

    agree: bool
    dates: bytes | None
    leaves: bytes | None = None


class CheckedChunk(NamedTuple):
    """Positions ``[start, end)`` for verify's hash pass, and the database's verdict on them.

    ``leaves``: ``(seq, leaf hash, purged)`` and ``events``: ``(seq, date, body)``, each in seq
    order; ``leaves`` is None where an event is stored at every position (the database then
    compares the leaf hashes as one digest: ``DatabaseChecks.leaves``). ``checks()`` waits
    for the database's verdict on the chunk (ask chunk after chunk, in order): None when it
    could not tell (the chunk then takes the exact check).
    """

    start: int
    end: int
    leaves: list[tuple[Any, ...]] | None
    events: list[tuple[Any, ...]]
    checks: Callable[[], DatabaseChecks | None]


@dataclass(frozen=True, slots=True)
class Facets:
    """Counts of the matching events by resource type, action, actor type and time bucket."""

    resource_type: dict[str, int]
    action: dict[str, int]
    actor_type: dict[str, int]
    timeline: list[tuple[int, int]]  # (bucket start in microseconds since the epoch, count), oldest first


def merge_positions(leaves: Sequence[tuple[int, bytes, Any]], rows: Mapping[int, Row]) -> list[LeafRow]:
    """One chunk of ``scan``: leaves joined with their events, in seq order.

    An event row whose seq has no leaf (a forged insert) comes out as a position with an
    empty leaf hash, so that verify names it instead of skipping it.
    """
    seen = {seq for seq, _, _ in leaves}
    merged = [LeafRow(seq, bytes(h), bool(p), rows.get(seq)) for seq, h, p in leaves]
    merged += [LeafRow(seq, b"", False, row) for seq, row in rows.items() if seq not in seen]
    merged.sort(key=lambda lr: lr.seq)
    return merged


class WriteTxn(Protocol):
    """One write transaction; the store serialises them."""

    def head(self, tenant: str) -> Head: ...

    def find_idempotent(self, tenant: str, keys: Sequence[str]) -> dict[str, tuple[str, int]]:
        """Already stored keys of ``keys`` -> (event id, seq)."""
        ...

    def insert(self, rows: Sequence[Row]) -> None: ...

    def set_head(self, head: Head) -> None: ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Portable SQL with ``?`` placeholders inside this transaction; returns the row count."""
        ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Portable SQL with ``?`` placeholders, read inside this transaction."""
        ...


class Store(Protocol):
    url: str

    def write(self) -> AbstractContextManager[WriteTxn]:
        """A write transaction: committed on normal exit, rolled back on error."""
        ...

    def get(self, tenant: str | None, id: str) -> Row | None: ...

    def search(
        self, tenant: str | None, query: Query, *, limit: int, after: Cursor | None = None, order: Order = "desc"
    ) -> list[Row]: ...

    def count(self, tenant: str | None, query: Query, *, cap: int) -> int:
        """Matching rows, counting at most ``cap + 1`` so that callers can say "more than cap"."""
        ...

    def facets(self, tenant: str | None, query: Query, *, bucket_micros: int, counts: bool = True) -> Facets:
        """Counts over every matching event; the timeline in buckets of ``bucket_micros``.

        ``counts=False``: the timeline only (the counts by resource type, action and actor
        type come back empty), one pass over the matches instead of four.
        """
        ...

    def heads(self) -> list[Head]: ...

    def scan(self, tenant: str, start: int = 0, end: int | None = None) -> Iterator[LeafRow]:
        """Every position in ``[start, end)`` in order, purged ones included."""
        ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Portable SQL with ``?`` placeholders (features' own tables: tokens, jobs, offsets ...)."""
        ...

    def native_lines(self, tenant: str, start: int, end: int) -> NativeLines:
        """Stored events with ``start <= seq < end``, in seq order, as native lines (purged ones have none)."""
        ...

    def verify_chunks(self, tenant: str, start: int, end: int) -> Generator[VerifyChunk, None, None]:
        """Positions ``[start, end)`` in chunks of ``VERIFY_CHUNK``, read from one snapshot where the store can."""
        ...

    def checked_chunks(
        self, tenant: str, start: int, end: int
    ) -> AbstractContextManager[Iterator[CheckedChunk]] | None:
        """Positions ``[start, end)`` in chunks, with the checks the database runs itself (from entering
        the context until it is left: nothing starts before); None when this store leaves every check
        to verify's exact pass (``verify_chunks``)."""
        ...

    def close(self) -> None: ...


def open_store(url: str) -> Store:
    """``sqlite:///path``, ``sqlite:///:memory:``/``memory://``, ``postgresql://...``."""
    if url.startswith("memory://") or url == "sqlite://" or url.startswith("sqlite:///"):
        from auditledger.store.sqlite import SQLiteStore

        return SQLiteStore(url)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from auditledger.store.postgres import PostgresStore  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise ConfigError(f"PostgreSQL support is missing: pip install 'auditledger[postgres]' ({exc})") from None
        store: Store = PostgresStore(url)
        return store
    raise ConfigError(f"unsupported store URL {url!r}: use sqlite:///path, memory:// or postgresql://...")
