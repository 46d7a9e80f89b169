"""The shipper: read events after each exporter's offset, send, then save the offset.

For every exporter of a spec, independently (one thread each, so a slow or
failing destination holds up no other):

1. its offset is the next ``seq`` to send; a first run starts at the first
   event dated ``lookbackPeriod`` before now;
2. events are read in ``seq`` order up to the head seen when the run started:
   by seq window when nothing filters them (as the store's ready-made native
   lines for exporters that send those as they are, ``Store.native_lines``),
   else ``store.search`` ascending, filtered by ``resources`` and ``query``;
3. each batch is sent with retries and exponential backoff with jitter; when a
   destination accepts part of a batch only the rest is re-sent;
4. the offset moves past the batch only once all of it was accepted.

So delivery is at-least-once: a crash or a failed batch re-sends, never skips,
and every record carries the event id for the destination to de-duplicate.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from auditledger.errors import AuditLedgerError, ConfigError
from auditledger.ledger import AuditLog
from auditledger.model import from_micros
from auditledger.query import Query
from auditledger.ship import offsets, registry
from auditledger.ship.exporters.base import DeliveryError, Exporter
from auditledger.ship.formats import Record
from auditledger.ship.spec import Secrets, ShipperSpec, parse_spec
from auditledger.store import Cursor, NativeLines, Store


@dataclass(slots=True)
class ExporterResult:
    """How one exporter's run went."""

    id: str
    shipped: int = 0
    batches: int = 0
    start: int = 0
    offset: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """Reported after every accepted batch: totals so far and the lag behind the head."""

    exporter: str
    shipped: int
    offset: int
    head: int

    @property
    def lag(self) -> int:
        return max(0, self.head - self.offset)


@dataclass(slots=True)
class ShipResult:
    """A whole run; :meth:`outputs` is what the ``AuditLogShipper`` task returns."""

    offset_key: str
    tenant: str
    head: int
    exporters: list[ExporterResult] = field(default_factory=list)
    purged: int | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(e.error is None for e in self.exporters)

    def outputs(self) -> dict[str, Any]:
        return {
            "offsetKey": self.offset_key,
            "tenant": self.tenant,
            "head": self.head,
            "shipped": {e.id: e.shipped for e in self.exporters},
            "offsets": {e.id: e.offset for e in self.exporters},
            "lag": {e.id: max(0, self.head - e.offset) for e in self.exporters},
            "errors": {e.id: e.error for e in self.exporters if e.error is not None},
            "size": sum(e.shipped for e in self.exporters),
            "purged": self.purged,
            "seconds": round(self.seconds, 3),
        }


Progress = Callable[[ProgressEvent], None]
Batch = list[Record] | NativeLines

# Long-lived threads: a store keeps one reader connection per thread, so threads made per
# run would leave a connection behind every run of a scheduled shipper.
_EXPORTER_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ship-exporter")
_READ_AHEAD = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ship-read-ahead")

# Portable SQL over the tables every store has (0001_init): the primary keys serve the range.
_WINDOW_SQL = (
    "SELECT e.seq, e.id, e.date, e.body, l.hash FROM events e "
    "JOIN leaves l ON l.tenant = e.tenant AND l.seq = e.seq "
    "WHERE e.tenant = ? AND e.seq >= ? AND e.seq < ? ORDER BY e.seq"
)


