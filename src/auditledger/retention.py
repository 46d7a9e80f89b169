"""Retention: purge old events, legal holds, and a minimum retention age.

A purge removes the *payload* of matching events (the ``events`` row and its
``details``) and marks the ledger position ``purged``; the leaf hash stays, so
every earlier checkpoint, inclusion and consistency proof keeps verifying
(RFC 9162 proofs only need the leaf hashes). The purge itself is appended as an
``AUDITLOG``/``DELETE`` event carrying its filter, its count and its actor.

Work happens in short batches, one write transaction each, so that ingest
waiting on the same writer is never held for long. Because a tenant's dates
grow strictly with ``seq`` (the ledger enforces it), a date range is a ``seq``
range: batches walk ``seq`` windows through the primary index.

A legal hold is a saved search (``auditledger.query`` language) that no purge
may touch until it is released. A minimum retention age (default 7 days)
clips any purge's end date unless ``force=True`` (an admin's decision), so a
stolen token cannot erase last night.

Dialects: everything below is portable SQL through the Store's ``execute`` and
``query`` except two hooks a store may provide — ``purge_gate(txn, open)`` (how
the store lets purge delete what it otherwise refuses; SQLite's
``purge_gate`` table is handled here) and ``reclaim_space(before)`` (return
disk space; SQLite's incremental vacuum is handled here, PostgreSQL can drop
a month's partition once all of it is purged).
"""

from __future__ import annotations

import secrets
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import orjson

from auditledger.errors import NotFoundError, ValidationError
from auditledger.ledger import DEFAULT_TENANT, AuditLog
from auditledger.model import Actor, check_name, check_tenant, from_micros, parse_utc, to_micros
from auditledger.query import Field, Match, Query, Term, all_of
from auditledger.query import parse as parse_query
from auditledger.store import DETAILS_PENDING, Cursor, Store, WriteTxn

DEFAULT_MIN_AGE = timedelta(days=7)
HOLD_RESOURCE = "LEGAL_HOLD"
_NAMESPACE_KEY = "namespace"
_TARGET_BATCH_SECONDS = 0.025  # keeps a writer waiting behind a batch well under 200 ms
_FIRST_WINDOW = 256  # positions in the first purge batch
_IN_CHUNK = 500  # values per IN (...) list: well under every dialect's parameter limit
_CHECKPOINT_SECONDS = 0.25  # purge copies the WAL itself at most this often
_SWEEP_MIN = 20_000  # positions: a purge of fewer deletes details with their events


@dataclass(frozen=True, slots=True)
class PurgeFilter:
    """Which events a purge removes: ``start_date <= date < end_date`` and every other given filter.

    ``namespace`` matches the namespace and its children (``a`` matches ``a``
    and ``a.b``, as Kestra's purge does); ``tenant=None`` means every tenant.
    """

    end_date: datetime
    start_date: datetime | None = None
    namespace: str | None = None
    resources: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    tenant: str | None = DEFAULT_TENANT

    def to_dict(self) -> dict[str, Any]:
        """Kestra's property names, as recorded in the purge's own event."""
        out: dict[str, Any] = {"endDate": _iso(self.end_date)}
        if self.start_date is not None:
            out["startDate"] = _iso(self.start_date)
        if self.namespace is not None:
            out["namespace"] = self.namespace
        if self.resources:
            out["resources"] = list(self.resources)
        if self.actions:
            out["types"] = list(self.actions)
        out["tenant"] = self.tenant
        return out

    def matches(self, date: datetime, resource_type: str, action: str, details: Mapping[str, str]) -> bool:
        """The filter as plain Python (the brute-force reference the tests check the SQL against)."""
        if self.start_date is not None and date < self.start_date:
            return False
        if date >= self.end_date:
            return False
        if self.resources and resource_type not in self.resources:
            return False
        if self.actions and action not in self.actions:
            return False
        return self.namespace is None or _in_namespace(details.get(_NAMESPACE_KEY), self.namespace)


