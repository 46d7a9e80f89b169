"""ASGI middleware and FastAPI dependency: the request's actor, IP, user agent and id reach every event."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Header, Request

from auditledger import Actor
from auditledger.errors import ConfigError
from auditledger.integrations import current_actor, current_scope
from auditledger.integrations.asgi import AuditContextMiddleware, audit_actor, audit_user
from auditledger.integrations.context import build_event


def call(app: Any, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path, headers=headers or {})

    return asyncio.run(go())


def echo_app(**options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/sync")
    def sync_view() -> dict[str, Any]:  # runs in a worker thread: the context is copied there
        return build_event("FLOW", "READ")["actor"].to_dict() | {"req": current_scope().request_id}  # type: ignore[union-attr]

    @app.get("/async")
    async def async_view() -> dict[str, Any]:
        actor = current_actor()
        return {} if actor is None else actor.to_dict()

    app.add_middleware(AuditContextMiddleware, **options)
    return app


def test_header_actor_ip_user_agent_and_request_id() -> None:
    """The actor header, client address and user agent make the actor; the request id is echoed."""
    app = echo_app(actor_header="X-Actor")
    response = call(app, "/sync", {"x-actor": "anna@acme.io", "user-agent": "curl/8", "x-request-id": "abc-1"})
    assert response.json() == {
        "type": "USER", "id": "anna@acme.io", "ip": "203.0.113.7", "user_agent": "curl/8", "req": "abc-1",
    }
    assert response.headers["x-request-id"] == "abc-1"


def test_bad_request_ids_are_replaced_and_missing_actor_is_the_system() -> None:
    """A request id that is not a sane token is replaced by a fresh one; no actor anywhere means SYSTEM."""
    response = call(echo_app(), "/sync", {"x-request-id": "bad id\twith spaces"})
    body = response.json()
    assert body["type"] == "SYSTEM" and len(body["req"]) == 32
    assert response.headers["x-request-id"] == body["req"]


def test_callable_actor_wins_and_forwarded_for_is_opt_in() -> None:
    """The actor callable is asked first; X-Forwarded-For is used only with trust_forwarded."""
    app = echo_app(actor=lambda scope: Actor.service_account("deployer"), trust_forwarded=True)
    body = call(app, "/async", {"x-forwarded-for": "198.51.100.2, 10.0.0.1"}).json()
    assert body["type"] == "SERVICE_ACCOUNT" and body["id"] == "deployer" and body["ip"] == "198.51.100.2"
    body = call(echo_app(actor=lambda scope: Actor.user("x")), "/async", {"x-forwarded-for": "198.51.100.2"}).json()
    assert body["ip"] == "203.0.113.7"


def test_starlette_user_in_scope_becomes_the_actor() -> None:
    """An authenticated scope["user"] (Starlette AuthenticationMiddleware) is the actor."""

    class User:
        is_authenticated = True
        identity = "u-42"
        display_name = "Anna"

    inner = echo_app()
    # The user must be set before our middleware runs, as AuthenticationMiddleware would.
    inner.user_middleware.clear()
    app = AuditContextMiddleware(inner)

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        scope["user"] = User()
        await app(scope, receive, send)

    assert call(outer, "/async").json()["id"] == "u-42"
    assert call(outer, "/async").json()["name"] == "Anna"


def test_dependency_sets_actor_for_sync_and_async_endpoints_without_middleware() -> None:
    """audit_actor runs the app's auth dependency and makes its user current in the endpoint."""
    app = FastAPI()

    def who(x_user: str = Header()) -> dict[str, str]:
        return {"email": x_user}

    app.router.dependencies.append(Depends(audit_actor(who, to_actor=lambda u: Actor.user(u["email"]))))

    @app.get("/sync")
    def sync_view() -> dict[str, Any]:
        actor = current_actor()
        return {} if actor is None else actor.to_dict()

    @app.get("/async")
    async def async_view() -> dict[str, Any]:
        actor = current_actor()
        return {} if actor is None else actor.to_dict()

    for path in ("/sync", "/async"):
        body = call(app, path, {"x-user": "bob@acme.io", "user-agent": "ua"})
        assert body.json() == {"type": "USER", "id": "bob@acme.io", "ip": "203.0.113.7", "user_agent": "ua"}