class Shipper:
    """One shipper spec on one ledger and tenant; :meth:`run` ships everything pending."""

    def __init__(
        self,
        ledger: AuditLog,
        spec: ShipperSpec | Mapping[str, Any] | str,
        *,
        tenant: str = "main",
        secrets: Secrets | Mapping[str, str] | None = None,
        progress: Progress | None = None,
        sleep: Callable[[float], None] = time.sleep,
        exporters: Sequence[Exporter] = (),
    ) -> None:
        """``exporters`` adds ready-made instances (a test's CapturingExporter) beside the spec's own."""
        self.ledger = ledger
        self.store: Store = ledger.store
        self.spec = spec if isinstance(spec, ShipperSpec) else parse_spec(spec, exporters_required=not exporters)
        self.tenant = tenant
        self.secrets = secrets if isinstance(secrets, Secrets) else Secrets(secrets)
        self.progress = progress
        self.sleep = sleep
        self._lock = threading.Lock()
        if self.spec.delete:
            _check_delete(self.spec)
        # Build every exporter first: a configuration mistake fails the run before anything is sent.
        self.exporters: list[Exporter] = [
            registry.create(e, self.secrets, tenant=tenant, offset_key=self.spec.offset_key)
            for e in self.spec.log_exporters
        ]
        self.exporters += exporters
        ids = [e.id for e in self.exporters]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"exporter ids must be unique: they key the offsets (got {ids})")

    def run(self, *, now: datetime | None = None) -> ShipResult:
        started = time.perf_counter()
        head = _head_size(self.store, self.tenant)
        result = ShipResult(self.spec.offset_key, self.tenant, head)
        moment = now or datetime.now(UTC)
        if len(self.exporters) == 1:
            result.exporters.append(self._ship_one(self.exporters[0], head, moment))
        else:
            futures = [_EXPORTER_POOL.submit(self._ship_one, e, head, moment) for e in self.exporters]
            result.exporters.extend(f.result() for f in futures)
        if self.spec.delete and result.ok and result.exporters:
            result.purged = self._purge(min(e.offset for e in result.exporters), head)
        result.seconds = time.perf_counter() - started
        return result

    # ------------------------------------------------------------ one exporter

    def _ship_one(self, exporter: Exporter, head: int, now: datetime) -> ExporterResult:
        out = ExporterResult(exporter.id)
        stored = offsets.load(self.store, self.tenant, self.spec.offset_key, exporter.id)
        offset = stored if stored is not None else self._first_seq(now)
        out.start = out.offset = offset
        query = self.spec.filter()
        unfiltered = query == Query()
        # Exporters that send the native format as is get the store's ready-made lines.
        read = self._lines if exporter.takes_lines() else self._window
        ahead: Future[Batch] | None = None
        try:
            self._with_retries(exporter, lambda: exporter.open())
            while offset < head:
                if unfiltered:
                    # Every position: a seq window read with the ledger's own leaf hashes. The next
                    # window is read while this one is sent (SQLite and sockets release the GIL).
                    end = min(offset + self.spec.batch_size, head)
                    batch = ahead.result() if ahead is not None else read(offset, end)
                    nxt = min(end + self.spec.batch_size, head)
                    ahead = _READ_AHEAD.submit(read, end, nxt) if end < head else None
                else:
                    batch, end = self._matching(query, offset, head)
                count = _count(batch)
                if count:
                    self._deliver(exporter, batch)
                offset = end
                offsets.save(self.store, self.tenant, self.spec.offset_key, exporter.id, offset, count)
                if not count:
                    continue
                out.shipped += count
                out.batches += 1
                out.offset = offset
                if self.progress is not None:
                    with self._lock:
                        self.progress(ProgressEvent(exporter.id, out.shipped, offset, head))
            out.offset = offset
        except AuditLedgerError as exc:
            out.error = self.secrets.redact(str(exc))
        except Exception as exc:  # a bug or an unexpected library error must not stop the other exporters
            out.error = self.secrets.redact(f"{type(exc).__name__}: {exc}")
        finally:
            if ahead is not None and not ahead.cancel():
                wait([ahead])  # no read may outlive the run (the caller may close the store next)
            try:
                exporter.close()
            except Exception as exc:
                out.error = out.error or self.secrets.redact(f"closing failed: {type(exc).__name__}: {exc}")
        return out

    def _window(self, start: int, end: int) -> list[Record]:
        """Stored events with ``start <= seq < end`` in order (purged positions have none)."""
        rows = self.store.query(_WINDOW_SQL, [self.tenant, start, end])
        # Both dialects return int, str, int, bytes, bytes: no per-row conversion on the hot path.
        return [Record(*row) for row in rows]

    def _lines(self, start: int, end: int) -> NativeLines:
        return self.store.native_lines(self.tenant, start, end)

    def _matching(self, query: Query, offset: int, head: int) -> tuple[list[Record], int]:
        """The next page of events matching ``query`` from ``offset``, and the offset after it."""
        after = Cursor(0, self.tenant, offset - 1) if offset > 0 else None
        rows = self.store.search(self.tenant, query, limit=self.spec.batch_size, after=after, order="asc")
        records = [Record(r.seq, r.id, r.date, r.body) for r in rows if r.seq < head]
        # A short page means nothing else matches below the head.
        if len(records) < len(rows) or len(rows) < self.spec.batch_size:
            return records, head
        return records, records[-1].seq + 1

    def _deliver(self, exporter: Exporter, batch: Batch) -> None:
        pending = batch

        def attempt() -> None:
            nonlocal pending
            try:
                if isinstance(pending, NativeLines):
                    exporter.send_lines(pending)
                else:
                    exporter.send(pending)
            except DeliveryError as exc:
                if exc.failed:
                    pending = _only(pending, exc.failed)
                raise

        self._with_retries(exporter, attempt)

    def _with_retries(self, exporter: Exporter, action: Callable[[], None]) -> None:
        tries = 0
        while True:
            try:
                action()
                return
            except DeliveryError as exc:
                if not exc.retryable or tries >= self.spec.max_retries:
                    suffix = "" if not exc.retryable else f" (gave up after {tries + 1} attempts)"
                    raise DeliveryError(f"{exc}{suffix}", retryable=exc.retryable) from None
                asked = exc.retry_after or 0.0
            except OSError as exc:
                if tries >= self.spec.max_retries:
                    raise DeliveryError(f"{exporter.id}: {exc} (gave up after {tries + 1} attempts)") from None
                asked = 0.0
            cap = self.spec.max_retry_delay.total_seconds()
            delay = min(cap, self.spec.retry_delay.total_seconds() * (2**tries))
            delay *= 0.5 + random.random() / 2  # jitter spreads the retries of many shippers
            self.sleep(min(cap, max(delay, asked)))
            tries += 1

    # ------------------------------------------------------------ positions

    def _first_seq(self, now: datetime) -> int:
        """The first seq dated at or after ``now - lookbackPeriod`` (the head when there is none)."""
        rows = self.store.search(self.tenant, Query(after=now - self.spec.lookback), limit=1, order="asc")
        if rows:
            return rows[0].seq
        return _head_size(self.store, self.tenant)

    def _purge(self, shipped_below: int, head: int) -> int:
        """Purge, through retention's normal path, every matching event every exporter has shipped."""
        from auditledger import retention

        if shipped_below <= 0:
            return 0
        nxt = self.store.search(
            self.tenant, Query(), limit=1, after=Cursor(0, self.tenant, shipped_below - 1), order="asc"
        )
        if nxt:
            end = from_micros(nxt[0].date)
        else:
            last = self.store.search(self.tenant, Query(), limit=1, order="desc")
            if not last:
                return 0
            end = from_micros(last[0].date + 1)
        flt = retention.purge_filter(end, resources=list(self.spec.resources) or None, tenant=self.tenant)
        done = retention.Retention(self.ledger).purge(
            flt, reason=f"shipped by audit log shipper {self.spec.offset_key!r} (delete: true)"
        )
        return done.count


