"""Applied jobs, their runs and run history, kept in the ledger's database.

Applying a job stores its YAML source (a revision per change) and records the
change itself as a ``FLOW`` ``CREATE``/``UPDATE`` event with the source before
and after, so that jobs-as-code are audited like everything else. A run renders
each task's properties (``now()``, ``trigger.date`` …), runs the tasks in order
and records status, start, end, outputs per task, and the error if any.
"""

from __future__ import annotations

import logging
import secrets as _secrets
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import orjson

from auditledger.errors import AuditLedgerError, ConfigError, NotFoundError
from auditledger.jobs.expressions import Renderer, trigger_context, zone
from auditledger.jobs.spec import Job, Schedule, Task, parse_job
from auditledger.ledger import DEFAULT_TENANT, AuditLog
from auditledger.model import Actor, check_tenant, from_micros, to_micros
from auditledger.retention import DEFAULT_MIN_AGE, Retention, purge_filter

MANUAL = ""  # trigger_id of a run started by hand
RUNS_LEASE = "runs:"  # + holder: the lease a process renews while it has runs under way
log = logging.getLogger("auditledger.jobs")


@dataclass(frozen=True, slots=True)
class Run:
    """One run of a job: Kestra's states CREATED, RUNNING, SUCCESS, WARNING, FAILED."""

    id: str
    tenant: str
    namespace: str
    job_id: str
    trigger_id: str
    scheduled_for: datetime | None
    status: str
    started_at: datetime
    ended_at: datetime | None
    outputs: Mapping[str, Any]
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        def iso(d: datetime | None) -> str | None:
            return None if d is None else d.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")

        return {
            "id": self.id, "tenant": self.tenant, "namespace": self.namespace, "jobId": self.job_id,
            "triggerId": self.trigger_id or None, "scheduledFor": iso(self.scheduled_for), "status": self.status,
            "startDate": iso(self.started_at), "endDate": iso(self.ended_at), "outputs": dict(self.outputs),
            "error": self.error,
        }


_RUN_COLUMNS = "id, tenant, namespace, job_id, trigger_id, scheduled_for, status, started_at, ended_at, outputs, error"


def _run(row: tuple[Any, ...]) -> Run:
    return Run(
        row[0], row[1], row[2], row[3], row[4], None if row[5] is None else from_micros(int(row[5])), row[6],
        from_micros(int(row[7])), None if row[8] is None else from_micros(int(row[8])),
        orjson.loads(row[9]) if row[9] else {}, row[10],
    )


