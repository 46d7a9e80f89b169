"""What route modules need from the running app: the ledger, the writer, the settings.

Feature routers (proofs, retention, jobs, web UI) in ``auditledger.server.routes``
use these as FastAPI dependencies together with :func:`~auditledger.server.auth.require`.
"""

from __future__ import annotations

import orjson
from fastapi import Request
from fastapi.responses import Response

from auditledger.ledger import AuditLog
from auditledger.server.writer import Writer
from auditledger.settings import Settings


def get_ledger(request: Request) -> AuditLog:
    ledger: AuditLog = request.app.state.ledger
    return ledger


def get_writer(request: Request) -> Writer:
    writer: Writer = request.app.state.writer
    return writer


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def client_ip(request: Request) -> str:
    """The caller's address; the first ``X-Forwarded-For`` hop only when the settings trust the proxy."""
    if get_settings(request).trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for", "").split(",")[0].strip()
        if forwarded:
            return forwarded[:64]
    return request.client.host if request.client else "unknown"


def json_response(data: object, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer serialised by orjson (pages of events are large; skip pydantic on the way out)."""
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json", headers=headers)
