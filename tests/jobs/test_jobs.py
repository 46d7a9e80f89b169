"""Jobs as code: the Kestra purge example, line-numbered errors, runs, history, schedules and leases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from auditledger import Actor, AuditLog, ConfigError, NotFoundError
from auditledger.demo import demo_events
from auditledger.jobs import Jobs, Scheduler, parse_job

KESTRA_EXAMPLE = """\
id: audit_log_cleanup
namespace: system
tasks:
  - id: purge_audit_logs
    type: io.kestra.plugin.ee.core.log.PurgeAuditLogs
    description: Purge audit logs older than 1 month
    endDate: "{{ now() | dateAdd(-1, 'MONTHS') }}"
"""


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[AuditLog]:
    log = AuditLog.open(f"sqlite:///{tmp_path / 'jobs.db'}")
    now = datetime.now(UTC)
    n = 300
    log.backfill(list(demo_events(n, seed=5)), [now - timedelta(days=90) * (1 - i / n) for i in range(n)])
    yield log
    log.close()


def test_the_kestra_example_applies_and_purges_exactly_what_is_older_than_a_month(ledger: AuditLog) -> None:
    """The YAML of Kestra's audit-log docs runs unchanged and purges exactly the events dated before now - 1 month."""
    jobs = Jobs(ledger)
    job, state = jobs.apply(KESTRA_EXAMPLE, "audit_log_cleanup.yml")
    assert (job.key, state) == ("system.audit_log_cleanup", "created")
    events = list(ledger.iter_search(order="asc"))
    run = jobs.run_now(jobs.get("audit_log_cleanup", admin=True))
    assert run.status == "SUCCESS", run.error
    cutoff = datetime.fromisoformat(_month_back(run.started_at))
    expected = sum(1 for e in events if e.date < cutoff)
    assert run.outputs["purge_audit_logs"]["count"] == expected > 0
    assert all(e.date >= cutoff for e in ledger.iter_search() if e.resource_type not in ("AUDITLOG", "FLOW"))
    ledger.verify()
    (history,) = jobs.history(job)
    assert history.status == "SUCCESS" and history.ended_at is not None


def _month_back(moment: datetime) -> str:
    from auditledger.jobs.expressions import add

    return add(moment, -1, "MONTHS").isoformat()


def test_applying_records_a_flow_event_and_unchanged_sources_are_skipped(ledger: AuditLog) -> None:
    """Applying is audited (FLOW CREATE then UPDATE with the source); the same source twice changes nothing."""
    jobs = Jobs(ledger)
    jobs.apply(KESTRA_EXAMPLE)
    assert jobs.apply(KESTRA_EXAMPLE)[1] == "unchanged"
    assert jobs.apply(KESTRA_EXAMPLE.replace("1 month", "one month"))[1] == "updated"
    kinds = [e.action for e in ledger.iter_search("resource:FLOW flowId:audit_log_cleanup", order="asc")]
    assert kinds == ["CREATE", "UPDATE"]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (KESTRA_EXAMPLE.replace("log.PurgeAuditLogs", "log.PurgeAll"), 5, "unknown task type"),
        (KESTRA_EXAMPLE + "    retention: 3\n", 8, "unknown property 'retention'"),
        (KESTRA_EXAMPLE.replace("dateAdd(-1, 'MONTHS') }}", "dateAdd(-1, 'MONTHS') | nope }}"), 7, "No filter"),
        (KESTRA_EXAMPLE.replace("{{ now()", "{{ now("), 7, "bad expression"),
        (KESTRA_EXAMPLE + "triggers:\n  - id: s\n    type: Schedule\n    cron: '0 0 * *'\n", 11, "bad cron"),
        (KESTRA_EXAMPLE + "triggers:\n  - id: s\n    type: Schedule\n    cron: '@daily'\n    timezone: Mars/Base\n",
         12, "unknown time zone"),
        (KESTRA_EXAMPLE.replace("    endDate:", "    startDate:"), 4, "needs the property 'endDate'"),
        (KESTRA_EXAMPLE + "  - id: purge_audit_logs\n    type: PurgeAuditLogs\n    endDate: x\n", 8, "used twice"),
        ("id: a\nnamespace: system\ntasks: [\n", 4, "not valid YAML"),
    ],
)
def test_mistakes_name_the_line(text: str, line: int, message: str) -> None:
    """Unknown task types and properties, bad expressions, cron and YAML fail with file:line and the reason."""
    with pytest.raises(ConfigError) as info:
        parse_job(text, "job.yml")
    assert f"job.yml:{line}:" in str(info.value)
    assert message in str(info.value)


