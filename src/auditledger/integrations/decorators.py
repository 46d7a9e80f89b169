"""``@audited``: record that a call happened, and whether it worked.

    @audited("FLOW", "UPDATE", details={"namespace": "{namespace}", "flowId": "{flow_id}"})
    def update_flow(namespace: str, flow_id: str, source: str) -> Flow: ...

    with audited("EXECUTION", "DELETE", details={"executionId": eid}) as event:
        event.before = load(eid)
        purge(eid)

The wrapped call's success records ``outcome=success``; an exception records
``outcome=failure`` with the exception's class name in the ``error`` detail
(never its message, which may carry secrets) and is re-raised unchanged. As a
decorator, texts in ``details`` are ``str.format`` templates filled from the
call's bound arguments; ``details`` may also be a callable receiving them.
Async functions, ``async with`` and generators' callers work the same way.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from auditledger.errors import ConfigError
from auditledger.integrations.context import Sink, build_event, emit
from auditledger.model import Actor

P = ParamSpec("P")
R = TypeVar("R")

DetailsSpec = Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None


@dataclass(slots=True)
class PendingEvent:
    """What the block or call will record; change it before the block ends."""

    resource_type: str
    action: str
    details: dict[str, Any] = field(default_factory=dict)
    before: Any = None
    after: Any = None
    actor: Actor | None = None


class audited:  # a lower-case name: it reads as a decorator, like contextlib.contextmanager
    """Decorator and (async) context manager recording one event per call or block."""

    def __init__(
        self,
        resource_type: str,
        action: str,
        *,
        details: DetailsSpec = None,
        after: Callable[[Any], Any] | None = None,
        failure_action: str | None = None,
        actor: Actor | None = None,
        sink: Sink | None = None,
        tenant: str | None = None,
    ) -> None:
        """``after`` maps the call's result to the recorded after-state; ``failure_action``
        replaces ``action`` on failure (Kestra records a failed login as ``LOGIN_FAILURE``)."""
        self.resource_type = resource_type
        self.action = action
        self.details = details
        self.after = after
        self.failure_action = failure_action
        self.actor = actor
        self.sink = sink
        self.tenant = tenant
        self._open: list[PendingEvent] = []

    # ------------------------------------------------------------ as a context manager

    def _start(self) -> PendingEvent:
        if callable(self.details):
            raise ConfigError("audited(details=callable) needs call arguments: use it as a decorator")
        pending = PendingEvent(self.resource_type, self.action, dict(self.details or {}), actor=self.actor)
        self._open.append(pending)
        return pending

    def _finish(self, exc: BaseException | None) -> None:
        pending = self._open.pop()
        self._record(pending, exc)

    def __enter__(self) -> PendingEvent:
        return self._start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._finish(exc)

    async def __aenter__(self) -> PendingEvent:
        return self._start()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._finish(exc)

    # ------------------------------------------------------------ as a decorator

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        signature = inspect.signature(fn)

        def pending_for(args: tuple[Any, ...], kwargs: dict[str, Any]) -> PendingEvent:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return PendingEvent(
                self.resource_type, self.action, self._details_for(bound.arguments, fn), actor=self.actor
            )

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                pending = pending_for(args, kwargs)
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    self._record(pending, exc)
                    raise
                self._record(pending, None, result)
                return result

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            pending = pending_for(args, kwargs)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                self._record(pending, exc)
                raise
            self._record(pending, None, result)
            return result

        return wrapper

    def _details_for(self, arguments: Mapping[str, Any], fn: Callable[..., Any]) -> dict[str, Any]:
        if self.details is None:
            return {}
        if callable(self.details):
            return dict(self.details(**arguments))
        out: dict[str, Any] = {}
        for key, value in self.details.items():
            if isinstance(value, str):
                try:
                    value = value.format_map(arguments)
                except (KeyError, AttributeError, IndexError) as exc:
                    raise ConfigError(
                        f"@audited on {fn.__qualname__}: details[{key!r}] template {value!r} "
                        f"names {exc} which is not an argument of the call"
                    ) from None
            out[key] = value
        return out

    def _record(self, pending: PendingEvent, exc: BaseException | None, result: Any = None) -> None:
        details = {k: v for k, v in pending.details.items() if v is not None}
        action = pending.action
        outcome = "success"
        after = pending.after
        if exc is not None:
            outcome = "failure"
            details["error"] = type(exc).__name__
            action = self.failure_action or action
        elif self.after is not None:
            after = self.after(result)
        event = build_event(
            pending.resource_type,
            action,
            actor=pending.actor,
            details=details,
            before=pending.before,
            after=after,
            outcome=outcome,
        )
        emit([event], sink=self.sink, tenant=self.tenant)


__all__ = ["PendingEvent", "audited"]
