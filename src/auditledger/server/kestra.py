"""Kestra's audit-log routes, field for field, with our extensions beside them.

Paths, parameters and answers follow ``reference/kestra-api.md`` (Kestra 2.0
EE OpenAPI): ``search`` (``page``/``size``/``sort``, ``filters[FIELD][OP]``
brackets and the 1.x flat parameters, ``q`` in our search language),
``export`` (CSV, streamed), ``find``, ``history/{detailId}`` and
``{id}/diff``, per tenant and, for instance administrators, across tenants.
Extensions: ``cursor`` (keyset paging), ``more`` (the total stopped at its
cap), ``facets`` and ``export?format=ndjson``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response, StreamingResponse

from auditledger import canonical
from auditledger.errors import NotFoundError, ValidationError
from auditledger.kestra_filters import from_kestra_params
from auditledger.ledger import AuditLog, decode_cursor, encode_cursor
from auditledger.model import KESTRA_ACTIONS, KESTRA_RESOURCE_TYPES, Event, check_name, format_date, from_micros
from auditledger.query import Field, Term, all_of
from auditledger.query import Query as Q
from auditledger.server import shapes
from auditledger.server.auth import Principal, require, require_instance_admin
from auditledger.server.deps import get_ledger, get_settings, json_response
from auditledger.store import Cursor

router = APIRouter(tags=["Kestra audit logs"])

# Parameters the routes read themselves; everything else is a filter.
_OWN_PARAMS = frozenset({"page", "size", "sort", "cursor", "facets", "interval", "format", "tenant"})
MAX_WINDOW = 10_000  # page * size beyond this must use the cursor (as Elasticsearch's max_result_window)
_BUCKETS = {"hour": 3_600_000_000, "day": 86_400_000_000}

TenantPath = Annotated[str, Path(description="Tenant id, e.g. main.", pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
Page = Annotated[int, Query(ge=1, le=MAX_WINDOW, description="1-based page number.")]
Size = Annotated[int, Query(ge=1, le=1000, description="Entries per page.")]
Sort = Annotated[list[str] | None, Query(description="`date:desc` (default) or `date:asc`.")]
_FILTERS_DOC = (
    "Filters travel as `filters[FIELD][OP]=VALUE` (fields q, namespace, flowId, executionId, userId, id, "
    "resources, details, type, startDate, endDate, timeRange; map values as `filters[details][EQUALS][KEY]`; "
    "OR groups as `filters[or][i][FIELD][OP]`). The Kestra 1.x flat parameters below are accepted too."
)


class Filters:
    """The documented flat filters (the bracket ones cannot be declared in OpenAPI; they are read raw)."""

    def __init__(
        self,
        q: Annotated[str | None, Query(description="Search language, e.g. `namespace:company flowId:hello`.")] = None,
        namespace: Annotated[str | None, Query(description="Namespace and its children.")] = None,
        flowId: Annotated[str | None, Query()] = None,
        executionId: Annotated[str | None, Query()] = None,
        userId: Annotated[str | None, Query()] = None,
        id: Annotated[str | None, Query(description="The resource id (details `id`).")] = None,
        resources: Annotated[list[str] | None, Query(description="Resource types (any of).")] = None,
        details: Annotated[list[str] | None, Query(description="`key:value` details, all of them.")] = None,
        type: Annotated[list[str] | None, Query(description="Actions (any of).")] = None,
        startDate: Annotated[str | None, Query(description="ISO 8601 date-time, inclusive.")] = None,
        endDate: Annotated[str | None, Query(description="ISO 8601 date-time, inclusive.")] = None,
        timeRange: Annotated[str | None, Query(description="ISO 8601 duration back from now, e.g. PT24H.")] = None,
    ) -> None:
        pass


def query_of(request: Request) -> Q:
    """The filters of ``request``'s query string (brackets, 1.x flat, ``q``) as one Query."""
    return from_kestra_params(request.query_params.multi_items(), now=datetime.now(UTC), ignore=_OWN_PARAMS)


def order_of(sort: list[str] | None) -> Literal["desc", "asc"]:
    order: Literal["desc", "asc"] = "desc"
    for item in sort or []:
        field, _, direction = item.partition(":")
        if field != "date" or direction.lower() not in ("", "asc", "desc"):
            raise ValidationError("sort", f"{item[:60]!r}: only date:asc and date:desc are supported")
        order = "asc" if direction.lower() == "asc" else "desc"
    return order


