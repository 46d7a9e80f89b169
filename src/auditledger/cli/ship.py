"""``auditledger ship``: run an audit log shipper from a YAML file, with live progress.

The file is either the shipper task's properties (``logExporters`` …) or a
whole Kestra flow: its first ``AuditLogShipper`` task is used, so a Kestra
user's flow file works as it is. Progress shows per exporter the events
shipped, the rate and the lag behind the ledger's head. Exit status 1 when an
exporter failed (its offset stays where its last accepted batch ended).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from auditledger.cli.common import DEFAULT_DB, DbOption, TenantOption, open_ledger
from auditledger.errors import ConfigError
from auditledger.ledger import DEFAULT_TENANT
from auditledger.ship import ProgressEvent, Secrets, Shipper, parse_spec
from auditledger.ship import offsets as offset_store
from auditledger.ship.spec import shipper_task


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} ev/s", style="cyan")


class _Lag(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"lag {task.fields.get('lag', 0):,}", style="yellow")


def load_config(path: Path) -> dict[str, Any]:
    """The shipper properties from a YAML file: the task itself or a Kestra flow holding one."""
    try:
        raw = yaml.safe_load(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: expected a mapping (shipper properties or a Kestra flow)")
    if "logExporters" in raw:
        return raw
    return dict(shipper_task(raw)) if isinstance(raw.get("tasks"), list) else raw


def ship(
    config: Annotated[Path, typer.Option("--config", "-c", help="Shipper YAML (task properties or a Kestra flow).")],
    db: DbOption = DEFAULT_DB,
    tenant: TenantOption = DEFAULT_TENANT,
    secrets_file: Annotated[
        Path | None,
        typer.Option("--secrets-file", envvar="AUDITLEDGER_SECRETS_FILE", help="YAML/JSON or NAME=value secrets."),
    ] = None,
    reset: Annotated[bool, typer.Option("--reset", help="Forget this offsetKey's offsets first (re-ship).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the outputs as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Ship audit events to SIEMs and storage, resuming after each exporter's stored offset."""
    spec = parse_spec(load_config(config))
    secrets = Secrets(file=secrets_file) if secrets_file is not None else Secrets()
    err = Console(stderr=True)
    with open_ledger(db) as ledger:
        if reset:
            offset_store.reset(ledger.store, tenant, spec.offset_key)
        show = not quiet and not json_out and err.is_terminal
        progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(), _Lag(),
            TimeElapsedColumn(), console=err, disable=not show,
        )
        tasks: dict[str, Any] = {}

        def report(event: ProgressEvent) -> None:
            if event.exporter not in tasks:
                tasks[event.exporter] = progress.add_task(event.exporter, total=event.shipped + event.lag)
            progress.update(tasks[event.exporter], completed=event.shipped, total=event.shipped + event.lag,
                            lag=event.lag)

        shipper = Shipper(ledger, spec, tenant=tenant, secrets=secrets, progress=report)
        with progress:
            result = shipper.run()
    outputs = result.outputs()
    if json_out:
        sys.stdout.write(orjson.dumps(outputs, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        table = Table(title=f"shipped (offsetKey {spec.offset_key}, tenant {tenant}, head {result.head})")
        for column in ("exporter", "shipped", "offset", "lag", "error"):
            table.add_column(column)
        for e in result.exporters:
            table.add_row(e.id, f"{e.shipped:,}", str(e.offset), f"{max(0, result.head - e.offset):,}", e.error or "")
        Console().print(table)
        if result.purged is not None:
            Console().print(f"purged {result.purged:,} shipped events")
    if not result.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("ship")(ship)