def _count(batch: Batch) -> int:
    return len(batch.seqs) if isinstance(batch, NativeLines) else len(batch)


def _only(batch: Batch, failed: Sequence[int]) -> Batch:
    """What is left of ``batch`` when the destination took all but the records at ``failed``."""
    keep = sorted({i for i in failed if 0 <= i < _count(batch)})
    if not keep:
        return batch
    if isinstance(batch, NativeLines):  # retried as Records: exporters take part of a batch only that way
        lines = batch.data.split(b"\n")
        return [Record.from_native(lines[i]) for i in keep]
    return [batch[i] for i in keep]


def _check_delete(spec: ShipperSpec) -> None:
    try:
        from auditledger import retention
    except ImportError:
        raise ConfigError("delete: purge is not available in this installation yet; set delete: false") from None
    if not hasattr(retention, "Retention"):
        raise ConfigError("delete: purge is not available in this installation yet; set delete: false")
    if spec.query.terms or spec.query.any_of or spec.query.after or spec.query.before:
        raise ConfigError("delete: cannot be combined with query: purge would remove events the query did not ship")


def _head_size(store: Store, tenant: str) -> int:
    for head in store.heads():
        if head.tenant == tenant:
            return head.size
    return 0


def run_shipper(
    ledger: AuditLog,
    spec: ShipperSpec | Mapping[str, Any] | str,
    *,
    tenant: str = "main",
    secrets: Secrets | Mapping[str, str] | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Ship everything pending once; returns the outputs (shipped, offsets, lag, errors per exporter).

    A configuration mistake raises ConfigError before anything is sent; a
    destination that keeps failing is reported under ``errors`` while the
    other exporters carry on (callers decide whether that fails their task).
    """
    return Shipper(ledger, spec, tenant=tenant, secrets=secrets, progress=progress).run(now=now).outputs()


def ship_checkpoint(
    spec: ShipperSpec | Mapping[str, Any] | str,
    name: str,
    text: str | bytes,
    *,
    tenant: str = "main",
    secrets: Secrets | Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Store a signed checkpoint (or any text blob) under ``name`` with every object-storing exporter.

    Witnessing: a copy of each checkpoint outside the operator's database.
    Returns exporter id -> where it went; exporters that do not store objects
    (HTTP log APIs, syslog) are skipped. Raises DeliveryError if a store refuses.
    """
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-/]{0,254}", name) or ".." in name:
        raise ConfigError(f"checkpoint name {name[:60]!r}: letters, digits, '_', '.', '-', '/' (no '..')")
    parsed = spec if isinstance(spec, ShipperSpec) else parse_spec(spec)
    resolved = secrets if isinstance(secrets, Secrets) else Secrets(secrets)
    data = text.encode("utf-8") if isinstance(text, str) else text
    out: dict[str, str] = {}
    for espec in parsed.log_exporters:
        exporter = registry.create(espec, resolved, tenant=tenant, offset_key=parsed.offset_key)
        if not exporter.stores_objects:
            continue
        try:
            exporter.open()
            out[exporter.id] = exporter.put_object(name, data)
        finally:
            exporter.close()
    return out


__all__ = ["ExporterResult", "ProgressEvent", "ShipResult", "Shipper", "run_shipper", "ship_checkpoint"]
