"""``auditledger jobs``: apply Kestra-shaped YAML jobs, run them, see their history, run the scheduler."""

from __future__ import annotations

import getpass
import signal
import threading
from datetime import timedelta
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from auditledger.cli.common import DEFAULT_DB, DbOption, TenantOption, open_ledger
from auditledger.ledger import DEFAULT_TENANT
from auditledger.model import Actor
from auditledger.retention import DEFAULT_MIN_AGE

console = Console()
jobs_app = typer.Typer(help="Jobs as code: purge and shipping on a schedule.", no_args_is_help=True)
MinAgeOption = Annotated[
    float,
    typer.Option("--min-age-days", envvar="AUDITLEDGER_PURGE_MIN_AGE_DAYS", help="Minimum retention age for purges."),
]


def _jobs(ledger: Any, min_age_days: float = DEFAULT_MIN_AGE.days) -> Any:
    from auditledger.jobs import Jobs

    return Jobs(ledger, min_age=timedelta(days=min_age_days))


@jobs_app.command("apply")
def apply(
    path: Annotated[str, typer.Argument(help="A job file, or a directory of *.yml / *.yaml.")],
    db: DbOption = DEFAULT_DB,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Check and store jobs (all files are checked before any is stored)."""
    with open_ledger(db) as ledger:
        done = _jobs(ledger).apply_path(path, tenant=tenant, actor=Actor.user(f"cli:{getpass.getuser()}"))
    for job, state in done:
        typer.echo(f"{state} {job.key}")


@jobs_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    db: DbOption = DEFAULT_DB,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """List jobs with their schedules (the CLI is an administrator: system jobs are shown)."""
    with open_ledger(db) as ledger:
        rows = _jobs(ledger).list_jobs(tenant=None if tenant == "*" else tenant, admin=True)
    if as_json:
        out = [{"tenant": t, "namespace": j.namespace, "id": j.id, "revision": r,
                "triggers": [{"id": s.id, "cron": s.cron, "disabled": s.disabled} for s in j.triggers]}
               for t, j, r in rows]
        typer.echo(orjson.dumps(out).decode())
        return
    table = Table("tenant", "job", "rev", "tasks", "schedule")
    for t, j, r in rows:
        table.add_row(t, j.key, str(r), ", ".join(x.type for x in j.tasks),
                      ", ".join(f"{s.cron}{' (disabled)' if s.disabled else ''}" for s in j.triggers))
    console.print(table)


@jobs_app.command("run")
def run(
    job_ref: Annotated[str, typer.Argument(help="namespace.id, or id when unique.")],
    min_age_days: MinAgeOption = DEFAULT_MIN_AGE.days,
    db: DbOption = DEFAULT_DB,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Run a job now and print its outputs; exit status 1 when it failed."""
    with open_ledger(db) as ledger:
        jobs = _jobs(ledger, min_age_days)
        result = jobs.run_now(jobs.get(job_ref, tenant=tenant, admin=True), tenant=tenant)
    typer.echo(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode())
    if result.status == "FAILED":
        raise typer.Exit(1)


@jobs_app.command("history")
def history(
    job_ref: Annotated[str, typer.Argument(help="namespace.id, or id when unique.")],
    limit: Annotated[int, typer.Option(help="Most recent runs to show.")] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    db: DbOption = DEFAULT_DB,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Recent runs: status, start, end, outputs, error."""
    with open_ledger(db) as ledger:
        jobs = _jobs(ledger)
        runs = jobs.history(jobs.get(job_ref, tenant=tenant, admin=True), tenant=tenant, limit=limit)
    if as_json:
        typer.echo(orjson.dumps([r.to_dict() for r in runs]).decode())
        return
    table = Table("run", "trigger", "status", "start", "end", "outputs", "error")
    for r in runs:
        d = r.to_dict()
        table.add_row(r.id, r.trigger_id or "manual", r.status, d["startDate"], d["endDate"] or "",
                      orjson.dumps(d["outputs"]).decode(), (r.error or "")[:200])
    console.print(table)


@jobs_app.command("run-scheduler")
def run_scheduler(
    tick: Annotated[float, typer.Option(help="Seconds between ticks.")] = 1.0,
    min_age_days: MinAgeOption = DEFAULT_MIN_AGE.days,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Run the scheduler in the foreground until interrupted (safe beside servers: one lease holder ticks)."""
    from auditledger.jobs import Scheduler

    with open_ledger(db) as ledger:
        scheduler = Scheduler(_jobs(ledger, min_age_days), tick_seconds=tick)
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        scheduler.start()
        typer.echo(f"scheduler {scheduler.holder} running on {db}; Ctrl-C to stop", err=True)
        try:
            while not done.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        scheduler.stop()


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")
