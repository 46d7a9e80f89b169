"""auditledger: verifiable audit logs for platforms.

from auditledger import AuditLog, Actor
log = AuditLog.open("sqlite:///audit.db")
log.record("FLOW", "UPDATE", Actor.user("anna@acme.io"), details={"namespace": "company.team"})

On a request path, ``Spooled(log)`` is a sink that makes each batch durable in a
small spool file and places it in the ledger in the background.
"""

from auditledger.errors import (
    AuditLedgerError,
    AuthError,
    ConfigError,
    ConflictError,
    NotFoundError,
    StoreError,
    ValidationError,
    VerificationError,
)
from auditledger.ledger import AuditLog, Page, Receipt, VerifyReport
from auditledger.model import Actor, ActorType, Event, EventInput, Outcome
from auditledger.query import Field, Match, Query, Term
from auditledger.spool import Spooled

__version__ = "0.1.0"

__all__ = [
    "Actor",
    "ActorType",
    "AuditLedgerError",
    "AuditLog",
    "AuthError",
    "ConfigError",
    "ConflictError",
    "Event",
    "EventInput",
    "Field",
    "Match",
    "NotFoundError",
    "Outcome",
    "Page",
    "Query",
    "Receipt",
    "Spooled",
    "StoreError",
    "Term",
    "ValidationError",
    "VerificationError",
    "VerifyReport",
    "__version__",
]
