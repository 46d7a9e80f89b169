"""ASGI middleware and a FastAPI dependency that make the request's actor current.

    app.add_middleware(AuditContextMiddleware, actor_header="x-actor")
    app = FastAPI(dependencies=[Depends(audit_actor(current_user, to_actor=user_actor))])

The middleware opens an :class:`~auditledger.integrations.context.AuditScope`
for each HTTP or WebSocket request with the client IP, the user agent and a
request id (the caller's ``X-Request-ID`` when it is a sane token, else a new
one, echoed in the response), and an actor found, in this order, by the
``actor`` callable, from ``scope["user"]`` set by Starlette's
``AuthenticationMiddleware``, or from a header. The header is only as
trustworthy as whatever sets it: use it behind a gateway that authenticates
and overwrites it, never on a port clients reach directly.

Authentication in FastAPI usually happens in a dependency, after middleware
has run; :func:`audit_actor` wraps such a dependency and writes its user into
the scope the middleware opened (or opens one itself without middleware).
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial, wraps
from typing import Any

from fastapi import Depends, Request
from fastapi.dependencies.utils import get_typed_signature
from starlette.concurrency import run_in_threadpool

from auditledger.errors import ConfigError
from auditledger.integrations.context import AuditScope, Sink, _scope, current_scope
from auditledger.model import MAX_ACTOR_FIELD, Actor, ActorType

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
ActorResolver = Callable[[Scope], "Actor | Awaitable[Actor | None] | None"]

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_REQUEST_PARAM = "auditledger_request"  # audit_user's own Request parameter, where the dependency has none


class AuditContextMiddleware:
    """Pure ASGI middleware (no body buffering) opening an audit scope per request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        actor: ActorResolver | None = None,
        actor_header: str | None = None,
        actor_header_type: ActorType = ActorType.USER,
        request_id_header: str = "x-request-id",
        trust_forwarded: bool = False,
        tenant: str | None = None,
        sink: Sink | None = None,
    ) -> None:
        self.app = app
        self.actor = actor
        self.actor_header = actor_header.lower().encode("latin-1") if actor_header else None
        self.actor_header_type = ActorType(actor_header_type)
        self.request_id_header = request_id_header.lower().encode("latin-1")
        self.trust_forwarded = trust_forwarded
        self.tenant = tenant
        self.sink = sink
        # Only these headers are read: the others are not decoded at all.
        wanted = {self.request_id_header, b"user-agent"}
        if self.actor_header is not None:
            wanted.add(self.actor_header)
        if trust_forwarded:
            wanted.add(b"x-forwarded-for")
        self._wanted = frozenset(wanted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope, self._wanted)
        given = headers.get(self.request_id_header)
        request_id = given if given and _REQUEST_ID_RE.fullmatch(given) else os.urandom(16).hex()
        if self.actor is None:
            actor = self._found_actor(scope, headers)
        else:
            actor = await self._actor(scope, headers)
        # Positional, in AuditScope's field order: keyword arguments cost more, once per request.
        audit = AuditScope(
            actor,
            _client_ip(scope, headers, self.trust_forwarded),
            _clip(headers.get(b"user-agent")),
            request_id,
            self.tenant,
            self.sink,
        )
        echo = (self.request_id_header, request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), echo]
            await send(message)

        token = _scope.set(audit)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _scope.reset(token)

    async def _actor(self, scope: Scope, headers: dict[bytes, str]) -> Actor | None:
        if self.actor is not None:
            found = self.actor(scope)
            if inspect.isawaitable(found):
                found = await found
            if found is not None and not isinstance(found, Actor):
                raise ConfigError(f"the actor callable returned {type(found).__name__}, not an Actor or None")
            if found is not None:
                return found
        return self._found_actor(scope, headers)

    def _found_actor(self, scope: Scope, headers: dict[bytes, str]) -> Actor | None:
        """The actor of ``scope["user"]`` or of the actor header (no callable, or it returned None)."""
        user = scope.get("user")
        if user is not None and getattr(user, "is_authenticated", False):
            return Actor(ActorType.USER, _identity(user), _clip(getattr(user, "display_name", None)))
        if self.actor_header is not None:
            value = _clip(headers.get(self.actor_header))
            if value:
                return Actor(self.actor_header_type, value)
        return None


def _identity(user: Any) -> str:
    try:
        value = user.identity
    except (NotImplementedError, AttributeError):
        value = getattr(user, "display_name", None) or getattr(user, "username", None)
    return _clip(str(value)) or "unknown"


def _headers(scope: Scope, wanted: frozenset[bytes]) -> dict[bytes, str]:
    """The first value of each ``wanted`` header."""
    out: dict[bytes, str] = {}
    for key, value in scope.get("headers", ()):
        name = bytes(key).lower()
        if name in wanted and name not in out:
            out[name] = bytes(value).decode("latin-1")
    return out


