"""``AuditLog``: the one object applications hold.

Recording validates every event first (a refused batch stores nothing), then
places the batch in one write transaction: per tenant the next ``seq``, a
strictly increasing UTC ``date``, a UUIDv7 ``id``, the canonical bytes and
their leaf hash. ``verify`` walks the stored ledger and names the first
position that does not check out.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from auditledger import canonical
from auditledger.errors import ConfigError, StoreError, ValidationError
from auditledger.model import (
    DEFAULT_LIMITS,
    Actor,
    Event,
    EventInput,
    Limits,
    Outcome,
    check_tenant,
    event_input,
    from_micros,
    invalid_text_field,
    parse_utc,
    to_micros,
)
from auditledger.query import Query
from auditledger.store import Cursor, Head, Order, Row, Store, open_store

DEFAULT_TENANT = "main"
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the ledger says back for one recorded event."""

    id: str
    tenant: str
    seq: int
    date: datetime
    duplicate: bool = False  # an idempotency key seen before: nothing new stored


@dataclass(slots=True)
class _Queued:
    """One ``record_many`` call's prepared batch, waiting for the commit that writes it (its own or a group's)."""

    items: list[canonical.Prepared]
    receipts: list[Receipt] = field(default_factory=list)
    error: Exception | None = None
    done: bool = False


@dataclass(frozen=True, slots=True)
class Page:
    """One page of search results and the cursor of the next (None at the end)."""

    events: list[Event]
    cursor: str | None


@dataclass(slots=True)
class VerifyReport:
    """The outcome of :meth:`AuditLog.verify`, per tenant."""

    sizes: dict[str, int] = field(default_factory=dict)
    purged: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.sizes.values())