def _search(
    request: Request, ledger: AuditLog, tenant: str | None, page: int, size: int, sort: list[str] | None,
    cursor: str | None, facets: bool, interval: Literal["hour", "day"],
) -> Response:
    settings = get_settings(request)
    query = query_of(request)
    order = order_of(sort)
    store = ledger.store
    if cursor is not None:
        after: Cursor | None = decode_cursor(cursor)
        rows = store.search(tenant, query, limit=size + 1, after=after, order=order)
        more_rows = len(rows) > size
        rows = rows[:size]
    else:
        if page * size > MAX_WINDOW:
            raise ValidationError("page", f"page * size may not pass {MAX_WINDOW}; use the cursor to go deeper")
        window = store.search(tenant, query, limit=page * size + 1, order=order)
        more_rows = len(window) > page * size
        rows = window[(page - 1) * size : page * size]
    events = [canonical.decode(r.body) for r in rows]
    count = store.count(tenant, query, cap=settings.count_cap)
    answer: dict[str, Any] = {
        "results": [shapes.kestra_item(e) for e in events],
        "total": min(count, settings.count_cap),
        "more": count > settings.count_cap,
        "cursor": encode_cursor(Cursor(rows[-1].date, rows[-1].tenant, rows[-1].seq)) if rows and more_rows else None,
    }
    if facets:
        found = store.facets(tenant, query, bucket_micros=_BUCKETS[interval])
        answer["facets"] = {
            "resource_type": found.resource_type,
            "action": found.action,
            "actor_type": found.actor_type,
            "timeline": [{"start": format_date(from_micros(b)), "count": n} for b, n in found.timeline],
            "interval": interval,
        }
    return json_response(answer)


_SEARCH_DOC = "One page of the audit log. " + _FILTERS_DOC
Cursor_ = Annotated[str | None, Query(description="Keyset cursor from the previous answer; `page` is then ignored.")]
Facets_ = Annotated[bool, Query(description="Add counts by resource type, action, actor type and a timeline.")]
Interval = Annotated[Literal["hour", "day"], Query(description="Timeline bucket of the facets.")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": shapes.ErrorAnswer} for code in (400, 401, 403, 404, 413, 422, 503)
}


@router.get(
    "/api/v1/auditlogs/search", response_model=shapes.SearchAnswer, responses=_ERRORS,
    summary="Search across tenants (instance administrators)", description=_SEARCH_DOC,
)
def search_all(
    request: Request, page: Page = 1, size: Size = 10, sort: Sort = None, cursor: Cursor_ = None,
    facets: Facets_ = False, interval: Interval = "day", _f: Filters = Depends(),
    _p: Principal = Depends(require_instance_admin), ledger: AuditLog = Depends(get_ledger),
) -> Response:
    return _search(request, ledger, None, page, size, sort, cursor, facets, interval)


def _export(request: Request, ledger: AuditLog, tenant: str | None, fmt: str, sort: list[str] | None) -> Response:
    query = query_of(request)
    order = order_of(sort)
    limit = get_settings(request).export_max_events
    events: Iterator[Event] = itertools.islice(ledger.iter_search(query, tenant=tenant, order=order), limit)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if fmt == "ndjson":
        return StreamingResponse(
            shapes.ndjson_chunks(events), media_type="application/x-ndjson",
            headers={"Content-Disposition": f'attachment; filename="auditlogs-{stamp}.ndjson"'},
        )
    return StreamingResponse(
        shapes.csv_chunks(events), media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="auditlogs-{stamp}.csv"'},
    )


Format = Annotated[Literal["csv", "ndjson"], Query(description="`csv` (Kestra's) or `ndjson` (our full shape).")]
_EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        }
    },
    **_ERRORS,
}


@router.get(
    "/api/v1/auditlogs/export", response_class=StreamingResponse, responses=_EXPORT_RESPONSES,
    summary="Export across tenants (instance administrators)", description="Streams every match. " + _FILTERS_DOC,
)
def export_all(
    request: Request, format: Format = "csv", sort: Sort = None, _f: Filters = Depends(),
    _p: Principal = Depends(require_instance_admin), ledger: AuditLog = Depends(get_ledger),
) -> Response:
    return _export(request, ledger, None, format, sort)


def _diff(ledger: AuditLog, tenant: str | None, id: str, previous_id: str | None) -> Response:
    event = ledger.get(id, tenant=tenant)
    if previous_id is None:
        return json_response(shapes.diff_texts(event.before, event.after))
    previous = ledger.get(previous_id, tenant=event.tenant if tenant is None else tenant)
    return json_response(shapes.diff_texts(previous.after, event.after))


PreviousId = Annotated[str | None, Query(alias="previousId", description="Compare with this earlier entry's after.")]
EventId = Annotated[str, Path(description="Event id.", max_length=64)]


@router.get(
    "/api/v1/auditlogs/{id}/diff", response_model=shapes.DiffAnswer, responses=_ERRORS,
    summary="Diff of one entry across tenants (instance administrators)",
)
def diff_all(
    id: EventId, previous_id: PreviousId = None,
    _p: Principal = Depends(require_instance_admin), ledger: AuditLog = Depends(get_ledger),
) -> Response:
    return _diff(ledger, None, id, previous_id)


