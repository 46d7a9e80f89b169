"""``auditledger token create|list|revoke``: API tokens of the HTTP server.

The token is printed once, when created; only its SHA-256 is stored.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from auditledger.cli.common import DEFAULT_DB, DbOption, open_ledger
from auditledger.errors import ValidationError
from auditledger.model import parse_utc
from auditledger.server.auth import ROLES, Tokens

token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)


def _expiry(text: str | None) -> datetime | None:
    """An ISO 8601 UTC date-time or a duration from now (P30D, PT12H)."""
    if text is None:
        return None
    if text.upper().startswith("P"):
        m = _DURATION_RE.fullmatch(text.upper())
        if m is None or not any(m.groups()):
            raise ValidationError("expires", f"{text!r} is not a duration such as P30D, P1W, PT12H or PT30M")
        weeks, days, hours, minutes = (int(g or 0) for g in m.groups())
        return datetime.now(UTC) + timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes)
    return parse_utc(text, "expires")


_DURATION_RE = re.compile(r"P(?:(\d{1,4})W)?(?:(\d{1,5})D)?(?:T(?:(\d{1,6})H)?(?:(\d{1,7})M)?)?")


@token_app.command("create")
def create(
    role: Annotated[str, typer.Option("--role", help=f"One of {', '.join(ROLES)}.")],
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="A tenant id, or '*' for every tenant.")],
    expires: Annotated[
        str | None, typer.Option("--expires", help="When it stops working: P30D, PT12H or a UTC date-time.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="A note on what the token is for.")] = None,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Create a token and print it (once: it cannot be shown again)."""
    with open_ledger(db) as ledger:
        secret, info = Tokens(ledger.store).create(role, tenant, name=name, expires_at=_expiry(expires))
    typer.echo(secret)
    typer.echo(
        f"created {info.id}: role {info.role}, tenant {info.tenant}"
        + ("" if info.expires_at is None else f", expires {info.to_dict()['expires_at']}")
        + ". Store it now: it is not shown again.",
        err=True,
    )


@token_app.command("list")
def list_tokens(
    db: DbOption = DEFAULT_DB,
    json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List tokens (never their secrets)."""
    with open_ledger(db) as ledger:
        infos = Tokens(ledger.store).list()
    if json:
        for info in infos:
            typer.echo(orjson.dumps(info.to_dict()).decode())
        return
    table = Table("id", "role", "tenant", "name", "created", "expires", "state")
    for info in infos:
        d = info.to_dict()
        state = "active" if d["active"] else ("revoked" if d["revoked_at"] else "expired")
        table.add_row(d["id"], d["role"], d["tenant"], d["name"] or "", d["created_at"], d["expires_at"] or "", state)
    Console().print(table)


@token_app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (tok_...), as `token list` shows it.")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Revoke a token: requests with it get 401 from now on."""
    with open_ledger(db) as ledger:
        info = Tokens(ledger.store).revoke(token_id)
    typer.echo(f"revoked {info.id}")


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
