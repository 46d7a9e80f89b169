"""The audit log table: filter bar, timeline, rows, keyset paging, export and verify.

The whole filter is one ``q`` in the URL, written in the search language, so
a view can be shared by copying the address. The controls (resource types,
actions, actor, date presets) only write into ``q``: submitting them
redirects to the same page with the merged text. Paging is keyset: ``older``
continues after the last row shown, ``newer`` before the first one.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote, quote_plus

import orjson
from fastapi import APIRouter, Form, Request
from fastapi import Query as Q
from fastapi.responses import Response, StreamingResponse

from auditledger.errors import AuditLedgerError, ValidationError, VerificationError
from auditledger.ledger import AuditLog, encode_cursor
from auditledger.model import KESTRA_ACTIONS, Event, format_date, to_micros
from auditledger.query import Field, Match, Query, Term
from auditledger.server.ui import render, timeline, web
from auditledger.server.ui.session import same_text
from auditledger.store import Cursor

router = APIRouter()

SIZES = (25, 50, 100, 200)
EXAMPLES = (  # offered by the empty state
    "namespace:company.team",
    "resource:FLOW action:UPDATE,DELETE",
    "actor.type:SERVICE_ACCOUNT after:-7d",
    "-action:READ outcome:failure",
)
COMMON_RESOURCES = (
    "FLOW", "EXECUTION", "NAMESPACE", "NAMESPACE_FILE", "TRIGGER", "KVSTORE", "KV_STORE", "SECRET", "USER",
    "SERVICE_ACCOUNT", "GROUP", "ROLE", "BINDING", "TENANT", "SETTING", "APP", "DASHBOARD", "AUDITLOG",
)


def cursor_of(event: Event) -> str:
    return encode_cursor(Cursor(to_micros(event.date), event.tenant, event.seq))


def _controls_text(q: str, resource: list[str], action: list[str], actor: str, actor_type: str, range_: str) -> str:
    """``q`` with what the filter controls chose appended (and the date range replaced by a preset)."""
    query, error = render.safe_parse(q, datetime.now(UTC))
    text = q.strip()
    if range_ and error is None:
        text = render.with_range(query, f"-{range_}" if range_ != "all" else None, None)
    extra: list[Term] = []
    if resource:
        extra.append(Term(Field.RESOURCE, tuple(sorted({r.upper() for r in resource}))))
    if action:
        extra.append(Term(Field.ACTION, tuple(sorted({a.upper() for a in action}))))
    if actor.strip():
        extra.append(Term(Field.ACTOR, (actor.strip(),)))
    if actor_type:
        extra.append(Term(Field.ACTOR_TYPE, (actor_type.upper(),)))
    for term in extra:
        try:
            text = render.add_term(text, term)
        except ValidationError:
            continue  # a value the language cannot say: the typed filter stays as it was
    return text


def row_view(event: Event, q: str, links: render.ResourceLinks, now: datetime) -> dict[str, Any]:
    tags = []
    base = f"/ui/t/{quote(event.tenant, safe='')}?q="
    for key, value in event.details.items():
        try:
            href: str | None = base + quote_plus(render.add_term(q, render.tag_term(key, value)))
        except ValidationError:
            href = None
        tags.append({"key": key, "value": value, "href": href})
    return {
        "event": event,
        "kind": render.ACTOR_KINDS[str(event.actor.type)],
        "tags": tags,
        "iso": format_date(event.date),
        "ago": render.relative(event.date, now),
        "has_change": event.before is not None or event.after is not None,
        "open": links.href(event),
    }


@router.get("/")
def home(request: Request, t: str = "") -> Response:
    """The viewer's tenant (or the one the tenant switcher chose)."""
    who = web.viewer(request, None)
    if not isinstance(who, web.Viewer):
        return who
    tenant = t if t and who.principal.sees(t) else web.home_tenant(request, who.principal)
    return web.redirect(web.url(f"/ui/t/{quote(tenant, safe='')}"))