def _clip(value: str | None) -> str | None:
    """Actor fields have a length limit; a long user agent is cut, not refused."""
    if value is None:
        return None
    value = value.replace("\x00", "").strip()
    return value[:MAX_ACTOR_FIELD] or None


def _client_ip(scope: Scope, headers: dict[bytes, str], trust_forwarded: bool) -> str | None:
    if trust_forwarded:
        forwarded = headers.get(b"x-forwarded-for")
        if forwarded:
            return _clip(forwarded.split(",")[0])
    client = scope.get("client")
    return _clip(str(client[0])) if client else None


def set_current_actor(actor: Actor | None) -> AuditScope:
    """Make ``actor`` the current scope's actor (opening a scope for this context if none is open)."""
    scope = current_scope()
    if scope is None:
        scope = AuditScope()
        _scope.set(scope)  # lives as long as this context: the request's task
    scope.actor = actor
    return scope


def audit_actor(
    dependency: Callable[..., Any], *, to_actor: Callable[[Any], Actor | None] | None = None
) -> Callable[..., Awaitable[Actor | None]]:
    """A FastAPI dependency running ``dependency`` and making its result the current actor.

    ``to_actor`` maps the dependency's value (your ``User``) to an :class:`Actor`;
    without it the dependency must return an ``Actor`` or ``None``. The wrapper
    is async on purpose: FastAPI runs sync dependencies in a thread with a
    copied context, where setting the actor would not reach the endpoint.
    """

    async def set_actor(request: Request, value: Any = Depends(dependency)) -> Actor | None:
        return _make_current(request, value, to_actor)

    return set_actor


def audit_user(
    dependency: Callable[..., Any] | None = None, *, to_actor: Callable[[Any], Actor | None] | None = None
) -> Any:
    """:func:`audit_actor` that answers the dependency's own value (your ``User``), not the actor.

    Use what it returns wherever the endpoints ask for their user
    (``user: User = Depends(audit_user(current_user, to_actor=...))``), or put it
    on your dependency as a decorator (``@audit_user(to_actor=...)``) so that its
    name is the audited one. The result has ``dependency``'s own parameters and
    calls it itself (in FastAPI's thread pool when it is sync, as FastAPI would),
    so FastAPI solves one dependency, not a wrapper and then the dependency: a
    wrapper level cost about a quarter of the capture path in the example app.
    A route that asks for both the original and the result calls the original
    twice (FastAPI caches each by its own function); ask for the result only.
    A generator dependency (``yield``) is wrapped the slower way, with
    ``Depends``, so that FastAPI still runs its teardown.
    """
    if dependency is None:
        return partial(audit_user, to_actor=to_actor)
    if inspect.isgeneratorfunction(dependency) or inspect.isasyncgenfunction(dependency):

        async def set_actor(request: Request, value: Any = Depends(dependency)) -> Any:
            _make_current(request, value, to_actor)
            return value

        return set_actor
    run = dependency if inspect.iscoroutinefunction(dependency) else partial(run_in_threadpool, dependency)
    # FastAPI hands the request to one parameter only: the dependency's own, if it has one.
    signature = get_typed_signature(dependency)
    own = next((p.name for p in signature.parameters.values() if _is_request(p.annotation)), None)

    @wraps(dependency)
    async def user(*args: Any, **kwargs: Any) -> Any:
        request = kwargs[own] if own is not None else kwargs.pop(_REQUEST_PARAM)
        value = await run(*args, **kwargs)
        _make_current(request, value, to_actor)
        return value

    if own is None:  # FastAPI reads this signature: the dependency's parameters and the request
        params = list(inspect.signature(dependency).parameters.values())
        last = next((i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_KEYWORD), len(params))
        request = inspect.Parameter(_REQUEST_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=Request)
        user.__signature__ = inspect.Signature([*params[:last], request, *params[last:]])  # type: ignore[attr-defined]
    return user


def _is_request(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Request)


def _make_current(request: Request, value: Any, to_actor: Callable[[Any], Actor | None] | None) -> Actor | None:
    actor = to_actor(value) if to_actor is not None else value
    if actor is not None and not isinstance(actor, Actor):
        raise ConfigError(f"audit_actor: {type(actor).__name__} is not an Actor; pass to_actor= to convert your user")
    scope = set_current_actor(actor)
    if scope.ip is None and request.client is not None:
        scope.ip = request.client.host
    if scope.user_agent is None:
        scope.user_agent = _clip(request.headers.get("user-agent"))
    return actor


__all__ = ["AuditContextMiddleware", "audit_actor", "audit_user", "set_current_actor"]