def test_a_failing_task_is_recorded_with_its_error(ledger: AuditLog) -> None:
    """A run whose expression fails at run time ends FAILED with the error and the task's line."""
    jobs = Jobs(ledger)
    text = KESTRA_EXAMPLE.replace("{{ now() | dateAdd(-1, 'MONTHS') }}", "{{ trigger.date }}")
    job, _ = jobs.apply(text)
    run = jobs.run_now(job)
    assert run.status == "FAILED"
    assert run.error is not None and "line 7" in run.error and "'trigger' is undefined" in run.error


def test_system_jobs_are_visible_to_admins_only(ledger: AuditLog) -> None:
    """Jobs in the system namespace are hidden from non-admin listings and lookups."""
    jobs = Jobs(ledger)
    jobs.apply(KESTRA_EXAMPLE)
    jobs.apply(KESTRA_EXAMPLE.replace("namespace: system", "namespace: company.team"))
    assert [j.key for _, j, _ in jobs.list_jobs()] == ["company.team.audit_log_cleanup"]
    assert len(jobs.list_jobs(admin=True)) == 2
    with pytest.raises(NotFoundError):
        jobs.get("system.audit_log_cleanup")


SCHEDULED = KESTRA_EXAMPLE + "triggers:\n  - id: nightly\n    type: Schedule\n    cron: '0 3 * * *'\n"


def test_a_schedule_fires_once_even_with_two_schedulers(ledger: AuditLog) -> None:
    """With the trigger added the job runs at its cron time, once, though two schedulers tick."""
    clock = Clock(datetime(2026, 1, 10, 1, 0, tzinfo=UTC))
    a = Jobs(ledger, holder="a", clock=clock)
    b = Jobs(ledger, holder="b", clock=clock)
    job, _ = a.apply(SCHEDULED)
    sa, sb = Scheduler(a), Scheduler(b)
    assert sa.tick() == [] and sb.tick() == []
    clock.now = datetime(2026, 1, 10, 3, 0, 5, tzinfo=UTC)
    runs = sa.tick() + sb.tick()
    assert [r.status for r in runs] == ["SUCCESS"]
    assert runs[0].scheduled_for == datetime(2026, 1, 10, 3, 0, tzinfo=UTC)
    # Even when b takes over (a's lease expired), the same date is never run again.
    clock.now += timedelta(minutes=5)
    assert sb.tick() == [] and sa.tick() == []
    assert len(a.history(job)) == 1


@pytest.mark.parametrize(("policy", "expected"), [("ALL", 3), ("LAST", 1), ("NONE", 0)])
def test_missed_schedules_follow_the_recover_policy(ledger: AuditLog, policy: str, expected: int) -> None:
    """After three days down, ALL runs the three missed nights, LAST one, NONE none."""
    clock = Clock(datetime(2026, 1, 10, 1, 0, tzinfo=UTC))
    jobs = Jobs(ledger, clock=clock)
    jobs.apply(SCHEDULED + f"    recoverMissedSchedules: {policy}\n")
    clock.now = datetime(2026, 1, 13, 1, 0, tzinfo=UTC)
    runs = Scheduler(jobs).tick()
    assert len(runs) == expected
    assert [r.scheduled_for for r in runs] == sorted(r.scheduled_for for r in runs)  # type: ignore[type-var]
    # The next night runs on time whatever the policy.
    clock.now = datetime(2026, 1, 13, 3, 0, 1, tzinfo=UTC)
    assert len(Scheduler(jobs).tick()) == 1


def test_disabled_triggers_and_jobs_do_not_fire(ledger: AuditLog) -> None:
    """A disabled trigger advances without running."""
    clock = Clock(datetime(2026, 1, 10, 1, 0, tzinfo=UTC))
    jobs = Jobs(ledger, clock=clock)
    jobs.apply(SCHEDULED + "    disabled: true\n")
    clock.now = datetime(2026, 1, 10, 3, 0, 1, tzinfo=UTC)
    assert Scheduler(jobs).tick() == []


def test_the_scheduler_thread_starts_and_stops(ledger: AuditLog) -> None:
    """run-scheduler's loop ticks in a thread, holds the lease, and releases it on stop."""
    from auditledger.jobs.scheduler import status

    jobs = Jobs(ledger, holder="t1")
    scheduler = Scheduler(jobs, tick_seconds=0.05)
    scheduler.start()
    try:
        for _ in range(100):
            if status(jobs)["holder"] == "t1":
                break
            import time

            time.sleep(0.02)
        assert status(jobs)["holder"] == "t1"
    finally:
        scheduler.stop()
    assert Scheduler(Jobs(ledger, holder="t2")).acquire()


