"""The one exception tree of auditledger.

    AuditLedgerError            root; ``diagnostics()`` is what the CLI prints
    ├── ValidationError         bad input: names the field and the rule broken
    ├── VerificationError       the ledger, a proof or a signature does not check out
    ├── NotFoundError           no such event, job, token ...
    ├── ConflictError           the request clashes with stored state
    ├── StoreError              the database failed (locked, read-only, full ...)
    ├── ConfigError             a setting, URL or job file is wrong
    └── AuthError               missing, unknown, revoked or insufficient credentials

Every public function raises only these; a stray ``ValueError`` is a bug.
"""

from __future__ import annotations


class AuditLedgerError(Exception):
    """Root of every error auditledger raises on purpose."""

    def diagnostics(self) -> str:
        """One line that says what went wrong, for humans."""
        return str(self)


class ValidationError(AuditLedgerError):
    """Input breaks a rule; ``field`` names where (dotted path, e.g. ``details.namespace``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class VerificationError(AuditLedgerError):
    """A check of integrity failed; ``seq`` is the first bad position when there is one."""

    def __init__(self, message: str, seq: int | None = None) -> None:
        super().__init__(message if seq is None else f"seq {seq}: {message}")
        self.message = message
        self.seq = seq


class NotFoundError(AuditLedgerError):
    """The thing asked for does not exist (or is not visible to the caller)."""


class ConflictError(AuditLedgerError):
    """The request clashes with what is stored."""


class StoreError(AuditLedgerError):
    """The database could not do what was asked; nothing was half-written."""


class ConfigError(AuditLedgerError):
    """A setting, URL, key file or job definition is wrong."""


class AuthError(AuditLedgerError):
    """Credentials are missing, unknown, revoked, expired or lack the role."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status
