"""Answer shapes: Kestra's ``ITEM`` field for field, and ours.

Kestra's shapes are in ``reference/kestra-api.md`` (from its 2.0 OpenAPI
specification). The pydantic models below only document the answers in our
OpenAPI; the routes build plain dicts with the functions here and serialise
them with orjson, so that a 1,000-item page is not validated twice.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from auditledger.diff import json_patch, to_text
from auditledger.model import ActorType, Event, format_date

KESTRA_USER_TYPES = ("STANDARD", "SERVICE_ACCOUNT")


def _detail(event: Event) -> dict[str, Any]:
    detail: dict[str, Any] = dict(event.details)
    revision = detail.get("revision")
    if isinstance(revision, str) and revision.isdigit() and len(revision) < 16:
        detail["revision"] = int(revision)  # Kestra's revision is a number; ours are stored as texts
    # Kestra's detail.type names the kind of object (its Java class); a client may send its own.
    detail["type"] = str(event.details.get("type", event.resource_type))
    detail["resourceType"] = event.resource_type
    detail["resource"] = event.resource_type
    return detail


def _user(event: Event) -> dict[str, Any] | None:
    actor = event.actor
    if actor.type is ActorType.SYSTEM:
        return None
    first, _, last = (actor.name or "").partition(" ")
    return {
        "type": "STANDARD" if actor.type is ActorType.USER else "SERVICE_ACCOUNT",
        "id": actor.id,
        "username": actor.id,
        "email": actor.id if "@" in actor.id else "",
        "firstName": first or None,
        "lastName": last or None,
    }


def patches(event: Event) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Kestra's appliedPatch (before -> after) and revertPatch (after -> before), RFC 6902."""
    return json_patch(event.before, event.after), json_patch(event.after, event.before)


def kestra_item(event: Event) -> dict[str, Any]:
    """One search result as Kestra answers it: ``{"auditLog": {...}, "user": {...} | null}``."""
    applied, revert = patches(event)
    return {
        "auditLog": {
            "id": event.id,
            "tenantId": event.tenant,
            "type": event.action,
            "detail": _detail(event),
            "date": format_date(event.date),
            "userId": event.actor.id,
            "ipAddress": event.actor.ip,
            "impersonatedBy": event.actor.impersonated_by,
            "appliedPatch": applied,
            "revertPatch": revert,
        },
        "user": _user(event),
    }


def history_entry(event: Event) -> dict[str, Any]:
    return {"id": event.id, "date": format_date(event.date), "username": event.actor.id}


def diff_texts(before: Any, after: Any) -> dict[str, str]:
    return {"before": to_text(before), "after": to_text(after)}


CSV_COLUMNS = (
    "id", "tenantId", "date", "resourceType", "type", "userId", "actorType", "actorName",
    "ipAddress", "impersonatedBy", "outcome", "detail", "seq",
)


def _csv_row(event: Event) -> list[Any]:
    a = event.actor
    details = orjson.dumps(dict(event.details), option=orjson.OPT_SORT_KEYS).decode()
    return [
        event.id, event.tenant, format_date(event.date), event.resource_type, event.action, a.id, str(a.type),
        a.name or "", a.ip or "", a.impersonated_by or "", str(event.outcome), details, event.seq,
    ]


def csv_chunks(events: Iterable[Event], chunk: int = 500) -> Iterator[bytes]:
    """The export as CSV (RFC 4180, header first), in chunks of ``chunk`` rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for n, event in enumerate(events, 1):
        writer.writerow(_csv_row(event))
        if n % chunk == 0:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode("utf-8")


def ndjson_chunks(events: Iterable[Event], chunk: int = 500) -> Iterator[bytes]:
    """The export as NDJSON, one event in our full shape per line."""
    lines: list[bytes] = []
    for event in events:
        lines.append(orjson.dumps(event.to_dict()))
        if len(lines) >= chunk:
            yield b"\n".join(lines) + b"\n"
            lines = []
    if lines:
        yield b"\n".join(lines) + b"\n"


# ---------------------------------------------------------------- OpenAPI documentation models


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class PatchOp(_Open):
    op: Literal["add", "remove", "replace", "move", "copy", "test"]
    path: str
    value: Any = None


class KestraDetail(_Open):
    type: str
    resourceType: str  # Kestra's camelCase names, field for field
    resource: str
    id: str | None = None
    namespace: str | None = None
    flowId: str | None = None
    executionId: str | None = None
    revision: int | str | None = None


class KestraAuditLog(_Open):
    id: str
    tenantId: str | None = None
    type: Literal[
        "READ", "CREATE", "UPDATE", "DELETE", "LOGIN", "LOGOUT", "IMPERSONATE", "LOGIN_FAILURE",
        "ACCOUNT_LOCKED", "PROMOTE", "UNKNOWN",
    ] | str = Field(description="The action: one of Kestra's, or a custom one of the form ^[A-Z][A-Z0-9_]{0,63}$.")
    detail: KestraDetail
    date: str
    userId: str
    ipAddress: str | None = None
    impersonatedBy: str | None = None
    appliedPatch: list[PatchOp] = []
    revertPatch: list[PatchOp] = []


class KestraUser(_Open):
    type: Literal["STANDARD", "SERVICE_ACCOUNT"]
    id: str | None = None
    username: str
    email: str
    firstName: str | None = None
    lastName: str | None = None


class KestraItem(BaseModel):
    auditLog: KestraAuditLog
    user: KestraUser | None


class TimelineBucket(BaseModel):
    start: str
    count: int


class Facets(BaseModel):
    resource_type: dict[str, int]
    action: dict[str, int]
    actor_type: dict[str, int]
    timeline: list[TimelineBucket]
    interval: Literal["hour", "day"]


class SearchAnswer(BaseModel):
    """Kestra's PagedResults plus our extensions (extra fields do not break Kestra's clients)."""

    results: list[KestraItem]
    total: int = Field(description="Matching entries, exact up to the count cap (see `more`).")
    more: bool = Field(False, description="True when more than `total` entries match (the count stopped at its cap).")
    cursor: str | None = Field(None, description="Pass as `cursor` to get the next page (keyset paging).")
    facets: Facets | None = None


class HistoryEntry(BaseModel):
    id: str
    date: str
    username: str


class DiffAnswer(BaseModel):
    before: str
    after: str


class Actor(BaseModel):
    type: Literal["USER", "SERVICE_ACCOUNT", "SYSTEM"]
    id: str
    name: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    impersonated_by: str | None = None


class EventShape(BaseModel):
    """Our full event shape."""

    id: str
    tenant: str
    seq: int
    date: str
    resource_type: str
    action: str
    actor: Actor
    details: dict[str, str]
    before: Any = None
    after: Any = None
    outcome: Literal["success", "failure"]
    occurred_at: str | None = None
    source: dict[str, str] | None = None
    leaf_hash: str


class ReceiptShape(BaseModel):
    id: str
    seq: int
    date: str | None = Field(description="Null for a duplicate (an idempotency key seen before).")
    duplicate: bool


class IngestAnswer(BaseModel):
    ids: list[str]
    seqs: list[int]
    receipts: list[ReceiptShape]


class ErrorAnswer(BaseModel):
    message: str
    field: str | None = None