def test_a_shipper_whose_exporter_fails_ends_the_run_failed(ledger: AuditLog) -> None:
    """An AuditLogShipper run whose destination refuses is FAILED, names the exporter, and keeps the offset."""
    ledger.record("FLOW", "CREATE", Actor.user("anna@acme.io"), details={"namespace": "company"})
    text = (
        "id: ship\nnamespace: system\ntasks:\n  - id: ship\n    type: io.kestra.plugin.ee.core.log.AuditLogShipper\n"
        "    maxRetries: 0\n    logExporters:\n      - id: hook\n        type: webhook\n"
        "        url: http://127.0.0.1:9/unreachable\n"
    )
    jobs = Jobs(ledger)
    job, _ = jobs.apply(text)
    run = jobs.run_now(job)
    assert run.status == "FAILED"
    assert run.error is not None and "hook" in run.error


def test_runs_left_unfinished_by_a_dead_process_end_failed(ledger: AuditLog) -> None:
    """A run whose process died (its runs lease expired) is marked FAILED, naming why, on the next tick."""
    clock = Clock(datetime(2026, 1, 10, 1, 0, tzinfo=UTC))
    dead = Jobs(ledger, holder="dead-proc", clock=clock)
    live = Jobs(ledger, holder="live-proc", clock=clock, run_lease_seconds=3600)  # renewed well within the test
    job, _ = dead.apply(KESTRA_EXAMPLE)
    # What a process leaves when it is killed: one run claimed, one started, neither ended.
    claimed = dead.start_run(job, "main")
    started = dead.start_run(job, "main")
    with ledger.store.write() as txn:
        txn.execute("UPDATE job_runs SET status = 'RUNNING' WHERE id = ?", [started])
    with live.alive():  # a run of a live process, older than a lease period too, must be left alone
        running = live.start_run(job, "main")
        clock.now += timedelta(minutes=5)
        Scheduler(Jobs(ledger, holder="scheduler", clock=clock)).tick()
    for run_id, was in ((claimed, "CREATED"), (started, "RUNNING")):
        assert run_id is not None
        run = dead.get_run(run_id)
        assert run.status == "FAILED" and run.ended_at == clock.now
        assert run.error is not None and "dead-proc" in run.error and f"was {was}" in run.error
    assert running is not None and live.get_run(running).status == "CREATED"


def test_a_fresh_run_is_not_taken_for_an_orphan(ledger: AuditLog) -> None:
    """A run younger than one lease period is never failed, even before its process renewed anything."""
    clock = Clock(datetime(2026, 1, 10, 1, 0, tzinfo=UTC))
    jobs = Jobs(ledger, holder="slow-proc", clock=clock)
    job, _ = jobs.apply(KESTRA_EXAMPLE)
    run_id = jobs.start_run(job, "main")
    clock.now += timedelta(seconds=10)
    assert Jobs(ledger, holder="other", clock=clock).fail_orphaned_runs() == []
    assert run_id is not None and jobs.get_run(run_id).status == "CREATED"


def test_the_tick_deletes_runs_leases_long_expired_and_keeps_live_ones(ledger: AuditLog) -> None:
    """Every process that ran a job leaves a runs lease; the tick removes those expired a lease period ago."""
    _check_runs_leases_cleanup(ledger)


def test_runs_leases_cleanup_on_postgresql() -> None:
    from tests.store.pg import pg_schema

    with pg_schema() as url, AuditLog.open(url) as log:
        _check_runs_leases_cleanup(log)


def _check_runs_leases_cleanup(ledger: AuditLog) -> None:
    clock = Clock(datetime(2026, 1, 10, 1, 0, tzinfo=UTC))
    gone = Jobs(ledger, holder="gone-proc", clock=clock)
    live = Jobs(ledger, holder="live-proc", clock=clock, run_lease_seconds=3600)
    job, _ = gone.apply(KESTRA_EXAMPLE)
    gone.run_now(job)  # ends; its lease stays until it expires

    def leases() -> set[str]:
        return {str(r[0]) for r in ledger.store.query("SELECT name FROM leases WHERE name LIKE 'runs:%'", [])}

    with live.alive():
        assert leases() == {"runs:gone-proc", "runs:live-proc"}
        clock.now += timedelta(seconds=45)  # expired 15 s ago: less than a lease period
        gone.fail_orphaned_runs()
        assert leases() == {"runs:gone-proc", "runs:live-proc"}
        clock.now += timedelta(seconds=30)
        Scheduler(Jobs(ledger, holder="scheduler", clock=clock)).tick()
        assert "runs:gone-proc" not in leases() and "runs:live-proc" in leases()
    gone.run_now(job)  # a process that comes back renews its lease anew
    assert "runs:gone-proc" in leases()
