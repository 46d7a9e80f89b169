"""Who is acting right now, and where events go.

Integrations record events far from the code that knows the actor: a
SQLAlchemy flush, a logging call, a decorated function. The request's
middleware (or a test) opens an :class:`AuditScope` in a context variable;
every event recorded while it is current picks up its actor (with the client
IP and user agent), its request id (as the ``requestId`` detail) and tenant.
Context variables follow asyncio tasks and the thread pools of Starlette, so
this works for sync and async code alike (PEP 567).

A *sink* is whatever stores events: an embedded :class:`~auditledger.AuditLog`,
the same behind a durable spool (:class:`auditledger.spool.Spooled`) or a
transactional outbox (:class:`auditledger.integrations.outbox.Outbox`), the HTTP
client (``auditledger.client.Client``, which batches in the background), or
:class:`auditledger.testing.Capture`. Anything with a
``record_many(events, tenant=...)`` method will do.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from auditledger.errors import ConfigError
from auditledger.model import Actor

DEFAULT_TENANT = "main"
REQUEST_ID_DETAIL = "requestId"


@runtime_checkable
class Sink(Protocol):
    """Stores a batch of events atomically (all or none)."""

    def record_many(self, events: Sequence[Mapping[str, Any]], *, tenant: str = ...) -> Any: ...


class Queued:
    """A sink that hands events to a client's background sender instead of waiting for the server.

    ``Client.record_many`` sends at once and waits for the receipts; this adapter
    calls ``Client.queue_many``, which validates the batch here (a bad event
    fails at the call site, and then none of the batch is queued) and queues it
    for the client's background sender, so the request does not wait for the
    network. Returns the events' idempotency keys.
    """

    def __init__(self, client: Any) -> None:
        if not callable(getattr(client, "queue_many", None)):
            raise ConfigError(f"{type(client).__name__} has no queue_many() method to queue events with")
        self.client = client

    def record_many(self, events: Sequence[Mapping[str, Any]], *, tenant: str = DEFAULT_TENANT) -> list[str]:
        keys: list[str] = self.client.queue_many(events, tenant=tenant)
        return keys


@dataclass(slots=True)
class AuditScope:
    """The actor and request facts of the current unit of work.

    Mutable on purpose: middleware opens the scope before authentication has
    run, and the FastAPI dependency fills in the actor once the user is known.
    """

    actor: Actor | None = None
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    tenant: str | None = None
    sink: Sink | None = None
    details: dict[str, str] = field(default_factory=dict)
    # (actor, ip, user agent) -> the resolved actor: every event of a request asks again.
    _resolved: tuple[Actor, str | None, str | None, Actor] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def resolved_actor(self) -> Actor | None:
        """The actor with this scope's IP and user agent filled in where the actor has none."""
        actor = self.actor
        if actor is None:
            return None
        memo = self._resolved
        if memo is not None and memo[0] is actor and memo[1] is self.ip and memo[2] is self.user_agent:
            return memo[3]
        ip = self.ip if actor.ip is None else actor.ip
        agent = self.user_agent if actor.user_agent is None else actor.user_agent
        # The constructor, not dataclasses.replace, which looks the fields up again each time.
        found = (
            actor
            if ip is actor.ip and agent is actor.user_agent
            else Actor(actor.type, actor.id, actor.name, ip, agent, actor.impersonated_by)
        )
        self._resolved = (actor, self.ip, self.user_agent, found)
        return found


_scope: ContextVar[AuditScope | None] = ContextVar("auditledger_scope", default=None)
_default_sink: Sink | None = None


def current_scope() -> AuditScope | None:
    """The scope opened by the innermost :func:`audit_scope` (or middleware), if any."""
    return _scope.get()


def current_actor() -> Actor | None:
    scope = _scope.get()
    return None if scope is None else scope.resolved_actor()


@contextmanager
def audit_scope(
    actor: Actor | None = None,
    *,
    ip: str | None = None,
    user_agent: str | None = None,
    request_id: str | None = None,
    tenant: str | None = None,
    sink: Sink | None = None,
    details: Mapping[str, str] | None = None,
) -> Iterator[AuditScope]:
    """Make ``actor`` (and the rest) current for the block; scopes nest, the inner one wins.

    Fields left out are inherited from the enclosing scope, so a background job
    inside a request can switch the actor and keep the request id.
    """
    outer = _scope.get()
    scope = AuditScope(
        actor=actor if actor is not None else (outer.actor if outer else None),
        ip=ip if ip is not None else (outer.ip if outer else None),
        user_agent=user_agent if user_agent is not None else (outer.user_agent if outer else None),
        request_id=request_id if request_id is not None else (outer.request_id if outer else None),
        tenant=tenant if tenant is not None else (outer.tenant if outer else None),
        sink=sink if sink is not None else (outer.sink if outer else None),
        details={**(outer.details if outer else {}), **(details or {})},
    )
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


def set_default_sink(sink: Sink | None) -> None:
    """Where integrations record when neither they nor the current scope name a sink."""
    global _default_sink
    if sink is not None and not isinstance(sink, Sink):
        raise ConfigError(
            f"{type(sink).__name__} cannot receive events: it needs a record_many(events, tenant=) method"
        )
    _default_sink = sink


def resolve_sink(explicit: Sink | None = None) -> Sink:
    """The explicit sink, else the current scope's, else the default one."""
    if explicit is not None:
        return explicit
    scope = _scope.get()
    if scope is not None and scope.sink is not None:
        return scope.sink
    if _default_sink is None:
        raise ConfigError(
            "no audit sink configured: pass sink=, open audit_scope(sink=...), "
            "or call auditledger.integrations.set_default_sink(AuditLog.open(...))"
        )
    return _default_sink


def resolve_tenant(explicit: str | None = None) -> str:
    if explicit is not None:
        return explicit
    scope = _scope.get()
    return scope.tenant if scope is not None and scope.tenant else DEFAULT_TENANT


def build_event(
    resource_type: str,
    action: str,
    *,
    actor: Actor | None = None,
    details: Mapping[str, Any] | None = None,
    before: Any = None,
    after: Any = None,
    outcome: str = "success",
    system_actor: str = "auditledger",
) -> dict[str, Any]:
    """One event as a mapping, with the current scope's actor and request details merged in.

    With no actor anywhere the event is the system's (``SYSTEM``/``system_actor``):
    startup jobs and migrations act as the system, not as nobody.
    """
    scope = _scope.get()
    who = actor or (scope.resolved_actor() if scope else None) or Actor.system(system_actor)
    merged: dict[str, Any] = {}
    if scope is not None:
        merged.update(scope.details)
        if scope.request_id is not None:
            merged[REQUEST_ID_DETAIL] = scope.request_id
    if details:
        merged.update(details)
    return {
        "resource_type": resource_type,
        "action": action,
        "actor": who,
        "details": merged,
        "before": before,
        "after": after,
        "outcome": outcome,
    }


def emit(events: Sequence[Mapping[str, Any]], *, sink: Sink | None = None, tenant: str | None = None) -> Any:
    """Send built events to the resolved sink in one batch."""
    if not events:
        return []
    return resolve_sink(sink).record_many(list(events), tenant=resolve_tenant(tenant))