def purge_filter(
    end_date: datetime | str,
    *,
    start_date: datetime | str | None = None,
    namespace: str | None = None,
    resources: Iterable[str] | str | None = None,
    actions: Iterable[str] | str | None = None,
    types: Iterable[str] | str | None = None,
    tenant: str | None = DEFAULT_TENANT,
) -> PurgeFilter:
    """A checked :class:`PurgeFilter`; dates are ISO 8601 texts or aware datetimes (any zone)."""
    end = _date(end_date, "endDate")
    start = None if start_date is None else _date(start_date, "startDate")
    if start is not None and start >= end:
        raise ValidationError("startDate", f"{_iso(start)} is not before endDate {_iso(end)}")
    if namespace is not None and (not isinstance(namespace, str) or not namespace or len(namespace) > 1024):
        raise ValidationError("namespace", "must be a non-empty text of at most 1024 characters")
    if actions is not None and types is not None:
        raise ValidationError("types", "give the actions as `types` or as `actions`, not both")
    if tenant is not None:
        check_tenant(tenant)
    return PurgeFilter(
        end_date=end,
        start_date=start,
        namespace=namespace,
        resources=_names(resources, "resources"),
        actions=_names(actions if actions is not None else types, "types"),
        tenant=tenant,
    )


@dataclass(slots=True)
class _Progress:
    """How far one tenant's purge got (kept when it fails part-way, for its record)."""

    count: int = 0
    held: int = 0
    batches: int = 0


@dataclass(slots=True)
class PurgeResult:
    """What a purge did (or, with ``dry_run``, would do); ``count`` is Kestra's task output."""

    count: int
    dry_run: bool
    filter: PurgeFilter
    end_date: datetime  # the end date actually used (clipped by the minimum retention age)
    clipped: bool
    held: int  # matching events a legal hold kept
    batches: int = 0
    seconds: float = 0.0
    bytes_before: int | None = None
    bytes_after: int | None = None
    event_ids: list[str] = field(default_factory=list)  # the AUDITLOG/DELETE events recorded

    def outputs(self) -> dict[str, Any]:
        return {"count": self.count}

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "dryRun": self.dry_run,
            "filter": self.filter.to_dict(),
            "endDate": _iso(self.end_date),
            "clipped": self.clipped,
            "held": self.held,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "bytesBefore": self.bytes_before,
            "bytesAfter": self.bytes_after,
            "eventIds": self.event_ids,
        }


@dataclass(frozen=True, slots=True)
class Hold:
    """A legal hold: events matching ``query`` in ``tenant`` survive every purge until released."""

    id: str
    tenant: str
    query: str
    reason: str
    created_by: str
    created_at: datetime
    released_at: datetime | None = None
    released_by: str | None = None

    @property
    def active(self) -> bool:
        return self.released_at is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "query": self.query,
            "reason": self.reason,
            "createdBy": self.created_by,
            "createdAt": _iso(self.created_at),
            "releasedAt": None if self.released_at is None else _iso(self.released_at),
            "releasedBy": self.released_by,
        }


