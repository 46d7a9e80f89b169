"""One event: every field, the raw JSON, its proof status, and the before/after diff."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from auditledger.errors import AuditLedgerError, NotFoundError
from auditledger.model import Event, format_date, from_micros
from auditledger.server.ui import diffview, render, web

router = APIRouter()

VIEWS = ("split", "unified", "revision")


def _event(request: Request, tenant: str, id: str) -> Event | None:
    try:
        return web.ledger(request).get(id, tenant=tenant)
    except NotFoundError:
        return None


def proof_status(request: Request, event: Event) -> dict[str, Any]:
    """Whether the latest signed checkpoint includes ``event``: the proof is computed and checked here.

    States: ``none`` (no checkpoint, or none yet that covers the event), ``ok``
    (inclusion proof verified against the checkpoint's signed root), ``bad``.
    """
    try:
        from auditledger import checkpoint, evidence, tree
    except ImportError:  # the proofs part is not installed
        return {"state": "none", "text": "No checkpoint yet: this server does not make checkpoints."}
    store = web.ledger(request).store
    try:
        latest = tree.latest_checkpoint(store, event.tenant)
        if latest is None:
            return {"state": "none", "text": "No checkpoint yet."}
        if latest.size <= event.seq:
            return {
                "state": "none",
                "text": f"Not in a checkpoint yet: the latest covers positions 0 to {latest.size - 1}; "
                f"this event is at {event.seq}.",
            }
        answer = evidence.inclusion_answer(store, event.tenant, event.id, latest.size)
        signed, signatures = checkpoint.parse_checkpoint(latest.note)
        if base64.b64decode(answer["root"]) != signed.root or signed.size != latest.size:
            why = f"The tree's root at size {latest.size} differs from the signed checkpoint."
            return {"state": "bad", "text": why}
        if answer["leaf_hash"] != base64.b64encode(event.leaf_hash).decode():
            return {"state": "bad", "text": "The tree's leaf differs from this event's hash."}
        names = ", ".join(sorted({s.name for s in signatures})) or "nobody"
        signer = _trusted_key(request)
        if signer is not None:
            checkpoint.verify_checkpoint(latest.note, [signer])
            names += " (signature checked with this server's key)"
    except AuditLedgerError as exc:
        return {"state": "bad", "text": f"Proof failed: {exc}"}
    when = format_date(from_micros(latest.created_at))
    return {
        "state": "ok",
        "text": f"Verified in checkpoint of size {latest.size}, signed by {names} at {when}.",
        "root": signed.root.hex(),
    }


def _trusted_key(request: Request) -> str | None:
    """This server's verifier key, when it signs checkpoints."""
    from auditledger import tree

    conf = web.settings(request)
    try:
        return tree.load_signer(getattr(conf, "signing_key_file", None), getattr(conf, "log_name", "auditledger")).vkey
    except AuditLedgerError:
        return None


@router.get("/t/{tenant}/events/{id}")
def event_page(request: Request, tenant: str, id: str, q: str = "") -> Response:
    who = web.viewer(request, tenant)
    if not isinstance(who, web.Viewer):
        return who
    event = _event(request, tenant, id)
    if event is None:
        return web.refuse(request, who, tenant, f"No event {id} in tenant {tenant}.", 404)
    now = datetime.now(UTC)
    raw = orjson.dumps(event.to_dict(), option=orjson.OPT_INDENT_2).decode()
    return web.page(
        request,
        "event.html",
        viewer=who,
        tenant=tenant,
        tenants=web.visible_tenants(request, who.principal),
        e=event,
        row=_row(event, q, request, now),
        raw=raw,
        proof=proof_status(request, event),
        q=q,
        verified=web.verify_results(request).get(tenant),
    )


def _row(event: Event, q: str, request: Request, now: datetime) -> dict[str, Any]:
    from auditledger.server.ui.table import row_view

    return row_view(event, q, web.links(request), now)


@router.get("/t/{tenant}/events/{id}/diff")
def diff_page(request: Request, tenant: str, id: str, view: str = "split", q: str = "") -> Response:
    who = web.viewer(request, tenant)
    if not isinstance(who, web.Viewer):
        return who
    event = _event(request, tenant, id)
    if event is None:
        return web.refuse(request, who, tenant, f"No event {id} in tenant {tenant}.", 404)
    view = view if view in VIEWS else "split"
    model = diffview.build(event.before, event.after)
    revision = diffview.build(event.after, event.after) if view == "revision" else None
    return web.page(
        request,
        "diff.html",
        viewer=who,
        tenant=tenant,
        tenants=web.visible_tenants(request, who.principal),
        e=event,
        row=_row(event, q, request, datetime.now(UTC)),
        d=model,
        revision=revision,
        view=view,
        views=VIEWS,
        q=q,
        empty=event.before is None and event.after is None,
        iso=format_date(event.date),
        verified=web.verify_results(request).get(tenant),
        ago=render.relative(event.date, datetime.now(UTC)),
    )
