"""The HTTP server: Kestra's audit-log API and ours, tokens, group commit.

    from auditledger.server import create_app
    app = create_app(Settings(db="sqlite:///audit.db"))

Feature routers go in :mod:`auditledger.server.routes` and protect their
routes with :func:`require` and :func:`check_tenant_access`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from auditledger.server.auth import Principal, Tokens, check_tenant_access, require, require_instance_admin
from auditledger.server.deps import get_ledger, get_settings, get_writer

if TYPE_CHECKING:
    from fastapi import FastAPI

    from auditledger.ledger import AuditLog
    from auditledger.settings import Settings

__all__ = [
    "Principal",
    "Tokens",
    "check_tenant_access",
    "create_app",
    "get_ledger",
    "get_settings",
    "get_writer",
    "require",
    "require_instance_admin",
]


def create_app(settings: Settings | None = None, ledger: AuditLog | None = None) -> FastAPI:
    """The server application; see :func:`auditledger.server.app.create_app`."""
    # Imported late: route modules import this package for require() and friends.
    from auditledger.server.app import create_app as build

    return build(settings, ledger)