class Retention:
    """Purge and legal holds on one ledger."""

    def __init__(
        self,
        ledger: AuditLog,
        *,
        min_age: timedelta = DEFAULT_MIN_AGE,
        batch_size: int = 5000,
        reclaim_threshold: int = 10_000,
        sweep_min: int = _SWEEP_MIN,
    ) -> None:
        if min_age < timedelta(0):
            raise ValidationError("min_age", "the minimum retention age cannot be negative")
        if batch_size < 1:
            raise ValidationError("batch_size", "must be at least 1")
        self.ledger = ledger
        self.store: Store = ledger.store
        self.min_age = min_age
        self.batch_size = batch_size
        self.reclaim_threshold = reclaim_threshold
        self.sweep_min = sweep_min
        self._checkpointed = 0.0

    # ------------------------------------------------------------ purge

    def purge(
        self,
        flt: PurgeFilter,
        *,
        actor: Actor | None = None,
        dry_run: bool = False,
        force: bool = False,
        reclaim: bool = True,
        now: datetime | None = None,
        reason: str | None = None,
    ) -> PurgeResult:
        """Remove the payloads of the events ``flt`` matches, except held and too recent ones.

        Without ``force`` nothing younger than the minimum retention age is
        touched: the end date is clipped to ``now - min_age``. ``force`` is an
        admin's decision; callers check the role before passing it. A purge
        that fails part-way still records what it removed, with the error.
        """
        actor = actor or Actor.system()
        moment = now or datetime.now(UTC)
        end = flt.end_date
        clipped = False
        if not force and end > moment - self.min_age:
            end, clipped = moment - self.min_age, True
        result = PurgeResult(0, dry_run, flt, end, clipped, 0)
        started = time.perf_counter()
        result.bytes_before = self._space_used()
        tenants = [flt.tenant] if flt.tenant is not None else [h.tenant for h in self.store.heads()]
        for tenant in tenants:
            if flt.start_date is not None and flt.start_date >= end:
                continue
            done = _Progress()
            try:
                self._purge_tenant(tenant, flt, end, dry_run, done)
            except BaseException as exc:
                if not dry_run and done.count:
                    with suppress(Exception):  # the store may be what failed; the first error is the one to raise
                        self._record(tenant, flt, end, clipped, force, reason, actor, done, exc)
                raise
            if not dry_run and done.count:
                self._forget_actors(tenant)
            result.count += done.count
            result.held += done.held
            result.batches += done.batches
            if not dry_run:
                result.event_ids.append(self._record(tenant, flt, end, clipped, force, reason, actor, done))
        if not dry_run and reclaim and result.count >= self.reclaim_threshold:
            self.reclaim(end)
        result.bytes_after = self._space_used()
        result.seconds = time.perf_counter() - started
        return result

    def _forget_actors(self, tenant: str) -> None:
        """A store that lists actors for search (SQLite) drops those whose every event was purged."""
        hook = getattr(self.store, "forget_purged_actors", None)
        if hook is not None:
            hook(tenant)

    def _record(
        self,
        tenant: str,
        flt: PurgeFilter,
        end: datetime,
        clipped: bool,
        force: bool,
        reason: str | None,
        actor: Actor,
        done: _Progress,
        error: BaseException | None = None,
    ) -> str:
        """The purge's own AUDITLOG/DELETE event in ``tenant``; an interrupted purge says so and why."""
        after: dict[str, Any] = {"filter": flt.to_dict(), "endDateUsed": _iso(end), "clipped": clipped,
                                 "count": done.count, "held": done.held, "force": force, "reason": reason}
        details = _purge_details(flt, end, done.count)
        if error is not None:
            after["interrupted"] = f"{type(error).__name__}: {error}"[:1024]
            details["interrupted"] = "true"
        receipt = self.ledger.record("AUDITLOG", "DELETE", actor, details=details, after=after, tenant=tenant)
        return receipt.id

    def _purge_tenant(self, tenant: str, flt: PurgeFilter, end: datetime, dry_run: bool, done: _Progress) -> None:
        lo = self._first_seq_at(tenant, flt.start_date) if flt.start_date is not None else 0
        hi = self._first_seq_at(tenant, end)
        if hi <= lo:
            return
        dates = None if _is_sqlite(self.store) else (
            None if flt.start_date is None else to_micros(flt.start_date), to_micros(end))
        hold_ids, held = self._held(tenant, lo, hi)
        sweep = not dry_run and self._sweeps(tenant, lo, hi)
        write = self.store.write if dry_run else getattr(self.store, "purge_write", self.store.write)
        # Start small and let the timing grow the window: a first batch of thousands of
        # positions held a waiting writer for most of a second on a slow machine.
        window = min(self.batch_size, _FIRST_WINDOW)
        pos = lo
        while pos < hi:
            upper = min(pos + window, hi)
            with write() as txn:
                began = time.perf_counter()
                # A hold created while we run must still protect its events.
                if not self._active_hold_ids(txn, tenant) <= hold_ids:
                    hold_ids, held = self._held(tenant, lo, hi, txn)
                self._batch(txn, tenant, flt, (pos, upper), dates, held, dry_run, sweep, done)
            window = _paced(window, time.perf_counter() - began, 200, 200_000)
            done.batches += 1
            pos = upper
            if not dry_run:
                self._pause()
        if sweep:
            # With no filter and nothing held, every position of the range is purged: the sweep
            # then needs no per-row look at the leaves there.
            whole = not (flt.namespace or flt.resources or flt.actions or done.held)
            self._sweep_details(tenant, (lo if whole else hi, hi))

    def _sweeps(self, tenant: str, lo: int, hi: int) -> bool:
        """Whether the details go in one ordered sweep after the events (large purges on SQLite) or with them."""
        if getattr(self.store, "sweep_purged_details", None) is None or hi - lo < self.sweep_min:
            return False
        size = next((h.size for h in self.store.heads() if h.tenant == tenant), 0)
        # The sweep reads the tenant's whole details table: worth it when a good part of it goes.
        return (hi - lo) * 4 >= size

    def _pause(self) -> None:
        """Between two batches: the WAL copied now and then, every writer already waiting (ingest) goes first."""
        checkpoint = getattr(self.store, "checkpoint", None)
        if checkpoint is not None and time.monotonic() - self._checkpointed >= _CHECKPOINT_SECONDS:
            # Outside the write lock, so ingest goes on meanwhile; a checkpoint already running
            # elsewhere is waited for, so that purge never writes faster than the WAL is copied.
            deadline = time.monotonic() + 1.0
            while not checkpoint() and time.monotonic() < deadline:
                time.sleep(0.005)
            self._checkpointed = time.monotonic()
        waiting = getattr(self.store, "writers_waiting", None)
        if waiting is None:
            time.sleep(0.001)  # a store that cannot tell: give other writers a moment
            return
        # A writer already waiting is waited for until it holds the lock; one not waiting yet
        # would not be helped by a sleep (a millisecond per batch: 4-7% of a purge's time).
        deadline = time.monotonic() + 0.2
        while waiting() and time.monotonic() < deadline:
            time.sleep(0.0005)

    def _batch(
        self,
        txn: WriteTxn,
        tenant: str,
        flt: PurgeFilter,
        span: tuple[int, int],
        dates: tuple[int | None, int] | None,
        held: Sequence[int],
        dry_run: bool,
        sweep: bool,
        done: _Progress,
    ) -> None:
        """Purge (or count) the matching events of positions ``span``.

        Set-based SQL over the window, unless a hold protects some of it or the namespace
        test needs the bodies: then the victims are listed by seq.
        """
        where, params = _window_where(tenant, flt, span, dates)
        kept = bisect_left(held, span[1]) - bisect_left(held, span[0])
        if flt.namespace is None and not kept:
            if dry_run:
                done.count += int(txn.query(f"SELECT count(*) FROM events e WHERE {where}", params)[0][0])
            else:
                done.count += self._delete(txn, tenant, where, params, sweep)
            return
        body = ", e.body" if flt.namespace is not None else ""
        rows = txn.query(f"SELECT e.seq{body} FROM events e WHERE {where}", params)
        seqs: list[int] = []
        protected = set(held[bisect_left(held, span[0]) : bisect_left(held, span[1])])
        for row in rows:
            if flt.namespace is not None:
                details = orjson.loads(row[1])["details"]
                if not _in_namespace(details.get(_NAMESPACE_KEY), flt.namespace):
                    continue
            if row[0] in protected:
                done.held += 1
                continue
            seqs.append(int(row[0]))
        if dry_run:
            done.count += len(seqs)
            return
        for i in range(0, len(seqs), _IN_CHUNK):
            part = seqs[i : i + _IN_CHUNK]
            listed = f"e.tenant = ? AND e.seq IN ({','.join('?' * len(part))})"
            done.count += self._delete(txn, tenant, listed, [tenant, *part], sweep)

    def _delete(self, txn: WriteTxn, tenant: str, where: str, params: Sequence[Any], sweep: bool) -> int:
        """Delete the events ``where`` selects (alias ``e``) with their details, and mark their leaves purged."""
        # The triggers refuse deletes unless the gate is open; it is opened inside this transaction
        # and shut before commit, so no other transaction ever sees it open.
        txn.execute("UPDATE purge_gate SET open = 1")
        if not sweep:
            details_sql = getattr(self.store, "purge_details_sql", _portable_details_sql)
            txn.execute(details_sql(where), params)
        # A sweep still to come marks the leaves DETAILS_PENDING, so that verify, run meanwhile or
        # after an interruption, knows those details rows are on their way out.
        txn.execute(
            f"UPDATE leaves SET purged = ? WHERE tenant = ? AND seq IN (SELECT e.seq FROM events e WHERE {where})",
            [DETAILS_PENDING if sweep else 1, tenant, *params],
        )
        count = txn.execute(f"DELETE FROM events AS e WHERE {where}", params)
        txn.execute("UPDATE purge_gate SET open = 0")
        return count

    def _sweep_details(self, tenant: str, span: tuple[int, int]) -> None:
        """The details rows of purged positions under ``span[1]``, deleted in key order (SQLite, large purges).

        Positions from ``span[0]`` on are all purged; below it the leaves marked DETAILS_PENDING
        are, including those of an earlier sweep that was interrupted. Every read joins details
        to ``events``, so the rows waiting for the sweep show nowhere. Once the sweep is through,
        the pending leaves become plainly purged.
        """
        sweep = self.store.sweep_purged_details  # type: ignore[attr-defined]
        write = getattr(self.store, "purge_write", self.store.write)
        # Whether any position below the range still waits for a sweep (an earlier one was
        # interrupted): one look at the leaves here, or the sweep tests each details row of
        # every older position against its leaf.
        pending_below = span[0] > 0 and bool(
            self.store.query(
                "SELECT 1 FROM leaves WHERE tenant = ? AND seq < ? AND purged = ? LIMIT 1",
                [tenant, span[0], DETAILS_PENDING],
            )
        )
        after: tuple[str, str, int] | None = ("", "", -1)
        rows = _FIRST_WINDOW * 8
        while after is not None:
            with write() as txn:
                began = time.perf_counter()
                txn.execute("UPDATE purge_gate SET open = 1")
                after, _ = sweep(txn, tenant, span, after, rows, pending_below=pending_below)
                txn.execute("UPDATE purge_gate SET open = 0")
            rows = _paced(rows, time.perf_counter() - began, 1000, 1_000_000)
            self._pause()
        pos, window = 0, _FIRST_WINDOW * 8
        while pos < span[1]:
            upper = min(pos + window, span[1])
            with write() as txn:
                began = time.perf_counter()
                txn.execute("UPDATE purge_gate SET open = 1")
                txn.execute(
                    "UPDATE leaves SET purged = 1 WHERE tenant = ? AND seq >= ? AND seq < ? AND purged = ?",
                    [tenant, pos, upper, DETAILS_PENDING],
                )
                txn.execute("UPDATE purge_gate SET open = 0")
            window = _paced(window, time.perf_counter() - began, 1000, 1_000_000)
            pos = upper
            self._pause()

    def _first_seq_at(self, tenant: str, moment: datetime) -> int:
        """The first ``seq`` dated at or after ``moment`` (dates grow with seq), else the ledger size."""
        rows = self.store.query(
            "SELECT seq FROM events WHERE tenant = ? AND date >= ? ORDER BY date LIMIT 1",
            [tenant, to_micros(moment)],
        )
        if rows:
            return int(rows[0][0])
        for head in self.store.heads():
            if head.tenant == tenant:
                return head.size
        return 0

    # ------------------------------------------------------------ space

    def _space_used(self) -> int | None:
        """Bytes the database uses (file pages minus free pages on SQLite); None when unknown."""
        if _is_sqlite(self.store):
            (count,), = self.store.query("PRAGMA page_count")
            (free,), = self.store.query("PRAGMA freelist_count")
            (size,), = self.store.query("PRAGMA page_size")
            return int((count - free) * size)
        used = getattr(self.store, "space_used", None)
        return int(used()) if used is not None else None

    def file_bytes(self) -> int | None:
        """Bytes of the database file (SQLite), free pages included."""
        if not _is_sqlite(self.store):
            return None
        (count,), = self.store.query("PRAGMA page_count")
        (size,), = self.store.query("PRAGMA page_size")
        return int(count * size)

    def reclaim(self, before: datetime | None = None) -> None:
        """Return freed space: SQLite's incremental vacuum in short steps; a store's own hook otherwise."""
        hook = getattr(self.store, "reclaim_space", None)
        if hook is not None:
            hook(before)
            return
        if not _is_sqlite(self.store):
            return
        (mode,), = self.store.query("PRAGMA auto_vacuum")
        if int(mode) != 2:
            return  # a file made before auto_vacuum was set: only a full VACUUM (offline) shrinks it
        purge_write = getattr(self.store, "purge_write", None)
        # The vacuum fires no trigger: the purge's batches lift them, its steps need not.
        write = self.store.write if purge_write is None else partial(purge_write, lift_guards=False)
        last = -1
        while True:
            (free,), = self.store.query("PRAGMA freelist_count")
            if not free or free == last:
                return
            last = free
            # Each execute of the pragma moves one page (the stdlib driver steps a statement
            # without columns once, even with fetchall); a transaction moves pages for a
            # few tens of milliseconds so that ingest is never held long.
            with write() as txn:
                began = time.perf_counter()
                for _ in range(int(free)):
                    txn.execute("PRAGMA incremental_vacuum")
                    if time.perf_counter() - began > _TARGET_BATCH_SECONDS:
                        break
            self._pause()

    # ------------------------------------------------------------ holds

    def create_hold(
        self, query: str, reason: str, *, actor: Actor | None = None, tenant: str = DEFAULT_TENANT
    ) -> Hold:
        """Protect the events ``query`` matches (now and later) from every purge until released."""
        check_tenant(tenant)
        if not isinstance(query, str) or not query.strip():
            raise ValidationError("query", "a hold needs a search query (use `*`-free terms, e.g. `namespace:a`)")
        parse_query(query)  # refuse a query that does not parse now, not at purge time
        if not isinstance(reason, str) or not reason.strip():
            raise ValidationError("reason", "a hold needs a reason")
        if len(reason) > 1024:
            raise ValidationError("reason", "at most 1024 characters")
        actor = actor or Actor.system()
        hold = Hold(f"hold_{secrets.token_hex(6)}", tenant, query, reason, actor.id, datetime.now(UTC))
        with self.store.write() as txn:
            txn.execute(
                "INSERT INTO holds (id, tenant, query, reason, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                [hold.id, tenant, query, reason, actor.id, to_micros(hold.created_at)],
            )
        self.ledger.record(
            HOLD_RESOURCE, "CREATE", actor, details={"id": hold.id}, after=hold.to_dict(), tenant=tenant
        )
        return hold

    def release_hold(self, id: str, *, actor: Actor | None = None, tenant: str | None = None) -> Hold:
        """Release an active hold; its events can be purged again."""
        actor = actor or Actor.system()
        hold = self.get_hold(id, tenant=tenant)
        if not hold.active:
            raise NotFoundError(f"hold {id!r} was already released")
        moment = datetime.now(UTC)
        with self.store.write() as txn:
            done = txn.execute(
                "UPDATE holds SET released_at = ?, released_by = ? WHERE id = ? AND released_at IS NULL",
                [to_micros(moment), actor.id, id],
            )
        if not done:
            raise NotFoundError(f"hold {id!r} was already released")
        released = Hold(
            hold.id, hold.tenant, hold.query, hold.reason, hold.created_by, hold.created_at, moment, actor.id
        )
        self.ledger.record(
            HOLD_RESOURCE, "DELETE", actor, details={"id": hold.id}, before=hold.to_dict(),
            after=released.to_dict(), tenant=hold.tenant,
        )
        return released

    def get_hold(self, id: str, *, tenant: str | None = None) -> Hold:
        for hold in self.holds(tenant=tenant, include_released=True):
            if hold.id == id:
                return hold
        raise NotFoundError(f"no hold {id!r}" + ("" if tenant is None else f" in tenant {tenant!r}"))

    def holds(self, *, tenant: str | None = None, include_released: bool = False) -> list[Hold]:
        sql = "SELECT id, tenant, query, reason, created_by, created_at, released_at, released_by FROM holds"
        where: list[str] = []
        params: list[Any] = []
        if tenant is not None:
            where.append("tenant = ?")
            params.append(tenant)
        if not include_released:
            where.append("released_at IS NULL")
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [
            Hold(r[0], r[1], r[2], r[3], r[4], from_micros(r[5]), None if r[6] is None else from_micros(r[6]), r[7])
            for r in self.store.query(sql + " ORDER BY created_at, id", params)
        ]

    def _active_hold_ids(self, txn: WriteTxn, tenant: str) -> set[str]:
        rows = txn.query("SELECT id FROM holds WHERE tenant = ? AND released_at IS NULL", [tenant])
        return {r[0] for r in rows}

    def _held(self, tenant: str, lo: int, hi: int, txn: WriteTxn | None = None) -> tuple[set[str], list[int]]:
        """The active holds of ``tenant`` and the seqs in ``[lo, hi)`` they protect, sorted."""
        ids: set[str] = set()
        seqs: set[int] = set()
        rows = (txn.query if txn is not None else self.store.query)(
            "SELECT id, query FROM holds WHERE tenant = ? AND released_at IS NULL", [tenant]
        )
        for id, text in rows:
            ids.add(id)
            seqs.update(self._matching_seqs(tenant, parse_query(text), lo, hi, txn))
        return ids, sorted(seqs)

    def _matching_seqs(self, tenant: str, query: Query, lo: int, hi: int, txn: WriteTxn | None) -> Iterable[int]:
        if _is_sqlite(self.store):
            from auditledger.store.sqlite import SQLiteStore, detail_keys, has_text, where_clause

            assert isinstance(self.store, SQLiteStore)
            keys = detail_keys(self.store.reader(), tenant) if has_text(query) else []
            where, params = where_clause(tenant, query, keys)
            sql = f"SELECT e.seq FROM events e WHERE {where} AND e.seq >= ? AND e.seq < ?"
            run = txn.query if txn is not None else self.store.query
            return [int(r[0]) for r in run(sql, [*params, lo, hi])]
        # Portable path: page through the store's own search in seq order.
        found: list[int] = []
        after = Cursor(0, tenant, lo - 1)
        while True:
            rows = self.store.search(tenant, query, limit=1000, after=after, order="asc")
            found += [r.seq for r in rows if r.seq < hi]
            if len(rows) < 1000 or rows[-1].seq >= hi:
                return found
            after = Cursor(rows[-1].date, tenant, rows[-1].seq)