@router.get(
    "/api/v1/{tenant}/auditlogs/search", response_model=shapes.SearchAnswer, responses=_ERRORS,
    summary="Search the tenant's audit log", description=_SEARCH_DOC,
)
def search(
    request: Request, tenant: TenantPath, page: Page = 1, size: Size = 10, sort: Sort = None,
    cursor: Cursor_ = None, facets: Facets_ = False, interval: Interval = "day", _f: Filters = Depends(),
    _p: Principal = Depends(require("auditor")), ledger: AuditLog = Depends(get_ledger),
) -> Response:
    return _search(request, ledger, tenant, page, size, sort, cursor, facets, interval)


@router.get(
    "/api/v1/{tenant}/auditlogs/export", response_class=StreamingResponse, responses=_EXPORT_RESPONSES,
    summary="Export the tenant's audit log", description="Streams every match. " + _FILTERS_DOC,
)
def export(
    request: Request, tenant: TenantPath, format: Format = "csv", sort: Sort = None, _f: Filters = Depends(),
    _p: Principal = Depends(require("auditor")), ledger: AuditLog = Depends(get_ledger),
) -> Response:
    return _export(request, ledger, tenant, format, sort)


_FIND_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "resource": {"type": "string", "description": "Resource type, e.g. FLOW."},
                    "type": {"type": "string", "description": "Action, e.g. UPDATE (optional)."},
                    "detail": {"type": "object", "additionalProperties": {"type": ["string", "integer"]}},
                },
                "required": ["resource"],
            }
        }
    },
}


@router.post(
    "/api/v1/{tenant}/auditlogs/find", response_model=shapes.KestraItem, responses=_ERRORS,
    openapi_extra={"requestBody": _FIND_BODY}, summary="The latest entry matching a resource and its details",
)
async def find(
    request: Request, tenant: TenantPath,
    _p: Principal = Depends(require("auditor")), ledger: AuditLog = Depends(get_ledger),
) -> Response:
    body = parse_json(await request.body())
    if not isinstance(body, dict):
        raise ValidationError("body", "expected an object {resource, type, detail}")
    unknown = set(body) - {"resource", "type", "detail"}
    if unknown:
        raise ValidationError(sorted(unknown)[0], "unknown field")
    terms = [Term(Field.RESOURCE, (check_name(body.get("resource"), "resource", KESTRA_RESOURCE_TYPES),))]
    if body.get("type") is not None:
        terms.append(Term(Field.ACTION, (check_name(body["type"], "type", KESTRA_ACTIONS),)))
    detail = body.get("detail") or {}
    if not isinstance(detail, dict):
        raise ValidationError("detail", "expected an object of key: value")
    for key, value in detail.items():
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValidationError(f"detail.{key}", "expected a text or an integer")
        terms.append(Term(Field.DETAIL, (str(value),), key=str(key)))
    rows = ledger.store.search(tenant, all_of(Q(tuple(terms))), limit=1)
    if not rows:
        raise NotFoundError("no entry matches")
    return json_response(shapes.kestra_item(canonical.decode(rows[0].body)))


@router.get(
    "/api/v1/{tenant}/auditlogs/history/{detailId}", response_model=list[shapes.HistoryEntry], responses=_ERRORS,
    summary="Every entry recorded for one resource id (details id), newest first",
)
def history(
    request: Request, tenant: TenantPath,
    detail_id: Annotated[str, Path(alias="detailId", max_length=1024)],
    _p: Principal = Depends(require("auditor")), ledger: AuditLog = Depends(get_ledger),
) -> Response:
    if "\x00" in detail_id:
        return json_response([])  # no details value holds NUL, and PostgreSQL cannot bind one
    limit = get_settings(request).export_max_events
    query = Q((Term(Field.DETAIL, (detail_id,), key="id"),))
    entries = [shapes.history_entry(e) for e in itertools.islice(ledger.iter_search(query, tenant=tenant), limit)]
    return json_response(entries)


@router.get(
    "/api/v1/{tenant}/auditlogs/{id}/diff", response_model=shapes.DiffAnswer, responses=_ERRORS,
    summary="The change one entry captured, or between two entries, as texts",
)
def diff(
    tenant: TenantPath, id: EventId, previous_id: PreviousId = None,
    _p: Principal = Depends(require("auditor")), ledger: AuditLog = Depends(get_ledger),
) -> Response:
    return _diff(ledger, tenant, id, previous_id)


def parse_json(raw: bytes) -> Any:
    """The request body as JSON; a 400 naming ``body`` when it is not JSON."""
    if not raw:
        raise ValidationError("body", "is empty; expected JSON")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationError("body", f"is not valid JSON: {exc}") from None
