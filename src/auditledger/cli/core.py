"""Core commands: record, search, show, verify, demo."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from auditledger.cli.common import DEFAULT_DB, DbOption, TenantOption, open_ledger
from auditledger.errors import ValidationError, VerificationError
from auditledger.ledger import DEFAULT_TENANT, MAX_PAGE
from auditledger.model import Event, format_date

console = Console()


def _read_state(value: str | None, field: str) -> Any:
    """``@file`` reads a file (JSON if it parses, else text); other values are taken as text."""
    if value is None:
        return None
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            value = path.read_text("utf-8")
        except OSError as exc:
            raise ValidationError(field, f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ValidationError(field, f"{path} is not UTF-8 text") from None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value


def _parse_details(pairs: list[str]) -> dict[str, str]:
    details: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=") if "=" in pair else pair.partition(":")
        if not sep:
            raise ValidationError("details", f"{pair!r} is not key=value")
        details[key] = value
    return details


def record(
    resource_type: Annotated[str, typer.Argument(help="Resource type, e.g. FLOW.")],
    action: Annotated[str, typer.Argument(help="Action, e.g. UPDATE.")],
    actor: Annotated[str, typer.Option("--actor", help="Actor id, e.g. anna@acme.io.")] = "cli",
    actor_type: Annotated[str, typer.Option("--actor-type", help="USER, SERVICE_ACCOUNT or SYSTEM.")] = "USER",
    actor_name: Annotated[str | None, typer.Option("--actor-name")] = None,
    detail: Annotated[list[str] | None, typer.Option("--detail", "-d", help="key=value, repeatable.")] = None,
    before: Annotated[str | None, typer.Option(help="State before: JSON, text, or @file.")] = None,
    after: Annotated[str | None, typer.Option(help="State after: JSON, text, or @file.")] = None,
    outcome: Annotated[str, typer.Option(help="success or failure.")] = "success",
    json_event: Annotated[
        str | None, typer.Option("--json", help="A whole event as JSON (or - for stdin); overrides the rest.")
    ] = None,
    db: DbOption = DEFAULT_DB,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Record one event."""
    if json_event is not None:
        text = sys.stdin.read() if json_event == "-" else json_event
        try:
            raw = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ValidationError("--json", f"not JSON: {exc}") from None
    else:
        actor_obj = {"type": actor_type, "id": actor}
        if actor_name:
            actor_obj["name"] = actor_name
        raw = {
            "resource_type": resource_type,
            "action": action,
            "actor": actor_obj,
            "details": _parse_details(detail or []),
            "before": _read_state(before, "before"),
            "after": _read_state(after, "after"),
            "outcome": outcome,
        }
    with open_ledger(db) as log:
        receipt = log.record_many([raw], tenant=tenant)[0]
    typer.echo(f"{receipt.id} seq={receipt.seq} date={format_date(receipt.date)}")


def _details_text(event: Event) -> str:
    return " ".join(f"{k}:{v}" for k, v in event.details.items())


def search(
    query: Annotated[str, typer.Argument(help="Search language, e.g. 'namespace:company.team action:UPDATE'.")] = "",
    limit: Annotated[int, typer.Option(help=f"Rows per page (1..{MAX_PAGE}).")] = 20,
    cursor: Annotated[str | None, typer.Option(help="Continue after a previous page.")] = None,
    oldest_first: Annotated[bool, typer.Option("--oldest-first", help="Oldest first.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON event per line.")] = False,
    db: DbOption = DEFAULT_DB,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Search events, newest first."""
    with open_ledger(db) as log:
        page = log.search(query, tenant=tenant, limit=limit, cursor=cursor, order="asc" if oldest_first else "desc")
    if as_json:
        for event in page.events:
            sys.stdout.write(orjson.dumps(event.to_dict()).decode() + "\n")
        return
    table = Table(show_lines=False, header_style="bold")
    for column in ("Date (UTC)", "Resource Type", "Action", "Actor", "Details", "Seq"):
        table.add_column(column, overflow="fold")
    for event in page.events:
        actor = f"{event.actor.id} ({event.actor.type.name.lower().replace('_', ' ')})"
        action = event.action if event.outcome == "success" else f"{event.action} (failed)"
        table.add_row(
            format_date(event.date)[:19].replace("T", " "),
            event.resource_type,
            action,
            actor,
            _details_text(event),
            str(event.seq),
        )
    console.print(table)
    if not page.events:
        console.print("no events match")
    if page.cursor:
        console.print(f"more: --cursor {page.cursor}")


def show(
    id: Annotated[str, typer.Argument(help="Event id.")],
    db: DbOption = DEFAULT_DB,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Show one event as JSON."""
    with open_ledger(db) as log:
        event = log.get(id, tenant=tenant)
    sys.stdout.write(orjson.dumps(event.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")


def verify(
    db: DbOption = DEFAULT_DB,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Only this tenant (default: all).")] = None,
    against: Annotated[
        Path | None, typer.Option("--against", help="A checkpoint saved earlier: also prove the ledger extends it.")
    ] = None,
    key: Annotated[
        list[str] | None, typer.Option("--key", help="Trusted vkey (or a file of them) for --against; repeatable.")
    ] = None,
) -> None:
    """Recompute every leaf hash and the seq order; exit 1 at the first bad position."""
    with open_ledger(db) as log:
        try:
            report = log.verify(tenant=tenant)
        except VerificationError as exc:
            typer.echo(f"verification FAILED: {exc}", err=True)
            raise typer.Exit(1) from None
        if against is not None:
            from auditledger.cli.proofs import check_against

            check_against(log, against, key, tenant)
    for name, size in report.sizes.items():
        purged = report.purged.get(name, 0)
        typer.echo(f"tenant {name}: {size} events verified" + (f" ({purged} purged)" if purged else ""))
    typer.echo(f"OK: {report.total} positions verified")


def demo(
    events: Annotated[int, typer.Option("--events", "-n", help="How many events.")] = 5000,
    days: Annotated[int, typer.Option(help="Spread them over the last N days.")] = 90,
    seed: Annotated[int, typer.Option(help="Same seed, same data.")] = 7,
    db: DbOption = DEFAULT_DB,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Fill the ledger with a realistic workflow-platform audit trail."""
    from auditledger.demo import demo_events

    if events < 1:
        raise ValidationError("--events", "must be at least 1")
    if days < 1:
        raise ValidationError("--days", "must be at least 1")
    end = datetime.now(UTC) - timedelta(seconds=1)
    start = end - timedelta(days=days)
    step = (end - start) / events
    batch: list[dict[str, Any]] = []
    dates: list[datetime] = []
    with (
        open_ledger(db) as log,
        Progress(
            TextColumn("demo"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=events < 20_000,
        ) as progress,
    ):
        task = progress.add_task("events", total=events)
        for i, event in enumerate(demo_events(events, seed=seed)):
            batch.append(event)
            dates.append(start + step * i)
            if len(batch) == 1000:
                log.backfill(batch, dates, tenant=tenant)
                progress.advance(task, len(batch))
                batch, dates = [], []
        if batch:
            log.backfill(batch, dates, tenant=tenant)
            progress.advance(task, len(batch))
    typer.echo(f"recorded {events} demo events in tenant {tenant!r} ({db})")


def register(app: typer.Typer) -> None:
    for command in (record, search, show, verify, demo):
        app.command()(command)
