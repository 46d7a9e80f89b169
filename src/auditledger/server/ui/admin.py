"""The admin page: API tokens (list, create, revoke), every change a CSRF-checked form.

A new token's secret is shown once, on the page that answers the create
form, and never again (only its hash is stored). An admin scoped to one
tenant manages that tenant's tokens only and cannot mint ``*`` tokens.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from auditledger.errors import AuditLedgerError
from auditledger.server.auth import ALL_TENANTS, ROLES, TokenInfo
from auditledger.server.ui import web
from auditledger.server.ui.session import same_text

router = APIRouter()


def _visible(tokens: list[TokenInfo], who: web.Viewer) -> list[TokenInfo]:
    scope = who.principal.tenant
    return [t for t in tokens if scope == ALL_TENANTS or t.tenant == scope]


def _operations(request: Request, who: web.Viewer) -> dict[str, object]:
    """Jobs (with their last run) and legal holds of the tenants the admin manages, read-only."""
    scope = None if who.principal.tenant == ALL_TENANTS else who.principal.tenant
    log = web.ledger(request)
    jobs: list[dict[str, object]] = []
    holds: list[object] = []
    try:
        from auditledger.jobs.runner import Jobs
        from auditledger.retention import Retention
    except ImportError:  # retention and jobs are optional parts of the server
        return {"jobs": jobs, "holds": holds}
    runner = Jobs(log)
    for tenant, job, revision in runner.list_jobs(tenant=scope, admin=True):
        last = runner.history(job, tenant=tenant, limit=1)
        crons = ", ".join(t.cron for t in job.triggers if not t.disabled) or "manual"
        jobs.append({"tenant": tenant, "job": job, "revision": revision, "last": last[0] if last else None,
                     "crons": crons, "tasks": ", ".join(t.type for t in job.tasks)})
    holds = [h for h in Retention(log).holds(tenant=scope) if h.active]
    return {"jobs": jobs, "holds": holds}


def _render(request: Request, who: web.Viewer, status: int = 200, **extra: object) -> Response:
    tokens = _visible(web.tokens(request).list(), who)
    context: dict[str, object] = {"created": None, "error": None, "notice": None, **_operations(request, who), **extra}
    return web.page(
        request,
        "admin.html",
        status,
        viewer=who,
        tenant=web.home_tenant(request, who.principal),
        tenants=web.visible_tenants(request, who.principal),
        tokens=tokens,
        roles=ROLES,
        verified=None,
        **context,
    )


@router.get("/admin")
def admin(request: Request) -> Response:
    who = web.viewer(request, None, role="admin")
    if not isinstance(who, web.Viewer):
        return who
    return _render(request, who)


@router.post("/admin/tokens")
def create_token(
    request: Request,
    csrf: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "auditor",
    tenant: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    days: Annotated[str, Form()] = "",
) -> Response:
    who = web.viewer(request, None, role="admin")
    if not isinstance(who, web.Viewer):
        return who
    if not same_text(who.csrf, csrf):
        return _render(request, who, 403, error=web.EXPIRED)
    tenant = tenant.strip() or who.principal.tenant
    if not who.principal.sees(tenant) or (tenant == ALL_TENANTS and who.principal.tenant != ALL_TENANTS):
        return _render(request, who, 403, error=f"Your token cannot create tokens for tenant {tenant[:64]!r}.")
    expires = None
    if days.strip():
        if not days.strip().isdigit() or not 1 <= int(days) <= 3650:
            return _render(request, who, 400, error="Expiry: a whole number of days from 1 to 3650, or empty.")
        expires = datetime.now(UTC) + timedelta(days=int(days))
    try:
        secret, info = web.tokens(request).create(
            role, tenant, name=name.strip() or None, expires_at=expires, actor=web.actor_of(who)
        )
    except AuditLedgerError as exc:
        return _render(request, who, 400, error=str(exc))
    return _render(request, who, created={"secret": secret, "info": info})


@router.post("/admin/tokens/{token_id}/revoke")
def revoke_token(request: Request, token_id: str, csrf: Annotated[str, Form()] = "") -> Response:
    who = web.viewer(request, None, role="admin")
    if not isinstance(who, web.Viewer):
        return who
    if not same_text(who.csrf, csrf):
        return _render(request, who, 403, error=web.EXPIRED)
    known = {t.id: t for t in _visible(web.tokens(request).list(), who)}
    if token_id not in known:
        return _render(request, who, 404, error=f"No token {token_id[:40]!r} that you may manage.")
    try:
        web.tokens(request).revoke(token_id, actor=web.actor_of(who))
    except AuditLedgerError as exc:
        return _render(request, who, 400, error=str(exc))
    note = f"Token {token_id} revoked." + (" That was your own token: you will be signed out." if
                                           token_id == who.principal.token_id else "")
    return _render(request, who, notice=note)
