"""Signing in with an API token, signing out, and the static files."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from auditledger.errors import AuthError
from auditledger.server import auth
from auditledger.server.ui import web
from auditledger.server.ui.session import COOKIE_PATH, SESSION_COOKIE, SIGNIN_COOKIE, new_nonce, same_text

router = APIRouter()

_STATIC = {
    "app.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


@router.get("/static/{name}")
def static(name: str) -> Response:
    """The product's own CSS, JS and icon (a fixed list: no path ever reaches the file system)."""
    kind = _STATIC.get(name)
    if kind is None:
        return Response("not found", status_code=404, media_type="text/plain")
    body = (web.HERE / "static" / name).read_bytes()
    return Response(body, media_type=kind, headers={"Cache-Control": "public, max-age=3600", **_NOSNIFF})


_NOSNIFF = {"X-Content-Type-Options": "nosniff"}


def safe_next(target: str | None) -> str:
    """Only paths of this UI are followed after sign-in (no open redirect to another site)."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/"


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


@router.get("/signin")
def signin_form(request: Request, next: str | None = None, m: str | None = None) -> Response:
    nonce = new_nonce()
    response = web.page(request, "signin.html", nonce=nonce, next=safe_next(next), message=m, error=None)
    response.set_cookie(
        SIGNIN_COOKIE, nonce, max_age=3600, path=COOKIE_PATH, httponly=True, samesite="strict", secure=_secure(request)
    )
    return response


@router.post("/signin")
def signin(
    request: Request,
    token: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/ui/",
) -> Response:
    target = safe_next(next)

    def again(error: str, status: int) -> Response:
        nonce = new_nonce()
        response = web.page(request, "signin.html", status, nonce=nonce, next=target, message=None, error=error)
        response.set_cookie(
            SIGNIN_COOKIE, nonce, max_age=3600, path=COOKIE_PATH, httponly=True, samesite="strict",
            secure=_secure(request),
        )
        return response

    if not same_text(request.cookies.get(SIGNIN_COOKIE), csrf):
        return again("The sign-in form expired; please try again.", 400)
    token = token.strip()
    if not token:
        return again("Paste an API token to sign in.", 400)
    # The form is an authentication surface like the Bearer header: guesses count against the
    # same per-address limit, so it cannot be used to try tokens faster.
    try:
        principal = auth.authenticate(request, token)
    except AuthError as exc:
        return again(f"Sign-in refused: {exc}.", exc.status if exc.status in (401, 429) else 401)
    if not principal.has("auditor"):
        return again(
            "This token may only send events (role ingest); sign in with an auditor or admin token.", 403
        )
    cookie, _ = web.sealer(request).seal(token)
    response = web.redirect(target)
    response.set_cookie(
        SESSION_COOKIE, cookie, max_age=web.sealer(request).lifetime_s, path=COOKIE_PATH, httponly=True,
        samesite="lax", secure=_secure(request),
    )
    response.delete_cookie(SIGNIN_COOKIE, path=COOKIE_PATH)
    return response


@router.post("/signout")
def signout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    who = web.viewer(request, None)
    if isinstance(who, web.Viewer) and not same_text(who.csrf, csrf):
        return web.refuse(request, who, None, web.EXPIRED)
    response = web.redirect(web.url("/ui/signin", {"m": "You are signed out."}))
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response