@router.get("/t/{tenant}")
def table(
    request: Request,
    tenant: str,
    q: str = "",
    older: str | None = None,
    newer: str | None = None,
    size: int = 50,
    resource: Annotated[list[str] | None, Q()] = None,
    action: Annotated[list[str] | None, Q()] = None,
    actor: str = "",
    actor_type: str = "",
    range: str = "",
) -> Response:
    started = time.perf_counter()
    who = web.viewer(request, tenant)
    if not isinstance(who, web.Viewer):
        return who
    if resource or action or actor or actor_type or range:
        merged = _controls_text(q, resource or [], action or [], actor, actor_type, range)
        return web.redirect(web.url(f"/ui/t/{tenant}", {"q": merged, "size": size if size != 50 else None}))
    size = size if size in SIZES else 50
    now = datetime.now(UTC)
    query, error = render.safe_parse(q, now)
    log = web.ledger(request)
    events: list[Event] = []
    has_older = has_newer = False
    try:
        if error is None:
            if newer:
                page = log.search(query, tenant=tenant, limit=size, cursor=newer, order="asc")
                events = list(reversed(page.events))
                has_newer, has_older = page.cursor is not None, True
            else:
                page = log.search(query, tenant=tenant, limit=size, cursor=older)
                events = page.events
                has_older, has_newer = page.cursor is not None, older is not None
    except ValidationError as exc:
        error = exc.message
    links = web.links(request)
    rows = [row_view(e, q, links, now) for e in events]
    # The exact count can cost a scan (a broad details filter matches 100,000s of rows): unless this
    # single page holds every match, the page asks for it after the rows are shown (/count).
    whole = error is None and not has_older and not has_newer
    chips = []
    for i, term in enumerate(query.terms):
        try:
            chips.append({"label": render.term_text(term), "q": render.without_term(query, i)})
        except ValidationError:
            continue
    empty_ledger = not rows and error is None and not q.strip() and older is None and newer is None
    response = web.page(
        request,
        "table.html",
        viewer=who,
        tenant=tenant,
        tenants=web.visible_tenants(request, who.principal),
        q=q,
        error=error,
        rows=rows,
        size=size,
        sizes=SIZES,
        total=len(rows) if whole else None,
        chips=chips,
        range_q=render.with_range(query, None, None) if (query.after or query.before) and error is None else None,
        query=query,
        presets=[(p, label, render.with_range(query, f"-{p}", None)) for p, label in render.PRESETS]
        if error is None
        else [],
        older=cursor_of(events[-1]) if has_older and events else None,
        newer=cursor_of(events[0]) if has_newer and events else None,
        resources=COMMON_RESOURCES,
        actions=sorted(KESTRA_ACTIONS),
        empty_ledger=empty_ledger,
        verified=web.verify_results(request).get(tenant),
        examples=EXAMPLES,
    )
    response.headers["Server-Timing"] = f"page;dur={(time.perf_counter() - started) * 1000:.1f}"
    return response


@router.get("/t/{tenant}/count")
def count_fragment(request: Request, tenant: str, q: str = "") -> Response:
    """How many events match, exact up to ``count_cap``: an HTML fragment the table page fetches."""
    who = web.viewer(request, tenant)
    if not isinstance(who, web.Viewer):
        return _fragment_refusal(who)
    query, error = render.safe_parse(q, datetime.now(UTC))
    cap = int(web.settings(request).count_cap)
    total = 0 if error else web.ledger(request).count(query, tenant=tenant, cap=cap)
    return web.page(request, "_count.html", total=min(total, cap), capped=total > cap)


def _fragment_refusal(who: Response) -> Response:
    # A fetch must not follow a redirect to the sign-in page into the page it fills.
    if who.status_code == 303:
        return Response("sign in again", status_code=401, media_type="text/plain")
    return who


