"""A ``logging.Handler`` turning selected log records into audit events.

Existing code often already logs the moments that matter ("flow source
downloaded", "token revoked"). Mark those records and attach the handler:

    log.info("flow source downloaded", extra=audit_extra("FLOW", "READ", namespace=ns, flowId=fid))
    logging.getLogger("app").addHandler(AuditLogHandler(ledger))

A record is selected when it carries the ``audit`` attribute (what
``extra=audit_extra(...)`` sets), or, for a handler built with a default
``resource_type``, whenever it reaches the handler: pick those with the usual
logger names, levels and ``logging.Filter`` objects. The formatted message
becomes the ``message`` detail; a record with ``exc_info`` records
``outcome=failure``. As logging asks of handlers, a failure to record is
reported through ``handleError`` (stderr) rather than raised, unless
``raise_errors=True`` — choose that where losing an audit event is worse than
failing the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from auditledger.errors import ValidationError
from auditledger.integrations.context import Sink, build_event, emit
from auditledger.model import MAX_DETAIL_VALUE, Actor

AUDIT_ATTRIBUTE = "audit"


def audit_extra(
    resource_type: str,
    action: str,
    *,
    before: Any = None,
    after: Any = None,
    outcome: str | None = None,
    actor: Actor | None = None,
    **details: Any,
) -> dict[str, Any]:
    """The ``extra=`` mapping that selects a log record for the audit log."""
    spec: dict[str, Any] = {"resource_type": resource_type, "action": action, "details": details}
    for key, value in (("before", before), ("after", after), ("outcome", outcome), ("actor", actor)):
        if value is not None:
            spec[key] = value
    return {AUDIT_ATTRIBUTE: spec}


class AuditLogHandler(logging.Handler):
    """Records one audit event per selected log record, synchronously."""

    def __init__(
        self,
        sink: Sink | None = None,
        *,
        resource_type: str | None = None,
        action: str = "UNKNOWN",
        level: int = logging.NOTSET,
        message_detail: str | None = "message",
        tenant: str | None = None,
        raise_errors: bool = False,
    ) -> None:
        super().__init__(level)
        self.sink = sink
        self.resource_type = resource_type
        self.action = action
        self.message_detail = message_detail
        self.tenant = tenant
        self.raise_errors = raise_errors

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = self.event_for(record)
            if event is not None:
                emit([event], sink=self.sink, tenant=self.tenant)
        except Exception:
            if self.raise_errors:
                raise
            self.handleError(record)

    def event_for(self, record: logging.LogRecord) -> dict[str, Any] | None:
        """The event a record stands for, or None when the record is not selected."""
        spec = getattr(record, AUDIT_ATTRIBUTE, None)
        if spec is None:
            if self.resource_type is None:
                return None
            spec = {}
        if not isinstance(spec, Mapping):
            raise ValidationError("audit", f"the log record's audit extra must be a mapping, got {type(spec).__name__}")
        details = dict(spec.get("details") or {})
        if self.message_detail:
            details.setdefault(self.message_detail, record.getMessage()[:MAX_DETAIL_VALUE])
        outcome = spec.get("outcome") or ("failure" if record.exc_info else "success")
        return build_event(
            spec.get("resource_type") or self.resource_type or "UNKNOWN",
            spec.get("action") or self.action,
            actor=spec.get("actor"),
            details=details,
            before=spec.get("before"),
            after=spec.get("after"),
            outcome=outcome,
        )


__all__ = ["AuditLogHandler", "audit_extra"]
