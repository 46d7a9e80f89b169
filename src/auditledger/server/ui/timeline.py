"""The timeline histogram above the table: matching events per time bucket.

The span is the query's date range, or from the oldest matching event to now;
it is cut into at most :data:`MAX_BUCKETS` buckets of a round size (a minute
up to a week) so that a bar reads as "this hour" or "that day". Without
details terms each bar is one ``ledger.count`` over a date range, a range scan
of the date index; with details terms, whose subquery would be re-run for
every bar, the store's ``facets`` counts all bars in one pass, over at most
:data:`MAX_SCANNED` matches (the newest 30 days, 7 days, 2 days ... when more match).
The page loads the histogram after the table, never in the way of the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from auditledger.ledger import AuditLog
from auditledger.model import to_micros
from auditledger.query import Field, Query

MAX_BUCKETS = 48
_SIZES = tuple(
    timedelta(seconds=s)
    for s in (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 30 * 86400)
)
MAX_SCANNED = 20_000
_WINDOWS = (timedelta(days=30), timedelta(days=7), timedelta(days=2), timedelta(days=1), timedelta(hours=1))
WIDTH = 1000
HEIGHT = 90


@dataclass(frozen=True, slots=True)
class Bar:
    start: datetime
    end: datetime
    count: int
    capped: bool
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True, slots=True)
class Timeline:
    bars: list[Bar]
    start: datetime
    end: datetime
    step: timedelta
    total: int
    peak: int
    partial: bool = False  # only the newest part of the range is charted (too many matches)


def bucket_size(span: timedelta) -> timedelta:
    for size in _SIZES:
        if span / size <= MAX_BUCKETS:
            return size
    return span / MAX_BUCKETS


def _floor(moment: datetime, step: timedelta) -> datetime:
    micros = to_micros(moment)
    size = int(step.total_seconds() * 1_000_000)
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros - micros % size)


def _by_details(query: Query) -> bool:
    return any(t.field in (Field.DETAIL, Field.TEXT) for t in query.terms)


def _bounded_start(ledger: AuditLog, query: Query, tenant: str, start: datetime, end: datetime) -> datetime:
    """The latest start, from ``start`` back, whose span holds at most :data:`MAX_SCANNED` matches.

    A details filter costs a lookup per matching row; past a few tens of thousands
    the chart would take longer than anyone waits, so it covers the newest part.
    """
    for span in (None, *_WINDOWS):
        lo = start if span is None else end - span
        if lo < start:
            continue
        if ledger.count(Query(query.terms, lo, end, query.any_of), tenant=tenant, cap=MAX_SCANNED) <= MAX_SCANNED:
            return lo
    return end - _WINDOWS[-1]


def _counts(
    ledger: AuditLog, query: Query, tenant: str, edges: list[datetime], start: datetime, end: datetime,
    step: timedelta, cap: int,
) -> list[int]:
    if _by_details(query):
        size = int(step.total_seconds() * 1_000_000)
        span = Query(query.terms, start, end, query.any_of)
        facets = ledger.store.facets(tenant, span, bucket_micros=size, counts=False)
        found = dict(facets.timeline)
        return [found.get(to_micros(lo), 0) for lo in edges]
    return [
        ledger.count(Query(query.terms, max(lo, start), min(lo + step, end), query.any_of), tenant=tenant, cap=cap)
        for lo in edges
    ]


def build(
    ledger: AuditLog, query: Query, tenant: str, now: datetime, *, cap: int = 1_000_000
) -> Timeline | None:
    """The histogram of ``query`` in ``tenant``, or None when nothing matches."""
    end = min(query.before or now, now + timedelta(seconds=1))
    start = query.after
    if start is None:
        oldest = ledger.search(query, tenant=tenant, limit=1, order="asc").events
        if not oldest:
            return None
        start = oldest[0].date
    if start >= end:
        return None
    full_start = start
    if _by_details(query):
        start = _bounded_start(ledger, query, tenant, start, end)
    step = bucket_size(end - start)
    edges: list[datetime] = []
    edge = _floor(start, step)
    while edge < end:
        edges.append(edge)
        edge += step
    counts = _counts(ledger, query, tenant, edges, start, end, step, cap)
    peak = max(counts, default=0)
    if peak == 0:
        return None
    width = WIDTH / len(edges)
    bars = []
    for i, (lo, count) in enumerate(zip(edges, counts, strict=True)):
        height = 0.0 if count == 0 else max(2.0, HEIGHT * count / peak)
        bars.append(
            Bar(max(lo, start), min(lo + step, end), min(count, cap), count > cap,
                i * width, HEIGHT - height, max(width - 1.0, 1.0), height)
        )
    return Timeline(bars, start, end, step, sum(b.count for b in bars), peak, start > full_start)