@router.get("/t/{tenant}/timeline")
def timeline_fragment(request: Request, tenant: str, q: str = "") -> Response:
    """The histogram as an HTML fragment, fetched by the table page once its rows are shown."""
    who = web.viewer(request, tenant)
    if not isinstance(who, web.Viewer):
        return _fragment_refusal(who)
    now = datetime.now(UTC)
    query, error = render.safe_parse(q, now)
    line = None if error else timeline.build(web.ledger(request), query, tenant, now)
    bars = []
    if line is not None:
        for bar in line.bars:
            after, before = format_date(bar.start), format_date(bar.end)
            bars.append({"bar": bar, "q": render.with_range(query, after, before), "after": after, "before": before})
    return web.page(request, "_timeline.html", tenant=tenant, line=line, bars=bars, width=timeline.WIDTH,
                    height=timeline.HEIGHT, max_scanned=timeline.MAX_SCANNED)


# ---------------------------------------------------------------- export


CSV_COLUMNS = (
    "id", "tenant", "seq", "date", "resource_type", "action", "actor_type", "actor_id", "actor_name", "outcome",
    "details", "leaf_hash",
)


def _csv_rows(log: AuditLog, query: Query, tenant: str, limit: int) -> Iterator[str]:
    buffer = io.StringIO()
    out = csv.writer(buffer)
    out.writerow(CSV_COLUMNS)
    for n, event in enumerate(log.iter_search(query, tenant=tenant)):
        if n >= limit:
            break
        details = " ".join(render.term_text(Term(Field.DETAIL, (v,), k, Match.EXACT)) for k, v in event.details.items())
        values = (
            event.id, event.tenant, str(event.seq), format_date(event.date), event.resource_type, event.action,
            str(event.actor.type), event.actor.id, event.actor.name or "", str(event.outcome), details,
            event.leaf_hash.hex(),
        )
        out.writerow([render.csv_cell(v) for v in values])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _ndjson_rows(log: AuditLog, query: Query, tenant: str, limit: int) -> Iterator[bytes]:
    for n, event in enumerate(log.iter_search(query, tenant=tenant)):
        if n >= limit:
            break
        yield orjson.dumps(event.to_dict()) + b"\n"


@router.get("/t/{tenant}/export")
def export(request: Request, tenant: str, q: str = "", format: str = "csv") -> Response:
    who = web.viewer(request, tenant)
    if not isinstance(who, web.Viewer):
        return who
    query, error = render.safe_parse(q, datetime.now(UTC))
    if error is not None or format not in ("csv", "ndjson"):
        why = error or f"unknown export format {format[:20]!r}: use csv or ndjson"
        return web.refuse(request, who, tenant, why, 400)
    limit = int(web.settings(request).export_max_events)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"auditlogs-{tenant}-{stamp}.{format}"
    log = web.ledger(request)
    body = _csv_rows(log, query, tenant, limit) if format == "csv" else _ndjson_rows(log, query, tenant, limit)
    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "X-Content-Type-Options": "nosniff"}
    return StreamingResponse(body, media_type=media, headers=headers)


# ---------------------------------------------------------------- verify


@router.post("/t/{tenant}/verify")
def verify(
    request: Request, tenant: str, csrf: Annotated[str, Form()] = "", back: Annotated[str, Form()] = ""
) -> Response:
    """Recompute the tenant's leaf hashes now; the badge shows the outcome until the next run."""
    who = web.viewer(request, tenant)
    if not isinstance(who, web.Viewer):
        return who
    if not same_text(who.csrf, csrf):
        return web.refuse(request, who, tenant, web.EXPIRED)
    started = time.perf_counter()
    result: dict[str, Any] = {"at": datetime.now(UTC)}
    try:
        report = web.ledger(request).verify(tenant=tenant)
        result.update(ok=True, size=report.sizes.get(tenant, 0), purged=report.purged.get(tenant, 0))
    except VerificationError as exc:
        result.update(ok=False, message=exc.message, seq=exc.seq)
    except AuditLedgerError as exc:
        result.update(ok=False, message=str(exc), seq=None)
    result["seconds"] = time.perf_counter() - started
    web.verify_results(request)[tenant] = result
    target = back if back.startswith(f"/ui/t/{tenant}") else f"/ui/t/{tenant}"
    return web.redirect(target)
