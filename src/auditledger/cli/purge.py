"""``auditledger purge`` and ``auditledger hold``: retention from the command line.

Whoever can run the CLI on the database is its administrator, so ``--force``
(purging below the minimum retention age) is allowed here; the HTTP API
requires the admin role for the same.
"""

from __future__ import annotations

import getpass
from datetime import timedelta
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from auditledger.cli.common import DEFAULT_DB, DbOption, TenantOption, open_ledger
from auditledger.ledger import DEFAULT_TENANT
from auditledger.model import Actor
from auditledger.retention import DEFAULT_MIN_AGE, Retention, purge_filter

console = Console()
ActorOption = Annotated[str | None, typer.Option("--actor", help="Who runs this (default: the OS user).")]
MinAgeOption = Annotated[
    float,
    typer.Option(
        "--min-age-days", envvar="AUDITLEDGER_PURGE_MIN_AGE_DAYS",
        help="Minimum retention age: nothing younger is purged without --force.",
    ),
]


def _actor(actor: str | None) -> Actor:
    return Actor.user(actor or f"cli:{getpass.getuser()}")


def purge(
    end_date: Annotated[str, typer.Option("--end-date", help="Purge events dated before this ISO date-time.")],
    start_date: Annotated[str | None, typer.Option("--start-date", help="...and at or after this one.")] = None,
    namespace: Annotated[str | None, typer.Option(help="Only this namespace and its children.")] = None,
    resource: Annotated[list[str] | None, typer.Option("--resource", help="Resource type; repeatable.")] = None,
    action: Annotated[list[str] | None, typer.Option("--action", help="Action; repeatable.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be purged.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Also purge events younger than the minimum age.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    actor: ActorOption = None,
    min_age_days: MinAgeOption = DEFAULT_MIN_AGE.days,
    db: DbOption = DEFAULT_DB,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Remove old events' payloads (leaf hashes stay, so every proof still verifies)."""
    flt = purge_filter(
        end_date, start_date=start_date, namespace=namespace, resources=resource or None, actions=action or None,
        tenant=None if tenant == "*" else tenant,
    )
    with open_ledger(db) as ledger:
        result = Retention(ledger, min_age=timedelta(days=min_age_days)).purge(
            flt, actor=_actor(actor), dry_run=dry_run, force=force
        )
    if as_json:
        typer.echo(orjson.dumps(result.to_dict()).decode())
        return
    verb = "would purge" if dry_run else "purged"
    console.print(f"{verb} {result.count} events ({result.held} kept by legal holds) in {result.seconds:.2f}s")
    if result.clipped:
        console.print(f"end date clipped to {result.end_date.isoformat()} (minimum retention age; --force to lift)")
    if result.bytes_before is not None and result.bytes_after is not None and not dry_run:
        console.print(f"space in use: {result.bytes_before:,} -> {result.bytes_after:,} bytes")


hold_app = typer.Typer(help="Legal holds: protect matching events from every purge.", no_args_is_help=True)


@hold_app.command("create")
def hold_create(
    query: Annotated[str, typer.Option("--query", help="Search query, e.g. 'namespace:company.finance'.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (case number, request ...).")],
    actor: ActorOption = None,
    db: DbOption = DEFAULT_DB,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Create a hold; it is recorded as a LEGAL_HOLD CREATE event."""
    with open_ledger(db) as ledger:
        hold = Retention(ledger).create_hold(query, reason, actor=_actor(actor), tenant=tenant)
    typer.echo(hold.id)


@hold_app.command("list")
def hold_list(
    all_: Annotated[bool, typer.Option("--all", help="Include released holds.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    db: DbOption = DEFAULT_DB,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """List holds (active ones unless --all)."""
    with open_ledger(db) as ledger:
        holds = Retention(ledger).holds(tenant=None if tenant == "*" else tenant, include_released=all_)
    if as_json:
        typer.echo(orjson.dumps([h.to_dict() for h in holds]).decode())
        return
    table = Table("id", "tenant", "query", "reason", "created by", "created", "released")
    for h in holds:
        table.add_row(h.id, h.tenant, h.query, h.reason, h.created_by, h.created_at.isoformat(timespec="seconds"),
                      "" if h.released_at is None else h.released_at.isoformat(timespec="seconds"))
    console.print(table)


@hold_app.command("release")
def hold_release(
    hold_id: Annotated[str, typer.Argument(help="The hold's id.")],
    actor: ActorOption = None,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Release a hold; it is recorded as a LEGAL_HOLD DELETE event."""
    with open_ledger(db) as ledger:
        hold = Retention(ledger).release_hold(hold_id, actor=_actor(actor))
    typer.echo(f"released {hold.id}")


def register(app: typer.Typer) -> None:
    app.command("purge")(purge)
    app.add_typer(hold_app, name="hold")