class AuditLog:
    """An audit ledger on a store; open it with :meth:`open`."""

    def __init__(self, store: Store, *, limits: Limits = DEFAULT_LIMITS) -> None:
        self.store = store
        self.limits = limits
        self._after_commit: list[Callable[[list[Receipt]], None]] = []
        # Group commit: batches of threads that call record_many while another thread's commit is
        # being written wait here; the first of them then writes them all in one transaction.
        self._group_lock = threading.Lock()
        self._group_done = threading.Condition(self._group_lock)
        self._queued: list[_Queued] = []
        self._writing = False

    @classmethod
    def open(cls, url: str = "memory://", *, limits: Limits = DEFAULT_LIMITS) -> AuditLog:
        """``sqlite:///path/to.db``, ``memory://`` or ``postgresql://...``."""
        return cls(open_store(url), limits=limits)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def on_commit(self, callback: Callable[[list[Receipt]], None]) -> None:
        """Call ``callback`` with the receipts of every commit (never before it).

        A commit may hold the batches of several threads' ``record_many`` calls (group commit):
        the callback then gets all of their receipts at once, on the thread that wrote them.
        """
        self._after_commit.append(callback)

    # ------------------------------------------------------------ recording

    def record(
        self,
        resource_type: str,
        action: str,
        actor: Actor | Mapping[str, Any],
        *,
        details: Mapping[str, Any] | None = None,
        before: Any = None,
        after: Any = None,
        outcome: Outcome | str = Outcome.SUCCESS,
        occurred_at: datetime | str | None = None,
        tenant: str = DEFAULT_TENANT,
        idempotency_key: str | None = None,
    ) -> Receipt:
        """Record one event and return its receipt once it is committed."""
        raw = {
            "resource_type": resource_type,
            "action": action,
            "actor": actor,
            "details": details,
            "before": before,
            "after": after,
            "outcome": outcome,
            "occurred_at": occurred_at,
            "idempotency_key": idempotency_key,
        }
        return self.record_many([raw], tenant=tenant)[0]

    def record_many(
        self,
        events: Iterable[EventInput | Mapping[str, Any]],
        *,
        tenant: str = DEFAULT_TENANT,
        within: Any = None,
    ) -> list[Receipt]:
        """Record a batch atomically: all of it, or (on any invalid event) none of it.

        ``within``: an open DB-API connection of the application to the ledger's own
        database (SQLite: the store's file), whose transaction the batch joins. The rows
        are then written but not committed: the application's commit stores them with
        its own changes, its rollback drops them, and the ``on_commit`` callbacks wait
        for :meth:`committed`. The SQLAlchemy auditor's ``write="in_transaction"`` does this.
        """
        check_tenant(tenant)
        drafts = self.validate(events)
        prepared = prepare([(tenant, d) for d in drafts])
        if within is not None or not prepared:
            return self.append_prepared(prepared, within=within)
        return self._grouped(_Queued(prepared))

    def _grouped(self, entry: _Queued) -> list[Receipt]:
        """Write ``entry`` in one commit with the batches of the threads that wait beside it.

        A call that finds another call's commit being written queues its batch; when that
        commit ends, the first queued call writes every queued batch in one transaction (one
        fsync for all), and each call gets its own receipts. A batch stays atomic: the group's
        transaction holds all of it or none. A :class:`StoreError` (locked, full, closed) fails
        every call of the group; any other failure could be one batch's, so each batch of a
        failed group is then written again on its own and every call gets its own outcome.
        """
        with self._group_lock:
            self._queued.append(entry)
            while not entry.done and self._writing:
                self._group_done.wait()
            group: list[_Queued] = []
            if not entry.done:  # this call writes the group: its own batch and every one queued
                self._writing = True
                group, self._queued = self._queued, []
        if group:
            try:
                self._write_group(group)
            finally:
                with self._group_lock:
                    for queued in group:
                        if not queued.receipts and queued.error is None:  # interrupted (KeyboardInterrupt ...)
                            queued.error = StoreError("the write of this batch to the ledger was interrupted")
                        queued.done = True
                    self._writing = False
                    self._group_done.notify_all()
        if entry.error is not None:
            raise entry.error
        return entry.receipts

    def _write_group(self, group: list[_Queued]) -> None:
        try:
            receipts = self.append_prepared([p for queued in group for p in queued.items])
        except StoreError as exc:
            for queued in group:
                queued.error = exc
            return
        except Exception as exc:
            if len(group) == 1:
                group[0].error = exc
                return
            for queued in group:
                try:
                    queued.receipts = self.append_prepared(queued.items)
                except Exception as own:
                    queued.error = own
            return
        start = 0
        for queued in group:
            queued.receipts = receipts[start : start + len(queued.items)]
            start += len(queued.items)

    def check_joinable(self, conn: Any) -> None:
        """Raise a :class:`ConfigError` unless ``record_many(..., within=conn)`` may write through ``conn``."""
        check = getattr(self.store, "check_joinable", None)
        if check is None:
            raise ConfigError(
                f"{type(self.store).__name__} cannot write in an application's transaction (the SQLite store can)"
            )
        check(conn)

    def committed(self, receipts: list[Receipt]) -> None:
        """The application committed a batch written ``within`` its transaction: run the ``on_commit`` callbacks."""
        if receipts:
            for callback in self._after_commit:
                callback(receipts)

    def backfill(
        self,
        events: Sequence[EventInput | Mapping[str, Any]],
        dates: Sequence[datetime],
        *,
        tenant: str = DEFAULT_TENANT,
    ) -> list[Receipt]:
        """Record events that happened earlier (imports, the demo) at their own past dates.

        Dates may not lie in the future; an entry dated before the tenant's last
        one is placed one microsecond after it, so that the ledger's dates never
        go backwards.
        """
        if len(events) != len(dates):
            raise ValidationError("dates", f"{len(dates)} dates for {len(events)} events")
        micros = [to_micros(parse_utc(d, f"dates[{i}]")) for i, d in enumerate(dates)]
        now = to_micros_now()
        for i, value in enumerate(micros):
            if value > now:
                raise ValidationError(f"dates[{i}]", "lies in the future")
        check_tenant(tenant)
        drafts = self.validate(events)
        return self.append([(tenant, d) for d in drafts], dates=micros)

    def validate(self, events: Iterable[EventInput | Mapping[str, Any]]) -> list[EventInput]:
        """The events checked as :meth:`record_many` checks them (this ledger's limits), stored nowhere.

        Raises the :class:`ValidationError` ``record_many`` would, naming ``events[i].field``;
        for code that takes events now and records them later (``Spooled`` does).
        """
        return validated(events, self.limits)

    def append(self, items: Sequence[tuple[str, EventInput]], *, dates: Sequence[int] | None = None) -> list[Receipt]:
        """Place already validated events, of any tenants, in one transaction."""
        return self.append_prepared(prepare(items), dates=dates)

    def append_prepared(
        self, items: Sequence[canonical.Prepared], *, dates: Sequence[int] | None = None, within: Any = None
    ) -> list[Receipt]:
        """``append`` for events whose canonical parts were made by :func:`prepare` beforehand.

        The server's request threads prepare their events before handing them to the
        single writer, so that inside the transaction only what depends on the
        position is left: seq, date, id, the bytes around them and the rest of the hash.
        ``within``: see :meth:`record_many`.
        """
        if not items:
            return []
        # Imported here, not at the top: tree brings in cryptography (Ed25519), which would
        # add ~0.2 s to the start of every process that only reads (verify's workers).
        from auditledger import tree

        receipts: list[Receipt | None] = [None] * len(items)
        randomness = os.urandom(10 * len(items)).hex()
        if within is not None:
            self.check_joinable(within)
        with self.store.write() if within is None else self.store.join(within) as txn:  # type: ignore[attr-defined]
            heads: dict[str, Head] = {}
            # Take every head first, in one global order: on PostgreSQL each is a row lock,
            # and concurrent multi-tenant batches taking them in item order could deadlock.
            for tenant in sorted({p.tenant for p in items}):
                heads[tenant] = txn.head(tenant)
            known: dict[tuple[str, str], tuple[str, int]] = {}
            keyed: dict[str, list[str]] = {}
            for p in items:
                if p.draft.idempotency_key is not None:
                    keyed.setdefault(p.tenant, []).append(p.draft.idempotency_key)
            for tenant, keys in keyed.items():
                for stored, found in txn.find_idempotent(tenant, keys).items():
                    known[(tenant, stored)] = found
            rows: list[Row] = []
            now = to_micros_now()
            for i, p in enumerate(items):
                tenant = p.tenant
                key = p.columns[6]  # the idempotency key
                if key is not None and (tenant, key) in known:
                    id, seq = known[(tenant, key)]
                    receipts[i] = Receipt(id, tenant, seq, from_micros(0), duplicate=True)
                    continue
                head = heads[tenant]
                date = max(now if dates is None else dates[i], head.last_date + 1)
                seq = head.size
                id = uuid7_hex(date // 1000, randomness[20 * i : 20 * i + 20])
                body, leaf = canonical.place(p, id=id, seq=seq, date=date)
                # Row's fields in order; the searched columns were taken out when the event was prepared.
                rows.append(Row._make((id, tenant, seq, date, *p.columns, body, leaf, p.draft.details)))
                head.size = seq + 1
                head.last_date = date
                if key is not None:
                    known[(tenant, key)] = (id, seq)
                receipts[i] = Receipt(id, tenant, seq, from_micros(date))
            txn.insert(rows)
            tree.extend_rows(txn, rows)  # the Merkle tree moves in the same transaction
            for head in heads.values():
                txn.set_head(head)
        done = [r for r in receipts if r is not None]
        if within is None:
            self.committed(done)
        return done

    # ------------------------------------------------------------ reading

    def get(self, id: str, *, tenant: str | None = DEFAULT_TENANT) -> Event:
        """The event with ``id``; ``tenant=None`` looks across tenants."""
        from auditledger.errors import NotFoundError

        # No id holds NUL (ids are generated), and PostgreSQL cannot bind one: answer without asking the store.
        row = None if "\x00" in id else self.store.get(tenant, id)
        if row is None:
            raise NotFoundError(f"no event {id!r}" + ("" if tenant is None else f" in tenant {tenant!r}"))
        return canonical.decode(row.body)

    def search(
        self,
        query: Query | str | None = None,
        *,
        tenant: str | None = DEFAULT_TENANT,
        limit: int = 50,
        cursor: str | None = None,
        order: Order = "desc",
    ) -> Page:
        """One page, newest first by default; pass the page's ``cursor`` to get the next."""
        if isinstance(query, str):
            from auditledger import query as query_module

            query = query_module.parse(query)
        query = query or Query()
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationError("limit", f"must be between 1 and {MAX_PAGE}, got {limit}")
        after = decode_cursor(cursor) if cursor else None
        rows = self.store.search(tenant, query, limit=limit + 1, after=after, order=order)
        more = len(rows) > limit
        rows = rows[:limit]
        events = [canonical.decode(r.body) for r in rows]
        next_cursor = encode_cursor(Cursor(rows[-1].date, rows[-1].tenant, rows[-1].seq)) if more else None
        return Page(events, next_cursor)

    def iter_search(
        self, query: Query | str | None = None, *, tenant: str | None = DEFAULT_TENANT, order: Order = "desc"
    ) -> Iterator[Event]:
        """Every matching event, page by page."""
        cursor: str | None = None
        while True:
            page = self.search(query, tenant=tenant, limit=MAX_PAGE, cursor=cursor, order=order)
            yield from page.events
            if page.cursor is None:
                return
            cursor = page.cursor

    def count(self, query: Query | None = None, *, tenant: str | None = DEFAULT_TENANT, cap: int = 10_000) -> int:
        return self.store.count(tenant, query or Query(), cap=cap)

    def tenants(self) -> list[str]:
        return [h.tenant for h in self.store.heads()]

    # ------------------------------------------------------------ verifying

    def verify(self, *, tenant: str | None = None, processes: int | None = None) -> VerifyReport:
        """Recompute every leaf hash, the ``seq`` sequence and the indexes; raise at the first bad position.

        ``processes``: how many processes share the work (default: one per CPU for a large
        ledger on a file or PostgreSQL store, else one); see :mod:`auditledger.verify`.
        """
        from auditledger import verify

        report = VerifyReport()
        heads = {h.tenant: h for h in self.store.heads()}
        for name in [tenant] if tenant is not None else sorted(heads):
            head = heads.get(name, Head(name, 0, 0))
            size, purged = verify.verify_tenant(self.store, name, head, processes=processes)
            report.sizes[name] = size
            report.purged[name] = purged
        return report


# ---------------------------------------------------------------- helpers


def validated(events: Iterable[EventInput | Mapping[str, Any]], limits: Limits = DEFAULT_LIMITS) -> list[EventInput]:
    """``events`` checked against ``limits``; a bad one raises a :class:`ValidationError` naming ``events[i].field``."""
    out: list[EventInput] = []
    for i, raw in enumerate(events):
        try:
            out.append(event_input(raw, limits))
        except ValidationError as exc:
            raise ValidationError(f"events[{i}].{exc.field}", exc.message) from None
    return out


def prepare(items: Iterable[tuple[str, EventInput]]) -> list[canonical.Prepared]:
    """The canonical parts of validated ``(tenant, event)`` pairs, for :meth:`AuditLog.append_prepared`.

    Text that is not valid UTF-8 (an unpaired surrogate) is found here, as a
    :class:`ValidationError` naming ``events[i].<field>``, before any write begins.
    """
    out = []
    for i, (tenant, draft) in enumerate(items):
        try:
            out.append(canonical.prepare(draft, tenant))
        except orjson.JSONEncodeError:
            field_name = invalid_text_field(draft)
            raise ValidationError(f"events[{i}].{field_name}", "is not valid UTF-8 (unpaired surrogate)") from None
    return out


def to_micros_now() -> int:
    return time.time_ns() // 1000


def uuid7(unix_ms: int, rand: bytes) -> str:
    """A UUIDv7 (RFC 9562): 48-bit milliseconds, version 7, variant 10, 74 random bits."""
    raw = bytearray((unix_ms & 0xFFFF_FFFF_FFFF).to_bytes(6, "big") + rand)
    raw[6] = 0x70 | (raw[6] & 0x0F)
    raw[8] = 0x80 | (raw[8] & 0x3F)
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def uuid7_hex(unix_ms: int, rand_hex: str) -> str:
    """``uuid7`` from 20 hex digits of randomness: the hot path of ``append``, a few string slices."""
    global _LAST_MS
    ms, prefix = _LAST_MS
    if ms != unix_ms:  # a batch's events mostly share their millisecond: its text is made once
        text = f"{unix_ms & 0xFFFF_FFFF_FFFF:012x}"
        prefix = f"{text[:8]}-{text[8:]}-7"
        _LAST_MS = (unix_ms, prefix)
    r = rand_hex
    return f"{prefix}{r[1:4]}-{_VARIANT[r[4]]}{r[5:8]}-{r[8:20]}"


_LAST_MS: tuple[int, str] = (-1, "")


def encode_cursor(cursor: Cursor) -> str:
    raw = orjson.dumps([cursor.date, cursor.tenant, cursor.seq])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        date, tenant, seq = orjson.loads(raw)
        if not (isinstance(date, int) and isinstance(tenant, str) and isinstance(seq, int)):
            raise TypeError
        return Cursor(date, tenant, seq)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise ValidationError("cursor", "not a cursor this server issued") from None
