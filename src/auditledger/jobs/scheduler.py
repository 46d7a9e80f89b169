"""The scheduler: fires due Schedule triggers once, whatever the number of processes.

Every server process (and ``auditledger jobs run-scheduler``) may run a
scheduler. Each tick it takes or renews a lease row in the database; only the
holder ticks, and if it dies the lease expires and another takes over. Even two
schedulers that both believe they lead cannot run the same schedule twice: a
scheduled run is a unique row (job, trigger, scheduled date), claimed in the
same transaction that advances the trigger's next date.

Missed schedules (the scheduler was down past a due date by more than
``grace``) follow the trigger's ``recoverMissedSchedules``, as in Kestra:
``ALL`` runs every missed date in order, ``LAST`` only the most recent one,
``NONE`` none of them (the next date on time runs as usual).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from auditledger.errors import AuditLedgerError
from auditledger.jobs.runner import Jobs, Run
from auditledger.jobs.spec import Job, Schedule, parse_job
from auditledger.model import from_micros, to_micros

log = logging.getLogger("auditledger.jobs")
LEASE = "scheduler"
MAX_CATCH_UP = 1000  # most missed dates one trigger replays under ALL


@dataclass(frozen=True, slots=True)
class _Claim:
    run_id: str
    tenant: str
    job: Job
    trigger: Schedule
    date: datetime


class Scheduler:
    """Ticks the jobs of one ledger; ``start()`` runs it in a daemon thread."""

    def __init__(
        self,
        jobs: Jobs,
        *,
        lease_seconds: float = 30.0,
        tick_seconds: float = 1.0,
        grace: timedelta = timedelta(seconds=60),
    ) -> None:
        self.jobs = jobs
        self.store = jobs.store
        self.lease_seconds = lease_seconds
        self.tick_seconds = tick_seconds
        self.grace = grace
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._orphans_checked = -float("inf")

    @property
    def holder(self) -> str:
        return self.jobs.holder

    def acquire(self) -> bool:
        """Take or renew the lease; True when this scheduler is the one that ticks."""
        now = to_micros(self.jobs.clock())
        until = now + int(self.lease_seconds * 1_000_000)
        with self.store.write() as txn:
            txn.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                [LEASE, self.holder, until],
            )
            taken = txn.execute(
                "UPDATE leases SET holder = ?, expires_at = ? WHERE name = ? AND (holder = ? OR expires_at < ?)",
                [self.holder, until, LEASE, self.holder, now],
            )
        return taken > 0

    def release(self) -> None:
        with self.store.write() as txn:
            txn.execute("UPDATE leases SET expires_at = 0 WHERE name = ? AND holder = ?", [LEASE, self.holder])

    def tick(self) -> list[Run]:
        """One pass: if this scheduler leads, fail the runs of dead processes, claim every due run and execute it."""
        if not self.acquire():
            return []
        # Not every tick: the query reads every unfinished run; a lease period is soon enough.
        if time.monotonic() - self._orphans_checked >= self.jobs.run_lease_seconds:
            self._orphans_checked = time.monotonic()
            for run_id in self.jobs.fail_orphaned_runs():
                log.warning("run %s ended FAILED: the process running it stopped (its runs lease expired)", run_id)
        runs = []
        # Alive from before the claim: a claimed run waiting for its turn is not an orphan.
        with self.jobs.alive():
            for claim in self._claim():
                try:
                    runs.append(
                        self.jobs.execute(
                            claim.run_id, claim.job, claim.tenant, trigger=claim.trigger, date=claim.date
                        )
                    )
                except AuditLedgerError as exc:  # recording failed (store down): say so, keep ticking
                    log.error("run %s of %s failed to record: %s", claim.run_id, claim.job.key, exc.diagnostics())
        return runs

    def _claim(self) -> list[_Claim]:
        now = self.jobs.clock()
        claims: list[_Claim] = []
        with self.store.write() as txn:
            due = txn.query(
                "SELECT t.tenant, t.namespace, t.job_id, t.trigger_id, t.next_date, j.source FROM job_triggers t "
                "JOIN jobs j ON j.tenant = t.tenant AND j.namespace = t.namespace AND j.id = t.job_id "
                "WHERE t.next_date <= ? ORDER BY t.next_date",
                [to_micros(now)],
            )
            for tenant, namespace, job_id, trigger_id, next_date, source in due:
                job = parse_job(source, f"{namespace}.{job_id}")
                trigger = next((t for t in job.triggers if t.id == trigger_id), None)
                if trigger is None:
                    continue
                dates, following = self._due_dates(trigger, from_micros(int(next_date)), now)
                if not job.disabled and not trigger.disabled:
                    for date in self._policy(trigger, dates, now):
                        run_id = self.jobs.start_run(job, tenant, trigger_id=trigger.id, scheduled_for=date, txn=txn)
                        if run_id is not None:
                            claims.append(_Claim(run_id, tenant, job, trigger, date))
                # Compare-and-set: only the scheduler that saw this next date moves it.
                txn.execute(
                    "UPDATE job_triggers SET next_date = ? WHERE tenant = ? AND namespace = ? AND job_id = ? "
                    "AND trigger_id = ? AND next_date = ?",
                    [to_micros(following), tenant, namespace, job_id, trigger_id, next_date],
                )
        return claims

    def _due_dates(self, trigger: Schedule, first: datetime, now: datetime) -> tuple[list[datetime], datetime]:
        dates = [first]
        following = self.jobs.next_after(trigger, first)
        while following <= now:
            if len(dates) < MAX_CATCH_UP:
                dates.append(following)
            else:
                dates[-1] = following  # keep the latest, so LAST and on-time runs stay right
            following = self.jobs.next_after(trigger, following)
        return dates, following

    def _policy(self, trigger: Schedule, dates: list[datetime], now: datetime) -> list[datetime]:
        if trigger.recover == "ALL":
            return dates
        if trigger.recover == "LAST":
            return dates[-1:]
        return [d for d in dates if now - d <= self.grace]  # NONE: the missed ones are skipped

    # ------------------------------------------------------------ thread

    def run_forever(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self.tick()
            except AuditLedgerError as exc:
                log.error("scheduler tick failed: %s", exc.diagnostics())
            self._stop.wait(max(0.0, self.tick_seconds - (time.monotonic() - began)))
        with contextlib.suppress(AuditLedgerError):
            self.release()

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run_forever, name="auditledger-scheduler", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


def status(jobs: Jobs) -> dict[str, Any]:
    """Who holds the lease and until when (for the API and ``jobs list``)."""
    rows = jobs.store.query("SELECT holder, expires_at FROM leases WHERE name = ?", [LEASE])
    if not rows:
        return {"holder": None, "expires": None}
    return {"holder": rows[0][0], "expires": from_micros(int(rows[0][1])).isoformat()}
