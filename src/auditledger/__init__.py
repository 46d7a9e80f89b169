"""auditledger: verifiable audit logs for platforms.

from auditledger import AuditLog, Actor
log = AuditLog.open("sqlite:///audit.db")
log.record("FLOW", "UPDATE", Actor.user("anna@acme.io"), details={"namespace": "company.team"})
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
    "StoreError",
    "Term",
    "ValidationError",
    "VerificationError",
    "VerifyReport",
    "__version__",
]