# ---------------------------------------------------------------- helpers


def namespace_query(flt: PurgeFilter) -> Query:
    """The filter as a search :class:`Query` (for previews in the search page)."""
    terms: list[Term] = []
    if flt.namespace is not None:
        terms.append(Term(Field.DETAIL, (flt.namespace,), key=_NAMESPACE_KEY, match=Match.NAMESPACE))
    if flt.resources:
        terms.append(Term(Field.RESOURCE, flt.resources))
    if flt.actions:
        terms.append(Term(Field.ACTION, flt.actions))
    return all_of(Query(tuple(terms), flt.start_date, flt.end_date))


def _window_where(
    tenant: str, flt: PurgeFilter, span: tuple[int, int], dates: tuple[int | None, int] | None
) -> tuple[str, list[Any]]:
    """The filter over ``events e`` for positions ``span`` (resource types and actions in SQL).

    Dates grow strictly with seq and the purge's range was found on the date index, so the seq
    range already is the date range. ``dates`` checks them again (a store whose tables are
    partitioned by date); with None the window is positions only, which lets SQLite find the
    leaves to mark from the (tenant, seq) index alone instead of reading every event row twice.
    """
    where = "e.tenant = ? AND e.seq >= ? AND e.seq < ?"
    params: list[Any] = [tenant, span[0], span[1]]
    if dates is not None:
        # Behind a unary plus that keeps the planner off the (tenant, date) index (a scan of
        # everything older, once per batch).
        where += " AND +e.date < ?"
        params.append(dates[1])
        if dates[0] is not None:
            where += " AND +e.date >= ?"
            params.append(dates[0])
    for column, values in (("e.resource_type", flt.resources), ("e.action", flt.actions)):
        if values:
            where += f" AND {column} IN ({','.join('?' * len(values))})"
            params += values
    return where, params


