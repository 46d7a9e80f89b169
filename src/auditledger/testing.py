"""Test seams for applications that record audit events.

    from auditledger.testing import Capture, assert_recorded

    def test_rename_is_audited() -> None:
        capture = Capture()
        with audit_scope(Actor.user("anna"), sink=capture):
            rename_flow("company.team", "hello", "hi")
        assert_recorded(capture, resource="FLOW", action="UPDATE", details={"flowId": "hi"}, actor="anna")

:class:`Capture` is a sink that validates events exactly as the ledger does
and keeps them in memory; :func:`memory_ledger` is a real ledger in memory
(hashes, seq, search) for tests that want all of it; :class:`CapturingExporter`
collects what a shipper sends. :func:`assert_recorded` works on all three.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from auditledger.ledger import AuditLog
from auditledger.model import Actor, Event, EventInput, check_tenant, event_input
from auditledger.ship.exporters.base import Exporter
from auditledger.ship.formats import Record

_ANY: Any = object()


def memory_ledger() -> AuditLog:
    """A fresh ledger in memory, discarded when closed."""
    return AuditLog.open("memory://")


class Capture:
    """A sink keeping validated events in memory; ``events`` in recording order."""

    def __init__(self) -> None:
        self.events: list[EventInput] = []
        self.tenants: list[str] = []

    def record_many(self, events: Sequence[EventInput | Mapping[str, Any]], *, tenant: str = "main") -> list[int]:
        check_tenant(tenant)
        valid = [event_input(e) for e in events]  # a bad event refuses the batch, as the ledger does
        start = len(self.events)
        self.events.extend(valid)
        self.tenants.extend([tenant] * len(valid))
        return list(range(start, start + len(valid)))

    def clear(self) -> None:
        self.events.clear()
        self.tenants.clear()


class CapturingExporter(Exporter):
    """An exporter that keeps every shipped record (``records``) instead of sending it."""

    name = "capture"

    def __init__(self, id: str = "capture", *, tenant: str = "main", offset_key: str = "") -> None:
        self.id = id
        self.tenant = tenant
        self.offset_key = offset_key
        self.records: list[Record] = []

    def send(self, records: Sequence[Record]) -> None:
        self.records.extend(records)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [r.event() for r in self.records]


Source = AuditLog | Capture | CapturingExporter | Iterable[Event | EventInput | Mapping[str, Any]]


def recorded(source: Source) -> list[dict[str, Any]]:
    """Every event of ``source`` as a plain mapping, oldest first."""
    if isinstance(source, AuditLog):
        items: Iterable[Any] = source.iter_search(order="asc", tenant=None)
    elif isinstance(source, Capture | CapturingExporter):
        items = source.events
    else:
        items = source
    out = []
    for item in items:
        if isinstance(item, Event):
            out.append(item.to_dict())
        elif isinstance(item, EventInput):
            out.append(
                {
                    "resource_type": item.resource_type,
                    "action": item.action,
                    "actor": item.actor.to_dict(),
                    "details": dict(item.details),
                    "before": item.before,
                    "after": item.after,
                    "outcome": str(item.outcome),
                }
            )
        else:
            out.append(dict(item))
    return out


def _matches(event: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
    for key, value in want.items():
        if value is _ANY:
            continue
        if key == "details":
            details = event.get("details") or {}
            if any(details.get(k) != str(v) for k, v in value.items()):
                return False
        elif key == "actor":
            actor = event.get("actor") or {}
            if isinstance(value, Actor):
                if {k: v for k, v in actor.items() if k in value.to_dict()} != value.to_dict():
                    return False
            elif actor.get("id") != value:
                return False
        elif event.get(key) != value:
            return False
    return True


def find_recorded(
    source: Source,
    *,
    resource: str | None = None,
    action: str | None = None,
    details: Mapping[str, Any] | None = None,
    actor: str | Actor | None = None,
    outcome: str | None = None,
    before: Any = _ANY,
    after: Any = _ANY,
) -> list[dict[str, Any]]:
    """The recorded events matching every given criterion (``details`` as a subset)."""
    want = {
        "resource_type": resource if resource is not None else _ANY,
        "action": action if action is not None else _ANY,
        "details": details if details is not None else _ANY,
        "actor": actor if actor is not None else _ANY,
        "outcome": outcome if outcome is not None else _ANY,
        "before": before,
        "after": after,
    }
    return [e for e in recorded(source) if _matches(e, want)]


def assert_recorded(
    source: Source,
    *,
    resource: str | None = None,
    action: str | None = None,
    details: Mapping[str, Any] | None = None,
    actor: str | Actor | None = None,
    outcome: str | None = None,
    before: Any = _ANY,
    after: Any = _ANY,
    count: int | None = None,
) -> dict[str, Any]:
    """Fail unless a matching event was recorded (exactly ``count`` of them when given); return the last."""
    found = find_recorded(
        source, resource=resource, action=action, details=details, actor=actor, outcome=outcome,
        before=before, after=after,
    )
    if (count is None and found) or (count is not None and len(found) == count and found):
        return found[-1]
    if count == 0 and not found:
        return {}
    criteria = {
        k: v
        for k, v in dict(
            resource=resource, action=action, details=details, actor=actor, outcome=outcome, before=before, after=after
        ).items()
        if v is not None and v is not _ANY
    }
    seen = "\n".join(
        f"  {e.get('resource_type')} {e.get('action')} by {(e.get('actor') or {}).get('id')} "
        f"{e.get('outcome')} {e.get('details')}"
        for e in recorded(source)
    )
    expected = "at least one" if count is None else str(count)
    raise AssertionError(
        f"expected {expected} event(s) matching {criteria}, found {len(found)}; recorded:\n{seen or '  (none)'}"
    )


__all__ = ["Capture", "CapturingExporter", "assert_recorded", "find_recorded", "memory_ledger", "recorded"]
