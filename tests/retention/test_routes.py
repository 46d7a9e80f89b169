"""The retention API: admin-only purge, holds and jobs, and the scheduler running inside the server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from auditledger import AuditLog
from auditledger.query import parse
from auditledger.server import create_app
from auditledger.settings import Settings
from tests.jobs.test_jobs import KESTRA_EXAMPLE
from tests.server.conftest import make_tokens, start


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[httpx.Client, dict[str, str], AuditLog]]:
    settings = Settings(db=f"sqlite:///{tmp_path / 'api.db'}")
    ledger = AuditLog.open(settings.db)
    tokens = make_tokens(ledger)
    server, thread, url = start(create_app(settings, ledger))
    http = httpx.Client(base_url=url, timeout=30)
    yield http, tokens, ledger
    http.close()
    server.should_exit = True
    thread.join(10)
    ledger.close()


def _auth(tokens: dict[str, str], who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[who]}"}


def test_only_admins_may_purge_hold_or_manage_jobs(api: tuple[httpx.Client, dict[str, str], AuditLog]) -> None:
    """An auditor token gets 403 on every retention route; an admin gets answers."""
    http, tokens, _ = api
    body = {"endDate": "2020-01-01T00:00:00Z"}
    auditor = _auth(tokens, "auditor@acme")
    assert http.post("/api/v1/acme/retention/purge", json=body, headers=auditor).status_code == 403
    assert http.get("/api/v1/acme/jobs", headers=_auth(tokens, "auditor@acme")).status_code == 403
    answer = http.post("/api/v1/acme/retention/purge?dryRun=true", json=body, headers=_auth(tokens, "admin@acme"))
    assert answer.status_code == 200 and answer.json()["count"] == 0
    bad = http.post("/api/v1/acme/retention/purge", json={"endDate": "x"}, headers=_auth(tokens, "admin@acme"))
    assert bad.status_code == 422 and bad.json()["field"] == "endDate"


def test_holds_and_jobs_round_trip(api: tuple[httpx.Client, dict[str, str], AuditLog]) -> None:
    """A hold is created, listed and released; a job is applied, run and its history read."""
    http, tokens, ledger = api
    admin = _auth(tokens, "admin@acme")
    hold = {"query": "resource:SECRET", "reason": "case"}
    created = http.post("/api/v1/acme/retention/holds", json=hold, headers=admin)
    assert created.status_code == 201
    hold_id = created.json()["id"]
    assert [h["id"] for h in http.get("/api/v1/acme/retention/holds", headers=admin).json()] == [hold_id]
    assert http.delete(f"/api/v1/acme/retention/holds/{hold_id}", headers=admin).status_code == 200
    applied = http.put("/api/v1/acme/jobs", content=KESTRA_EXAMPLE, headers=admin)
    assert applied.status_code == 200 and applied.json()["state"] == "created"
    run = http.post("/api/v1/acme/jobs/system.audit_log_cleanup/runs", headers=admin).json()
    assert run["status"] == "SUCCESS"
    runs = http.get("/api/v1/acme/jobs/audit_log_cleanup/runs", headers=admin).json()
    assert [r["id"] for r in runs] == [run["id"]]
    bad = http.put("/api/v1/acme/jobs", content=KESTRA_EXAMPLE.replace("PurgeAuditLogs", "X"), headers=admin)
    assert bad.status_code == 422
    assert "request body:5" in bad.json()["message"]
    lease = ledger.store.query("SELECT holder FROM leases WHERE name = 'scheduler'")
    assert lease  # the server's scheduler took the lease


@pytest.mark.parametrize(("min_age_days", "purged"), [(7.0, 0), (0.0, 1)])
def test_the_purge_min_age_setting_governs_the_api(tmp_path: Path, min_age_days: float, purged: int) -> None:
    """`purge_min_age_days` clips an API purge: with the default a fresh event survives, with 0 it goes."""
    settings = Settings(db=f"sqlite:///{tmp_path / 'age.db'}", purge_min_age_days=min_age_days, scheduler=False)
    ledger = AuditLog.open(settings.db)
    tokens = make_tokens(ledger)
    ledger.record("FLOW", "CREATE", {"type": "USER", "id": "anna"}, details={"namespace": "a"}, tenant="acme")
    server, thread, url = start(create_app(settings, ledger))
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            answer = http.post(
                "/api/v1/acme/retention/purge", json={"endDate": "2999-01-01T00:00:00Z"},
                headers=_auth(tokens, "admin@acme"),
            )
        assert answer.status_code == 200 and answer.json()["count"] == purged
        assert ledger.count(parse("resource:FLOW"), tenant="acme") == 1 - purged
    finally:
        server.should_exit = True
        thread.join(10)
        ledger.close()


def test_a_bad_purge_min_age_is_a_config_error() -> None:
    """A negative or non-numeric minimum age is refused with the setting's name, not a traceback."""
    from auditledger.errors import ConfigError
    from auditledger.settings import load

    for raw in ("-1", "a week"):
        with pytest.raises(ConfigError, match="purge_min_age_days"):
            load(purge_min_age_days=raw)
