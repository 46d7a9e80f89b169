"""Our own event routes beside Kestra's: record events, read one in full.

``POST /api/v1/{tenant}/auditlogs`` takes one event, a list of events or
``{"events": [...]}``; each is validated (a refused batch stores nothing),
stamped with who sent it (the token id and the source IP, which the caller
cannot override), handed to the group-commit writer and acknowledged only
after the commit. Events carrying an ``idempotency_key`` already stored for
the tenant are acknowledged again with their first id and seq, not stored twice.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from auditledger import canonical
from auditledger.errors import ValidationError
from auditledger.ledger import AuditLog
from auditledger.model import Limits, event_input, format_date, invalid_text_field
from auditledger.server import shapes
from auditledger.server.auth import Principal, require
from auditledger.server.deps import client_ip, get_ledger, get_settings, get_writer, json_response
from auditledger.server.kestra import TenantPath, parse_json

router = APIRouter(tags=["Events"])

_TEXT = {"type": "string", "maxLength": 256}
_NAME = {"type": "string", "pattern": "^[A-Z][A-Z0-9_]{0,63}$"}
_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["resource_type", "action", "actor"],
    "additionalProperties": False,
    "properties": {
        "resource_type": _NAME,
        "action": _NAME,
        "actor": {
            "type": "object",
            "required": ["type", "id"],
            "additionalProperties": False,
            "properties": {
                "type": {"type": "string", "enum": ["USER", "SERVICE_ACCOUNT", "SYSTEM"]},
                "id": {**_TEXT, "minLength": 1},
                "name": _TEXT,
                "ip": _TEXT,
                "user_agent": _TEXT,
                "impersonated_by": _TEXT,
            },
        },
        "details": {
            "type": "object",
            "maxProperties": 64,
            "propertyNames": {"pattern": "^[A-Za-z][A-Za-z0-9_.-]{0,63}$"},
            "additionalProperties": {"type": "string", "maxLength": 1024},
        },
        "before": {"description": "State before: any JSON value or a text (e.g. YAML)."},
        "after": {"description": "State after: any JSON value or a text (e.g. YAML)."},
        "outcome": {"type": "string", "enum": ["success", "failure"]},
        "occurred_at": {"type": "string", "format": "date-time", "description": "UTC, e.g. 2026-01-01T10:00:00Z."},
        "idempotency_key": {"type": "string", "maxLength": 128, "description": "Stored once per tenant."},
    },
}
_INGEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    _EVENT_SCHEMA,
                    {"type": "array", "items": _EVENT_SCHEMA, "minItems": 1},
                    {
                        "type": "object",
                        "required": ["events"],
                        "additionalProperties": False,
                        "properties": {"events": {"type": "array", "items": _EVENT_SCHEMA, "minItems": 1}},
                    },
                ]
            }
        }
    },
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": shapes.ErrorAnswer} for code in (400, 401, 403, 404, 413, 422, 429, 503)
}


def _events_of(body: Any) -> list[Any]:
    if isinstance(body, list):
        return body
    if isinstance(body, dict) and set(body) == {"events"}:
        events = body["events"]
        if not isinstance(events, list):
            raise ValidationError("events", "expected a list of events")
        return events
    if isinstance(body, dict):
        return [body]
    raise ValidationError("body", "expected an event, a list of events or {\"events\": [...]}")


@router.post(
    "/api/v1/{tenant}/auditlogs", status_code=201, response_model=shapes.IngestAnswer, responses=_ERRORS,
    openapi_extra={"requestBody": _INGEST_BODY}, summary="Record one event or a batch",
)
async def record(
    request: Request, tenant: TenantPath, principal: Principal = Depends(require("ingest")),
) -> Response:
    settings = get_settings(request)
    body = parse_json(await request.body())
    single = isinstance(body, dict) and "events" not in body
    raw = _events_of(body)
    if not raw:
        raise ValidationError("events", "is empty")
    if len(raw) > settings.max_batch:
        raise ValidationError("events", f"has {len(raw)} events, at most {settings.max_batch} per request")
    limits = Limits(max_state_bytes=settings.max_state_bytes)
    source = {"token": principal.token_id, "ip": client_ip(request)}
    prepared = []
    for i, item in enumerate(raw):
        if isinstance(item, dict) and "source" in item:
            raise ValidationError(f"events[{i}].source", "is set by the server (token and source IP)")
        try:
            draft = event_input(item, limits, source=source)
            try:
                # Encoded here, on the request's side of the writer: see Writer.submit_prepared.
                prepared.append(canonical.prepare(draft, tenant))
            except orjson.JSONEncodeError:
                raise ValidationError(invalid_text_field(draft), "is not valid UTF-8 (unpaired surrogate)") from None
        except ValidationError as exc:
            field = exc.field if single else f"events[{i}].{exc.field}"
            raise ValidationError(field, exc.message) from None
    receipts = await asyncio.wrap_future(get_writer(request).submit_prepared(prepared))
    request.app.state.metrics.inc("auditledger_events_ingested_total", len(receipts), tenant=tenant)
    return json_response(
        {
            "ids": [r.id for r in receipts],
            "seqs": [r.seq for r in receipts],
            "receipts": [
                {
                    "id": r.id,
                    "seq": r.seq,
                    "date": None if r.duplicate else format_date(r.date),
                    "duplicate": r.duplicate,
                }
                for r in receipts
            ],
        },
        status_code=201,
    )


@router.get(
    "/api/v1/{tenant}/auditlogs/{id}", response_model=shapes.EventShape, responses=_ERRORS,
    summary="One event in our full shape",
)
def get_event(
    tenant: TenantPath, id: Annotated[str, Path(max_length=64)],
    _p: Principal = Depends(require("auditor")), ledger: AuditLog = Depends(get_ledger),
) -> Response:
    return json_response(ledger.get(id, tenant=tenant).to_dict())