class Jobs:
    """The jobs of one ledger: apply, list, run now, history."""

    def __init__(
        self,
        ledger: AuditLog,
        *,
        min_age: timedelta = DEFAULT_MIN_AGE,
        default_zone: tzinfo = UTC,
        holder: str | None = None,
        clock: Callable[[], datetime] | None = None,
        run_lease_seconds: float = 30.0,
    ) -> None:
        self.ledger = ledger
        self.store = ledger.store
        self.min_age = min_age
        self.default_zone = default_zone
        self.holder = holder or f"proc-{_secrets.token_hex(4)}"
        self.clock = clock or (lambda: datetime.now(UTC))
        self.run_lease_seconds = run_lease_seconds
        self._alive_lock = threading.Lock()
        self._alive_users = 0
        self._heartbeat_stop = threading.Event()

    # ------------------------------------------------------------ definitions

    def apply(
        self, text: str, name: str = "<job>", *, tenant: str = DEFAULT_TENANT, actor: Actor | None = None
    ) -> tuple[Job, str]:
        """Store a job (new revision if it changed); returns it and ``created``/``updated``/``unchanged``."""
        check_tenant(tenant)
        job = parse_job(text, name, renderer=Renderer(default_zone=self.default_zone))
        actor = actor or Actor.system()
        now = self.clock()
        old = self.store.query(
            "SELECT source, revision FROM jobs WHERE tenant = ? AND namespace = ? AND id = ?",
            [tenant, job.namespace, job.id],
        )
        if old and old[0][0] == text:
            return job, "unchanged"
        revision = int(old[0][1]) + 1 if old else 1
        with self.store.write() as txn:
            if old:
                txn.execute(
                    "UPDATE jobs SET source = ?, revision = ?, updated_at = ? "
                    "WHERE tenant = ? AND namespace = ? AND id = ?",
                    [text, revision, to_micros(now), tenant, job.namespace, job.id],
                )
            else:
                txn.execute(
                    "INSERT INTO jobs (tenant, namespace, id, source, revision, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                    [tenant, job.namespace, job.id, text, revision, to_micros(now)],
                )
            # Schedules restart from now: a new or changed cron does not back-fill the past.
            txn.execute(
                "DELETE FROM job_triggers WHERE tenant = ? AND namespace = ? AND job_id = ?",
                [tenant, job.namespace, job.id],
            )
            for trigger in job.triggers:
                first = self.next_after(trigger, now)
                txn.execute(
                    "INSERT INTO job_triggers (tenant, namespace, job_id, trigger_id, next_date) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [tenant, job.namespace, job.id, trigger.id, to_micros(first)],
                )
        self.ledger.record(
            "FLOW", "UPDATE" if old else "CREATE", actor,
            details={"id": job.id, "namespace": job.namespace, "flowId": job.id, "revision": str(revision)},
            before=old[0][0] if old else None, after=text, tenant=tenant,
        )
        return job, "updated" if old else "created"

    def apply_path(
        self, path: str | Path, *, tenant: str = DEFAULT_TENANT, actor: Actor | None = None
    ) -> list[tuple[Job, str]]:
        """Apply a file, or every ``*.yml``/``*.yaml`` of a directory (sorted); all are checked first."""
        target = Path(path)
        if target.is_dir():
            files = sorted(p for p in target.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())
            if not files:
                raise ConfigError(f"{target}: no .yml or .yaml files")
        elif target.is_file():
            files = [target]
        else:
            raise ConfigError(f"{target}: no such file or directory")
        texts: list[tuple[str, str]] = []
        for file in files:
            try:
                text = file.read_text("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{file}: cannot read: {exc}") from None
            parse_job(text, str(file), renderer=Renderer(default_zone=self.default_zone))  # all or nothing
            texts.append((text, str(file)))
        return [self.apply(text, name, tenant=tenant, actor=actor) for text, name in texts]

    def list_jobs(self, *, tenant: str | None = DEFAULT_TENANT, admin: bool = False) -> list[tuple[str, Job, int]]:
        """(tenant, job, revision); the ``system`` namespace only for admins."""
        sql = "SELECT tenant, namespace, id, source, revision FROM jobs"
        params: list[Any] = []
        if tenant is not None:
            sql += " WHERE tenant = ?"
            params.append(tenant)
        out = []
        for t, ns, id, source, revision in self.store.query(sql + " ORDER BY tenant, namespace, id", params):
            job = parse_job(source, f"{ns}.{id}")
            if job.system and not admin:
                continue
            out.append((t, job, int(revision)))
        return out

    def get(self, ref: str, *, tenant: str = DEFAULT_TENANT, admin: bool = False) -> Job:
        """A job by ``namespace.id`` (or by ``id`` alone when no other namespace has one)."""
        matches = [
            job for _, job, _ in self.list_jobs(tenant=tenant, admin=admin) if ref in (job.key, job.id)
        ]
        exact = [j for j in matches if j.key == ref]
        if exact:
            return exact[0]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ConfigError(f"job {ref!r} is ambiguous: {', '.join(j.key for j in matches)}; give namespace.id")
        raise NotFoundError(f"no job {ref!r} in tenant {tenant!r}")

    def next_after(self, trigger: Schedule, moment: datetime) -> datetime:
        tz = zone(trigger.timezone, self.default_zone)
        nxt: datetime = trigger.iterator(moment.astimezone(tz)).get_next(datetime)
        return nxt.astimezone(UTC)

    def previous_before(self, trigger: Schedule, moment: datetime) -> datetime:
        tz = zone(trigger.timezone, self.default_zone)
        prev: datetime = trigger.iterator(moment.astimezone(tz)).get_prev(datetime)
        return prev.astimezone(UTC)

    # ------------------------------------------------------------ runs

    def start_run(
        self, job: Job, tenant: str, *, trigger_id: str = MANUAL, scheduled_for: datetime | None = None, txn: Any = None
    ) -> str | None:
        """Insert the run row (CREATED); None if that scheduled run exists already (someone else has it)."""
        run_id = f"run_{_secrets.token_hex(8)}"
        sql = (
            "INSERT INTO job_runs "
            "(id, tenant, namespace, job_id, trigger_id, scheduled_for, status, started_at, holder) "
            "VALUES (?, ?, ?, ?, ?, ?, 'CREATED', ?, ?) ON CONFLICT DO NOTHING"
        )
        params = [
            run_id, tenant, job.namespace, job.id, trigger_id,
            None if scheduled_for is None else to_micros(scheduled_for), to_micros(self.clock()), self.holder,
        ]
        if txn is not None:
            return run_id if txn.execute(sql, params) else None
        with self.store.write() as t:
            return run_id if t.execute(sql, params) else None

    def run_now(self, job: Job, *, tenant: str = DEFAULT_TENANT, actor: Actor | None = None) -> Run:
        """Run ``job`` at once (``jobs run ID``); ``trigger.*`` refer to now and the first schedule."""
        with self.alive():
            run_id = self.start_run(job, tenant)
            assert run_id is not None
            return self.execute(run_id, job, tenant, trigger=job.triggers[0] if job.triggers else None, date=None)

    # ------------------------------------------------------------ runs of dead processes

    @contextmanager
    def alive(self) -> Iterator[None]:
        """While the block runs, this process's runs lease is renewed on a thread: its runs are not orphans.

        A process that dies mid-run stops renewing; once the lease has expired, the scheduler's
        next tick (``fail_orphaned_runs``) ends its CREATED and RUNNING runs as FAILED.
        """
        with self._alive_lock:
            self._alive_users += 1
            if self._alive_users == 1:
                self._renew_runs_lease()
                self._heartbeat_stop = threading.Event()
                threading.Thread(
                    target=self._heartbeat, args=(self._heartbeat_stop,), name="auditledger-runs-lease", daemon=True
                ).start()
        try:
            yield
        finally:
            with self._alive_lock:
                self._alive_users -= 1
                if self._alive_users == 0:
                    self._heartbeat_stop.set()

    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(self.run_lease_seconds / 3):
            try:
                self._renew_runs_lease()
            except Exception as exc:  # the store is down or closed: the lease may lapse, the runs go on
                log.warning("cannot renew the runs lease of %s: %s", self.holder, exc)

    def _renew_runs_lease(self) -> None:
        until = to_micros(self.clock()) + int(self.run_lease_seconds * 1_000_000)
        name = RUNS_LEASE + self.holder
        with self.store.write() as txn:
            txn.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                [name, self.holder, until],
            )
            txn.execute("UPDATE leases SET expires_at = ? WHERE name = ?", [until, name])

    def fail_orphaned_runs(self) -> list[str]:
        """End as FAILED every CREATED or RUNNING run whose process's runs lease has expired; their ids.

        Runs leases expired for longer than a lease period are deleted on the way.
        """
        now = to_micros(self.clock())
        grace = int(self.run_lease_seconds * 1_000_000)
        failed: list[str] = []
        with self.store.write() as txn:
            # The prefix is a constant of this module, never input.
            rows = txn.query(
                "SELECT r.id, r.holder, r.status FROM job_runs r WHERE r.status IN ('CREATED', 'RUNNING') "
                f"AND r.started_at < ? AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.name = '{RUNS_LEASE}' "
                "|| r.holder AND l.expires_at >= ?)",
                [now - grace, now],
            )
            for run_id, holder, status in rows:
                error = (
                    f"the process that ran it ({holder}) stopped while the run was {status}: its runs lease "
                    "expired without the run ending; tasks may have done part of their work (a purge "
                    "records what it removed in its AUDITLOG DELETE event)"
                )
                done = txn.execute(
                    "UPDATE job_runs SET status = 'FAILED', ended_at = ?, error = ? WHERE id = ? AND status = ?",
                    [now, error, run_id, status],
                )
                if done:
                    failed.append(str(run_id))
            # Each process that ever ran a job left its runs lease behind. Expired and absent mean the
            # same above, and a process that renews again inserts its row anew, so an expired one goes.
            txn.execute(
                f"DELETE FROM leases WHERE name LIKE '{RUNS_LEASE}%' AND expires_at < ?", [now - grace]
            )
        return failed

    def execute(
        self, run_id: str, job: Job, tenant: str, *, trigger: Schedule | None, date: datetime | None
    ) -> Run:
        """Run the tasks of a claimed run and record how it went."""
        with self.alive():
            return self._execute(run_id, job, tenant, trigger=trigger, date=date)

    def _execute(
        self, run_id: str, job: Job, tenant: str, *, trigger: Schedule | None, date: datetime | None
    ) -> Run:
        started = self.clock()
        self._update(run_id, status="RUNNING", started_at=started)
        moment = date or started
        context: dict[str, Any] = {
            "flow": {"id": job.id, "namespace": job.namespace, "tenantId": tenant},
            "execution": {"id": run_id, "startDate": moment},
            "vars": dict(job.variables),
            "labels": dict(job.labels),
            "outputs": {},
        }
        if trigger is not None:
            context["trigger"] = trigger_context(
                moment, self.next_after(trigger, moment), self.previous_before(trigger, moment)
            )
        outputs: dict[str, Any] = {}
        status, error = "SUCCESS", None
        for task in job.tasks:
            if task.disabled:
                continue
            try:
                result = self._run_task(task, job, tenant, context, run_id)
            except AuditLedgerError as exc:
                error = f"task {task.id!r} (line {task.line}): {exc.diagnostics()}"
            except Exception as exc:  # a bug in a task must still end the run as FAILED, with its trace
                error = f"task {task.id!r} (line {task.line}): internal error {exc!r}\n{traceback.format_exc(limit=5)}"
            else:
                outputs[task.id] = result
                context["outputs"][task.id] = result
                continue
            if task.allow_failure:
                status = "WARNING"
                continue
            status = "FAILED"
            break
        self._update(run_id, status=status, ended_at=self.clock(), outputs=outputs, error=error)
        return self.get_run(run_id)

    def _run_task(self, task: Task, job: Job, tenant: str, context: Mapping[str, Any], run_id: str) -> dict[str, Any]:
        shipping = task.type == "AuditLogShipper"
        # The shipper resolves (and redacts) secrets itself: leave secret() calls for it.
        renderer = Renderer(
            default_zone=self.default_zone,
            now=self.clock,
            secret=(lambda name: "{{ secret('" + name + "') }}") if shipping else _resolve_secret,
        )
        props = {
            k: renderer.render_value(v, context, f"line {task.lines.get(k, task.line)}: {task.id}.{k}")
            for k, v in task.properties.items()
        }
        actor = Actor.system(f"job:{job.namespace}.{job.id}")
        if task.type == "PurgeAuditLogs":
            flt = purge_filter(
                props["endDate"],
                start_date=props.get("startDate"),
                namespace=props.get("namespace"),
                resources=props.get("resources"),
                types=props.get("types"),
                actions=props.get("actions"),
                tenant=tenant,
            )
            result = Retention(self.ledger, min_age=self.min_age).purge(
                flt, actor=actor, now=self.clock(), reason=f"job {job.key} run {run_id}"
            )
            return {"count": result.count, "held": result.held, "clipped": result.clipped}
        if task.type == "AuditLogShipper":
            from auditledger.ship import run_shipper
            from auditledger.ship.exporters.base import DeliveryError

            outputs = dict(run_shipper(self.ledger, props, tenant=tenant))
            if outputs.get("errors"):
                # The shipper keeps each failing exporter's offset for a retry; the run must say it failed.
                failed = ", ".join(f"{k}: {v}" for k, v in dict(outputs["errors"]).items())
                raise DeliveryError(f"log exporters failed (offsets kept, the next run resends): {failed}")
            return outputs
        raise ConfigError(f"task type {task.type!r} cannot run")  # parse_job admits only the types above

    def _update(self, run_id: str, **fields: Any) -> None:
        sets, params = [], []
        for key, value in fields.items():
            if isinstance(value, datetime):
                value = to_micros(value)
            elif isinstance(value, dict):
                value = orjson.dumps(value, default=str).decode()
            sets.append(f"{key} = ?")
            params.append(value)
        with self.store.write() as txn:
            txn.execute(f"UPDATE job_runs SET {', '.join(sets)} WHERE id = ?", [*params, run_id])

    def get_run(self, run_id: str) -> Run:
        rows = self.store.query(f"SELECT {_RUN_COLUMNS} FROM job_runs WHERE id = ?", [run_id])
        if not rows:
            raise NotFoundError(f"no run {run_id!r}")
        return _run(rows[0])

    def history(self, job: Job, *, tenant: str = DEFAULT_TENANT, limit: int = 50) -> list[Run]:
        rows = self.store.query(
            f"SELECT {_RUN_COLUMNS} FROM job_runs WHERE tenant = ? AND namespace = ? AND job_id = ? "
            "ORDER BY started_at DESC, id DESC LIMIT ?",
            [tenant, job.namespace, job.id, int(limit)],
        )
        return [_run(r) for r in rows]


def _resolve_secret(name: str) -> str:
    from auditledger.ship.spec import Secrets

    return Secrets().get(name, f"secret({name!r})")