def _portable_details_sql(events_where: str) -> str:
    return f"DELETE FROM details WHERE (tenant, seq) IN (SELECT e.tenant, e.seq FROM events e WHERE {events_where})"


def _paced(size: int, elapsed: float, low: int, high: int) -> int:
    """The next batch size, aiming each transaction at a few tens of milliseconds whatever the machine."""
    if elapsed <= 0:
        return size
    # Shrink fast, grow slowly: a batch's time varies, and one that overshoots holds ingest.
    scale = max(0.5, min(1.5, _TARGET_BATCH_SECONDS / elapsed))
    return max(low, min(high, int(size * scale)))


def _in_namespace(value: str | None, namespace: str) -> bool:
    return value is not None and (value == namespace or value.startswith(namespace + "."))


def _is_sqlite(store: Store) -> bool:
    from auditledger.store.sqlite import SQLiteStore

    return isinstance(store, SQLiteStore)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _date(value: datetime | str, name: str) -> datetime:
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise ValidationError(name, "date-time has no time zone")
        return value.astimezone(UTC)
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError(name, f"not an ISO 8601 date-time: {text[:64]!r}") from None
        if parsed.utcoffset() is None:
            raise ValidationError(name, f"{text[:64]!r} has no time zone; add Z or an offset")
        return parsed.astimezone(UTC)
    return parse_utc(value, name)


