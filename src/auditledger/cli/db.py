"""Store commands: ``db upgrade`` (migrations, partitions) and ``migrate --from --to`` (copy a ledger)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from auditledger.cli.common import DEFAULT_DB, DbOption
from auditledger.errors import ValidationError
from auditledger.store import open_store
from auditledger.store.copy import copy_ledger

console = Console(stderr=True)
db_app = typer.Typer(help="The store's schema: migrations and partitions.", no_args_is_help=True)


@db_app.command()
def upgrade(db: DbOption = DEFAULT_DB) -> None:
    """Apply pending migrations (every server also does on start); on PostgreSQL, make partitions ahead."""
    store = open_store(db)
    try:
        made: list[str] = []
        upgrade_pg = getattr(store, "upgrade", None)
        if upgrade_pg is not None:
            before = set(store.partitions())  # type: ignore[attr-defined]
            upgrade_pg()
            made = sorted(set(store.partitions()) - before)  # type: ignore[attr-defined]
        version = store.query("SELECT max(version) FROM schema_migrations")[0][0]
        typer.echo(f"{db}: schema version {version}")
        for name in made:
            typer.echo(f"created partition {name}")
    finally:
        store.close()


def migrate(
    source: Annotated[str, typer.Option("--from", help="Store URL to copy from, e.g. sqlite:///a.db.")],
    target: Annotated[str, typer.Option("--to", help="Store URL to copy to, e.g. postgresql://host/db.")],
    chunk: Annotated[int, typer.Option(help="Positions per target transaction.")] = 2000,
) -> None:
    """Copy a ledger with its tree and checkpoints, verifying every position; an interrupted copy resumes."""
    if not 1 <= chunk <= 100_000:
        raise ValidationError("chunk", f"must be between 1 and 100000, got {chunk}")
    if source == target:
        raise ValidationError("to", "is the same store as --from")
    src = open_store(source)
    try:
        dst = open_store(target)
        try:
            with Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
            ) as bar:
                tasks: dict[str, TaskID] = {}

                def progress(name: str, done: int, total: int) -> None:
                    if name not in tasks:
                        tasks[name] = bar.add_task(name, total=total)
                    bar.update(tasks[name], completed=done)

                report = copy_ledger(src, dst, chunk=chunk, progress=progress)
        finally:
            dst.close()
    finally:
        src.close()
    table = Table("tenant", "positions", "purged", title="copied and verified")
    for tenant, size in report.sizes.items():
        table.add_row(tenant, str(size), str(report.purged[tenant]))
    Console().print(table)
    for name, count in report.tables.items():
        typer.echo(f"table {name}: {count} rows copied")
    for name in report.skipped_tables:
        typer.echo(f"table {name}: not in the target's schema, skipped")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
    app.command()(migrate)
