"""The FastAPI application: routes, auth, error mapping, limits and health.

Every :class:`~auditledger.errors.AuditLedgerError` maps to one status
(ValidationError 422, or 400 for an unreadable body; NotFoundError 404;
AuthError 401/403; ConflictError 409; StoreError and an overloaded writer
503 with ``Retry-After``), answered as ``{"message", "field"}``. Bodies
larger than ``max_body_bytes`` get 413 before any route reads them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import auditledger
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
from auditledger.ledger import AuditLog
from auditledger.model import Limits
from auditledger.server import ingest, kestra, routes
from auditledger.server.auth import Tokens
from auditledger.server.deps import json_response
from auditledger.server.metrics import Metrics
from auditledger.server.writer import Overloaded, Writer
from auditledger.settings import Settings

log = logging.getLogger("auditledger.server")


class BodyLimit:
    """ASGI middleware: 413 for bodies above ``limit`` bytes, declared or streamed; counts requests."""

    def __init__(self, app: ASGIApp, limit: int, metrics: Metrics) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.limit:
                await _too_large(self.limit, counting_send)
                return
            body = bytearray()
            more = scope["method"] in ("POST", "PUT", "PATCH")
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                if len(body) > self.limit:
                    await _too_large(self.limit, counting_send)
                    return
                more = bool(message.get("more_body"))
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed and scope["method"] in ("POST", "PUT", "PATCH"):
                    replayed = True
                    return {"type": "http.request", "body": bytes(body), "more_body": False}
                return await receive()

            await self.app(scope, replay, counting_send)
        finally:
            self.metrics.inc("auditledger_http_requests_total", method=scope["method"], status=str(status))
            self.metrics.inc("auditledger_http_request_seconds_total", time.perf_counter() - start)


async def _too_large(limit: int, send: Send) -> None:
    response = json_response({"message": f"the request body is larger than {limit} bytes", "field": "body"}, 413)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _status(exc: AuditLedgerError) -> tuple[int, dict[str, str]]:
    if isinstance(exc, ValidationError):
        return (400 if exc.field == "body" else 422), {}
    if isinstance(exc, AuthError):
        if exc.status == 429:
            return 429, {"Retry-After": str(getattr(exc, "retry_after", 60))}
        return exc.status, ({"WWW-Authenticate": "Bearer"} if exc.status == 401 else {})
    if isinstance(exc, NotFoundError):
        return 404, {}
    if isinstance(exc, ConflictError | VerificationError):
        return 409, {}
    if isinstance(exc, Overloaded):
        return 503, {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, StoreError | ConfigError):
        return 503, {"Retry-After": "1"}
    return 400, {}


def create_app(settings: Settings | None = None, ledger: AuditLog | None = None) -> FastAPI:
    """The server application on ``ledger`` (opened from ``settings.db`` when not given)."""
    settings = settings or Settings()
    owned = ledger is None
    ledger = ledger or AuditLog.open(settings.db, limits=Limits(max_state_bytes=settings.max_state_bytes))
    writer = Writer(
        ledger,
        window_ms=settings.group_commit_ms,
        max_events=settings.group_commit_max_events,
        max_queued=settings.writer_queue_events,
        retry_after=settings.retry_after_seconds,
    )
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        writer.close()
        if owned:
            ledger.close()

    app = FastAPI(
        title="auditledger",
        version=auditledger.__version__,
        description="Verifiable audit logs. Kestra's audit-log API field for field, with extensions beside it.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.ledger = ledger
    app.state.writer = writer
    app.state.tokens = Tokens(ledger.store)
    app.state.metrics = metrics
    _describe_metrics(metrics, writer)

    @app.exception_handler(AuditLedgerError)
    async def ledger_error(request: Request, exc: AuditLedgerError) -> Response:
        status, headers = _status(exc)
        field = getattr(exc, "field", None)
        return json_response({"message": str(exc), "field": field}, status, headers)

    @app.exception_handler(RequestValidationError)
    async def request_error(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body", "header")]
        field = ".".join(loc) or "request"
        detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in errors]
        return json_response({"message": f"{field}: {first.get('msg')}", "field": field, "detail": detail}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return json_response({"message": str(exc.detail), "field": None}, exc.status_code, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return json_response({"message": "internal error; see the server log", "field": None}, 500)

    @app.get("/healthz", tags=["Operations"], summary="The process is up")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz", tags=["Operations"], summary="The store answers and the writer runs",
        responses={503: {"description": "Not ready"}},
    )
    def readyz() -> Response:
        try:
            ledger.store.heads()
        except AuditLedgerError as exc:
            return json_response({"status": "unavailable", "reason": str(exc)}, 503)
        if not writer.alive():
            return json_response({"status": "unavailable", "reason": "the writer stopped"}, 503)
        return json_response({"status": "ok"})

    @app.get("/metrics", tags=["Operations"], summary="Prometheus metrics", response_class=PlainTextResponse)
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # Cross-tenant and specific paths before /{tenant}/auditlogs/{id}.
    # Features' fixed paths (.../auditlogs/checkpoint) come before .../auditlogs/{id}.
    for router in [kestra.router, *routes.routers(), ingest.router]:
        _document_errors(router.routes)
        app.include_router(router)
    _document_errors(app.routes)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, metrics=metrics)
    return app


_ERROR_CODES = {
    400: "Unreadable body",
    401: "Missing, unknown, expired or revoked token",
    403: "The token lacks the role or the tenant",
    404: "Not found (or not visible to this token)",
    409: "Conflicts with stored state",
    413: "Body too large",
    422: "Invalid input; `field` names it",
    429: "Too many failed authentications from this source; see Retry-After",
    503: "Store unavailable or writer full; see Retry-After",
}


def _document_errors(found: list[BaseRoute]) -> None:
    """Every route can answer the error handlers' statuses: say so in the OpenAPI of every route."""
    from fastapi.routing import APIRoute

    from auditledger.server.shapes import ErrorAnswer

    for route in found:
        if isinstance(route, APIRoute) and route.include_in_schema:
            for code, description in _ERROR_CODES.items():
                route.responses.setdefault(code, {"model": ErrorAnswer, "description": description})


def _describe_metrics(metrics: Metrics, writer: Writer) -> None:
    metrics.describe("auditledger_http_requests_total", "counter", "HTTP requests by method and status.")
    metrics.describe("auditledger_http_request_seconds_total", "counter", "Time spent answering HTTP requests.")
    metrics.describe("auditledger_events_ingested_total", "counter", "Events acknowledged by the ingest route.")
    gauges: dict[str, tuple[str, Any]] = {
        "auditledger_writer_queued_events": ("Events waiting for the writer.", lambda: writer.queued),
        "auditledger_writer_commits_total": ("Group commits done.", lambda: writer.stats.commits),
        "auditledger_writer_events_total": ("Events committed by the writer.", lambda: writer.stats.events),
        "auditledger_writer_failures_total": ("Writer commits that failed.", lambda: writer.stats.failures),
        "auditledger_writer_commit_seconds_total": ("Time spent in commits.", lambda: writer.stats.commit_seconds),
    }
    for name, (help, read) in gauges.items():
        metrics.gauge(name, help, read)
