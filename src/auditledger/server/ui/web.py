"""Plumbing shared by the UI's pages: templates, headers, the signed-in viewer.

Templates are Jinja2 with autoescaping on for every file, and no template
marks user data ``|safe``: whatever an event carries is shown as text.
Every page is sent with a Content-Security-Policy that allows only the
product's own script and style files, so even a missed escape could not run
an injected script.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from auditledger.errors import AuthError
from auditledger.model import TENANT_RE, Actor, format_date
from auditledger.server.auth import DEV_PRINCIPAL, Principal, Tokens, audit_read
from auditledger.server.deps import get_ledger, get_settings
from auditledger.server.ui import render
from auditledger.server.ui.session import COOKIE_PATH, SESSION_COOKIE, Sealer

HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Filters can name people and resources: never send them to the sites we link to.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["utc"] = format_date
_lock = threading.Lock()


def _urlq(value: str) -> str:
    return quote(value, safe="")


_env.filters["urlq"] = _urlq


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = _env.get_template(template).render(request=request, **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def refuse(request: Request, who: Viewer | None, tenant: str | None, why: str, status: int = 403) -> HTMLResponse:
    """The page that says why something cannot be shown or done."""
    return page(request, "denied.html", status, viewer=who, tenant=tenant, why=why)


EXPIRED = "The form expired; reload the page and try again."


def redirect(url: str, status: int = 303) -> RedirectResponse:
    return RedirectResponse(url, status_code=status, headers=SECURITY_HEADERS)


def url(path: str, params: Mapping[str, str | int | None] | None = None) -> str:
    """``path`` with the non-empty ``params`` as a query string."""
    clean = {k: str(v) for k, v in (params or {}).items() if v not in (None, "")}
    return path + ("?" + urlencode(clean) if clean else "")


_env.globals["url"] = url


# ---------------------------------------------------------------- app state


# The app's ledger and settings, as every feature router reads them.
settings = get_settings
ledger = get_ledger


def tokens(request: Request) -> Tokens:
    found: Tokens = request.app.state.tokens
    return found


def _lazy(request: Request, name: str, make: Any) -> Any:
    state = request.app.state
    value = getattr(state, name, None)
    if value is None:
        with _lock:
            value = getattr(state, name, None)
            if value is None:
                value = make()
                setattr(state, name, value)
    return value


def sealer(request: Request) -> Sealer:
    conf = settings(request)
    found: Sealer = _lazy(request, "ui_sealer", lambda: Sealer(conf.session_secret, int(conf.session_hours * 3600)))
    return found


def links(request: Request) -> render.ResourceLinks:
    raw = settings(request).ui_resource_urls
    found: render.ResourceLinks = _lazy(request, "ui_links", lambda: render.ResourceLinks.from_settings(raw))
    return found


def verify_results(request: Request) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = _lazy(request, "ui_verify", dict)
    return found


# ---------------------------------------------------------------- the viewer


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who looks at the page, and the CSRF token their forms must carry."""

    principal: Principal
    csrf: str

    @property
    def is_admin(self) -> bool:
        return self.principal.has("admin")


def signin_url(request: Request, message: str | None = None) -> str:
    target = request.url.path + ("?" + request.url.query if request.url.query else "")
    return url("/ui/signin", {"next": target, "m": message})


def viewer(request: Request, tenant: str | None, role: str = "auditor") -> Viewer | Response:
    """The signed-in viewer allowed ``role`` on ``tenant``, or the response that says why not.

    No session: a redirect to sign-in. A revoked or expired token: the same, with a
    message, and the cookie cleared. A role or tenant the token lacks: a 403 page.
    """
    seal = sealer(request)
    if settings(request).insecure_dev:
        principal = DEV_PRINCIPAL
        sid = "insecure-dev"
    else:
        session = seal.open(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return redirect(signin_url(request))
        try:
            principal = tokens(request).authenticate(session.token)
        except AuthError as exc:
            response = redirect(signin_url(request, f"Your session ended: {exc}."))
            response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
            return response
        sid = session.sid
    request.state.principal = principal
    who = Viewer(principal, seal.csrf(sid))
    if tenant is not None and TENANT_RE.fullmatch(tenant) is None:
        return refuse(request, who, None, f"{tenant[:64]!r} is not a tenant name.", 404)
    if not principal.has(role):
        why = (
            "This token may only send events (role ingest); sign in with an auditor or admin token to read them."
            if principal.role == "ingest"
            else f"This page needs the {role} role; your token has {principal.role}."
        )
        return refuse(request, who, tenant, why)
    if tenant is not None and not principal.sees(tenant):
        why = f"Your token is scoped to tenant {principal.tenant}; it cannot read another tenant."
        return refuse(request, who, principal.tenant, why)
    if role == "auditor":
        audit_read(request, principal, tenant)  # with the audit_reads setting, UI reads are recorded as the API's
    return who


def actor_of(who: Viewer) -> Actor:
    """Who a change made in the UI is recorded as: the signed-in token, as the API records it."""
    return Actor.service_account(who.principal.token_id)


def home_tenant(request: Request, principal: Principal) -> str:
    if principal.tenant != "*":
        return principal.tenant
    names = ledger(request).tenants()
    return "main" if "main" in names or not names else names[0]


def visible_tenants(request: Request, principal: Principal) -> list[str]:
    if principal.tenant != "*":
        return [principal.tenant]
    return ledger(request).tenants()
