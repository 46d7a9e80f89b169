"""Options and helpers shared by the CLI modules."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from auditledger.ledger import AuditLog

DEFAULT_DB = "sqlite:///auditledger.db"

DbOption = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="AUDITLEDGER_DB",
        help="Store URL: sqlite:///path.db, memory:// or postgresql://...",
        show_default=True,
    ),
]
TenantOption = Annotated[str, typer.Option("--tenant", "-t", envvar="AUDITLEDGER_TENANT", help="Tenant id.")]


def open_ledger(db: str) -> AuditLog:
    return AuditLog.open(db or os.environ.get("AUDITLEDGER_DB", DEFAULT_DB))