def _names(values: Iterable[str] | str | None, name: str) -> tuple[str, ...]:
    if values is None:
        return ()
    items = [v.strip() for v in values.split(",")] if isinstance(values, str) else list(values)
    if len(items) > 100:
        raise ValidationError(name, "at most 100 values")
    out: list[str] = []
    for i, item in enumerate(items):
        value = check_name(item, f"{name}[{i}]", frozenset())
        # Kestra 1.x spelled the key-value store KV_STORE, 2.0 KVSTORE: the same resource, purge both.
        out.append(value)
        out.extend(alias for alias in _SPELLINGS.get(value, ()) if alias not in out)
    return tuple(dict.fromkeys(out))


_SPELLINGS = {"KVSTORE": ("KV_STORE",), "KV_STORE": ("KVSTORE",)}


def _purge_details(flt: PurgeFilter, end: datetime, count: int) -> dict[str, str]:
    details = {"count": str(count), "endDate": _iso(end)}
    if flt.start_date is not None:
        details["startDate"] = _iso(flt.start_date)
    if flt.namespace is not None:
        # Not ``namespace``: the record of a purge does not belong to the purged namespace.
        details["purgedNamespace"] = flt.namespace
    if flt.resources:
        details["resources"] = ",".join(flt.resources)[:1024]
    if flt.actions:
        details["types"] = ",".join(flt.actions)[:1024]
    return details