def test_audit_user_answers_the_user_and_solves_the_authentication_once() -> None:
    """audit_user gives the endpoint the dependency's own value, makes its actor current, and runs it once."""
    app = FastAPI()
    calls: list[str] = []

    def who(x_user: str = Header()) -> dict[str, str]:
        calls.append(x_user)
        return {"email": x_user}

    user_of = audit_user(who, to_actor=lambda u: Actor.user(u["email"]))

    def check(user: dict[str, str] = Depends(user_of)) -> dict[str, str]:
        return user

    @app.get("/sync")
    def sync_view(user: dict[str, str] = Depends(check), again: dict[str, str] = Depends(user_of)) -> dict[str, Any]:
        actor = current_actor()
        return {"user": user, "same": user is again, "actor": None if actor is None else actor.to_dict()}

    body = call(app, "/sync", {"x-user": "bob@acme.io", "user-agent": "ua"}).json()
    assert body == {
        "user": {"email": "bob@acme.io"},
        "same": True,
        "actor": {"type": "USER", "id": "bob@acme.io", "ip": "203.0.113.7", "user_agent": "ua"},
    }
    assert calls == ["bob@acme.io"]
    bad = FastAPI()

    @bad.get("/", dependencies=[Depends(audit_user(lambda: {"email": "x"}))])
    async def view() -> None:
        return None

    with pytest.raises(ConfigError, match="to_actor"):
        call(bad, "/")


def test_audit_user_keeps_the_dependency_s_parameters_thread_and_sub_dependencies() -> None:
    """The result is the dependency itself to FastAPI: its Request and sub-dependencies, its thread, one solve.

    As a decorator, on a sync dependency taking the request and a sub-dependency: the
    sub-dependency is solved once for the route, the dependency runs in FastAPI's worker
    thread (not on the event loop), and the endpoint sees its user and its actor.
    """
    app = FastAPI()
    sessions: list[int] = []
    threads: list[str] = []

    def db() -> int:
        sessions.append(len(sessions))
        return sessions[-1]

    @audit_user(to_actor=lambda u: Actor.user(u["email"]))
    def current_user(request: Request, session: int = Depends(db)) -> dict[str, Any]:
        threads.append(threading.current_thread().name)
        return {"email": request.headers["x-user"], "session": session}

    @app.get("/")
    def view(user: dict[str, Any] = Depends(current_user), session: int = Depends(db)) -> dict[str, Any]:
        actor = current_actor()
        return {"user": user, "session": session, "actor": None if actor is None else actor.to_dict()}

    body = call(app, "/", {"x-user": "ann@acme.io", "user-agent": "ua"}).json()
    assert body == {
        "user": {"email": "ann@acme.io", "session": 0},
        "session": 0,
        "actor": {"type": "USER", "id": "ann@acme.io", "ip": "203.0.113.7", "user_agent": "ua"},
    }
    assert sessions == [0]
    assert threads != [threading.main_thread().name]


def test_audit_user_on_async_and_generator_dependencies() -> None:
    """An async dependency is awaited; a generator dependency still gets its teardown after the response."""
    app = FastAPI()
    closed: list[str] = []

    async def async_user(x_user: str = Header()) -> dict[str, str]:
        return {"email": x_user}

    def yielding_user(x_user: str = Header()) -> Iterator[dict[str, str]]:
        yield {"email": x_user}
        closed.append(x_user)

    to_actor = lambda u: Actor.user(u["email"])  # noqa: E731
    for path, dependency in (("/async", async_user), ("/yield", yielding_user)):
        audited = audit_user(dependency, to_actor=to_actor)

        def view(user: dict[str, str] = Depends(audited)) -> dict[str, Any]:
            actor = current_actor()
            return {"user": user, "actor": None if actor is None else actor.id}

        app.get(path)(view)

    for path in ("/async", "/yield"):
        body = call(app, path, {"x-user": "bo@acme.io"}).json()
        assert body == {"user": {"email": "bo@acme.io"}, "actor": "bo@acme.io"}
    assert closed == ["bo@acme.io"]


def test_dependency_returning_a_non_actor_is_a_config_error() -> None:
    """Without to_actor, the wrapped dependency must return an Actor."""
    app = FastAPI()

    @app.get("/", dependencies=[Depends(audit_actor(lambda: {"email": "x"}))])
    async def view() -> None:
        return None

    with pytest.raises(ConfigError, match="to_actor"):
        call(app, "/")
