"""Capture without effort: audit events from the code an application already has.

- :mod:`~auditledger.integrations.context` — the current actor and request (a context variable) and sinks;
- :mod:`~auditledger.integrations.asgi` — middleware and a FastAPI dependency filling that context;
- :mod:`~auditledger.integrations.decorators` — ``@audited`` for calls and blocks;
- :mod:`~auditledger.integrations.logging` — a handler turning marked log records into events;
- :mod:`~auditledger.integrations.sqlalchemy` — CREATE/UPDATE/DELETE from ORM flushes (extra ``sqlalchemy``);
- :mod:`~auditledger.integrations.outbox` — a transactional outbox: the events of a session's commit as a
  row of the application's own transaction, moved to the ledger or a server in the background (extra ``sqlalchemy``);
- sinks: an ``AuditLog``, :class:`~auditledger.spool.Spooled` (an embedded ledger behind a durable spool,
  for request paths), ``Queued(Client(...))`` (a server, in the background), ``auditledger.testing.Capture``.

The SQLAlchemy and ASGI modules are imported on demand so that this package
costs nothing to applications that use neither.
"""

from auditledger.integrations.context import (
    AuditScope,
    Sink,
    audit_scope,
    current_actor,
    current_scope,
    set_default_sink,
)
from auditledger.integrations.decorators import audited
from auditledger.integrations.logging import AuditLogHandler, audit_extra
from auditledger.spool import Spooled

__all__ = [
    "AuditLogHandler",
    "AuditScope",
    "Sink",
    "Spooled",
    "audit_extra",
    "audit_scope",
    "audited",
    "current_actor",
    "current_scope",
    "set_default_sink",
]
