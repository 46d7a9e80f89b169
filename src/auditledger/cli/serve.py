"""``auditledger serve``: the HTTP API on a ledger.

Refuses to start without at least one active API token, unless
``--insecure-dev`` is given (then every request acts as an admin of every
tenant: for a laptop, never for a shared machine).
"""

from __future__ import annotations

import gc
from typing import Annotated

import typer

from auditledger.errors import ConfigError
from auditledger.ledger import AuditLog
from auditledger.model import Limits
from auditledger.settings import load


def serve(
    db: Annotated[
        str | None,
        typer.Option("--db", help="Store URL (default: AUDITLEDGER_DB, else sqlite:///auditledger.db)."),
    ] = None,
    host: Annotated[str | None, typer.Option("--host", help="Listen address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Listen port (default 8080).")] = None,
    insecure_dev: Annotated[
        bool, typer.Option("--insecure-dev", help="No authentication: every caller is an admin. Local use only.")
    ] = False,
) -> None:
    """Serve the HTTP API (Kestra-compatible audit-log routes, ingest, OpenAPI at /docs)."""
    import uvicorn

    from auditledger.server import create_app
    from auditledger.server.auth import Tokens

    settings = load(db=db, host=host, port=port, insecure_dev=True if insecure_dev else None)
    ledger = AuditLog.open(settings.db, limits=Limits(max_state_bytes=settings.max_state_bytes))
    try:
        if not settings.insecure_dev and Tokens(ledger.store).count_active() == 0:
            raise ConfigError(
                f"no active API token in {settings.db}, so nobody could use the server. Create one first:\n"
                f"  auditledger token create --role admin --tenant '*' --db {settings.db}\n"
                "or, for local development only, start with --insecure-dev"
            )
        if settings.insecure_dev:
            typer.echo("warning: --insecure-dev: no authentication, every caller is an admin", err=True)
        app = create_app(settings, ledger)
        tune_gc()
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level)
    finally:
        ledger.close()


# Allocations between two collections of the youngest generation (CPython's default: 700).
# A batch of 500 events parsed from JSON is ~10,000 containers, all freed by reference
# counting once answered; with the default, each request triggered ~15 collections, and
# the older generations' walks over every in-flight request's objects took a third of the
# event loop's time (HTTP ingest 11.4k -> 14.9k events/s, bench/http_ingest.py).
GC_THRESHOLD = (50_000, 20, 20)


def tune_gc() -> None:
    """The server process's garbage collector: started objects frozen, collections rarer.

    ``gc.freeze`` moves everything loaded so far (the app, its routes and models:
    hundreds of thousands of objects that live as long as the process) out of the
    collector's reach, so a full collection no longer walks them.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def register(app: typer.Typer) -> None:
    app.command()(serve)
