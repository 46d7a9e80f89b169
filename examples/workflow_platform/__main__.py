"""``python -m examples.workflow_platform --ledger sqlite:///auditledger.db``: run the example API."""

from __future__ import annotations

import argparse
import sys

import uvicorn
from sqlalchemy.engine import Engine

from auditledger import AuditLog, Spooled
from auditledger.errors import AuditLedgerError, ConfigError
from auditledger.integrations.context import Queued, Sink
from auditledger.integrations.outbox import Outbox

from .app import app_engine, create_app, ledger_in


def open_sink(url: str, token: str | None, *, spool: bool = False, outbox: Engine | None = None) -> Sink:
    """An embedded ledger for ``sqlite:///``/``postgresql://`` URLs, the HTTP client for ``http(s)://``.

    ``spool``: the embedded ledger behind a durable spool (``Spooled``), off the request path.
    ``outbox``: the platform's engine; the events are written in its transactions (``Outbox``)
    and moved to the ledger or the server in the background.
    """
    if url.startswith(("http://", "https://")):
        try:
            from auditledger.client import Client  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise ConfigError("this build has no auditledger.client: use an embedded --ledger URL") from None
        if spool:
            raise ConfigError("--spool is for an embedded --ledger: the client batches in the background already")
        client = Client(url, token=token)
        if outbox is not None:
            return Outbox(outbox, client)  # sent by the outbox's thread, deleted once the server stored them
        return Queued(client)  # background batching: requests never wait for the server
    ledger = AuditLog.open(url)
    if outbox is not None:
        return Outbox(outbox, ledger)
    return Spooled(ledger) if spool else ledger


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.workflow_platform", description=__doc__)
    parser.add_argument("--ledger", default="sqlite:///auditledger.db", help="where events go (default %(default)s)")
    parser.add_argument("--token", default=None, help="API token when --ledger is an http(s):// server")
    parser.add_argument("--db", default="sqlite:///workflow.db", help="the platform's own database")
    parser.add_argument("--admin-token", default="admin-token", help="API token of the first admin user")
    parser.add_argument(
        "--ledger-in-db",
        action="store_true",
        help="keep the ledger's tables in the platform's database (--db), written in its own transactions",
    )
    parser.add_argument(
        "--spool",
        action="store_true",
        help="put a durable spool in front of the embedded --ledger: each request writes one small row, "
        "a background thread places the events in the ledger (auditledger.Spooled)",
    )
    parser.add_argument(
        "--outbox",
        action="store_true",
        help="write the events in the platform's own transactions (--db), as rows of its auditledger_outbox "
        "table, and move them to --ledger in the background (auditledger.integrations.outbox.Outbox)",
    )
    parser.add_argument("--no-audit", action="store_true", help="run without auditing")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        chosen = [name for name in ("ledger_in_db", "spool", "outbox") if getattr(args, name)]
        if len(chosen) > 1:
            shown = " and ".join("--" + name.replace("_", "-") for name in chosen)
            raise ConfigError(f"{shown} exclude each other: choose one way for the events to reach the ledger")
        engine = app_engine(args.db) if args.outbox and not args.no_audit else None
        if args.ledger_in_db and not args.no_audit:
            sink: Sink | None = ledger_in(args.db)
            args.ledger = f"{args.db} (in its transactions)"
            app = create_app(args.db, sink=sink, admin_token=args.admin_token, audit_write="in_transaction")
        else:
            sink = None if args.no_audit else open_sink(args.ledger, args.token, spool=args.spool, outbox=engine)
            app = create_app(args.db, sink=sink, admin_token=args.admin_token, engine=engine)
    except AuditLedgerError as exc:
        print(f"error: {exc.diagnostics()}", file=sys.stderr)
        return 2
    print(f"workflow platform on http://{args.host}:{args.port}/docs; admin token: {args.admin_token}")
    where = args.ledger
    if isinstance(sink, Spooled):
        where += f" (through the spool {sink.path})"
    elif isinstance(sink, Outbox):
        where += f" (through the table {sink.table.name} of {args.db})"
    print(f"audit events -> {'nowhere (--no-audit)' if sink is None else where}")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
